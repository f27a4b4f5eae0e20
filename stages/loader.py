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
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from stages.storage import as_numpy, read_dataset


class Blocks(Dataset):
    """The fixed-length blocks of a dataset folder written by the group stage."""

    def __init__(self, path="data/grouped"):
        self.path = Path(path)
        column = read_dataset(self.path, stage="group").column("input_ids")
        self.block_size = column.type.list_size
        # One zero-copy (blocks, block_size) view of the memory map per Arrow record batch.
        self.chunks = [as_numpy(chunk.flatten()).reshape(-1, self.block_size) for chunk in column.chunks]
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
        self.__init__(state["path"])


def make_dataloader(
    path="data/grouped", batch_size: int = 8, shuffle: bool = True, seed: int = 42, **dataloader_kwargs
) -> DataLoader:
    """A standard DataLoader of {"input_ids", "labels"} int64 batches of shape (batch_size, block_size).

    The shuffled order depends only on `seed` (a new order each epoch, the same
    sequence of orders every run). Extra keyword arguments go to DataLoader.
    """
    blocks = Blocks(path)
    order = RandomSampler(blocks, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(blocks)
    # The sampler yields whole batches of indices, so each batch is one gather, not
    # batch_size item fetches plus a collate; batch_size=None tells DataLoader so.
    return DataLoader(blocks, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None, **dataloader_kwargs)
