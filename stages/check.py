"""Stage 4, check: Lab1's sanity check, one batch from the loader has the promised shape.

Writes metrics/check.json; exits non-zero with one line if the batch is wrong.
"""

import torch

from stages.errors import UserError, run_stage
from stages.loader import make_dataloader
from stages.params import load_params
from stages.outputs import split_names, write_json


def check_batch(batch: dict, batch_size: int, block_size: int) -> None:
    """Raise UserError unless input_ids and labels are equal int64 tensors of (batch_size, block_size)."""
    expected = (batch_size, block_size)
    for name in ("input_ids", "labels"):
        tensor = batch.get(name)
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"the batch has no '{name}' tensor; keys: {', '.join(batch)}")
        if tuple(tensor.shape) != expected or tensor.dtype != torch.int64:
            raise UserError(
                f"'{name}' is {tensor.dtype} {tuple(tensor.shape)}, expected torch.int64 {expected}; "
                "is data/grouped smaller than one batch? lower loader.batch_size"
            )
    if not torch.equal(batch["input_ids"], batch["labels"]):
        raise UserError("labels differ from input_ids; causal-LM labels must be a copy of input_ids")


def main() -> None:
    params = load_params("loader")
    block_size = load_params("group")["block_size"]
    splits = split_names("data/grouped", "group")  # first: a bad dataset_dict.json is reported naming the dvc command
    # verify: the one full hash check of data/grouped per build; training processes skip it.
    loader = make_dataloader("data/grouped", params["batch_size"], params["shuffle"], params["seed"], verify=True)
    batch = next(iter(loader))
    check_batch(batch, params["batch_size"], block_size)
    found = {"batch_shape": list(batch["input_ids"].shape), "dtype": "int64", "batches": len(loader)}
    if "validation" in splits:
        validation = make_dataloader("data/grouped", params["batch_size"], split="validation", verify=True)
        # A small held-out split may have fewer blocks than one batch, or none (group warned).
        if len(validation.dataset):
            check_batch(next(iter(validation)), min(params["batch_size"], len(validation.dataset)), block_size)
        found["validation_batches"] = len(validation)
    write_json("metrics/check.json", found)
    print(f"check: input_ids and labels are int64 {tuple(found['batch_shape'])}; {len(loader):,} batches per epoch")


if __name__ == "__main__":
    run_stage(main)
