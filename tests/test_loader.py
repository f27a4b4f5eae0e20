import json

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel

from causal_lm_data.loader import BlockBatches, Blocks, make_dataloader
from causal_lm_data.pipeline.writer import write_dataset

BLOCK_SIZE = 16
BLOCKS = 100


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """100 blocks whose first token is the block's index, in three Arrow record batches."""
    blocks = np.arange(BLOCKS * BLOCK_SIZE, dtype=np.uint16).reshape(BLOCKS, BLOCK_SIZE)
    blocks[:, 0] = np.arange(BLOCKS)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16(), BLOCK_SIZE))])
    batches = [
        pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), BLOCK_SIZE)], schema=schema)
        for part in np.split(blocks, [30, 64])
    ]
    folder = tmp_path_factory.mktemp("loader") / "grouped"
    write_dataset(folder, schema, batches)
    return folder, blocks


def first_tokens(loader):
    return [index for batch in loader for index in batch["input_ids"][:, 0].tolist()]


def test_batches_are_int64_with_labels_equal_to_input_ids(grouped):
    folder, blocks = grouped
    batch = next(iter(make_dataloader(folder, batch_size=8, shuffle=False)))
    assert batch["input_ids"].shape == (8, BLOCK_SIZE) and batch["input_ids"].dtype == torch.int64
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert batch["labels"].data_ptr() != batch["input_ids"].data_ptr()
    assert batch["input_ids"].tolist() == blocks[:8].tolist()


def test_an_epoch_serves_every_block_once_across_record_batches(grouped):
    folder, blocks = grouped
    loader = make_dataloader(folder, batch_size=8, shuffle=True, seed=1)
    assert len(loader) == 13
    seen = torch.cat([batch["input_ids"] for batch in loader])
    order = seen[:, 0].tolist()
    assert sorted(order) == list(range(BLOCKS)) and order != list(range(BLOCKS))
    assert seen.tolist() == blocks[order].tolist()


def test_shuffle_is_deterministic_for_a_seed(grouped):
    folder, _ = grouped
    assert first_tokens(make_dataloader(folder, seed=7)) == first_tokens(make_dataloader(folder, seed=7))
    assert first_tokens(make_dataloader(folder, seed=7)) != first_tokens(make_dataloader(folder, seed=8))
    loader = make_dataloader(folder, seed=7)
    assert first_tokens(loader) != first_tokens(loader), "each epoch should have a new order"


def test_worker_processes_give_the_same_batches(grouped):
    folder, _ = grouped
    single = first_tokens(make_dataloader(folder, seed=3))
    assert first_tokens(make_dataloader(folder, seed=3, num_workers=2)) == single


def test_single_items_work_with_default_collation(grouped):
    folder, blocks = grouped
    dataset = Blocks(folder)
    assert len(dataset) == BLOCKS and dataset[-1]["input_ids"].tolist() == blocks[-1].tolist()
    with pytest.raises(IndexError):
        dataset[BLOCKS]
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)  # a user's own DataLoader
    assert next(iter(loader))["input_ids"].tolist() == blocks[:4].tolist()


def test_a_tiny_gpt2_trains_on_a_batch(grouped):
    folder, _ = grouped
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50_257, n_positions=BLOCK_SIZE, n_embd=64, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    batch = next(iter(make_dataloader(folder, batch_size=8)))
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _rank_main(rank, world_size, folder, init_file, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        loader = make_dataloader(folder, batch_size=4, seed=5)  # rank and world size from the process group
        epochs = [first_tokens(loader) for _ in range(2)]
        (results / f"rank{rank}.json").write_text(json.dumps(epochs))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_share_each_epoch_exactly(grouped, tmp_path):
    folder, _ = grouped
    torch.multiprocessing.spawn(_rank_main, args=(2, folder, tmp_path / "init", tmp_path), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for epoch in range(2):
        shares = [set(rank[epoch]) for rank in ranks]
        assert len(ranks[0][epoch]) == len(ranks[1][epoch]) == BLOCKS // 2
        assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(BLOCKS))
    assert ranks[0][0] != ranks[0][1], "each epoch should deal a new order"


def test_uneven_block_counts_give_equal_disjoint_shares():
    shares = [np.concatenate(list(BlockBatches(101, 8, seed=3, rank=r, world_size=2))) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 50 and not set(shares[0]) & set(shares[1])
    sampler = BlockBatches(101, 8, seed=3, rank=0, world_size=2)
    sampler.set_epoch(4)
    again = BlockBatches(101, 8, seed=3, rank=0, world_size=2)
    again.set_epoch(4)
    assert np.array_equal(np.concatenate(list(sampler)), np.concatenate(list(again)))


def test_explicit_rank_and_world_size(grouped):
    folder, _ = grouped
    shares = [first_tokens(make_dataloader(folder, seed=2, rank=r, world_size=4)) for r in range(4)]
    assert sorted(t for share in shares for t in share) == list(range(BLOCKS))
    with pytest.raises(ValueError, match="give both rank and world_size"):
        make_dataloader(folder, world_size=2)


def test_a_shard_cut_at_a_record_batch_boundary_is_caught_without_hashing(grouped, tmp_path):
    """The stream still parses (the cut falls between record batches); only the row count gives it away."""
    import shutil

    folder, blocks = grouped
    cut = shutil.copytree(folder, tmp_path / "grouped")
    schema = pa.schema([("input_ids", pa.list_(pa.uint16(), BLOCK_SIZE))])
    two = [
        pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), BLOCK_SIZE)], schema=schema)
        for p in np.split(blocks, [30, 64])[:2]
    ]
    write_dataset(tmp_path / "two", schema, two)
    shard = cut / "data-00000-of-00001.arrow"
    with open(shard, "r+b") as file:
        file.truncate((tmp_path / "two" / "data-00000-of-00001.arrow").stat().st_size - 8)  # less its end-of-stream marker
    with pytest.raises(ValueError, match=r"corrupt or truncated \(data-00000-of-00001.arrow has 64 rows, state.json says 100\)"):
        make_dataloader(cut)


def test_from_params_builds_the_loader_the_check_stage_validated(repo):
    from causal_lm_data import from_params

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["loader"].update(batch_size=5, seed=7)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    loader = from_params(repo / "data" / "grouped")
    first = next(iter(loader))["input_ids"]
    assert first.shape == (5, 128)
    assert (first == next(iter(make_dataloader(repo / "data" / "grouped", batch_size=5, seed=7)))["input_ids"]).all()
    assert next(iter(from_params(repo / "data" / "grouped", batch_size=2)))["input_ids"].shape == (2, 128)
    with pytest.raises(ValueError, match="no params.yaml above"):
        from_params("/tmp")
