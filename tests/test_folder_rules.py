"""A data folder is checked before it is read: what its state.json and dataset_dict.json list stays inside it.

Each case is a real output (the group stage's functions, or a `dvc repro`'d clone) tampered with
as a folder arriving through someone else's `dvc push` could be.
"""

import json
import re
import shutil

import pyarrow as pa
import pytest

from causal_lm_data.errors import UserError
from causal_lm_data.format import read_schema, shard_name, shards, split_names
from causal_lm_data.loader import make_dataloader
from causal_lm_data.pipeline.command import explain
from causal_lm_data.pipeline.grouped import group_split
from tests.helpers import assert_clean_failure, documents, run, stage_in, write_tokens

BLOCK_SIZE = 16


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A group stage output of 50 blocks of 16 uint16 ids in 3 shards."""
    root = tmp_path_factory.mktemp("rules")
    write_tokens(root / "tokenized", documents(), shard_sizes=[15, 15, 10])
    group_split(root / "tokenized", root / "grouped", BLOCK_SIZE, shard_bytes=20 * BLOCK_SIZE * 2)
    assert len(shards(root / "grouped", "group")) == 3
    return root / "grouped"


def tampered(grouped, tmp_path, edit) -> tuple:
    """A copy of `grouped` whose state.json's shard list `edit` changes; returns (folder, its state)."""
    folder = shutil.copytree(grouped, tmp_path / "grouped")
    state = json.loads((folder / "state.json").read_text())
    edit(state["_data_files"], folder)
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def assert_refused(folder, message):
    """Stages and the loader both refuse `folder` in one line: stages naming dvc, the loader the folder to rebuild."""
    with pytest.raises(UserError, match=message) as stage_error:
        shards(folder, "group")
    assert "dvc repro --force --single-item group" in explain(stage_error.value) and "\n" not in str(stage_error.value)
    with pytest.raises(ValueError, match=message) as loader_error:
        make_dataloader(folder, verify=True)
    assert str(loader_error.value).startswith(str(folder)) and "\n" not in str(loader_error.value)
    assert "rebuild the folder (the group stage writes it: data/grouped)" in str(loader_error.value)
    assert "dvc" not in str(loader_error.value)


def outside_copy(folder, tmp_path):
    """A real shard copied outside the folder: its sha256 in state.json stays right, so only the name gives it away."""
    outside = tmp_path / "elsewhere" / "secret.arrow"
    outside.parent.mkdir()
    shutil.copy(folder / shard_name(2, 3), outside)
    return outside


@pytest.mark.parametrize("how", ["absolute", "dot-dot", "subfolder"])
def test_a_shard_named_by_a_path_is_refused_though_its_hash_matches(grouped, tmp_path, how):
    def edit(files, folder):
        outside = outside_copy(folder, tmp_path)
        if how == "subfolder":
            (folder / "sub").mkdir()
            outside = shutil.copy(outside, folder / "sub" / "x.arrow")
        files[2]["filename"] = {"absolute": str(outside), "dot-dot": "../elsewhere/secret.arrow", "subfolder": "sub/x.arrow"}[how]

    folder = tampered(grouped, tmp_path, edit)
    assert_refused(folder, r"is corrupt or truncated \(state.json lists .* as a shard, not a file name inside the folder\)")


@pytest.mark.parametrize("name", [".", "..", "", 7, None, "a\\b", "a\0b"])
def test_a_shard_name_that_is_no_file_name_is_refused(grouped, tmp_path, name):
    folder = tampered(grouped, tmp_path, lambda files, _: files[0].update(filename=name))
    assert_refused(folder, "not a file name inside the folder")


@pytest.mark.parametrize(
    "entry", ["data.arrow", {"filename": shard_name(0, 3)}, {"filename": shard_name(0, 3), "sha256": "x", "rows": -1}]
)
def test_a_malformed_shard_entry_is_one_line(grouped, tmp_path, entry):
    folder = tampered(grouped, tmp_path, lambda files, _: files.__setitem__(0, entry))
    assert_refused(folder, "is corrupt or truncated")


def test_a_shard_listed_twice_is_refused(grouped, tmp_path):
    folder = tampered(grouped, tmp_path, lambda files, _: files.append(dict(files[0])))
    assert_refused(folder, rf"state.json lists '{shard_name(0, 3)}' more than once")


def test_a_symlink_leading_out_of_the_folder_is_refused(grouped, tmp_path):
    def edit(files, folder):
        outside = outside_copy(folder, tmp_path)
        (folder / shard_name(2, 3)).unlink()
        (folder / shard_name(2, 3)).symlink_to(outside)

    folder = tampered(grouped, tmp_path, edit)
    assert_refused(folder, rf"'{shard_name(2, 3)}' is a symlink to '.*secret.arrow', outside its folder\)")


def test_a_symlink_inside_the_folder_is_followed(grouped, tmp_path):
    def edit(files, folder):
        (folder / shard_name(2, 3)).rename(folder / "real.arrow")
        (folder / shard_name(2, 3)).symlink_to("real.arrow")

    folder = tampered(grouped, tmp_path, edit)
    assert len(make_dataloader(folder, batch_size=5, verify=True).dataset) == 50


def test_uint16_and_uint32_shards_in_one_folder_are_refused(grouped, tmp_path):
    """The same block size, other id types: a batch spanning both would wrap the uint32 ids into uint16."""
    write_tokens(tmp_path / "tokenized32", documents(first_id=70_000), id_type=pa.uint32())
    group_split(tmp_path / "tokenized32", tmp_path / "grouped32", BLOCK_SIZE)

    def edit(files, folder):
        shutil.copy(tmp_path / "grouped32" / shard_name(0, 1), folder / "wide.arrow")
        files.append(
            json.loads((tmp_path / "grouped32" / "state.json").read_text())["_data_files"][0] | {"filename": "wide.arrow"}
        )

    folder = tampered(grouped, tmp_path, edit)
    with pytest.raises(
        ValueError,
        match=rf"{folder} mixes shards of different kinds \({shard_name(0, 3)} holds blocks of 16 uint16 ids, "
        r"document starts as uint16; wide.arrow holds blocks of 16 uint32 ids.*\); rebuild the folder",
    ) as error:
        make_dataloader(folder)
    assert "\n" not in str(error.value)


def test_a_tokenized_folder_mixing_id_types_is_refused_by_group(tmp_path):
    write_tokens(tmp_path / "tokenized", documents(), shard_sizes=[20, 20])
    write_tokens(tmp_path / "wide", documents(first_id=70_000), id_type=pa.uint32())
    shutil.copy(tmp_path / "wide" / shard_name(0, 1), tmp_path / "tokenized" / shard_name(1, 2))
    state = json.loads((tmp_path / "tokenized" / "state.json").read_text())
    state["_data_files"][1] = json.loads((tmp_path / "wide" / "state.json").read_text())["_data_files"][0] | {
        "filename": shard_name(1, 2)
    }
    (tmp_path / "tokenized" / "state.json").write_text(json.dumps(state))
    message = (
        r"mixes shards of different kinds \(.* holds input_ids: list<item: uint16>; .* holds input_ids: list<item: uint32>\)"
    )
    with pytest.raises(UserError, match=message) as error:
        read_schema(tmp_path / "tokenized", "tokenize")
    assert explain(error.value).endswith("; rebuild it with: dvc repro --force --single-item tokenize")
    with pytest.raises(UserError, match=message):
        group_split(tmp_path / "tokenized", tmp_path / "grouped", BLOCK_SIZE)
    assert not (tmp_path / "grouped").exists()


SPLITS = {
    "not JSON": ("{splits: [train", r"is malformed \(Expecting property name"),
    "no splits key": (json.dumps({"train": 1}), r'is malformed \(it must hold \{"splits"'),
    "empty": (json.dumps({"splits": []}), r'is malformed \(it must hold \{"splits"'),
    "twice": (json.dumps({"splits": ["train", "train"]}), r"is malformed \(split 'train' is listed twice\)"),
    "a path": (json.dumps({"splits": ["train", "../tokenized/train"]}), r"split '../tokenized/train' is not a plain folder name"),
    "absolute": (json.dumps({"splits": ["/etc"]}), r"split '/etc' is not a plain folder name"),
    "a number": (json.dumps({"splits": [1]}), r"split 1 is not a plain folder name"),
}


def split_folder_copy(grouped, tmp_path, index_text) -> object:
    """data/grouped with a train split (a real group output) and the given dataset_dict.json."""
    folder = tmp_path / "data" / "grouped"
    shutil.copytree(grouped, folder / "train")
    (folder / "dataset_dict.json").write_text(index_text)
    return folder


@pytest.mark.parametrize("case", SPLITS)
def test_a_bad_dataset_dict_is_one_line_in_the_loader(grouped, tmp_path, case):
    text, message = SPLITS[case]
    folder = split_folder_copy(grouped, tmp_path, text)
    with pytest.raises(UserError, match=message) as error:
        make_dataloader(folder)
    assert str(error.value).startswith(f"{folder}/dataset_dict.json is malformed") and "\n" not in str(error.value)
    assert str(error.value).endswith("rebuild the folder (the group stage writes it: data/grouped)")


@pytest.mark.parametrize("case", ["not JSON", "twice", "a path"])
def test_a_bad_dataset_dict_is_one_line_in_the_stages(grouped, tmp_path, case):
    text, message = SPLITS[case]
    split_folder_copy(grouped, tmp_path, text)
    result = stage_in(tmp_path, "check")
    assert_clean_failure(result, tmp_path, "metrics/check.json", "data/grouped/dataset_dict.json is malformed (")
    assert re.search(message, result.stderr) and "rebuild it with: dvc repro --force --single-item group" in result.stderr
    # The group stage reads data/tokenized's splits the same way.
    shutil.move(tmp_path / "data" / "grouped", tmp_path / "data" / "tokenized")
    result = stage_in(tmp_path, "group")
    assert_clean_failure(result, tmp_path, "data/grouped", "data/tokenized/dataset_dict.json is malformed (")
    assert re.search(message, result.stderr) and "rebuild it with: dvc repro --force --single-item tokenize" in result.stderr


def test_a_split_that_is_a_symlink_is_refused(grouped, tmp_path):
    folder = split_folder_copy(grouped, tmp_path, json.dumps({"splits": ["train", "validation"]}))
    (folder / "validation").symlink_to(grouped)
    with pytest.raises(UserError, match=r"split 'validation' is a symlink, not a folder inside"):
        make_dataloader(folder, split="validation")
    with pytest.raises(UserError, match=r"split 'validation' is a symlink, not a folder inside"):
        split_names(folder, "group")


@pytest.mark.parametrize("cache_type", ["hardlink", "symlink"])
def test_dvc_linked_outputs_are_read_and_rebuilt(repo, cache_type):
    """DVC's hardlink cache (this repository's) and symlink cache: the stages and the loader read the linked files."""
    run(["dvc", "config", "cache.type", cache_type], cwd=repo)
    run(["dvc", "checkout", "--relink"], cwd=repo)
    shard = repo / "data" / "grouped" / shard_name(0, 1)
    cache = (repo / ".dvc" / "cache").resolve()
    if cache_type == "symlink":
        assert shard.is_symlink() and shard.resolve().is_relative_to(cache)
    else:
        assert not shard.is_symlink() and shard.stat().st_nlink == 2
    assert len(make_dataloader(repo / "data" / "grouped", verify=True).dataset) == 18_111
    run(["dvc", "repro", "--force", "--single-item", "group"], cwd=repo)  # reads data/tokenized through the links
    run(["dvc", "repro", "--force", "--single-item", "check"], cwd=repo)  # the loader, verify=True
    assert run(["dvc", "status", "--json"], cwd=repo).stdout.strip() == "{}"
    assert shard.is_symlink() == (cache_type == "symlink")
    # A link to a file that is neither in the folder nor in the DVC cache is still refused.
    outside = repo / "outside.arrow"
    shutil.copy(shard, outside)
    shard.unlink()
    shard.symlink_to(outside)
    with pytest.raises(UserError, match=r"is a symlink to '.*outside.arrow', outside its folder and the repository's DVC cache"):
        make_dataloader(repo / "data" / "grouped")
