"""Shared fixtures: a temporary git clone of this repository, and a runner for its commands."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# No machine running the tests reaches the Hugging Face Hub: fail at once instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
# dvc, python and pytest of the environment running the tests, whatever PATH says.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(args, cwd, check=True, input_text=None, timeout=None, **env) -> subprocess.CompletedProcess:
    """Run a command in `cwd`, returning its output; fail the test with its stderr if check."""
    result = subprocess.run(
        args, cwd=cwd, env={**ENV, "PYTHONPATH": str(cwd), **env}, capture_output=True, text=True,
        input=input_text, timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def clone_repo(destination: Path) -> Path:
    """A git clone of this repository carrying the working tree (tracked and new files), committed.

    In CI the working tree is a clean clone, so this is exactly `git clone`.
    """
    run(["git", "clone", "-q", str(REPO), str(destination)], cwd=REPO)
    tracked = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout.split("\0")
    for name in filter(None, tracked):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    # dvc exp run commits too: give the clone an identity even where git has none configured.
    run(["git", "config", "user.name", "test"], cwd=destination)
    run(["git", "config", "user.email", "test@example.com"], cwd=destination)
    run(["git", "add", "-A"], cwd=destination)
    run(["git", "commit", "-qm", "working tree", "--allow-empty"], cwd=destination)
    return destination


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
