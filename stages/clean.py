"""Stage clean: keep the documents of a raw folder that pass clean.*; name every one dropped, and why.

    python -m stages.clean --params clean --input data/raw --output data/clean \
        --dropped data/dropped --metrics metrics/clean.json --plot plots/clean_drops.csv

The output is a raw folder, shard for shard (an untouched shard is the same file,
hard-linked), so with every step off data/clean is data/raw. data/dropped lists each
dropped document (split, shard, row, reason, and the document it duplicates). The
decisions are causal_lm_data.pipeline.clean's.
"""

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from causal_lm_data.errors import UserError
from causal_lm_data.format import split_names
from causal_lm_data.pipeline.clean import (
    CODE,
    KEPT,
    REASONS,
    config_of,
    contaminant_hashes,
    decide,
    held_out_texts,
    judge_split,
    write_split,
)
from causal_lm_data.pipeline.command import arguments, run_stage
from causal_lm_data.pipeline.executor import worker_count
from causal_lm_data.pipeline.params import load_params
from causal_lm_data.pipeline.progress import over_splits
from causal_lm_data.pipeline.raw import SCHEMA
from causal_lm_data.pipeline.writer import replacing, split_metrics, write_csv, write_dataset, write_json, write_split_names

DROPPED_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("shard", pa.int32()),
        ("row", pa.int64()),
        ("reason", pa.string()),
        # the document it duplicates (near or exact duplicates), else -1 and ""
        ("duplicate_split", pa.string()),
        ("duplicate_shard", pa.int32()),
        ("duplicate_row", pa.int64()),
    ]
)


def main() -> None:
    args = arguments(__doc__, "input", "output", "dropped", "metrics", "plot")
    params = load_params(args.params)
    config = config_of(params, args.params)
    worker_count()  # a bad PIPELINE_WORKERS fails now
    contaminants = None
    if params["decontaminate"]:
        texts = held_out_texts(Path(params["decontaminate_path"]), params["decontaminate_text_column"], args.params)
        contaminants = contaminant_hashes(texts, params["decontaminate_ngram"])
        if not len(contaminants):
            raise UserError(
                f"the held-out texts at '{args.params}.decontaminate_path' have no {params['decontaminate_ngram']}-word "
                f"n-gram; lower {args.params}.decontaminate_ngram or point it at other texts"
            )
    splits = split_names(args.input, "download")
    # Validation first: of a document in both splits, the training copy goes.
    ordered = sorted(splits, key=lambda split: split != "validation")

    with (
        replacing(args.output, args.dropped) as (output, dropped),
        tempfile.TemporaryDirectory(dir=Path(args.output).parent, prefix=".clean-scratch-") as scratch,
    ):
        scratch = Path(scratch)
        held_out_file = None
        if contaminants is not None:
            held_out_file = str(scratch / "held-out.npy")
            np.save(held_out_file, contaminants)
        judged, shards_of, band_files = [], {}, []
        for split in ordered:
            found, results, bands = judge_split(
                Path(args.input, split), split != "validation", config, held_out_file, scratch, split or "all"
            )
            shards_of[split] = found
            judged.extend(results)
            band_files.extend(bands)
        places = Places([(split, shard.rows) for split in ordered for shard in shards_of[split]])

        def text_at(position: int) -> str:
            split, index, row = places[position]
            shard = shards_of[split][index]
            for batch in shard.batches(verify=False):
                if row < batch.num_rows:
                    return batch.column("text")[row].as_py()
                row -= batch.num_rows
            raise IndexError(position)

        reasons, duplicate_of = decide(judged, band_files, config, text_at)
        characters = np.concatenate([result["characters"] for result in judged])
        counts, start = {}, 0
        for split in ordered:
            size = sum(shard.rows for shard in shards_of[split])
            split_reasons = reasons[start : start + size]
            write_split(Path(args.input, split).resolve(), output / split, split_reasons == KEPT, SCHEMA)
            counts[split] = split_counts(split_reasons, characters[start : start + size])
            start += size
        write_split_names(output, splits)
        write_dataset(dropped, DROPPED_SCHEMA, dropped_batches(reasons, duplicate_of, places))
        counts = split_metrics({split: counts[split] for split in splits})
        write_json(args.metrics, counts)
        write_csv(args.plot, ["reason", "split", "documents"], plot_rows(counts))
    kept = over_splits(counts, "documents", "documents kept")
    dropped_count = sum(counts["dropped"].values()) + sum(counts.get("validation", {}).get("dropped", {}).values())
    print(f"clean: {kept}, {dropped_count:,} dropped -> {args.output}")


class Places:
    """Where the document at a position (in decision order) is: its split, shard number and row."""

    def __init__(self, shard_rows: list[tuple[str, int]]):
        self.splits = [split for split, _ in shard_rows]
        # a shard's number within its split (the splits' shards come one split after another)
        self.numbers = [self.splits[:position].count(split) for position, split in enumerate(self.splits)]
        self.starts = np.cumsum([0] + [rows for _, rows in shard_rows])

    def __getitem__(self, position: int) -> tuple[str, int, int]:
        shard = int(np.searchsorted(self.starts, position, side="right")) - 1
        return self.splits[shard], self.numbers[shard], int(position - self.starts[shard])


def split_counts(reasons: np.ndarray, characters: np.ndarray) -> dict:
    """Documents and characters read and kept, and the documents dropped per reason (every reason, 0 included)."""
    kept = reasons == KEPT
    return {
        "documents_read": len(reasons),
        "characters_read": int(characters.sum()),
        "documents": int(kept.sum()),
        "characters": int(characters[kept].sum()),
        "dropped": {name: int((reasons == CODE[name]).sum()) for name in REASONS[1:]},
        "characters_dropped": {name: int(characters[reasons == CODE[name]].sum()) for name in REASONS[1:]},
    }


def dropped_batches(reasons: np.ndarray, duplicate_of: np.ndarray, places: list) -> list[pa.RecordBatch]:
    rows = np.flatnonzero(reasons != KEPT)
    columns = {name: [] for name in DROPPED_SCHEMA.names}
    for position in rows:
        split, shard, row = places[position]
        other = duplicate_of[position]
        other_split, other_shard, other_row = places[other] if other >= 0 else ("", -1, -1)
        values = (split, shard, row, REASONS[reasons[position]], other_split, other_shard, other_row)
        for name, value in zip(DROPPED_SCHEMA.names, values):
            columns[name].append(value)
    return [
        pa.record_batch(
            [pa.array(columns[name], type=DROPPED_SCHEMA.field(name).type) for name in DROPPED_SCHEMA.names],
            schema=DROPPED_SCHEMA,
        )
    ]


def plot_rows(counts: dict) -> list[tuple[str, str, int]]:
    splits = [("train", counts)] + ([("validation", counts["validation"])] if "validation" in counts else [])
    return [(reason, split, values["dropped"][reason]) for split, values in splits for reason in REASONS[1:]]


if __name__ == "__main__":
    run_stage(main)
