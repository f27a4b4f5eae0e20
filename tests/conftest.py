"""Fixtures: temporary git clones of this repository (fresh, or with the pipeline built), and a local S3 server."""

import shutil
from pathlib import Path

import pytest

from tests.helpers import ENV, clone_repo, run, s3  # noqa: F401 (s3 is a fixture the tests ask for by name)


@pytest.fixture(scope="session", autouse=True)
def private_cache_home(tmp_path_factory) -> Path:
    """The session's XDG_CACHE_HOME, in this process and the commands it runs: tokenizer proofs
    (and anything else cached per user) never land in the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        patch.setitem(ENV, "XDG_CACHE_HOME", str(cache))  # run() hands ENV, copied at import, to commands
        yield cache


@pytest.fixture
def repo_clone(tmp_path) -> Path:
    return clone_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory) -> Path:
    """A clone in which `dvc repro` has run once; tests must not modify it."""
    clone = clone_repo(tmp_path_factory.mktemp("built") / "repo")
    run(["dvc", "repro"], cwd=clone)
    return clone


@pytest.fixture
def repo(built_repo, tmp_path) -> Path:
    """A private copy of the built clone, data and DVC cache included, free to modify."""
    return shutil.copytree(built_repo, tmp_path / "repo", symlinks=True)
