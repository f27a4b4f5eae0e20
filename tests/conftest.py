"""Fixtures: temporary git clones of this repository (fresh, or with the pipeline built), and a local S3 server."""

import shutil
from pathlib import Path

import pytest

from tests.helpers import clone_repo, run, s3  # noqa: F401 (s3 is a fixture the tests ask for by name)


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
