import numpy as np
import pytest

from causal_lm_data.format import read_table, shards
from causal_lm_data.pipeline.grouped import block_layout, group_split
from tests.helpers import write_tokenized


def reference_blocks(documents, block_size):
    """Lab1's method, without its per-batch remainder: concatenate, then cut; and where each document starts."""
    stream = [token for document in documents for token in document]
    usable = len(stream) // block_size * block_size
    blocks = [stream[i : i + block_size] for i in range(0, usable, block_size)]
    starts = [[] for _ in blocks]
    position = 0
    for document in documents:
        if document and position < usable:  # an empty document starts nowhere
            starts[position // block_size].append(position % block_size)
        position += len(document)
    return blocks, starts


@pytest.mark.parametrize("seed", range(12))
def test_group_split_equals_concatenate_then_cut_with_document_starts(tmp_path, seed):
    rng = np.random.default_rng(seed)
    documents = [rng.integers(0, 50_257, size=rng.integers(0, 300)).tolist() for _ in range(rng.integers(2, 60))]
    block_size = int(rng.integers(1, 200))
    expected_blocks, expected_starts = reference_blocks(documents, block_size)
    cuts = np.sort(rng.choice(len(documents), size=rng.integers(0, 4), replace=False))
    shard_sizes = [int(n) for n in np.diff([0, *cuts, len(documents)]) if n]
    write_tokenized(tmp_path / "tokenized", documents, shard_sizes, batch_rows=int(rng.integers(1, 10)))
    shard_bytes = int(rng.choice([0, block_size * 2 * 3, 1000]))

    counts = group_split(tmp_path / "tokenized", tmp_path / "grouped", block_size, shard_bytes, required=False)

    table = read_table(tmp_path / "grouped", "group")
    assert table.column("input_ids").to_pylist() == expected_blocks
    assert table.column("document_starts").to_pylist() == expected_starts
    assert counts["blocks"] == len(expected_blocks)
    assert counts["tokens_dropped_at_tail"] == sum(map(len, documents)) - len(expected_blocks) * block_size
    if expected_blocks:
        fragments = sum(len(s) + (s[:1] != [0]) for s in expected_starts)
        assert counts["documents_per_block"] == round(fragments / len(expected_blocks), 4)
        assert counts["blocks_starting_mid_document"] == round(
            sum(s[:1] != [0] for s in expected_starts) / len(expected_blocks), 4
        )
    if shard_bytes and len(expected_blocks) > 3:
        assert len(shards(tmp_path / "grouped", "group")) > 1


def test_block_layout_drops_nothing_and_marks_document_starts():
    blocks, offsets, starts = block_layout(np.arange(12), np.array([0, 5, 5, 7, 8]), block_size=4)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    # Block 1 holds the starts at 5 and 7 (an empty document also started at 5); block 2 starts with one.
    assert offsets.tolist() == [0, 1, 3, 4]
    assert starts.tolist() == [0, 1, 3, 0]
    with pytest.raises(ValueError, match="whole blocks"):
        block_layout(np.arange(5), np.array([0]), block_size=4)


def test_group_split_output_is_identical_for_one_and_two_workers(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    documents = [rng.integers(0, 50_257, size=rng.integers(1, 400)).tolist() for _ in range(400)]
    write_tokenized(tmp_path / "tokenized", documents, [150, 150, 100], batch_rows=7)
    outputs = []
    for workers in ("1", "2"):
        monkeypatch.setenv("PIPELINE_WORKERS", workers)
        target = tmp_path / f"grouped-{workers}"
        group_split(tmp_path / "tokenized", target, 64, shard_bytes=64 * 2 * 100)
        outputs.append({path.name: path.read_bytes() for path in target.iterdir()})
    assert len(outputs[0]) > 4 and outputs[0] == outputs[1]
