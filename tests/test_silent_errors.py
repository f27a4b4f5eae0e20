"""Paths that once gave stale, shortened or corrupted data with exit code 0: each is now right or one line."""

import shutil
import subprocess
import time

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import tokenizer_folders
from tests.helpers import (
    ENV,
    REPO,
    assert_clean_failure,
    local,
    metrics,
    raw_texts,
    run,
    stage_command,
    stage_in,
    write_imdb_like_repo,
    write_params,
)


@pytest.mark.parametrize("size", [1, 0.0001])
def test_small_validation_splits_run_through(repo, size):
    # 1 document, or 3 of 25,488: most 10,000-document batches hold no held-out document.
    run(["dvc", "exp", "run", "-S", f"download.validation_size={size}"], cwd=repo)
    held_out = metrics(repo, "download")["validation"]["documents"]
    assert held_out == (1 if size == 1 else 3)
    assert metrics(repo, "tokenize")["validation"]["documents"] == held_out
    assert metrics(repo, "tokenize")["documents"] == 25_488 - held_out
    validation = metrics(repo, "group")["validation"]
    assert validation["tokens_kept"] + validation["tokens_dropped_at_tail"] == metrics(repo, "tokenize")["validation"]["tokens"]
    assert metrics(repo, "check")["validation_batches"] == -(-validation["blocks"] // 8)


def test_sparse_token_ids_are_stored_without_wrapping(tmp_path):
    """23,014 entries whose ids reach 69,999: the type follows the largest id, not the entry count."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(23_012)]
    vocabulary = {"[UNK]": 0, "[EOS]": 69_999} | {word: 46_000 + i for i, word in enumerate(words)}  # up to 69,011
    model = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(tmp_path / "sparse")
    documents = [" ".join(words[i : i + 40]) for i in range(0, 23_000, 40)]
    (tmp_path / "corpus.txt").write_text("\n".join(documents) + "\n")
    assert stage_in(tmp_path, "download", **local(tmp_path / "corpus.txt")).returncode == 0
    tokenizer = {"tokenize__tokenizer": "local", "tokenize__local_path": str(tmp_path / "sparse")}
    result = stage_in(tmp_path, "tokenize", tokenize__add_eos=True, **tokenizer)
    assert result.returncode == 0, result.stderr
    tokenized = datasets.load_from_disk(str(tmp_path / "data" / "tokenized"))
    assert tokenized.features["input_ids"].feature.dtype == "uint32"
    ids = np.concatenate([np.asarray(doc) for doc in tokenized["input_ids"]])
    expected = [[vocabulary[w] for w in doc.split()] + [69_999] for doc in documents]
    assert ids.tolist() == [i for doc in expected for i in doc]
    assert ids.max() == 69_999 and (ids >= 65_536).sum() > 4_000 and 0 not in ids  # uint16 made these 0..4,463


def test_a_byte_order_mark_is_not_text(tmp_path):
    (tmp_path / "corpus.txt").write_bytes("\ufefffirst line\nsecond line\n".encode("utf-8"))
    assert stage_in(tmp_path, "download", **local(tmp_path / "corpus.txt")).returncode == 0
    assert raw_texts(tmp_path) == ["first line", "second line"]


@pytest.mark.parametrize("row_group_size", [None, 1000])  # one row group, or 13 converted in parallel
def test_invalid_utf8_is_refused_at_download_naming_the_row(tmp_path, row_group_size):
    good = [f"document {i}" for i in range(12_345)]
    binary = pa.array([t.encode() for t in good] + [b"caf\xe9 latin-1", b"fine"], pa.binary())
    text = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
    pq.write_table(pa.table({"text": text}), tmp_path / "corpus.parquet", row_group_size=row_group_size)
    result = stage_in(tmp_path, "download", **local(tmp_path / "corpus.parquet"))
    assert_clean_failure(result, tmp_path, "data/raw", "column 'text' row 12,345 is not valid UTF-8 (byte 3)")


def test_a_category_text_column_is_read_by_every_path(tmp_path):
    import pandas as pd

    texts = ["a good film", "a bad film", "a good film", "a long film"]
    frame = pd.DataFrame({"text": pd.Categorical(texts), "label": [1, 0, 1, 0]})
    frame.to_parquet(tmp_path / "corpus.parquet")
    assert pq.read_schema(tmp_path / "corpus.parquet").field("text").type.id == pa.dictionary(pa.int8(), pa.string()).id
    assert stage_in(tmp_path, "download", **local(tmp_path / "corpus.parquet")).returncode == 0
    assert raw_texts(tmp_path) == texts
    hub = write_imdb_like_repo(tmp_path / "imdb", ["x"])
    frame.to_parquet(hub / "plain_text" / "train-00000-of-00001.parquet")
    shutil.rmtree(tmp_path / "data")
    assert stage_in(tmp_path, "download", **local(hub)).returncode == 0
    assert raw_texts(tmp_path) == texts


def test_csv_cells_that_look_missing_are_text(tmp_path):
    words = ["NA", "None", "null", "nan", "N/A", "NULL", "#N/A", "-nan"]
    (tmp_path / "corpus.csv").write_text("text,label\n" + "".join(f"{w},{i}\n" for i, w in enumerate(words)))
    assert stage_in(tmp_path, "download", **local(tmp_path / "corpus.csv")).returncode == 0
    assert raw_texts(tmp_path) == words


@pytest.mark.parametrize("name", ["upper.PARQUET", "Mixed.Jsonl", "SHOUT.TXT"])
def test_file_endings_are_read_in_any_case(tmp_path, name):
    path = tmp_path / name
    if name.lower().endswith(".parquet"):
        pq.write_table(pa.table({"text": ["one", "two"]}), path)
    elif name.lower().endswith(".jsonl"):
        path.write_text('{"text": "one"}\n{"text": "two"}\n')
    else:
        path.write_text("one\ntwo\n")
    assert stage_in(tmp_path, "download", **local(path)).returncode == 0
    assert raw_texts(tmp_path) == ["one", "two"]


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.txt", "empty.csv"])
def test_an_empty_file_is_one_line(tmp_path, name):
    (tmp_path / name).write_text("")
    result = stage_in(tmp_path, "download", **local(tmp_path / name))
    assert_clean_failure(result, tmp_path, "data/raw", "has no")


def test_a_mistyped_local_path_is_said_at_once(tmp_path):
    started = time.monotonic()
    result = stage_in(tmp_path, "download", **local(tmp_path / "corpus.parqeut"))
    assert_clean_failure(result, tmp_path, "data/raw", "no such file or folder:")
    result = stage_in(tmp_path, "download", download__dataset="./data/imbd.parquet")
    assert_clean_failure(result, tmp_path, "data/raw", "is a local path, which DVC would not track")
    assert time.monotonic() - started < 10  # no Hub round trips (25 s before)


def test_huge_max_length_keeps_the_plot_small(built_repo, tmp_path):
    shutil.copytree(built_repo / "data" / "raw", tmp_path / "data" / "raw")
    result = stage_in(tmp_path, "tokenize", tokenize__max_length=1 << 20)
    assert result.returncode == 0, result.stderr
    plot = tmp_path / "plots" / "document_lengths.csv"
    assert plot.stat().st_size < 4096 and len(plot.read_text().splitlines()) == 66
    assert metrics(tmp_path, "tokenize")["documents_truncated"] == 0


def test_two_runs_of_one_stage_at_once(tmp_path):
    """The second is refused with one line while the first holds the output; the result is intact."""
    from causal_lm_data.pipeline.readers import builtin_documents

    (tmp_path / "corpus.txt").write_text("\n".join(list(builtin_documents()) * 3) + "\n")
    assert stage_in(tmp_path, "download", **local(tmp_path / "corpus.txt")).returncode == 0
    assert stage_in(tmp_path, "clean", **local(tmp_path / "corpus.txt")).returncode == 0  # tokenize's input
    # The first run encodes ~78,000 documents through transformers (a SentencePiece
    # tokenizer): many seconds, so the second, with the fast built-in GPT-2, arrives mid-write.
    mistral = tokenizer_folders.mistral_v01(tmp_path / "mistral")
    write_params(tmp_path, tokenize__tokenizer="local", tokenize__local_path=str(mistral))
    env = {**ENV, "PYTHONPATH": str(REPO), "PIPELINE_WORKERS": "1"}
    first = subprocess.Popen(stage_command("tokenize", tmp_path), cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "data" / ".tokenized.partial"
    deadline = time.monotonic() + 120
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = stage_in(tmp_path, "tokenize")
    assert first.poll() is None, "the first run ended before the second reached the output"
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert second.returncode == 1, second.stdout
    assert second.stderr.strip() == (
        "error: another run is writing data/tokenized right now; wait for it to finish (one run per stage at a time)"
    )
    # The survivor is the first run's whole output: it passes the next stage's hash check.
    documents = metrics(tmp_path, "download")["documents"]
    assert metrics(tmp_path, "tokenize")["documents"] == documents and metrics(tmp_path, "tokenize")["engine"] == "transformers"
    assert stage_in(tmp_path, "group").returncode == 0


def test_datasets_map_never_dirties_an_output(repo):
    grouped = datasets.load_from_disk(str(repo / "data" / "grouped"))
    grouped.map(lambda row: {"n": len(row["input_ids"])})  # writes cache-*.arrow beside the data
    assert list((repo / "data" / "grouped").glob("cache-*.arrow"))
    assert "up to date" in run(["dvc", "status"], cwd=repo).stdout
    assert "Running stage" not in run(["dvc", "repro"], cwd=repo).stdout
