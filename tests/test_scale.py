"""Sharded outputs: identical bytes and dvc.lock whatever runs the shards (1 or 2 processes, a Dask cluster)."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from causal_lm_data.format import shards
from causal_lm_data.loader import Blocks
from tests.helpers import clone_repo, dask_cluster, files_of, metrics, run


def small_shards(repo: Path, corpus: Path | None = None) -> Path:
    """1 MB shards: the 12 MB built-in corpus becomes 12 raw and 5 grouped shards. `corpus`: a local file instead."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["download"]["shard_mb"] = params["group"]["shard_mb"] = 1
    if corpus:
        params["download"]["dataset"], params["download"]["local_path"] = "local", str(corpus)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "small shards"], cwd=repo)
    return repo


@pytest.mark.parametrize("source", ["built-in", "parquet"])
def test_outputs_are_identical_for_any_worker_count_and_on_a_dask_cluster(tmp_path, source):
    """All three parallel stages; with parquet, download's row groups run on the executor too."""
    corpus = None
    if source == "parquet":  # the built-in documents in 17 row groups of 1,500 (~0.7 MB each)
        from causal_lm_data.pipeline.readers import builtin_documents

        corpus = tmp_path / "corpus.parquet"
        pq.write_table(pa.table({"text": list(builtin_documents())}), corpus, row_group_size=1_500)
    runs = {}
    for name, env in [("1 process", {"PIPELINE_WORKERS": "1"}), ("2 processes", {"PIPELINE_WORKERS": "2"})]:
        repo = small_shards(clone_repo(tmp_path / name.replace(" ", "-")), corpus)
        run(["dvc", "repro"], cwd=repo, **env)
        runs[name] = repo
    repo = small_shards(clone_repo(tmp_path / "dask"), corpus)
    with dask_cluster(tmp_path, pythonpath=repo) as address:
        run(["dvc", "repro"], cwd=repo, PIPELINE_DASK_SCHEDULER=address)
    runs["dask"] = repo

    reference = runs["1 process"]
    assert len(shards(reference / "data/raw", "download")) == (12 if source == "built-in" else 17)
    assert len(shards(reference / "data/tokenized", "tokenize")) == (12 if source == "built-in" else 17)
    assert len(shards(reference / "data/grouped", "group")) == 5
    for name, repo in runs.items():
        assert files_of(repo) == files_of(reference), name
        assert (repo / "dvc.lock").read_text() == (reference / "dvc.lock").read_text(), name


def test_shards_keep_the_meaning_of_grouping(built_repo, tmp_path):
    """Only each split's final remainder is dropped: the blocks equal the single-shard run's, in order."""
    repo = small_shards(clone_repo(tmp_path / "sharded"))
    run(["dvc", "repro"], cwd=repo, PIPELINE_WORKERS="2")
    assert metrics(repo, "group") == metrics(built_repo, "group")
    assert metrics(repo, "tokenize") == metrics(built_repo, "tokenize")
    sharded = Blocks(repo / "data/grouped", position_ids=True)
    single = Blocks(built_repo / "data/grouped", position_ids=True)
    assert len(sharded.shards) == 5 and len(single.shards) == 1
    everything = np.arange(len(single))
    # The ids, and the document starts behind position_ids and labels, cross shard bounds intact.
    for name, tensor in single.batch(everything).items():
        assert torch.equal(sharded.batch(everything)[name], tensor), name


def test_push_moves_only_the_shards_that_changed(tmp_path):
    """Appending documents to a local corpus changes the last shards only; `dvc push` sends just those."""
    from causal_lm_data.pipeline.readers import builtin_documents

    repo = small_shards(clone_repo(tmp_path / "repo"))
    corpus = tmp_path / "corpus.txt"
    documents = [d.replace("\n", " ") for d in builtin_documents()]
    corpus.write_text("\n".join(documents) + "\n")
    run(["dvc", "exp", "run", "-S", "download.dataset=local", "-S", f"download.local_path={corpus}"], cwd=repo)
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], cwd=repo)
    run(["dvc", "push"], cwd=repo)
    before = shard_hashes(repo)

    with corpus.open("a") as file:  # 200 more documents at the end
        file.write("\n".join(documents[:200]) + "\n")
    run(["dvc", "repro"], cwd=repo)
    after = shard_hashes(repo)
    changed = [name for name, sha256 in after.items() if before.get(name) != sha256]
    assert 0 < len(changed) < len(after) / 2, changed
    pushed = run(["dvc", "push"], cwd=repo).stdout
    # The changed shards, plus each folder's state.json and its DVC directory listing.
    assert len(changed) == 3 and f"{len(changed) + 3 * 2} files pushed" in pushed, (changed, pushed)


def shard_hashes(repo: Path) -> dict:
    return {
        (folder, shard.path.name): shard.sha256
        for folder in ("raw", "tokenized", "grouped")
        for shard in shards(repo / "data" / folder, folder)
    }
