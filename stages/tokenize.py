"""Stage tokenize: encode every document of the raw folder into token ids with the tokenizer params.yaml
names, in the tokenized folder.

As dvc.yaml runs it:

    python -m stages.tokenize --params tokenize --input data/raw --output data/tokenized \
        --metrics metrics/tokenize.json --lengths-plot plots/document_lengths.csv --tokens-plot plots/tokenize_tokens.csv

The work per shard is causal_lm_data.pipeline.tokenized's; the tokenizer is
causal_lm_data.tokenizer's. Metrics and plots describe the training split; a
validation split's counts sit beside them.
"""

from pathlib import Path

from causal_lm_data.format import PROVENANCE, shards, split_names
from causal_lm_data.pipeline.command import arguments, run_stage
from causal_lm_data.pipeline.executor import worker_count
from causal_lm_data.pipeline.params import load_params
from causal_lm_data.pipeline.progress import Progress, over_splits
from causal_lm_data.pipeline.tokenized import first_documents, kept_rows, length_rows, pinned_encoder, tokenize_split
from causal_lm_data.pipeline.writer import replacing, split_metrics, write_csv, write_json, write_split_names
from causal_lm_data.tokenizer import NO_PROOF_CACHE


def main() -> None:
    args = arguments(__doc__, "input", "output", "metrics", "lengths-plot", "tokens-plot")
    params = load_params(args.params)
    worker_count()  # a bad PIPELINE_WORKERS fails now, not after the tokenizer loads
    encoder, about = pinned_encoder(params, args.params, sample=first_documents(args.input))
    if encoder.fallback:
        print(f"tokenize: encoding with transformers, the exact path ({encoder.fallback})")
    if encoder.proof_reused:
        print(f"tokenize: fastokens' exactness proof reused from {encoder.proof_reused} ({NO_PROOF_CACHE}=1 proves it again)")
    splits = split_names(args.input, "clean")
    progress = Progress("tokenize", total=sum(s.rows for split in splits for s in shards(Path(args.input, split), "clean")))

    with replacing(args.output) as output:
        results = {split: tokenize_split(Path(args.input, split), output / split, encoder, params, progress) for split in splits}
        write_split_names(output, splits)
        provenance = {key: about[key] for key in ("tokenizer", "tokenizer_sha256")}
        write_json(output / PROVENANCE, {**provenance, "add_bos": params["add_bos"], "add_eos": params["add_eos"]})
        progress.close()
        # Inside `replacing`: if the metrics cannot be written, no new output appears either.
        counts = split_metrics({split: result["counts"] for split, result in results.items()})
        write_json(args.metrics, {**counts, **about})
        write_csv(args.lengths_plot, ["tokens", "documents", "documents_after_truncation"], length_rows(results[splits[0]]))
        write_csv(args.tokens_plot, ["step", "tokens"], kept_rows(counts, params))
    documents, tokens = over_splits(counts, "documents", "documents"), over_splits(counts, "tokens", "tokens")
    print(f"tokenize: {documents} -> {tokens} in {args.output} ({encoder.engine})")


if __name__ == "__main__":
    run_stage(main)
