"""Stage check: build the training loader from the grouped folder (or the mixture plan) with params.yaml's
`loader` settings and check that its first batch is input_ids and labels, int64, (batch_size, block_size).

As dvc.yaml runs it:

    python -m stages.check --params loader --block-size ${group.block_size} --input data/grouped \
        --plan data/mix.json --metrics metrics/check.json

Exits non-zero with one line if a batch is wrong. It hashes every shard of every
block folder it reads once (the loader's `verify`); training processes skip that.

It checks the first batch that make_dataloader(..., loader params) yields, through
the numpy loader (causal_lm_data.loader.make_numpy_loader): the same dataset and
order, so the same indices and values, as the arrays the DataLoader wraps with
torch.from_numpy (an int64 array becomes a torch.int64 tensor of its shape).
So the stage does not import torch, the largest part of its start-up before.
"""

from pathlib import Path

import numpy as np

from causal_lm_data.errors import UserError
from causal_lm_data.format import split_names
from causal_lm_data.loader import BlockArrays, make_numpy_loader
from causal_lm_data.mixture import read_plan
from causal_lm_data.pipeline.command import arguments, run_stage
from causal_lm_data.pipeline.params import load_params
from causal_lm_data.pipeline.writer import write_json


def check_batch(batch: dict, batch_size: int, block_size: int) -> None:
    """Raise UserError unless input_ids and labels are equal int64 arrays of (batch_size, block_size)."""
    expected = (batch_size, block_size)
    for name in ("input_ids", "labels"):
        values = batch.get(name)
        if not isinstance(values, np.ndarray):
            raise UserError(f"the batch has no '{name}' array; keys: {', '.join(batch)}")
        if values.shape != expected or values.dtype != np.int64:
            raise UserError(
                f"'{name}' is {values.dtype} {values.shape}, expected int64 {expected}; "
                "is the block folder smaller than one batch? lower loader.batch_size"
            )
    if not np.array_equal(batch["input_ids"], batch["labels"]):
        raise UserError("labels differ from input_ids; causal-LM labels must be a copy of input_ids")


def check_batch_size(batch_size: int, plan_path) -> None:
    """Refuse a loader.batch_size larger than one mixture epoch in one line: the loader serves whole batches of it."""
    epoch_blocks = read_plan(plan_path)[0].epoch_blocks
    if batch_size > epoch_blocks:
        raise UserError(
            f"loader.batch_size {batch_size:,} is more than the {epoch_blocks:,} blocks of one mixture epoch ({plan_path}); "
            f"lower loader.batch_size to at most {epoch_blocks:,} or raise mixture.epoch_blocks"
        )


def main() -> None:
    args = arguments(__doc__, "block-size", "input", "plan", "metrics")
    params = load_params(args.params)
    block_size = int(args.block_size)
    splits = split_names(args.input, "group")  # first: a bad dataset_dict.json is reported naming the dvc command
    loader = make_numpy_loader(args.input, params["batch_size"], params["shuffle"], params["seed"])
    batch = next(iter(loader))
    check_batch(batch, params["batch_size"], block_size)
    found = {"batch_shape": list(batch["input_ids"].shape), "dtype": "int64", "batches": len(loader)}
    if "validation" in splits:
        validation = make_numpy_loader(args.input, params["batch_size"], split="validation", verify=True)
        # A small held-out split may have fewer blocks than one batch, or none (group warned).
        if len(validation.dataset):
            check_batch(next(iter(validation)), min(params["batch_size"], len(validation.dataset)), block_size)
        found["validation_batches"] = len(validation)
    # The recipe: one batch of the mixture, each block from the corpus the plan says.
    # verify: every shard hashed once per build (training processes skip it): the recipe's
    # loader hashes every corpus it mixes, so the main folder alone only when it is left out.
    check_batch_size(params["batch_size"], args.plan)  # before the mixture's shards are hashed
    mixture = make_numpy_loader(
        args.plan, params["batch_size"], params["shuffle"], params["seed"], return_source=True, verify=True
    )
    if Path(args.input).resolve() not in {folder.resolve() for folder in read_plan(args.plan)[1]}:
        BlockArrays(args.input, verify=True)
    check_batch(next(iter(mixture)), params["batch_size"], block_size)
    found["mixture_batches"] = len(mixture)
    write_json(args.metrics, found)
    held_out = f" (+ {found['validation_batches']:,} validation batches)" if "validation_batches" in found else ""
    print(f"check: input_ids and labels are int64 {tuple(found['batch_shape'])}; {len(loader):,} batches per epoch{held_out}")


if __name__ == "__main__":
    run_stage(main)
