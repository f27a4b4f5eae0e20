"""Stage mix: turn mixture.weights into the recipe's plan, whole blocks per corpus per mixture epoch, which the
loader serves.

As dvc.yaml runs it:

    python -m stages.mix --params mixture --main data/grouped \
        [--corpus NAME=data/corpora/NAME/grouped ...] --plan data/mix.json --metrics metrics/mix.json --plot plots/mix.csv

The main corpus is `download`'s (named `main` in mixture.weights); every other
corpus of params.yaml's `corpora` was grouped into data/corpora/NAME/grouped by its
own stages, and dvc.yaml's mix stage names that folder twice: in its command
(`--corpus NAME=FOLDER`) and in its deps, so the plan depends on exactly the
folders it reads (DVC cannot build a deps list from params). A recipe whose corpora
are not exactly those given, or a folder read but not in deps, stops the stage in one
line naming the line to add or remove. The plan (causal_lm_data.mixture.plan_mixture)
is what the loader serves; the metrics and the plot show each corpus' target share,
achieved share and passes, so `dvc metrics diff` shows what a weight change did.
Reads only the folders' indexes, never their data.
"""

import os
from pathlib import Path

from causal_lm_data.errors import UserError, quoted
from causal_lm_data.format import read_provenance, read_schema, shards, split_folder
from causal_lm_data.pipeline.command import arguments, run_stage, stage_definition
from causal_lm_data.pipeline.params import MAIN_CORPUS, load_params
from causal_lm_data.pipeline.writer import write_csv, write_json
from causal_lm_data.plan import check_mixture_params, plan_mixture, target_shares

DVC_FILE = "dvc.yaml"  # where DVC, running a stage in its folder, took the stage from


def given_corpora(options: list[str]) -> dict[str, Path]:
    """The corpora of the command line, `--corpus NAME=FOLDER` each, by name."""
    folders: dict[str, Path] = {}
    for option in options:
        name, equals, folder = option.partition("=")
        if not (equals and name and folder):
            raise UserError(f"--corpus {quoted(option)} must be NAME=FOLDER, e.g. --corpus code=data/corpora/code/grouped")
        if name in folders or name == MAIN_CORPUS:
            raise UserError(f"--corpus names {quoted(name)} twice (main is --main); give each corpus once")
        folders[name] = Path(folder)
    return folders


def check_recipe(given: dict[str, Path], recipe: list[str], stage: str) -> None:
    """Refuse a recipe (params.yaml `corpora`) whose corpora are not exactly the ones `stage` was given."""
    for name in recipe:
        if name not in given:
            folder = f"data/corpora/{name}/grouped"
            raise UserError(
                f"corpus '{name}' of params.yaml is not in the '{stage}' stage of {DVC_FILE}: "
                f"add `--corpus {name}={folder}` to its cmd and `- {folder}` to its deps"
            )
    for name, folder in given.items():
        if name not in recipe:
            raise UserError(
                f"the '{stage}' stage of {DVC_FILE} names corpus {quoted(name)}, which params.yaml's corpora lacks: "
                f"remove `--corpus {name}={folder}` and `- {folder}` from it (or add the corpus to params.yaml)"
            )


def undeclared_folders(stage: str, folders: list[Path], dvc_file: Path) -> tuple[list[Path], list[str]]:
    """The folders read that `stage` of `dvc_file` does not list in its deps, and the deps besides its code
    (.py) that it does not read: each one makes `dvc status` wrong (a change missed, or a re-run for nothing)."""
    deps = [Path(dep) for dep in stage_definition(dvc_file, stage).get("deps", [])]
    missing = [folder for folder in folders if folder not in deps]
    extra = [str(dep) for dep in deps if dep.suffix != ".py" and dep not in folders]
    return missing, extra


def check_deps(folders: list[Path]) -> None:
    """Under `dvc repro`, refuse a mix stage whose deps are not exactly the folders it reads (with its code)."""
    stage = os.environ.get("DVC_STAGE")
    if not stage or not Path(DVC_FILE).is_file():
        return  # run by hand: no stage definition to compare
    missing, extra = undeclared_folders(stage, folders, Path(DVC_FILE))
    if missing:
        raise UserError(
            f"the '{stage}' stage of {DVC_FILE} reads {missing[0]} but does not list it: add `- {missing[0]}` to its deps"
        )
    if extra:
        raise UserError(
            f"the '{stage}' stage of {DVC_FILE} lists {quoted(extra[0])} in its deps but reads no such folder: "
            "remove it (a folder it depends on must be one it reads)"
        )


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
    args = arguments(__doc__, "main", "plan", "metrics", "plot", repeated=("corpus",))
    params = load_params(args.params)
    # What the params alone refuse (a weight of 1e400, epoch_blocks past 2^48) fails before any folder is read.
    check_mixture_params(params["weights"], params["max_repetition"], params["epoch_blocks"])
    given = given_corpora(args.corpus)
    check_recipe(given, list(load_params("corpora")), os.environ.get("DVC_STAGE", "mix"))
    folders = {MAIN_CORPUS: Path(args.main)} | {name: given[name] for name in load_params("corpora")}
    check_deps(list(folders.values()))
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
    # Exact shares: a float sum of weights such as 1e308 overflows to inf and every share to 0.
    targets = dict(zip(plan.names, target_shares(weights.values())))
    sources = [
        {
            "name": name,
            "folder": os.path.relpath(folders[name], Path(args.plan).parent),
            "weight": weights[name],
            "blocks": blocks,
            "blocks_per_epoch": quota,
            "target_share": round(targets[name], 6),
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
