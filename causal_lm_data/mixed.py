"""Several corpora mixed by weight: the loader that serves a recipe's plan (causal_lm_data.plan) exactly.

The loader serves the plan in global batches (batch_size x world_size blocks),
each holding every source's quota to within one block, from a schedule with no
randomness and no index: batch b of an epoch is computed from b alone, in
O(sources), so start-up, memory and resume cost the same at 2 sources or 200 and
at any size. Each source is read as an endless stream of passes, pass p in the
seeded order `Permutation(blocks, (seed, source, p))`: an upsampled source is
reshuffled on every pass, and a change of weights mid-run continues every source's
stream where it stopped (a new *phase*), so no block of a pass is repeated or
skipped because the weights changed.

As for one corpus (causal_lm_data.blocks, which this builds on), the numbers are
numpy's (`MixedArrays`, `MixtureOrder`) and torch only their boundary: `MixedBlocks`,
`MixtureBatches` and `MixtureLoader` are in causal_lm_data.torch_loader, above this
module; causal_lm_data.mixture gives both sides under one name.
"""

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from causal_lm_data.blocks import BlockArrays, Permutation
from causal_lm_data.errors import UserError, first_line, printable, quoted
from causal_lm_data.format import FolderError
from causal_lm_data.plan import CORPUS_NAME, MAX_EPOCH_BLOCKS, Plan, Schedule, apportion, source_key, weight_problem


class MixtureOrder:
    """Batches of block indices of a mixture, for one rank: a global batch's share, by source.

    `MixtureBatches` (causal_lm_data.torch_loader) is this order as the DataLoader's sampler.
    Indices number the sources' blocks one after the other (source i's block j is
    `first_blocks[i] + j`), as `MixedArrays` serves them. Global batch b of an epoch
    holds `Schedule.counts` blocks of each source, ordered by source; rank r takes
    every world_size-th of them from the r-th, so ranks hold disjoint, equal
    shares, each with every source's quota to within one block. The blocks of a
    source are the next ones of its stream: stream position s is block
    `Permutation(blocks, key, s // blocks)(s % blocks)`.

    A *phase* is a stretch of training under one plan and global batch size: it
    starts at epoch `phase_epoch` with each source's stream at `offsets`. Loading a
    state saved under other weights or another global batch size starts a new
    phase where every stream stopped.
    """

    CHUNK_BLOCKS = 1 << 16  # blocks scheduled at a time
    CHUNK_CELLS = 1 << 18  # (batch, corpus) counts held at a time: 2 MB, however many corpora

    def __init__(self, plan: Plan, batch_size: int, shuffle: bool = True, seed: int = 42, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.plan, self.batch_size, self.shuffle, self.seed = plan, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        batches = plan.epoch_blocks // self.global_batch
        if batches == 0:
            raise UserError(
                f"a mixture epoch of {plan.epoch_blocks:,} blocks is less than one global batch of {self.global_batch:,} "
                f"(batch_size {batch_size} x world_size {world_size}); lower batch_size to at most "
                f"{max(1, plan.epoch_blocks // world_size):,} or raise mixture.epoch_blocks"
            )
        # Whole global batches: the few blocks a partial last batch would hold are apportioned away.
        self.quotas = apportion(batches * self.global_batch, plan.quotas)
        self.schedule = Schedule(self.quotas, self.global_batch)
        self.first_blocks = np.cumsum([0, *plan.blocks])
        self.keys = [source_key(seed, name) for name in plan.names]
        self.epoch = self.start_batch = 0
        self.phase_epoch = 0
        self.offsets = np.zeros(len(plan.names), dtype=np.int64)
        self._orders: dict = {}

    def __len__(self) -> int:
        return self.schedule.batches

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch`. A resume point loaded for this same epoch is kept."""
        if epoch != self.epoch:
            self.epoch, self.start_batch = epoch, 0

    def streams(self, epoch: int, batch: int) -> np.ndarray:
        """Each source's stream position before global batch `batch` of `epoch`."""
        return self.offsets + (epoch - self.phase_epoch) * self.schedule.quotas + self.schedule.drawn_before(batch)

    def _blocks(self, source: int, start: int, count: int) -> np.ndarray:
        """Stream positions [start, start + count) of one source, as its block indices."""
        size = self.plan.blocks[source]
        positions = np.arange(start, start + count, dtype=np.int64)
        if not self.shuffle:
            return positions % size
        passes, within = np.divmod(positions, size)
        blocks = np.empty(count, dtype=np.int64)
        for number in np.unique(passes).tolist():
            order = self._orders.get((source, number))
            if order is None:
                if len(self._orders) > 4 * len(self.keys):
                    self._orders.clear()
                order = self._orders[(source, number)] = Permutation(size, self.keys[source], number)
            chosen = passes == number
            blocks[chosen] = order(within[chosen])
        return blocks

    def __iter__(self):
        start, self.start_batch = self.start_batch, 0  # a resume point serves one pass
        epoch, total = self.epoch, self.schedule.batches
        per_chunk = max(1, min(self.CHUNK_BLOCKS // self.global_batch, self.CHUNK_CELLS // len(self.quotas)))
        for first in range(start, total, per_chunk):
            last = min(first + per_chunk, total)
            counts = self.schedule.counts(first, last)  # (batches, sources)
            streams = self.streams(epoch, first)
            # Where each (batch, source) run starts in the chunk, batch by batch, sources in order.
            run_starts = np.arange(last - first)[:, None] * self.global_batch + np.cumsum(counts, axis=1) - counts
            chunk = np.empty((last - first) * self.global_batch, dtype=np.int64)
            for source in range(counts.shape[1]):
                runs = counts[:, source]
                drawn = int(runs.sum())
                if not drawn:
                    continue
                within_run = np.arange(drawn) - np.repeat(np.cumsum(runs) - runs, runs)
                places = np.repeat(run_starts[:, source], runs) + within_run
                chunk[places] = self.first_blocks[source] + self._blocks(source, int(streams[source]), drawn)
            for batch in chunk.reshape(-1, self.global_batch):
                yield batch[self.rank :: self.world_size]

    def layout(self) -> dict:
        return {
            "sources": list(self.plan.names),
            "blocks": list(self.plan.blocks),
            "quotas": [int(q) for q in self.quotas],
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }

    def state(self, epoch: int, batches: int) -> dict:
        """The resume state at `batches` batches into `epoch`."""
        if batches >= len(self):  # the last batch was served: the next one starts the next epoch
            epoch, batches = epoch + 1, 0
        return {
            "epoch": epoch,
            "batches": batches,
            "phase_epoch": self.phase_epoch,
            "offsets": dict(zip(self.plan.names, self.offsets.tolist())),
            **self.layout(),
        }

    def load_state(self, state: dict) -> None:
        """Continue from `state`: exactly, or, when weights or the global batch changed, in a new phase."""
        saved = _checked_state(state)
        now = self.layout()
        fixed = ("seed", "shuffle")
        different = [f"{key} {saved[key]!r} -> {now[key]!r}" for key in fixed if saved[key] != now[key]]
        sizes = dict(zip(saved["sources"], saved["blocks"]))
        different += [
            f"corpus '{name}' had {sizes[name]:,} blocks, now {blocks:,}"
            for name, blocks in zip(self.plan.names, self.plan.blocks)
            if name in sizes and sizes[name] != blocks
        ]
        if different:
            raise ValueError(
                f"this loader's state was saved for other data or settings ({'; '.join(different)}); resume with the same ones"
            )
        if all(saved[key] == now[key] for key in ("sources", "quotas", "batch_size", "world_size")):
            self.epoch, self.start_batch = saved["epoch"], saved["batches"]
            self.phase_epoch = saved["phase_epoch"]
            self.offsets = np.array([saved["offsets"][name] for name in self.plan.names], dtype=np.int64)
            return
        # A new phase: where each source's stream stopped under the saved plan and batch size.
        old = MixtureOrder.__new__(MixtureOrder)
        old.schedule = Schedule(saved["quotas"], saved["batch_size"] * saved["world_size"])
        old.phase_epoch = saved["phase_epoch"]
        old.offsets = np.array([saved["offsets"][name] for name in saved["sources"]], dtype=np.int64)
        stopped = dict(zip(saved["sources"], old.streams(saved["epoch"], saved["batches"]).tolist()))
        self.epoch, self.start_batch, self.phase_epoch = saved["epoch"], 0, saved["epoch"]
        self.offsets = np.array([stopped.get(name, 0) for name in self.plan.names], dtype=np.int64)


def _checked_state(state) -> dict:
    """A mixture loader state, checked for its keys and types before anything uses it."""
    if not isinstance(state, dict):
        raise ValueError(f"a loader state is a dict, got {type(state).__name__}")
    expected = {
        "epoch": int,
        "batches": int,
        "phase_epoch": int,
        "offsets": dict,
        "sources": list,
        "blocks": list,
        "quotas": list,
        "batch_size": int,
        "world_size": int,
        "seed": int,
        "shuffle": bool,
    }
    for key, kind in expected.items():
        value = state.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"loader state '{key}' must be {kind.__name__}, got {value!r}; was it saved by this loader?")
    names = state["sources"]
    counts = [
        state["epoch"],
        state["batches"],
        state["phase_epoch"],
        state["batch_size"],
        state["world_size"],
        *state["blocks"],
        *state["quotas"],
    ]
    if not all(isinstance(value, int) and value >= 0 for value in counts) or state["batch_size"] < 1 or state["world_size"] < 1:
        raise ValueError("loader state holds a negative or non-integer count; was it saved by this loader?")
    if state["phase_epoch"] > state["epoch"] or len(state["blocks"]) != len(names) or len(state["quotas"]) != len(names):
        raise ValueError(
            "loader state is inconsistent (phase after epoch, or lists of different lengths); was it saved by this loader?"
        )
    if set(state["offsets"]) != set(names) or not all(isinstance(v, int) and v >= 0 for v in state["offsets"].values()):
        raise ValueError("loader state 'offsets' must give each source a position >= 0")
    global_batch = state["batch_size"] * state["world_size"]
    if sum(state["quotas"]) % global_batch or state["batches"] > sum(state["quotas"]) // global_batch:
        raise ValueError("loader state 'batches' lies outside its epoch; was it saved by this loader?")
    return state


class MixedArrays:
    """The blocks of several grouped folders, numbered one folder after the other, as numpy batches.

    `batch(indices)` gathers every block in one call, through one index over all the
    folders' shards, and with `return_source` adds `source`: each block's folder, as
    its position in `folders`. `MixedBlocks` (causal_lm_data.torch_loader) is this
    dataset serving tensors.
    """

    folder_class = BlockArrays  # what `sources` holds: one per folder

    def __init__(
        self,
        folders: Sequence,
        verify: bool = False,
        position_ids: bool = False,
        return_source: bool = False,
        split: str | None = None,
    ):
        self.folders, self.position_ids, self.return_source = list(folders), position_ids, return_source
        self.sources = [
            self.folder_class(folder, verify=verify, position_ids=position_ids, split=split) for folder in self.folders
        ]
        sizes = {source.block_size for source in self.sources}
        if len(sizes) != 1:
            described = ", ".join(f"{folder}: {source.block_size}" for folder, source in zip(self.folders, self.sources))
            raise UserError(
                f"the mixture's folders have different block sizes ({described}); group every corpus with one block_size"
            )
        self.block_size = sizes.pop()
        self.first_blocks = np.cumsum([0, *(len(source) for source in self.sources)])
        kinds = {str(source.shards[0].ids.dtype) for source in self.sources}
        if len(kinds) != 1:
            raise UserError(
                f"the mixture's folders store ids as {', '.join(sorted(kinds))}; tokenize every corpus with one tokenizer"
            )
        self._combine()

    def _combine(self) -> None:
        """One index over every corpus' shards, as if they were one folder: a batch is one gather."""
        self.blocks = BlockArrays.__new__(BlockArrays)
        self.blocks.position_ids, self.blocks.block_size = self.position_ids, self.block_size
        self.blocks.shards = [shard for source in self.sources for shard in source.shards]
        self.blocks._index()
        # A worker's copy of a corpus rewritten since the loader was built refuses to serve (see Blocks).
        self.blocks._refusal = next((source._refusal for source in self.sources if source._refusal), None)

    def __getstate__(self) -> dict:
        # Each corpus' Blocks pickles as its folder and fingerprint; the combined index is rebuilt.
        return {key: value for key, value in self.__dict__.items() if key != "blocks"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._combine()

    def __len__(self) -> int:
        return int(self.first_blocks[-1])

    def batch(self, indices) -> dict:
        indices = np.asarray(indices, dtype=np.int64)
        batch = self.blocks.batch(indices)
        if self.return_source:
            batch["source"] = np.searchsorted(self.first_blocks, indices, side="right") - 1
        return batch

    def __getitem__(self, index):
        return (
            self.batch(index) if not isinstance(index, (int, np.integer)) else {k: v[0] for k, v in self.batch([index]).items()}
        )

    def check_unchanged(self) -> None:
        """Raise if any source folder was rewritten since this dataset was built (see Blocks)."""
        for source in self.sources:
            source.check_unchanged()


# A plan's keys (data/mix.json, written by the mix stage): required ones, and ones it writes for people
# (metrics) that are checked when present. Plans written by hand for tests hold only the required ones.
PLAN_KEYS = {"sources"}
PLAN_OPTIONAL = {"left_out", "epoch_blocks", "block_size", "tokenizer_sha256"}
SOURCE_KEYS = {"name", "folder", "blocks", "blocks_per_epoch"}
SOURCE_OPTIONAL = {"weight", "target_share", "share", "passes"}
INT64_MAX = (1 << 63) - 1


def read_plan(path) -> tuple[Plan, list[Path]]:
    """The plan a mix stage wrote (JSON), and its sources' grouped folders (relative to the plan's folder).

    A plan may be edited by hand or come from elsewhere, so it is checked as strictly
    as a data folder's state.json before anything is opened: its keys, every field's
    type and range, the quotas' sum, corpus names by the corpus-name rule, and folders
    that are relative paths inside the plan's repository (see `plan_folders`). Any
    problem is one FolderError naming the file and the stage that writes it (mix).
    """
    path = Path(path)
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FolderError(f"no mixture plan at {path}", "mix", missing=True) from None
    except (OSError, ValueError) as error:
        raise FolderError(f"{path} is not a mixture plan ({first_line(error)})", "mix") from None
    try:
        plan, folders = checked_plan(recipe)
        return plan, plan_folders(path, folders)
    except ValueError as error:
        raise FolderError(f"{path} is not a valid mixture plan ({first_line(error)})", "mix") from None


def _whole(value, low: int, high: int) -> bool:
    """Whether `value` is an int (not a bool) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value, low: float, high: float) -> bool:
    """Whether `value` is an int or float (not a bool) in [low, high] (NaN is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _check_keys(found: dict, required: set, optional: set, where: str) -> None:
    unknown = sorted(map(str, set(found) - required - optional))
    if unknown:
        raise ValueError(f"{where} has unknown key {quoted(unknown[0])}; known: {', '.join(sorted(required | optional))}")
    missing = sorted(required - set(found))
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")


def _check_source(number: int, source) -> None:
    """One entry of a plan's `sources`: its keys, and each field's type and range."""
    if not isinstance(source, dict):
        raise ValueError(f"sources[{number}] is {quoted(source)}, not a {{name, folder, blocks, blocks_per_epoch}} entry")
    _check_keys(source, SOURCE_KEYS, SOURCE_OPTIONAL, f"sources[{number}]")
    name = source["name"]
    if not (isinstance(name, str) and CORPUS_NAME.fullmatch(name)):
        raise ValueError(f"sources[{number}] names corpus {quoted(name)}, not a corpus name (letters, digits, '-' or '_')")
    if not _whole(source["blocks"], 1, INT64_MAX):
        raise ValueError(f"corpus {name!r} has blocks {quoted(source['blocks'])}, not a whole number >= 1")
    if not _whole(source["blocks_per_epoch"], 0, MAX_EPOCH_BLOCKS):
        raise ValueError(
            f"corpus {name!r} has blocks_per_epoch {quoted(source['blocks_per_epoch'])}, not a whole number "
            f"from 0 to {MAX_EPOCH_BLOCKS:,}"
        )
    if "weight" in source and (weight_problem(source["weight"]) or not source["weight"] > 0):
        raise ValueError(f"corpus {name!r} has weight {quoted(source['weight'])}, not a number > 0")
    for key, high in (("target_share", 1), ("share", 1), ("passes", float("inf"))):
        if key in source and not (_number(source[key], 0, high) and math.isfinite(source[key])):
            raise ValueError(f"corpus {name!r} has {key} {quoted(source[key])}, not a number from 0 to {high}")


def checked_plan(recipe) -> tuple[Plan, list]:
    """The Plan a parsed plan file describes, and its sources' folders as written; ValueError naming the first problem."""
    if not isinstance(recipe, dict):
        raise ValueError(f"it holds {type(recipe).__name__}, not an object with 'sources'")
    _check_keys(recipe, PLAN_KEYS, PLAN_OPTIONAL, "the plan")
    sources = recipe["sources"]
    if not isinstance(sources, list) or not sources:
        raise ValueError("'sources' must be a non-empty list of corpora")
    for number, source in enumerate(sources):
        _check_source(number, source)
    names = [source["name"] for source in sources]
    twice = next((name for position, name in enumerate(names) if name in names[:position]), None)
    if twice is not None:
        raise ValueError(f"corpus {twice!r} is listed twice")
    quotas = [source["blocks_per_epoch"] for source in sources]
    if not 1 <= sum(quotas) <= MAX_EPOCH_BLOCKS:
        raise ValueError(f"its blocks_per_epoch add up to {sum(quotas):,}, not 1 to {MAX_EPOCH_BLOCKS:,}")
    if "epoch_blocks" in recipe and recipe["epoch_blocks"] != sum(quotas):
        raise ValueError(f"epoch_blocks is {quoted(recipe['epoch_blocks'])}, but its blocks_per_epoch add up to {sum(quotas):,}")
    left_out = recipe.get("left_out", [])
    if not isinstance(left_out, list) or not all(isinstance(n, str) and CORPUS_NAME.fullmatch(n) for n in left_out):
        raise ValueError(f"left_out is {quoted(left_out)}, not a list of corpus names")
    mixed = next((n for n in left_out if n in names), None)
    if mixed is not None:
        raise ValueError(f"corpus {mixed!r} is both mixed and left out")
    if "block_size" in recipe and not _whole(recipe["block_size"], 1, INT64_MAX):
        raise ValueError(f"block_size is {quoted(recipe['block_size'])}, not a whole number >= 1")
    if "tokenizer_sha256" in recipe and not isinstance(recipe["tokenizer_sha256"], (str, type(None))):
        raise ValueError(f"tokenizer_sha256 is {quoted(recipe['tokenizer_sha256'])}, not a string")
    plan = Plan(tuple(names), tuple(source["blocks"] for source in sources), tuple(quotas))
    return plan, [source["folder"] for source in sources]


def plan_repository(folder: Path) -> Path:
    """The repository a plan in `folder` belongs to: the nearest folder above holding .dvc, .git or dvc.yaml; else `folder`."""
    folder = Path(os.path.abspath(folder))
    marks = (".dvc", ".git", "dvc.yaml")
    return next((parent for parent in (folder, *folder.parents) if any((parent / m).exists() for m in marks)), folder)


def plan_folders(path: Path, written: list) -> list[Path]:
    """The folders a plan at `path` names (each relative to the plan's folder), refused unless inside its repository.

    A folder is a relative path without backslashes or control characters, that
    stays inside the plan's repository both as written (`..` counted) and once its
    symlinks are followed: a plan from elsewhere never makes the loader read outside.
    """
    home = path.parent
    root = plan_repository(home)
    inside = Path(os.path.abspath(home)).relative_to(root)
    folders = []
    for folder in written:
        if not isinstance(folder, str) or not folder or any(c in folder for c in "\\\0") or printable(folder) != folder:
            raise ValueError(f"folder {quoted(folder)} is not a relative path written with '/'")
        if PurePosixPath(folder).is_absolute() or PureWindowsPath(folder).drive:
            raise ValueError(f"folder {quoted(folder)} is absolute; a plan names folders relative to itself")
        within = os.path.normpath(inside / folder)
        if within == ".." or within.startswith(".." + os.sep) or os.path.isabs(within):
            raise ValueError(f"folder {quoted(folder)} leads outside the plan's repository {root}")
        resolved = (home / folder).resolve()
        if not resolved.is_relative_to(root.resolve()):
            raise ValueError(f"folder {quoted(folder)} is a symlink to {quoted(str(resolved))}, outside the plan's repository")
        folders.append(home / folder)
    twice = next((folder for position, folder in enumerate(folders) if folder in folders[:position]), None)
    if twice is not None:
        raise ValueError(f"folder {quoted(str(twice))} holds two corpora")
    return folders


def mixture_dataset_and_sampler(
    classes: dict,
    plan_path,
    batch_size: int = 8,
    shuffle: bool | None = None,
    seed: int = 42,
    split: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    position_ids: bool = False,
    return_source: bool = False,
    verify: bool = False,
):
    """The dataset and sampler over the recipe whose plan is at `plan_path` (make_dataloader's, for a .json path).

    `classes` names the dataset and order classes to build (numpy's or torch's: see
    causal_lm_data.loader._classes). The training split is the mixture (MixtureOrder). split="validation" serves every
    corpus' held-out blocks once, corpus after corpus in the plan's order (with
    `return_source`, a `source` entry says whose), so training code can log the loss
    per corpus; make_dataloader(plan, source=NAME) serves one corpus alone.
    """
    plan, folders = read_plan(plan_path)
    if split not in (None, "train"):
        # Held-out blocks, in order.
        shuffle = split in (None, "train") if shuffle is None else shuffle
        blocks = classes["MixedBlocks"](
            folders, verify=verify, position_ids=position_ids, return_source=return_source, split=split
        )
        return blocks, classes["BlockBatches"](len(blocks), batch_size, shuffle, seed, rank, world_size)
    # The training split is the plan's, whatever its corpora: a recipe of one corpus too serves its
    # blocks_per_epoch (mixture.epoch_blocks), and its state is a mixture's, so a weight change that
    # adds a corpus or leaves one out resumes in a new phase (MixtureOrder.load_state).
    blocks = classes["MixedBlocks"](folders, verify=verify, position_ids=position_ids, return_source=return_source)
    found = [len(source) for source in blocks.sources]
    if tuple(found) != plan.blocks:
        raise UserError(f"{plan_path} was planned for {list(plan.blocks)} blocks, the folders hold {found}; rebuild the plan")
    return blocks, classes["MixtureBatches"](plan, batch_size, shuffle is not False, seed, rank, world_size)


def plan_folder(plan_path, source: str):
    """The grouped folder of corpus `source` of a plan."""
    plan, folders = read_plan(plan_path)
    if source not in plan.names:
        raise UserError(f"{plan_path} has no corpus '{source}'; it has: {', '.join(plan.names)}")
    return folders[plan.names.index(source)]
