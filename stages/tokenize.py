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

from stages.errors import run_stage
from stages.params import load_params
from stages.storage import from_numpy, read_batches, replacing, write_dataset, write_json
from stages.tokenizer import load_encoder


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


def main() -> None:
    params = load_params("tokenize")
    encoder = load_encoder(params["tokenizer"], int(os.environ.get("TOKENIZE_THREADS", 0)))
    max_length = params["max_length"] if params["truncation"] else None
    schema = pa.schema([("input_ids", pa.list_(id_type(encoder.vocab_size)))])
    raw = read_batches("data/raw", stage="download")
    counts = {"documents": 0, "tokens": 0, "documents_truncated": 0, "tokens_lost_to_truncation": 0}

    def tokenized_batches():
        for batch in raw:  # as written by download: at most 10,000 documents each
            full = encoder.encode(batch.column("text").to_pylist())
            kept = truncate(full, max_length, encoder.truncation_side)
            for before, after in zip(full, kept):
                counts["documents_truncated"] += len(after) < len(before)
                counts["tokens_lost_to_truncation"] += len(before) - len(after)
                counts["tokens"] += len(after)
            counts["documents"] += len(kept)
            yield pa.record_batch([to_list_array(kept, schema.field("input_ids").type.value_type)], schema=schema)

    with replacing("data/tokenized") as output:
        write_dataset(output, schema, tokenized_batches())
    write_json("metrics/tokenize.json", counts)
    print(f"tokenize: {counts['documents']:,} documents -> {counts['tokens']:,} tokens in data/tokenized")


if __name__ == "__main__":
    run_stage(main)
