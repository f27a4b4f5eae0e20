"""Document-aware packing: position_ids restart at each document, nothing is predicted across a boundary."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from causal_lm_data.loader import IGNORE_INDEX, Blocks, make_dataloader
from causal_lm_data.pipeline.grouped import group_split
from tests.helpers import write_tokenized

BLOCK_SIZE = 32
VOCAB = 1000


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """About 250 blocks of 32 tokens from 200 documents of 0 to 80 tokens, in 7 shards of 40 blocks, and the documents."""
    folder = tmp_path_factory.mktemp("packing")
    rng = np.random.default_rng(7)
    documents = [rng.integers(0, VOCAB, size=rng.integers(1, 81)).tolist() for _ in range(200)]
    documents[3] = []  # an empty document starts nowhere
    write_tokenized(folder / "tokenized", documents, [120, 80], batch_rows=11)
    group_split(folder / "tokenized", folder / "grouped", BLOCK_SIZE, shard_bytes=40 * BLOCK_SIZE * 2)
    return folder / "grouped", documents


def reference(documents, block_size):
    """Per token of the concatenated stream: its id, its position in its document, and whether it starts one."""
    ids = np.array([t for d in documents for t in d])
    position = np.concatenate([np.arange(len(d)) for d in documents if d])
    usable = len(ids) // block_size * block_size
    shape = (-1, block_size)
    return ids[:usable].reshape(shape), position[:usable].reshape(shape), (position[:usable] == 0).reshape(shape)


def test_position_ids_restart_at_every_document_start(packed):
    folder, documents = packed
    ids, position, starts = reference(documents, BLOCK_SIZE)
    blocks = Blocks(folder, position_ids=True)
    assert len(blocks.shards) == 7 and len(blocks) == len(ids)
    batch = blocks.batch(np.arange(len(blocks)))
    assert batch["input_ids"].tolist() == ids.tolist()
    # Inside a block a position counts from its document's start, or from the block's start for a
    # document that began in an earlier block.
    expected_positions = np.minimum(position, np.arange(BLOCK_SIZE))
    assert batch["position_ids"].dtype == torch.int64 and batch["position_ids"].tolist() == expected_positions.tolist()
    assert batch["labels"].tolist() == np.where(starts, IGNORE_INDEX, ids).tolist()


def test_a_shuffled_loader_with_position_ids_serves_the_same_blocks(packed):
    folder, documents = packed
    plain = next(iter(make_dataloader(folder, batch_size=8, seed=1)))
    packed_batch = next(iter(make_dataloader(folder, batch_size=8, seed=1, position_ids=True)))
    assert set(plain) == {"input_ids", "labels"} and torch.equal(plain["labels"], plain["input_ids"])  # Lab1's batches
    assert torch.equal(packed_batch["input_ids"], plain["input_ids"])
    assert packed_batch["position_ids"].shape == plain["input_ids"].shape


def fragments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each document fragment of one block, from where its positions restart."""
    starts = [0] + [t for t in range(1, len(position_ids)) if position_ids[t] == 0]
    return list(zip(starts, starts[1:] + [len(position_ids)]))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_llama_sees_each_document_on_its_own(packed, attention):
    """Packed logits equal each fragment run alone; the loss is the per-fragment losses over predicted tokens."""
    folder, _ = packed
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=BLOCK_SIZE,
        attn_implementation=attention,
    )
    model = LlamaForCausalLM(config).eval()
    batch = next(iter(make_dataloader(folder, batch_size=6, seed=3, position_ids=True)))
    with torch.no_grad():
        packed_output = model(**batch, use_cache=False)  # attention_mask None: transformers reads the packing from position_ids
        total, predicted, pieces = 0.0, 0, 0
        for row in range(len(batch["input_ids"])):
            for start, end in fragments(batch["position_ids"][row]):
                alone = model(input_ids=batch["input_ids"][row : row + 1, start:end], use_cache=False).logits[0]
                torch.testing.assert_close(packed_output.logits[row, start:end], alone, atol=1e-4, rtol=1e-4)
                if end - start > 1:
                    total += F.cross_entropy(alone[:-1], batch["input_ids"][row, start + 1 : end], reduction="sum").item()
                    predicted += end - start - 1
                pieces += 1
    assert pieces > len(batch["input_ids"])  # the batch really packs several documents per block
    assert packed_output.loss.item() == pytest.approx(total / predicted, rel=1e-5)


def test_position_ids_need_a_folder_with_document_starts(tmp_path):
    import pyarrow as pa

    from causal_lm_data.pipeline.writer import write_dataset

    schema = pa.schema([("input_ids", pa.list_(pa.uint16(), 4))])
    write_dataset(
        tmp_path / "old",
        schema,
        [pa.record_batch([pa.FixedSizeListArray.from_arrays(pa.array(np.arange(8, dtype=np.uint16)), 4)], schema=schema)],
    )
    assert len(make_dataloader(tmp_path / "old")) == 1  # Lab1 batches still work
    with pytest.raises(ValueError, match=r"records no document starts .* rebuild it with the group stage"):
        make_dataloader(tmp_path / "old", position_ids=True)


TRAINER_SCRIPT = """
import json, sys
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
from causal_lm_data.loader import Blocks

# The README's recipe: Blocks(..., position_ids=True), Trainer's default collator, use_cache off.
config = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, max_position_embeddings=32, use_cache=False)
model = LlamaForCausalLM(config)
seen = []
model.register_forward_pre_hook(
    lambda module, args, kwargs: seen.append({key: kwargs[key].tolist() for key in ("input_ids", "labels", "position_ids")}),
    with_kwargs=True,
)
args = TrainingArguments(
    output_dir=sys.argv[2], max_steps=3, per_device_train_batch_size=4, report_to=[], save_strategy="no",
    use_cpu=True, seed=1, logging_strategy="no", disable_tqdm=True,
)
Trainer(model=model, args=args, train_dataset=Blocks(sys.argv[1], position_ids=True)).train()
json.dump(seen, open(sys.argv[3], "w"))
"""


def test_hf_trainer_recipe_passes_position_ids_and_masked_labels(packed, tmp_path):
    import json
    import sys

    from tests.helpers import REPO, run

    folder, _ = packed
    script = tmp_path / "train.py"
    script.write_text(TRAINER_SCRIPT)
    run(
        [sys.executable, str(script), str(folder), str(tmp_path / "out"), str(tmp_path / "seen.json")],
        cwd=tmp_path,
        PYTHONPATH=str(REPO),
    )
    seen = json.loads((tmp_path / "seen.json").read_text())
    everything = Blocks(folder, position_ids=True).batch(np.arange(len(Blocks(folder))))
    expected = {
        tuple(ids): (positions, labels)
        for ids, positions, labels in zip(
            everything["input_ids"].tolist(), everything["position_ids"].tolist(), everything["labels"].tolist()
        )
    }
    assert len(seen) == 3
    for batch in seen:
        for ids, positions, labels in zip(batch["input_ids"], batch["position_ids"], batch["labels"]):
            assert (positions, labels) == expected[tuple(ids)]
    assert any(IGNORE_INDEX in labels for batch in seen for labels in batch["labels"])
