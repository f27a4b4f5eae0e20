"""The clean stage: what it drops is a pure function of the documents and params, counted per reason."""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from causal_lm_data.format import read_table, shard_name, split_names
from causal_lm_data.pipeline.clean import (
    MERSENNE,
    CleanConfig,
    band_keys,
    normalized,
    permutations,
    signature,
    simplify,
    words_of,
)
from causal_lm_data.pipeline.writer import write_index, write_shard
from tests.helpers import REPO, run, stage_in, write_params

STEPS = ("nfc", "whitespace", "casefold")


def texts_of(folder: Path) -> dict[str, list[str]]:
    return {split or "train": read_table(folder / split, "clean")["text"].to_pylist() for split in split_names(folder, "clean")}


def write_raw(folder: Path, documents: list[str], per_shard: int = 400) -> None:
    """A raw folder (download's format) of `documents`, cut into shards of `per_shard`."""
    import pyarrow as pa

    from causal_lm_data.pipeline.raw import SCHEMA

    folder.mkdir(parents=True)
    pieces = [documents[i : i + per_shard] for i in range(0, len(documents), per_shard)]
    written = []
    for index, piece in enumerate(pieces):
        name = shard_name(index, len(pieces))
        rows, sha256 = write_shard(folder / name, SCHEMA, [pa.record_batch([pa.array(piece, pa.string())], schema=SCHEMA)])
        written.append((name, sha256, rows))
    write_index(folder, SCHEMA, written)


def clean(workdir: Path, raw: str = "data/raw", check: bool = True, workers: int = 1, **params):
    write_params(workdir, **{f"clean__{key}": value for key, value in params.items()})
    command = [
        "python", "-m", "stages.clean", "--params", "clean", "--input", raw, "--output", "data/clean",
        "--dropped", "data/dropped", "--metrics", "metrics/clean.json", "--plot", "plots/clean_drops.csv",
    ]  # fmt: skip
    return run(command, cwd=workdir, check=check, PYTHONPATH=str(REPO), PIPELINE_WORKERS=str(workers))


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """The built-in corpus downloaded with a 5% validation split: real text with real duplicates."""
    from tests.helpers import clone_repo

    clone = clone_repo(tmp_path_factory.mktemp("clean") / "repo")
    result = stage_in(clone, "download", download__validation_size=0.05)
    assert result.returncode == 0, result.stderr
    return clone


@pytest.fixture
def workdir(downloaded, tmp_path):
    import shutil

    return shutil.copytree(downloaded, tmp_path / "repo", symlinks=True)


# --- the definitions -------------------------------------------------------------------


def reference_signature(text: str, config: CleanConfig) -> list[int]:
    """datatrove's MinHash, written with Python integers: ((h * a + b) mod 2^64) mod (2^61 - 1), minimum per hash."""
    words = simplify(text).split(" ")
    grams = {" ".join(words[i : i + config.near_ngram]) for i in range(len(words) - config.near_ngram + 1)}
    hashes = [int.from_bytes(hashlib.sha1(gram.encode()).digest()[:8], "little") for gram in grams]
    a, b = permutations(config)
    return [min(((h * int(x) + int(y)) % (1 << 64)) % int(MERSENNE) for h in hashes) for x, y in zip(a[0], b[0])]


def test_signature_is_datatroves_definition(downloaded):
    config = CleanConfig(near=True)
    texts = [t for t in texts_of(downloaded / "data/raw")["train"][:400] if len(t.split()) > 40][:12]
    assert len(texts) == 12
    a, b = permutations(config)
    for text in texts:
        from causal_lm_data.pipeline.clean import ngram_hashes

        ours = signature(ngram_hashes(words_of(text), config.near_ngram), a, b)
        assert ours.tolist() == reference_signature(text, config)
    # the parameters are numpy's RandomState(seed), as datatrove draws them
    generator = np.random.RandomState(1)
    assert (a == generator.randint(1, MERSENNE, dtype=np.uint64, size=(1, 112))).all()


def test_simplify_follows_datatrove():
    assert simplify("  Hello, WORLD!  It's 3.14 — café\tnow ") == "hello world it s 0 cafe now"
    assert words_of("...") == []


def test_band_keys_are_equal_exactly_when_bands_are():
    config = CleanConfig(near=True)
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 1 << 61, size=(50, 112), dtype=np.uint64)
    signatures[7, 8:16] = signatures[3, 8:16]
    keys = band_keys(signatures, config)
    assert keys[7, 1] == keys[3, 1]
    assert (keys[7, [0, *range(2, 14)]] != keys[3, [0, *range(2, 14)]]).all()


def test_normalisations_are_the_stated_ones():
    assert normalized("Cafe\u0301  Au\tLait\n", STEPS) == "café au lait"
    assert normalized("Cafe\u0301  Au\tLait\n", ()) == "Cafe\u0301  Au\tLait\n"


# --- the stage on real text ---------------------------------------------------------------


def test_default_params_keep_every_document_file_for_file(workdir):
    clean(workdir)
    for split in ("train", "validation"):
        raw, kept = workdir / "data/raw" / split, workdir / "data/clean" / split
        assert sorted(p.name for p in raw.iterdir()) == sorted(p.name for p in kept.iterdir())
        for path in raw.iterdir():
            assert path.read_bytes() == (kept / path.name).read_bytes()
    metrics = json.loads((workdir / "metrics/clean.json").read_text())
    assert metrics["documents"] == metrics["documents_read"] == 24214
    assert set(metrics["dropped"].values()) == {0}


def test_no_validation_document_is_in_training_after_cleaning(workdir):
    raw = texts_of(workdir / "data/raw")
    leaked = {normalized(t, STEPS) for t in raw["validation"]} & {normalized(t, STEPS) for t in raw["train"]}
    assert len(leaked) >= 30  # the measured case: 40 of 1,274 validation documents are verbatim in training
    clean(workdir, exact=True, near=True)
    kept = texts_of(workdir / "data/clean")
    train = {normalized(t, STEPS) for t in kept["train"]}
    assert not {normalized(t, STEPS) for t in kept["validation"]} & train
    # the validation documents stay (but for copies within the validation split itself)
    assert len({normalized(t, STEPS) for t in kept["validation"]}) == len({normalized(t, STEPS) for t in raw["validation"]})
    # exact duplicates are kept once: the kept training texts are unique after normalising
    assert len(train) == len(kept["train"])
    metrics = json.loads((workdir / "metrics/clean.json").read_text())
    assert metrics["documents"] == len(kept["train"])
    assert metrics["documents"] + sum(metrics["dropped"].values()) == metrics["documents_read"]
    assert metrics["dropped"]["exact_duplicate"] > 600


def test_dropped_documents_name_the_document_they_duplicate(workdir):
    clean(workdir, exact=True)
    raw = workdir / "data/raw"
    dropped = read_table(workdir / "data/dropped", "clean").to_pylist()
    tables = {split: read_table(raw / split, "download")["text"].to_pylist() for split in ("train", "validation")}
    starts = {}
    for split in ("train", "validation"):
        from causal_lm_data.format import shards

        rows = [s.rows for s in shards(raw / split, "download")]
        starts[split] = np.cumsum([0, *rows])
    assert dropped and all(row["reason"] == "exact_duplicate" for row in dropped)
    for row in dropped:
        text = tables[row["split"]][starts[row["split"]][row["shard"]] + row["row"]]
        original = tables[row["duplicate_split"]][starts[row["duplicate_split"]][row["duplicate_shard"]] + row["duplicate_row"]]
        assert normalized(text, STEPS) == normalized(original, STEPS)
        # the one kept is the earlier: validation first, then source order
        assert (row["duplicate_split"], row["duplicate_shard"], row["duplicate_row"]) < (
            row["split"],
            row["shard"],
            row["row"],
        ) or (row["duplicate_split"] == "validation" and row["split"] == "train")


def planted(count: int = 150, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """Documents of 120 random words each, and a copy of each of the first `count` with a few edits."""
    rng = random.Random(seed)
    # words of letters only: simplify() turns every number into 0
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(5000)]
    originals = [" ".join(rng.choice(vocabulary) for _ in range(120)) for _ in range(2 * count)]
    documents, pairs = list(originals), []
    for index in range(count):
        words = originals[index].split()
        words[rng.randrange(120)] = "changed"  # a word changed, one added at the end, whitespace doubled
        copy = "  ".join(words) + " extra"
        pairs.append((index, len(documents)))
        documents.append(copy)
    return documents, pairs


def test_planted_near_duplicates_are_found_and_the_original_kept(workdir):
    documents, pairs = planted()
    write_raw(workdir / "data/planted", documents, per_shard=64)
    clean(workdir, raw="data/planted", near=True)
    kept = read_table(workdir / "data/clean", "clean")["text"].to_pylist()
    assert all(documents[original] in kept for original, _ in pairs)
    found = sum(documents[copy] not in kept for _, copy in pairs)
    assert found >= 0.95 * len(pairs)  # Jaccard ~0.9: caught with probability ~0.9999 per pair
    # documents unrelated to any other stay
    assert all(text in kept for text in documents[len(pairs) : 2 * len(pairs)])


def test_jaccard_check_keeps_pairs_below_its_threshold(workdir):
    documents, pairs = planted(count=60)
    write_raw(workdir / "data/planted", documents, per_shard=64)
    clean(workdir, raw="data/planted", near=True, near_jaccard=0.99)
    kept = read_table(workdir / "data/clean", "clean")["text"].to_pylist()
    assert all(documents[copy] in kept for _, copy in pairs)  # their similarity is ~0.9 < 0.99
    clean(workdir, raw="data/planted", near=True, near_jaccard=0.7)
    kept = read_table(workdir / "data/clean", "clean")["text"].to_pylist()
    assert sum(documents[copy] not in kept for _, copy in pairs) >= 0.95 * len(pairs)


def outputs(workdir: Path) -> dict:
    """Every file the clean stage writes, by path."""
    files = [p for d in ("data/clean", "data/dropped") for p in sorted((workdir / d).rglob("*")) if p.is_file()]
    return {p.relative_to(workdir): p.read_bytes() for p in [*files, workdir / "metrics/clean.json"]}


def test_outputs_are_identical_at_one_and_two_workers(workdir):
    clean(workdir, exact=True, near=True, min_words=3, workers=1)
    first = outputs(workdir)
    clean(workdir, exact=True, near=True, min_words=3, workers=2)
    assert outputs(workdir) == first


def test_decontamination_drops_training_documents_sharing_an_ngram(workdir):
    train = texts_of(workdir / "data/raw")["train"]
    long_ones = [t for t in train if len(words_of(t)) > 40][:3]
    held_out = workdir / "inputs" / "eval.jsonl"
    # a 13-word window from inside each document, as a benchmark's test set might quote it
    lines = [json.dumps({"text": " ".join(t.split()[10:23])}) for t in long_ones]
    held_out.write_text("\n".join(lines) + "\n")
    clean(workdir, decontaminate=True, decontaminate_path=str(held_out))
    kept = set(texts_of(workdir / "data/clean")["train"])
    assert not any(t in kept for t in long_ones)
    metrics = json.loads((workdir / "metrics/clean.json").read_text())
    assert metrics["dropped"]["contaminated"] >= 3
    assert metrics["validation"]["dropped"]["contaminated"] == 0


@pytest.mark.parametrize(
    "params, message",
    [
        ({"near": True, "near_bands": 10}, "'clean.near_bands' x 'clean.near_rows' = 80 must equal 'clean.near_hashes' (112)"),
        ({"near_jaccard": 2}, "'clean.near_jaccard' must be <= 1"),
        ({"exact_normalize": ["lowercase"]}, "'clean.exact_normalize' knows nfc, whitespace, casefold"),
        ({"min_words": 10, "max_words": 5}, "'clean.max_words' (5) is below 'clean.min_words' (10)"),
        ({"decontaminate": True, "decontaminate_path": "no/such/file"}, "'clean.decontaminate_path' names no/such/file"),
    ],
)
def test_bad_params_are_one_line_before_any_work(workdir, params, message):
    result = clean(workdir, check=False, **params)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (workdir / "data/clean").exists()


def test_a_held_out_folder_is_read_by_downloads_folder_rule(workdir, tmp_path):
    """Its data files are read (README-like files aside); a link out of it, or a file of no format, is refused by name."""
    train = texts_of(workdir / "data/raw")["train"]
    quoted = next(t for t in train if len(words_of(t)) > 40)
    folder = workdir / "inputs" / "evals"
    folder.mkdir()
    (folder / "README.md").write_text("# eval sets\n")
    (folder / "eval.jsonl").write_text(json.dumps({"text": " ".join(quoted.split()[5:18])}) + "\n")
    clean(workdir, decontaminate=True, decontaminate_path=str(folder))
    assert quoted not in set(texts_of(workdir / "data/clean")["train"])

    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(json.dumps({"text": "held out elsewhere"}) + "\n")
    (folder / "linked.jsonl").symlink_to(outside)
    result = clean(workdir, check=False, decontaminate=True, decontaminate_path=str(folder))
    assert result.returncode == 1 and "linked.jsonl" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    (folder / "linked.jsonl").unlink()

    (folder / "scores.xlsx").write_bytes(b"PK\x03\x04")
    result = clean(workdir, check=False, decontaminate=True, decontaminate_path=str(folder))
    assert result.returncode == 1 and "scores.xlsx" in result.stderr and "no readable format" in result.stderr
