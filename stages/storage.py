"""The one place that reads and writes stage outputs.

Datasets are written in the layout of `datasets.Dataset.save_to_disk` (an Arrow IPC
stream plus `state.json` and `dataset_info.json`) so `datasets.load_from_disk` opens
every output, but without importing `datasets`, and byte-for-byte reproducibly:
`save_to_disk` may store a random `_fingerprint`, ours is a hash of the data.
"""

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from stages.errors import UserError, first_line

DATA_FILE = "data-00000-of-00001.arrow"


@contextmanager
def replacing(path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write into; it replaces `path` only on success.

    A failed or killed stage therefore never leaves an output that looks complete.
    A second run writing the same output at the same time is refused, not
    interleaved: it would delete the first run's half-written folder.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(f".{path.name}.lock"), path), _naming(path):
        _remove(temporary)
        try:
            yield temporary
        except BaseException:
            _remove(temporary)
            raise
        _remove(path)
        os.replace(temporary, path)


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an OSError raised while writing `path` that path, if it names none.

    A failed write() (ENOSPC from Python or Arrow) carries no file name, and the
    one-line error must say where the disk filled up.
    """
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


@contextmanager
def _exclusive(lock_path: Path, output: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (the kernel drops it when the process dies)."""
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another run is writing {output} right now; wait for it to finish (one run per stage at a time)"
            ) from None
        yield


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _feature(arrow_type: pa.DataType) -> dict:
    """The `datasets` feature description of an Arrow type (the types our stages write)."""
    if pa.types.is_fixed_size_list(arrow_type):
        return {"feature": _feature(arrow_type.value_type), "length": arrow_type.list_size, "_type": "List"}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return {"feature": _feature(arrow_type.value_type), "_type": "List"}
    return {"dtype": str(arrow_type), "_type": "Value"}


def write_dataset(folder, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Stream `batches` into a new dataset folder; return the number of rows written."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    features = {field.name: _feature(field.type) for field in schema}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    rows = 0
    with pa.OSFile(str(folder / DATA_FILE), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write(batch)
            rows += batch.num_rows
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        "_fingerprint": _file_hash(folder / DATA_FILE)[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    write_json(folder / "dataset_info.json", info)
    write_json(folder / "state.json", state)
    return rows


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _verified_data_file(folder: Path, stage: str, verify: bool = True) -> Path:
    """The Arrow file of a dataset folder written by `stage`, checked against its hash unless not `verify`."""
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist; run the '{stage}' stage first: dvc repro {stage}")
    if not (folder / "state.json").exists():
        raise UserError(f"{folder} is not a dataset folder (no state.json); give the '{stage}' stage's output")
    try:
        state = json.loads((folder / "state.json").read_text())
        data_file = folder / state["_data_files"][0]["filename"]
        # A stream cut at a batch boundary still parses, so only the hash proves it whole.
        if verify and _file_hash(data_file)[:16] != state["_fingerprint"]:
            raise ValueError(f"{data_file.name} does not match the hash in state.json")
        if not data_file.is_file():
            raise ValueError(f"{data_file.name} is missing")
        return data_file
    except (OSError, ValueError, LookupError, TypeError) as error:
        raise _corrupt(folder, stage, error) from None


def _corrupt(folder: Path, stage: str, error: Exception) -> UserError:
    return UserError(
        f"{folder} is corrupt or truncated ({first_line(error)}); "
        f"rebuild it with: dvc repro --force --single-item {stage}"
    )


def map_fixed_size_rows(folder, stage: str, column: str, verify: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Memory-map the fixed-size-list `column` of a dataset written by `stage`, for the loader.

    The folder is checked against its hash first (unless not `verify`); a corrupt or
    truncated one is reported naming the stage that rebuilds it, and a folder of
    another kind (data/raw, data/tokenized) naming what was expected.

    Returns `values`, a zero-copy 1-D view of the whole file as the column's value
    type, `row_starts`, where each row's values begin in it, and the row size. The
    record batches are not contiguous in the file, so this lets one fancy index
    gather rows from any of them: values[row_starts[rows, None] + arange(row_size)].
    """
    folder = Path(folder)
    data_file = _verified_data_file(folder, stage, verify)
    try:
        source = pa.memory_map(str(data_file))
        table = pa.ipc.open_stream(source).read_all()
        source.seek(0)
        whole = source.read_buffer()  # the whole map, without copying
    except pa.ArrowException as error:
        raise _corrupt(folder, stage, error) from None
    field = table.schema.field(column) if column in table.schema.names else None
    if field is None or not pa.types.is_fixed_size_list(field.type):
        found = ", ".join(f"{f.name}: {f.type}" for f in table.schema)
        raise UserError(
            f"{folder} holds {found}, not the fixed-length '{column}' blocks the '{stage}' stage writes; "
            f"give its output folder (data/grouped)"
        )
    row_type = field.type
    row_size, dtype = row_type.list_size, np.dtype(str(row_type.value_type))
    values = np.frombuffer(whole, dtype=dtype, count=whole.size // dtype.itemsize)
    row_starts = []
    for chunk in table.column(column).chunks:
        flat = chunk.flatten()
        # Arrow aligns every buffer to 8 bytes, so this division is exact.
        first = (flat.buffers()[1].address - whole.address) // dtype.itemsize + flat.offset
        row_starts.append(first + np.arange(len(chunk), dtype=np.int64) * row_size)
    return values, np.concatenate(row_starts or [np.empty(0, dtype=np.int64)]), row_size


def read_batches(folder, stage: str) -> pa.RecordBatchStreamReader:
    """Stream the record batches of a dataset folder written by `stage`, checked against its hash.

    Each batch is read into memory and freed after use; a memory map would instead
    keep every page it touched resident, so a stage's RSS would grow with the corpus.
    """
    folder = Path(folder)
    data_file = _verified_data_file(folder, stage)
    try:
        return pa.ipc.open_stream(pa.OSFile(str(data_file)))
    except pa.ArrowException as error:
        raise _corrupt(folder, stage, error) from None


def as_numpy(values: pa.Array) -> np.ndarray:
    """A zero-copy numpy view of a primitive Arrow array without nulls.

    pyarrow's own `to_numpy` imports pandas, which costs a stage 0.4 s of startup.
    The view is read-only and lives as long as the memory map it points into.
    """
    if values.null_count:
        raise ValueError("token ids cannot be null")
    dtype = np.dtype(str(values.type))
    return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values), offset=values.offset * dtype.itemsize)


def from_numpy(values: np.ndarray) -> pa.Array:
    """A zero-copy Arrow array of a 1-D numpy array (pa.array would import pandas)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _write_text(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with _naming(path):
            temporary.write_text(text)
            os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path, values: dict) -> None:
    """Write a small JSON file (metrics, dataset metadata) atomically, with stable formatting."""
    _write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_csv(path, header: list[str], rows) -> None:
    """Write a small CSV file (DVC plot data) atomically."""
    _write_text(path, "\n".join(",".join(map(str, row)) for row in [header, *rows]) + "\n")


def split_names(folder) -> list[str]:
    """The splits of a folder saved like a `datasets.DatasetDict`; [""] (the folder itself) otherwise.

    Stages hold out a validation split only when asked, so Lab1's default output
    stays a single dataset: `Path(folder) / ""` is the folder.
    """
    index = Path(folder) / "dataset_dict.json"
    return json.loads(index.read_text())["splits"] if index.exists() else [""]


def write_split_names(folder, names: list[str]) -> None:
    if names != [""]:
        write_json(Path(folder) / "dataset_dict.json", {"splits": names})


def map_splits(source, target, process, write_reports) -> None:
    """Run `process(source_split, target_split)` for every split of `source`, then `write_reports`.

    `write_reports` gets each split's result, by split name ("" without splits), and
    writes the stage's metrics and plots. `target` gets the same split layout and
    replaces any old one only when every split and the reports succeeded, so a
    failure (a read-only metrics/, a full disk) leaves no new output behind.
    """
    splits = split_names(source)
    with replacing(target) as output:
        results = {split: process(Path(source, split), output / split) for split in splits}
        write_split_names(output, splits)
        write_reports(results)


def split_metrics(results: dict) -> dict:
    """Metrics of the training split, with a held-out split's beside them as `validation`."""
    training, *held_out = results.values()
    return {**training, **({"validation": held_out[0]} if held_out else {})}


def split_folder(folder, split: str | None) -> Path:
    """The dataset folder of `split` ("train" by default) inside `folder`."""
    names = split_names(folder)
    if names == [""]:
        if split not in (None, "train"):
            raise ValueError(f"{folder} has no '{split}' split; hold one out with download.validation_size")
        return Path(folder)
    split = split or "train"
    if split not in names:
        raise ValueError(f"{folder} has no '{split}' split; it has: {', '.join(names)}")
    return Path(folder) / split
