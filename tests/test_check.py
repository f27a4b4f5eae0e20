import shutil

import numpy as np
import pytest
import yaml

from causal_lm_data.errors import UserError
from stages.check import check_batch
from tests.helpers import REPO, run, stage_command


def batch(shape=(8, 128), dtype=np.int64):
    input_ids = np.random.default_rng(0).integers(0, 50_257, shape).astype(dtype)
    return {"input_ids": input_ids, "labels": input_ids.copy()}


def test_a_lab1_batch_passes():
    check_batch(batch(), batch_size=8, block_size=128)


@pytest.mark.parametrize(
    "bad, message",
    [
        (batch(shape=(3, 128)), r"'input_ids' is int64 \(3, 128\), expected int64 \(8, 128\)"),
        (batch(shape=(8, 64)), r"expected int64 \(8, 128\)"),
        (batch(dtype=np.int32), r"'input_ids' is int32"),
        ({"input_ids": np.zeros((8, 128), dtype=np.int64)}, "the batch has no 'labels' array"),
        (
            {"input_ids": np.zeros((8, 128), dtype=np.int64), "labels": np.ones((8, 128), dtype=np.int64)},
            "labels differ from input_ids",
        ),
    ],
)
def test_a_wrong_batch_is_a_one_line_error(bad, message):
    with pytest.raises(UserError, match=message) as error:
        check_batch(bad, batch_size=8, block_size=128)
    assert "\n" not in str(error.value)


def test_check_stage_fails_when_data_is_smaller_than_one_batch(built_repo, tmp_path):
    shutil.copytree(built_repo / "data" / "grouped", tmp_path / "data" / "grouped")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["loader"]["batch_size"] = 20_000  # more than the 18,111 blocks
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run(stage_command("check", tmp_path), cwd=tmp_path, check=False, PYTHONPATH=str(REPO))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: 'input_ids' is int64 (18111, 128)")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "metrics" / "check.json").exists()
