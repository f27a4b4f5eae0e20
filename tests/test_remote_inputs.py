"""A corpus in a remote (S3 through moto's server on loopback), pinned by DVC: download.local_path as a URL."""

import hashlib
import io
import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from causal_lm_data.errors import UserError
from causal_lm_data.format import read_table
from causal_lm_data.pipeline.inputs import Input, resolve_input
from causal_lm_data.pipeline.readers import load_batches
from tests.helpers import (
    BUCKET,
    CREDENTIALS,
    _boto_credentials,
    metrics,
    run,
    set_download_params,
    stage_command,
    stage_error,
)

KEY = "corpora/speeches.parquet"


def upload(server, key, body: bytes) -> str:
    """Put an object into the bucket; return its etag (the md5 of a single-part upload)."""
    boto3.client("s3", endpoint_url=server.url, **_boto_credentials()).put_object(Bucket=BUCKET, Key=key, Body=body)
    return hashlib.md5(body).hexdigest()


def parquet_bytes(texts) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buffer, row_group_size=100)
    return buffer.getvalue()


def add_source_remote(repo, server, commit=True):
    """The README's walkthrough: a named DVC remote for the bucket the corpus lives in."""
    run(["dvc", "remote", "add", "corpora", f"s3://{BUCKET}"], cwd=repo)
    run(["dvc", "remote", "modify", "corpora", "endpointurl", server.url], cwd=repo)
    if commit:
        run(["git", "add", ".dvc/config"], cwd=repo)
        run(["git", "commit", "-qm", "add the corpora remote"], cwd=repo)


def lock_dep(repo, path):
    deps = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["download"]["deps"]
    return next(dep for dep in deps if dep["path"] == path)


def test_a_remote_corpus_is_pinned_by_its_etag_and_a_change_reruns_download(repo_clone, s3):
    texts = [f"Speech {i}: the state of the union is strong. " * (i % 7 + 1) for i in range(400)]
    etag = upload(s3, KEY, parquet_bytes(texts))
    add_source_remote(repo_clone, s3)
    url = f"remote://corpora/{KEY}"
    run(["dvc", "exp", "run", "-S", "download.dataset=local", "-S", f"download.local_path={url}"], cwd=repo_clone, **CREDENTIALS)
    assert lock_dep(repo_clone, url)["etag"] == etag
    assert metrics(repo_clone, "download") == {
        "documents": 400,
        "characters": sum(map(len, texts)),
        "empty_documents_skipped": 0,
        "source": f"{url} (remote)",
        "version": f"remote: etag {etag}, recorded in dvc.lock",
    }
    assert read_table(repo_clone / "data/raw", "download").column("text").to_pylist() == texts
    assert "up to date" in run(["dvc", "status"], cwd=repo_clone, **CREDENTIALS).stdout

    new_texts = ["A new first speech.", *texts[:250]]
    new_etag = upload(s3, KEY, parquet_bytes(new_texts))
    status = run(["dvc", "status"], cwd=repo_clone, **CREDENTIALS).stdout
    assert "changed deps" in status and f"modified:           {url}" in status
    assert "Running stage 'download'" in run(["dvc", "repro"], cwd=repo_clone, **CREDENTIALS).stdout
    assert lock_dep(repo_clone, url)["etag"] == new_etag
    assert read_table(repo_clone / "data/raw", "download").column("text").to_pylist() == new_texts
    assert metrics(repo_clone, "check")["batch_shape"] == [8, 128]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt"])
def test_an_s3_url_with_the_endpoint_from_the_environment(repo_clone, s3, suffix):
    texts = ["first document", "second, with a comma", "third"]
    body = {
        ".jsonl": "".join(json.dumps({"text": t}) + "\n" for t in texts),
        ".csv": "text\n" + "".join(f'"{t}"\n' for t in texts),
        ".txt": "\n".join(texts) + "\n",
    }[suffix]
    etag = upload(s3, f"plain/corpus{suffix}", body.encode())
    set_download_params(repo_clone, dataset="local", local_path=f"s3://{BUCKET}/plain/corpus{suffix}")
    run(stage_command("download", repo_clone), cwd=repo_clone, AWS_ENDPOINT_URL=s3.url, **CREDENTIALS)
    assert read_table(repo_clone / "data/raw", "download").column("text").to_pylist() == texts
    assert metrics(repo_clone, "download")["version"] == f"remote: etag {etag}, recorded in dvc.lock"


def test_remote_mistakes_are_one_line(repo_clone, s3):
    add_source_remote(repo_clone, s3, commit=False)
    upload(s3, "folder/part-0.parquet", parquet_bytes(["x"]))
    upload(s3, "corpus.docx", b"x")
    cases = {
        "remote://typo/corpus.parquet": "error: cannot read remote://typo/corpus.parquet (download.local_path): "
        "config file error: remote 'typo' doesn't exist\n",
        "remote://corpora/missing.parquet": "error: no such object: remote://corpora/missing.parquet (download.local_path)\n",
        "remote://corpora/folder": "error: remote://corpora/folder is a folder; set download.local_path to one file in it",
        "remote://corpora/corpus.docx": "error: cannot read remote://corpora/corpus.docx: use one of .parquet",
    }
    for url, message in cases.items():
        set_download_params(repo_clone, dataset="local", local_path=url)
        result = run(stage_command("download", repo_clone), cwd=repo_clone, check=False, **CREDENTIALS)
        assert result.returncode == 1 and result.stderr.startswith(message), result.stderr
        assert len(result.stderr.splitlines()) == 1
    # Through DVC, which checks the dependency before the stage runs: its own one-line errors.
    for url, message in {
        "remote://corpora/missing.parquet": "ERROR: failed to reproduce 'download': dependency 'remote://corpora/missing.parquet' does not exist\n",
        "remote://typo/corpus.parquet": "ERROR: configuration error - config file error: remote 'typo' doesn't exist\n",
    }.items():
        set_download_params(repo_clone, dataset="local", local_path=url)
        result = run(["dvc", "repro", "download"], cwd=repo_clone, check=False, **CREDENTIALS)
        assert result.returncode != 0 and result.stderr == message
    no_credentials = stage_error(repo_clone, local_path=f"remote://corpora/{KEY}")
    assert no_credentials == f"error: cannot read remote://corpora/{KEY} (download.local_path): Unable to locate credentials\n"
    assert not (repo_clone / "data/raw").exists()


def test_an_object_changed_while_read_is_refused(tmp_path, s3, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path)
    run(["dvc", "remote", "add", "corpora", f"s3://{BUCKET}"], cwd=tmp_path)
    run(["dvc", "remote", "modify", "corpora", "endpointurl", s3.url], cwd=tmp_path)
    upload(s3, KEY, parquet_bytes([f"document {i}" for i in range(10_000 * 3)]))
    batches, _ = load_batches(Input("remote", f"remote://corpora/{KEY}", "main"), "train")
    next(batches)
    upload(s3, KEY, parquet_bytes(["replaced"]))
    with pytest.raises(UserError, match=f"remote://corpora/{KEY} changed while it was read; run again"):
        list(batches)


@pytest.mark.parametrize("url", ["s3://bucket/corpus.parquet", "remote://corpora/corpus.parquet", "https://example.com/c.csv"])
def test_a_url_where_a_name_belongs_is_refused_with_the_fix(url):
    params = {"dataset": url, "local_path": "inputs", "revision": "main"}
    with pytest.raises(UserError, match=f"set download.dataset=local and download.local_path={url} "):
        resolve_input("download", "dataset", params, builtins=[], urls=True)
    assert resolve_input("download", "dataset", {**params, "dataset": "local", "local_path": url}, [], urls=True) == Input(
        "remote", url, "main"
    )
    tokenize = {"tokenizer": "local", "local_path": url, "revision": "main"}
    with pytest.raises(UserError, match="tokenize.local_path .* is a URL; tokenize reads a folder on this machine"):
        resolve_input("tokenize", "tokenizer", tokenize, builtins=[])
