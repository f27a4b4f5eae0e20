"""The loader at 10 B tokens: build + first batch, memory it adds, batches per second; against the previous loader.

    python bench/loader_scale.py [--tokens 10e9] [--block-size 128] [--previous 7783acc]

Writes a grouped dataset of `--tokens` tokens with the group stage's own writer
(`stages.group.group_shard`): one 64 MB shard of natural-statistics documents,
then hard links of it as every other shard (one shard's disk, a 10 B-token
folder: 312 shards, 78 M blocks of 128). The loader reads no data at start-up, so
start-up and memory are those of a real 10 B-token folder; batches are served from
the page cache (a real one would be read from disk once per epoch).

Each measurement runs in a fresh process: build + first batch, then the memory
the process gained (anonymous memory, which the kernel cannot reclaim, and the
mapped file pages it touched), then batch_size-8 batches per second over 20,000
batches. `--previous` runs the same with the loader of an earlier commit
(extracted to a temporary folder), as shipped: it hashes every shard at start-up.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from causal_lm_data.format import Shard, shard_name  # noqa: E402
from causal_lm_data.pipeline.grouped import BlockShardTask, batch_and_shard_blocks, group_shard  # noqa: E402
from causal_lm_data.pipeline.writer import write_index, write_shard  # noqa: E402

SHARD_BYTES = 64 << 20

MEASURE = """
import importlib, json, os, sys, time
loader_module = importlib.import_module(sys.argv[3])  # the loader asked for, from the working directory's tree
assert os.path.dirname(os.path.dirname(loader_module.__file__)) == os.getcwd(), loader_module.__file__
start = time.perf_counter()
make_dataloader = loader_module.make_dataloader
imported = time.perf_counter()

def memory():
    fields = dict(line.split(":") for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile")}

before = memory()
start = time.perf_counter()
loader = make_dataloader(sys.argv[1], batch_size=8, shuffle=True, seed=42, **json.loads(sys.argv[2]))
batch = next(iter(loader))
first = time.perf_counter() - start
after = memory()
batches, start = 0, time.perf_counter()
for batch in loader:
    batches += 1
    if batches == 20_000:
        break
rate = batches / (time.perf_counter() - start)
print(json.dumps({
    "blocks": len(loader.dataset), "build_and_first_batch_s": first, "batches_per_s": rate,
    "anonymous_mib_added": after["RssAnon"] - before["RssAnon"], "file_mib_added": after["RssFile"] - before["RssFile"],
    "after_20000_batches_anonymous_mib_added": memory()["RssAnon"] - before["RssAnon"],
}))
"""


def natural_tokens(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` GPT-2-range ids and document lengths like IMDB's after truncation (median ~230, at most 512)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.lognormal(5.5, 0.6, size=count // 100 + 1).astype(np.int64) + 1, 512)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), count) + 1]
    lengths[-1] -= lengths.sum() - count
    return rng.integers(0, 50_257, size=count, dtype=np.uint16), lengths[lengths > 0]


def build(folder: Path, tokens: int, block_size: int) -> Path:
    """A grouped folder of `tokens` tokens: one real shard written by group_shard, hard-linked as all the others."""
    grouped = folder / "grouped"
    if (grouped / "state.json").exists():
        return grouped
    rows_per_batch, blocks_per_shard = batch_and_shard_blocks(block_size, 2, SHARD_BYTES)
    shard_count = -(-(tokens // block_size) // blocks_per_shard)
    ids, lengths = natural_tokens(blocks_per_shard * block_size)
    (folder / "tokenized").mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16()))])
    source = folder / "tokenized" / "data-00000-of-00001.arrow"
    rows, sha256 = write_shard(
        source, schema, [pa.record_batch([pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))], schema=schema)]
    )
    grouped.mkdir()
    first = grouped / shard_name(0, shard_count)
    task = BlockShardTask(
        ((Shard(source, sha256, rows, "tokenize"), 0),), str(first), 0, blocks_per_shard, block_size, pa.uint16(), rows_per_batch
    )
    result = group_shard(task)
    files = [(first.name, result["sha256"], result["rows"])]
    for index in range(1, shard_count):
        os.link(first, grouped / shard_name(index, shard_count))
        files.append((shard_name(index, shard_count), result["sha256"], result["rows"]))
    write_index(grouped, result["schema"], files)
    return grouped


def measure(grouped: Path, pythonpath: Path, options: dict, repeats: int, module: str = "causal_lm_data.loader") -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", MEASURE, str(grouped), json.dumps(options), module],
                cwd=pythonpath,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(repeats)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=float, default=10e9)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--previous", default="7783acc", help="a commit whose loader to compare with ('' to skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=str(REPO / "bench" / "out" / "loader"))
    args = parser.parse_args()
    grouped = build(Path(args.work), int(args.tokens), args.block_size)
    runs = {
        "this loader": measure(grouped, REPO, {}, args.repeats),
        "this loader, position_ids": measure(grouped, REPO, {"position_ids": True}, args.repeats),
    }
    if args.previous:
        with tempfile.TemporaryDirectory() as old:
            archive = subprocess.run(
                ["git", "archive", args.previous, "stages"], cwd=REPO, check=True, capture_output=True
            ).stdout
            subprocess.run(["tar", "x", "-C", old], input=archive, check=True)
            # Before the library had its own package, the loader was stages.loader.
            runs[f"loader of {args.previous}"] = measure(grouped, Path(old), {}, args.repeats, "stages.loader")
    print(f"{date.today()}, {os.cpu_count()} cores; {grouped}: {runs['this loader'][0]['blocks']:,} blocks of {args.block_size}")
    print("| loader | build + first batch (s) | anonymous memory added (MiB) | file pages touched (MiB) | batches/s at 8 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, results in runs.items():
        median = {key: float(np.median([r[key] for r in results])) for key in results[0]}
        print(
            f"| {name} | {median['build_and_first_batch_s']:.3f} | {median['anonymous_mib_added']:.1f} "
            f"| {median['file_mib_added']:.1f} | {median['batches_per_s']:,.0f} |"
        )
    out = Path(args.work) / "results.json"
    out.write_text(json.dumps(runs, indent=2))
    print(f"every run: {out}")


if __name__ == "__main__":
    main()
