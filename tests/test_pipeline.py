"""End to end: real `dvc` commands in temporary git clones of this repository."""

import json

import datasets

from tests.helpers import REPO, clone_repo, files_of, metrics, run, write_imdb_like_repo


def test_repro_runs_offline_and_checks_lab1s_batch(built_repo):
    assert metrics(built_repo, "check") == {"batch_shape": [8, 128], "batches": 2264, "dtype": "int64", "mixture_batches": 2263}
    assert metrics(built_repo, "download")["documents"] == 25_488
    assert metrics(built_repo, "group")["blocks"] * 128 == metrics(built_repo, "group")["tokens_kept"]
    grouped = datasets.load_from_disk(str(built_repo / "data/grouped"))
    assert grouped.num_rows == 18_111 and len(grouped[0]["input_ids"]) == 128
    tokenized = datasets.load_from_disk(str(built_repo / "data/tokenized"))
    assert tokenized.features["input_ids"].feature.dtype == "uint16"


def test_fresh_clone_reproduces_the_committed_lock_and_metrics(built_repo):
    assert (built_repo / "dvc.lock").read_text() == (REPO / "dvc.lock").read_text()
    for stage in ("download", "tokenize", "group", "check"):
        assert metrics(built_repo, stage) == json.loads((REPO / "metrics" / f"{stage}.json").read_text())
    status = run(["dvc", "status"], cwd=built_repo).stdout
    assert "up to date" in status


def test_second_repro_is_a_no_op(built_repo):
    before = files_of(built_repo)
    output = run(["dvc", "repro"], cwd=built_repo).stdout
    assert "Running stage" not in output and "up to date" in output
    assert files_of(built_repo) == before


def test_two_clean_runs_are_byte_identical(built_repo, tmp_path):
    other = clone_repo(tmp_path / "other")
    run(["dvc", "repro"], cwd=other, PIPELINE_WORKERS="1")  # the worker count must not matter either
    assert files_of(other) == files_of(built_repo)


def test_changing_block_size_reruns_only_group_and_check(repo):
    output = run(["dvc", "exp", "run", "-S", "group.block_size=64"], cwd=repo).stdout
    assert "Running stage 'group'" in output and "Running stage 'check'" in output
    assert "Running stage 'download'" not in output and "Running stage 'tokenize'" not in output
    assert metrics(repo, "check")["batch_shape"] == [8, 64]
    diff = run(["dvc", "params", "diff"], cwd=repo).stdout
    assert "group.block_size" in diff and "128" in diff and "64" in diff


def test_hub_layout_imdb_folder_runs_through_the_pipeline(repo_clone, tmp_path):
    texts = [f"Review {i}: " + "a film I watched and liked quite a lot. " * (i % 40 + 1) for i in range(300)]
    texts[7] = ""  # an empty review is skipped and counted, not tokenized
    imdb = write_imdb_like_repo(tmp_path / "imdb", texts)
    run(["dvc", "exp", "run", "-S", "download.dataset=local", "-S", f"download.local_path={imdb}"], cwd=repo_clone)
    assert metrics(repo_clone, "download") == {
        "documents": 299,
        "characters": sum(map(len, texts)),
        "empty_documents_skipped": 1,
        "source": f"{imdb} (local)",
        "version": "local: hashed in dvc.lock",
        "files": 1,  # plain_text/train-00000-of-00001.parquet; the test split's file is another split's
        "files_not_read": ["README.md"],
    }
    assert metrics(repo_clone, "check")["batch_shape"] == [8, 128]
    raw = datasets.load_from_disk(str(repo_clone / "data/raw"))
    assert raw["text"] == [t for t in texts if t]
