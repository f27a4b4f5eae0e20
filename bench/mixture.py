"""The mixture loader against one corpus of the same total size: start-up, memory and batches/s.

    python bench/mixture.py [--blocks 1000000] [--repeats 3]

Builds grouped folders of random GPT-2 ids (blocks of 128) with the group stage's
own code: 1 corpus of --blocks blocks, and the same blocks split into 3 and into 50
corpora, each with a plan of equal weights (as the mix stage writes it). Each
measurement runs in a fresh process: build + first batch, the anonymous memory it
added, and batch-8 batches per second over 20,000 batches. Prints a markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from causal_lm_data.format import shard_name  # noqa: E402
from causal_lm_data.pipeline.grouped import group_split  # noqa: E402
from causal_lm_data.pipeline.writer import write_index, write_shard  # noqa: E402
from causal_lm_data.plan import plan_mixture  # noqa: E402

BLOCK = 128

MEASURE = """
import json, sys, time
start = time.perf_counter()
from causal_lm_data import make_dataloader

def anonymous():
    fields = dict(line.split(":") for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return int(fields["RssAnon"].split()[0]) / 1024

before = anonymous()
loader = make_dataloader(sys.argv[1], batch_size=8, seed=1)
batches = iter(loader)
next(batches)
first = time.perf_counter() - start
start = time.perf_counter()
for _ in range(20_000):
    try:
        next(batches)
    except StopIteration:
        batches = iter(loader)
rate = 20_000 / (time.perf_counter() - start)
print(json.dumps({"build_and_first_batch_s": first, "anonymous_mib_added": anonymous() - before, "batches_per_s": rate}))
"""


def corpus(folder: Path, blocks: int, seed: int) -> None:
    """A grouped folder of `blocks` blocks of random ids, written by the group stage's code."""
    tokenized = folder / "tokenized"
    tokenized.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 600, size=blocks * BLOCK // 300 + 2)
    ids = rng.integers(0, 50_257, size=int(lengths.sum()), dtype=np.uint16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16()))])
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))
    rows, sha256 = write_shard(tokenized / shard_name(0, 1), schema, [pa.record_batch([column], schema=schema)])
    write_index(tokenized, schema, [(shard_name(0, 1), sha256, rows)])
    group_split(tokenized, folder / "grouped", BLOCK, shard_bytes=64 << 20)


def recipe(root: Path, sources: int, total: int) -> Path:
    """`sources` corpora of total/sources blocks each and an equal-weight plan over them; the plan's path."""
    plan_path = root / f"{sources}" / "mix.json"
    if plan_path.exists():
        return plan_path
    entries = []
    for number in range(sources):
        name = f"corpus{number:03d}"
        corpus(plan_path.parent / name, total // sources, number)
        state = json.loads((plan_path.parent / name / "grouped" / "state.json").read_text())
        blocks = sum(entry["rows"] for entry in state["_data_files"])
        entries.append({"name": name, "folder": f"{name}/grouped", "blocks": blocks})
    plan, _ = plan_mixture({e["name"]: e["blocks"] for e in entries}, {e["name"]: 1 for e in entries}, max_repetition=4)
    for entry, quota in zip(entries, plan.quotas):
        entry["blocks_per_epoch"] = quota
    plan_path.write_text(json.dumps({"sources": entries}))
    return plan_path


def measure(path: Path, repeats: int) -> dict:
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", MEASURE, str(path)], cwd=REPO, check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=str(REPO / "bench" / "out" / "mixture"))
    args = parser.parse_args()
    root = Path(args.work)
    one = root / "1" / "corpus000"
    if not (one / "grouped").exists():
        corpus(one, args.blocks, 0)
    results = {"1 corpus (its folder)": measure(one / "grouped", args.repeats)}
    for sources in (3, 50):
        results[f"{sources} corpora (a plan)"] = measure(recipe(root, sources, args.blocks), args.repeats)
    base = results["1 corpus (its folder)"]
    print(f"{date.today()}, {os.cpu_count()} cores; {args.blocks:,} blocks of {BLOCK} in all; medians of {args.repeats}")
    print("| data | build + first batch (s) | anonymous memory added (MiB) | batches/s, batch 8 | vs 1 corpus |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['build_and_first_batch_s']:.3f} | {r['anonymous_mib_added']:.1f} | "
            f"{r['batches_per_s']:,.0f} | {r['batches_per_s'] / base['batches_per_s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
