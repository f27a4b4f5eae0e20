"""The group stage's work: concatenate every document's tokens and cut fixed-length blocks (data/grouped).

What a block folder holds is specified in `causal_lm_data.format`. Each row is one
block: `input_ids`, block_size ids cut from the split's documents concatenated in
order, and `document_starts`, where documents start inside the block.

Only each split's final remainder, fewer than block_size tokens, is dropped.
Every record batch holds the same number of blocks (the split's last excepted) and
output shard i holds blocks [i * blocks_per_shard, ...), a whole number of record
batches: the bounds follow from the token counts and the params alone, so `group_shard` builds each shard on its own,
on any executor, and the output is identical whatever runs it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError
from causal_lm_data.format import Shard, as_numpy, count_list_values, read_schema, shard_name, shards
from causal_lm_data.pipeline.executor import map_shards
from causal_lm_data.pipeline.writer import from_numpy, write_index, write_shard

BATCH_BYTES = 8 << 20  # token ids per record batch of a shard: 8 MB (32,768 blocks of 128 uint16 ids)


def block_layout(tokens: np.ndarray, document_starts: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut `tokens` into blocks and say where documents start inside each.

    `tokens` holds whole blocks only (the caller drops the remainder, fewer than
    block_size tokens at the split's end); `document_starts` are the sorted
    positions in `tokens` where a document begins (an empty document adds none).
    Returns the (n, block_size) blocks, and per block its document starts as
    `offsets` (n + 1 of them) into `starts` (positions inside the block).
    """
    if len(tokens) % block_size:
        raise ValueError(f"{len(tokens)} tokens are not whole blocks of {block_size}")
    blocks = tokens.reshape(-1, block_size)
    document_starts = np.unique(document_starts)  # an empty document starts where the next one does
    owner = document_starts // block_size
    offsets = np.zeros(len(blocks) + 1, dtype=np.int32)
    np.cumsum(np.bincount(owner, minlength=len(blocks)), out=offsets[1:])
    return blocks, offsets, (document_starts - owner * block_size).astype(start_type(block_size))


def start_type(block_size: int) -> np.dtype:
    """The smallest unsigned type for a position inside a block: uint16 up to 65,536 tokens."""
    return np.dtype(np.uint16 if block_size <= 1 << 16 else np.uint32)


def block_schema(id_type: pa.DataType, block_size: int) -> pa.Schema:
    starts = pa.from_numpy_dtype(start_type(block_size))
    return pa.schema([("input_ids", pa.list_(id_type, block_size)), ("document_starts", pa.list_(starts))])


@dataclass(frozen=True)
class BlockShardTask:
    """One output shard: blocks [first_block, first_block + blocks) of a split, read from `sources`."""

    sources: tuple[tuple[Shard, int], ...]  # the input shards it overlaps, each with the index of its first token
    target: str
    first_block: int
    blocks: int
    block_size: int
    id_type: pa.DataType
    rows_per_batch: int


def read_token_range(sources, first: int, count: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Tokens [first, first + count) of the concatenated documents of `sources`, and where documents start in them."""
    tokens, starts = np.empty(count, dtype=dtype), []
    end = first + count
    for shard, position in sources:
        for batch in shard.batches():
            column = batch.column("input_ids")
            values = as_numpy(column.flatten())  # .flatten() honours the list offsets: a view
            offsets = as_numpy(column.offsets).astype(np.int64)
            low, high = max(position, first), min(position + len(values), end)
            if low < high:
                tokens[low - first : high - first] = values[low - position : high - position]
                document_starts = position + offsets[:-1] - offsets[0]
                starts.append(document_starts[(document_starts >= low) & (document_starts < high)] - first)
            position += len(values)
            if position >= end:
                break
    return tokens, np.concatenate(starts or [np.empty(0, dtype=np.int64)])


def group_shard(task: BlockShardTask) -> dict:
    """Write one shard of blocks; return its rows, sha256 and document counts (a pure function of the task)."""
    size = task.block_size
    tokens, document_starts = read_token_range(
        task.sources, task.first_block * size, task.blocks * size, np.dtype(str(task.id_type))
    )
    blocks, offsets, starts = block_layout(tokens, document_starts, size)
    schema = block_schema(task.id_type, size)

    def record_batches():
        for first in range(0, len(blocks), task.rows_per_batch):
            last = min(first + task.rows_per_batch, len(blocks))
            ids = pa.FixedSizeListArray.from_arrays(from_numpy(blocks[first:last].ravel()), size)
            block_starts = pa.ListArray.from_arrays(
                from_numpy(offsets[first : last + 1] - offsets[first]), from_numpy(starts[offsets[first] : offsets[last]])
            )
            yield pa.record_batch([ids, block_starts], schema=schema)

    rows, sha256 = write_shard(task.target, schema, record_batches())
    return {
        "rows": rows,
        "sha256": sha256,
        "schema": schema,
        "document_starts": len(starts),
        "blocks_starting_with_a_document": int(np.count_nonzero(starts == 0)),
    }


def batch_and_shard_blocks(block_size: int, id_bytes: int, shard_bytes: int) -> tuple[int, int]:
    """Blocks per record batch (BATCH_BYTES of ids) and per shard (about shard_bytes, whole batches; 0: one shard).

    Equal record batches let the loader find a block's batch by one division.
    """
    block_bytes = block_size * id_bytes
    per_batch = max(1, BATCH_BYTES // block_bytes)
    if not shard_bytes:
        return per_batch, 1 << 62
    per_batch = min(per_batch, max(1, shard_bytes // block_bytes))
    return per_batch, max(1, shard_bytes // block_bytes // per_batch) * per_batch


def plan_shards(source: Path, target: Path, block_size: int, shard_bytes: int) -> tuple[list[BlockShardTask], int]:
    """The output shards of one split, and its token count. Reads only the input's list offsets."""
    inputs = shards(source, stage="tokenize")
    id_type = read_schema(source, stage="tokenize").field("input_ids").type.value_type
    rows_per_batch, blocks_per_shard = batch_and_shard_blocks(block_size, id_type.bit_width // 8, shard_bytes)
    first_tokens = np.cumsum([0] + [count_list_values(shard, "input_ids") for shard in inputs])
    blocks = int(first_tokens[-1]) // block_size
    count = max(1, -(-blocks // blocks_per_shard))  # an empty split still gets one (empty) shard
    tasks = []
    for index in range(count):
        first_block = index * blocks_per_shard
        shard_blocks = min(blocks_per_shard, blocks - first_block) if blocks else 0
        low, high = first_block * block_size, (first_block + shard_blocks) * block_size
        sources = tuple(
            (shard, int(first_tokens[i]))
            for i, shard in enumerate(inputs)
            if first_tokens[i] < high and first_tokens[i + 1] > low
        )
        tasks.append(
            BlockShardTask(
                sources, str(target / shard_name(index, count)), first_block, shard_blocks, block_size, id_type, rows_per_batch
            )
        )
    return tasks, int(first_tokens[-1])


def group_split(source, target, block_size: int, shard_bytes: int = 0, required: bool = True) -> dict:
    """Cut one split's token stream from `source` into blocks written to `target`; return counts.

    A split with fewer tokens than one block is an error when `required` (training
    data), else an empty split whose tokens are all counted as dropped (a small
    held-out split).
    """
    # Absolute paths: a worker on a cluster runs in another directory (same shared file system).
    source, target = Path(source).resolve(), Path(target).resolve()
    tasks, tokens = plan_shards(source, target, block_size, shard_bytes)
    blocks = sum(task.blocks for task in tasks)
    if blocks == 0 and required:
        raise UserError(
            f"{source} has {tokens:,} tokens, fewer than one block of {block_size}; "
            "lower group.block_size or use a larger dataset"
        )
    target.mkdir(parents=True)
    results = list(map_shards(group_shard, tasks))
    write_index(target, results[0]["schema"], [(Path(t.target).name, r["sha256"], r["rows"]) for t, r in zip(tasks, results)])
    starts = sum(result["document_starts"] for result in results)
    aligned = sum(result["blocks_starting_with_a_document"] for result in results)
    kept = blocks * block_size
    return {
        "blocks": blocks,
        "tokens_kept": kept,
        "tokens_dropped_at_tail": tokens - kept,
        # A block holds the documents that start in it, plus the one it starts inside of.
        "documents_per_block": round((starts + blocks - aligned) / blocks, 4) if blocks else 0,
        "blocks_starting_mid_document": round(1 - aligned / blocks, 4) if blocks else 0,
    }
