"""The API training code imports: a PyTorch DataLoader over data/grouped.

    from causal_lm_data.loader import make_dataloader
    loader = make_dataloader("data/grouped", batch_size=8)
    for batch in loader:
        loss = model(**batch).loss  # input_ids and labels: int64 (8, block_size)
    checkpoint["data"] = loader.state_dict()  # later: loader.load_state_dict(checkpoint["data"])

`labels` equals `input_ids` (causal-LM models shift them internally), unless
`position_ids=True` asks for packed-sequence batches: then `position_ids` restart
at 0 at each document start and `labels` is -100 at each document's first token.

Start-up reads no data: the blocks are memory-mapped, located through one small
table per record batch (not one entry per block), and the shuffle is a permutation
computed on the fly, so building a loader costs the same at 8 M or 10 B tokens.

The batches are computed in numpy (`BlockArrays`, `BlockOrder` in causal_lm_data.blocks;
the mixture's in causal_lm_data.mixed); torch is only their boundary, in causal_lm_data.torch_loader:
`Blocks`, `BlockBatches` and `BlockLoader` add a torch base class and wrap each
array with `torch.from_numpy` (no copy). Importing this module loads numpy and
pyarrow; torch loads when a DataLoader or a `Blocks` is first asked for.
`make_numpy_loader` serves the same batches, the same numbers, as numpy arrays
without torch: the check stage validates through it.
"""

import sys
from pathlib import Path

import numpy as np

from causal_lm_data.blocks import (  # noqa: F401 (importable from here, as they were defined here before)
    DEFAULT_PATH,
    IGNORE_INDEX,
    REBUILD,
    BlockArrays,
    BlockOrder,
    NumpyLoader,
    Permutation,
    fingerprint,
    main_folder,
)
from causal_lm_data.errors import UserError, printable
from causal_lm_data.format import split_folder

# The recipe's plan, relative to the current directory as DEFAULT_PATH is. With no path given, the loader serves what the check stage
# validated there (see default_data).
PLAN_PATH = Path("data") / "mix.json"

# The torch side (causal_lm_data.torch_loader), importable from here as it always was:
# `from causal_lm_data.loader import Blocks` imports torch then, and only then.
_TORCH_SIDE = ("Blocks", "BlockBatches", "BlockLoader", "batch_as_is")


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        from causal_lm_data import torch_loader

        return getattr(torch_loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rank_and_world_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's rank and the world size: as given, or an initialised torch.distributed group's, or 0 and 1."""
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
    if world_size is None:
        # A process group exists only once torch.distributed is imported: without it (the check
        # stage, a numpy loader), the answer is 0 and 1 without importing torch to ask.
        distributed = sys.modules.get("torch.distributed")
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            return distributed.get_rank(), distributed.get_world_size()
        return 0, 1
    return rank, world_size


def _classes(tensors: bool) -> dict[str, type]:
    """The dataset and order classes: numpy's, or their torch subclasses (which add only the torch boundary)."""
    if tensors:
        from causal_lm_data import torch_loader as side

        return {name: getattr(side, name) for name in ("Blocks", "BlockBatches", "MixedBlocks", "MixtureBatches")}
    from causal_lm_data.mixed import MixedArrays, MixtureOrder

    return {"Blocks": BlockArrays, "BlockBatches": BlockOrder, "MixedBlocks": MixedArrays, "MixtureBatches": MixtureOrder}


def default_data(source: str | None = None) -> Path:
    """What the loader serves with no path given: what the check stage validated in the current directory.

    That is the recipe's plan (data/mix.json) when it mixes anything but the main
    corpus alone (more corpora, or another corpus in its place), else data/grouped:
    with the default params (no other corpus) the loader serves data/grouped as it
    always did. Asking for one corpus of the recipe (`source`) needs the plan.
    """
    plan = Path.cwd() / PLAN_PATH
    if source is not None or plan.is_file():
        from causal_lm_data.mixed import read_plan

        folders = read_plan(plan)[1]  # a missing or broken plan: one line saying to build it
        if source is not None or [folder.resolve() for folder in folders] != [(Path.cwd() / DEFAULT_PATH).resolve()]:
            return plan
    return main_folder()


def _dataset_and_sampler(
    tensors: bool,
    path=None,
    batch_size: int = 8,
    shuffle: bool | None = None,
    seed: int = 42,
    split: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    position_ids: bool = False,
    verify: bool = False,
    source: str | None = None,
    return_source: bool = False,
):
    """What make_dataloader serves (see it): its dataset and sampler, of `_classes(tensors)`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    classes = _classes(tensors)
    path = default_data(source) if path is None else path
    if Path(path).suffix == ".json":  # a recipe's plan
        from causal_lm_data.mixed import mixture_dataset_and_sampler, plan_folder

        if source is not None:
            path = plan_folder(path, source)
        else:
            rank, world_size = _rank_and_world_size(rank, world_size)
            options = {"position_ids": position_ids, "return_source": return_source, "verify": verify}
            return mixture_dataset_and_sampler(classes, path, batch_size, shuffle, seed, split, rank, world_size, **options)
    folder = split_folder(path, split, "group", REBUILD)
    if shuffle is None:
        shuffle = split in (None, "train")
    rank, world_size = _rank_and_world_size(rank, world_size)
    blocks = classes["Blocks"](folder, verify=verify, position_ids=position_ids)  # `folder` is the split's already
    return blocks, classes["BlockBatches"](len(blocks), batch_size, shuffle, seed, rank, world_size, drop_last)


def make_numpy_loader(path=None, batch_size: int = 8, shuffle: bool | None = None, seed: int = 42, **options) -> NumpyLoader:
    """make_dataloader's batches (the same arguments, but no DataLoader ones) as numpy arrays, without importing torch."""
    return NumpyLoader(*_dataset_and_sampler(False, path, batch_size, shuffle, seed, **options))


def make_dataloader(
    path=None,
    batch_size: int = 8,
    shuffle: bool | None = None,
    seed: int = 42,
    split: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    position_ids: bool = False,
    verify: bool = False,
    source: str | None = None,
    return_source: bool = False,
    **dataloader_kwargs,
):
    """A DataLoader (a BlockLoader) of {"input_ids", "labels"} int64 batches of shape (batch_size, block_size).

    path: a folder written by the group stage, or a recipe's plan (the mix stage's
        data/mix.json): its corpora mixed by weight, every global batch holding each
        corpus' share to within one block (causal_lm_data.mixture). source: one
        corpus of a plan alone.
        By default (None), what the check stage validated in the repository of the
        current directory (`default_data`): its data/mix.json when the recipe mixes
        more than the main corpus, else its data/grouped (the default params).
        return_source: with a plan, add `source`, each block's corpus (its position
        in the plan), to log the loss per corpus.

    split: "train" (the default) or "validation" when download.validation_size held
        documents out. shuffle: defaults to True for train, False for validation.
    seed: the shuffled order of epoch e depends only on (seed, e). Each completed
        pass advances the epoch; `loader.sampler.set_epoch(e)` picks one, and
        `state_dict()` / `load_state_dict()` save and restore the exact position.
    rank, world_size: this process's share for multi-GPU training; by default read
        from an initialised torch.distributed process group, else 0 and 1.
    position_ids: add int64 `position_ids` restarting at 0 at each document start
        inside a block, and set `labels` to -100 at each document's first token
        (packed sequences, as transformers' DataCollatorWithFlattening does).
    verify: check every shard against its hash first (reads all the data once).
    Other keyword arguments (num_workers, pin_memory, ...) go to DataLoader.
    """
    options = {"split": split, "rank": rank, "world_size": world_size, "drop_last": drop_last, "position_ids": position_ids}
    options |= {"verify": verify, "source": source, "return_source": return_source}
    dataset, sampler = _dataset_and_sampler(True, path, batch_size, shuffle, seed, **options)
    from causal_lm_data.torch_loader import dataloader

    return dataloader(dataset, sampler, **dataloader_kwargs)


def from_params(path=None, params_file=None, **options):
    """make_dataloader with the `loader` section of params.yaml (batch_size, shuffle, seed): the settings the check stage validated.

    `path` defaults to what make_dataloader serves by default (the recipe's plan or
    data/grouped of the current directory's repository). `params_file` defaults to
    the params.yaml of the nearest folder above `path`; `options` override it and
    pass on to make_dataloader (split, rank, world_size, num_workers...).
    params.yaml is read as DVC reads it (ruamel.yaml, YAML 1.2: `seed: 042` is 42),
    and checked as the stages check it.
    """
    path = default_data(options.get("source")) if path is None else Path(path)
    if params_file is None:
        params_file = next(
            (parent / "params.yaml" for parent in path.resolve().parents if (parent / "params.yaml").is_file()), None
        )
        if params_file is None:
            raise UserError(f"no params.yaml above {printable(str(path))}; give params_file=")
    section = loader_params(Path(params_file))
    settings = {key: section[key] for key in ("batch_size", "shuffle", "seed")}
    return make_dataloader(path, **(settings | options))


def loader_params(params_file: Path) -> dict:
    """The validated `loader` section of `params_file`, parsed as DVC parses it (YAML 1.2, not PyYAML's 1.1)."""
    from causal_lm_data.pipeline.params import load_params  # the stages' reader: numpy-free, imports ruamel.yaml to read

    try:
        import ruamel.yaml  # noqa: F401 (only to fail here in one line: a loader-only install has no YAML parser)
    except ImportError:
        raise UserError(
            "from_params reads params.yaml with ruamel.yaml, the YAML parser DVC uses, which is not installed: "
            "pip install ruamel.yaml, or give batch_size, shuffle and seed to make_dataloader"
        ) from None
    if not params_file.is_file():
        raise UserError(f"{printable(str(params_file))} is not a file; give the repository's params.yaml as params_file=")
    return load_params("loader", params_file)


def __dir__() -> list[str]:
    return sorted({*globals(), *_TORCH_SIDE})


# `from causal_lm_data.loader import *` gives what it gave when the torch side was defined here
# (every public name of the module), the torch side included: it imports torch then, as it did.
__all__ = [name for name in list(globals()) if not name.startswith("_")] + list(_TORCH_SIDE)
