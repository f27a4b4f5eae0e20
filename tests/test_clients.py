"""Real training clients get exactly the data, once: Lightning (2 processes), HF Trainer, plain scripts."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from causal_lm_data.loader import DEFAULT_PATH, Blocks, make_dataloader
from tests.helpers import ENV, run

EOS = 50256


def digest(rows) -> list[str]:
    return [hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=8).hexdigest() for row in rows]


LIGHTNING_SCRIPT = """
import json, sys
import lightning as L
import torch
from causal_lm_data.loader import make_dataloader

grouped, out = sys.argv[1], sys.argv[2]


class Probe(L.LightningModule):
    # A one-parameter model: the test is about which batches each rank trains on.
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_index):
        self.seen.append(batch["input_ids"].numpy().tolist())
        return (self.weight * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_train_epoch_end(self):
        with open(f"{out}.{self.global_rank}.{self.current_epoch}.json", "w") as file:
            json.dump(self.seen, file)
        self.seen = []


class Blocks(L.LightningDataModule):
    def train_dataloader(self):
        return make_dataloader(grouped, batch_size=8, shuffle=True, seed=42)


trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False, default_root_dir=sys.argv[3],
)
trainer.fit(Probe(), datamodule=Blocks())
"""


def test_lightning_ddp_with_defaults_serves_each_block_once_per_epoch(built_repo, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(LIGHTNING_SCRIPT)
    grouped = built_repo / "data" / "grouped"
    run([sys.executable, str(script), str(grouped), str(tmp_path / "seen"), str(tmp_path)], cwd=tmp_path)
    everything = Blocks(grouped)
    all_blocks = digest(everything.batch(np.arange(len(everything)))["input_ids"].numpy().astype(np.uint16))
    assert len(all_blocks) == 18_111
    for epoch in (0, 1):
        shares = []
        for rank in (0, 1):
            batches = json.loads((tmp_path / f"seen.{rank}.{epoch}.json").read_text())
            assert len(batches) == 1_132  # ceil(9,055 / 8): the rank's whole share, not half of it
            shares.append([row for batch in batches for row in digest(np.asarray(batch, dtype=np.uint16))])
        assert len(shares[0]) == len(shares[1]) == 18_111 // 2
        # Disjoint, and together every block once except the one the equal shares leave out.
        together = Counter(shares[0]) + Counter(shares[1])
        left_out = Counter(all_blocks) - together
        assert together + left_out == Counter(all_blocks) and left_out.total() == 1  # 18,111 is odd
        assert not set(shares[0]) & set(shares[1]) - {row for row, n in Counter(all_blocks).items() if n > 1}
    epochs = [json.loads((tmp_path / f"seen.0.{epoch}.json").read_text())[0] for epoch in (0, 1)]
    assert epochs[0] != epochs[1]  # Lightning's set_epoch gives each epoch its own order


TRAINER_SCRIPT = """
import json, sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from causal_lm_data.loader import Blocks

# The README's recipe: the Blocks dataset and Trainer's default collator.
model = GPT2LMHeadModel(GPT2Config(vocab_size=50_257, n_positions=128, n_embd=16, n_layer=1, n_head=2))
seen = []
model.register_forward_pre_hook(
    lambda module, args, kwargs: seen.append((kwargs["input_ids"].tolist(), kwargs["labels"].tolist())),
    with_kwargs=True,
)
args = TrainingArguments(
    output_dir=sys.argv[2], max_steps=6, per_device_train_batch_size=8, report_to=[], save_strategy="no",
    use_cpu=True, seed=1, logging_strategy="no", disable_tqdm=True,
)
# With a validation split, Blocks(path) is the training split and split="validation" the held-out one.
trainer = Trainer(
    model=model, args=args, train_dataset=Blocks(sys.argv[1]), eval_dataset=Blocks(sys.argv[1], split="validation")
)
trainer.train()
trained = len(seen)
evaluation = trainer.evaluate()
json.dump({"seen": seen[:trained], "evaluated": len(seen) - trained, "eval_loss": evaluation["eval_loss"]}, open(sys.argv[3], "w"))
"""


def test_hf_trainer_recipe_keeps_every_end_of_text_label_and_evaluates_the_validation_split(repo, tmp_path):
    run(["dvc", "exp", "run", "-S", "tokenize.add_eos=true", "-S", "download.validation_size=0.02"], cwd=repo)
    script = tmp_path / "train.py"
    script.write_text(TRAINER_SCRIPT)
    run(
        [sys.executable, str(script), str(repo / "data" / "grouped"), str(tmp_path / "out"), str(tmp_path / "seen.json")],
        cwd=tmp_path,
    )
    result = json.loads((tmp_path / "seen.json").read_text())
    seen = result["seen"]
    assert len(seen) == 6
    validation_blocks = len(Blocks(repo / "data" / "grouped", split="validation"))
    assert validation_blocks > 0 and result["evaluated"] == -(-validation_blocks // 8) and result["eval_loss"] > 0
    eos_positions = 0
    for input_ids, labels in seen:
        input_ids, labels = np.asarray(input_ids), np.asarray(labels)
        assert input_ids.shape == (8, 128)
        assert (labels == input_ids).all()  # so labels are 50256 wherever the input is 50256
        eos_positions += int((input_ids == EOS).sum())
    assert eos_positions > 20

    # The trap the README steers around: the usual collator masks them all (pad = EOS).
    from transformers import DataCollatorForLanguageModeling

    from causal_lm_data.tokenizer import load_tokenizer

    masked = DataCollatorForLanguageModeling(load_tokenizer("distilgpt2"), mlm=False)([{"input_ids": seen[0][0][0]}])
    assert (masked["labels"][masked["input_ids"] == EOS] == -100).all()


def test_training_code_outside_the_repository_imports_the_loader(built_repo, tmp_path):
    env = {key: value for key, value in ENV.items() if key != "PYTHONPATH"}
    code = (
        "import causal_lm_data.loader as l; from causal_lm_data.loader import make_dataloader;"
        f"print(l.DEFAULT_PATH); print(tuple(next(iter(make_dataloader({str(built_repo / 'data/grouped')!r})))['input_ids'].shape))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    default, shape = result.stdout.splitlines()
    # The default is the current directory's data/grouped (training code runs in its repository), never the package's.
    assert default == "data/grouped" == str(DEFAULT_PATH) and shape == "(8, 128)"


def bytes_read_at_worker_start(worker_id) -> None:
    """worker_init_fn: how many bytes this worker read (read(2), not memory-mapped) before its first batch."""
    counters = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    with open(os.environ["WORKER_READS"], "a") as file:
        file.write(f"{counters['rchar']}\n")


def test_worker_processes_start_without_reading_the_data(tmp_path, monkeypatch):
    """Workers (spawned, as on macOS and Python 3.14's Linux default) map the data; only the parent hashes it."""
    import pyarrow as pa

    from causal_lm_data.pipeline.writer import write_dataset

    block_size, blocks = 1024, 64 * 1024  # 128 MiB of uint16, far more than a worker's imports read
    schema = pa.schema([("input_ids", pa.list_(pa.uint16(), block_size))])
    values = pa.array(np.arange(block_size * blocks, dtype=np.uint16))
    write_dataset(
        tmp_path / "grouped", schema, [pa.record_batch([pa.FixedSizeListArray.from_arrays(values, block_size)], schema=schema)]
    )
    monkeypatch.setenv("WORKER_READS", str(tmp_path / "reads"))
    loader = make_dataloader(
        tmp_path / "grouped",
        batch_size=8,
        num_workers=2,
        multiprocessing_context="spawn",
        worker_init_fn=bytes_read_at_worker_start,
    )
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (8, block_size)
    reads = [int(line) for line in (tmp_path / "reads").read_text().split()]
    data_bytes = (tmp_path / "grouped" / "data-00000-of-00001.arrow").stat().st_size
    assert len(reads) == 2 and all(read < data_bytes / 2 for read in reads), (reads, data_bytes)


@pytest.mark.parametrize(
    "folder, message",
    [
        ("raw", r"holds text: string, not the fixed-length 'input_ids' blocks the 'group' stage writes"),
        ("tokenized", r"holds input_ids: list<item: uint16>, not the fixed-length 'input_ids' blocks"),
        ("", r"is not a dataset folder \(no state.json\)"),
        ("nothing-here", r"does not exist; run the 'group' stage first"),
    ],
)
def test_a_wrong_folder_is_one_line_naming_what_was_expected(built_repo, folder, message):
    with pytest.raises(ValueError, match=message) as error:
        make_dataloader(built_repo / "data" / folder)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_a_bad_batch_size_is_one_line(built_repo, batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be a whole number >= 1, got {batch_size!r}"):
        make_dataloader(built_repo / "data" / "grouped", batch_size=batch_size)


def test_the_example_training_script_learns_from_the_blocks(built_repo):
    """examples/train.py (the README's teammate runs it after `dvc pull`): a toy GPT-2's loss falls from ln(50,257)."""
    result = run([sys.executable, "examples/train.py", "--steps", "30"], cwd=built_repo)
    losses = {
        int(step): float(loss)
        for step, loss in (line.removeprefix("step ").split(": loss ") for line in result.stdout.splitlines())
    }
    assert sorted(losses) == [1, 30]
    assert abs(losses[1] - np.log(50257)) < 0.2  # an untrained model guesses uniformly
    assert losses[30] < losses[1] - 2.0
