"""The built-in tokenizer without transformers, and the fast engine's proof kept and reused: only while
nothing it depends on changes, never from a damaged entry, the same bytes with or without reuse."""

import json
import threading
from pathlib import Path

import pytest
from tokenizers import AddedToken

import causal_lm_data.tokenizer as tokenizer_module
from causal_lm_data.pipeline.readers import builtin_documents
from causal_lm_data.tokenizer import (
    NO_PROOF_CACHE,
    PROBE,
    BuiltinTokenizer,
    Encoder,
    Proof,
    added_token_probe,
    load_encoder,
    load_tokenizer,
    proof_folder,
)
from tests.helpers import REPO, assert_clean_failure, assert_engine_exact, run, stage_command, stage_in, write_params


@pytest.fixture(scope="module")
def documents():
    return list(builtin_documents())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty proof cache of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(NO_PROOF_CACHE, raising=False)
    return tmp_path / "xdg" / "causal-lm-data" / "proofs"


def proofs(cache) -> list:
    return sorted(cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("name", ["distilgpt2", "gpt2"])
def test_the_builtin_reference_is_the_tokenizer_transformers_builds(name, documents):
    """Same tokenizer.json byte for byte, same vocabulary and special ids, same ids on the whole corpus and the probes."""
    builtin, transformers_tokenizer = BuiltinTokenizer(), load_tokenizer(name)
    assert builtin.backend_tokenizer.to_str() == transformers_tokenizer.backend_tokenizer.to_str()
    assert builtin.get_vocab() == transformers_tokenizer.get_vocab()
    assert (builtin.eos_token_id, builtin.bos_token_id) == (transformers_tokenizer.eos_token_id, 50256)
    assert builtin.bos_token_id == transformers_tokenizer.bos_token_id
    assert builtin.truncation_side == transformers_tokenizer.truncation_side
    added = json.loads(builtin.backend_tokenizer.to_str())["added_tokens"]
    texts = documents + PROBE + added_token_probe(added) + ["<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> "]
    assert (
        builtin(texts, add_special_tokens=False)["input_ids"]
        == transformers_tokenizer(texts, add_special_tokens=False)["input_ids"]
    )
    assert builtin(["a<|endoftext|>"], add_special_tokens=False)["input_ids"] == [[64, 50256]]


def test_the_builtin_encoder_loads_without_transformers(tmp_path):
    script = (
        "import sys\n"
        "from causal_lm_data.tokenizer import load_encoder\n"
        "encoder = load_encoder('distilgpt2', sample=['Hello world'])\n"
        "print(encoder.engine, 'transformers' in sys.modules)\n"
    )
    for _ in range(2):  # proving, then reusing the proof
        result = run(["python", "-c", script], cwd=tmp_path, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "xdg"))
        assert result.stdout.split() == ["fastokens", "False"]


def test_a_second_load_reuses_the_proof_and_encodes_the_same(cache, documents):
    first = load_encoder("distilgpt2", sample=documents[:1000])
    assert first.engine == "fastokens" and first.proof_reused is None
    [entry] = proofs(cache)
    stored = json.loads(entry.read_text())
    assert stored["fast_engine_exact"] is True
    assert set(stored["key"]["packages"]) == {"fastokens", "tokenizers", "transformers"}
    assert stored["key"]["packages"]["fastokens"].startswith("0.3.5 RECORD sha256 ")
    second = load_encoder("distilgpt2", sample=documents[:1000])
    assert second.engine == "fastokens" and second.proof_reused == str(entry)
    ids, lengths = second.encode(documents)
    expected_ids, expected_lengths = first.encode(documents)
    assert ids.tolist() == expected_ids.tolist() and lengths.tolist() == expected_lengths.tolist()
    assert_engine_exact(second, load_tokenizer("distilgpt2"), documents)
    assert proofs(cache) == [entry]


def test_another_sample_another_tokenizer_json_or_another_version_proves_again(cache, documents, monkeypatch):
    load_encoder("distilgpt2", sample=documents[:1000])
    assert load_encoder("distilgpt2", sample=documents[1:1001]).proof_reused is None  # another corpus
    assert len(proofs(cache)) == 2

    with_token = BuiltinTokenizer()
    with_token.backend_tokenizer.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False)])
    assert Encoder(with_token, documents[:1000]).proof_reused is None  # another tokenizer.json
    encoder = Encoder(with_token, documents[:1000])
    assert encoder.engine == "fastokens" and encoder.proof_reused is not None
    assert len(proofs(cache)) == 3

    installed = tokenizer_module._installed
    monkeypatch.setattr(tokenizer_module, "_installed", lambda package: "0.3.6" if package == "fastokens" else installed(package))
    assert load_encoder("distilgpt2", sample=documents[:1000]).proof_reused is None  # another fastokens
    assert len(proofs(cache)) == 4

    monkeypatch.setattr(tokenizer_module, "_installed", installed)
    monkeypatch.setenv("FASTOKENS_SEGMENT_CACHE", "64")  # fastokens then encodes through its segment cache
    assert load_encoder("distilgpt2", sample=documents[:1000]).proof_reused is None
    assert len(proofs(cache)) == 5


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:100]),  # cut short
        lambda path: path.write_bytes(b"\xff\xfe not utf-8"),
        lambda path: path.write_text("[]"),
        lambda path: path.write_text(path.read_text().replace("true", "false")),  # says not exact
        lambda path: path.write_text(path.read_text().replace('"0.3.5 RECORD', '"0.3.4 RECORD')),  # another key at this name
        lambda path: (path.unlink(), path.mkdir()),  # not a file
    ],
    ids=["truncated", "not-utf8", "not-an-object", "not-exact", "other-key", "a-folder"],
)
def test_a_damaged_entry_is_never_trusted(cache, documents, damage):
    load_encoder("distilgpt2", sample=documents[:100])
    [entry] = proofs(cache)
    damage(entry)
    encoder = load_encoder("distilgpt2", sample=documents[:100])
    assert encoder.engine == "fastokens" and encoder.proof_reused is None
    if entry.is_file():  # proven again and rewritten
        assert load_encoder("distilgpt2", sample=documents[:100]).proof_reused == str(entry)


def test_no_cache_when_it_is_turned_off_or_cannot_be_written(tmp_path, cache, monkeypatch, documents):
    monkeypatch.setenv(NO_PROOF_CACHE, "1")
    for _ in range(2):
        assert load_encoder("distilgpt2", sample=documents[:100]).proof_reused is None
    assert proofs(cache) == []

    monkeypatch.delenv(NO_PROOF_CACHE)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))  # a cache under a file: no folder can be made
    for _ in range(2):
        encoder = load_encoder("distilgpt2", sample=documents[:100])
        assert encoder.engine == "fastokens" and encoder.proof_reused is None


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert proof_folder() == tmp_path / ".cache" / "causal-lm-data" / "proofs"


def test_concurrent_writers_leave_one_whole_entry(cache):
    proof = Proof("{}", "{}", [PROBE])
    errors = []

    def write_and_read():
        for _ in range(50):
            proof.store()
            if not proof.stored():
                errors.append("a reader saw a missing or partial entry")

    threads = [threading.Thread(target=write_and_read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and proofs(cache) == [proof.path]


def test_an_unproven_tokenizer_still_falls_back_and_nothing_is_kept(cache, documents):
    """fastokens gives other ids with these tokens (tests/test_tokenizer_proof.py): no proof is stored, none reused."""
    tokens = [AddedToken("<|user|>", special=True, lstrip=True, rstrip=True), AddedToken(" United", special=False)]
    chat = BuiltinTokenizer()
    chat.backend_tokenizer.add_tokens(tokens)
    for _ in range(2):
        encoder = Encoder(chat, documents[:100])
        assert encoder.engine == "transformers" and "different ids on the check text" in encoder.fallback
        assert encoder.proof_reused is None
    assert proofs(cache) == []
    assert encoder.encode(["a <|user|> United"])[0].tolist() == [64, 50257, 17013]


def test_the_stage_reuses_the_proof_and_writes_the_same_bytes(tmp_path):
    assert stage_in(tmp_path, "download").returncode == 0
    assert stage_in(tmp_path, "clean").returncode == 0  # tokenize's input
    write_params(tmp_path)
    outputs = ["data/tokenized", "metrics/tokenize.json", "plots/document_lengths.csv", "plots/tokenize_tokens.csv"]

    def tokenize(**env) -> tuple[str, dict]:
        python, *arguments = stage_command("tokenize", tmp_path)
        result = run(
            [python, "-X", "importtime", *arguments],  # every module the stage imports, on stderr
            cwd=tmp_path,
            PYTHONPATH=str(REPO),
            XDG_CACHE_HOME=str(tmp_path / "xdg"),
            **env,
        )
        assert not [line for line in result.stderr.splitlines() if line.endswith("| transformers")]
        files = [path for output in outputs for path in sorted((tmp_path / output).rglob("*")) or [tmp_path / output]]
        return result.stdout, {str(path.relative_to(tmp_path)): path.read_bytes() for path in files if path.is_file()}

    proving, proved = tokenize()
    reusing, reused = tokenize()
    turned_off, unreused = tokenize(**{NO_PROOF_CACHE: "1"})
    assert "proof reused" not in proving and "proof reused" not in turned_off
    [entry] = proofs(tmp_path / "xdg" / "causal-lm-data" / "proofs")
    assert f"tokenize: fastokens' exactness proof reused from {entry} ({NO_PROOF_CACHE}=1 proves it again)" in reusing
    assert len(proved) > 4 and proved == reused == unreused
    assert json.loads(proved["metrics/tokenize.json"])["engine"] == "fastokens"


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:100],  # the first batch cannot be read
        lambda data: data[: len(data) // 2],  # cut at half: the first 1,000 documents still read
        lambda data: data[:5000] + bytes([data[5000] ^ 1]) + data[5001:],  # a flipped bit in the first documents
    ],
    ids=["cut-short", "cut-at-half", "flipped-bit"],
)
def test_damaged_raw_data_still_stops_the_stage_naming_the_folder(tmp_path, damage):
    """The proof's sample is read before the shard is hash-checked; the shard is checked before it is encoded."""
    assert stage_in(tmp_path, "download").returncode == 0
    data = tmp_path / "data" / "raw" / "data-00000-of-00001.arrow"
    data.chmod(0o644)
    data.write_bytes(damage(data.read_bytes()))
    result = stage_in(tmp_path, "tokenize")
    assert_clean_failure(result, tmp_path, "data/tokenized", "data/raw is corrupt or truncated")
    assert "dvc repro --force --single-item download" in result.stderr


def test_no_home_folder_means_no_cache_not_a_failure(tmp_path, monkeypatch, documents):
    """A container run as a user with no passwd entry and no HOME (docker run --user 12345) has no home folder:
    the stage still encodes, exactly, proving each time; a relative HOME would put the cache in the workspace."""
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv(NO_PROOF_CACHE, raising=False)
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert proof_folder() is None
    for _ in range(2):
        encoder = load_encoder("distilgpt2", sample=documents[:100])
        assert encoder.engine == "fastokens" and encoder.proof_reused is None

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "relative")
    assert proof_folder() is None
    load_encoder("distilgpt2", sample=documents[:100])
    assert list(tmp_path.iterdir()) == []


def test_a_rebuilt_engine_with_the_same_install_record_proves_again(tmp_path):
    """An editable or in-place rebuild (`maturin develop`) changes fastokens' compiled module but not its
    RECORD: the proof made with the installed build is not reused with the rebuilt one."""
    import importlib.metadata
    import shutil

    import fastokens

    site = tmp_path / "site"
    shutil.copytree(Path(fastokens.__file__).parent, site / "fastokens")
    [record] = [file for file in importlib.metadata.distribution("fastokens").files if file.name == "RECORD"]
    dist_info = Path(record.locate()).parent
    shutil.copytree(dist_info, site / dist_info.name)  # the same RECORD
    [binary] = (site / "fastokens").glob("*.so")
    with binary.open("ab") as file:
        file.write(b"\0")  # another build: the loader ignores bytes past the ELF sections
    script = (
        "import fastokens\n"
        "from causal_lm_data.tokenizer import _installed, load_encoder\n"
        "encoder = load_encoder('distilgpt2', sample=['Hello world'])\n"
        "print(fastokens.__file__, encoder.engine, encoder.proof_reused is not None, _installed('fastokens'))\n"
    )
    xdg = str(tmp_path / "xdg")

    def load(*path) -> list[str]:
        return run(
            ["python", "-c", script], cwd=tmp_path, PYTHONPATH=":".join([*map(str, path), str(REPO)]), XDG_CACHE_HOME=xdg
        ).stdout.split()

    installed = load()  # proves
    assert installed[1:3] == ["fastokens", "False"] and load()[2] == "True"  # then reuses
    rebuilt = load(site)
    assert rebuilt[0].startswith(str(site)) and rebuilt[1] == "fastokens"
    assert rebuilt[3:7] == installed[3:7]  # the same version and RECORD ...
    assert rebuilt[-1] != installed[-1] and rebuilt[2] == "False"  # ... another binary: proven again
