import copy
import json

import pytest
import yaml

from causal_lm_data.errors import UserError
from causal_lm_data.pipeline.params import load_params, validate
from tests.helpers import REPO, run

DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())


def with_value(section, key, value):
    params = copy.deepcopy(DEFAULTS)
    params[section][key] = value
    return params


def test_committed_params_are_lab1s_defaults():
    assert validate(copy.deepcopy(DEFAULTS)) == DEFAULTS
    assert DEFAULTS["tokenize"] == {
        "tokenizer": "distilgpt2",
        "local_path": "inputs",
        "revision": "main",
        "truncation": True,
        "max_length": 512,
        "add_bos": False,
        "add_eos": False,
    }
    assert DEFAULTS["group"] == {"block_size": 128, "shard_mb": 64}
    assert DEFAULTS["loader"] == {"batch_size": 8, "shuffle": True, "seed": 42}
    assert DEFAULTS["download"]["split"] == "train" and DEFAULTS["download"]["text_column"] == "text"
    assert DEFAULTS["download"]["validation_size"] == 0  # Lab1 has no validation split


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("group", "block_size", 0, "'group.block_size' must be >= 1"),
        ("group", "block_size", -5, "'group.block_size' must be >= 1"),
        ("group", "block_size", "128", "'group.block_size' must be int"),
        ("group", "block_size", 12.5, "'group.block_size' must be int"),
        ("group", "block_size", True, "'group.block_size' must be int"),
        ("tokenize", "max_length", 0, "'tokenize.max_length' must be >= 1"),
        ("tokenize", "truncation", "yes", "'tokenize.truncation' must be bool"),
        ("loader", "batch_size", None, "'loader.batch_size' must be int"),
        ("download", "dataset", "", "'download.dataset' must not be empty"),
        ("download", "colour", "red", "unknown key 'download.colour'"),
        ("download", "validation_size", "10%", "'download.validation_size' must be int or float"),
        ("download", "validation_size", -0.1, "'download.validation_size' must be >= 0"),
        ("tokenize", "add_eos", 1, "'tokenize.add_eos' must be bool"),
        # Bounded, so a typo fails now instead of as a MemoryError or an overflow later.
        ("tokenize", "max_length", 100_000_000, "'tokenize.max_length' must be <= 1,048,576, got 100,000,000"),
        ("group", "block_size", 3_000_000_000, "'group.block_size' must be <= 1,048,576"),
        ("loader", "batch_size", 10**9, "'loader.batch_size' must be <= 65,536"),
        ("tokenize", "max_length", 1e12, "'tokenize.max_length' must be int"),
    ],
)
def test_invalid_values_are_named(section, key, value, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        validate(with_value(section, key, value))


def test_missing_and_unknown_sections():
    params = copy.deepcopy(DEFAULTS)
    del params["group"]
    with pytest.raises(UserError, match="needs a 'group' section"):
        validate(params)
    with pytest.raises(UserError, match="unknown section 'train'"):
        validate({**DEFAULTS, "train": {"lr": 1}})
    params = copy.deepcopy(DEFAULTS)
    del params["loader"]["seed"]
    with pytest.raises(UserError, match=r"missing 'loader\.seed'"):
        validate(params)


def test_load_params_reports_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params("group", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("group: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params("group", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list")
    with pytest.raises(UserError, match="must be a mapping"):
        load_params("group", tmp_path / "params.yaml")


@pytest.mark.parametrize(
    "text, expected",
    [("010", 10), ("0o10", 8), ("1_000", 1000), ("0x10", 16)],
)
def test_params_are_read_as_dvc_reads_them(tmp_path, text, expected):
    """YAML 1.2, as DVC: PyYAML (1.1) would run `block_size: 010` as 8 where dvc.lock says 10."""
    params = yaml.safe_dump(with_value("group", "block_size", 1)).replace("block_size: 1\n", f"block_size: {text}\n")
    (tmp_path / "params.yaml").write_text(params)
    from ruamel.yaml import YAML

    assert YAML(typ="safe").load(params)["group"]["block_size"] == expected  # what DVC records
    if isinstance(expected, int):
        assert load_params("group", tmp_path / "params.yaml")["block_size"] == expected
    else:
        with pytest.raises(UserError, match="must be int"):
            load_params("group", tmp_path / "params.yaml")


def test_the_stages_and_dvc_agree_on_a_leading_zero(repo_clone):
    params = (repo_clone / "params.yaml").read_text().replace("block_size: 128", "block_size: 064")
    (repo_clone / "params.yaml").write_text(params)
    run(["dvc", "repro"], cwd=repo_clone)
    lock = yaml.safe_load((repo_clone / "dvc.lock").read_text())
    assert lock["stages"]["group"]["params"]["params.yaml"]["group"]["block_size"] == 64
    assert json.loads((repo_clone / "metrics" / "check.json").read_text())["batch_shape"] == [8, 64]
