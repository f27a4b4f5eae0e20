"""The exactness proof on bounded text (one huge document costs no more than a short one), and proof
entries read bounded: a FIFO, a symlink, a folder, a huge or unreadable entry means the proof runs again,
never a hang or a crash, and the stage's outputs stay byte-identical."""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from causal_lm_data.pipeline.readers import builtin_documents
from causal_lm_data.tokenizer import (
    NO_PROOF_CACHE,
    PROOF_ENTRY_BYTES,
    SAMPLE_BYTES,
    SAMPLE_DOCUMENT_BYTES,
    Proof,
    bounded_sample,
    bounded_text,
    load_encoder,
    read_entry,
)
from tests.helpers import REPO, run, stage_command, stage_in, write_params

# Seconds a stage or a load may take here (the machine is shared): a hang fails the test instead of the suite.
TIMEOUT = 120


@pytest.fixture(scope="module")
def documents():
    return list(builtin_documents())


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


@pytest.mark.parametrize(
    "text, limit, expected",
    [
        ("hello world foo", 8, "hello"),  # before the last space that leaves at most 8 bytes
        ("hello world", 11, "hello world"),  # exactly the limit: whole
        ("hello world!", 11, "hello"),  # one byte over
        ("hello\nworld", 8, "hello"),  # a line boundary
        ("hello\r\nworld", 6, "hello"),  # before \r, never between \r and \n
        ("a    b c", 4, "a"),  # at the start of a run of spaces, never inside it
        ("one two  three", 12, "one two"),
        ("tab\there", 4, "tab"),
        ("abcdefghij", 4, "abcd"),  # no whitespace: at the limit
        (" abcdef", 3, " ab"),  # whitespace only first: an empty prefix is no cut
        ("日本語日本語", 7, "日本"),  # 3-byte characters: never inside one
        ("🤖🤖🤖", 9, "🤖🤖"),  # 4-byte characters
        ("e\u0301e\u0301e\u0301", 4, "e\u0301e"),  # a character boundary, not a grapheme's: both engines see it
        ("a\u3000b c", 5, "a\u3000b"),  # only ASCII whitespace cuts (U+3000 is 3 bytes of one character)
        ("", 4, ""),
    ],
)
def test_a_sample_document_is_cut_to_a_prefix_before_whitespace(text, limit, expected):
    cut = bounded_text(text, limit)
    assert cut == expected and text.startswith(cut) and utf8_size(cut) <= limit
    assert bounded_text(text[: limit + 1], limit) == cut  # decided by the first limit + 1 characters alone


def test_the_sample_is_bounded_per_document_and_in_all_and_the_builtin_sample_is_whole(documents):
    assert bounded_sample(documents) == documents[:1000]  # the proofs made before stay valid
    huge = ["word " * 1_000_000] * 2000
    sample = bounded_sample(huge)
    sizes = list(map(utf8_size, sample))
    assert max(sizes) <= SAMPLE_DOCUMENT_BYTES and sum(sizes) <= SAMPLE_BYTES
    assert sample == ["word " * 3276 + "word"] * (SAMPLE_BYTES // SAMPLE_DOCUMENT_BYTES)  # 64 of 16 KiB fill 1 MiB
    sample = bounded_sample(["x" * 1000, "y" * 10_000_000])
    assert sample == ["x" * 1000, "y" * SAMPLE_DOCUMENT_BYTES]
    sample = bounded_sample(["z " * 8000] * 200)  # 16,000 bytes each: 65 whole, then what is left, cut
    assert sample[:65] == ["z " * 8000] * 65 and sample[65:] == ["z " * 4287 + "z", "z"]
    assert sum(map(utf8_size, sample)) == SAMPLE_BYTES


def test_the_proof_key_covers_the_bounded_texts_only(tmp_path, monkeypatch, documents):
    """What the engines were compared on is what the key holds: text past a document's cut changes nothing,
    text before it is another proof."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(NO_PROOF_CACHE, raising=False)
    long = " ".join(documents[:100])
    assert utf8_size(long) > SAMPLE_DOCUMENT_BYTES
    assert load_encoder("distilgpt2", sample=[long]).proof_reused is None
    assert load_encoder("distilgpt2", sample=[long + " more"]).proof_reused is not None  # past the cut
    assert load_encoder("distilgpt2", sample=["X" + long]).proof_reused is None  # before it


def test_a_huge_sample_document_costs_what_a_short_one_does(tmp_path, documents):
    """The reference engine keeps ~200 bytes per token: a 5 MB document in the sample cost ~750 MB and
    ~5 s before it was cut; now the proof's peak is the same as with a short one."""
    script = (
        "import resource, sys, time\n"
        "from causal_lm_data.pipeline.readers import builtin_documents\n"
        "from causal_lm_data.tokenizer import load_encoder\n"
        "huge = ' '.join(builtin_documents())[:5_000_000]\n"
        "load_encoder('distilgpt2', sample=['Hello world'])\n"  # the engines' own memory, once
        "before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()\n"
        "encoder = load_encoder('distilgpt2', sample=[huge] + list(builtin_documents())[:999])\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024\n"
        "print(encoder.engine, grown, round(time.monotonic() - start, 2))\n"
    )
    result = run(["python", "-c", script], cwd=tmp_path, PYTHONPATH=str(REPO), timeout=TIMEOUT, **{NO_PROOF_CACHE: "1"})
    engine, grown_mb, seconds = result.stdout.split()
    assert engine == "fastokens" and int(grown_mb) < 150, result.stdout
    assert float(seconds) < 20, result.stdout


# --- proof entries read bounded ---


@pytest.fixture(scope="module")
def proven(tmp_path_factory):
    """A folder where download ran, and the tokenize stage's outputs and proof entry made by proving once."""
    workdir = tmp_path_factory.mktemp("proof-bounded")
    assert stage_in(workdir, "download").returncode == 0
    assert stage_in(workdir, "clean").returncode == 0  # tokenize's input
    write_params(workdir)
    stdout, outputs = tokenize(workdir, workdir / "xdg")
    [entry] = (workdir / "xdg" / "causal-lm-data" / "proofs").iterdir()
    assert "proof reused" not in stdout
    return workdir, outputs, entry


OUTPUTS = ["data/tokenized", "metrics/tokenize.json", "plots/document_lengths.csv", "plots/tokenize_tokens.csv"]


def tokenize(workdir: Path, cache: Path, **env) -> tuple[str, dict]:
    """Run the real tokenize stage with this proof cache; its stdout, and every output file's bytes."""
    result = run(
        stage_command("tokenize", workdir), cwd=workdir, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(cache), timeout=TIMEOUT, **env
    )
    files = [path for output in OUTPUTS for path in sorted((workdir / output).rglob("*")) or [workdir / output]]
    return result.stdout, {str(path.relative_to(workdir)): path.read_bytes() for path in files if path.is_file()}


def fifo(entry: Path, valid: bytes) -> None:
    os.mkfifo(entry)  # reading it waits for a writer that never comes


def huge(entry: Path, valid: bytes) -> None:
    with entry.open("wb") as file:  # a genuine entry at its start, 1 GiB of holes after: JSON never read
        file.write(valid)
        file.truncate(1 << 30)


def over_the_cap(entry: Path, valid: bytes) -> None:
    """Valid JSON holding the right key, one byte more than an entry may be: not read, so not trusted."""
    entry.write_bytes(valid + b" " * (PROOF_ENTRY_BYTES + 1 - len(valid)))


def symlink_to_a_genuine_entry(entry: Path, valid: bytes) -> None:
    target = entry.parent.parent / "elsewhere.json"
    target.write_bytes(valid)
    entry.symlink_to(target)


ENTRY_DAMAGE = {
    "fifo": fifo,
    "symlink-to-dev-zero": lambda entry, valid: entry.symlink_to("/dev/zero"),
    "symlink-to-dev-urandom": lambda entry, valid: entry.symlink_to("/dev/urandom"),
    "symlink-to-itself": lambda entry, valid: entry.symlink_to(entry.name),
    "symlink-to-a-genuine-entry": symlink_to_a_genuine_entry,
    "a-folder": lambda entry, valid: entry.mkdir(),
    "huge": huge,
    "over-the-cap": over_the_cap,
}


@pytest.mark.parametrize("damage", ENTRY_DAMAGE.values(), ids=ENTRY_DAMAGE.keys())
def test_an_entry_that_is_no_regular_file_is_proven_again_without_hanging(tmp_path, proven, damage):
    workdir, expected, entry = proven
    cache = tmp_path / "xdg"
    folder = cache / "causal-lm-data" / "proofs"
    folder.mkdir(parents=True)
    damage(folder / entry.name, entry.read_bytes())
    stdout, outputs = tokenize(workdir, cache)
    assert "proof reused" not in stdout and "(fastokens)" in stdout
    assert outputs == expected
    written = folder / entry.name
    if not written.is_dir():  # rewritten in place of what was there (the link itself, not its target)
        assert not written.is_symlink() and written.read_bytes() == entry.read_bytes()
        assert read_entry(written) == entry.read_bytes()
    if (folder.parent / "elsewhere.json").exists():
        assert (folder.parent / "elsewhere.json").read_bytes() == entry.read_bytes()


def fifo_folder(proofs: Path, name: str) -> None:
    """The proofs folder a symlink to another folder, where a FIFO has the entry's name."""
    elsewhere = proofs.parent / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / name)
    proofs.symlink_to(elsewhere)


FOLDER_DAMAGE = {
    "symlink-to-dev-zero": lambda proofs, name: proofs.symlink_to("/dev/zero"),
    "symlink-to-a-folder-with-a-fifo": fifo_folder,
    "a-file": lambda proofs, name: proofs.write_bytes(b"{}"),
}


@pytest.mark.parametrize("damage", FOLDER_DAMAGE.values(), ids=FOLDER_DAMAGE.keys())
def test_a_proofs_folder_that_leads_nowhere_good_is_proven_again_without_hanging(tmp_path, proven, damage):
    workdir, expected, entry = proven
    cache = tmp_path / "xdg"
    (cache / "causal-lm-data").mkdir(parents=True)
    damage(cache / "causal-lm-data" / "proofs", entry.name)
    stdout, outputs = tokenize(workdir, cache)
    assert "proof reused" not in stdout and "(fastokens)" in stdout
    assert outputs == expected


def test_a_symlinked_cache_folder_still_serves_its_entries(tmp_path, proven):
    """A cache moved to another disk behind a symlink (~/.cache -> /scratch/cache) is the user's own:
    only the entry itself must be a regular file."""
    workdir, expected, entry = proven
    moved = tmp_path / "scratch" / "causal-lm-data" / "proofs"
    moved.mkdir(parents=True)
    shutil.copy(entry, moved / entry.name)
    (tmp_path / "xdg").symlink_to(tmp_path / "scratch")
    stdout, outputs = tokenize(workdir, tmp_path / "xdg")
    assert "proof reused from" in stdout and outputs == expected


def test_an_unreadable_entry_is_proven_again(proven):
    """chmod 000: root reads it anyway (and rightly reuses a genuine entry), so the load runs as the
    unprivileged user `nobody` (setpriv) when the tests run as root; the cache lives outside pytest's
    0700 temporary folder so that user can reach it."""
    _, _, entry = proven
    cache = Path(tempfile.mkdtemp(prefix="proof-unreadable-"))
    try:
        cache.chmod(0o755)
        folder = cache / "causal-lm-data" / "proofs"
        folder.mkdir(parents=True)
        shutil.copy(entry, folder / entry.name)
        (folder / entry.name).chmod(0)
        prefix = []
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: an unreadable file cannot be made")
            for path in (cache / "causal-lm-data", folder, folder / entry.name):
                os.chown(path, 65534, 65534)
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            # A clone inside a 0700 folder (mktemp -d) is out of that user's reach: nothing to test there.
            reach = run(
                [*prefix, sys.executable, "-c", "import causal_lm_data.tokenizer"], cwd=cache, check=False, PYTHONPATH=str(REPO)
            )
            if reach.returncode != 0:
                pytest.skip("the repository or its environment is not readable by the unprivileged user 'nobody' here")
        script = (
            "from causal_lm_data.pipeline.readers import builtin_documents\n"
            "from causal_lm_data.tokenizer import load_encoder\n"
            "encoder = load_encoder('distilgpt2', sample=list(builtin_documents())[:1000])\n"
            "print(encoder.engine, encoder.proof_reused)\n"
        )
        result = run(
            [*prefix, sys.executable, "-c", script], cwd=cache, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(cache), timeout=TIMEOUT
        )
        assert result.stdout.split() == ["fastokens", "None"]
        # proven again, and rewritten readable (the old file replaced, not written through)
        assert (folder / entry.name).stat().st_mode & 0o777 != 0
        assert json.loads((folder / entry.name).read_text())["fast_engine_exact"] is True
    finally:
        shutil.rmtree(cache)


def test_read_entry_reads_only_a_bounded_regular_file(tmp_path):
    proof = Proof("{}", "{}", [["text"]])
    entry = tmp_path / "entry.json"
    entry.write_bytes(b"x" * PROOF_ENTRY_BYTES)
    assert read_entry(entry) == b"x" * PROOF_ENTRY_BYTES  # at the cap: read
    entry.write_bytes(b"x" * (PROOF_ENTRY_BYTES + 1))
    assert read_entry(entry) is None
    assert read_entry(tmp_path / "absent.json") is None
    assert proof.path is not None and not proof.stored()


# --- a missing local_path, named ---


@pytest.mark.parametrize(
    "stage, changes, param",
    [
        (
            "download",
            {"download__local_path": "/nope"},
            "download.local_path",
        ),  # the built-in corpus: not read, still a dependency
        ("download", {"download__dataset": "local", "download__local_path": "/nope"}, "download.local_path"),
        ("download", {"download__dataset": "imdb", "download__local_path": "missing/folder"}, "download.local_path"),
        ("tokenize", {"tokenize__local_path": "/nope"}, "tokenize.local_path"),  # the built-in tokenizer
        ("tokenize", {"tokenize__tokenizer": "local", "tokenize__local_path": "/nope"}, "tokenize.local_path"),
    ],
)
def test_a_missing_local_path_is_one_line_naming_its_param_whatever_the_input(tmp_path, stage, changes, param):
    """dvc.yaml lists local_path as a dependency of download and tokenize whatever the input is, so a missing
    one fails DVC before the stage runs: the stage run alone says so before any work, naming the param."""
    if stage == "tokenize":
        assert stage_in(tmp_path, "download").returncode == 0
    result = stage_in(tmp_path, stage, **changes)
    assert result.returncode == 1 and result.stdout == "", result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    path = changes[param.replace(".", "__")]
    key = param.replace("local_path", "dataset" if stage == "download" else "tokenizer")
    assert line == (
        f"error: no such file or folder: {path} ({param}, a dependency in dvc.yaml whatever {key} is): "
        f"set {param} to an existing file or folder, or back to inputs"
    )
    assert not (tmp_path / "data" / ("raw" if stage == "download" else "tokenized")).exists()


def test_a_corpus_local_path_names_the_corpus_and_a_control_character_is_escaped(tmp_path):
    from causal_lm_data.errors import UserError
    from causal_lm_data.pipeline.inputs import resolve_input

    params = {"dataset": "local", "local_path": str(tmp_path / "typo\x1b[2J.parquet"), "revision": "main"}
    with pytest.raises(UserError) as raised:
        resolve_input("corpora.code", "dataset", params, builtins=[])
    assert "(corpora.code.local_path, a dependency in dvc.yaml whatever corpora.code.dataset is)" in str(raised.value)
    assert "typo\\x1b[2J.parquet" in str(raised.value) and "\x1b" not in str(raised.value)
    params["local_path"] = str(tmp_path)  # an existing one, and a URL (DVC records its etag), still pass
    assert resolve_input("corpora.code", "dataset", params, builtins=[]).kind == "local"
    params["local_path"] = "s3://bucket/missing.parquet"
    assert resolve_input("corpora.code", "dataset", params, builtins=[], urls=True).kind == "remote"


def test_dvc_fails_on_a_missing_local_path_before_the_stage_and_force_shows_the_stage_line(repo_clone):
    """What DVC 3 says itself (it hashes the dependency for its run cache before running the command) cannot
    name the param; `dvc repro --force --single-item download` skips that lookup, so the stage says it."""
    result = run(["dvc", "exp", "run", "-S", "download.local_path=/nope"], cwd=repo_clone, check=False, timeout=TIMEOUT)
    assert result.returncode != 0
    assert "ERROR: failed to reproduce 'download': [Errno 2] No such file or directory: '/nope'" in result.stderr
    forced = run(["dvc", "repro", "--force", "--single-item", "download"], cwd=repo_clone, check=False, timeout=TIMEOUT)
    assert forced.returncode != 0
    assert "error: no such file or folder: /nope (download.local_path, a dependency in dvc.yaml" in forced.stdout + forced.stderr
