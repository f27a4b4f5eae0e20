"""Stage 3, group: concatenate every document's tokens and cut fixed-length blocks.

Writes data/grouped (an `input_ids` column of `block_size` ids per row) and
metrics/group.json. Works batch by batch on memory-mapped Arrow, so memory stays
flat however large the corpus; tokens never become Python integers.
"""

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from stages.errors import UserError, run_stage
from stages.params import load_params
from stages.storage import as_numpy, from_numpy, read_dataset, replacing, write_dataset, write_json


def group_blocks(token_batches: Iterable[np.ndarray], block_size: int) -> Iterator[np.ndarray]:
    """Yield (n, block_size) arrays cut from the concatenation of `token_batches`, in order.

    Only the final remainder, fewer than `block_size` tokens, is dropped: Lab1 and
    run_clm's `group_texts` drop one remainder per 1,000-document map batch instead.
    The tokens carried between batches are at most block_size - 1.
    """
    carry = np.empty(0, dtype=np.uint32)
    for tokens in token_batches:
        stream = np.concatenate([carry.astype(tokens.dtype, copy=False), tokens]) if len(carry) else tokens
        usable = len(stream) - len(stream) % block_size
        if usable:
            yield stream[:usable].reshape(-1, block_size)
        carry = stream[usable:]


def main() -> None:
    block_size = load_params("group")["block_size"]
    tokenized = read_dataset("data/tokenized", stage="tokenize")
    id_type = tokenized.schema.field("input_ids").type.value_type
    schema = pa.schema([("input_ids", pa.list_(id_type, block_size))])
    total_tokens = sum(len(chunk.values) for chunk in tokenized.column("input_ids").chunks)

    # .flatten() honours each list chunk's offsets: a zero-copy view of its token ids.
    token_batches = (as_numpy(chunk.flatten()) for chunk in tokenized.column("input_ids").chunks)
    block_batches = (
        pa.record_batch([pa.FixedSizeListArray.from_arrays(from_numpy(blocks.ravel()), block_size)], schema=schema)
        for blocks in group_blocks(token_batches, block_size)
    )
    with replacing("data/grouped") as output:
        blocks = write_dataset(output, schema, block_batches)
        if blocks == 0:
            raise UserError(
                f"the corpus has {total_tokens:,} tokens, fewer than one block of {block_size}; "
                "lower group.block_size or use a larger dataset"
            )
    kept = blocks * block_size
    write_json("metrics/group.json", {"blocks": blocks, "tokens_kept": kept, "tokens_dropped_at_tail": total_tokens - kept})
    print(f"group: {blocks:,} blocks of {block_size} tokens -> data/grouped ({total_tokens - kept} dropped at the tail)")


if __name__ == "__main__":
    run_stage(main)
