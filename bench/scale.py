"""Scale benchmark: this pipeline against build-nanogpt's FineWeb method on a natural-statistics corpus.

    python bench/scale.py --documents 4000000     # about 1 B tokens; ~20 GB of disk
    python bench/scale.py --documents 100000      # a quick check

The corpus is seeded and made of unique documents (random sentences of the built-in
speeches, IMDB-like lengths), so no engine wins by caching repeated text. Both
methods tokenize every token (no truncation) and mark every document end with
<|endoftext|>. Prints a markdown table and writes bench/out/scale.json.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.benchmark import clone, measure, set_param  # noqa: E402
from bench.reference import stage_command  # noqa: E402
from causal_lm_data.pipeline.readers import builtin_documents  # noqa: E402

OUT = REPO / "bench" / "out"
NANOGPT_SHARD_TOKENS = 100_000_000  # build-nanogpt's fineweb.py shard size
STAGES = ("download", "tokenize", "group", "mix", "check")


def natural_corpus(path: Path, documents: int, seed: int = 0) -> Path:
    """`documents` unique documents of random built-in sentences, lengths log-normal around IMDB's (median ~980 chars)."""
    sentences = [s for p in builtin_documents() for s in re.split(r"(?<=[.!?])\s+", p) if len(s) > 20]
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(980), 0.75, documents), 60, 14_000).astype(np.int64)
    schema = pa.schema([("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, documents, 100_000):
            batch = []
            for target in lengths[start : start + 100_000]:
                picks = rng.integers(len(sentences), size=int(target // 120) + 2)
                text, i = sentences[picks[0]], 1
                while len(text) < target and i < len(picks):
                    text, i = f"{text} {sentences[picks[i]]}", i + 1
                batch.append(text)
            writer.write_table(pa.table({"text": batch}, schema=schema))
    return path


# build-nanogpt's fineweb.py, on a local parquet file: tiktoken encode_ordinary per document in a
# Pool over all cores, <|endoftext|> before each document, uint16 shards of 100 M tokens (.npy).
NANOGPT = """
import multiprocessing as mp, os, sys
import numpy as np, pyarrow.parquet as pq
sys.path.insert(0, sys.argv[3])
from bench.reference import tiktoken_gpt2

enc = tiktoken_gpt2()
eot = enc._special_tokens["<|endoftext|>"]

def tokenize(doc):
    tokens = [eot]
    tokens.extend(enc.encode_ordinary(doc))
    return np.array(tokens).astype(np.uint16)

def documents(path):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        yield from batch.column(0).to_pylist()

if __name__ == "__main__":
    out, shard_size = sys.argv[2], int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    buffer, count, index, total = np.empty(shard_size, dtype=np.uint16), 0, 0, 0
    with mp.Pool(os.cpu_count()) as pool:
        for tokens in pool.imap(tokenize, documents(sys.argv[1]), chunksize=16):
            while len(tokens):
                take = min(shard_size - count, len(tokens))
                buffer[count : count + take], count, tokens = tokens[:take], count + take, tokens[take:]
                total += take
                if count == shard_size:
                    np.save(os.path.join(out, f"shard_{index:06d}.npy"), buffer)
                    index, count = index + 1, 0
    if count:
        np.save(os.path.join(out, f"shard_{index:06d}.npy"), buffer[:count])
    print(total)
"""


def disk_bytes(*folders: Path) -> int:
    """Bytes on disk under `folders`, each inode counted once (hardlinks are not copies)."""
    sizes = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                sizes[path.stat().st_ino] = path.stat().st_blocks * 512
    return sum(sizes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=4_000_000)
    parser.add_argument("--work", type=Path, default=OUT / "scale")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    result = {"documents": args.documents, "date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}

    started = time.perf_counter()
    corpus = natural_corpus(args.work / "corpus.parquet", args.documents)
    result["corpus"] = {"seconds": time.perf_counter() - started, "bytes": corpus.stat().st_size}

    # tiktoken's single-thread encode_ordinary_batch on the first 200,000 documents: the per-core reference
    texts = pq.ParquetFile(corpus).read_row_group(0).column("text").to_pylist()[:200_000]
    from bench.reference import tiktoken_gpt2

    encoding = tiktoken_gpt2()
    started = time.perf_counter()
    tokens = sum(map(len, encoding.encode_ordinary_batch(texts, num_threads=1)))
    result["tiktoken_1_thread"] = {"seconds": time.perf_counter() - started, "tokens": tokens}
    del texts

    seconds, rss, stdout = measure(
        [sys.executable, "-c", NANOGPT, str(corpus), str(args.work / "nanogpt"), str(REPO), str(NANOGPT_SHARD_TOKENS)], REPO
    )
    result["nanogpt"] = {"seconds": seconds, "rss_mib": rss, "tokens": int(stdout.split()[-1])}
    shutil.rmtree(args.work / "nanogpt")

    repo = clone(args.work / "repo", corpus)
    set_param(repo, "tokenize.truncation", False)
    set_param(repo, "tokenize.add_eos", True)
    subprocess.run(["git", "commit", "-qam", "scale params"], cwd=repo, check=True)
    seconds, rss, _ = measure(["dvc", "repro"], repo)
    metrics = {stage: json.loads((repo / "metrics" / f"{stage}.json").read_text()) for stage in ("tokenize", "group")}
    result["dvc_repro"] = {"seconds": seconds, "rss_mib": rss, "tokens": metrics["tokenize"]["tokens"]}
    result["disk"] = {"data": disk_bytes(repo / "data"), "data_and_cache": disk_bytes(repo / "data", repo / ".dvc" / "cache")}
    result["dvc_noop"] = measure(["dvc", "repro"], repo)[0]
    for stage in STAGES:  # each stage again, alone: wall and peak RSS
        seconds, rss, _ = measure(stage_command(repo, stage), repo)
        result[stage] = {"seconds": seconds, "rss_mib": rss}
    seconds, _, _ = measure(stage_command(repo, "tokenize"), repo, PIPELINE_WORKERS="1")
    result["tokenize_1_worker"] = {"seconds": seconds}
    # One core against all: fastokens runs threads of its own, so one unpinned worker already uses two cores.
    for stage in ("download", "tokenize", "group"):
        seconds, _, _ = measure(["taskset", "-c", "0", *stage_command(repo, stage)], repo, PIPELINE_WORKERS="1")
        result[f"{stage}_1_core"] = {"seconds": seconds}
    set_param(repo, "group.block_size", 256)
    result["dvc_block_size"] = measure(["dvc", "repro"], repo)[0]

    OUT.mkdir(exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(result, indent=2))
    print(report(result))
    shutil.rmtree(args.work)


def report(r: dict) -> str:
    tokens = r["dvc_repro"]["tokens"]
    # DVC's own time (start-up, md5 of the input and of every output, dvc.lock): see bench/dvc_profile.py
    alone = sum(r[stage]["seconds"] for stage in STAGES)
    ours, theirs = tokens / r["dvc_repro"]["seconds"], r["nanogpt"]["tokens"] / r["nanogpt"]["seconds"]
    rows = [
        ("documents / tokens", f"{r['documents']:,} / {tokens:,}", ""),
        (
            "build-nanogpt method: wall (s), tokens/s, peak RSS (MiB)",
            f"{r['nanogpt']['seconds']:.1f}, {theirs:,.0f}, {r['nanogpt']['rss_mib']:.0f}",
            "",
        ),
        (
            "tiktoken encode_ordinary_batch, 1 thread (tokens/s)",
            f"{r['tiktoken_1_thread']['tokens'] / r['tiktoken_1_thread']['seconds']:,.0f}",
            "",
        ),
        (
            "tokenize stage alone (tokens/s)",
            f"{tokens / r['tokenize']['seconds']:,.0f}",
            f"{tokens / r['tokenize']['seconds'] / (r['tiktoken_1_thread']['tokens'] / r['tiktoken_1_thread']['seconds']):.1f}x tiktoken 1 thread",
        ),
        (
            "`dvc repro` end to end: wall (s), tokens/s",
            f"{r['dvc_repro']['seconds']:.1f}, {ours:,.0f}",
            f"{ours / theirs:.2f}x the nanoGPT method",
        ),
        *[
            (f"{stage} alone: wall (s), peak RSS (MiB)", f"{r[stage]['seconds']:.1f}, {r[stage]['rss_mib']:.0f}", "")
            for stage in STAGES
        ],
        (
            "DVC's own time in `dvc repro`: its wall less the stages alone (s)",
            f"{r['dvc_repro']['seconds'] - alone:.1f}",
            f"{(r['dvc_repro']['seconds'] - alone) / r['dvc_repro']['seconds']:.0%} of `dvc repro`",
        ),
        (
            "tokenize, 1 worker (unpinned) vs all cores (s)",
            f"{r['tokenize_1_worker']['seconds']:.1f} vs {r['tokenize']['seconds']:.1f}",
            f"{r['tokenize_1_worker']['seconds'] / r['tokenize']['seconds']:.2f}x speed-up",
        ),
        *[
            (
                f"{stage}, 1 worker on 1 core vs all cores (s)",
                f"{r[stage + '_1_core']['seconds']:.1f} vs {r[stage]['seconds']:.1f}",
                f"{r[stage + '_1_core']['seconds'] / r[stage]['seconds']:.2f}x speed-up",
            )
            for stage in ("download", "tokenize", "group")
        ],
        (
            "disk: data/, data/ + .dvc/cache (GB)",
            f"{r['disk']['data'] / 1e9:.2f}, {r['disk']['data_and_cache'] / 1e9:.2f}",
            f"{r['disk']['data_and_cache'] / r['disk']['data']:.2f}x",
        ),
        ("no-op `dvc repro` (s)", f"{r['dvc_noop']:.2f}", ""),
        ("`dvc repro` after group.block_size changes (s)", f"{r['dvc_block_size']:.1f}", ""),
    ]
    lines = [f"Measured {r['date']} on {r['machine']}.", "", "| measure | value | ratio |", "| --- | ---: | --- |"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


if __name__ == "__main__":
    main()
