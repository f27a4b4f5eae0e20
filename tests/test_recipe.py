"""A data recipe end to end with real dvc: a second corpus, its own stages, the plan, a weight change."""

import json

import numpy as np
import yaml

from causal_lm_data import make_dataloader
from tests.helpers import add_to_mix, run


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_a_two_corpus_recipe_plans_mixes_and_changes_a_weight_alone(repo, tmp_path):
    corpus = tmp_path / "speeches.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"Speech {i}: " + "we the people " * (i % 40 + 5)}) + "\n" for i in range(3000))
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpora"] = {"speeches": {"dataset": "local", "local_path": str(corpus)}}  # the other keys: defaults
    params["mixture"]["weights"] = {"main": 3, "speeches": 1}
    params["mixture"]["max_repetition"] = 10
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    add_to_mix(repo, "speeches")

    # Adding a corpus runs its own stages, the plan and the check: main's stages stay as they are.
    assert ran(run(["dvc", "repro"], cwd=repo).stdout) == {
        "corpus-download@speeches",
        "corpus-clean@speeches",
        "corpus-tokenize@speeches",
        "corpus-group@speeches",
        "mix",
        "check",
    }
    mix = json.loads((repo / "metrics" / "mix.json").read_text())["corpora"]
    assert mix["main"]["target_share"] == 0.75 and abs(mix["main"]["share"] - 0.75) < 1e-4
    assert mix["speeches"]["passes"] > 1  # the small corpus is upsampled
    plan = json.loads((repo / "data" / "mix.json").read_text())
    assert [s["folder"] for s in plan["sources"]] == ["grouped", "corpora/speeches/grouped"]

    loader = make_dataloader(repo / "data" / "mix.json", batch_size=8, return_source=True)
    quotas = np.array([s["blocks_per_epoch"] for s in plan["sources"]]) / plan["epoch_blocks"]
    for batch, _ in zip(loader, range(50)):
        counts = np.bincount(batch["source"].numpy(), minlength=2)
        assert (np.abs(counts - 8 * quotas) < 1 + 1e-9).all()

    # A weight change re-plans and re-checks, nothing else; dvc metrics diff shows the new shares.
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "two corpora"], cwd=repo)
    assert ran(run(["dvc", "exp", "run", "-S", "mixture.weights.main=1"], cwd=repo).stdout) == {"mix", "check"}
    diff = run(["dvc", "metrics", "diff", "--json"], cwd=repo).stdout
    changed = json.loads(diff)["metrics/mix.json"]
    assert abs(changed["corpora.main.share"]["new"] - 0.5) < 1e-4 and abs(changed["corpora.main.share"]["old"] - 0.75) < 1e-4
    assert changed["corpora.main.target_share"] == {"old": 0.75, "new": 0.5, "diff": -0.25}


def test_corpora_that_disagree_on_the_tokenizer_are_refused_in_one_line(repo, tmp_path):
    corpus = tmp_path / "other.txt"
    corpus.write_text("".join(f"line {i} of another corpus\n" for i in range(4000)))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpora"] = {"other": {**params["download"], "dataset": "local", "local_path": str(corpus)}}
    params["mixture"]["weights"] = {"main": 1, "other": 1}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    add_to_mix(repo, "other")
    run(["dvc", "repro", "corpus-group@other"], cwd=repo)
    provenance = repo / "data" / "corpora" / "other" / "grouped" / "provenance.json"
    recorded = json.loads(provenance.read_text())
    provenance.chmod(0o644)
    provenance.write_text(json.dumps({**recorded, "tokenizer_sha256": "0" * 64}))
    failed = run(["dvc", "repro", "--single-item", "mix"], cwd=repo, check=False)
    assert failed.returncode != 0
    assert "the corpora differ in tokenizer_sha256 (main: " in failed.stderr


def test_a_multi_source_file_yields_one_corpus_per_source(tmp_path):
    """The Pile's layout: one .jsonl.zst whose records name their source in meta.pile_set_name."""
    import zstandard

    from causal_lm_data.format import read_table
    from tests.helpers import local, stage_in

    records = [
        {"text": f"{source} document {i}", "meta": {"pile_set_name": source}}
        for i in range(300)
        for source in ("Github", "Wikipedia (en)", "ArXiv")
    ]
    records.append({"text": "no source at all", "meta": {}})
    corpus = tmp_path / "pile.jsonl.zst"
    corpus.write_bytes(zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    for source in ("Github", "Wikipedia (en)"):
        work = tmp_path / source.split()[0]
        work.mkdir()
        result = stage_in(
            work, "download", **local(corpus), download__source_field="meta.pile_set_name", download__source_value=source
        )
        assert result.returncode == 0, result.stderr
        texts = read_table(work / "data" / "raw", "download").column("text").to_pylist()
        assert texts == [f"{source} document {i}" for i in range(300)]
        metrics = json.loads((work / "metrics" / "download.json").read_text())
        assert metrics["documents"] == 300 and metrics["documents_of_other_sources"] == 601
    only_one = stage_in(tmp_path / "Github", "download", **local(corpus), download__source_field="meta.pile_set_name")
    assert only_one.returncode == 1 and "set both download.source_field and download.source_value" in only_one.stderr


def test_check_hashes_every_corpus_it_mixes(repo, tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(f"note {i}: " + "the quick brown fox " * (i % 30 + 3) + "\n" for i in range(3000)))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["corpora"] = {"notes": {"dataset": "local", "local_path": str(corpus)}}
    params["mixture"]["weights"] = {"main": 9, "notes": 1}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    add_to_mix(repo, "notes")
    run(["dvc", "repro"], cwd=repo)
    shard = sorted((repo / "data" / "corpora" / "notes" / "grouped").glob("*.arrow"))[0]
    content = bytearray(shard.read_bytes())
    content[-100] ^= 0xFF  # one flipped bit of data: only the hash can tell
    shard.chmod(0o644)
    shard.write_bytes(bytes(content))
    failed = run(["dvc", "repro", "--force", "--single-item", "check"], cwd=repo, check=False)
    assert failed.returncode != 0
    assert (
        "corpora/notes/grouped is corrupt or truncated (data-00000-of-00001.arrow does not match the hash in state.json)"
        in failed.stderr
    )
