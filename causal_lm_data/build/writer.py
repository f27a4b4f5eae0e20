"""Writing a stage's outputs: data folders in the format `causal_lm_data.format` describes, atomically.

A stage writes into a temporary sibling of its output (`replacing`) that replaces
the output only when everything, metrics included, was written; shards are
written as Arrow IPC streams with their sha256 recorded in state.json.
"""

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError
from causal_lm_data.format import file_hash, shard_name


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


def write_split_names(folder, names: list[str]) -> None:
    if names != [""]:
        write_json(Path(folder) / "dataset_dict.json", {"splits": names})


def split_metrics(results: dict) -> dict:
    """Metrics of the training split, with a held-out split's beside them as `validation`."""
    training, *held_out = results.values()
    return {**training, **({"validation": held_out[0]} if held_out else {})}


def _feature(arrow_type: pa.DataType) -> dict:
    """The `datasets` feature description of an Arrow type (the types our stages write)."""
    if pa.types.is_fixed_size_list(arrow_type):
        return {"feature": _feature(arrow_type.value_type), "length": arrow_type.list_size, "_type": "List"}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return {"feature": _feature(arrow_type.value_type), "_type": "List"}
    return {"dtype": str(arrow_type), "_type": "Value"}


def _with_features(schema: pa.Schema) -> pa.Schema:
    features = {field.name: _feature(field.type) for field in schema}
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})


def write_shard(path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> tuple[int, str]:
    """Stream `batches` into one Arrow file; return its rows and sha256 (for `write_index`)."""
    rows = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, _with_features(schema)) as writer:
        for batch in batches:
            writer.write(batch)
            rows += batch.num_rows
    return rows, file_hash(Path(path))


def write_index(folder, schema: pa.Schema, shards: list[tuple[str, str, int]]) -> None:
    """Write state.json and dataset_info.json for the shards [(file name, sha256, rows)] of `folder`, in order."""
    features = {field.name: _feature(field.type) for field in schema}
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    state = {
        "_data_files": [{"filename": name, "rows": rows, "sha256": sha256} for name, sha256, rows in shards],
        "_fingerprint": hashlib.sha256("".join(sha256 for _, sha256, _ in shards).encode()).hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    write_json(Path(folder) / "dataset_info.json", info)
    write_json(Path(folder) / "state.json", state)


def write_shards(
    folder, schema: pa.Schema, batches: Iterable[pa.RecordBatch], shard_bytes: int = 0, prefix: str = ""
) -> list[tuple[Path, str, int]]:
    """Stream `batches` into consecutive unnamed shard files in `folder`; return each one's (path, sha256, rows).

    With `shard_bytes`, a shard closes at the first batch boundary at or past that
    many bytes of Arrow data, so shard boundaries depend only on the batches (the
    input and the params), never on who writes them. 0: a single shard. At least
    one shard is written. `name_shards` gives them their final names.
    """
    folder = Path(folder)
    written: list[tuple[Path, str, int]] = []
    batches = iter(batches)
    pending = next(batches, None)
    while pending is not None or not written:

        def shard_batches() -> Iterator[pa.RecordBatch]:
            nonlocal pending
            size = 0
            while pending is not None and (not shard_bytes or size < shard_bytes):
                batch, pending = pending, next(batches, None)
                size += batch.nbytes
                yield batch

        path = folder / f".shard{prefix}-{len(written):05d}.partial"
        rows, sha256 = write_shard(path, schema, shard_batches())
        written.append((path, sha256, rows))
    return written


def name_shards(folder, schema: pa.Schema, written: list[tuple[Path, str, int]]) -> int:
    """Rename the shards `written` (in order) to data-XXXXX-of-YYYYY.arrow and index them; return the rows."""
    names = []
    for index, (path, sha256, rows) in enumerate(written):
        name = shard_name(index, len(written))
        Path(path).rename(Path(folder) / name)
        names.append((name, sha256, rows))
    write_index(folder, schema, names)
    return sum(rows for _, _, rows in written)


def write_dataset(folder, schema: pa.Schema, batches: Iterable[pa.RecordBatch], shard_bytes: int = 0) -> int:
    """Stream `batches` into a new dataset folder, in shards of about `shard_bytes` (see write_shards); return the rows."""
    Path(folder).mkdir(parents=True)
    return name_shards(folder, schema, write_shards(folder, schema, batches, shard_bytes))


def from_numpy(values: np.ndarray) -> pa.Array:
    """A zero-copy Arrow array of a 1-D numpy array (pa.array would import pandas)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
