"""The API training code imports: a PyTorch DataLoader over data/grouped.

    from stages.loader import make_dataloader
    for batch in make_dataloader("data/grouped", batch_size=8):
        loss = model(**batch).loss  # input_ids and labels: int64 (8, block_size)

`labels` equals `input_ids`; causal-LM models shift them internally. The blocks are
memory-mapped, not loaded, and a whole batch is gathered in one indexing step.
"""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from stages.storage import read_dataset


class Blocks(Dataset):
    """The fixed-length blocks of a dataset folder written by the group stage."""

    def __init__(self, path="data/grouped"):
        self.path = Path(path)
        column = read_dataset(self.path, stage="group").column("input_ids")
        self.block_size = column.type.list_size
        # One zero-copy (blocks, block_size) view of the memory map per Arrow record batch.
        self.chunks = [chunk.flatten().to_numpy().reshape(-1, self.block_size) for chunk in column.chunks]
        self.chunk_starts = np.cumsum([0] + [len(chunk) for chunk in self.chunks])

    def __len__(self) -> int:
        return int(self.chunk_starts[-1])

    def _rows(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if len(self.chunks) == 1:
            return self.chunks[0][indices]
        chunk_of = np.searchsorted(self.chunk_starts, indices, side="right") - 1
        return np.stack([self.chunks[c][i - self.chunk_starts[c]] for c, i in zip(chunk_of, indices)])

    @staticmethod
    def _as_batch(rows: np.ndarray) -> dict:
        input_ids = torch.from_numpy(rows.astype(np.int64))
        return {"input_ids": input_ids, "labels": input_ids.clone()}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"block {index} out of range for {len(self)} blocks")
        return self._as_batch(self._rows([index % len(self)])[0])

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch at once; the DataLoader calls this instead of __getitem__ per block."""
        return self._as_batch(self._rows(indices))

    def __getstate__(self) -> dict:
        # Worker processes reopen the memory map instead of receiving a pickled copy of it.
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


def collate_blocks(batch):
    """Pass through a batch made by Blocks.__getitems__; stack a list of single blocks."""
    return batch if isinstance(batch, dict) else default_collate(batch)


def make_dataloader(
    path="data/grouped", batch_size: int = 8, shuffle: bool = True, seed: int = 42, **dataloader_kwargs
) -> DataLoader:
    """A standard DataLoader of {"input_ids", "labels"} int64 batches of shape (batch_size, block_size).

    The shuffled order depends only on `seed` (a new order each epoch, the same
    sequence of orders every run). Extra keyword arguments go to DataLoader.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        Blocks(path),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate_blocks,
        **dataloader_kwargs,
    )
