"""What every stage command shares: its command line, and errors worded with the dvc command that mends them."""

import argparse
import os
import shlex
import sys
from pathlib import Path

from causal_lm_data.errors import run_command
from causal_lm_data.format import FolderError


def explain(error) -> str:
    """A stage's one-line error; a broken input folder names the dvc command that rebuilds it.

    Under `foreach`, a corpus' stages are named `corpus-<stage>@<corpus>`: the folder's
    stage is then the one of the same family and corpus as the stage running
    (DVC_STAGE; `corpus-tokenize@web` reads what `corpus-download@web` wrote).
    """
    if not isinstance(error, FolderError):
        return str(error)
    stage = error.stage
    running = os.environ.get("DVC_STAGE", "")
    if "@" in running and "@" not in stage:
        name, corpus = running.split("@", 1)
        family = name.rsplit("-", 1)[0] + "-" if "-" in name else ""
        stage = f"{family}{stage}@{corpus}"
    if error.missing:
        return f"{error.problem}; run the '{stage}' stage first: dvc repro {stage}"
    return f"{error.problem}; rebuild it with: dvc repro --force --single-item {stage}"


def run_stage(main) -> None:
    """Run a stage command's main() (see causal_lm_data.errors.run_command)."""
    run_command(main, explain)


# What each option of a stage's command line is, for its --help: dvc.yaml writes every one of them.
ARGUMENT_HELP = {
    "params": "the section of params.yaml this stage reads, dotted (dvc.yaml names it: tokenize, corpora.NAME, ...)",
    "input": "the folder this stage reads: the previous stage's output",
    "output": "the folder this stage writes, replaced whole once the stage succeeds",
    "metrics": "the JSON file of this stage's counts (dvc metrics show / diff)",
    "lengths-plot": "the CSV of document lengths in tokens, before and after truncation (dvc plots)",
    "tokens-plot": "the CSV of the tokens this step kept and dropped (dvc plots)",
    "plot": "the CSV of this stage's plot (dvc plots): each corpus' shares for mix, the drops by reason for clean",
    "dropped": "the folder listing every document clean dropped: where it was, why, and the document it duplicates",
    "block-size": "the block size in tokens the group stage cut (group.block_size): every batch's width",
    "plan": "the mixture plan, data/mix.json: the mix stage writes it, the check stage reads it",
    "main": "the main corpus' grouped folder (the download, tokenize and group stages' corpus)",
    "corpus": "another corpus of the recipe and its grouped folder, as NAME=FOLDER (once per corpus; none by default)",
}
METAVARS = {"params": "SECTION", "block-size": "TOKENS"}  # every other option is a path
EPILOG = "dvc repro runs it with the arguments dvc.yaml writes; run it by hand from the repository root the same way."


def arguments(description: str, *paths: str, repeated: tuple[str, ...] = ()) -> argparse.Namespace:
    """The command line every stage takes: --params SECTION, then its input and output paths as options.

    dvc.yaml writes every path on the command line, so one stage definition can
    serve several corpora (`foreach`), and no path is written in the Python.
    `description` is the stage's module docstring: --help shows its first paragraph
    (what the stage does); the rest is notes for the code's readers. `repeated` options
    may be given any number of times (a list, [] when absent).
    """
    summary = description.strip().split("\n\n")[0]
    # How dvc.yaml runs it (`python -m stages.tokenize`), not the file's path that argparse would show.
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {main.name}" if main and main.name.startswith("stages.") else None
    parser = argparse.ArgumentParser(prog=prog, description=" ".join(summary.split()), epilog=EPILOG)
    for name in ("params", *paths):
        # An option without help is a mistake in the code (a KeyError here): its --help would not explain it.
        parser.add_argument(f"--{name}", required=True, metavar=METAVARS.get(name, "PATH"), help=ARGUMENT_HELP[name])
    for name in repeated:
        parser.add_argument(f"--{name}", action="append", default=[], metavar="NAME=PATH", help=ARGUMENT_HELP[name])
    return parser.parse_args()


def stage_definition(dvc_yaml, stage: str) -> dict:
    """`stage` as `dvc_yaml` defines it (cmd, deps, outs...), parsed as DVC parses it."""
    from ruamel.yaml import YAML  # YAML 1.2, as DVC: PyYAML's 1.1 reads `block_size: 010` as 8

    return YAML(typ="safe").load(Path(dvc_yaml).read_text())["stages"][stage]


def stage_command(dvc_yaml, stage: str, params_file) -> list[str]:
    """The command of `stage` as `dvc_yaml` writes it, with its ${params} filled from `params_file`: how
    tests and benchmarks run one stage exactly as `dvc repro` does."""
    from ruamel.yaml import YAML

    command = stage_definition(dvc_yaml, stage)["cmd"]
    params = YAML(typ="safe").load(Path(params_file).read_text()) if Path(params_file).exists() else {}
    words = []
    for word in shlex.split(command):
        if word.startswith("${") and word.endswith("}"):
            value = params
            for key in word[2:-1].split("."):
                value = value[key]
            word = str(value)
        words.append(word)
    return words
