"""Each user mistake: one `error:` line on stderr, exit 1, and no output left behind."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import DEFAULTS, REPO, assert_clean_failure, run, stage_command, stage_in


def parquet(tmp_path, table):
    path = tmp_path / "corpus.parquet"
    pq.write_table(table, path)
    return str(path)


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"review": ["a"], "label": [1]}), "no column 'text'; set download.text_column to one of: review, label"),
        (pa.table({"text": pa.array([], pa.string())}), "has no non-empty documents"),
        (pa.table({"text": ["", ""]}), "has no non-empty documents"),
        (pa.table({"text": [3, 4]}), "column 'text' holds int64, not text"),
        (pa.table({"text": ["fine", None]}), "column 'text' has 1 missing (null) documents"),
    ],
)
def test_download_rejects_bad_corpora(tmp_path, table, message):
    result = stage_in(tmp_path, "download", download__dataset="local", download__local_path=parquet(tmp_path, table))
    assert_clean_failure(result, tmp_path, "data/raw", message)


@pytest.mark.parametrize(
    "stage, changes, message",
    [
        ("group", {"group__block_size": 0}, "'group.block_size' must be >= 1, got 0"),
        ("group", {"group__block_size": "big"}, "'group.block_size' must be int, got 'big'"),
        ("tokenize", {"tokenize__max_length": 0}, "'tokenize.max_length' must be >= 1"),
        ("tokenize", {"tokenize__vocab": 5}, "unknown key 'tokenize.vocab'"),
        ("tokenize", {"tokenize__tokenizer": "no/such-tokenizer"}, "cannot resolve Hub model 'no/such-tokenizer'"),
        ("download", {"download__dataset": "no-such-dataset-anywhere"}, "cannot resolve Hub dataset 'no-such-dataset-anywhere'"),
    ],
)
def test_stages_reject_bad_params(built_repo, tmp_path, stage, changes, message):
    shutil.copytree(built_repo / "data" / "raw", tmp_path / "data" / "raw")
    output = {"download": "data/raw", "tokenize": "data/tokenized", "group": "data/grouped"}[stage]
    if stage == "download":
        shutil.rmtree(tmp_path / "data" / "raw")
    result = stage_in(tmp_path, stage, **changes)
    assert_clean_failure(result, tmp_path, output, message)


def test_a_bad_thread_count(built_repo, tmp_path):
    shutil.copytree(built_repo / "data" / "raw", tmp_path / "data" / "raw")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(DEFAULTS))
    result = run(stage_command("tokenize", tmp_path), cwd=tmp_path, check=False, PYTHONPATH=str(REPO), PIPELINE_WORKERS="many")
    assert_clean_failure(result, tmp_path, "data/tokenized", "PIPELINE_WORKERS must be a whole number >= 1")


def test_a_corpus_smaller_than_one_block(tmp_path):
    (tmp_path / "corpus.txt").write_text("a short corpus\nof two documents\n")
    corpus = {"download__dataset": "local", "download__local_path": str(tmp_path / "corpus.txt")}
    assert stage_in(tmp_path, "download", **corpus).returncode == 0
    assert stage_in(tmp_path, "tokenize", **corpus).returncode == 0
    result = stage_in(tmp_path, "group", group__block_size=1000, **corpus)
    assert_clean_failure(result, tmp_path, "data/grouped", "has 6 tokens, fewer than one block of 1000")


def test_a_truncated_tokenized_file_names_the_stage_to_rerun(built_repo, tmp_path):
    shutil.copytree(built_repo / "data" / "tokenized", tmp_path / "data" / "tokenized")
    data = tmp_path / "data" / "tokenized" / "data-00000-of-00001.arrow"
    data.write_bytes(data.read_bytes()[:100_000])
    result = stage_in(tmp_path, "group")
    assert_clean_failure(result, tmp_path, "data/grouped", "data/tokenized is corrupt or truncated")
    assert "dvc repro --force --single-item tokenize" in result.stderr


def test_dvc_reports_the_stage_error_and_keeps_no_output(repo_clone):
    result = run(["dvc", "exp", "run", "-S", "group.block_size=0"], cwd=repo_clone, check=False)
    assert result.returncode != 0
    assert "error: 'group.block_size' must be >= 1, got 0" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert not (repo_clone / "data" / "grouped").exists()


def test_add_eos_with_a_tokenizer_that_has_no_eos(built_repo, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path / "words")
    shutil.copytree(built_repo / "data" / "raw", tmp_path / "data" / "raw")
    words = {"tokenize__tokenizer": "local", "tokenize__local_path": str(tmp_path / "words")}
    result = stage_in(tmp_path, "tokenize", tokenize__add_eos=True, **words)
    assert_clean_failure(result, tmp_path, "data/tokenized", "has no end-of-text token; set tokenize.add_eos to false")
    result = stage_in(tmp_path, "tokenize", **words)
    assert result.returncode == 0, result.stderr  # the same tokenizer without add_eos works
