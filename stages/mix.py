"""Stage mix: turn mixture.weights into the recipe's plan, whole blocks per corpus per mixture epoch, which the
loader serves.

As dvc.yaml runs it:

    python -m stages.mix --params mixture --main data/grouped --corpora data/corpora \
        --plan data/mix.json --metrics metrics/mix.json --plot plots/mix.csv

The main corpus is `download`'s (named `main` in mixture.weights); every other
corpus of params.yaml's `corpora` was grouped into CORPORA/NAME/grouped by its own
stages. The plan (causal_lm_data.mixture.plan_mixture) is what the loader serves;
the metrics and the plot show each corpus' target share, achieved share and passes,
so `dvc metrics diff` shows what a weight change did. Reads only the folders'
indexes, never their data.
"""

import os
from pathlib import Path

from causal_lm_data.build.command import arguments, run_stage
from causal_lm_data.build.params import MAIN_CORPUS, load_params
from causal_lm_data.build.writer import write_csv, write_json
from causal_lm_data.errors import UserError
from causal_lm_data.format import read_provenance, read_schema, shards, split_folder
from causal_lm_data.plan import plan_mixture


def corpus_facts(name: str, folder: Path) -> dict:
    """A grouped corpus' training blocks, block size and tokenizer, from its index and provenance."""
    train = split_folder(folder, "train", "group")
    stage = "group" if name == MAIN_CORPUS else "corpus-group"
    return {
        "blocks": sum(shard.rows for shard in shards(train, stage)),
        "block_size": read_schema(train, stage).field("input_ids").type.list_size,
        "tokenizer_sha256": read_provenance(folder).get("tokenizer_sha256"),
    }


def main() -> None:
    args = arguments(__doc__, "main", "corpora", "plan", "metrics", "plot")
    params = load_params(args.params)
    folders = {MAIN_CORPUS: Path(args.main)} | {name: Path(args.corpora, name, "grouped") for name in load_params("corpora")}
    facts = {name: corpus_facts(name, folder) for name, folder in folders.items()}
    for key in ("block_size", "tokenizer_sha256"):
        values = {name: fact[key] for name, fact in facts.items()}
        if len(set(values.values())) > 1:
            described = ", ".join(f"{name}: {value}" for name, value in values.items())
            raise UserError(
                f"the corpora differ in {key} ({described}); every corpus of a recipe shares the tokenize and group settings"
            )

    plan, left_out = plan_mixture(
        {name: fact["blocks"] for name, fact in facts.items()},
        params["weights"],
        params["max_repetition"],
        params["epoch_blocks"],
    )
    weights = {name: params["weights"][name] for name in plan.names}
    total_weight = sum(weights.values())
    sources = [
        {
            "name": name,
            "folder": os.path.relpath(folders[name], Path(args.plan).parent),
            "weight": weights[name],
            "blocks": blocks,
            "blocks_per_epoch": quota,
            "target_share": round(weights[name] / total_weight, 6),
            "share": round(quota / plan.epoch_blocks, 6),
            "passes": round(passes, 6),
        }
        for name, blocks, quota, passes in zip(plan.names, plan.blocks, plan.quotas, plan.passes())
    ]
    first = facts[plan.names[0]]
    recipe = {
        "sources": sources,
        "left_out": left_out,
        "epoch_blocks": plan.epoch_blocks,
        "block_size": first["block_size"],
        "tokenizer_sha256": first["tokenizer_sha256"],
    }
    write_json(args.plan, recipe)
    write_json(
        args.metrics,
        {
            "epoch_blocks": plan.epoch_blocks,
            "corpora": {s["name"]: {k: s[k] for k in ("target_share", "share", "blocks_per_epoch", "passes")} for s in sources},
        },
    )
    write_csv(
        args.plot,
        ["corpus", "target_share", "share", "passes"],
        [[s["name"], s["target_share"], s["share"], s["passes"]] for s in sources],
    )
    shares = ", ".join(f"{s['name']} {s['share']:.1%} ({s['passes']:.2f} passes)" for s in sources)
    print(
        f"mix: {plan.epoch_blocks:,} blocks per mixture epoch: {shares}"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )


if __name__ == "__main__":
    run_stage(main)
