"""The loader refuses what it cannot serve, at once and in one line: bad resume states, too many ranks, bad indices, a rewritten folder."""

import re
import shutil

import numpy as np
import pytest
import torch

from causal_lm_data.errors import UserError
from causal_lm_data.loader import BlockBatches, Blocks, make_dataloader, make_numpy_loader
from causal_lm_data.pipeline.grouped import group_split
from tests.helpers import documents, write_tokens

BLOCK_SIZE = 16


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guards") / "tokenized"
    write_tokens(folder, documents(count=60), shard_sizes=[20, 20, 20])
    return folder


@pytest.fixture(scope="module")
def grouped(tokenized):
    """75 blocks of 16 ids in 4 shards of 20 (5 in the last) and record batches of 4 blocks."""
    group_split(tokenized, tokenized.parent / "grouped", BLOCK_SIZE, shard_bytes=20 * BLOCK_SIZE * 2)
    return tokenized.parent / "grouped"


TODAYS_STATE = {
    "epoch": 1,
    "batches": 3,
    "num_blocks": 75,
    "batch_size": 4,
    "world_size": 1,
    "shuffle": True,
    "seed": 42,
    "drop_last": False,
}


def test_a_state_saved_by_state_dict_still_loads(grouped):
    loader = make_dataloader(grouped, batch_size=4)
    loader.load_state_dict(dict(TODAYS_STATE))
    assert loader.state_dict() == TODAYS_STATE
    assert len(list(loader)) == len(loader) - 3
    end = make_dataloader(grouped, batch_size=4)
    end.load_state_dict(TODAYS_STATE | {"batches": len(end)})  # an epoch served to its end: the next pass starts the next one
    assert list(end) == [] and end.state_dict()["epoch"] == 2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batches": -3}, r"this loader state's batches must be a whole number >= 0, not -3"),
        ({"epoch": -1}, r"epoch must be a whole number >= 0, not -1"),
        ({"batches": 2.0}, r"batches must be a whole number >= 0, not 2.0"),
        ({"batches": True}, r"batches must be a whole number >= 0, not True"),
        ({"epoch": "1"}, r"epoch must be a whole number >= 0, not '1'"),
        ({"batches": 20}, r"batches \(20\) is past the end of an epoch of 19 batches"),
        ({"epoch": None}, r"epoch must be a whole number >= 0, not None"),
    ],
)
def test_a_bad_state_is_refused_when_loaded(grouped, change, message):
    loader = make_dataloader(grouped, batch_size=4)
    with pytest.raises(ValueError, match=message) as error:
        loader.load_state_dict(TODAYS_STATE | change)
    assert "\n" not in str(error.value)
    assert loader.state_dict()["epoch"] == 0  # nothing was loaded


@pytest.mark.parametrize("missing", ["epoch", "batches", "seed"])
def test_a_state_missing_a_key_is_refused(grouped, missing):
    state = {key: value for key, value in TODAYS_STATE.items() if key != missing}
    with pytest.raises(ValueError, match=f"this loader state lacks {missing}; give a dict saved by state_dict()"):
        make_dataloader(grouped, batch_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="a loader state is the dict state_dict\\(\\) returns, not list"):
        make_dataloader(grouped, batch_size=4).load_state_dict([1, 2])


def test_a_negative_start_raises_instead_of_walking_forever():
    sampler = BlockBatches(75, 4, seed=1)
    sampler.start_batch = -3
    with pytest.raises(IndexError, match=r"positions must be in \[0, 75\)"):
        list(sampler)


def test_more_ranks_than_blocks_is_refused(grouped):
    with pytest.raises(ValueError, match="75 blocks cannot give each of 76 ranks one; use at most 75 ranks"):
        make_dataloader(grouped, rank=0, world_size=76)
    assert len(make_dataloader(grouped, batch_size=1, rank=74, world_size=75)) == 1
    assert len(BlockBatches(0, 4, rank=1, world_size=2)) == 0  # an empty held-out split stays an empty epoch


def test_negative_indices_count_from_the_end_and_out_of_range_is_an_index_error(grouped):
    blocks = Blocks(grouped)
    last = blocks.batch([74, 0, 73])["input_ids"]
    assert torch.equal(blocks.batch([-1, 0, -2])["input_ids"], last)
    assert torch.equal(blocks[[-1, -75]]["input_ids"], blocks[[74, 0]]["input_ids"])
    assert torch.equal(blocks[-1]["input_ids"], last[0])
    for bad in ([75], [0, -76], [10**12]):
        with pytest.raises(IndexError, match=r"block -?\d+ out of range for 75 blocks"):
            blocks.batch(bad)
    assert blocks.batch([])["input_ids"].shape == (0, BLOCK_SIZE)


def rewrite(grouped, tokenized, tmp_path, block_size):
    """Replace `grouped`'s contents with a fresh group output of `tokenized` at `block_size`, as a new `dvc repro` would."""
    group_split(tokenized, tmp_path / "rebuilt", block_size, shard_bytes=20 * BLOCK_SIZE * 2)
    shutil.rmtree(grouped)
    shutil.move(tmp_path / "rebuilt", grouped)


@pytest.fixture
def own_grouped(grouped, tmp_path):
    return shutil.copytree(grouped, tmp_path / "grouped")


def test_spawned_workers_refuse_a_folder_rewritten_after_the_loader_was_built(own_grouped, tokenized, tmp_path):
    loader = make_dataloader(own_grouped, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    rewrite(own_grouped, tokenized, tmp_path, block_size=8)  # twice the blocks, half the length
    with pytest.raises(UserError, match=f"^{own_grouped} changed after this loader was built .*; build the loader again$"):
        next(iter(loader))


def test_a_users_dataloader_with_spawned_workers_refuses_a_rewritten_folder(own_grouped, tokenized, tmp_path):
    """Without BlockLoader's check before each pass, the worker's re-opening of the folder notices."""
    loader = torch.utils.data.DataLoader(Blocks(own_grouped), batch_size=4, num_workers=1, multiprocessing_context="spawn")
    rewrite(own_grouped, tokenized, tmp_path, block_size=8)
    with pytest.raises(Exception, match=f"{own_grouped} changed after this loader was built"):
        next(iter(loader))


def test_a_folder_rebuilt_identically_is_the_same_folder(own_grouped, tokenized, tmp_path):
    loader = make_dataloader(own_grouped, batch_size=4, seed=2, num_workers=1, multiprocessing_context="spawn")
    before = [batch["input_ids"] for batch in make_dataloader(own_grouped, batch_size=4, seed=2)]
    rewrite(own_grouped, tokenized, tmp_path, block_size=BLOCK_SIZE)  # the same bytes: nothing to refuse
    assert all(torch.equal(a, b["input_ids"]) for a, b in zip(before, loader, strict=True))


def test_a_rewrite_between_epochs_is_noticed_without_workers(own_grouped, tokenized, tmp_path):
    loader = make_dataloader(own_grouped, batch_size=4)
    assert len(list(loader)) == 19
    rewrite(own_grouped, tokenized, tmp_path, block_size=8)
    with pytest.raises(UserError, match="changed after this loader was built"):
        list(loader)
    assert len(np.concatenate(list(BlockBatches(150, 4)))) == 150


def test_verify_names_the_first_damaged_shard_in_order(own_grouped):
    """Shards are hashed on several threads (on a machine of 2 or more processors); the error names the first damaged one."""
    shards = sorted(own_grouped.glob("*.arrow"))
    assert len(shards) == 4
    Blocks(own_grouped, verify=True)
    for shard in (shards[1], shards[3]):  # the last holds 5 blocks, not 20: its hash may fail first
        content = bytearray(shard.read_bytes())
        content[-20] ^= 0xFF  # one flipped bit of ids: only the hash can tell
        shard.chmod(0o644)
        shard.write_bytes(bytes(content))
    expected = f"{own_grouped} is corrupt or truncated (data-00001-of-00004.arrow does not match the hash in state.json)"
    for _ in range(3):
        with pytest.raises(UserError, match=re.escape(expected)):
            make_numpy_loader(own_grouped, batch_size=4, verify=True)
    make_numpy_loader(own_grouped, batch_size=4)  # without verify, nothing reads the data
