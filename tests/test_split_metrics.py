"""Every stage's metrics and line, with and without a validation split: one meaning per metric name, sums that add up.

A count at the top of a metrics file is the training split's (what the loader and
the mix serve by default); a held-out split's sits under `validation` with the same
name; counts of documents in no split (empty_documents_skipped) are the corpus'.
Each is compared with the data folders themselves, and every stage line counts
both splits.
"""

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from causal_lm_data.format import read_table, split_folder
from tests.helpers import local, metrics, stage_in

BLOCK_SIZE, BATCH_SIZE = 16, 8
EMPTY = 10  # every 50th of the 500 rows is an empty document


def write_corpus(path):
    rng = np.random.default_rng(0)
    words = "the state of the union is strong and our people are at work on new roads schools and farms".split()
    rows = ["" if i % 50 == 0 else f"Paragraph {i}: " + " ".join(rng.choice(words, rng.integers(3, 60))) for i in range(500)]
    path.write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))


def build(workdir, validation_size) -> dict:
    """Run download, tokenize, group, mix and check in workdir; return each stage's output lines."""
    write_corpus(workdir / "corpus.jsonl")
    changes = {**local(workdir / "corpus.jsonl"), "download__validation_size": validation_size, "group__block_size": BLOCK_SIZE}
    lines = {}
    for stage in ("download", "tokenize", "group", "mix", "check"):
        result = stage_in(workdir, stage, **changes)
        assert result.returncode == 0, result.stderr
        # The counting lines; tokenize's note that it reused a proof (a cache of this test session) is not one.
        lines[stage] = [line for line in result.stdout.splitlines() if "exactness proof reused" not in line]
    return lines


def of_split(counts: dict, split: str) -> dict:
    return counts if split == "train" else counts["validation"]


def over_splits(counts: dict, key: str, unit: str) -> str:
    """What a line with (or without) a held-out split says of `key`, from the metrics."""
    if "validation" not in counts:
        return f"{counts[key]:,} {unit}"
    train, validation = counts[key], counts["validation"][key]
    return f"{train + validation:,} {unit} ({train:,} train + {validation:,} validation)"


@pytest.mark.parametrize("validation_size", [0, 0.1])
def test_each_metric_counts_one_split_and_the_sums_add_up(tmp_path, validation_size):
    lines = build(tmp_path, validation_size)
    download, tokenize, group, mix, check = (metrics(tmp_path, s) for s in ("download", "tokenize", "group", "mix", "check"))
    splits = ["train", "validation"] if validation_size else ["train"]
    if validation_size:  # the held-out split's counts carry the training split's names
        assert set(download["validation"]) == {"documents", "characters"}
        assert all(set(counts["validation"]) < set(counts) for counts in (download, tokenize, group))
    else:
        assert not any("validation" in counts for counts in (download, tokenize, group, check))

    for split in splits:
        texts = read_table(split_folder(tmp_path / "data" / "raw", split, "download"), "download").column("text")
        ids = read_table(split_folder(tmp_path / "data" / "tokenized", split, "tokenize"), "tokenize").column("input_ids")
        blocks = read_table(split_folder(tmp_path / "data" / "grouped", split, "group"), "group").num_rows
        # The same name, the same split: what the split's folder holds.
        assert of_split(download, split)["documents"] == len(texts) == of_split(tokenize, split)["documents"] == len(ids)
        assert of_split(download, split)["characters"] == pc.sum(pc.utf8_length(texts)).as_py()
        assert of_split(tokenize, split)["tokens"] == pc.sum(pc.list_value_length(ids)).as_py()
        assert of_split(group, split)["blocks"] == blocks
        assert of_split(group, split)["tokens_kept"] == blocks * BLOCK_SIZE
        assert (
            of_split(group, split)["tokens_kept"] + of_split(group, split)["tokens_dropped_at_tail"]
            == of_split(tokenize, split)["tokens"]
        )
    # Every row of the corpus is in one split or counted as skipped.
    assert sum(of_split(download, split)["documents"] for split in splits) + download["empty_documents_skipped"] == 500
    assert download["empty_documents_skipped"] == EMPTY
    # The mix and check count training blocks and batches, and check the held-out ones beside them.
    assert mix["epoch_blocks"] == mix["corpora"]["main"]["blocks_per_epoch"] == group["blocks"]
    # The folder's loader ends on a partial batch; the plan's mixture epoch is whole global batches.
    assert check["batches"] == -(-group["blocks"] // BATCH_SIZE)
    assert check["mixture_batches"] == group["blocks"] // BATCH_SIZE
    if validation_size:
        assert download["validation"]["documents"] == round(490 * validation_size)
        assert check["validation_batches"] == -(-group["validation"]["blocks"] // BATCH_SIZE)

    # Each line counts everything its stage wrote, each split's part beside the total.
    characters = download["characters"] + download.get("validation", {}).get("characters", 0)
    assert lines["download"] == [
        f"download: {over_splits(download, 'documents', 'documents')}, {characters:,} characters -> data/raw"
    ]
    documents, tokens = over_splits(tokenize, "documents", "documents"), over_splits(tokenize, "tokens", "tokens")
    assert lines["tokenize"] == [f"tokenize: {documents} -> {tokens} in data/tokenized (fastokens)"]
    tails = [str(of_split(group, split)["tokens_dropped_at_tail"]) for split in splits]
    per_block = [str(of_split(group, split)["documents_per_block"]) for split in splits]
    dropped = " + ".join(tails) + (" dropped at the train and validation tails" if validation_size else " dropped at the tail")
    assert lines["group"] == [
        f"group: {over_splits(group, 'blocks', 'blocks')} of {BLOCK_SIZE} tokens -> data/grouped "
        f"({dropped}; {' and '.join(per_block)} documents per block)"
    ]
    held_out = f" (+ {check['validation_batches']:,} validation batches)" if validation_size else ""
    assert lines["check"] == [
        f"check: input_ids and labels are int64 ({BATCH_SIZE}, {BLOCK_SIZE}); {check['batches']:,} batches per epoch{held_out}"
    ]
