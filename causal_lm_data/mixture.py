"""Several corpora mixed by weight: the plan (whole blocks per source per epoch) and the exact schedule.

A weight is a share of the training blocks (so of the tokens) of one *mixture
epoch*. `plan_mixture` turns weights into whole block counts by largest-remainder
rounding, so the counts add up to the epoch exactly; a source drawn more often than
it has blocks is upsampled (several passes over it per epoch), capped by
`max_repetition`.

The loader serves the plan in global batches (batch_size x world_size blocks),
each holding every source's quota to within one block, from a schedule with no
randomness and no index: batch b of an epoch is computed from b alone, in
O(sources), so start-up, memory and resume cost the same at 2 sources or 200 and
at any size. Each source is read as an endless stream of passes, pass p in the
seeded order `Permutation(blocks, (seed, source, p))`: an upsampled source is
reshuffled on every pass, and a change of weights mid-run continues every source's
stream where it stopped (a new *phase*), so no block of a pass is repeated or
skipped because the weights changed.
"""

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from torch.utils.data import DistributedSampler

from causal_lm_data.errors import UserError, first_line
from causal_lm_data.loader import BlockLoader, batch_as_is

GOLDEN = (math.sqrt(5) - 1) / 2  # 0.618...: the stride that spreads a source's extra blocks most evenly


def apportion(total: int, weights: Sequence) -> list[int]:
    """Whole shares of `total` proportional to `weights`, adding up to `total` exactly.

    Largest remainder (Hamilton): each gets the floor of its exact quota, and the
    few left over go to the largest remainders, ties to the earlier weight. Exact
    rational arithmetic, so the result never depends on the machine.
    """
    weights = [Fraction(w) for w in weights]
    whole = sum(weights)
    if total and whole <= 0:
        raise ValueError("weights must add up to more than zero")
    quotas = [w * total / whole if whole else Fraction(0) for w in weights]
    shares = [math.floor(q) for q in quotas]
    left = total - sum(shares)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


@dataclass(frozen=True)
class Plan:
    """Per source, in order: its name, its blocks, and the blocks one mixture epoch draws from it."""

    names: tuple[str, ...]
    blocks: tuple[int, ...]
    quotas: tuple[int, ...]

    @property
    def epoch_blocks(self) -> int:
        return sum(self.quotas)

    def passes(self) -> list[float]:
        """How many passes over each source one mixture epoch makes (above 1: upsampled)."""
        return [quota / blocks if blocks else 0.0 for quota, blocks in zip(self.quotas, self.blocks)]


def plan_mixture(
    blocks: Mapping[str, int], weights: Mapping[str, float], max_repetition: float, epoch_blocks: int = 0
) -> tuple[Plan, list[str]]:
    """The plan for sources with `blocks` each, drawn by `weights`; and the names of the sources left out.

    A mixture epoch holds `epoch_blocks` blocks (0: as many as all sources hold
    together, so weights equal to the sources' sizes read each source once). A
    source of weight 0 is left out; a weighted source without blocks, a weight
    that names no source, or a source drawn more than `max_repetition` times per
    epoch is a UserError.
    """
    unknown = sorted(set(weights) - set(blocks))
    if unknown:
        raise UserError(f"mixture.weights names {', '.join(unknown)}, which no corpus defines; known: {', '.join(blocks)}")
    for name, weight in weights.items():
        if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0 and math.isfinite(weight)):
            raise UserError(f"mixture.weights.{name} must be a number >= 0, got {weight!r}")
    unweighted = sorted(set(blocks) - set(weights))
    if unweighted:
        raise UserError(f"corpora {', '.join(unweighted)} have no weight; set mixture.weights.<corpus> (0 leaves one out)")
    names = [name for name in blocks if weights[name] > 0]
    left_out = [name for name in blocks if weights[name] == 0]
    if not names:
        raise UserError("every mixture weight is 0; give at least one corpus a weight above 0")
    for name in names:
        if blocks[name] == 0:
            raise UserError(
                f"corpus '{name}' has no blocks but weight {weights[name]}; set mixture.weights.{name} to 0 or give it data"
            )
    total = epoch_blocks or sum(blocks[name] for name in names)
    quotas = apportion(total, [weights[name] for name in names])
    for name, quota in zip(names, quotas):
        if quota > max_repetition * blocks[name]:
            raise UserError(
                f"corpus '{name}' has {blocks[name]:,} blocks, and its weight asks for {quota:,} per mixture epoch "
                f"({quota / blocks[name]:.2f} passes), more than mixture.max_repetition {max_repetition}; "
                "lower its weight, raise max_repetition or give it more data"
            )
    return Plan(tuple(names), tuple(blocks[name] for name in names), tuple(quotas)), left_out


def floor_sum(n: int, m: int, a: int, b: int) -> int:
    """sum(floor((a * x + b) / m) for x in range(n)), for n, m >= 1 and a, b >= 0, in O(log m) steps."""
    total = 0
    while True:
        if a >= m:
            total += (n - 1) * n // 2 * (a // m)
            a %= m
        if b >= m:
            total += n * (b // m)
            b %= m
        top = a * n + b
        if top < m:
            return total
        n, b, m, a = top // m, top % m, a, m


def _coprime_stride(batches: int) -> int:
    """A stride coprime to `batches`, near the golden section of it (a Kronecker low-discrepancy order)."""
    stride = max(1, round(batches * GOLDEN))
    while math.gcd(stride, batches) != 1:
        stride += 1
    return stride % batches if batches > 1 else 0


class Schedule:
    """How many blocks of each source every global batch of a mixture epoch holds.

    An epoch is `batches` global batches of `batch` blocks; source i gets
    quotas[i] of them (quotas add up to batches * batch). Every batch holds
    `floor(quotas[i] / batches)` blocks of source i, plus one more in exactly
    quotas[i] % batches of the batches: its "extra" blocks. The extras of all
    sources are laid end to end on a line of E * batches points (E extras per
    batch), and batch b takes the E points t_b, t_b + batches, t_b + 2 * batches...,
    where t_b = b * stride mod batches visits every offset once per epoch. So the
    counts of every batch are within one block of its exact share, every source's
    epoch total is exact, and, the stride being near the golden section of the
    epoch, a source's extras are spread evenly over it.
    """

    def __init__(self, quotas: Sequence[int], batch: int):
        epoch = sum(quotas)
        if epoch % batch:
            raise ValueError(f"{epoch} blocks are not whole batches of {batch}")
        self.batches, self.batch = epoch // batch, batch
        self.quotas = np.asarray(quotas, dtype=np.int64)
        self.base = self.quotas // self.batches  # blocks of each source in every batch
        extras = self.quotas - self.base * self.batches  # batches holding one more block of it
        self.stride = _coprime_stride(self.batches)
        # Source i's extras are the points [first[i], first[i] + extras[i]) of the line; as offsets
        # t of [0, batches), that is [low, high) and, when it wraps past a multiple of batches, [0, wrap).
        first = np.cumsum(extras) - extras
        self.low = first % self.batches
        self.high = np.minimum(self.low + extras, self.batches)
        self.wrap = np.maximum(self.low + extras - self.batches, 0)

    def counts(self, first: int, last: int) -> np.ndarray:
        """Blocks of each source in batches [first, last) of the epoch: a (last - first, sources) array."""
        offsets = (np.arange(first, last, dtype=np.int64) * self.stride % self.batches)[:, None]
        extra = ((offsets >= self.low) & (offsets < self.high)) | (offsets < self.wrap)
        return self.base + extra

    def drawn_before(self, batch: int) -> np.ndarray:
        """Blocks of each source in the epoch's batches before `batch`, without visiting them: O(sources x log)."""
        return np.array(
            [
                batch * base
                + self._offsets_below(batch, high)
                - self._offsets_below(batch, low)
                + self._offsets_below(batch, wrap)
                for base, low, high, wrap in zip(self.base.tolist(), self.low.tolist(), self.high.tolist(), self.wrap.tolist())
            ],
            dtype=np.int64,
        )

    def _offsets_below(self, count: int, limit: int) -> int:
        """How many of the batches [0, count) have an offset t_b below `limit` (0 <= limit <= batches)."""
        if count == 0 or limit == 0:
            return 0
        # t < limit exactly when floor(x / m) - floor((x - limit) / m) is 1, with x = b * stride, m = batches.
        m = self.batches
        return floor_sum(count, m, self.stride, 0) - (floor_sum(count, m, self.stride, m - limit) - count)


def source_key(seed: int, name: str) -> list[int]:
    """The seed words of a source's passes: from the seed and the source's name (not its position in the recipe)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return [seed, int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:16], "little")]


def pass_order(size: int, key: Sequence[int], passes: int):
    """The seeded order of one pass over a source of `size` blocks (a Permutation keyed by source and pass)."""
    from causal_lm_data.loader import Permutation

    order = Permutation(size, 0, 0)
    order.keys = np.random.default_rng([*key, passes]).integers(0, 1 << 64, Permutation.ROUNDS, dtype=np.uint64, endpoint=False)
    return order


class MixtureBatches(DistributedSampler):
    """Batches of block indices of a mixture, for one rank: a global batch's share, by source.

    Indices number the sources' blocks one after the other (source i's block j is
    `first_blocks[i] + j`), as `MixedBlocks` serves them. Global batch b of an epoch
    holds `Schedule.counts` blocks of each source, ordered by source; rank r takes
    every world_size-th of them from the r-th, so ranks hold disjoint, equal
    shares, each with every source's quota to within one block. The blocks of a
    source are the next ones of its stream: stream position s is block
    `pass_order(blocks, key, s // blocks)(s % blocks)`.

    A *phase* is a stretch of training under one plan and global batch size: it
    starts at epoch `phase_epoch` with each source's stream at `offsets`. Loading a
    state saved under other weights or another global batch size starts a new
    phase where every stream stopped.
    """

    CHUNK_BLOCKS = 1 << 16  # blocks scheduled at a time

    def __init__(self, plan: Plan, batch_size: int, shuffle: bool = True, seed: int = 42, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        # A DistributedSampler, so that trainers (Lightning) keep it and call set_epoch instead of re-sharding.
        super().__init__(range(plan.epoch_blocks), world_size, rank, shuffle, seed)
        self.plan, self.batch_size, self.shuffle, self.seed = plan, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        batches = plan.epoch_blocks // self.global_batch
        if batches == 0:
            raise ValueError(
                f"a mixture epoch of {plan.epoch_blocks:,} blocks is less than one global batch of {self.global_batch:,} "
                "(batch_size x world_size); lower the batch size"
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
                order = self._orders[(source, number)] = pass_order(size, self.keys[source], number)
            chosen = passes == number
            blocks[chosen] = order(within[chosen])
        return blocks

    def __iter__(self):
        start, self.start_batch = self.start_batch, 0  # a resume point serves one pass
        epoch, total = self.epoch, self.schedule.batches
        per_chunk = max(1, self.CHUNK_BLOCKS // self.global_batch)
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
        old = MixtureBatches.__new__(MixtureBatches)
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


class MixedBlocks:
    """The blocks of several grouped folders, numbered one folder after the other (a torch Dataset).

    `batch(indices)` gathers from each folder in one call and, with `return_source`,
    adds `source`: each block's folder, as its position in `folders`.
    """

    def __init__(self, folders: Sequence, verify: bool = False, position_ids: bool = False, return_source: bool = False):
        from causal_lm_data.loader import Blocks

        self.folders, self.position_ids, self.return_source = list(folders), position_ids, return_source
        self.sources = [Blocks(folder, verify=verify, position_ids=position_ids) for folder in self.folders]
        sizes = {source.block_size for source in self.sources}
        if len(sizes) != 1:
            described = ", ".join(f"{folder}: {source.block_size}" for folder, source in zip(self.folders, self.sources))
            raise UserError(
                f"the mixture's folders have different block sizes ({described}); group every corpus with one block_size"
            )
        self.block_size = sizes.pop()
        self.first_blocks = np.cumsum([0, *(len(source) for source in self.sources)])

    def __len__(self) -> int:
        return int(self.first_blocks[-1])

    def batch(self, indices) -> dict:
        import torch

        indices = np.asarray(indices, dtype=np.int64)
        owners = np.searchsorted(self.first_blocks, indices, side="right") - 1
        parts = {}
        for source in np.unique(owners).tolist():
            chosen = owners == source
            parts[source] = (chosen, self.sources[source].batch(indices[chosen] - self.first_blocks[source]))
        if len(parts) == 1:
            batch = dict(next(iter(parts.values()))[1])
        else:
            names = next(iter(parts.values()))[1].keys()
            batch = {}
            for name in names:
                out = torch.empty((len(indices), self.block_size), dtype=torch.int64)
                for chosen, part in parts.values():
                    out[torch.from_numpy(chosen)] = part[name]
                batch[name] = out
        if self.return_source:
            batch["source"] = torch.from_numpy(owners)
        return batch

    def __getitem__(self, index):
        return (
            self.batch(index) if not isinstance(index, (int, np.integer)) else {k: v[0] for k, v in self.batch([index]).items()}
        )

    def check_unchanged(self) -> None:
        """Raise if any source folder was rewritten since this dataset was built (see Blocks)."""
        for source in self.sources:
            source.check_unchanged()


class MixtureLoader(BlockLoader):
    """A BlockLoader over a mixture: its state holds each source's stream position, so weights may change on resume."""

    def state_dict(self) -> dict:
        position = self._position or {"epoch": self.sampler.epoch, "batches": self.sampler.start_batch}
        return self.sampler.state(position["epoch"], position["batches"])

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state(state)
        self._position = {"epoch": self.sampler.epoch, "batches": self.sampler.start_batch}


def read_plan(path) -> tuple[Plan, list[Path]]:
    """The plan a mix stage wrote (JSON), and its sources' grouped folders (relative to the plan's folder)."""
    path = Path(path)
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
        sources = recipe["sources"]
        plan = Plan(
            tuple(str(s["name"]) for s in sources),
            tuple(int(s["blocks"]) for s in sources),
            tuple(int(s["blocks_per_epoch"]) for s in sources),
        )
        folders = [path.parent / s["folder"] for s in sources]
    except FileNotFoundError:
        raise UserError(f"no mixture plan at {path}; build it with the mix stage") from None
    except (OSError, ValueError, LookupError, TypeError) as error:
        raise UserError(f"{path} is not a mixture plan ({first_line(error)}); rebuild it with the mix stage") from None
    return plan, folders


def mixture_loader(
    plan_path,
    batch_size: int = 8,
    seed: int = 42,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    position_ids: bool = False,
    return_source: bool = False,
    verify: bool = False,
    **dataloader_kwargs,
) -> MixtureLoader:
    """A DataLoader over the mixture that the plan at `plan_path` describes (see MixtureBatches)."""
    plan, folders = read_plan(plan_path)
    blocks = MixedBlocks(folders, verify=verify, position_ids=position_ids, return_source=return_source)
    found = [len(source) for source in blocks.sources]
    if tuple(found) != plan.blocks:
        raise UserError(f"{plan_path} was planned for {list(plan.blocks)} blocks, the folders hold {found}; rebuild the plan")
    batches = MixtureBatches(plan, batch_size, shuffle, seed, rank, world_size)
    dataloader_kwargs.setdefault("collate_fn", batch_as_is)
    return MixtureLoader(blocks, sampler=batches, batch_size=None, **dataloader_kwargs)
