"""The API training code imports: a PyTorch DataLoader over data/grouped.

    from stages.loader import make_dataloader
    for batch in make_dataloader("data/grouped", batch_size=8):
        loss = model(**batch).loss  # input_ids and labels: int64 (8, block_size)

`labels` equals `input_ids`; causal-LM models shift them internally. The blocks are
memory-mapped, not loaded, and a whole batch is gathered in one indexing step.
`Blocks` also works in a DataLoader of your own: it serves one block per index.
"""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stages.errors import UserError
from stages.outputs import split_folder
from stages.storage import map_fixed_size_rows, shards

# This repository's data/grouped, so training code run from any directory finds it.
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "data" / "grouped"


class Blocks(Dataset):
    """The fixed-length blocks of a dataset folder written by the group stage, over all its shards.

    `verify` checks the data against its hashes once, in the process that builds it;
    DataLoader workers reopen the memory maps without reading the data again.
    """

    def __init__(self, path=DEFAULT_PATH, verify: bool = True):
        self.path = Path(path)
        # Per shard: one zero-copy view of its memory map, and where each block starts in it.
        self.shards = [map_fixed_size_rows(shard, "input_ids", verify) for shard in shards(self.path, "group")]
        sizes = {block_size for _, _, block_size in self.shards}
        if len(sizes) != 1:
            raise UserError(f"{self.path} mixes block sizes {sorted(sizes)}; rebuild it with: dvc repro --force group")
        self.block_size = sizes.pop()
        # Block i lives in shard searchsorted(first_blocks, i, "right") - 1.
        self.first_blocks = np.cumsum([0] + [len(starts) for _, starts, _ in self.shards])
        self.columns = np.arange(self.block_size)

    def __len__(self) -> int:
        return int(self.first_blocks[-1])

    def _rows(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if len(self.shards) == 1:
            values, row_starts, _ = self.shards[0]
            return values[row_starts[indices][:, None] + self.columns]
        owners = np.searchsorted(self.first_blocks, indices, side="right") - 1
        rows = np.empty((len(indices), self.block_size), dtype=self.shards[0][0].dtype)
        for owner in np.unique(owners):
            values, row_starts, _ = self.shards[owner]
            chosen = owners == owner
            rows[chosen] = values[row_starts[indices[chosen] - self.first_blocks[owner]][:, None] + self.columns]
        return rows

    @staticmethod
    def _as_batch(rows: np.ndarray) -> dict:
        input_ids = torch.from_numpy(rows.astype(np.int64))
        return {"input_ids": input_ids, "labels": input_ids.clone()}

    def __getitem__(self, index) -> dict:
        """One block (an int index) or a whole batch (a list of indices) in one gather."""
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"block {index} out of range for {len(self)} blocks")
            return self._as_batch(self._rows([index % len(self)])[0])
        return self._as_batch(self._rows(index))

    def __getstate__(self) -> dict:
        # Worker processes reopen the memory map instead of receiving a pickled copy of it.
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        # The parent verified the data when it built the loader: a worker only maps it.
        self.__init__(state["path"], verify=False)


class BlockBatches(DistributedSampler):
    """Batches of block indices, as numpy arrays: one seeded permutation per epoch.

    Epoch e's order depends only on (seed, e), so a run resumed with set_epoch(e)
    sees the same order. Each iteration advances the epoch. With world_size > 1,
    rank r takes every world_size-th block of the order: disjoint, equal shares;
    the last len % world_size blocks of each epoch's order are left out so that
    shares stay equal (they differ from epoch to epoch when shuffled).

    It is a DistributedSampler because that is how trainers recognise a loader that
    is already sharded: PyTorch Lightning replaces any other sampler with its own
    and would shard the rank's share a second time; it calls set_epoch instead.
    """

    def __init__(self, num_blocks, batch_size, shuffle=True, seed=42, rank=0, world_size=1, drop_last=False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        super().__init__(range(num_blocks), world_size, rank, shuffle, seed, drop_last)
        self.num_blocks, self.batch_size, self.world_size = num_blocks, batch_size, world_size

    def _share(self) -> int:
        return self.num_blocks // self.world_size

    def __len__(self) -> int:
        share = self._share()
        return share // self.batch_size if self.drop_last else -(-share // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_blocks)
        else:
            order = np.arange(self.num_blocks)
        self.epoch += 1
        order = order[self.rank :: self.world_size][: self._share()]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]


def batch_as_is(batch: dict) -> dict:
    """The collate function for batches that Blocks already built (default_convert costs 20 µs)."""
    return batch


def make_dataloader(
    path=DEFAULT_PATH,
    batch_size: int = 8,
    shuffle: bool | None = None,
    seed: int = 42,
    split: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    **dataloader_kwargs,
) -> DataLoader:
    """A standard DataLoader of {"input_ids", "labels"} int64 batches of shape (batch_size, block_size).

    path: a folder written by the group stage; by default this repository's data/grouped.

    split: "train" (the default) or "validation" when download.validation_size held
        documents out. shuffle: defaults to True for train, False for validation.
    seed: the shuffled order of epoch e depends only on (seed, e); each pass over
        the loader is a new epoch, and `loader.sampler.set_epoch(e)` picks one.
    rank, world_size: this process's share for multi-GPU training; by default read
        from an initialised torch.distributed process group, else 0 and 1.
    Other keyword arguments (num_workers, pin_memory, ...) go to DataLoader.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    folder = split_folder(path, split)
    if shuffle is None:
        shuffle = split in (None, "train")
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
    if world_size is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world_size = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    blocks = Blocks(folder)
    batches = BlockBatches(len(blocks), batch_size, shuffle, seed, rank, world_size, drop_last)
    # The sampler yields whole batches of indices, so each batch is one gather, not
    # batch_size item fetches plus a collate; batch_size=None tells DataLoader so.
    dataloader_kwargs.setdefault("collate_fn", batch_as_is)
    return DataLoader(blocks, sampler=batches, batch_size=None, **dataloader_kwargs)
