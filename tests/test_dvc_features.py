"""Metrics, plots, experiments and a validation split, through real `dvc` commands."""

import json
from collections import Counter

import datasets
import pytest

from causal_lm_data.loader import make_dataloader
from causal_lm_data.pipeline.readers import builtin_documents
from tests.helpers import run


def test_longer_max_length_shows_in_metrics_diff_and_exp_show(repo):
    run(["dvc", "exp", "run", "-n", "long-docs", "-S", "tokenize.max_length=1024"], cwd=repo)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], cwd=repo).stdout)
    lost = diff["metrics/tokenize.json"]["tokens_lost_to_truncation"]
    blocks = diff["metrics/group.json"]["blocks"]
    assert lost["new"] < lost["old"] and blocks["new"] > blocks["old"]
    assert diff["metrics/tokenize.json"]["documents_truncated"]["diff"] < 0
    shown = run(["dvc", "exp", "show", "--csv"], cwd=repo).stdout
    assert "long-docs" in shown and "1024" in shown and "512" in shown


def test_plots_render_to_html_and_diff_across_runs(repo):
    run(["dvc", "plots", "show", "-o", "rendered"], cwd=repo)
    page = (repo / "rendered" / "index.html").read_text()
    assert "vega" in page and "Document length in tokens" in page and "Tokens kept by each step" in page
    assert "documents_after_truncation" in page and "kept in blocks" in page
    lengths = (repo / "plots" / "document_lengths.csv").read_text().splitlines()
    assert lengths[0] == "tokens,documents,documents_after_truncation"
    # The truncation point: no document is longer than 512 tokens after truncation.
    after = {int(row.split(",")[0]): int(row.split(",")[2]) for row in lengths[1:]}
    assert sum(n for start, n in after.items() if start > 512) == 0 and after[512] > 0
    run(["dvc", "exp", "run", "-S", "tokenize.max_length=256"], cwd=repo)
    run(["dvc", "plots", "diff", "HEAD", "-o", "compared"], cwd=repo)
    assert "workspace" in (repo / "compared" / "index.html").read_text()


def test_validation_split_holds_out_whole_documents(repo):
    run(["dvc", "exp", "run", "-S", "download.validation_size=0.1"], cwd=repo)
    raw = datasets.load_from_disk(str(repo / "data" / "raw"))
    assert set(raw) == {"train", "validation"}
    train, validation = raw["train"]["text"], raw["validation"]["text"]
    assert len(validation) == round(25_488 * 0.1) and len(train) + len(validation) == 25_488
    assert Counter(train) + Counter(validation) == Counter(builtin_documents())
    grouped = datasets.load_from_disk(str(repo / "data" / "grouped"))
    assert set(grouped) == {"train", "validation"}
    metrics = json.loads((repo / "metrics" / "group.json").read_text())
    assert metrics["validation"]["blocks"] == grouped["validation"].num_rows
    check = json.loads((repo / "metrics" / "check.json").read_text())
    assert check["batch_shape"] == [8, 128] and check["validation_batches"] > 0

    served = [b["input_ids"] for b in make_dataloader(repo / "data" / "grouped", split="validation")]
    assert [row.tolist() for batch in served for row in batch] == grouped["validation"]["input_ids"]
    with pytest.raises(ValueError, match="no 'test' split"):
        make_dataloader(repo / "data" / "grouped", split="test")


def test_add_eos_separates_documents(repo):
    before = json.loads((repo / "metrics" / "tokenize.json").read_text())
    run(["dvc", "exp", "run", "-S", "tokenize.add_eos=true"], cwd=repo)
    after = json.loads((repo / "metrics" / "tokenize.json").read_text())
    assert after["tokens"] == before["tokens"] + before["documents"]
    tokenized = datasets.load_from_disk(str(repo / "data" / "tokenized"))
    assert all(ids[-1] == 50256 for ids in tokenized[:1000]["input_ids"])


def test_stages_print_no_progress_lines_when_not_on_a_terminal(repo):
    result = run(["dvc", "repro", "--force", "--single-item", "tokenize"], cwd=repo)
    assert "\r" not in result.stdout + result.stderr


@pytest.mark.parametrize("present, missing", [(["dvc"], "npm"), (["dvc", "npm"], "chromium")])
def test_screenshot_script_names_what_is_missing_and_changes_nothing(repo_clone, tmp_path, present, missing):
    import shutil

    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in present:
        (tools / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    (repo_clone / "dvc_plots").mkdir()
    (repo_clone / "dvc_plots" / "index.html").write_text("an earlier render")
    result = run(["/bin/bash", "scripts/screenshot_plots.sh"], cwd=repo_clone, check=False, PATH=str(tools))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {missing} is missing; install it") and result.stderr.count("\n") == 1
    assert (repo_clone / "dvc_plots" / "index.html").read_text() == "an earlier render"


def test_the_readme_recovery_after_a_failed_experiment(repo):
    """A failed `dvc exp run -S` leaves its bad value in params.yaml; `git restore params.yaml` undoes it."""
    failed = run(["dvc", "exp", "run", "-S", "group.block_size=0"], cwd=repo, check=False)
    assert failed.returncode != 0 and "block_size: 0" in (repo / "params.yaml").read_text()
    assert run(["dvc", "repro"], cwd=repo, check=False).returncode != 0  # the same error again
    run(["git", "restore", "params.yaml"], cwd=repo)
    run(["dvc", "repro"], cwd=repo)  # rebuilds what the failed run removed
    assert "up to date" in run(["dvc", "status"], cwd=repo).stdout
    assert json.loads((repo / "metrics" / "check.json").read_text())["batch_shape"] == [8, 128]


def test_committing_the_remote_the_readme_way_leaves_an_applied_experiment_out(repo):
    run(["dvc", "exp", "run", "-S", "loader.seed=7"], cwd=repo)
    run(["dvc", "remote", "add", "-d", "team", str(repo.parent / "remote")], cwd=repo)
    run(["git", "add", ".dvc/config"], cwd=repo)
    run(["git", "commit", "-qm", "Add the team's DVC remote"], cwd=repo)
    committed = run(["git", "show", "HEAD:params.yaml"], cwd=repo).stdout
    assert "seed: 42" in committed.split("loader:")[1] and "seed: 7" in (repo / "params.yaml").read_text()
    assert run(["git", "show", "--name-only", "--format=", "HEAD"], cwd=repo).stdout.split() == [".dvc/config"]


def test_outputs_are_hardlinked_into_the_cache_not_copied(built_repo, repo):
    """data/ plus .dvc/cache is 1x data/, and stages still replace their read-only outputs."""

    def size(*folders):  # bytes on disk, each inode once
        files = {path.stat().st_ino: path.stat().st_size for folder in folders for path in folder.rglob("*") if path.is_file()}
        return sum(files.values())

    assert size(built_repo / "data", built_repo / ".dvc" / "cache") < 1.2 * size(built_repo / "data")
    arrow = next((built_repo / "data" / "grouped").glob("*.arrow"))
    assert arrow.stat().st_nlink == 2 and not arrow.stat().st_mode & 0o222  # linked, read-only
    run(["dvc", "checkout", "--relink"], cwd=repo)  # the copied fixture: link it like a fresh build
    run(["dvc", "exp", "run", "-S", "group.block_size=64"], cwd=repo)
    assert json.loads((repo / "metrics" / "check.json").read_text())["batch_shape"] == [8, 64]
    assert "up to date" in run(["dvc", "status"], cwd=repo).stdout
