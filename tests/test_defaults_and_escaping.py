"""The loader's defaults (what the check stage validated, in the current directory's repository), params.yaml
read as DVC reads it, a loader-only install, and data escaped wherever it is echoed."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from causal_lm_data.errors import UserError
from causal_lm_data.loader import from_params, make_dataloader, make_numpy_loader
from causal_lm_data.pipeline.command import stage_command
from tests.helpers import ENV, REPO, add_to_mix, run

# Makes `yaml` and `ruamel` unimportable, as in a loader-only install (numpy, pyarrow, torch).
WITHOUT_YAML = """
import sys

class NoYaml:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("yaml", "ruamel", "_ruamel_yaml"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoYaml())
"""


def first_ids(loader, batches=3) -> list[list[list[int]]]:
    return [batch["input_ids"].tolist() for batch, _ in zip(loader, range(batches))]


def test_with_no_path_the_loader_serves_the_recipe_the_check_stage_validated(repo, tmp_path, monkeypatch):
    corpus = tmp_path / "letters.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Letter {i}: " + "dear friend " * (i % 30 + 5)}) + "\n" for i in range(2000)))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpora"] = {"letters": {"dataset": "local", "local_path": str(corpus)}}
    params["mixture"]["weights"] = {"main": 3, "letters": 1}
    params["mixture"]["max_repetition"] = 20
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    add_to_mix(repo, "letters")
    run(["dvc", "repro"], cwd=repo)  # the corpus' stages, mix and check: the plan is validated

    monkeypatch.chdir(repo)
    plan = repo / "data" / "mix.json"
    served = make_dataloader(return_source=True)
    sources = np.concatenate([batch["source"].numpy() for batch, _ in zip(served, range(20))])
    assert set(sources.tolist()) == {0, 1}  # both corpora, not data/grouped alone
    assert first_ids(make_dataloader()) == first_ids(make_dataloader(plan))
    assert first_ids(from_params()) == first_ids(make_dataloader(plan, batch_size=8, shuffle=True, seed=42))
    numpy_default = next(iter(make_numpy_loader()))["input_ids"].tolist()
    assert numpy_default == first_ids(make_dataloader(plan), 1)[0]
    # One corpus of the recipe by name, with no path: the plan's folder for it.
    alone = make_dataloader(source="letters", shuffle=False)
    assert first_ids(alone) == first_ids(make_dataloader(repo / "data" / "corpora" / "letters" / "grouped", shuffle=False))

    # examples/train.py trains on the mixture too (its --data defaults to what make_dataloader serves).
    trained = run([sys.executable, "examples/train.py", "--steps", "2"], cwd=repo)
    assert trained.stdout.startswith("step 1: loss ")


def test_with_the_default_params_no_path_still_serves_data_grouped_exactly(repo, monkeypatch):
    monkeypatch.chdir(repo)
    plan = json.loads((repo / "data" / "mix.json").read_text())
    assert [source["folder"] for source in plan["sources"]] == ["grouped"]  # the main corpus alone
    default = make_dataloader()
    assert default.dataset.path == repo / "data" / "grouped"
    assert first_ids(default) == first_ids(make_dataloader(repo / "data" / "grouped"))
    assert first_ids(from_params()) == first_ids(make_dataloader(repo / "data" / "grouped", batch_size=8, seed=42))


def test_a_broken_plan_is_named_not_skipped(repo, monkeypatch):
    monkeypatch.chdir(repo)
    (repo / "data" / "mix.json").write_text("{not json")
    with pytest.raises(UserError, match=r"mix.json is not a mixture plan .*; rebuild it with the 'mix' stage"):
        make_dataloader()


def octal_looking(repo) -> None:
    """params.yaml with values YAML 1.1 (PyYAML) reads as octal: 010 is 8 and 042 is 34 there, 10 and 42 for DVC."""
    text = (repo / "params.yaml").read_text()
    shipped = "loader:\n  batch_size: 8\n  shuffle: true\n  seed: 42\n"
    assert shipped in text
    (repo / "params.yaml").write_text(text.replace(shipped, "loader:\n  batch_size: 010\n  shuffle: true\n  seed: 042\n"))
    assert yaml.safe_load((repo / "params.yaml").read_text())["loader"] == {"batch_size": 8, "shuffle": True, "seed": 34}


def test_from_params_reads_octal_looking_values_as_dvc_and_the_check_stage_do(repo):
    octal_looking(repo)
    run(["dvc", "repro", "check"], cwd=repo)
    checked = json.loads((repo / "metrics" / "check.json").read_text())
    assert checked["batch_shape"] == [10, 128]  # the check stage validated 10
    loader = from_params(repo / "data" / "grouped")
    assert loader.sampler.batch_size == 10 and loader.sampler.seed == 42
    assert first_ids(loader, 2) == first_ids(make_dataloader(repo / "data" / "grouped", batch_size=10, seed=42), 2)


def test_a_stage_command_fills_params_as_dvc_does(tmp_path):
    params = (REPO / "params.yaml").read_text().replace("  block_size: 128\n", "  block_size: 0100\n")
    (tmp_path / "params.yaml").write_text(params)
    command = stage_command(REPO / "dvc.yaml", "check", tmp_path / "params.yaml")
    assert command[command.index("--block-size") + 1] == "100"  # PyYAML: 64


def without_yaml(code: str, cwd) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python where yaml and ruamel.yaml cannot be imported, from `cwd`."""
    env = {key: value for key, value in ENV.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", WITHOUT_YAML + code], cwd=cwd, env=env, capture_output=True, text=True)


def test_a_loader_only_install_outside_the_repository_says_what_to_do_in_one_line(built_repo, tmp_path):
    code = """
from causal_lm_data.errors import UserError
from causal_lm_data.loader import from_params, make_dataloader
for call in (lambda: make_dataloader(), lambda: from_params(), lambda: from_params(sys.argv[1])):
    try:
        call()
        print("served")
    except UserError as error:
        print(error)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("yaml", "ruamel")))
"""
    result = without_yaml(code.replace("sys.argv[1]", repr(str(built_repo / "data" / "grouped"))), tmp_path)
    assert result.returncode == 0, result.stderr
    missing, missing_too, no_parser, imported = result.stdout.splitlines()
    assert (
        missing
        == missing_too
        == (f"no data/grouped in {tmp_path}: run `dvc repro` (or `dvc pull`) in the repository, or pass the folder's path")
    )
    assert no_parser == (
        "from_params reads params.yaml with ruamel.yaml, the YAML parser DVC uses, which is not installed: "
        "pip install ruamel.yaml, or give batch_size, shuffle and seed to make_dataloader"
    )
    assert imported == "[]"


def test_the_default_path_is_the_current_directorys_data_grouped(built_repo, tmp_path):
    """Not the package's location: a copy of the built folder elsewhere is served from there, without a YAML parser."""
    import shutil

    shutil.copytree(built_repo / "data" / "grouped", tmp_path / "data" / "grouped")
    code = "from causal_lm_data.loader import make_dataloader; l = make_dataloader(); print(l.dataset.path, len(l.dataset))"
    result = without_yaml(code, tmp_path)
    assert result.returncode == 0, result.stderr
    path, blocks = result.stdout.split()
    assert path == str(tmp_path / "data" / "grouped")
    assert int(blocks) == len(make_dataloader(built_repo / "data" / "grouped").dataset)


# One character of each category that must never print raw, and its escape.
UNSAFE = {
    "Cc": ["\x1b", "\x7f", "\x85", "\t", "\r"],
    "Cf": ["\u061c", "\u2060", "\u2064", "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\ufeff", "\u00ad"]
    + ["\U000e0001", "\U000e0041", "\U000e007f"],  # tag characters: invisible text
    "Zl": ["\u2028"],
    "Zp": ["\u2029"],
    "Co": ["\ue000", "\U000f0000", "\U0010fffd"],
    "Cn": ["\u0378", "\U0010fffe", "\U000e0080"],
}
ORDINARY = "Ünïcödé, 日本語, العربية, עברית, हिन्दी, ελληνικά, 🙂🎉, a\u00a0non-breaking and an ideographic\u3000space"


def escape(character: str) -> str:
    return character.encode("unicode_escape").decode("ascii")


def unsafe_characters():
    return [(category, character) for category, characters in UNSAFE.items() for character in characters]


@pytest.mark.parametrize(("category", "character"), unsafe_characters())
def test_printable_escapes_every_unsafe_category(category, character):
    import unicodedata

    from causal_lm_data.errors import printable

    assert unicodedata.category(character) == category
    assert printable(f"before{character}after") == f"before{escape(character)}after"


def test_printable_escapes_surrogates_and_keeps_ordinary_text():
    from causal_lm_data.errors import printable

    assert printable("lone \ud800 surrogate \udfff") == "lone \\ud800 surrogate \\udfff"  # Cs
    assert printable(ORDINARY) == ORDINARY
    assert printable("") == ""


def inert(output: str) -> None:
    """Nothing of an unsafe category in `output` but the newlines that end its lines."""
    import unicodedata

    found = {
        char for char in output.replace("\n", "") if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"}
    }
    assert found == set(), sorted(map(escape, found))


def test_show_prints_every_unsafe_category_escaped_and_ordinary_text_as_it_is(tmp_path):
    from causal_lm_data.show import TEXT
    from tests.helpers import local, stage_in

    documents = [f"{category} {escape(character)}: [{character}]" for category, character in unsafe_characters()]
    documents += [ORDINARY, "two lines:\nthe second"]
    corpus = tmp_path / "unsafe.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in documents), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    assert stage_in(work, "download", **local(corpus)).returncode == 0
    shown = run([sys.executable, "-m", "causal_lm_data", "show", "data/raw", "--first", str(len(documents))], cwd=work).stdout
    inert(shown)
    for category, character in unsafe_characters():
        assert f"{TEXT}{category} {escape(character)}: [{escape(character)}]\n" in shown
    assert f"{TEXT}{ORDINARY}\n" in shown  # letters of every script, emoji, spaces: unchanged
    assert f"{TEXT}two lines:\n{TEXT}the second\n" in shown  # a newline stays a line break, in the gutter


def test_a_download_error_quoting_a_bad_record_escapes_it(tmp_path):
    """A record without the text field: the error lists its fields, which are data."""
    from tests.helpers import local, stage_in

    names = [f"field{character}" for _, character in unsafe_characters()[:9]]
    corpus = tmp_path / "fields.jsonl"
    corpus.write_text(json.dumps(dict.fromkeys(names, "x"), ensure_ascii=False) + "\n", encoding="utf-8")
    result = stage_in(tmp_path, "download", **local(corpus))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    inert(result.stderr)
    assert ", ".join(f"field{escape(name[-1])}" for name in names) in result.stderr
    assert "has no field 'text'" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--random", "2", "--seed", "-1"], "argument --seed: expected a whole number >= 0, got '-1'"),
        (["--seed", "\u00b2"], "argument --seed: expected a whole number >= 0, got '²'"),
        (["--first", "\u00b2"], "argument --first: expected a whole number >= 1, got '²'"),
        (["--random", "-3"], "argument --random: expected a whole number >= 1, got '-3'"),
        (["--block", "\u0661"], "argument --block: expected a whole number (negative: from the end), got '١'"),
    ],
)
def test_show_refuses_bad_numbers_in_one_usage_line(built_repo, arguments, message):
    result = run([sys.executable, "-m", "causal_lm_data", "show", *arguments], cwd=built_repo, check=False)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(message)


def test_show_takes_huge_counts_and_seeds_and_names_a_row_out_of_range_as_given(built_repo):
    show = [sys.executable, "-m", "causal_lm_data", "show", "data/raw"]
    many = run([*show, "--first", str(10**30)], cwd=built_repo, check=False)  # every row, not an overflow
    assert many.returncode == 0 and many.stdout.count("\u27e6document ") == 25_488
    huge_seed = run([*show, "--random", "1", "--seed", str(2**100)], cwd=built_repo)
    assert huge_seed.stdout.startswith("\u27e6document ")
    for block in ("-25489", str(10**30), "-" + str(10**30)):
        result = run([*show, "--block", block], cwd=built_repo, check=False)
        assert result.returncode == 1 and result.stdout == "", result.stderr
        assert result.stderr == (
            f"error: document {block} is out of range: data/raw has 25,488 (0 to 25,487); -1 is the last, -25,488 the first\n"
        )
    assert run([*show, "--block", "-25488"], cwd=built_repo).stdout.startswith("\u27e6document 0 of 25,488")
