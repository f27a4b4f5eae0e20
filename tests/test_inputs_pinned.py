"""A local corpus is pinned to what download read; folders and columns are read or refused by one rule each.

Changes are made by a real second process while the stage reads; folders hold real links and files.
"""

import copy
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from causal_lm_data.errors import UserError
from causal_lm_data.pipeline.inputs import Input, pin_local, require_unchanged
from causal_lm_data.pipeline.params import validate
from causal_lm_data.pipeline.readers import local_files
from tests.helpers import DEFAULTS, ENV, assert_clean_failure, local, metrics, raw_texts, run, stage_in

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


def folder_with(tmp_path, **files) -> object:
    """A folder of JSON lines files: relative path -> its documents."""
    root = tmp_path / "corpus"
    for name, documents in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(jsonl(documents))
    return root


def listed(root, data_files=()):
    found = local_files(Input("local", str(root), "main"), "train", data_files)
    return [path.relative_to(root).as_posix() for path in found.files], found.not_data


def test_names_starting_with_two_underscores_follow_datasets_rules(tmp_path):
    """datasets reads a file named __b.jsonl and skips a folder named __old (unless a pattern asks for it)."""
    root = folder_with(tmp_path, **{"a.jsonl": ["a"], "__b.jsonl": ["b"], "__old/c.jsonl": ["c"], ".d.jsonl": ["d"]})
    assert listed(root) == (["__b.jsonl", "a.jsonl"], ["__old/c.jsonl"])
    assert listed(root, ["__old/*.jsonl"]) == (["__old/c.jsonl"], ["__b.jsonl", "a.jsonl"])
    # A Hub-layout folder resolves its splits with datasets' own patterns: __b.jsonl is named, not dropped.
    (root / "train.jsonl").write_bytes(jsonl(["t"]))
    with pytest.raises(UserError, match=r"__b.jsonl, a.jsonl would be left out"):
        listed(root)
    result = stage_in(tmp_path, "download", download__data_files=["*.jsonl"], **local(root))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == ["b", "a", "t"]
    assert metrics(tmp_path, "download")["files_not_read"] == ["__old/c.jsonl"]


def make_link(root, tmp_path, case):
    outside = folder_with(tmp_path / "elsewhere", **{"x.jsonl": ["outside"]})
    (root / "sub").mkdir()
    target, name = {
        "file outside": (outside / "x.jsonl", "link.jsonl"),
        "folder outside": (outside, "linked"),
        "folder inside": (root / "sub", "linked"),
        "dangling": (root / "gone.jsonl", "link.jsonl"),
        "dangling, odd name": (root / "gone.jsonl", "link\x1b[31m.jsonl"),
        "nested folder outside": (outside, "sub/linked"),
    }[case]
    (root / name).symlink_to(target)
    return root / name


LINKS = {
    "file outside": "links outside .*corpus; copy the file into the folder instead",
    "folder outside": "links outside .*corpus; copy the folder into the folder instead",
    "nested folder outside": "sub/linked links outside .*corpus; copy the folder into the folder instead",
    "folder inside": "linked is a link to a folder, whose files DVC does not hash; move the folder here",
    "dangling": r"link.jsonl is a link to nothing \('.*gone.jsonl'\); remove it",
    "dangling, odd name": r"link\\x1b\[31m.jsonl is a link to nothing",
}


@pytest.mark.parametrize("case", LINKS)
def test_links_are_refused_alike_for_files_and_folders(tmp_path, case):
    root = folder_with(tmp_path, **{"a.jsonl": ["a"]})
    make_link(root, tmp_path, case)
    with pytest.raises(UserError, match=LINKS[case]) as error:
        listed(root)
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value)


def test_a_link_to_a_file_inside_is_read_and_a_fifo_refused(tmp_path):
    root = folder_with(tmp_path, **{"a.jsonl": ["a"], "sub/b.jsonl": ["b"]})
    (root / "c.jsonl").symlink_to(root / "sub" / "b.jsonl")
    assert listed(root) == (["a.jsonl", "c.jsonl", "sub/b.jsonl"], [])
    os.mkfifo(root / "d.jsonl")
    with pytest.raises(UserError, match=r"d.jsonl is not a regular file \(a FIFO, socket or device\)"):
        listed(root)


def test_a_dangling_link_stops_the_stage_in_one_escaped_line(tmp_path):
    root = folder_with(tmp_path, **{"a.jsonl": ["a"]})
    make_link(root, tmp_path, "dangling, odd name")
    result = stage_in(tmp_path, "download", **local(root))
    assert_clean_failure(result, tmp_path, "data/raw", r"link\x1b[31m.jsonl is a link to nothing")


def params_with(section, **values) -> dict:
    params = copy.deepcopy(DEFAULTS)
    if section.startswith("corpora."):
        params["corpora"] = {"web": {"dataset": "local", "local_path": "inputs", **values}}
        params["mixture"]["weights"]["web"] = 1
    else:
        params[section].update(values)
    return params


REFUSED = {
    "validation_size": [float("inf"), float("nan"), -0.1, -1, True, "0.1", 1.0, 1.5, 2.0, None],
    "seed": [-1, True, 1.5, "42", float("inf"), float("nan"), None],
    "shard_mb": [0, 2000, True, 1.5, float("inf"), float("nan"), "64"],
}


@pytest.mark.parametrize("section", ["download", "corpora.web"])
@pytest.mark.parametrize("key, value", [(key, value) for key, values in REFUSED.items() for value in values])
def test_download_params_that_cannot_work_are_refused_in_one_line(section, key, value):
    with pytest.raises(UserError, match=rf"'{section}.{key}' must be") as error:
        validate(params_with(section, **{key: value}))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", [0, 0.0, 0.1, 0.999, 5])
def test_a_fraction_below_1_or_a_whole_count_is_a_validation_size(value):
    validate(params_with("download", validation_size=value))
    validate(params_with("corpora.web", validation_size=value))


def test_an_infinite_validation_size_stops_download_before_it_reads(tmp_path):
    # A folder holding a FIFO: reading it would block, so only a check before any work can answer.
    os.mkfifo(tmp_path / "corpus.jsonl")
    result = stage_in(tmp_path, "download", download__validation_size=float("inf"), **local(tmp_path / "corpus.jsonl"))
    assert_clean_failure(result, tmp_path, "data/raw", "'download.validation_size' must be a fraction below 1 (0.1)")
    result = stage_in(tmp_path, "download", download__validation_size=2.0, **local(tmp_path / "corpus.jsonl"))
    assert_clean_failure(result, tmp_path, "data/raw", "got 2.0 (a count is written without a point: 2)")


@pytest.mark.parametrize("section", ["download", "corpora.web"])
def test_a_source_field_that_is_the_text_column_is_refused(section):
    with pytest.raises(UserError, match=rf"'{section}.source_field' is 'body', the text column \({section}.text_column\)"):
        validate(params_with(section, text_column="body", source_field="body", source_value="x"))


def duplicated(path, names):
    pq.write_table(pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["c", "d"]), pa.array(["e", "f"])], names=names), path)


@pytest.mark.parametrize(
    "fmt, names, params, message",
    [
        ("parquet", ["text", "text", "src"], {}, "2 columns are named 'text'; rename all but one (or set download.text_column)"),
        (
            "parquet",
            ["text", "src", "src"],
            {"download__source_field": "src", "download__source_value": "c"},
            "2 columns are named 'src'; rename all but one (or set download.source_field)",
        ),
        ("csv", ["text", "text", "src"], {}, "2 columns are named 'text'; rename all but one"),
        (
            "csv",
            ["text", "src", "src"],
            {"download__source_field": "src", "download__source_value": "c"},
            "2 columns are named 'src'",
        ),
    ],
)
def test_a_column_named_twice_is_one_line(tmp_path, fmt, names, params, message):
    corpus = tmp_path / f"corpus.{fmt}"
    if fmt == "parquet":
        duplicated(corpus, names)
    else:
        corpus.write_text(",".join(names) + "\na,c,e\nb,d,f\n")
    result = stage_in(tmp_path, "download", **params, **local(corpus))
    assert_clean_failure(result, tmp_path, "data/raw", message)


def test_csv_columns_are_read_as_written(tmp_path):
    """Numbers in a CSV are text as written: 007 stays 007 in the text and in the source column."""
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("id,text,src\n1,007,010\n2,010,x\n3,42,010\n4,1e3,7.0\n")
    result = stage_in(tmp_path, "download", **local(corpus))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == ["007", "010", "42", "1e3"]
    result = stage_in(tmp_path, "download", download__source_field="src", download__source_value="010", **local(corpus))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == ["007", "42"]
    assert metrics(tmp_path, "download")["documents_of_other_sources"] == 2


def test_a_source_field_holding_structs_is_one_line(tmp_path):
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "meta": [{"set": "x"}, {"set": "y"}]}), corpus)
    result = stage_in(tmp_path, "download", download__source_field="meta", download__source_value="x", **local(corpus))
    assert_clean_failure(result, tmp_path, "data/raw", "'meta' holds struct<set: string>, not one value per document")
    result = stage_in(tmp_path, "download", download__source_field="meta.set", download__source_value="x", **local(corpus))
    assert result.returncode == 0, result.stderr
    assert raw_texts(tmp_path) == ["a"]


@pytest.mark.parametrize("how", ["added", "removed", "replaced", "rewritten"])
def test_any_change_to_a_folder_input_after_its_snapshot_is_named(tmp_path, how):
    """DVC hashes the whole folder: a file added or removed after the snapshot would be pinned unread too."""
    root = folder_with(tmp_path, **{"a.jsonl": ["a"], "sub/b.jsonl": ["b"]})
    pinned = pin_local(str(root))
    require_unchanged(pinned)  # nothing changed: no error
    if how == "added":
        (root / "sub" / "c.jsonl").write_bytes(jsonl(["c"]))
    elif how == "removed":
        (root / "sub" / "b.jsonl").unlink()
    elif how == "replaced":
        (tmp_path / "new.jsonl").write_bytes(jsonl(["b"]))  # the same bytes, another file
        os.replace(tmp_path / "new.jsonl", root / "sub" / "b.jsonl")
    else:
        (root / "sub" / "b.jsonl").write_bytes(jsonl(["x"]))
    name = "c.jsonl" if how == "added" else "b.jsonl"
    with pytest.raises(UserError, match=rf"corpus/sub/{name} was {how} while download read it"):
        require_unchanged(pinned)
