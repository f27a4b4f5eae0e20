"""Writing stage outputs safely: atomic replacement, one writer at a time, splits, metrics files.

The layout of a dataset folder itself (its shards) is `stages.storage`'s.
"""

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stages.errors import UserError, first_line, quoted


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


def rebuild_command(stage: str) -> str:
    """How a stage says to repair a broken input folder: the dvc command that writes it again."""
    return f"rebuild it with: dvc repro --force --single-item {stage}"


def plain_name(name) -> bool:
    """Whether `name` (read from a folder's own index) names a file or folder directly inside that folder."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def split_names(folder, stage: str, fix: str | None = None) -> list[str]:
    """The splits of a folder saved like a `datasets.DatasetDict`; [""] (the folder itself) otherwise.

    Stages hold out a validation split only when asked, so Lab1's default output
    stays a single dataset: `Path(folder) / ""` is the folder. dataset_dict.json
    arrives with the data, so it is checked: a list of plain names, each once, none
    a symlink (DVC links files, never folders). `stage` wrote the folder; `fix` says
    how to repair a bad one (by default, the dvc command that rebuilds it).
    """
    index = Path(folder) / "dataset_dict.json"
    if not index.exists():
        return [""]
    try:
        splits = json.loads(index.read_text())
        splits = splits.get("splits") if isinstance(splits, dict) else None
        if not isinstance(splits, list) or not splits:
            raise ValueError('it must hold {"splits": [one name per split folder]}')
        for position, name in enumerate(splits):
            if not plain_name(name):
                raise ValueError(f"split {quoted(name)} is not a plain folder name")
            if name in splits[:position]:
                raise ValueError(f"split {quoted(name)} is listed twice")
            if Path(folder, name).is_symlink():
                raise ValueError(f"split {quoted(name)} is a symlink, not a folder inside {folder}")
    except (OSError, ValueError) as error:
        raise UserError(f"{index} is malformed ({first_line(error)}); {fix or rebuild_command(stage)}") from None
    return splits


def write_split_names(folder, names: list[str]) -> None:
    if names != [""]:
        write_json(Path(folder) / "dataset_dict.json", {"splits": names})


def map_splits(source, source_stage: str, target, process, write_reports) -> None:
    """Run `process(source_split, target_split)` for every split of `source` (written by `source_stage`), then `write_reports`.

    `write_reports` gets each split's result, by split name ("" without splits), and
    writes the stage's metrics and plots. `target` gets the same split layout and
    replaces any old one only when every split and the reports succeeded, so a
    failure (a read-only metrics/, a full disk) leaves no new output behind.
    """
    splits = split_names(source, source_stage)
    with replacing(target) as output:
        results = {split: process(Path(source, split), output / split) for split in splits}
        write_split_names(output, splits)
        write_reports(results)


def split_metrics(results: dict) -> dict:
    """Metrics of the training split, with a held-out split's beside them as `validation`."""
    training, *held_out = results.values()
    return {**training, **({"validation": held_out[0]} if held_out else {})}


def split_folder(folder, split: str | None, stage: str, fix: str | None = None) -> Path:
    """The dataset folder of `split` ("train" by default) inside `folder`, written by `stage` (see split_names)."""
    names = split_names(folder, stage, fix)
    if names == [""]:
        if split not in (None, "train"):
            raise ValueError(f"{folder} has no '{split}' split; hold one out with download.validation_size")
        return Path(folder)
    split = split or "train"
    if split not in names:
        raise ValueError(f"{folder} has no '{split}' split; it has: {', '.join(names)}")
    return Path(folder) / split
