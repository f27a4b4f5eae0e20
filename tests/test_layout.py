"""The repository's shape: every module a stage imports is a dependency of that stage in dvc.yaml.

A module that a stage runs but dvc.yaml forgets would not re-run the stage when it
changes, and the committed outputs would silently stop matching the code.
"""

import ast
import shlex
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO, local, run, stage_command, write_params


def module_file(name: str) -> Path | None:
    """The file of this repository that defines module `name`, or None for other packages."""
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(file: Path) -> set[str]:
    """Every module `file` imports (at any depth of its code), as absolute names."""
    package = ".".join(file.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parent, base]))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def local_closure(module: str) -> set[Path]:
    """The files of this repository that running `module` imports, transitively (packages' __init__ too)."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            file = module_file(".".join(parts[:depth]))
            if file is not None and file not in seen:
                seen.add(file)
                pending.extend(imported_modules(file))
    return seen


def stage_commands() -> dict[str, tuple[str, list[str]]]:
    """Each stage's module (`python -m MODULE ...`) and its dependencies, from dvc.yaml."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = {}
    for name, stage in stages.items():
        if "foreach" in stage or "matrix" in stage:
            stage = stage["do"]
        words = shlex.split(stage["cmd"])
        assert words[:2] == ["python", "-m"], f"stage {name} is not run as `python -m MODULE`: {stage['cmd']}"
        commands[name] = (words[2], [str(dep) for dep in stage.get("deps", [])])
    return commands


def test_every_stage_depends_on_every_module_it_imports():
    missing = {}
    for stage, (module, deps) in stage_commands().items():
        covered = [REPO / dep.rstrip("/") for dep in deps if "${" not in dep]
        for file in local_closure(module):
            if not any(file == dep or dep in file.parents for dep in covered):
                missing.setdefault(stage, []).append(str(file.relative_to(REPO)))
    assert missing == {}, f"dvc.yaml deps miss modules their stage imports: {missing}"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    # The check must see lazy imports (a stage imports heavy modules inside functions).
    closure = {str(file.relative_to(REPO)) for file in local_closure(stage_commands()["tokenize"][0])}
    assert len(closure) >= 5, closure


def test_the_loader_imports_nothing_of_the_write_side():
    """A training process that imports the loader (and the mixture) loads numpy, pyarrow and torch, no build package."""
    script = (
        "import sys; from causal_lm_data import make_dataloader, MixedBlocks; import causal_lm_data.mixture;"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(run([sys.executable, "-c", script], cwd=REPO).stdout.split())
    assert "torch" in loaded and "pyarrow" in loaded
    build_side = {
        "datasets",
        "transformers",
        "tokenizers",
        "fastokens",
        "dask",
        "distributed",
        "dvc",
        "pandas",
        "ruamel",
    }  # (torch itself loads tqdm)
    assert loaded & build_side == set()
    assert not [name for name in loaded if name.startswith(("causal_lm_data.pipeline", "stages"))]


def test_a_stage_other_than_check_does_not_import_the_loader():
    """The stages import only what they run: the loader only in check, which validates its batches."""
    for stage in ("download", "tokenize", "group", "mix"):
        closure = {str(file.relative_to(REPO)) for file in local_closure(f"stages.{stage}")}
        assert "causal_lm_data/loader.py" not in closure, stage


def imported_at_run_time(args, cwd, **env) -> set[str]:
    """Every module a Python command imports, as `-X importtime` (PYTHONPROFILEIMPORTTIME) reports them."""
    result = run(args, cwd=cwd, PYTHONPROFILEIMPORTTIME="1", **env)
    lines = [line.split("|") for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {fields[-1].strip() for fields in lines if len(fields) == 3}


def test_no_stage_imports_torch(repo):
    """torch is most of a stage process's start-up: check validates the DataLoader's batches through the numpy loader instead."""
    for stage in ("download", "tokenize", "group", "mix", "check"):
        loaded = imported_at_run_time(stage_command(stage, repo), repo)
        assert "causal_lm_data.format" in loaded and "numpy" in loaded, stage  # the report lists every import
        assert not {name for name in loaded if name.split(".")[0] == "torch"}, stage
        if stage == "check":  # which maps the blocks without pyarrow.compute, a large module it needs nothing of
            assert {"causal_lm_data.loader", "causal_lm_data.mixture"} <= loaded and "pyarrow.compute" not in loaded


def test_download_of_a_parquet_corpus_does_not_import_pandas(tmp_path):
    """pyarrow imports pandas (0.13 s, a tenth of a small run's download) the first time it converts a
    Python object; reading parquet and cleaning its text need none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a document", "", "another one"]}), tmp_path / "corpus.parquet")
    write_params(tmp_path, **local(tmp_path / "corpus.parquet"))
    loaded = imported_at_run_time(stage_command("download", tmp_path), tmp_path, PYTHONPATH=str(REPO))
    assert "causal_lm_data.pipeline.raw" in loaded and "pandas" not in loaded


def test_importing_the_loader_does_not_import_torch():
    """torch loads when a DataLoader or a torch Dataset is asked for, not with the modules that compute the batches."""
    loaded = imported_at_run_time([sys.executable, "-c", "import causal_lm_data.loader, causal_lm_data.mixture"], REPO)
    assert "causal_lm_data.mixture" in loaded and "torch" not in loaded
    asked = "from causal_lm_data.loader import Blocks; from causal_lm_data.mixture import MixtureBatches"
    assert "torch" in imported_at_run_time([sys.executable, "-c", asked], REPO)
