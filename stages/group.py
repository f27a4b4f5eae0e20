"""Stage 3, group: concatenate every document's tokens and cut fixed-length blocks.

Writes data/grouped (an `input_ids` column of `block_size` ids per row) and
metrics/group.json. Works one Arrow record batch at a time, so memory stays flat
however large the corpus; tokens never become Python integers.
"""

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from stages.errors import UserError, run_stage
from stages.params import load_params
from stages.outputs import map_splits, split_metrics, write_csv, write_json
from stages.storage import as_numpy, from_numpy, read_batches, read_schema, write_dataset


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


def group_split(source, target, block_size: int, shard_bytes: int = 0, required: bool = True) -> dict:
    """Cut one split's token stream from `source` into blocks written to `target`; return counts.

    A split with fewer tokens than one block is an error when `required` (training
    data), else an empty split whose tokens are all counted as dropped (a small
    held-out split).
    """
    id_type = read_schema(source, stage="tokenize").field("input_ids").type.value_type
    schema = pa.schema([("input_ids", pa.list_(id_type, block_size))])
    total = {"tokens": 0}

    def token_batches() -> Iterator[np.ndarray]:
        for batch in read_batches(source, stage="tokenize"):
            # .flatten() honours the list offsets: a view of this batch's token ids.
            tokens = as_numpy(batch.column("input_ids").flatten())
            total["tokens"] += len(tokens)
            yield tokens

    block_batches = (
        pa.record_batch([pa.FixedSizeListArray.from_arrays(from_numpy(blocks.ravel()), block_size)], schema=schema)
        for blocks in group_blocks(token_batches(), block_size)
    )
    blocks = write_dataset(target, schema, block_batches, shard_bytes)
    if blocks == 0 and required:
        raise UserError(
            f"{source} has {total['tokens']:,} tokens, fewer than one block of {block_size}; "
            "lower group.block_size or use a larger dataset"
        )
    kept = blocks * block_size
    return {"blocks": blocks, "tokens_kept": kept, "tokens_dropped_at_tail": total["tokens"] - kept}


def main() -> None:
    params = load_params("group")
    block_size, shard_bytes = params["block_size"], params["shard_mb"] << 20

    def write_reports(results: dict) -> None:
        counts = split_metrics(results)
        write_json("metrics/group.json", counts)
        write_csv("plots/group_tokens.csv", ["step", "tokens"], [["kept in blocks", counts["tokens_kept"]]])
        print(
            f"group: {counts['blocks']:,} blocks of {block_size} tokens -> data/grouped "
            f"({counts['tokens_dropped_at_tail']} dropped at the tail)"
        )
        if counts.get("validation", {}).get("blocks") == 0:
            print(f"group: warning: the validation split is shorter than one block of {block_size} tokens, so it is empty")

    map_splits(
        "data/tokenized",
        "data/grouped",
        lambda source, target: group_split(source, target, block_size, shard_bytes, required=source.name != "validation"),
        write_reports,
    )


if __name__ == "__main__":
    run_stage(main)
