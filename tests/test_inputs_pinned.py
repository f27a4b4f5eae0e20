"""A local corpus is pinned to what download read; folders and columns are read or refused by one rule each.

Changes are made by a real second process while the stage reads; folders hold real links and files.
"""

import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import ENV, assert_clean_failure, local, metrics, run, stage_in

# Waits until download has started writing (its partial folder exists), then changes the corpus:
# `replace` renames a new file over it; `rewrite` writes new bytes of the same size into it in place
# and puts its mtime back, so only its ctime (and its content) tell.
CHANGER = textwrap.dedent(
    """
    import os, sys, time
    started, new, corpus, how = sys.argv[1:]
    deadline = time.monotonic() + 120
    while not os.path.exists(started) and time.monotonic() < deadline:
        time.sleep(0.0005)
    if how == "replace":
        os.replace(new, corpus)
    else:
        before = os.stat(corpus)
        with open(new, "rb") as source, open(corpus, "r+b") as target:
            target.write(source.read())
        os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    """
)


def changer(workdir, new, corpus, how) -> subprocess.Popen:
    started = workdir / "data" / ".raw.partial"
    return subprocess.Popen([sys.executable, "-c", CHANGER, str(started), str(new), str(corpus), how], env=ENV)


def jsonl(texts) -> bytes:
    return "".join(f'{{"text": "{text}"}}\n' for text in texts).encode()


def texts(count, letter):
    return [f"{letter * 8} document {i:07d} of the corpus, long enough to take a while" for i in range(count)]


def lock_deps(repo):
    return {dep["path"]: dep for dep in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["download"]["deps"]}


def test_a_corpus_replaced_while_read_is_refused_and_never_pinned(repo_clone, tmp_path):
    corpus = repo_clone / "inputs" / "corpus.parquet"
    pq.write_table(pa.table({"text": texts(400_000, "a")}), corpus)
    new = repo_clone / "inputs" / ".new.parquet"
    pq.write_table(pa.table({"text": texts(300_000, "b")}), new)
    watcher = changer(repo_clone, new, corpus, "replace")
    args = ["dvc", "exp", "run", "-S", "download.dataset=local", "-S", "download.local_path=inputs/corpus.parquet"]
    result = run(args, cwd=repo_clone, check=False)
    watcher.wait(timeout=60)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "while download read it" in line]
    assert errors == [
        "error: inputs/corpus.parquet was replaced while download read it (download.local_path), so dvc.lock would pin "
        "content that was not read; run again once it no longer changes"
    ], result.stderr
    assert not (repo_clone / "data" / "raw").exists()
    lock = repo_clone / "dvc.lock"
    assert not lock.exists() or "inputs/corpus.parquet" not in lock.read_text()
    # Run again on the file as it now is: read and pinned alike.
    run(["dvc", "exp", "run", "-S", "download.dataset=local", "-S", "download.local_path=inputs/corpus.parquet"], cwd=repo_clone)
    assert metrics(repo_clone, "download")["documents"] == 300_000
    assert lock_deps(repo_clone)["inputs/corpus.parquet"]["size"] == corpus.stat().st_size
    assert "up to date" in run(["dvc", "status"], cwd=repo_clone).stdout


@pytest.mark.parametrize("folder", [False, True], ids=["a-file", "one-file-of-a-folder"])
def test_a_corpus_rewritten_in_place_while_read_is_refused(tmp_path, folder):
    """The same size, the same mtime, the same inode: only the ctime and the bytes changed."""
    root = tmp_path / "corpus"
    root.mkdir()
    names = [f"part-{i:02d}.jsonl" for i in range(8)] if folder else ["corpus.jsonl"]
    for name in names:
        (root / name).write_bytes(jsonl(texts(40_000, "a")))
    changed = root / names[-1]
    new = tmp_path / "new.jsonl"
    new.write_bytes(jsonl(texts(40_000, "b")))
    assert new.stat().st_size == changed.stat().st_size
    watcher = changer(tmp_path, new, changed, "rewrite")
    result = stage_in(tmp_path, "download", **local(root if folder else changed))
    watcher.wait(timeout=60)
    assert_clean_failure(result, tmp_path, "data/raw", f"{changed} was rewritten while download read it")
    assert not (tmp_path / "metrics" / "download.json").exists()
