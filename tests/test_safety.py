"""Nothing in the data runs or reaches the terminal raw; nothing is written outside the repo and temp."""

import json
import shlex
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from causal_lm_data.errors import printable
from causal_lm_data.tokenizer import load_tokenizer
from tests.helpers import REPO, assert_clean_failure, local, run, stage_command, stage_in


@pytest.mark.parametrize("column", ["\x1b]0;pwned\x07", "two\nlines", "\u202eevil", "bell\x07\x9b31m"])
def test_column_names_from_data_are_escaped_in_errors(tmp_path, column):
    pq.write_table(pa.table({column: ["a document"]}), tmp_path / "corpus.parquet")
    result = stage_in(tmp_path, "download", **local(tmp_path / "corpus.parquet"))
    assert_clean_failure(result, tmp_path, "data/raw", "no column 'text'; set download.text_column to one of: ")
    line = result.stderr
    assert line.endswith("\n") and line.count("\n") == 1
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in line[:-1])
    assert printable(column) in line


def test_printable_escapes_only_controls():
    assert printable("plain text, ünïcode, 日本語 ✓") == "plain text, ünïcode, 日本語 ✓"
    assert printable("a\nb\x1b[31m\x00\u2028") == "a\\nb\\x1b[31m\\x00\\u2028"


def write_remote_code_tokenizer(folder, marker):
    """A tokenizer folder whose config asks transformers to import its own Python."""
    load_tokenizer("gpt2").save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('executed')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )


def test_a_tokenizer_with_its_own_code_is_refused_and_never_run(built_repo, tmp_path):
    marker = tmp_path / "code-ran"
    write_remote_code_tokenizer(tmp_path / "evil", marker)
    shutil.copytree(built_repo / "data" / "raw", tmp_path / "data" / "raw")
    result = stage_in(tmp_path, "tokenize", tokenize__tokenizer="local", tokenize__local_path=str(tmp_path / "evil"))
    assert_clean_failure(result, tmp_path, "data/tokenized", "needs its own Python code ('auto_map' in tokenizer_config.json)")
    assert not marker.exists()


def test_a_prompt_never_blocks_a_run(built_repo, tmp_path):
    """On a terminal transformers would ask [y/N] for remote code; the stage must refuse at once instead."""
    marker = tmp_path / "code-ran"
    write_remote_code_tokenizer(tmp_path / "evil", marker)
    shutil.copytree(built_repo / "data" / "clean", tmp_path / "data" / "clean")  # tokenize's input
    params = (REPO / "params.yaml").read_text().replace("tokenizer: distilgpt2", "tokenizer: local")
    params = params.replace("  local_path: inputs\n  # Hub tokenizers", f"  local_path: {tmp_path / 'evil'}\n  # Hub tokenizers")
    (tmp_path / "params.yaml").write_text(params)
    # `script` gives the stage a real terminal; "y" would answer a prompt if one were shown.
    command = f"cd {tmp_path} && PYTHONPATH={REPO} {shlex.join(stage_command('tokenize', tmp_path))}"
    result = run(["script", "-qec", command, "/dev/null"], cwd=tmp_path, check=False, input_text="y\n", timeout=60)
    assert result.returncode == 1 and "needs its own Python code" in result.stdout
    assert "[y/N]" not in result.stdout and not marker.exists()


def test_local_runs_write_nothing_to_the_home_folder(repo_clone, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    tokenizer = tmp_path / "tokenizer"
    load_tokenizer("gpt2").save_pretrained(tokenizer)
    (tmp_path / "corpus.txt").write_text("one document\nanother document\n" * 200)
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}  # where the libraries cache by default
    command = [
        "dvc",
        "exp",
        "run",
        "-S",
        "download.dataset=local",
        "-S",
        f"download.local_path={tmp_path / 'corpus.txt'}",
        "-S",
        "tokenize.tokenizer=local",
        "-S",
        f"tokenize.local_path={tokenizer}",
        "-S",
        "group.block_size=16",
    ]
    run(command, cwd=repo_clone, **env)
    assert [str(path.relative_to(home)) for path in home.rglob("*")] == []
