"""Every input is pinned: local corpora and tokenizers are DVC dependencies, names are refused as paths."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from causal_lm_data.errors import UserError
from causal_lm_data.pipeline.inputs import Input, looks_like_path, resolve_input
from causal_lm_data.tokenizer import load_tokenizer
from tests.helpers import metrics, run

PARAMS = {"local_path": "inputs", "revision": "main"}


def lock_deps(repo, stage):
    return {dep["path"]: dep for dep in yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]["deps"]}


def write_corpus(path, texts):
    pq.write_table(pa.table({"text": texts}), path)


@pytest.mark.parametrize("inside", [True, False], ids=["inside-the-repo", "outside-the-repo"])
def test_editing_a_local_corpus_reruns_download(repo_clone, tmp_path, inside):
    corpus = (repo_clone / "inputs" / "corpus.parquet") if inside else (tmp_path / "elsewhere" / "corpus.parquet")
    corpus.parent.mkdir(exist_ok=True)
    texts = [f"document {i} about the budget and the army. " * 30 for i in range(400)]
    write_corpus(corpus, texts)
    local_path = "inputs/corpus.parquet" if inside else str(corpus)
    run(["dvc", "exp", "run", "-S", "download.dataset=local", "-S", f"download.local_path={local_path}"], cwd=repo_clone)
    assert metrics(repo_clone, "download")["documents"] == 400
    recorded = lock_deps(repo_clone, "download")[local_path]
    assert recorded["md5"] and recorded["size"] == corpus.stat().st_size
    assert "up to date" in run(["dvc", "status"], cwd=repo_clone).stdout

    write_corpus(corpus, texts[:300])  # the same path, new content
    status = run(["dvc", "status"], cwd=repo_clone).stdout
    assert "download:" in status and "modified:" in status and local_path in status
    output = run(["dvc", "repro"], cwd=repo_clone).stdout
    assert "Running stage 'download'" in output
    assert metrics(repo_clone, "download")["documents"] == 300
    assert lock_deps(repo_clone, "download")[local_path]["md5"] != recorded["md5"]


def test_editing_a_local_tokenizer_folder_reruns_tokenize(repo_clone, tmp_path):
    folder = tmp_path / "my-tokenizer"
    load_tokenizer("gpt2").save_pretrained(folder)
    run(["dvc", "exp", "run", "-S", "tokenize.tokenizer=local", "-S", f"tokenize.local_path={folder}"], cwd=repo_clone)
    before = metrics(repo_clone, "tokenize")
    assert before["tokens"] == 2_318_316  # the same GPT-2 ids, through AutoTokenizer
    assert str(folder) in lock_deps(repo_clone, "tokenize")

    # A different vocabulary in the same folder: tokenize must run again.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1, "of": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    for name in folder.iterdir():
        name.unlink()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", eos_token="[UNK]").save_pretrained(folder)
    assert "tokenize:" in run(["dvc", "status"], cwd=repo_clone).stdout
    output = run(["dvc", "repro"], cwd=repo_clone).stdout
    assert "Running stage 'tokenize'" in output and "Running stage 'download'" not in output
    assert metrics(repo_clone, "tokenize")["tokens"] != before["tokens"]


@pytest.mark.parametrize("value", ["/data/imdb.parquet", "./corpus.csv", "corpus.JSONL", "a/b/c", "~/corpus"])
def test_a_path_where_a_name_belongs_is_refused_with_the_fix(value):
    assert looks_like_path(value)
    with pytest.raises(UserError, match=f"set download.dataset=local and download.local_path={value}"):
        resolve_input("download", "dataset", {"dataset": value, **PARAMS}, builtins=["sotu-paragraphs"])


@pytest.mark.parametrize("value", ["imdb", "stanfordnlp/imdb", "HuggingFaceFW/fineweb-edu"])
def test_hub_ids_are_not_paths(value):
    assert not looks_like_path(value)
    assert resolve_input("download", "dataset", {"dataset": value, **PARAMS}, builtins=[]) == Input("hub", value, "main")


def test_revision_rules():
    with pytest.raises(UserError, match="pinned by its package's version"):
        resolve_input("tokenize", "tokenizer", {"tokenizer": "gpt2", "local_path": "inputs", "revision": "v2"}, ["gpt2"])
    with pytest.raises(UserError, match="a local path is pinned by its hash in dvc.lock"):
        resolve_input("download", "dataset", {"dataset": "local", "local_path": ".", "revision": "abc123"}, [])
    pinned = resolve_input("download", "dataset", {"dataset": "imdb", "local_path": "inputs", "revision": "e6281661"}, [])
    assert pinned == Input("hub", "imdb", "e6281661")


def test_a_missing_local_path_is_said_at_once(tmp_path):
    with pytest.raises(UserError, match="no such file or folder: .*typo.parquet"):
        resolve_input(
            "download", "dataset", {"dataset": "local", "local_path": str(tmp_path / "typo.parquet"), "revision": "main"}, []
        )
