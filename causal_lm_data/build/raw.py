"""The download stage's work: a corpus' documents, cleaned, into a raw folder (data/raw: one `text` column).

Empty documents are skipped and counted; text that is not valid UTF-8 is refused
naming its row; `held_out` picks a validation split.

Local parquet (a file, or a folder laid out like a Hub dataset repository whose
split is parquet files) is converted in parallel: consecutive row groups of about
download.shard_mb make one task (`convert_row_groups`, a pure function any executor
runs), so its shards depend only on the files and the params. Other sources stream
through one process.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from causal_lm_data.build.executor import map_shards
from causal_lm_data.build.progress import Progress
from causal_lm_data.build.readers import parquet_batches, parquet_row_groups
from causal_lm_data.build.writer import name_shards, write_shards
from causal_lm_data.errors import UserError
from causal_lm_data.format import as_numpy

SCHEMA = pa.schema([("text", pa.string())])
PIECE_BYTES = 8 << 20  # text per record batch at most: 8 MB (or 1/8 of a shard), so shards stay near their size


def text_of(batch: pa.Table, text_column: str, first_row: int = 0) -> tuple[pa.Array, int]:
    """The non-empty documents of `batch[text_column]` as strings, and how many were empty.

    A dictionary-encoded text column (pandas' `category`) is decoded; text that is
    not valid UTF-8 is refused here, naming its row (counted from `first_row`), so
    it never reaches the tokenizer.
    """
    if text_column not in batch.column_names:
        raise UserError(
            f"no column '{text_column}'; set download.text_column to one of: {', '.join(batch.column_names)}"
        )
    column = batch.column(text_column)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UserError(f"column '{text_column}' holds {column.type}, not text; set download.text_column")
    if column.null_count:
        raise UserError(f"column '{text_column}' has {column.null_count} missing (null) documents; fill or drop them")
    column = column.combine_chunks().cast(pa.string())
    _require_utf8(column, text_column, first_row)
    not_empty = pc.greater(pc.binary_length(column), 0)
    return column.filter(not_empty), len(column) - pc.sum(not_empty).as_py()


def _require_utf8(column: pa.Array, text_column: str, first_row: int) -> None:
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        for row, value in enumerate(column.cast(pa.binary()).to_pylist()):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UserError(
                    f"column '{text_column}' row {first_row + row:,} is not valid UTF-8 (byte {error.start}); "
                    "re-encode the corpus as UTF-8"
                ) from None
        raise


def byte_slices(texts: pa.Array, max_bytes: int) -> list[pa.Array]:
    """`texts` cut into consecutive pieces of at most `max_bytes` of text (a longer document stands alone).

    Shards close at piece boundaries, so pieces keep a shard near its size whatever
    the documents' lengths; the cuts depend only on the documents.
    """
    if len(texts) == 0:
        return []
    ends = np.cumsum(as_numpy(pc.binary_length(texts).cast(pa.int64())))
    cuts, start, base = [], 0, 0
    while start < len(texts):
        stop = max(int(np.searchsorted(ends, base + max_bytes, side="right")), start + 1)
        cuts.append(texts.slice(start, stop - start))
        start, base = stop, int(ends[stop - 1])
    return cuts


def held_out(documents: int, validation_size: int | float, seed: int) -> np.ndarray:
    """A mask of the documents held out for validation: a seeded shuffle picks them.

    `validation_size` is a fraction below 1 or a count; both splits keep the
    corpus order, and no document is in both.
    """
    count = round(documents * validation_size) if isinstance(validation_size, float) else validation_size
    if isinstance(validation_size, float) and validation_size >= 1:
        raise UserError(f"download.validation_size {validation_size} must be a fraction below 1 or a whole count")
    if not 0 < count < documents:
        raise UserError(
            f"download.validation_size {validation_size} holds out {count} of {documents:,} documents; "
            "both splits need at least one"
        )
    mask = np.zeros(documents, dtype=bool)
    mask[np.random.default_rng(seed).permutation(documents)[:count]] = True
    return mask


def masked(batches: Iterator[pa.RecordBatch], mask: np.ndarray) -> Iterator[pa.RecordBatch]:
    start = 0
    for batch in batches:
        kept = batch.filter(pa.array(mask[start : start + batch.num_rows]))
        start += batch.num_rows
        if kept.num_rows:  # a batch with no held-out document must not become an empty one
            yield kept


def cleaned_pieces(tables: Iterable[pa.Table], text_column: str, counts: dict, shard_bytes: int, first_row: int = 0) -> Iterator[pa.RecordBatch]:
    """The non-empty documents of `tables` as record batches of at most PIECE_BYTES of text; adds to `counts`."""
    rows = first_row
    for table in tables:
        texts, empty = text_of(table, text_column, first_row=rows)
        rows += table.num_rows
        counts["documents"] += len(texts)
        counts["characters"] += pc.sum(pc.utf8_length(texts)).as_py() or 0
        counts["empty_documents_skipped"] += empty
        for piece in byte_slices(texts, min(PIECE_BYTES, shard_bytes // 8)):
            yield pa.record_batch([piece], schema=SCHEMA)


def new_counts() -> dict:
    return {"documents": 0, "characters": 0, "empty_documents_skipped": 0}


@dataclass(frozen=True)
class RowGroupTask:
    """Consecutive row groups of a local parquet file, converted into unnamed shards of `target`."""

    path: str
    row_groups: tuple[int, ...]
    first_row: int  # the corpus' row number of the first one, for error messages
    target: str
    text_column: str
    shard_bytes: int  # where its shards are cut: download.shard_mb, or an equal part of one larger row group
    name: str  # orders the shards it writes among all tasks


def convert_row_groups(task: RowGroupTask) -> dict:
    """Clean one task's documents into unnamed shards (cut at shard_bytes); return them and the counts."""
    counts = new_counts()
    tables = parquet_batches(Path(task.path), task.row_groups)
    pieces = cleaned_pieces(tables, task.text_column, counts, task.shard_bytes, task.first_row)
    shards = write_shards(task.target, SCHEMA, pieces, task.shard_bytes, prefix=task.name)
    return {"shards": shards, "counts": counts}


def row_group_tasks(files: list[Path], target: Path, text_column: str, shard_bytes: int) -> list[RowGroupTask]:
    """Per file, one task per run of consecutive row groups of at most shard_bytes (uncompressed; a larger one alone)."""
    tasks, rows = [], 0
    for number, path in enumerate(files):
        group, size, first_row = [], 0, rows

        def close() -> None:
            # A row group larger than a shard is cut into equal parts, not a full shard and a sliver;
            # a run that fits is cut at shard_bytes (its footer size only estimates its text).
            cut = shard_bytes if size <= shard_bytes else -(-size // -(-size // shard_bytes))
            name = f"-{number:05d}-{group[0]:06d}"
            tasks.append(RowGroupTask(str(path), tuple(group), first_row, str(target), text_column, cut, name))

        for index, (group_rows, group_bytes) in enumerate(parquet_row_groups(path)):
            if group and size + group_bytes > shard_bytes:
                close()
                group, size, first_row = [], 0, rows
            group.append(index)
            size += group_bytes
            rows += group_rows
        if group:
            close()
    return tasks


def convert_parquet(files: list[Path], folder: Path, text_column: str, shard_bytes: int, counts: dict, progress: Progress) -> None:
    """Convert local parquet files' row groups in parallel (causal_lm_data.build.executor) into the dataset folder `folder`."""
    folder.mkdir(parents=True)
    tasks = row_group_tasks(files, folder.resolve(), text_column, shard_bytes)
    written = []
    for result in map_shards(convert_row_groups, tasks):
        for key, value in result["counts"].items():
            counts[key] += value
        progress.update(result["counts"]["documents"] + result["counts"]["empty_documents_skipped"])
        written += result["shards"]
    # A task of empty documents wrote an empty shard: keep one only if every shard is empty.
    kept = [shard for shard in written if shard[2]] or written[:1]
    for empty in set(written) - set(kept):
        empty[0].unlink()
    name_shards(folder, SCHEMA, kept)
