"""The environments are pinned whole: every installed distribution has its exact version in
the requirements files, generated from pyproject.toml by requirements/compile.sh."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The installer itself comes with the venv, and this repository is installed as `-e .`.
NOT_PINNED = {"pip", "causal-lm-data"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: Path) -> dict[str, str]:
    """name -> version of every `name==version` line, following `-r` includes."""
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found |= pins(requirements.parent / line[3:].strip())
        elif "==" in line:
            name, version = line.split("==")
            found[canonical(re.sub(r"\[.*\]", "", name))] = version.strip()
        elif line and line != "-e .":
            raise AssertionError(f"{requirements.name}: {line!r} is not an exact pin")
    return found


def without_local_label(version: str) -> str:
    # torch's CPU build is 2.13.0+cpu; the pin 2.13.0 matches it (PEP 440 ignores local labels)
    return version.split("+", 1)[0]


def test_every_installed_distribution_is_pinned_at_its_version():
    pinned = pins(ROOT / "requirements-test.txt")
    installed = {canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    missing = sorted(name for name in installed if name not in pinned and name not in NOT_PINNED)
    assert not missing, f"installed but not pinned in requirements-test.txt: {missing}; run requirements/compile.sh"
    differ = {
        name: (version, pinned[name])
        for name, version in installed.items()
        if name in pinned and without_local_label(version) != pinned[name]
    }
    assert not differ, f"installed version differs from its pin: {differ}"


def test_pipeline_closure_is_the_test_closure_restricted():
    pipeline, test = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-test.txt")
    assert set(pipeline) < set(test)
    assert {name: test[name] for name in pipeline} == pipeline
    # the test-only packages stay out of the pipeline's environment
    assert not {"pytest", "hypothesis", "moto", "lightning", "ruff", "mistral-common"} & set(pipeline)


def test_closures_are_generated_from_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {canonical(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]) for requirement in requirements}

    pipeline, test = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-test.txt")
    assert names(project["dependencies"] + extras["pipeline"]) <= set(pipeline)
    assert names(project["dependencies"] + [r for extra in extras.values() for r in extra]) <= set(test)
    for generated in ("pipeline.txt", "test.txt"):
        header = (ROOT / "requirements" / generated).read_text().splitlines()[:2]
        assert header[1].strip("# ") == "requirements/compile.sh", f"requirements/{generated} names how it was generated"
