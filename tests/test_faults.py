"""Killed stages and interrupted runs leave nothing that looks complete, and recover exactly."""

import os
import shutil
import signal
import subprocess
import time

from tests.conftest import ENV, run
from tests.test_pipeline import files_of


def wait_for(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def test_a_stage_killed_mid_write_leaves_no_output_and_repro_rebuilds_it(built_repo, repo):
    expected = files_of(built_repo)
    shutil.rmtree(repo / "data" / "tokenized")
    stage = subprocess.Popen(
        ["python", "-m", "stages.tokenize"], cwd=repo, env={**ENV, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(repo / "data" / ".tokenized.partial" / "data-00000-of-00001.arrow")
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    assert not (repo / "data" / "tokenized").exists()
    run(["dvc", "repro"], cwd=repo)
    assert files_of(repo) == expected
    assert not (repo / "data" / ".tokenized.partial").exists()


def test_an_interrupted_repro_finishes_identically_when_run_again(built_repo, tmp_path):
    repo = tmp_path / "repo"
    run(["git", "clone", "-q", str(built_repo), str(repo)], cwd=tmp_path)
    repro = subprocess.Popen(
        ["dvc", "repro"], cwd=repo, env={**ENV, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    wait_for(repo / "data" / ".tokenized.partial" / "data-00000-of-00001.arrow")
    os.killpg(repro.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    assert repro.wait(timeout=60) != 0
    assert not (repo / "data" / "tokenized").exists()
    run(["dvc", "repro"], cwd=repo)
    assert files_of(repo) == files_of(built_repo)
    assert (repo / "dvc.lock").read_text() == (built_repo / "dvc.lock").read_text()
