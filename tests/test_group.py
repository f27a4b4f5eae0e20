import numpy as np
import pytest

from stages.group import group_blocks


def reference_blocks(documents, block_size):
    """Lab1's method, without its per-batch remainder: concatenate, then cut."""
    stream = [token for document in documents for token in document]
    usable = len(stream) // block_size * block_size
    return [stream[i : i + block_size] for i in range(0, usable, block_size)]


@pytest.mark.parametrize("seed", range(20))
def test_group_blocks_equals_concatenate_then_cut(seed):
    rng = np.random.default_rng(seed)
    documents = [rng.integers(0, 50_257, size=rng.integers(0, 300)).tolist() for _ in range(rng.integers(1, 60))]
    block_size = int(rng.integers(1, 200))
    # Split the documents into random batches, as Arrow record batches would be.
    cuts = sorted(rng.choice(len(documents) + 1, size=rng.integers(0, 6), replace=True).tolist())
    batches = [documents[a:b] for a, b in zip([0, *cuts], [*cuts, len(documents)])]
    token_batches = [np.array([t for doc in batch for t in doc], dtype=np.uint16) for batch in batches]

    blocks = list(group_blocks(token_batches, block_size))
    actual = np.concatenate(blocks).tolist() if blocks else []
    assert actual == reference_blocks(documents, block_size)
    assert all(b.shape[1] == block_size and b.dtype == np.uint16 for b in blocks)
    dropped = sum(map(len, documents)) - len(actual) * block_size
    assert 0 <= dropped < block_size


def test_group_blocks_drops_only_the_final_remainder():
    blocks = list(group_blocks([np.arange(5), np.arange(5, 7), np.arange(7, 12)], block_size=4))
    assert np.concatenate(blocks).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert list(group_blocks([np.arange(3)], block_size=4)) == []
