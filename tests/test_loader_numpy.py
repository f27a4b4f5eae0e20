"""The numpy loader (make_numpy_loader, which the check stage runs without torch) gives exactly the DataLoader's batches.

make_dataloader's DataLoader wraps numpy arrays with torch.from_numpy; these tests
compare what both serve, batch for batch over two epochs: the same keys, dtypes,
shapes and values, for a folder shuffled or not, its validation split, packed
batches, a mixture plan, one corpus of it, and ranks given or read from a gloo group.
"""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from causal_lm_data.loader import make_dataloader, make_numpy_loader
from causal_lm_data.pipeline.grouped import group_split
from tests.helpers import REPO, run, write_three_corpora, write_tokenized

BLOCK_SIZE = 16


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """A grouped folder with train (394 blocks, in 20 shards of one record batch) and validation splits, documents of 1 to 40 ids."""
    root = tmp_path_factory.mktemp("numpy")
    rng = np.random.default_rng(1)
    for split, count, shard_bytes in (("train", 300, 20 * BLOCK_SIZE * 2), ("validation", 40, 0)):
        texts = [rng.integers(0, 60_000, size=rng.integers(1, 41)).tolist() for _ in range(count)]
        write_tokenized(root / "tokenized" / split, texts, [count // 2, count - count // 2], batch_rows=7)
        group_split(root / "tokenized" / split, root / "grouped" / split, BLOCK_SIZE, shard_bytes=shard_bytes)
    (root / "grouped" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    return root / "grouped"


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return write_three_corpora(tmp_path_factory.mktemp("numpy-mixture"))


def assert_same_batches(path, epochs=2, **options):
    """Both loaders built with `options` serve the same batches for `epochs` passes; returns how many batches an epoch has."""
    tensors, arrays = make_dataloader(path, **options), make_numpy_loader(path, **options)
    assert len(tensors) == len(arrays) > 0
    for _ in range(epochs):
        served = 0
        for tensor_batch, array_batch in zip(tensors, arrays, strict=True):
            assert tensor_batch.keys() == array_batch.keys()
            for name, array in array_batch.items():
                assert isinstance(array, np.ndarray) and array.dtype == np.int64, name
                assert tensor_batch[name].dtype == torch.int64 and torch.equal(tensor_batch[name], torch.from_numpy(array)), name
            served += 1
        assert served == len(arrays)
    return len(arrays)


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_folder_shuffled_or_not(split_folder, shuffle):
    assert_same_batches(split_folder, batch_size=8, shuffle=shuffle, seed=3)


def test_the_validation_split_and_packed_batches(split_folder):
    assert_same_batches(split_folder, batch_size=4, split="validation")
    assert_same_batches(split_folder, batch_size=8, seed=5, position_ids=True)


@pytest.mark.parametrize("world_size", [2, 3])
def test_each_rank_given(split_folder, world_size):
    for rank in range(world_size):
        assert_same_batches(split_folder, batch_size=8, seed=7, rank=rank, world_size=world_size, drop_last=rank == 0)


def test_a_mixture_plan_its_validation_and_one_corpus(plan):
    assert_same_batches(plan, batch_size=6, seed=3, return_source=True)
    assert_same_batches(plan, batch_size=5, shuffle=False)
    for rank in range(2):
        assert_same_batches(plan, batch_size=3, seed=4, rank=rank, world_size=2, return_source=True)
    assert_same_batches(plan, batch_size=4, source="code", seed=2)


def test_a_mixture_of_validation_splits(split_folder, tmp_path):
    # A plan names folders inside its own repository, one corpus each (causal_lm_data.mixture.read_plan).
    blocks = len(make_numpy_loader(split_folder, batch_size=1))
    sources = []
    for name in ("a", "b"):
        shutil.copytree(split_folder, tmp_path / name)
        sources.append({"name": name, "folder": name, "blocks": blocks, "blocks_per_epoch": blocks})
    (tmp_path / "mix.json").write_text(json.dumps({"sources": sources}))
    assert_same_batches(tmp_path / "mix.json", batch_size=8, split="validation", return_source=True)


def _rank_main(rank, world_size, folder, init_file, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        # No rank given: both loaders read it from the process group.
        batches = assert_same_batches(folder, batch_size=4, seed=5)
        first = next(iter(make_numpy_loader(folder, batch_size=4, seed=5)))["input_ids"][:, 0].tolist()
        (results / f"rank{rank}.json").write_text(json.dumps([batches, first]))
    finally:
        torch.distributed.destroy_process_group()


def test_the_rank_of_a_gloo_group(split_folder, tmp_path):
    torch.multiprocessing.spawn(_rank_main, args=(2, split_folder, tmp_path / "init", tmp_path), nprocs=2)
    (batches, first), (other_batches, other_first) = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    whole = make_numpy_loader(split_folder, batch_size=4, seed=5)
    assert batches == other_batches == -(-len(whole.dataset) // 2 // 4) and first != other_first


def test_the_numpy_loader_does_not_import_torch(split_folder, plan):
    script = (
        "import sys; from causal_lm_data.loader import make_numpy_loader;"
        f"batch = next(iter(make_numpy_loader({str(split_folder)!r}, verify=True)));"
        f"mixed = next(iter(make_numpy_loader({str(plan)!r}, return_source=True)));"
        "print(sorted(batch), sorted(mixed), [name for name in sys.modules if name.split('.')[0] == 'torch'])"
    )
    output = run([sys.executable, "-c", script], cwd=REPO).stdout.strip()
    assert output == "['input_ids', 'labels'] ['input_ids', 'labels', 'source'] []"
