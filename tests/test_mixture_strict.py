"""Mixture plans checked strictly and computed exactly: one corpus, huge weights and epochs, hand-edited plans,
resuming across a weight change that adds or leaves out a corpus, and a batch larger than an epoch."""

import json
import shutil
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from causal_lm_data.errors import UserError
from causal_lm_data.format import FolderError
from causal_lm_data.loader import Permutation, make_numpy_loader
from causal_lm_data.mixture import MixtureOrder, read_plan
from causal_lm_data.pipeline.grouped import group_split
from causal_lm_data.plan import MAX_EPOCH_BLOCKS, Plan, Schedule, apportion, plan_mixture, source_key
from tests.helpers import stage_in, write_tokenized

BLOCK = 16


def write_grouped(folder, blocks: int, corpus: int) -> None:
    """A grouped folder of `blocks` 16-token blocks; block j of corpus k holds ids 1000k + j (so a block names itself)."""
    texts = [[1000 * corpus + j] * BLOCK for j in range(blocks)]
    write_tokenized(folder.parent / "tokenized", texts, [blocks], batch_rows=7)
    group_split(folder.parent / "tokenized", folder, BLOCK)


def workdir(tmp_path, blocks: dict) -> "Path":  # noqa: F821
    """A folder laid out as the pipeline's: data/grouped (main) and data/corpora/NAME/grouped."""
    for number, (name, count) in enumerate(blocks.items()):
        folder = tmp_path / "data" / ("grouped" if name == "main" else f"corpora/{name}/grouped")
        write_grouped(folder, count, number)
    (tmp_path / ".dvc").mkdir()  # the plan's repository
    return tmp_path


WEB = {"dataset": "local", "local_path": "inputs"}  # params of a second corpus (its folder is written directly)


def mix(work, **changes):
    result = stage_in(work, "mix", **changes)
    assert result.returncode == 0, result.stderr
    return json.loads((work / "data" / "mix.json").read_text())


def one_line_failure(result, *parts):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def served_ids(loader) -> list[int]:
    """The first id of every block served in one pass (the block's own number: 1000 x corpus + block)."""
    return [int(block[0]) for batch in loader for block in batch["input_ids"]]


# 1. A recipe of one weighted corpus serves the plan's blocks per epoch, not its folder.


def test_one_corpus_serves_the_planned_epoch_blocks(tmp_path):
    work = workdir(tmp_path, {"main": 20})
    plan = mix(work, mixture__epoch_blocks=36)
    assert plan["epoch_blocks"] == 36 and plan["sources"][0]["passes"] == 1.8
    loader = make_numpy_loader(work / "data" / "mix.json", batch_size=4, seed=1)
    ids = served_ids(loader)
    assert len(loader) == 9 and len(ids) == 36
    assert set(ids) == set(range(20)) and max(np.bincount(ids)) == 2  # 1.8 passes: no block thrice


def test_a_corpus_left_out_leaves_one_corpus_served_as_planned(tmp_path):
    work = workdir(tmp_path, {"main": 20, "web": 12})
    mix(work, corpora__web=WEB, mixture__weights={"main": 0, "web": 1}, mixture__epoch_blocks=30)
    ids = served_ids(make_numpy_loader(work / "data" / "mix.json", batch_size=5))
    assert len(ids) == 30 and {i // 1000 for i in ids} == {1}  # web only (corpus 1), 2.5 passes
    assert max(np.bincount([i - 1000 for i in ids])) == 3


# 2. Exact arithmetic: huge weights, huge epochs, and the schedule's quotas against its exact counts.


@pytest.mark.parametrize("weight", [1e308, 10**400])
def test_huge_weights_give_exact_shares(tmp_path, weight):
    work = workdir(tmp_path, {"main": 20, "web": 12})
    plan = mix(work, corpora__web=WEB, mixture__weights={"main": weight, "web": weight})
    assert [s["target_share"] for s in plan["sources"]] == [0.5, 0.5]
    assert [s["blocks_per_epoch"] for s in plan["sources"]] == [16, 16]


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"mixture__epoch_blocks": 2**60}, "mixture.epoch_blocks"),
        ({"mixture__epoch_blocks": MAX_EPOCH_BLOCKS + 1}, "mixture.epoch_blocks"),
        ({"mixture__weights": {"main": "1"}}, "mixture.weights.main"),
        ({"mixture__weights": {"main": True}}, "mixture.weights.main"),
        ({"mixture__weights": {"main": -1.0}}, "mixture.weights.main"),
        ({"mixture__weights": {"main": float("nan")}}, "mixture.weights.main"),
        ({"mixture__weights": {"main": float("inf")}}, "mixture.weights.main"),
    ],
)
def test_params_that_decide_a_failure_fail_before_any_folder_is_read(tmp_path, changes, named):
    """No data folder exists here: the error must be the param's, not the missing folder's."""
    one_line_failure(stage_in(tmp_path, "mix", **changes), named)


@pytest.mark.parametrize("weight", ["1", True, -1, float("nan"), float("inf"), -float("inf"), None, [1]])
def test_plan_mixture_names_the_bad_weight(weight):
    with pytest.raises(UserError, match=r"^mixture\.weights\.a (must be)"):
        plan_mixture({"a": 5}, {"a": weight}, 4)


def test_a_huge_integer_weight_is_exact():
    plan, _ = plan_mixture({"a": 5, "b": 5}, {"a": 10**400, "b": 10**400 * 3}, 4)
    assert plan.quotas == (3, 7)  # 10 blocks at 1:3 are 2.5 and 7.5: the tied remainder goes to the earlier


def test_an_epoch_of_more_than_four_billion_batches_is_served_exactly():
    """5e9 batches of one block: b x stride overflowed int64 past ~3.9e9 batches, and counts disagreed with resume's."""
    quotas = [3 * 10**9 + 7, 2 * 10**9 - 7]
    plan = Plan(("a", "b"), (11, 13), tuple(quotas))
    order = MixtureOrder(plan, batch_size=1, seed=5)
    schedule = order.schedule
    last = schedule.batches
    counts = schedule.counts(last - 1000, last)
    assert (counts.sum(axis=0) == quotas - schedule.drawn_before(last - 1000)).all()
    # Resumed 1000 batches before the end: the served blocks are the streams' next ones.
    order.load_state(order.state(0, last - 1000))
    served = [int(batch[0]) for batch in order]
    assert len(served) == 1000
    assert [int(b < 11) for b in served] == counts[:, 0].tolist()


@st.composite
def schedules(draw):
    batch = draw(st.integers(1, 6))
    batches = draw(st.one_of(st.integers(1, 500), st.integers(3 * 10**9, MAX_EPOCH_BLOCKS // batch)))
    weights = draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=5).filter(any))
    quotas = apportion(batches * batch, weights)
    first = draw(st.integers(0, batches - 1))
    last = draw(st.integers(first, min(batches, first + 64)))
    return quotas, batch, first, last


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_per_batch_quotas_agree_with_the_exact_counts(case):
    quotas, batch, first, last = case
    schedule = Schedule(quotas, batch)
    counts = schedule.counts(first, last)
    assert (counts.sum(axis=1) == batch).all()
    assert (np.abs(counts - np.array([Fraction(q, schedule.batches) for q in quotas], dtype=object)) < 1).all()
    assert (counts.sum(axis=0) == schedule.drawn_before(last) - schedule.drawn_before(first)).all()
    assert schedule.drawn_before(schedule.batches).tolist() == quotas


# 3. A hand-edited plan is checked as strictly as a data folder.


def tampered(plan: dict, change) -> dict:
    plan = json.loads(json.dumps(plan))
    change(plan)
    return plan


def set_source(key, value, number=0):
    def change(plan):
        plan["sources"][number][key] = value

    return change


def drop_source_key(key):
    return lambda plan: plan["sources"][0].pop(key)


TAMPERED = {
    "an absolute folder": (set_source("folder", "/etc"), "is absolute"),
    "a folder out of the repository": (set_source("folder", "../../elsewhere"), "leads outside the plan's repository"),
    "a folder that climbs out and back": (set_source("folder", "grouped/../../.."), "leads outside the plan's repository"),
    "a backslash folder": (set_source("folder", "..\\..\\x"), "not a relative path"),
    "a control character": (set_source("folder", "grouped\x1b[2J"), "not a relative path"),
    "a folder that is no string": (set_source("folder", 3), "not a relative path"),
    "a negative quota": (set_source("blocks_per_epoch", -5), "blocks_per_epoch -5"),
    "a huge quota": (set_source("blocks_per_epoch", 2**70), "blocks_per_epoch"),
    "a bool quota": (set_source("blocks_per_epoch", True), "blocks_per_epoch True"),
    "a float quota": (set_source("blocks_per_epoch", 3.5), "blocks_per_epoch 3.5"),
    "a missing quota": (drop_source_key("blocks_per_epoch"), "lacks blocks_per_epoch"),
    "missing blocks": (drop_source_key("blocks"), "lacks blocks"),
    "string blocks": (set_source("blocks", "20"), "blocks '20'"),
    "zero blocks": (set_source("blocks", 0), "blocks 0"),
    "a name with @": (set_source("name", "a@b"), "'a@b', not a corpus name"),
    "a name with a path": (set_source("name", "../x"), "not a corpus name"),
    "an unknown source key": (set_source("folders", "x"), "unknown key 'folders'"),
    "an unknown plan key": (lambda plan: plan.update(extra=1), "unknown key 'extra'"),
    "no sources": (lambda plan: plan.update(sources=[]), "non-empty list"),
    "sources not a list": (lambda plan: plan.update(sources={"main": 1}), "non-empty list"),
    "a source not an object": (lambda plan: plan["sources"].append(7), "sources[2] is 7"),
    "a name listed twice": (set_source("name", "main", 1), "'main' is listed twice"),
    "quotas adding up to 0": (lambda plan: [s.update(blocks_per_epoch=0) for s in plan["sources"]], "add up to 0"),
    "epoch_blocks disagreeing": (lambda plan: plan.update(epoch_blocks=3), "epoch_blocks is 3"),
    "a mixed corpus left out": (lambda plan: plan.update(left_out=["web"]), "both mixed and left out"),
    "left_out not names": (lambda plan: plan.update(left_out="web"), "left_out is 'web'"),
    "a negative weight": (set_source("weight", -1), "weight -1"),
    "a share above 1": (set_source("share", 2), "share 2"),
    "a NaN passes": (set_source("passes", float("nan")), "passes nan"),
    "a plan that is a list": (lambda plan: plan.clear() or plan.update(sources=None), "non-empty list"),
}


@pytest.fixture(scope="module")
def real_plan(tmp_path_factory):
    work = workdir(tmp_path_factory.mktemp("plan"), {"main": 20, "web": 12})
    mix(work, corpora__web=WEB, mixture__weights={"main": 1, "web": 1})
    return work


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_plan_is_one_line_naming_the_file_and_the_mix_stage(real_plan, tmp_path, case):
    change, message = TAMPERED[case]
    work = shutil.copytree(real_plan, tmp_path / "work")
    plan_path = work / "data" / "mix.json"
    plan_path.write_text(json.dumps(tampered(json.loads(plan_path.read_text()), change)))
    with pytest.raises(FolderError) as error:
        make_numpy_loader(plan_path, batch_size=2)
    text = str(error.value)
    assert "\n" not in text and "\x1b" not in text
    assert text.startswith(f"{plan_path} is not a valid mixture plan (") and "the 'mix' stage" in text
    assert message in text


def test_a_tampered_plan_stops_the_check_stage_naming_the_dvc_command(real_plan, tmp_path):
    work = shutil.copytree(real_plan, tmp_path / "work")
    plan_path = work / "data" / "mix.json"
    plan_path.write_text(json.dumps(tampered(json.loads(plan_path.read_text()), set_source("folder", "/etc"))))
    result = stage_in(work, "check", corpora__web=WEB, mixture__weights={"main": 1, "web": 1}, group__block_size=BLOCK)
    one_line_failure(result, "data/mix.json is not a valid mixture plan", "dvc repro --force --single-item mix")


def test_a_folder_symlinked_out_of_the_repository_is_refused(real_plan, tmp_path):
    work = shutil.copytree(real_plan, tmp_path / "work")
    outside = shutil.copytree(work / "data" / "grouped", tmp_path / "outside")
    (work / "data" / "link").symlink_to(outside)
    plan_path = work / "data" / "mix.json"
    plan_path.write_text(json.dumps(tampered(json.loads(plan_path.read_text()), set_source("folder", "link"))))
    with pytest.raises(FolderError, match="is a symlink to .*outside the plan's repository"):
        read_plan(plan_path)


def test_the_untampered_plan_and_a_missing_one(real_plan, tmp_path):
    plan, folders = read_plan(real_plan / "data" / "mix.json")
    assert plan == Plan(("main", "web"), (20, 12), (16, 16))
    assert folders == [real_plan / "data" / "grouped", real_plan / "data" / "corpora/web/grouped"]
    with pytest.raises(FolderError, match=r"no mixture plan at .*; run the 'mix' stage first"):
        read_plan(tmp_path / "mix.json")


def test_the_plan_and_params_share_the_corpus_name_rule():
    from causal_lm_data import plan
    from causal_lm_data.pipeline import params

    assert plan.CORPUS_NAME.pattern == params.CORPUS_NAME.pattern


# 4. A weight change that leaves a corpus out, or adds one, resumes in a new phase.


def next_stream_blocks(plan: Plan, state: dict, seed: int, count: int) -> dict:
    """The documented rule: each corpus' stream continues where it stopped; a corpus new to the plan starts at 0.
    Returns, per corpus of `plan`, its next `count` stream positions as block numbers."""
    old = MixtureOrder(
        Plan(tuple(state["sources"]), tuple(state["blocks"]), tuple(state["quotas"])), state["batch_size"], seed=seed
    )
    old.load_state(state)
    stopped = dict(zip(state["sources"], old.streams(state["epoch"], state["batches"]).tolist()))
    blocks = {}
    for name, size in zip(plan.names, plan.blocks):
        start = stopped.get(name, 0)
        positions = np.arange(start, start + count)
        blocks[name] = [
            int(Permutation(size, source_key(seed, name), int(p // size))(np.array([p % size]))[0]) for p in positions
        ]
    return blocks


@pytest.mark.parametrize(
    "before, after", [({"main": 1, "web": 1}, {"main": 1, "web": 0}), ({"main": 1, "web": 0}, {"main": 1, "web": 1})]
)
def test_resume_after_a_weight_change_that_leaves_out_or_adds_a_corpus(tmp_path, before, after):
    from causal_lm_data import make_dataloader

    work = workdir(tmp_path, {"main": 20, "web": 12})
    mix(work, corpora__web=WEB, mixture__weights=before)
    loader = make_dataloader(work / "data" / "mix.json", batch_size=4, seed=7)
    for number, _ in enumerate(loader):
        if number == 2:
            break
    state = loader.state_dict()
    assert state["batches"] == 3

    mix(work, corpora__web=WEB, mixture__weights=after)
    resumed = make_dataloader(work / "data" / "mix.json", batch_size=4, seed=7)
    resumed.load_state_dict(state)
    plan, _ = read_plan(work / "data" / "mix.json")
    expected = next_stream_blocks(plan, state, seed=7, count=4)
    batch = next(iter(resumed))["input_ids"][:, 0].tolist()
    # The new plan's first batch of the new phase: each corpus' share of it, from where its stream stopped.
    counts = resumed.sampler.schedule.counts(0, 1)[0].tolist()
    want = [1000 * number + block for number, name in enumerate(plan.names) for block in expected[name][: counts[number]]]
    assert batch == want
    assert resumed.state_dict()["phase_epoch"] == state["epoch"]


# 5. A batch larger than a mixture epoch.


def test_a_batch_larger_than_the_mixture_epoch_is_one_line_in_the_check_stage(tmp_path):
    work = workdir(tmp_path, {"main": 40})
    mix(work, mixture__epoch_blocks=10)
    result = stage_in(work, "check", mixture__epoch_blocks=10, loader__batch_size=16, group__block_size=BLOCK)
    one_line_failure(result, "loader.batch_size 16", "10 blocks of one mixture epoch", "lower loader.batch_size to at most 10")
    with pytest.raises(UserError, match="lower batch_size to at most 10"):
        make_numpy_loader(work / "data" / "mix.json", batch_size=16)


# 6. A corpus name DVC cannot address (corpus-download@a@b) is refused by the corpus-name rule on our paths.


@pytest.mark.parametrize("name", ["a@b", "a.b", "-a", "a/b"])
def test_the_mix_stage_refuses_a_corpus_name_dvc_cannot_address(tmp_path, name):
    work = workdir(tmp_path, {"main": 20})
    result = stage_in(work, "mix", **{f"corpora__{name}": WEB}, mixture__weights={"main": 1, name: 1})
    one_line_failure(result, f"corpus name {name!r} must be letters, digits, '-' or '_'")
