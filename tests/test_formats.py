"""Local corpora in the formats real corpora ship in; folders read whole or refused; many small files packed."""

import bz2
import gzip
import json
import lzma
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from causal_lm_data.errors import UserError
from causal_lm_data.format import shards
from causal_lm_data.pipeline.inputs import Input, resolve_input
from causal_lm_data.pipeline.raw import text_of
from causal_lm_data.pipeline.readers import load_batches
from tests.helpers import (
    REPO,
    assert_clean_failure,
    dask_cluster,
    local,
    metrics,
    raw_texts,
    run,
    stage_command,
    stage_in,
    write_imdb_like_repo,
    write_params,
)

# Text that a careless reader splits, strips or mangles: line and paragraph separators,
# a carriage return, quotes and escapes, a BOM-like character inside, astral characters.
TRICKY = [
    "plain words",
    "a\u2028line separator",
    'quotes " and \\ backslash',
    "  spaces kept  ",
    "é ü 中文 🎉",
    "zero\ufeffwidth",
]
COMPRESSORS = {
    "gzip": gzip.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "bz2": bz2.compress,
    "xz": lzma.compress,
    None: lambda data: data,
}


def documents(count, tag):
    return [f"{tag} document {i} " + "word " * (i % 13) for i in range(count)]


def jsonl(texts, **extra) -> bytes:
    return "".join(json.dumps({"id": i, "text": t, **extra}) + "\n" for i, t in enumerate(texts)).encode()


def read_local(path, text_column="text", data_files=(), config=None):
    """The documents of a local corpus, read as the download stage reads them (in one process)."""
    options = {"name": config} if config else {}
    batches, _ = load_batches(Input("local", str(path), "main"), "train", text_column, data_files, **options)
    return [text for batch in batches for text in text_of(batch, text_column)[0].to_pylist()]


def test_a_single_gzipped_jsonl_file_is_read_by_the_stage(tmp_path):
    (tmp_path / "c4-train.00000-of-01024.json.gz").write_bytes(gzip.compress(jsonl(TRICKY, url="https://example.com")))
    result = stage_in(tmp_path, "download", **local(tmp_path / "c4-train.00000-of-01024.json.gz"))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == TRICKY


@pytest.mark.parametrize(
    "name, compression",
    [
        ("corpus.jsonl", None),
        ("corpus.jsonl.gz", "gzip"),
        ("corpus.jsonl.zst", "zstd"),
        ("corpus.ndjson.bz2", "bz2"),
        ("corpus.json.xz", "xz"),
        ("CORPUS.JSONL.GZ", "gzip"),
        ("corpus.jsonl.zstd", "zstd"),
        ("named-plain.jsonl", "gzip"),  # sniffed by its magic number
    ],
)
def test_json_lines_in_every_compression(tmp_path, name, compression):
    data = b"\xef\xbb\xbf" + jsonl(TRICKY) + b"\n  \n"  # a BOM first (not text), blank lines last (no record)
    (tmp_path / name).write_bytes(COMPRESSORS[compression](data))
    assert read_local(tmp_path / name) == TRICKY


@pytest.mark.parametrize(
    "name, compression", [("corpus.txt", None), ("corpus.txt.gz", "gzip"), ("corpus.txt.zst", "zstd"), ("corpus.txt.xz", "xz")]
)
def test_text_lines_in_every_compression(tmp_path, name, compression):
    lines = [text for text in TRICKY]
    # One document per line: \n, \r\n and \r end lines (as the datasets text builder reads them), \u2028 does not.
    data = ("\ufeff" + lines[0] + "\r\n" + lines[1] + "\r" + "\n".join(lines[2:]) + "\n\nlast").encode()
    (tmp_path / name).write_bytes(COMPRESSORS[compression](data))
    texts, empty = [], 0
    batches, _ = load_batches(Input("local", str(tmp_path / name), "main"), "train")
    for batch in batches:
        kept, skipped = text_of(batch, "text")
        texts += kept.to_pylist()
        empty += skipped
    assert texts == lines + ["last"] and empty == 1


def test_zstd_files_of_many_frames_and_json_arrays(tmp_path):
    texts = documents(25_000, "framed")
    frames = b"".join(zstandard.ZstdCompressor().compress(jsonl(texts[i : i + 5_000])) for i in range(0, 25_000, 5_000))
    (tmp_path / "pile.jsonl.zst").write_bytes(frames)
    assert read_local(tmp_path / "pile.jsonl.zst") == texts
    # A .json file holding one array of records, parsed record by record (records longer than the read window too).
    long = ["x" * (3 << 20), *TRICKY]
    (tmp_path / "array.json").write_text(" [\n" + ",\n".join(json.dumps({"text": t}) for t in long) + "\n] \n")
    assert read_local(tmp_path / "array.json") == long
    (tmp_path / "array.json.gz").write_bytes(gzip.compress(json.dumps([{"text": t} for t in TRICKY]).encode()))
    assert read_local(tmp_path / "array.json.gz") == TRICKY


def test_json_lines_across_read_blocks(tmp_path):
    """Lines longer than a read block (1 MB), a last line without its newline, an error far into the file."""
    texts = documents(40_000, "many") + ["y" * (3 << 20), "last"]
    data = jsonl(texts)[:-1]  # no newline after the last record
    (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(data))
    assert read_local(tmp_path / "corpus.jsonl.gz") == texts
    (tmp_path / "bad.jsonl").write_bytes(jsonl(texts[:40_000]) + b'{"text": "\xff"}\n')
    with pytest.raises(UserError, match="bad.jsonl line 40,001 is not valid UTF-8"):
        read_local(tmp_path / "bad.jsonl")


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b'{"text": "a"}\n{"text": "b"}\n{"title": "c"}\n',
            "corpus.jsonl line 3 has no field 'text' (its fields: title); set download.text_column",
        ),
        (b'{"text": "a"}\n{"text": null}\n', "corpus.jsonl line 2: 'text' is null, not text"),
        (b'{"text": "a"}\n\n{"text": 7}\n', "corpus.jsonl line 3: 'text' holds a number, not text"),
        (b'{"text": "a"}\n{"text": ["a"]}\n', "corpus.jsonl line 2: 'text' holds an array, not text"),
        (b'{"text": "a"}\n{"text": "b"\n', "corpus.jsonl line 2 is not a JSON record"),
        (b'["a", "b"]\n', "corpus.jsonl record 1 has no field 'text' (its fields: none: it is not an object)"),
        (b'{"text": "a"}\n{"text": "caf\xe9"}\n', "corpus.jsonl line 2 is not valid UTF-8 (byte 13)"),
        (b'{"text": "a"}\n{"text": "\\ud800 alone"}\n', "corpus.jsonl line 2: its text holds a lone surrogate"),
    ],
)
def test_a_bad_json_record_is_one_line_naming_file_and_line(tmp_path, content, message):
    (tmp_path / "corpus.jsonl").write_bytes(content)
    with pytest.raises(UserError) as error:
        read_local(tmp_path / "corpus.jsonl")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_broken_compressed_files_are_one_line(tmp_path, monkeypatch):
    whole = gzip.compress(jsonl(documents(5_000, "cut")))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "plain.jsonl.gz").write_bytes(jsonl(["not compressed"]))
    (tmp_path / "bad.txt.gz").write_bytes(gzip.compress(b"good line\n" + b"caf\xe9\n"))
    for name, message in [
        ("cut.jsonl.gz", "cut.jsonl.gz: corrupt or truncated compressed data"),
        ("plain.jsonl.gz", "plain.jsonl.gz ends in .gz but is not gzip data"),
        ("bad.txt.gz", "bad.txt.gz line 2 is not valid UTF-8"),
    ]:
        with pytest.raises(UserError, match=message):
            read_local(tmp_path / name)
    (tmp_path / "pile.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(["a"])))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as where the package is not installed
    with pytest.raises(
        UserError, match="reading .*pile.jsonl.zst needs the `zstandard` package: pip install -r requirements.txt"
    ):
        read_local(tmp_path / "pile.jsonl.zst")
    from causal_lm_data.pipeline.raw import local_tasks

    assert len(local_tasks([tmp_path / "pile.jsonl.zst"], tmp_path, "text", 1 << 20)) == 1  # planned, then refused by the reader


@pytest.mark.parametrize("value", ["c4-train.00000-of-01024.json.gz", "pile.jsonl.zst", "wiki.ndjson", "dump.txt.xz"])
def test_a_compressed_file_given_as_a_dataset_name_is_a_path(value):
    with pytest.raises(UserError, match=f"set download.dataset=local and download.local_path={value}"):
        resolve_input("download", "dataset", {"dataset": value, "local_path": "inputs", "revision": "main"}, builtins=[])


def test_a_json_error_stops_the_stage_in_one_line(tmp_path):
    folder = tmp_path / "dolma"
    folder.mkdir()
    (folder / "part-0.json.gz").write_bytes(gzip.compress(jsonl(documents(30, "ok"))))
    (folder / "part-1.json.gz").write_bytes(gzip.compress(jsonl(documents(30, "ok")) + b'{"id": 30}\n'))
    result = stage_in(tmp_path, "download", **local(folder))
    assert_clean_failure(result, tmp_path, "data/raw", "part-1.json.gz line 31 has no field 'text' (its fields: id)")


def test_a_nested_text_field_in_json_and_parquet(tmp_path):
    records = [{"meta": {"url": "u"}, "content": {"body": t, "lang": "en"}} for t in TRICKY]
    (tmp_path / "nested.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_local(tmp_path / "nested.jsonl", "content.body") == TRICKY
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "nested.parquet")
    assert read_local(tmp_path / "nested.parquet", "content.body") == TRICKY
    # A field whose own name has a dot wins over the nested path.
    (tmp_path / "dotted.jsonl").write_text(json.dumps({"content.body": "flat", "content": {"body": "nested"}}) + "\n")
    assert read_local(tmp_path / "dotted.jsonl", "content.body") == ["flat"]
    with pytest.raises(UserError, match="nested.jsonl line 1 has no field 'content.text' "):
        read_local(tmp_path / "nested.jsonl", "content.text")
    with pytest.raises(UserError, match=r"'content' has no field 'text' \(its fields: body, lang\)"):
        read_local(tmp_path / "nested.parquet", "content.text")
    with pytest.raises(UserError, match=r"'meta.url' has no field 'x' \(it holds string\)"):
        read_local(tmp_path / "nested.parquet", "meta.url.x")
    records[2]["content"] = None
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "nested.parquet")
    with pytest.raises(UserError, match="column 'content.body' has 1 missing"):
        read_local(tmp_path / "nested.parquet", "content.body")


def test_a_string_view_text_column_is_text(tmp_path):
    """Polars writes its strings as Arrow string_view, which parquet keeps in its Arrow schema."""
    texts = documents(3_000, "polars")
    pq.write_table(pa.table({"text": pa.array(texts).cast(pa.string_view())}), tmp_path / "polars.parquet")
    assert str(pq.read_schema(tmp_path / "polars.parquet").field("text").type) == "string_view"
    result = stage_in(tmp_path, "download", **local(tmp_path / "polars.parquet"))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == texts


def write_parquet(path, texts, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path, **options)


def test_a_folder_of_mixed_formats_is_read_whole_in_sorted_order(tmp_path):
    folder = tmp_path / "corpus"
    parts = {"a.parquet": documents(1_000, "a"), "b/c.jsonl": documents(1_000, "c"), "b/d.parquet": documents(1_000, "d")}
    write_parquet(folder / "a.parquet", parts["a.parquet"])
    write_parquet(folder / "b" / "d.parquet", parts["b/d.parquet"])
    (folder / "b" / "c.jsonl").write_bytes(jsonl(parts["b/c.jsonl"]))
    # Not data, never read, named in the metrics: the card, a license, the Hub's metadata; hidden files are not listed.
    (folder / "README.md").write_text("# my corpus\n")
    (folder / "LICENSE.txt").write_text("CC-BY\n")
    (folder / "dataset_infos.json").write_text("{}\n")
    (folder / "config.json").write_text('{"version": 1}\n')
    (folder / ".gitattributes").write_text("*.parquet filter=lfs\n")
    result = stage_in(tmp_path, "download", **local(folder))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == parts["a.parquet"] + parts["b/c.jsonl"] + parts["b/d.parquet"]
    recorded = metrics(tmp_path, "download")
    assert recorded["documents"] == 3_000 and recorded["files"] == 3
    assert recorded["files_not_read"] == ["LICENSE.txt", "README.md", "config.json", "dataset_infos.json"]


@pytest.mark.parametrize(
    "names, left_out, globs",
    [
        (["train.parquet", "extra_2024.parquet"], "extra_2024.parquet would be left out", ["*.parquet"]),
        (["speeches.parquet", "speeches_test_year.parquet"], "speeches.parquet would be left out", ["speeches*.parquet"]),
    ],
)
def test_files_of_no_split_stop_the_run_until_chosen(tmp_path, names, left_out, globs):
    folder = tmp_path / "corpus"
    for name in names:
        write_parquet(folder / name, documents(100, name))
    result = stage_in(tmp_path, "download", **local(folder))
    assert_clean_failure(result, tmp_path, "data/raw", left_out)
    assert "they belong to no split of its file names" in result.stderr and "download.data_files" in result.stderr
    result = stage_in(tmp_path, "download", download__data_files=globs, **local(folder))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == [text for name in sorted(names) for text in documents(100, name)]


def test_hub_layout_folders_keep_their_splits_and_name_stray_files(tmp_path):

    repo = write_imdb_like_repo(tmp_path / "imdb", documents(50, "review"))
    assert read_local(repo) == documents(50, "review")  # test-*.parquet is the test split's: not left out
    write_parquet(repo / "plain_text" / "unsupervised-00000-of-00001.parquet", ["unlabelled"])
    with pytest.raises(
        UserError,
        match="plain_text/unsupervised-00000-of-00001.parquet would be left out: they belong to no split of the configs of its README.md",
    ):
        read_local(repo)
    assert read_local(repo, data_files=["plain_text/train-*"]) == documents(50, "review")
    # Files another config of the README names belong to that config, and are not left out.
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: plain_text\n  data_files:\n  - split: train\n    path: plain_text/train-*\n"
        "  - split: test\n    path: plain_text/test-*\n- config_name: unsupervised\n  data_files: plain_text/unsupervised-*\n---\n"
    )
    # Two configs and none marked default: one must be chosen, as load_dataset requires.
    with pytest.raises(
        UserError, match="has 2 configs and none is chosen: set download.config to one of: plain_text, unsupervised"
    ):
        read_local(repo)
    assert read_local(repo, config="plain_text") == documents(50, "review")
    (repo / "notes.docx").write_bytes(b"PK\x03\x04")
    with pytest.raises(UserError, match="holds files of no readable format: notes.docx; remove them, or list the files"):
        read_local(repo)


def test_data_files_globs_are_checked(tmp_path):
    folder = tmp_path / "corpus"
    write_parquet(folder / "a.parquet", ["a"])
    (folder / "README.md").write_text("# card\n")
    for globs, message in [
        (["*.jsonl"], "download.data_files '\\*.jsonl' matches no file in"),
        (["../*.parquet"], "must be a glob relative to"),
        (["*"], "matches files of no readable format: README.md"),
    ]:
        with pytest.raises(UserError, match=message):
            read_local(folder, data_files=globs)
    with pytest.raises(UserError, match="selects files of a folder, and .*a.parquet is a file"):
        read_local(folder / "a.parquet", data_files=["*"])
    result = stage_in(tmp_path, "download", download__data_files="*.parquet", **local(folder))
    assert_clean_failure(result, tmp_path, "data/raw", "'download.data_files' must be list, got '*.parquet'")
    write_parquet(tmp_path / "elsewhere.parquet", ["outside"])
    (folder / "link.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    with pytest.raises(UserError, match="link.parquet links outside .*corpus; copy the file into the folder instead"):
        read_local(folder)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("# nothing yet\n")
    with pytest.raises(UserError, match="cannot load dataset .* it holds no data files"):
        read_local(tmp_path / "empty")


def test_many_small_parquet_files_are_packed_into_few_shards(tmp_path):
    """300 files of 100 documents (1.3 MB of text) make 2 shards of 1 MB, not 300."""
    folder = tmp_path / "corpus"
    texts = documents(30_000, "small")
    for number in range(300):
        write_parquet(folder / f"part-{number:05d}.parquet", texts[number * 100 : (number + 1) * 100])
    result = stage_in(tmp_path, "download", download__shard_mb=1, **local(folder))
    assert result.returncode == 0, result.stderr
    found = shards(tmp_path / "data" / "raw", "download")
    assert len(found) == 2
    assert raw_texts(tmp_path) == texts


def test_a_folder_of_compressed_files_converts_identically_with_1_and_2_workers_and_on_dask(tmp_path):
    """120 files of every format and compression, in nested folders: the same shards for 1 and 2 processes and on Dask."""
    folder = tmp_path / "corpus"
    expected = {}
    for number in range(120):
        texts = documents(300 + number, f"file{number}")
        kind = number % 6
        name = (
            f"{number // 40}/part-{number:03d}" + [".jsonl.gz", ".jsonl.zst", ".txt.bz2", ".ndjson.xz", ".parquet", ".json"][kind]
        )
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if kind == 4:
            write_parquet(folder / name, texts, row_group_size=64)
        elif kind == 2:
            (folder / name).write_bytes(bz2.compress("\n".join(texts).encode()))
        else:
            compression = {0: "gzip", 1: "zstd", 3: "xz", 5: None}[kind]
            (folder / name).write_bytes(COMPRESSORS[compression](jsonl(texts)))
        expected[name] = texts

    outputs = []
    for workers in ("1", "2", "dask"):
        work = tmp_path / f"work-{workers}"
        work.mkdir()
        write_params(work, download__dataset="local", download__local_path=str(folder), download__shard_mb=1)
        if workers == "dask":  # file runs are tasks on a cluster too
            with dask_cluster(work, pythonpath=REPO) as address:
                run(stage_command("download", work), cwd=work, PYTHONPATH=str(REPO), PIPELINE_DASK_SCHEDULER=address)
        else:
            run(stage_command("download", work), cwd=work, PYTHONPATH=str(REPO), PIPELINE_WORKERS=workers)
        outputs.append({path.name: path.read_bytes() for path in (work / "data" / "raw").iterdir()})
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(shards(tmp_path / "work-2" / "data" / "raw", "download")) >= 2  # 2 MB of text: tasks run in parallel
    assert raw_texts(tmp_path / "work-2") == [text for name in sorted(expected) for text in expected[name]]
    assert metrics(tmp_path / "work-2", "download")["files"] == 120
