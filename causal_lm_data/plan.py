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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from causal_lm_data.errors import UserError

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
