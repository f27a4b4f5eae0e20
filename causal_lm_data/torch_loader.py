"""The loader's torch boundary: the Dataset, sampler and DataLoader classes training code gets.

Each class here extends a numpy class of causal_lm_data.loader or
causal_lm_data.mixture, which computes every index and every value; this module
adds only what torch needs: the torch base classes trainers look for, and tensors
made by `torch.from_numpy` (no copy). So `make_numpy_loader` (the check stage's,
without torch) and `make_dataloader` (this module's classes) serve the same numbers.
Both modules also export these names, importing this one (and torch) on first use.
"""

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from causal_lm_data.blocks import BlockArrays, BlockOrder
from causal_lm_data.errors import quoted
from causal_lm_data.mixed import MixedArrays, MixtureOrder, mixture_dataset_and_sampler


def as_tensors(batch: dict) -> dict:
    """A batch of numpy arrays as tensors sharing their memory."""
    return {name: torch.from_numpy(values) for name, values in batch.items()}


class Blocks(BlockArrays, Dataset):
    """The fixed-length blocks of a dataset folder written by the group stage, over all its shards (a torch Dataset).

    `Blocks(path)[i]` is one block, `Blocks(path)[indices]` and `.batch(indices)` a
    batch in one gather: dicts of int64 tensors, input_ids and labels (see BlockArrays,
    which computes them, for `split`, `verify` and `position_ids`).
    """

    def batch(self, indices) -> dict:
        return as_tensors(super().batch(indices))


class BlockBatches(BlockOrder, DistributedSampler):
    """BlockOrder as a sampler: batches of block indices, as numpy arrays, for one rank.

    It is a DistributedSampler because that is how trainers recognise a loader that
    is already sharded: PyTorch Lightning replaces any other sampler with its own
    and would shard the rank's share a second time; it calls set_epoch instead.
    """

    def __init__(self, num_blocks, batch_size, shuffle=True, seed=42, rank=0, world_size=1, drop_last=False):
        BlockOrder.__init__(self, num_blocks, batch_size, shuffle, seed, rank, world_size, drop_last)
        DistributedSampler.__init__(self, range(num_blocks), world_size, rank, shuffle, seed, drop_last)


class BlockLoader(DataLoader):
    """A DataLoader that knows where it is: `state_dict()` / `load_state_dict()` resume mid-epoch exactly.

    The protocol is torchdata's StatefulDataLoader's, which PyTorch Lightning saves in
    its checkpoints. The state is (epoch, batches of it already yielded), counted as
    batches reach the caller (not as workers prefetch them), and describes the
    newest iterator. An iterator abandoned mid-epoch (a peek with next(iter(loader)))
    does not advance anything: the next pass starts that epoch again from its start.
    """

    _position = None

    def __iter__(self):
        self.dataset.check_unchanged()  # each pass, as workers started for it may read the folder again
        sampler = self.sampler
        self._position = position = {"epoch": sampler.epoch, "batches": sampler.start_batch}
        for batch in super().__iter__():
            position["batches"] += 1
            yield batch
        sampler.set_epoch(sampler.epoch + 1)
        self._position = {"epoch": sampler.epoch, "batches": 0}

    def _layout(self) -> dict:
        sampler = self.sampler
        # What must match for a saved position to mean the same batches (each rank has the same count).
        return {
            "num_blocks": sampler.num_blocks,
            "batch_size": sampler.batch_size,
            "world_size": sampler.world_size,
            "shuffle": sampler.shuffle,
            "seed": sampler.seed,
            "drop_last": sampler.drop_last,
        }

    def state_dict(self) -> dict:
        position = self._position or {"epoch": self.sampler.epoch, "batches": self.sampler.start_batch}
        epoch, batches = position["epoch"], position["batches"]
        if batches >= len(self.sampler):  # the last batch was served: the next one starts the next epoch
            epoch, batches = epoch + 1, 0
        return {"epoch": epoch, "batches": batches, **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state` (from state_dict()); a state that cannot mean a position of this loader is refused now."""
        if not isinstance(state, Mapping):
            raise ValueError(f"a loader state is the dict state_dict() returns, not {type(state).__name__}")
        missing = [key for key in ("epoch", "batches", *self._layout()) if key not in state]
        if missing:
            raise ValueError(f"this loader state lacks {', '.join(missing)}; give a dict saved by state_dict()")
        different = {key: (state[key], value) for key, value in self._layout().items() if state[key] != value}
        if different:
            described = ", ".join(f"{key} {quoted(saved)} -> {now!r}" for key, (saved, now) in different.items())
            raise ValueError(f"this loader's state was saved for other data or settings ({described}); resume with the same ones")
        for key in ("epoch", "batches"):
            if isinstance(state[key], bool) or not isinstance(state[key], (int, np.integer)) or state[key] < 0:
                raise ValueError(f"this loader state's {key} must be a whole number >= 0, not {quoted(state[key])}")
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches > len(self.sampler):
            raise ValueError(
                f"this loader state's batches ({batches}) is past the end of an epoch of {len(self.sampler)} batches"
            )
        self.sampler.epoch, self.sampler.start_batch = epoch, batches
        self._position = {"epoch": epoch, "batches": batches}


def batch_as_is(batch: dict) -> dict:
    """The collate function for batches that Blocks already built (default_convert costs 20 µs)."""
    return batch


class MixedBlocks(MixedArrays):
    """The blocks of several grouped folders, numbered one folder after the other, serving tensors (see MixedArrays)."""

    folder_class = Blocks

    def batch(self, indices) -> dict:
        return as_tensors(super().batch(indices))


class MixtureBatches(MixtureOrder, DistributedSampler):
    """MixtureOrder as a sampler; a DistributedSampler, so that trainers (Lightning) keep it and call set_epoch instead of re-sharding."""

    def __init__(self, plan, batch_size: int, shuffle: bool = True, seed: int = 42, rank: int = 0, world_size: int = 1):
        MixtureOrder.__init__(self, plan, batch_size, shuffle, seed, rank, world_size)
        DistributedSampler.__init__(self, range(plan.epoch_blocks), world_size, rank, shuffle, seed)


class MixtureLoader(BlockLoader):
    """A BlockLoader over a mixture: its state holds each source's stream position, so weights may change on resume."""

    def state_dict(self) -> dict:
        position = self._position or {"epoch": self.sampler.epoch, "batches": self.sampler.start_batch}
        return self.sampler.state(position["epoch"], position["batches"])

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state(state)
        self._position = {"epoch": self.sampler.epoch, "batches": self.sampler.start_batch}


def dataloader(dataset, sampler, **dataloader_kwargs) -> BlockLoader:
    """The DataLoader over `dataset` in the batches of `sampler` (make_dataloader's): a MixtureLoader for a mixture."""
    # The sampler yields whole batches of indices, so each batch is one gather, not
    # batch_size item fetches plus a collate; batch_size=None tells DataLoader so.
    dataloader_kwargs.setdefault("collate_fn", batch_as_is)
    kind = MixtureLoader if isinstance(sampler, MixtureOrder) else BlockLoader
    return kind(dataset, sampler=sampler, batch_size=None, **dataloader_kwargs)


def mixture_loader(
    plan_path,
    batch_size: int = 8,
    shuffle: bool | None = None,
    seed: int = 42,
    split: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    position_ids: bool = False,
    return_source: bool = False,
    verify: bool = False,
    **dataloader_kwargs,
) -> BlockLoader:
    """The DataLoader over the recipe whose plan is at `plan_path`, as causal_lm_data.mixture has served it
    (make_dataloader(plan_path, ...) is the same loader, with the rank read from torch.distributed by default)."""
    classes = {"MixedBlocks": MixedBlocks, "BlockBatches": BlockBatches, "MixtureBatches": MixtureBatches}
    options = {"position_ids": position_ids, "return_source": return_source, "verify": verify}
    dataset, sampler = mixture_dataset_and_sampler(
        classes, plan_path, batch_size, shuffle, seed, split, rank, world_size, **options
    )
    return dataloader(dataset, sampler, **dataloader_kwargs)
