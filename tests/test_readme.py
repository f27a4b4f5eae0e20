"""The README's commands: what it tells users to type exists, parses and does what it says."""

import ast
import copy
import re
import shlex

import pytest
import yaml

from causal_lm_data.build.params import validate
from tests.helpers import REPO, files_of, run

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)


def test_ci_runs_exactly_the_readmes_test_command():
    command = next(line for line in README.splitlines() if line.startswith("python3 -m venv") and "pytest" in line)
    assert command in (REPO / ".ci" / "run").read_text()


def test_every_python_block_of_the_readme_parses():
    for language, code in BLOCKS:
        if language == "python":
            ast.parse(code)


def test_every_param_the_readme_sets_exists_and_its_value_is_valid():
    """Each `dvc exp run -S key=value` of the README, applied to the shipped params.yaml, passes validation."""
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = []
    for language, code in BLOCKS:
        if language not in ("bash", "console"):
            continue
        for line in code.replace("\\\n", " ").splitlines():
            if "dvc exp run" not in line:
                continue
            words = shlex.split(line.split("#")[0].replace("$ ", ""))
            settings.append([words[i + 1] for i, word in enumerate(words) if word == "-S"])
    assert len(settings) >= 10
    for changes in settings:
        params = copy.deepcopy(shipped)
        for change in changes:
            key, value = change.split("=", 1)
            *sections, name = key.split(".")
            target = params
            for section in sections:
                assert section in target, f"README sets unknown param {key}"
                target = target[section]
            assert name in target or sections[:1] == ["mixture"], f"README sets unknown param {key}"
            target[name] = yaml.safe_load(value) if value else ""
        if changes and "local" in " ".join(changes):  # local paths of the examples need not exist here
            continue
        validate(params)


@pytest.mark.parametrize("bad", ["group.block_size=0"])
def test_recovery_after_a_bad_value_restores_every_output(repo, bad):
    """The README's recovery: after a failed `dvc exp run -S`, `git restore . && dvc checkout` brings everything back."""
    before = files_of(repo)
    failed = run(["dvc", "exp", "run", "-S", bad], cwd=repo, check=False)
    assert failed.returncode != 0
    run(["git", "restore", "."], cwd=repo)
    run(["dvc", "checkout"], cwd=repo)
    assert files_of(repo) == before
    assert "up to date" in run(["dvc", "status"], cwd=repo).stdout
