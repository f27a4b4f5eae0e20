"""Writing a stage's outputs: data folders in the format `causal_lm_data.format` describes, atomically.

A stage writes into a temporary sibling of its output (`replacing`) that replaces
the output only when everything, metrics included, was written; the metrics and
plots written meanwhile wait beside their final names and take them only once the
output is in place, so a failed run changes none of them. Shards are written as
Arrow IPC streams with their sha256 recorded in state.json.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError, printable
from causal_lm_data.format import file_hash, shard_name

# The files (metrics, plots) that the `replacing` under way puts in place with its output:
# (temporary, final) pairs, in the order written. None: no output is being replaced.
_companions: list[tuple[Path, Path]] | None = None


@contextmanager
def replacing(path, *more) -> Iterator:
    """Yield a temporary sibling of `path` to write into; it replaces `path` only on success.

    A failed or killed stage therefore never leaves an output that looks complete.
    Files written with write_json/write_csv outside that folder meanwhile (metrics,
    plots) are put in place with it, after it: all of them or none, the old output
    kept whole until the new one is in place. A second run writing the same output
    at the same time is refused, not interleaved: it would delete the first run's
    half-written folder. With `more` outputs, it yields one temporary each (a tuple),
    and all of them replace theirs together, or none does.
    """
    global _companions
    paths = [Path(path), *map(Path, more)]
    temporaries = [_sibling(each, "partial") for each in paths]
    for each in paths:
        _refuse_link(each)
    with contextlib.ExitStack() as held:
        for each, temporary in zip(paths, temporaries):
            temporary.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(_exclusive(each.with_name(f".{each.name}.lock"), each))
            held.enter_context(_naming(each))
            _remove(temporary)
            _remove(_sibling(each, "old"))  # a previous run's old output it could not delete
        _companions = []
        try:
            yield temporaries[0] if not more else tuple(temporaries)
            old = _swap_in([*zip(temporaries, paths), *_companions])
        except BaseException:
            for written in [*temporaries, *(new for new, _ in _companions)]:
                _remove(written)
            raise
        finally:
            _companions = None
    _discard(old)


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}")


def _refuse_link(path: Path) -> None:
    """Refuse an output that is a symbolic link: replacing it would write beside the link, not
    where it points, and following it would write outside the repository unasked."""
    if path.is_symlink():
        raise UserError(
            f"{path} is a symbolic link ({printable(os.readlink(path))}); a stage replaces its output folder whole: "
            f"remove the link (rm {path}) and run again (to keep data on another disk, move DVC's cache: dvc cache dir)"
        )


def _swap_in(moves: list[tuple[Path, Path]]) -> list[Path]:
    """Rename each new path onto its final one, the old one moved aside first; all or none.

    Returns the old ones moved aside, for the caller to delete. On a failure (an old
    output that cannot be moved: immutable, a mount point, a read-only folder) every
    move already made is undone, so the old outputs stay whole where they were.
    """
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for new, final in moves:
            aside = None
            if final.exists() or final.is_symlink():
                aside = _sibling(final, "old")
                _remove(aside)
                os.rename(final, aside)
            done.append((new, final, aside))
            os.rename(new, final)
    except BaseException as error:
        for new, final, aside in reversed(done):
            if not new.exists() and (final.exists() or final.is_symlink()):
                os.rename(final, new)
            if aside is not None:
                os.rename(aside, final)
        if isinstance(error, OSError):
            raise UserError(
                f"{final}: cannot be replaced ({error.strerror or type(error).__name__}); it is kept as it was: "
                "make it replaceable (not immutable, not a mount point, its folder writable) and run again"
            ) from None
        raise
    return [aside for _, _, aside in done if aside is not None]


def _discard(old: list[Path]) -> None:
    """Delete the old outputs the new ones replaced; one that cannot be deleted is named, not fatal:
    the new outputs are whole and in place, and the next run deletes it again."""
    for path in old:
        try:
            _remove(path)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            print(f"warning: could not delete the replaced output {path} ({reason}); delete it by hand", file=sys.stderr)


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
    """Write `path` atomically; while an output is being replaced, a file outside it (metrics,
    plots) waits beside its final name until the output is in place (see `replacing`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _sibling(path, "partial")
    waits = _companions is not None and not _inside_partial(path)
    if waits:
        _refuse_link(path)
    try:
        with _naming(path):
            temporary.write_text(text)
            if waits:
                if (temporary, path) not in _companions:  # written twice: the last text wins
                    _companions.append((temporary, path))
            else:
                os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _inside_partial(path: Path) -> bool:
    """Whether `path` lies in an output folder being written (a `.NAME.partial` folder)."""
    return any(part.startswith(".") and part.endswith(".partial") for part in path.parent.parts)


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
