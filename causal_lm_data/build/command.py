"""What every stage command shares: its command line, and errors worded with the dvc command that mends them."""

import argparse
import os
import shlex
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


def arguments(description: str, *paths: str, repeated: tuple[str, ...] = ()) -> argparse.Namespace:
    """The command line every stage takes: --params SECTION, then its input and output paths as options.

    dvc.yaml writes every path on the command line, so one stage definition can
    serve several corpora (`foreach`), and no path is written in the Python.
    `repeated` options may be given any number of times (a list, [] when absent).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", required=True, help="the section of params.yaml this stage reads (dotted)")
    for path in paths:
        parser.add_argument(f"--{path}", required=True)
    for name in repeated:
        parser.add_argument(f"--{name}", action="append", default=[])
    return parser.parse_args()


def stage_command(dvc_yaml, stage: str, params_file) -> list[str]:
    """The command of `stage` as `dvc_yaml` writes it, with its ${params} filled from `params_file`: how
    tests and benchmarks run one stage exactly as `dvc repro` does."""
    from ruamel.yaml import YAML  # as DVC parses both files (YAML 1.2): PyYAML's 1.1 reads `block_size: 010` as 8

    command = YAML(typ="safe").load(Path(dvc_yaml).read_text())["stages"][stage]["cmd"]
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
