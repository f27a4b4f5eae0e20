"""One corpus' blocks and their order, in numpy: what the loader serves from a grouped folder.

`BlockArrays` reads a grouped folder's blocks (memory-mapped, located through one small
table per record batch); `BlockOrder` is the order a training run visits them (a
seeded permutation computed on the fly, split across ranks); `NumpyLoader` serves
them as numpy arrays. The mixture (causal_lm_data.mixed) builds on these, and torch
is only their boundary (causal_lm_data.torch_loader). This module imports nothing
of the read side but the folder format.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from causal_lm_data.errors import UserError, printable
from causal_lm_data.format import Shard, map_blocks, mixed_shards, shards, split_folder, verify_shards

# The main corpus' blocks, relative to the current directory: the repository the training code
# runs in (never the package's location, which in an installed package is site-packages).
DEFAULT_PATH = Path("data") / "grouped"
IGNORE_INDEX = -100  # the label PyTorch's cross-entropy and transformers' losses skip
# How the loader's errors say to repair a folder: training code may not run dvc itself.
REBUILD = "rebuild the folder (the group stage writes it: data/grouped)"


def main_folder() -> Path:
    """The current directory's data/grouped; a one-line UserError saying how to get it if it is missing."""
    here = Path.cwd()
    if not (here / DEFAULT_PATH).exists():
        raise UserError(
            f"no {DEFAULT_PATH} in {printable(str(here))}: run `dvc repro` (or `dvc pull`) in the repository, "
            "or pass the folder's path"
        )
    return here / DEFAULT_PATH


class BlockArrays:
    """The fixed-length blocks of a dataset folder written by the group stage, over all its shards, as numpy batches.

    `Blocks` (causal_lm_data.torch_loader) is this class as a torch Dataset of tensors.
    `split` picks "train" (the default) or "validation" of a folder with splits, as
    make_dataloader does. Building it checks what state.json lists (see
    `causal_lm_data.format.shards`) and each
    shard's structure, row count and kind (one id type, block size and set of
    columns), never its data; `verify=True` also checks every shard against its
    hash (the check stage does, once per build). DataLoader workers reopen the
    memory maps and read nothing more, after checking the folder is still the one
    the loader was built on.
    """

    _refusal: UserError | None = None  # why a worker's copy cannot serve (see __setstate__)

    def __init__(self, path=None, verify: bool = False, position_ids: bool = False, split: str | None = None):
        path = main_folder() if path is None else path
        self.path, self.position_ids = split_folder(path, split, "group", REBUILD), position_ids
        found = shards(self.path, "group", REBUILD)
        self.fingerprint = fingerprint(found)
        self.shards = [map_blocks(shard) for shard in found]
        if verify:
            # After mapping, not before: pages that read() has just cached come back in large
            # folios, and a fault on one maps all of it (~9 MB more per 64 MB shard here).
            verify_shards(found)  # on threads: hashlib releases the GIL
        kinds = [_kind(shard) for shard in self.shards]
        other = next((i for i, kind in enumerate(kinds) if kind != kinds[0]), None)
        if other is not None:  # a batch spanning both would wrap ids or misplace blocks
            raise mixed_shards(self.path, (found[0].path.name, kinds[0]), (found[other].path.name, kinds[other]), found[0])
        self.block_size = self.shards[0].block_size
        if position_ids and self.shards[0].offsets is None:
            raise UserError(f"{self.path} records no document starts (written before they were); rebuild it with the group stage")
        self._index()

    def _index(self) -> None:
        """Where each block lives: tables with one row per record batch of `self.shards`, none per block."""
        # One row per record batch of every shard (~2,500 at 10 B tokens): where its blocks start
        # in the folder's numbering, its shard, and where its data starts in that shard's map.
        first_blocks = np.cumsum([0] + [len(shard) for shard in self.shards])
        self.first_blocks = np.concatenate(
            [shard.first_rows[:-1] + first for shard, first in zip(self.shards, first_blocks)] + [first_blocks[-1:]]
        )
        self.owners = np.concatenate([np.full(len(shard.id_starts), index) for index, shard in enumerate(self.shards)])
        # The group stage writes equal record batches (the last excepted): a block's is then one division away.
        sizes = np.diff(self.first_blocks)
        self.rows_per_batch = int(sizes[0]) if len(sizes) and (sizes[:-1] == sizes[0]).all() and sizes[-1] <= sizes[0] else 0
        # Block i of record batch b starts at ids[id_bases[b] + i * block_size] in its shard's map.
        self.id_bases = np.concatenate([shard.id_starts for shard in self.shards]) - self.first_blocks[:-1] * self.block_size
        self.columns = np.arange(self.block_size)
        if self.position_ids:
            self.offset_starts = np.concatenate([shard.offset_starts for shard in self.shards])
            self.value_starts = np.concatenate([shard.value_starts for shard in self.shards])

    def __len__(self) -> int:
        return int(self.first_blocks[-1])

    def batch(self, indices) -> dict:
        """The blocks `indices` as one batch: int64 input_ids and labels (and position_ids if asked).

        A negative index counts from the end, as in Python; one out of range is an IndexError.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and indices.view(np.uint64).max() >= len(self):  # negatives view as huge values
            indices = self._from_the_end(indices)
        record_batch, rows = self.rows(indices)
        input_ids = rows.astype(np.int64)
        if not self.position_ids:
            return {"input_ids": input_ids, "labels": input_ids.copy()}
        return self._packed(rows, input_ids, record_batch, indices)

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The record batch of each block `indices` names (in range, >= 0), and the blocks as rows of ids (their stored type)."""
        if self._refusal is not None:
            raise self._refusal
        if self.rows_per_batch:  # the record batch holding each block
            record_batch = indices // self.rows_per_batch
        else:
            record_batch = self.first_blocks.searchsorted(indices, side="right") - 1
        first_ids = self.id_bases[record_batch] + indices * self.block_size
        if len(self.shards) == 1:  # one fancy index over one map
            rows = self.shards[0].ids[first_ids[:, None] + self.columns]
        elif len(owners := self.owners[record_batch]) == 0 or (owners == owners[0]).all():
            rows = self.shards[owners[0] if len(owners) else 0].ids[first_ids[:, None] + self.columns]
        else:  # a slice per block: cheaper than grouping a small batch by shard
            rows = np.empty((len(indices), self.block_size), dtype=self.shards[0].ids.dtype)
            for i, (owner, first) in enumerate(zip(owners.tolist(), first_ids.tolist())):
                rows[i] = self.shards[owner].ids[first : first + self.block_size]
        return record_batch, rows

    def _packed(self, rows: np.ndarray, input_ids: np.ndarray, record_batch: np.ndarray, indices: np.ndarray) -> dict:
        """The batch with position_ids restarting at each document start, and labels -100 there."""
        which, starts = self._document_starts(record_batch, indices - self.first_blocks[record_batch])
        labels, marks = rows.astype(np.int64), np.zeros(rows.shape, dtype=np.int64)
        labels[which, starts] = IGNORE_INDEX  # nothing predicts a document's first token from the one before
        marks[which, starts] = starts
        # A token's position counts from the last document start at or before it (or the block's start).
        position_ids = self.columns - np.maximum.accumulate(marks, axis=1)
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}

    def _document_starts(self, record_batch: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where documents start in the chosen blocks (each a row of a record batch): (block in the batch, position) pairs."""
        owners = self.owners[record_batch]
        at, value_starts = self.offset_starts[record_batch] + row, self.value_starts[record_batch]
        if len(owners) and (owners == owners[0]).all():  # one shard: vectorised over the blocks
            shard = self.shards[owners[0]]
            low, high = shard.offsets[at].astype(np.int64), shard.offsets[at + 1].astype(np.int64)
            counts = high - low
            # Block i's starts are starts[value_starts[i] + low[i] :][: counts[i]]; one index array walks them all.
            walk = np.repeat(value_starts + low - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
            return np.repeat(np.arange(len(row)), counts), shard.starts[walk].astype(np.int64)
        which, starts = [], []
        for i, (owner, offset, first) in enumerate(zip(owners.tolist(), at.tolist(), value_starts.tolist())):
            shard = self.shards[owner]
            low, high = shard.offsets[offset : offset + 2].tolist()
            starts.append(shard.starts[first + low : first + high].astype(np.int64))
            which.append(np.full(high - low, i))
        return np.concatenate(which or [np.empty(0, np.int64)]), np.concatenate(starts or [np.empty(0, np.int64)])

    def _from_the_end(self, indices: np.ndarray) -> np.ndarray:
        positive = np.where(indices < 0, indices + len(self), indices)
        outside = indices[(positive < 0) | (positive >= len(self))]
        if len(outside):
            raise IndexError(f"block {outside[0]} out of range for {len(self)} blocks")
        return positive

    def __getitem__(self, index) -> dict:
        """One block (an int index) or a whole batch (a list of indices) in one gather."""
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"block {index} out of range for {len(self)} blocks")
            return {name: values[0] for name, values in self.batch([index % len(self)]).items()}
        return self.batch(index)

    def __getstate__(self) -> dict:
        # Worker processes reopen the memory maps instead of receiving a pickled copy of them.
        return {"path": self.path, "position_ids": self.position_ids, "fingerprint": self.fingerprint}

    def __setstate__(self, state: dict) -> None:
        # A spawned worker reads the folder again: if the group stage rewrote it meanwhile, the
        # sampler (built on the old one) would index the new blocks.
        try:
            self.__init__(state["path"], verify=False, position_ids=state["position_ids"])
            if self.fingerprint != state["fingerprint"]:
                raise self._changed()
        except UserError as error:
            # Raised at the first batch asked for: DataLoader passes that on to the training process,
            # while an error raised in unpickling kills the worker with only "exited unexpectedly".
            self._refusal = error

    def check_unchanged(self) -> None:
        """Raise if the folder's state.json no longer lists the shards this dataset was built on."""
        if fingerprint(shards(self.path, "group", REBUILD)) != self.fingerprint:
            raise self._changed()

    def _changed(self) -> UserError:
        return UserError(f"{self.path} changed after this loader was built (the group stage rewrote it?); build the loader again")


def fingerprint(found: list[Shard]) -> str:
    """What identifies a folder's data: each shard's name, sha256 and rows, as state.json lists them (no file is read)."""
    listed = [[shard.path.name, shard.sha256, shard.rows] for shard in found]
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()


def _kind(shard) -> str:
    """What must be equal across a folder's shards for one index to read them all alike."""
    starts = "" if shard.starts is None else f", document starts as {shard.starts.dtype}"
    return f"blocks of {shard.block_size} {shard.ids.dtype} ids{starts}"


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-mixed hash of uint64 values (arithmetic wraps)."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


class Permutation:
    """A seeded permutation of range(size), evaluated at any positions without building it.

    A 6-round Feistel network permutes [0, 4^k) for the smallest 4^k >= size; a value
    that lands outside range(size) is permuted again until it falls inside ("cycle
    walking"), which keeps it a bijection of range(size). Memory: 6 keys, at any size.
    `seed` is a number, or several (a mixture keys each corpus' passes by the seed and
    the corpus' name: causal_lm_data.plan.source_key).
    """

    ROUNDS = 6

    def __init__(self, size: int, seed: int | Sequence[int], epoch: int):
        self.size = size
        self.half = max(1, (max(size - 1, 1).bit_length() + 1) // 2)
        self.mask = np.uint64((1 << self.half) - 1)
        words = [*seed, epoch] if isinstance(seed, Sequence) else [seed, epoch]
        self.keys = np.random.default_rng(words).integers(0, 1 << 64, self.ROUNDS, dtype=np.uint64, endpoint=False)

    def _round_trip(self, values: np.ndarray) -> np.ndarray:
        half = np.uint64(self.half)
        left, right = values >> half, values & self.mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and positions.view(np.uint64).max() >= self.size:
            # Outside [0, 4^k) cycle walking never ends; outside range(size) it is no permutation.
            raise IndexError(f"positions must be in [0, {self.size}); got {positions.min()} to {positions.max()}")
        values = self._round_trip(positions.astype(np.uint64))
        outside = np.flatnonzero(values >= self.size)
        while len(outside):
            values[outside] = self._round_trip(values[outside])
            outside = outside[values[outside] >= self.size]
        return values.astype(np.int64)


class BlockOrder:
    """Batches of block indices, as numpy arrays, for one rank.

    Epoch e's order is Permutation(num_blocks, seed, e) (or 0, 1, 2, ... unshuffled),
    so it depends only on (seed, e). With world_size > 1, rank r takes every
    world_size-th block of the order: disjoint, equal shares; the last
    num_blocks % world_size blocks of each epoch's order are left out so that shares
    stay equal (they differ from epoch to epoch when shuffled).

    The epoch advances only when a whole pass completes (BlockLoader does it), and
    `start_batch` makes the next pass begin mid-epoch (a resumed run): batch k of an
    epoch costs the same to reach for any k.

    `BlockBatches` (causal_lm_data.torch_loader) is this order as the DataLoader's sampler.
    """

    CHUNK_BLOCKS = 1 << 16  # blocks permuted at a time: 512 KB, so a batch costs no permutation call

    def __init__(self, num_blocks, batch_size, shuffle=True, seed=42, rank=0, world_size=1, drop_last=False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if 0 < num_blocks < world_size:  # some ranks would get no block, and every rank no batch
            raise ValueError(f"{num_blocks} blocks cannot give each of {world_size} ranks one; use at most {num_blocks} ranks")
        self.num_blocks, self.batch_size, self.shuffle, self.seed = num_blocks, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch`. A resume point loaded for this same epoch is kept."""
        if epoch != self.epoch:
            self.epoch, self.start_batch = epoch, 0

    def _share(self) -> int:
        return self.num_blocks // self.world_size

    def __len__(self) -> int:
        share = self._share()
        return share // self.batch_size if self.drop_last else -(-share // self.batch_size)

    def __iter__(self):
        order = Permutation(self.num_blocks, self.seed, self.epoch) if self.shuffle else np.asarray
        start, self.start_batch = self.start_batch, 0  # a resume point serves one pass
        end = min(len(self) * self.batch_size, self._share())
        chunk = max(1, self.CHUNK_BLOCKS // self.batch_size) * self.batch_size
        for first in range(start * self.batch_size, end, chunk):
            # This rank's places in the epoch's order, then the blocks at those places.
            blocks = order(np.arange(first, min(first + chunk, end), dtype=np.int64) * self.world_size + self.rank)
            for offset in range(0, len(blocks), self.batch_size):
                yield blocks[offset : offset + self.batch_size]


class NumpyLoader:
    """The batches a DataLoader built by make_dataloader yields, as numpy arrays, in a process without torch.

    The DataLoader (with its default collate_fn) yields `dataset[indices]` for each
    `indices` of its sampler, every array wrapped by torch.from_numpy. This yields the
    arrays themselves, from the numpy classes that DataLoader's dataset and sampler
    extend, built from the same arguments: the same indices, so the same numbers.
    Like the DataLoader, each completed pass advances the epoch. No workers and no
    state_dict: it serves the check stage, not training.
    """

    def __init__(self, dataset, sampler):
        self.dataset, self.sampler = dataset, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        self.dataset.check_unchanged()
        for indices in self.sampler:
            yield self.dataset[indices]
        self.sampler.set_epoch(self.sampler.epoch + 1)
