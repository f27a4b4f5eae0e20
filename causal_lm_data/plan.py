"""A recipe's plan: whole blocks per corpus per mixture epoch, and the exact per-batch schedule.

A weight is a share of the training blocks (so of the tokens) of one *mixture
epoch*. `plan_mixture` turns weights into whole block counts by largest-remainder
rounding, so the counts add up to the epoch exactly; a corpus drawn more often than
it has blocks is upsampled (several passes over it per epoch), capped by
`max_repetition`. `Schedule` says how many blocks of each corpus every global batch
holds: within one block of its exact share, from the batch number alone, so any
batch's place costs O(corpora x log) to find. Pure arithmetic: the mix stage plans
with it without loading the loader (causal_lm_data.mixture serves the plan).
"""

import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from causal_lm_data.errors import UserError

GOLDEN = (math.sqrt(5) - 1) / 2  # 0.618...: the stride that spreads a source's extra blocks most evenly

# The corpus-name rule, as causal_lm_data.pipeline.params applies it to params.yaml (the read side
# imports nothing of the write side; tests/test_mixture_strict.py checks the two agree). A name
# names folders and DVC stages (corpus-download@NAME): DVC splits a stage name at its '@'.
CORPUS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# The most blocks one mixture epoch may hold: 2^48 (36 P tokens of 128-token blocks), far
# beyond any corpus, so that a stream position (epochs x blocks) stays an int64 for 2^15
# epochs and every count the loader holds in numpy is exact. A typo past it fails in one line.
MAX_EPOCH_BLOCKS = 1 << 48
# Schedules of fewer batches than this compute b x stride in int64 (< batches^2 < 2^63).
_INT64_BATCHES = math.isqrt((1 << 63) - 1)


def weight_problem(weight) -> str | None:
    """Why `weight` is no mixture weight (None: it is one): a number >= 0, finite, not a bool.

    Integers of any size are exact (Fraction), so they are never converted to a float.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        return f"must be a number >= 0, got {weight!r} ({type(weight).__name__})"
    if isinstance(weight, float) and not math.isfinite(weight):
        return f"must be a finite number >= 0, got {weight!r}"
    if weight < 0:
        return f"must be a number >= 0, got {weight!r}"
    return None


def check_mixture_params(weights, max_repetition, epoch_blocks) -> None:
    """Refuse, in one line naming the param, what the mixture params alone make impossible: before any folder is read."""
    if not isinstance(weights, Mapping):
        raise UserError(f"mixture.weights must map corpus names to weights, got {weights!r}")
    for name, weight in weights.items():
        problem = weight_problem(weight)
        if problem:
            raise UserError(f"mixture.weights.{name} {problem}")
    if isinstance(max_repetition, bool) or not isinstance(max_repetition, (int, float)) or not max_repetition >= 1:
        raise UserError(f"mixture.max_repetition must be a number >= 1, got {max_repetition!r}")
    if isinstance(epoch_blocks, bool) or not isinstance(epoch_blocks, int) or not 0 <= epoch_blocks <= MAX_EPOCH_BLOCKS:
        raise UserError(
            f"mixture.epoch_blocks must be a whole number from 0 to {MAX_EPOCH_BLOCKS:,} (2^48), got {epoch_blocks!r}; "
            "0 makes an epoch as large as the weighted corpora together"
        )


def target_shares(weights: Sequence) -> list[float]:
    """Each weight's exact share of their sum, as the nearest float: exact for weights whose float sum overflows (1e308)."""
    exact = [Fraction(weight) for weight in weights]
    whole = sum(exact)
    return [float(weight / whole) for weight in exact]


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
    check_mixture_params(weights, max_repetition, epoch_blocks)
    unknown = sorted(set(weights) - set(blocks))
    if unknown:
        raise UserError(f"mixture.weights names {', '.join(unknown)}, which no corpus defines; known: {', '.join(blocks)}")
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
    if total > MAX_EPOCH_BLOCKS:
        raise UserError(
            f"the weighted corpora hold {total:,} blocks, more than a mixture epoch may ({MAX_EPOCH_BLOCKS:,}); "
            "set mixture.epoch_blocks to at most that"
        )
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
        quotas = [int(quota) for quota in quotas]  # Python ints: every product below is exact
        epoch = sum(quotas)
        if epoch % batch:
            raise ValueError(f"{epoch} blocks are not whole batches of {batch}")
        if not 0 < epoch <= MAX_EPOCH_BLOCKS or min(quotas) < 0:
            raise ValueError(f"an epoch holds 1 to {MAX_EPOCH_BLOCKS:,} blocks and no quota is negative, got {quotas}")
        self.batches, self.batch = epoch // batch, batch
        base = [quota // self.batches for quota in quotas]  # blocks of each source in every batch
        extras = [quota - whole * self.batches for quota, whole in zip(quotas, base)]  # batches holding one more
        self.stride = _coprime_stride(self.batches)
        # Source i's extras are the points [first[i], first[i] + extras[i]) of the line; as offsets
        # t of [0, batches), that is [low, high) and, when it wraps past a multiple of batches, [0, wrap).
        first = [0, *itertools.accumulate(extras)][:-1]
        low = [start % self.batches for start in first]
        high = [min(start + extra, self.batches) for start, extra in zip(low, extras)]
        wrap = [max(start + extra - self.batches, 0) for start, extra in zip(low, extras)]
        # Every value is at most the epoch's blocks (< 2^63), so these int64 arrays hold them exactly.
        self.quotas, self.base = np.asarray(quotas, dtype=np.int64), np.asarray(base, dtype=np.int64)
        self.low, self.high, self.wrap = (np.asarray(values, dtype=np.int64) for values in (low, high, wrap))

    def offsets(self, first: int, last: int) -> np.ndarray:
        """t_b = b * stride mod batches for the batches [first, last), exactly.

        b * stride is below batches^2, an int64 while batches < 3.04e9; past that the
        product is taken in Python ints (such an epoch has billions of batches, so its
        few thousand per chunk cost little next to reading them).
        """
        if self.batches <= _INT64_BATCHES:
            return np.arange(first, last, dtype=np.int64) * self.stride % self.batches
        return np.array([b * self.stride % self.batches for b in range(first, last)], dtype=np.int64)

    def counts(self, first: int, last: int) -> np.ndarray:
        """Blocks of each source in batches [first, last) of the epoch: a (last - first, sources) array."""
        offsets = self.offsets(first, last)[:, None]
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
