"""Stage group: concatenate the tokenized documents in order and cut them into blocks of exactly
group.block_size tokens (only the final remainder is dropped), in the grouped folder.

As dvc.yaml runs it:

    python -m stages.group --params group --input data/tokenized --output data/grouped \
        --metrics metrics/group.json --tokens-plot plots/group_tokens.csv

The work per output shard is causal_lm_data.pipeline.grouped's; what the block folder
holds is specified in causal_lm_data.format.
"""

from pathlib import Path

from causal_lm_data.format import PROVENANCE, read_provenance, split_names
from causal_lm_data.pipeline.command import arguments, run_stage
from causal_lm_data.pipeline.executor import worker_count
from causal_lm_data.pipeline.grouped import group_split
from causal_lm_data.pipeline.params import load_params
from causal_lm_data.pipeline.progress import over_splits
from causal_lm_data.pipeline.writer import replacing, split_metrics, write_csv, write_json, write_split_names


def main() -> None:
    args = arguments(__doc__, "input", "output", "metrics", "tokens-plot")
    params = load_params(args.params)
    worker_count()  # a bad PIPELINE_WORKERS fails now
    block_size, shard_bytes = params["block_size"], params["shard_mb"] << 20
    splits = split_names(args.input, "tokenize")

    with replacing(args.output) as output:
        # A held-out split shorter than one block is kept empty (its tokens counted); the training split may not be.
        results = {
            split: group_split(Path(args.input, split), output / split, block_size, shard_bytes, required=split != "validation")
            for split in splits
        }
        write_split_names(output, splits)
        if provenance := read_provenance(args.input):  # the tokenizer the blocks' ids belong to
            write_json(output / PROVENANCE, provenance)
        counts = split_metrics(results)
        write_json(args.metrics, counts)
        write_csv(args.tokens_plot, ["step", "tokens"], [["kept in blocks", counts["tokens_kept"]]])
    dropped, per_block = f"{counts['tokens_dropped_at_tail']} dropped at the tail", counts["documents_per_block"]
    if validation := counts.get("validation"):  # both splits' figures, the training split's first
        dropped = f"{counts['tokens_dropped_at_tail']} + {validation['tokens_dropped_at_tail']} dropped at the train and validation tails"
        per_block = f"{per_block} and {validation['documents_per_block']}"
    blocks = over_splits(counts, "blocks", "blocks")
    print(f"group: {blocks} of {block_size} tokens -> {args.output} ({dropped}; {per_block} documents per block)")
    if counts.get("validation", {}).get("blocks") == 0:
        print(f"group: warning: the validation split is shorter than one block of {block_size} tokens, so it is empty")


if __name__ == "__main__":
    run_stage(main)
