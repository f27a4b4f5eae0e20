import copy

import pytest
import yaml

from stages.errors import UserError
from stages.params import load_params, validate
from tests.conftest import REPO

DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())


def with_value(section, key, value):
    params = copy.deepcopy(DEFAULTS)
    params[section][key] = value
    return params


def test_committed_params_are_lab1s_defaults():
    assert validate(copy.deepcopy(DEFAULTS)) == DEFAULTS
    assert DEFAULTS["tokenize"] == {"tokenizer": "distilgpt2", "truncation": True, "max_length": 512, "add_eos": False}
    assert DEFAULTS["group"] == {"block_size": 128}
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
