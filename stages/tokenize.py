"""Stage 2, tokenize: turn each document of data/raw into token ids.

Writes data/tokenized (an `input_ids` list per document, stored as the smallest
unsigned integer that holds the vocabulary: uint16 for GPT-2, a quarter of int64)
and metrics/tokenize.json. No special tokens are added, as in Lab1 with GPT-2.

Threads: TOKENIZE_THREADS (default: every available core); the output is identical
whatever the setting, so it is not a DVC param.
"""

import os

import numpy as np
import pyarrow as pa

from stages.errors import UserError, run_stage
from stages.params import load_params
from stages.progress import Progress
from stages.storage import from_numpy, map_splits, read_batches, split_metrics, write_csv, write_dataset, write_json
from stages.tokenizer import load_encoder

LENGTH_BIN = 16  # tokens per bar of the document-length plot


def id_type(vocab_size: int) -> pa.DataType:
    """The smallest unsigned Arrow integer type that holds every id below `vocab_size`."""
    for arrow_type, limit in ((pa.uint8(), 1 << 8), (pa.uint16(), 1 << 16), (pa.uint32(), 1 << 32)):
        if vocab_size <= limit:
            return arrow_type
    raise ValueError(f"vocabulary of {vocab_size} tokens does not fit 32 bits")


def truncate(ids: list[np.ndarray], max_length: int | None, side: str = "right") -> list[np.ndarray]:
    """Keep at most `max_length` ids per document (`None`: all), from the start unless side='left'."""
    if max_length is None:
        return ids
    if side == "left":
        return [doc[-max_length:] if len(doc) > max_length else doc for doc in ids]
    return [doc[:max_length] for doc in ids]


def to_list_array(ids: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """One Arrow list per document, built from numpy without Python integers."""
    lengths = np.fromiter((len(doc) for doc in ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(ids) if ids else np.empty(0)
    return pa.ListArray.from_arrays(from_numpy(offsets), from_numpy(values.astype(str(value_type))))


def length_histogram(lengths: np.ndarray, bins: int) -> np.ndarray:
    """Documents per LENGTH_BIN-token bin; the last bin also counts every longer document."""
    return np.bincount(np.minimum(lengths // LENGTH_BIN, bins - 1), minlength=bins)


def tokenize_split(source, target, encoder, params: dict, progress: Progress) -> dict:
    """Tokenize one split's documents from `source` into `target`; return its counts and histograms."""
    max_length = params["max_length"] if params["truncation"] else None
    value_type = id_type(encoder.vocab_size)
    schema = pa.schema([("input_ids", pa.list_(value_type))])
    bins = 2 * (max_length or 512) // LENGTH_BIN + 1
    found = {"documents": 0, "tokens": 0, "documents_truncated": 0, "tokens_lost_to_truncation": 0}
    histograms = {"before": np.zeros(bins, dtype=np.int64), "after": np.zeros(bins, dtype=np.int64)}

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
            histograms["before"] += length_histogram(before, bins)
            histograms["after"] += length_histogram(after, bins)
            progress.update(len(kept), int(after.sum()))
            yield pa.record_batch([to_list_array(kept, value_type)], schema=schema)

    write_dataset(target, schema, tokenized_batches())
    return {"counts": found, "histograms": histograms}


def main() -> None:
    params = load_params("tokenize")
    threads = os.environ.get("TOKENIZE_THREADS", "0")
    if not threads.isdigit():
        raise UserError(f"TOKENIZE_THREADS must be a whole number (0: one per core), got '{threads}'")
    encoder = load_encoder(params["tokenizer"], int(threads))
    if params["add_eos"] and encoder.eos_token_id is None:
        raise UserError(f"tokenizer '{params['tokenizer']}' has no end-of-text token; set tokenize.add_eos to false")
    progress = Progress("tokenize")
    results = map_splits(
        "data/raw", "data/tokenized", lambda source, target: tokenize_split(source, target, encoder, params, progress)
    )
    progress.close()

    # Metrics and plots describe the training split; a validation split's counts sit beside.
    counts = split_metrics({split: result["counts"] for split, result in results.items()})
    write_json("metrics/tokenize.json", counts)
    histograms = next(iter(results.values()))["histograms"]
    lengths = [(i * LENGTH_BIN, int(b), int(a)) for i, (b, a) in enumerate(zip(histograms["before"], histograms["after"]))]
    write_csv("plots/document_lengths.csv", ["tokens", "documents", "documents_after_truncation"], lengths)
    tokenized = counts["tokens"] + counts["tokens_lost_to_truncation"] - params["add_eos"] * counts["documents"]
    write_csv("plots/tokenize_tokens.csv", ["step", "tokens"], [["tokenized", tokenized], ["kept after truncation", counts["tokens"]]])
    print(f"tokenize: {counts['documents']:,} documents -> {counts['tokens']:,} tokens in data/tokenized")


if __name__ == "__main__":
    run_stage(main)
