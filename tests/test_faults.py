"""Killed stages and interrupted runs leave nothing that looks complete, and recover exactly."""

import contextlib
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.helpers import ENV, REPO, files_of, run, stage_command, stage_in


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
        stage_command("tokenize", repo),
        cwd=repo,
        env={**ENV, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
        ["dvc", "repro"],
        cwd=repo,
        env={**ENV, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(repo / "data" / ".tokenized.partial" / "data-00000-of-00001.arrow")
    os.killpg(repro.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    assert repro.wait(timeout=60) != 0
    assert not (repo / "data" / "tokenized").exists()
    run(["dvc", "repro"], cwd=repo)
    assert files_of(repo) == files_of(built_repo)
    assert (repo / "dvc.lock").read_text() == (built_repo / "dvc.lock").read_text()


@contextlib.contextmanager
def mounted_tmpfs(folder, size: int, read_only: bool = False):
    """A real file system of `size` bytes at `folder` (this project's machines and CI run as root)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mount.stderr.strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def assert_one_line(result, *fragments):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_full_disk_is_one_line_and_leaves_nothing(built_repo, tmp_path):
    clean = built_repo / "data" / "clean"  # tokenize's input
    clean_bytes = sum(path.stat().st_size for path in clean.rglob("*"))
    with mounted_tmpfs(tmp_path / "data", clean_bytes + (1 << 20)):  # room for 1 MB of the 4.6 MB output
        shutil.copytree(clean, tmp_path / "data" / "clean")
        result = stage_in(tmp_path, "tokenize")
        assert_one_line(result, "data/tokenized: the disk is full; free space and run again")
        assert sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.endswith(".lock")) == ["clean"]


def test_a_read_only_data_folder_is_one_line(tmp_path):
    with mounted_tmpfs(tmp_path / "data", 1 << 20, read_only=True):
        result = stage_in(tmp_path, "download")
        assert_one_line(result, "data/.raw", "the file system is read-only; make it writable and run again")
    assert not (tmp_path / "metrics").exists()


def test_a_read_only_metrics_folder_is_one_line_and_keeps_no_output(built_repo, tmp_path):
    shutil.copytree(built_repo / "data" / "tokenized", tmp_path / "data" / "tokenized")
    with mounted_tmpfs(tmp_path / "metrics", 1 << 20, read_only=True):
        result = stage_in(tmp_path, "group")
        assert_one_line(result, "metrics/.group.json.partial: the file system is read-only")
    assert not (tmp_path / "data" / "grouped").exists()


def test_a_permission_error_is_one_line(built_repo, tmp_path):
    """An immutable folder refuses even root (chattr +i on ext4): EPERM."""
    shutil.copytree(built_repo / "data" / "clean", tmp_path / "data" / "clean")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    if subprocess.run(["chattr", "+i", str(tmp_path / "data")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        result = stage_in(tmp_path, "tokenize")
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "data")], check=True)
    assert_one_line(result, "data/.tokenized", "not permitted")
    assert not (tmp_path / "data" / "tokenized").exists()
