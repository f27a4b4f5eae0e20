"""This repository as a data registry: another project imports a tagged revision of data/grouped and trains on it."""

import sys

from tests.helpers import run

TRAIN = """
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
from causal_lm_data.loader import make_dataloader

torch.manual_seed(0)
loader = make_dataloader(sys.argv[1], batch_size=4, seed=1)
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=128))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
losses = []
for step, batch in zip(range(8), loader):
    loss = model(**batch).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad()
    losses.append(loss.item())
print(batch["input_ids"].shape[1], losses[0], losses[-1])
"""


def test_a_consumer_imports_a_tagged_revision_trains_and_updates(repo, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "team", str(remote)], cwd=repo)
    run(["git", "add", ".dvc/config"], cwd=repo)
    run(["git", "commit", "-qm", "add the team's DVC remote"], cwd=repo)
    run(["dvc", "push"], cwd=repo)
    run(["git", "tag", "v1"], cwd=repo)
    # A newer revision of the registry: blocks of 64 tokens.
    run(["dvc", "exp", "run", "-S", "group.block_size=64"], cwd=repo)
    run(["git", "add", "params.yaml", "dvc.lock", "metrics", "plots"], cwd=repo)
    run(["git", "commit", "-qm", "blocks of 64"], cwd=repo)
    run(["dvc", "push"], cwd=repo)
    run(["git", "tag", "v2"], cwd=repo)

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    run(["git", "init", "-q"], cwd=consumer)
    run(["dvc", "init", "-q"], cwd=consumer)
    run(["dvc", "import", str(repo), "data/grouped", "-o", "grouped", "--rev", "v1"], cwd=consumer)
    (consumer / "train.py").write_text(TRAIN)
    trained = run([sys.executable, "train.py", "grouped"], cwd=consumer).stdout.split()
    assert trained[0] == "128" and float(trained[2]) < float(trained[1])
    assert "rev: v1" in (consumer / "grouped.dvc").read_text()

    run(["dvc", "update", "--rev", "v2", "grouped.dvc"], cwd=consumer)
    assert "rev: v2" in (consumer / "grouped.dvc").read_text()
    assert run([sys.executable, "train.py", "grouped"], cwd=consumer).stdout.split()[0] == "64"
    # The registry's revisions stay readable without importing: DVCFileSystem reads them lazily.
    read = (
        "from dvc.api import DVCFileSystem; import json, sys;"
        "fs = DVCFileSystem(sys.argv[1], rev='v1');"
        "print(json.loads(fs.read_text('metrics/group.json'))['blocks'])"
    )
    assert run([sys.executable, "-c", read, str(repo)], cwd=consumer).stdout.strip() == "18111"
