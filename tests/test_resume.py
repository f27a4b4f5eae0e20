"""Exact mid-epoch resume: a run stopped after batch k and restored in a new process sees what an uninterrupted run would."""

import json
import sys

import numpy as np
import pytest
import torch

from causal_lm_data.loader import BlockBatches, Permutation, make_dataloader
from causal_lm_data.pipeline.grouped import group_split
from tests.helpers import REPO, block_ids, run, write_three_corpora, write_tokenized

BLOCK_SIZE = 16


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """101 blocks of 16 tokens (an odd count: two ranks leave one out) from 160 documents, in 3 shards."""
    folder = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    documents = [rng.integers(0, 1000, size=rng.integers(1, 21)).tolist() for _ in range(160)]
    while sum(map(len, documents)) < 101 * BLOCK_SIZE:
        documents.append(rng.integers(0, 1000, size=10).tolist())
    while sum(map(len, documents)) >= 102 * BLOCK_SIZE:
        documents.pop()
    write_tokenized(folder / "tokenized", documents, [60, 60, len(documents) - 120], batch_rows=9)
    group_split(folder / "tokenized", folder / "grouped", BLOCK_SIZE, shard_bytes=40 * BLOCK_SIZE * 2)
    return folder / "grouped"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 16, 17, 100, 1000, 4097])
def test_the_permutation_is_exact_and_depends_on_seed_and_epoch(size):
    orders = {(seed, epoch): Permutation(size, seed, epoch)(np.arange(size)) for seed in (1, 2) for epoch in (0, 1)}
    for order in orders.values():
        assert sorted(order.tolist()) == list(range(size))
    if size >= 16:
        assert len({tuple(order) for order in orders.values()}) == 4
        assert not np.array_equal(orders[1, 0], np.arange(size))


def test_the_permutation_looks_uniform():
    """Over 2,000 epochs of 10 blocks, each block lands first about 200 times (binomial sd ~13)."""
    firsts = np.bincount([Permutation(10, 42, epoch)(np.array([0]))[0] for epoch in range(2000)], minlength=10)
    assert firsts.min() > 140 and firsts.max() < 260, firsts
    order = Permutation(100_000, 42, 0)(np.arange(100_000))
    assert abs(np.corrcoef(order, np.arange(100_000))[0, 1]) < 0.02  # no trace of the original order


def test_resuming_costs_the_same_at_any_batch():
    sampler = BlockBatches(10_000_000_000 // 128, batch_size=8, seed=1)
    sampler.start_batch = len(sampler) - 1
    (last,) = list(sampler)  # the epoch's final batch, without computing the ones before
    assert len(last) == 8 and ((0 <= last) & (last < sampler.num_blocks)).all()


def test_a_peek_does_not_change_the_epochs_and_epochs_count_completed_passes(grouped):
    fresh = block_ids(make_dataloader(grouped, batch_size=4, seed=3), 26 * 2)
    loader = make_dataloader(grouped, batch_size=4, seed=3)
    next(iter(loader))  # a sanity check before training
    assert loader.state_dict()["epoch"] == 0
    assert block_ids(loader, 26 * 2) == fresh
    assert loader.state_dict()["epoch"] == 2


def test_a_state_from_other_data_or_settings_is_refused(grouped):
    state = make_dataloader(grouped, batch_size=4).state_dict()
    with pytest.raises(ValueError, match=r"saved for other data or settings \(batch_size 4 -> 8\)"):
        make_dataloader(grouped, batch_size=8).load_state_dict(state)


RESUME_SCRIPT = """
import json, sys
from causal_lm_data.loader import make_dataloader
from tests.helpers import block_ids

folder, mode, states, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
saved = json.load(open(states)) if mode == "resume" else {}
out = {}
for k in (0, 1, 7, 25, 26, 33):
    loader = make_dataloader(folder, batch_size=4, seed=3, num_workers=workers)
    if mode == "stop":
        block_ids(loader, k)
        out[k] = loader.state_dict()
    else:
        loader.load_state_dict(saved[str(k)])
        first = block_ids(loader, 10)
        # A second stop and resume inside the same run stays aligned too.
        again = make_dataloader(folder, batch_size=4, seed=3)
        again.load_state_dict(loader.state_dict())
        out[k] = first + block_ids(again, 10)
json.dump(out, open(states if mode == "stop" else states + ".out", "w"))
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_stop_and_resume_in_new_processes_at_several_batches(grouped, tmp_path, workers):
    """26 batches an epoch: k = 25 and 26 stop at an epoch's end, 33 inside the second epoch."""
    script, states = tmp_path / "resume.py", tmp_path / "states.json"
    script.write_text(RESUME_SCRIPT)
    for mode in ("stop", "resume"):
        run([sys.executable, str(script), str(grouped), mode, str(states), str(workers)], cwd=tmp_path, PYTHONPATH=str(REPO))
    resumed = json.loads((tmp_path / "states.json.out").read_text())
    uninterrupted = [[list(row) for row in batch] for batch in block_ids(make_dataloader(grouped, batch_size=4, seed=3), 60)]
    for k, batches in resumed.items():
        assert batches == uninterrupted[int(k) : int(k) + 20], k


def _rank_main(rank, world_size, folder, init_file, results, mode):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        loader = make_dataloader(folder, batch_size=4, seed=5)  # rank and world size from the process group
        state_file = results / f"state{rank}.json"
        if mode == "whole":
            seen = block_ids(loader, 20)
        elif mode == "stop":
            seen = block_ids(loader, 9)
            state_file.write_text(json.dumps(loader.state_dict()))
        else:
            loader.load_state_dict(json.loads(state_file.read_text()))
            seen = block_ids(loader, 11)
        (results / f"{mode}{rank}.json").write_text(json.dumps(seen))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_resume_their_own_shares(grouped, tmp_path):
    """13 batches per rank and epoch: stopping after 9 and resuming for 11 crosses into the second epoch."""
    for mode in ("whole", "stop", "resume"):
        torch.multiprocessing.spawn(_rank_main, args=(2, grouped, tmp_path / f"init-{mode}", tmp_path, mode), nprocs=2)
    for rank in (0, 1):
        whole, stop, resume = (json.loads((tmp_path / f"{mode}{rank}.json").read_text()) for mode in ("whole", "stop", "resume"))
        assert stop + resume == whole
    assert not {tuple(b) for batch in json.loads((tmp_path / "whole0.json").read_text())[:13] for b in batch} & {
        tuple(b) for batch in json.loads((tmp_path / "whole1.json").read_text())[:13] for b in batch
    }


LIGHTNING_SCRIPT = """
import json, os, signal, sys
import lightning as L
import torch
from causal_lm_data.loader import make_dataloader

grouped, log, root, mode = sys.argv[1:5]


class Probe(L.LightningModule):
    # A one-parameter model: the test is about which batches each rank trains on.
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_index):
        with open(f"{log}.{self.global_rank}", "a") as file:
            file.write(json.dumps([self.global_step, batch["input_ids"][:, :4].tolist()]) + "\\n")
        return (self.weight * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return make_dataloader(grouped, batch_size=4, seed=3)


class KillAtStep7(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 7:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as a preempted node


checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=f"{root}/checkpoints", every_n_train_steps=5, save_top_k=-1)
trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", max_steps=20, logger=False, enable_progress_bar=False,
    enable_model_summary=False, default_root_dir=root, callbacks=[checkpoints] + ([KillAtStep7()] if mode == "killed" else []),
)
trainer.fit(Probe(), ckpt_path=f"{root}/checkpoints/epoch=0-step=5.ckpt" if mode == "resumed" else None)
"""


@pytest.mark.parametrize("data", ["folder", "three-corpus recipe"])
def test_lightning_killed_and_resumed_trains_on_the_same_batches(grouped, tmp_path, data):
    """2 DDP processes, 13 (recipe: 11) batches per rank and epoch: killed at step 7, resumed from step 5, run to 20."""
    if data != "folder":
        grouped = write_three_corpora(tmp_path / "corpora")
    script = tmp_path / "train.py"
    script.write_text(LIGHTNING_SCRIPT)
    for mode in ("whole", "killed", "resumed"):
        root = tmp_path / ("whole" if mode == "whole" else "run")
        result = run(
            [sys.executable, str(script), str(grouped), str(tmp_path / mode), str(root), mode],
            cwd=tmp_path,
            check=mode != "killed",
        )
        assert (result.returncode != 0) == (mode == "killed"), result.stderr[-2000:]
    for rank in (0, 1):
        steps = {
            mode: [json.loads(line) for line in (tmp_path / f"{mode}.{rank}").read_text().splitlines()]
            for mode in ("whole", "killed", "resumed")
        }
        assert [step for step, _ in steps["whole"]] == list(range(20))
        assert steps["killed"] == steps["whole"][:7]
        assert steps["resumed"] == steps["whole"][5:]


def test_lightning_resumes_a_checkpoint_saved_after_fit_at_the_next_epoch(grouped, tmp_path):
    """26 batches an epoch, one process: fit(max_steps=5) saves step 5 twice, by ModelCheckpoint and by save_checkpoint.

    ModelCheckpoint's (saved during fit) resumes at batch 5 of epoch 0, exactly. The one
    that save_checkpoint writes after fit returns records the epoch as done, so the
    resumed run starts epoch 1 at its first batch; but Lightning also keeps the
    epoch's batch count (5), numbers the batches from 5 and ends that epoch after 21
    batches: epoch 1's last 5 batches are not trained on, and epoch 2 starts whole.
    """
    import lightning as L

    seen = []

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_index):
            seen.append((self.current_epoch, batch_index, [tuple(row[:4]) for row in batch["input_ids"].tolist()]))
            return (self.weight * batch["input_ids"].float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def train_dataloader(self):
            return make_dataloader(grouped, batch_size=4, seed=3)

    def trainer(max_steps, callbacks=()):
        return L.Trainer(
            accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks), enable_checkpointing=bool(callbacks),
        )  # fmt: skip

    every_5 = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "during", every_n_train_steps=5, save_top_k=-1)
    first = trainer(5, [every_5])
    first.fit(Probe())
    first.save_checkpoint(tmp_path / "after.ckpt")
    order = block_ids(make_dataloader(grouped, batch_size=4, seed=3), 3 * 26)  # epochs 0, 1 and 2
    assert [blocks for _, _, blocks in seen] == order[:5]
    resumed = {}
    for name, checkpoint in (("during", tmp_path / "during" / "epoch=0-step=5.ckpt"), ("after", tmp_path / "after.ckpt")):
        seen.clear()
        trainer(33).fit(Probe(), ckpt_path=checkpoint)  # 28 more steps
        resumed[name] = list(seen)
    during, after = resumed["during"], resumed["after"]
    assert [blocks for _, _, blocks in during] == order[5:33]
    assert [(epoch, index) for epoch, index, _ in during] == [(0, i) for i in range(5, 26)] + [(1, i) for i in range(7)]
    assert [blocks for _, _, blocks in after] == order[26:47] + order[52:59]
    assert [(epoch, index) for epoch, index, _ in after] == [(1, i) for i in range(5, 26)] + [(2, i) for i in range(7)]
