"""The mixture: plan arithmetic, the per-batch schedule, passes, resume and weight changes."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from causal_lm_data.errors import UserError
from causal_lm_data.mixture import MixtureBatches
from causal_lm_data.plan import Plan, Schedule, apportion, floor_sum, plan_mixture
from tests.helpers import write_three_corpora


def test_floor_sum_equals_the_sum():
    for n in range(1, 30):
        for m in range(1, 12):
            for a in range(0, 25, 3):
                for b in range(0, 25, 4):
                    assert floor_sum(n, m, a, b) == sum((a * x + b) // m for x in range(n))


@given(st.integers(0, 10_000), st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=30))
def test_apportion_adds_up_and_stays_within_one_of_the_quota(total, weights):
    if sum(weights) == 0:
        weights = [*weights[:-1], 1.0]
    shares = apportion(total, weights)
    assert sum(shares) == total
    whole = sum(weights)
    for share, weight in zip(shares, weights):
        assert abs(share - total * weight / whole) < 1


def test_apportion_is_largest_remainder_with_ties_to_the_first():
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # 3.5, 1.75, 1.75: the two remainders of .75 win
    assert apportion(5, [1, 1]) == [3, 2]  # a tie goes to the first
    assert apportion(0, [1, 2]) == [0, 0]


def test_plan_means_shares_of_an_epoch_as_large_as_all_sources():
    plan, left_out = plan_mixture({"web": 600, "code": 300, "books": 100}, {"web": 1, "code": 1, "books": 0}, max_repetition=4)
    assert plan.names == ("web", "code") and left_out == ["books"]
    assert plan.quotas == (450, 450) and plan.epoch_blocks == 900
    assert plan.passes() == [0.75, 1.5]


@pytest.mark.parametrize(
    "blocks, weights, message",
    [
        ({"a": 10}, {"a": 1, "b": 1}, "names b, which no corpus defines"),
        ({"a": 10, "b": 10}, {"a": 1}, "corpora b have no weight"),
        ({"a": 10, "b": 0}, {"a": 1, "b": 1}, "corpus 'b' has no blocks"),
        ({"a": 10, "b": 10}, {"a": 0, "b": 0}, "every mixture weight is 0"),
        ({"a": 10, "b": 10}, {"a": -1, "b": 1}, "must be a number >= 0"),
        ({"a": 1000, "b": 10}, {"a": 1, "b": 1}, "corpus 'b' has 10 blocks, and its weight asks for 505"),
    ],
)
def test_bad_recipes_are_one_line_errors(blocks, weights, message):
    with pytest.raises(UserError, match=message) as error:
        plan_mixture(blocks, weights, max_repetition=4)
    assert "\n" not in str(error.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=6), st.integers(1, 16), st.integers(1, 60), st.data())
def test_every_batch_holds_each_quota_within_one_block_and_epochs_are_exact(weights, batch, batches, data):
    quotas = apportion(batches * batch, weights)
    schedule = Schedule(quotas, batch)
    counts = schedule.counts(0, batches)
    assert (counts.sum(axis=1) == batch).all()
    assert (counts.sum(axis=0) == quotas).all()
    assert (np.abs(counts - np.array(quotas) / batches) < 1).all()
    before = data.draw(st.integers(0, batches))
    assert (schedule.drawn_before(before) == counts[:before].sum(axis=0)).all()


def served(sampler, epochs=1):
    batches = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        batches += [batch.copy() for batch in sampler]
    return batches


def test_each_pass_over_a_source_serves_every_block_once_in_a_new_order():
    plan = Plan(("small", "large"), (30, 500), (90, 410))  # small: 3 passes per epoch
    sampler = MixtureBatches(plan, batch_size=10, seed=7)
    blocks = np.concatenate(served(sampler))
    small = blocks[blocks < 30]
    assert len(small) == 90
    passes = small.reshape(3, 30)
    assert all(sorted(p) == list(range(30)) for p in passes)
    assert len({tuple(p) for p in passes}) == 3  # reshuffled on each pass
    large = blocks[blocks >= 30] - 30
    assert len(large) == 410 and len(set(large.tolist())) == 410  # 410 of 500: the pass goes on next epoch
    sampler.set_epoch(1)
    following = np.concatenate(list(sampler))
    rest = following[following >= 30] - 30
    assert set(rest[:90].tolist()) == set(range(500)) - set(large.tolist())


def test_ranks_split_each_global_batch_and_together_cover_it():
    plan = Plan(("a", "b", "c"), (200, 100, 50), (170, 120, 60))
    whole = served(MixtureBatches(plan, batch_size=14, seed=3), 2)
    ranks = [served(MixtureBatches(plan, batch_size=7, seed=3, rank=r, world_size=2), 2) for r in range(2)]
    for together, first, second in zip(whole, *ranks):
        assert sorted(together.tolist()) == sorted(first.tolist() + second.tolist())
        for share in (first, second):
            counts = Counter(np.searchsorted([200, 300], share, side="right").tolist())
            for source, quota in enumerate((170, 120, 60)):
                assert abs(counts[source] - 7 * quota / 350) < 2


def state_after(sampler, epoch, batches):
    return sampler.state(epoch, batches)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 60), st.integers(0, 2))
def test_resume_at_any_batch_continues_exactly(stop, epoch):
    plan = Plan(("a", "b"), (97, 31), (100, 60))
    reference = served(MixtureBatches(plan, batch_size=4, seed=1), 4)
    per_epoch = len(MixtureBatches(plan, batch_size=4, seed=1))
    stop = min(stop, per_epoch)
    resumed = MixtureBatches(plan, batch_size=4, seed=1)
    resumed.load_state(MixtureBatches(plan, batch_size=4, seed=1).state(epoch, stop))
    resumed_epoch = resumed.epoch
    rest = [b.copy() for b in resumed]
    start = resumed_epoch * per_epoch + (0 if stop == per_epoch else stop)
    assert [b.tolist() for b in rest] == [b.tolist() for b in reference[start : (resumed_epoch + 1) * per_epoch]]


def test_a_weight_change_continues_each_pass_without_repeating_or_skipping():
    before = Plan(("a", "b"), (40, 40), (60, 20))
    after = Plan(("a", "b"), (40, 40), (20, 60))
    sampler = MixtureBatches(before, batch_size=8, seed=5)
    first = [b.copy() for b, _ in zip(sampler, range(4))]  # 4 batches, then a checkpoint
    changed = MixtureBatches(after, batch_size=8, seed=5)
    changed.load_state(sampler.state(0, 4))
    second = [b.copy() for b in changed]
    stream = np.concatenate(first + second)
    for source, (low, high) in enumerate(((0, 40), (40, 80))):
        taken = stream[(stream >= low) & (stream < high)]
        whole_passes = len(taken) // 40
        for p in range(whole_passes):
            assert sorted(taken[p * 40 : (p + 1) * 40].tolist()) == list(range(low, high)), (source, p)
        tail = taken[whole_passes * 40 :]
        assert len(set(tail.tolist())) == len(tail)


def test_states_that_cannot_be_served_are_refused_in_one_line():
    plan = Plan(("a",), (40,), (40,))
    sampler = MixtureBatches(plan, batch_size=8)
    good = sampler.state(0, 2)
    for bad in (
        {**good, "batches": -3},
        {**good, "batches": 6},
        {**good, "epoch": 1.5},
        {k: v for k, v in good.items() if k != "seed"},
    ):
        with pytest.raises(ValueError) as error:
            MixtureBatches(plan, batch_size=8).load_state(bad)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="corpus 'a' had 40 blocks, now 48"):
        MixtureBatches(Plan(("a",), (48,), (48,)), batch_size=8).load_state(good)


@pytest.fixture(scope="module")
def three_corpora(tmp_path_factory):
    return write_three_corpora(tmp_path_factory.mktemp("mixture")).parent


def test_the_loader_serves_the_planned_shares_with_their_sources(three_corpora):
    from causal_lm_data import make_dataloader
    from causal_lm_data.mixture import read_plan

    plan, _ = read_plan(three_corpora / "mix.json")
    loader = make_dataloader(three_corpora / "mix.json", batch_size=6, return_source=True, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == plan.epoch_blocks // 6
    for batch in batches:
        assert batch["input_ids"].shape == (6, 16) and batch["source"].shape == (6,)
        # Each block comes from the corpus `source` says (ids of corpus k lie in [1000k, 1000k + 1000)).
        assert ((batch["input_ids"] // 1000) == batch["source"][:, None]).all()
        counts = np.bincount(batch["source"].numpy(), minlength=3)
        assert (np.abs(counts - 6 * np.array(plan.quotas) / plan.epoch_blocks) < 1 + 1e-9).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_the_mixture_loader_resumes_exactly_with_workers(three_corpora, workers):
    from causal_lm_data import make_dataloader

    options = {"batch_size": 4, "seed": 9, "num_workers": workers}
    if workers:
        options["multiprocessing_context"] = "spawn"
    reference = make_dataloader(three_corpora / "mix.json", **options)
    expected = [b["input_ids"].tolist() for _ in range(2) for b in reference]
    # Stopped after batch 5, resumed, stopped again after batch 25 (in the second epoch), resumed again.
    loader, seen = make_dataloader(three_corpora / "mix.json", **options), []
    for stop in (5, 25):
        while len(seen) < stop:
            for batch in loader:
                seen.append(batch["input_ids"].tolist())
                if len(seen) == stop:
                    break
        state = loader.state_dict()
        loader = make_dataloader(three_corpora / "mix.json", **options)
        loader.load_state_dict(state)
    while len(seen) < len(expected):
        seen += [b["input_ids"].tolist() for b in loader]
    assert seen == expected


def test_a_recipe_of_one_corpus_serves_its_plan_in_whole_batches(built_repo):
    """One corpus is served as a mixture of one: its plan's blocks per epoch in whole batches, each block at most once,
    and a mixture's state (so a weight change that adds a corpus resumes in a new phase: tests/test_mixture_strict.py)."""
    from causal_lm_data import make_dataloader

    plan = built_repo / "data" / "mix.json"
    loader = make_dataloader(plan, batch_size=8, seed=3, return_source=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 18_111 // 8
    assert all(batch["input_ids"].shape == (8, 128) for batch in batches)
    assert {s for batch in batches for s in batch["source"].tolist()} == {0}
    assert "offsets" in loader.state_dict()


def test_validation_serves_every_corpus_in_order_or_one_alone(tmp_path):
    """split="validation": each corpus' held-out blocks once, corpus after corpus, with their source; source= one alone."""
    import json

    from causal_lm_data import make_dataloader
    from causal_lm_data.pipeline.grouped import group_split
    from tests.helpers import write_tokenized

    sources = []
    for number, name in enumerate(("web", "code")):
        for split, count in (("train", 60), ("validation", 10 + 10 * number)):
            texts = [[1000 * number + i % 1000] * 16 for i in range(count)]
            write_tokenized(tmp_path / name / "tokenized" / split, texts, [count], batch_rows=7)
            group_split(tmp_path / name / "tokenized" / split, tmp_path / name / "grouped" / split, 16)
        (tmp_path / name / "grouped" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
        sources.append({"name": name, "folder": f"{name}/grouped", "blocks": 60, "blocks_per_epoch": 60})
    (tmp_path / "mix.json").write_text(json.dumps({"sources": sources}))

    every = make_dataloader(tmp_path / "mix.json", split="validation", batch_size=4, return_source=True)
    served = [(s, ids[0]) for batch in every for s, ids in zip(batch["source"].tolist(), batch["input_ids"].tolist())]
    assert [s for s, _ in served] == [0] * 10 + [1] * 20  # in order, each block once
    assert all(first // 1000 == s for s, first in served)
    code = make_dataloader(tmp_path / "mix.json", source="code", split="validation", batch_size=4)
    assert sum(len(batch["input_ids"]) for batch in code) == 20
