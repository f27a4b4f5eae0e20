"""A recipe under git and DVC: what an experiment commits, what a teammate who pulls it sees, the
documented recovery after a failed experiment, and a stage's output replaced whole or not at all."""

import contextlib
import hashlib
import json
import os
import subprocess

import pytest
import yaml

from tests.helpers import add_to_mix, run, stage_in, write_tokens

# README.md's recovery after a failed `dvc exp run`. `git restore .` alone trusts git's stat
# cache: DVC's experiment machinery rewrites a tracked file (data/mix.json, metrics/mix.json)
# in place with the same size within the same second, so git calls the stale file clean.
# `git read-tree HEAD` drops that cache, so the restore compares content.
RECOVERY = "git read-tree HEAD && git restore . && dvc checkout"


def add_speeches(repo, tmp_path, weight=1):
    """A second corpus (a small local .jsonl) in the recipe: params.yaml and the mix stage of dvc.yaml."""
    corpus = tmp_path / "speeches.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"Speech {i}: " + "we the people " * (i % 40 + 5)}) + "\n" for i in range(2000))
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpora"] = {"speeches": {"dataset": "local", "local_path": str(corpus)}}
    params["mixture"]["weights"] = {"main": 3, "speeches": weight}
    params["mixture"]["max_repetition"] = 10
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    add_to_mix(repo, "speeches")


def commit(repo, message):
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", message], cwd=repo)


def reproduced_base(repo):
    """The clone with dvc.lock reproduced for the code under test and committed (the fixture's may be stale)."""
    run(["dvc", "repro"], cwd=repo)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "dvc.lock for this code", "--allow-empty"], cwd=repo)


def cached_outputs(repo) -> list[str]:
    """Every output DVC caches (so git must never hold), of every stage, foreach stages included."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        return sorted(
            str(out.fs_path).removeprefix(f"{repo}/") for stage in dvc.index.stages for out in stage.outs if out.use_cache
        )


def test_an_experiment_commits_no_cached_output_of_any_stage(repo, tmp_path):
    add_speeches(repo, tmp_path)
    outputs = cached_outputs(repo)
    assert "data/corpora/speeches/grouped" in outputs and "data/raw" in outputs
    # The committed ignore files alone cover them, before any stage wrote its own .gitignore.
    for output in outputs:
        assert run(["git", "check-ignore", "-q", f"{output}/state.json"], cwd=repo, check=False).returncode == 0, output
    run(["dvc", "repro"], cwd=repo)
    commit(repo, "a recipe of two corpora")
    run(["dvc", "exp", "run", "-S", "mixture.weights.speeches=2"], cwd=repo)
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo).stdout.split()
    experiments = [ref for ref in refs if len(ref.split("/")) == 4]  # refs/exps/<base>/<name>; not exec/, stash
    assert len(experiments) == 1
    committed = run(["git", "ls-tree", "-r", "--name-only", experiments[0]], cwd=repo).stdout.splitlines()
    assert "data/mix.json" in committed and "metrics/mix.json" in committed
    inside = [name for name in committed for output in outputs if name.startswith(f"{output}/")]
    assert inside == []
    assert not [name for name in committed if name.endswith((".lock", ".partial", ".old")) and name != "dvc.lock"]


def test_a_teammate_who_pulls_a_recipe_is_up_to_date_and_an_older_branch_reproduces_nothing(repo, tmp_path):
    reproduced_base(repo)
    base = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=repo).stdout.strip()
    run(["git", "checkout", "-qb", "recipe"], cwd=repo)
    add_speeches(repo, tmp_path)
    run(["dvc", "repro"], cwd=repo)
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], cwd=repo)
    commit(repo, "a recipe of two corpora")
    run(["dvc", "push"], cwd=repo)

    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", "-b", "recipe", str(repo), str(teammate)], cwd=tmp_path)
    run(["dvc", "pull"], cwd=teammate)
    assert run(["dvc", "status"], cwd=teammate).stdout.strip() == "Data and pipelines are up to date."

    # Back on a branch without the corpus (git checkout alone: `dvc checkout` would delete the
    # corpus' folders): they stay, ignored by git, and the stages' lock files beside them.
    run(["dvc", "repro", "corpus-group@speeches", "--force"], cwd=teammate)  # a run leaves .NAME.lock files
    assert (teammate / "data" / "corpora" / "speeches" / ".grouped.lock").exists()
    run(["git", "checkout", "-q", base], cwd=teammate)
    assert (teammate / "data" / "corpora" / "speeches" / "grouped" / "state.json").exists()
    run(["dvc", "repro"], cwd=teammate)
    run(["git", "diff", "--exit-code", "dvc.lock"], cwd=teammate)
    assert run(["dvc", "status"], cwd=teammate).stdout.strip() == "Data and pipelines are up to date."


def test_a_recipe_whose_corpora_dvc_yaml_does_not_name_is_refused_naming_the_line_to_add(repo, tmp_path):
    add_speeches(repo, tmp_path)
    run(["git", "checkout", "dvc.yaml"], cwd=repo)  # params.yaml has the corpus, the mix stage does not
    failed = run(["dvc", "repro", "mix"], cwd=repo, check=False)
    assert failed.returncode != 0
    assert (
        "error: corpus 'speeches' of params.yaml is not in the 'mix' stage of dvc.yaml: "
        "add `--corpus speeches=data/corpora/speeches/grouped` to its cmd and `- data/corpora/speeches/grouped` to its deps"
    ) in failed.stderr

    # Named in the command but not in deps: a change of that folder would go unseen.
    add_to_mix(repo, "speeches")
    dvc_yaml = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(dvc_yaml.replace("      - data/corpora/speeches/grouped\n", "", 1))
    failed = run(["dvc", "repro", "mix"], cwd=repo, check=False)
    assert "error: the 'mix' stage of dvc.yaml reads data/corpora/speeches/grouped but does not list it" in failed.stderr

    # A whole-folder dep the stage does not read (the old `- data/corpora`): refused too.
    (repo / "dvc.yaml").write_text(
        dvc_yaml.replace("    deps:\n      - data/grouped\n", "    deps:\n      - data/grouped\n      - data/corpora\n", 1)
    )
    failed = run(["dvc", "repro", "mix"], cwd=repo, check=False)
    assert "lists 'data/corpora' in its deps but reads no such folder" in failed.stderr

    # Named in dvc.yaml, absent from the recipe.
    (repo / "dvc.yaml").write_text(dvc_yaml)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpora"], params["mixture"]["weights"] = {}, {"main": 1}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = run(["dvc", "repro", "--single-item", "mix"], cwd=repo, check=False)
    assert "names corpus 'speeches', which params.yaml's corpora lacks: remove `--corpus speeches=" in failed.stderr


def test_the_documented_recovery_after_a_failed_experiment_restores_the_committed_state(repo):
    reproduced_base(repo)
    committed = {name: run(["git", "show", f"HEAD:{name}"], cwd=repo).stdout for name in ("data/mix.json", "metrics/mix.json")}
    run(["dvc", "exp", "run", "-S", "tokenize.max_length=256"], cwd=repo)
    assert (repo / "data" / "mix.json").read_text() != committed["data/mix.json"]
    failed = run(["dvc", "exp", "run", "-S", "group.block_size=0"], cwd=repo, check=False)
    assert failed.returncode != 0 and "'group.block_size' must be >= 1, got 0" in failed.stderr

    run(["bash", "-c", RECOVERY], cwd=repo)
    for name, text in committed.items():
        assert (repo / name).read_text() == text, name
    assert run(["git", "status", "--porcelain"], cwd=repo).stdout == ""
    assert run(["dvc", "status"], cwd=repo).stdout.strip() == "Data and pipelines are up to date."


# A stage's final replace of its output.


@contextlib.contextmanager
def immutable(path):
    """`path` made immutable (chattr +i: not even root may rename, delete or write it); skips where unsupported."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def grouped_once(workdir):
    """data/grouped and its metrics written by the real group stage, from a small tokenized folder."""
    write_tokens(workdir / "data" / "tokenized", [list(range(i, i + 50)) for i in range(60)])
    result = stage_in(workdir, "group", group__block_size=32)
    assert result.returncode == 0, result.stderr


def contents(workdir):
    return {
        str(path.relative_to(workdir)): path.read_bytes()
        for folder in ("data", "metrics", "plots")
        for path in sorted((workdir / folder).rglob("*"))
        if path.is_file() and "tokenized" not in path.parts
    }


def leftovers(workdir):
    return sorted(str(path.relative_to(workdir)) for path in workdir.rglob(".*") if path.name.endswith((".partial", ".old")))


def test_an_output_that_cannot_be_moved_is_kept_whole_with_its_metrics(tmp_path):
    grouped_once(tmp_path)
    before = contents(tmp_path)
    with immutable(tmp_path / "data" / "grouped"):
        failed = stage_in(tmp_path, "group", group__block_size=16)
        assert failed.returncode == 1
        lines = failed.stderr.strip().splitlines()
        assert lines == [
            "error: data/grouped: cannot be replaced (Operation not permitted); it is kept as it was: "
            "make it replaceable (not immutable, not a mount point, its folder writable) and run again"
        ]
        assert contents(tmp_path) == before  # the old blocks, and the metrics and plot of the run that made them
        assert leftovers(tmp_path) == []


def test_an_old_output_on_a_read_only_mount_is_kept_whole(tmp_path):
    grouped_once(tmp_path)
    before = contents(tmp_path)
    grouped = str(tmp_path / "data" / "grouped")
    if subprocess.run(["mount", "--bind", "-o", "ro", grouped, grouped], capture_output=True).returncode != 0:
        pytest.skip("bind mounts need root and CAP_SYS_ADMIN")
    try:
        failed = stage_in(tmp_path, "group", group__block_size=16)
    finally:
        subprocess.run(["umount", grouped], check=True)
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: data/grouped: cannot be replaced (Device or resource busy); it is kept as it was")
    assert contents(tmp_path) == before
    assert leftovers(tmp_path) == []


def test_an_old_output_with_an_undeletable_file_is_replaced_and_named(tmp_path):
    grouped_once(tmp_path)
    stuck = tmp_path / "data" / "grouped" / "state.json"
    with immutable(stuck):
        result = stage_in(tmp_path, "group", group__block_size=16)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines() == [
            "warning: could not delete the replaced output data/.grouped.old (Operation not permitted); delete it by hand"
        ]
        stuck = tmp_path / "data" / ".grouped.old" / "state.json"
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert json.loads((tmp_path / "metrics" / "group.json").read_text())["blocks"] == 60 * 50 // 16
    # The next run deletes what the last one could not.
    assert stage_in(tmp_path, "group", group__block_size=16).returncode == 0
    assert leftovers(tmp_path) == []


def test_an_output_folder_that_is_a_symlink_is_refused_and_left_alone(tmp_path):
    grouped_once(tmp_path)
    other_disk = tmp_path / "elsewhere"
    (tmp_path / "data" / "grouped").rename(other_disk)
    (tmp_path / "data" / "grouped").symlink_to(other_disk)
    before = contents(tmp_path) | {"elsewhere": sorted(p.name for p in other_disk.iterdir())}
    failed = stage_in(tmp_path, "group", group__block_size=16)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"error: data/grouped is a symbolic link ({other_disk}); a stage replaces its output folder whole: "
        "remove the link (rm data/grouped) and run again (to keep data on another disk, move DVC's cache: dvc cache dir)"
    ]
    assert contents(tmp_path) | {"elsewhere": sorted(p.name for p in other_disk.iterdir())} == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_outputs_linked_from_the_dvc_cache_are_replaced_and_the_cache_kept(repo, link):
    reproduced_base(repo)
    run(["dvc", "config", "--local", "cache.type", link], cwd=repo)
    run(["dvc", "checkout", "--relink"], cwd=repo)
    grouped = repo / "data" / "grouped"
    # DVC links each file; the folder itself stays a real one, which a stage may replace.
    assert not grouped.is_symlink()
    shard = grouped / "data-00000-of-00001.arrow"
    assert shard.is_symlink() if link == "symlink" else os.stat(shard).st_nlink > 1
    run(["dvc", "repro", "--force", "--single-item", "group"], cwd=repo)
    assert not grouped.is_symlink()  # DVC links the new files to its cache again
    # Deleting the old folder deleted links, never what they point to: every cache file is whole.
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    cached = [path for path in cache.rglob("*") if path.is_file() and not path.name.endswith(".dir")]
    assert cached and all(hashlib.md5(path.read_bytes()).hexdigest() == path.parent.name + path.name for path in cached)
    run(["dvc", "checkout", "--relink"], cwd=repo)
    assert run(["dvc", "status"], cwd=repo).stdout.strip() == "Data and pipelines are up to date."
    assert not leftovers(repo / "data")
