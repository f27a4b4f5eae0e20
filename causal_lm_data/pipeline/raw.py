"""The download stage's work: a corpus' documents, cleaned, into a raw folder (data/raw: one `text` column).

Empty documents are skipped and counted; text that is not valid UTF-8 is refused
naming its row; `held_out` picks a validation split.

A local corpus (a file, or a folder read whole: causal_lm_data.pipeline.readers.local_files) is
converted in parallel: consecutive row groups of parquet, or consecutive other files
(JSON lines, text, CSV, compressed or not), of about download.shard_mb make one task
(`convert_task`, a pure function any executor runs), so its shards depend only on
the files and the params. The built-in corpus and Hub datasets stream through one
process.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from causal_lm_data.errors import UserError
from causal_lm_data.format import as_numpy
from causal_lm_data.pipeline.executor import map_shards
from causal_lm_data.pipeline.formats import estimated_bytes, format_of
from causal_lm_data.pipeline.progress import Progress
from causal_lm_data.pipeline.readers import file_batches, parquet_batches, parquet_row_groups
from causal_lm_data.pipeline.writer import name_shards, write_shards

SCHEMA = pa.schema([("text", pa.string())])
PIECE_BYTES = 8 << 20  # text per record batch at most: 8 MB (or 1/8 of a shard), so shards stay near their size


def text_column_of(batch: pa.Table, text_column: str, where: str = "") -> pa.ChunkedArray:
    """The column `text_column`, or the field it names in a struct column (`content.body`) when no column has that name."""
    if batch.column_names.count(text_column) > 1:
        raise UserError(
            f"{where}{batch.column_names.count(text_column)} columns are named '{text_column}'; "
            "rename all but one (or set download.text_column)"
        )
    if text_column in batch.column_names:
        return batch.column(text_column)
    first, *fields = text_column.split(".")
    if fields and first in batch.column_names:
        column = batch.column(first)
        for depth, field in enumerate(fields):
            if pa.types.is_struct(column.type) and len(column.type.get_all_field_indices(field)) > 1:
                inside = ".".join([first, *fields[:depth]])
                raise UserError(
                    f"{where}'{inside}' has {len(column.type.get_all_field_indices(field))} fields named '{field}'; rename all but one"
                )
            if not pa.types.is_struct(column.type) or column.type.get_field_index(field) < 0:
                inside = ".".join([first, *fields[:depth]])
                names = (
                    [column.type.field(i).name for i in range(column.type.num_fields)] if pa.types.is_struct(column.type) else []
                )
                found = f"its fields: {', '.join(names)}" if names else f"it holds {column.type}"
                raise UserError(f"{where}'{inside}' has no field '{field}' ({found}); set download.text_column")
            column = pc.struct_field(column, field)  # a null struct gives a null field
        return column
    raise UserError(f"{where}no column '{text_column}'; set download.text_column to one of: {', '.join(batch.column_names)}")


def text_of(batch: pa.Table, text_column: str, first_row: int = 0, where: str = "") -> tuple[pa.Array, int]:
    """The non-empty documents of `batch[text_column]` as strings, and how many were empty.

    A dictionary-encoded text column (pandas' `category`) is decoded, and so are
    large and view strings (Polars' own); text that is not valid UTF-8 is refused
    here, naming its row (counted from `first_row`), so it never reaches the
    tokenizer. `where` ("path: ") starts every error.
    """
    column = text_column_of(batch, text_column, where)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    text_types = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if not any(is_text(column.type) for is_text in text_types):
        raise UserError(f"{where}column '{text_column}' holds {column.type}, not text; set download.text_column")
    if column.null_count:
        raise UserError(f"{where}column '{text_column}' has {column.null_count} missing (null) documents; fill or drop them")
    column = column.combine_chunks().cast(pa.string())
    _require_utf8(column, text_column, first_row, where)
    # A length cast to bool is "longer than 0"; a Python 0 here would make pyarrow import pandas (0.13 s).
    not_empty = pc.binary_length(column).cast(pa.bool_())
    return column.filter(not_empty), len(column) - pc.sum(not_empty).as_py()


def _require_utf8(column: pa.Array, text_column: str, first_row: int, where: str) -> None:
    try:
        column.validate(full=True)
    except pa.ArrowInvalid:
        for row, value in enumerate(column.cast(pa.binary()).to_pylist()):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UserError(
                    f"{where}column '{text_column}' row {first_row + row:,} is not valid UTF-8 (byte {error.start}); "
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


def masked(batches: Iterator[pa.RecordBatch], mask: np.ndarray, counts: dict) -> Iterator[pa.RecordBatch]:
    """The documents of `batches` that `mask` keeps; adds their documents and characters to `counts` (one split's)."""
    start = 0
    for batch in batches:
        kept = batch.filter(pa.array(mask[start : start + batch.num_rows]))
        start += batch.num_rows
        if kept.num_rows:  # a batch with no held-out document must not become an empty one
            counts["documents"] += kept.num_rows
            counts["characters"] += pc.sum(pc.utf8_length(kept.column("text"))).as_py()
            yield kept


def of_source(table: pa.Table, keep: tuple[str, str], counts: dict, where: str = "") -> pa.Table:
    """The rows of `table` whose field keep[0] (dotted: `meta.pile_set_name`) holds keep[1]; counts the others.

    So one download of The Pile or SlimPajama yields one corpus per source.
    """
    field, value = keep
    try:
        column = text_column_of(table, field, where)
    except UserError as error:
        raise UserError(str(error).replace("download.text_column", "download.source_field")) from None
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_nested(column.type):  # a struct or list is no value to compare with source_value
        raise UserError(f"{where}'{field}' holds {column.type}, not one value per document; set download.source_field")
    try:
        as_text = column.cast(pa.string())
    except pa.ArrowException:  # binary that is not UTF-8, or a type with no text form
        raise UserError(
            f"{where}'{field}' holds {column.type}, which has no text to compare; set download.source_field"
        ) from None
    chosen = pc.fill_null(pc.equal(as_text, value), False)
    kept = table.filter(chosen)
    counts["documents_of_other_sources"] = counts.get("documents_of_other_sources", 0) + table.num_rows - kept.num_rows
    return kept


def cleaned_pieces(
    tables: Iterable[pa.Table],
    text_column: str,
    counts: dict,
    shard_bytes: int,
    first_row: int = 0,
    where: str = "",
    keep: tuple[str, str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The non-empty documents of `tables` as record batches of at most PIECE_BYTES of text; adds to `counts`.

    With `keep` (a field and a value), only the documents of that source (see `of_source`).
    """
    rows = first_row
    for table in tables:
        read = table.num_rows
        if keep:  # a row number in an error then counts from the batch's first row, over its kept rows
            table = of_source(table, keep, counts, where)
        texts, empty = text_of(table, text_column, first_row=rows, where=where)
        rows += read
        counts["documents"] += len(texts)
        counts["characters"] += pc.sum(pc.utf8_length(texts)).as_py() or 0
        counts["empty_documents_skipped"] += empty
        for piece in byte_slices(texts, min(PIECE_BYTES, shard_bytes // 8)):
            yield pa.record_batch([piece], schema=SCHEMA)


def source_filter(params: dict, section: str) -> tuple[str, str] | None:
    """(field, value) from `source_field` and `source_value`, when a corpus keeps one source of a multi-source file."""
    field, value = params["source_field"], params["source_value"]
    if bool(field) != bool(value):
        raise UserError(
            f"set both {section}.source_field and {section}.source_value (a field such as meta.pile_set_name and its value), or neither"
        )
    return (field, value) if field else None


def new_counts() -> dict:
    return {"documents": 0, "characters": 0, "empty_documents_skipped": 0}


@dataclass(frozen=True)
class FilePart:
    """A local file, or some consecutive row groups of a parquet one."""

    path: str
    row_groups: tuple[int, ...] | None  # None: the whole file
    first_row: int  # the file's row number of its first row, for error messages


@dataclass(frozen=True)
class ConvertTask:
    """Consecutive parts of the local files, converted in order into unnamed shards of `target`."""

    parts: tuple[FilePart, ...]
    target: str
    text_column: str
    shard_bytes: int  # where its shards are cut: download.shard_mb, or an equal part of one larger part
    name: str  # orders the shards it writes among all tasks
    keep: tuple[str, str] | None = None  # only the documents whose field holds this value (a source of a multi-source file)


def convert_task(task: ConvertTask) -> dict:
    """Clean one task's documents into unnamed shards (cut at shard_bytes); return them and the counts."""
    counts = new_counts()

    def pieces() -> Iterator[pa.RecordBatch]:
        for part in task.parts:
            path = Path(part.path)
            source_field = task.keep[0] if task.keep else None
            if part.row_groups is None:
                tables = file_batches(path, task.text_column, source_field)
            else:
                tables = parquet_batches(path, part.row_groups)
            yield from cleaned_pieces(
                tables, task.text_column, counts, task.shard_bytes, part.first_row, where=f"{path}: ", keep=task.keep
            )

    shards = write_shards(task.target, SCHEMA, pieces(), task.shard_bytes, prefix=task.name)
    return {"shards": shards, "counts": counts}


def _units(path: Path) -> Iterator[tuple[FilePart, int]]:
    """The units of work of one file and the bytes of text each holds: parquet row groups, or the whole file."""
    if format_of(path) != ".parquet":
        yield FilePart(str(path), None, 0), estimated_bytes(path)
        return
    rows = 0
    for index, (group_rows, group_bytes) in enumerate(parquet_row_groups(path)):
        yield FilePart(str(path), (index,), rows), group_bytes
        rows += group_rows


def local_tasks(
    files: list[Path], target: Path, text_column: str, shard_bytes: int, keep: tuple[str, str] | None = None
) -> list[ConvertTask]:
    """Tasks of consecutive units (row groups of parquet, other files whole) holding at most shard_bytes of text.

    Runs span files, so 5,000 small files make a few shards, not 5,000. A unit larger
    than a shard is a task alone, cut into equal parts rather than full shards and a
    sliver; a run that fits is cut at shard_bytes (a parquet footer's size and a
    compressed file's recorded or estimated size (formats.estimated_bytes)
    only estimate the text). Tasks depend on the files and shard_bytes alone.
    """
    tasks, run, run_bytes = [], [], 0

    def close() -> None:
        parts = []  # consecutive row groups of one file make one part
        for _, part in run:
            if parts and part.row_groups and parts[-1].path == part.path:
                parts[-1] = FilePart(part.path, parts[-1].row_groups + part.row_groups, parts[-1].first_row)
            else:
                parts.append(part)
        # A parquet row group larger than a shard is cut in equal parts, not full shards and a sliver.
        # A whole file is cut at shard_bytes: its size only estimates its text, and a file that
        # grows at its end (appended documents) must keep its earlier shards, so DVC moves only the new ones.
        whole_file = run[0][1].row_groups is None
        cut = shard_bytes if run_bytes <= shard_bytes or whole_file else -(-run_bytes // -(-run_bytes // shard_bytes))
        number, first = run[0]
        name = f"-{number:05d}-{(first.row_groups or (0,))[0]:06d}"
        tasks.append(ConvertTask(tuple(parts), str(target), text_column, cut, name, keep))

    for number, path in enumerate(files):
        for unit, size in _units(path):
            if run and run_bytes + size > shard_bytes:
                close()
                run, run_bytes = [], 0
            run.append((number, unit))
            run_bytes += size
    if run:
        close()
    return tasks


def convert_files(
    files: list[Path],
    folder: Path,
    text_column: str,
    shard_bytes: int,
    counts: dict,
    progress: Progress,
    keep: tuple[str, str] | None = None,
) -> None:
    """Convert local files in parallel (executor.map_shards) into the dataset folder `folder`, in file order."""
    folder.mkdir(parents=True)
    tasks = local_tasks(files, folder.resolve(), text_column, shard_bytes, keep)
    written = []
    for result in map_shards(convert_task, tasks):
        for key, value in result["counts"].items():
            counts[key] = counts.get(key, 0) + value
        progress.update(result["counts"]["documents"] + result["counts"]["empty_documents_skipped"])
        written += result["shards"]
    # A task of empty documents wrote an empty shard: keep one only if every shard is empty.
    kept = [shard for shard in written if shard[2]] or written[:1]
    for empty in set(written) - set(kept):
        empty[0].unlink()
    name_shards(folder, SCHEMA, kept)
