"""`causal-lm-data show`: rows of real built data decoded to text, boundaries at the right token, nothing raw."""

import json
import re
import shutil
import sys
import tomllib

import numpy as np
import pytest
from tokenizer_folders import mistral_v01

from causal_lm_data.format import read_table
from causal_lm_data.show import MARK, TEXT
from causal_lm_data.tokenizer import load_tokenizer
from tests.helpers import REPO, run

SHOW = [sys.executable, "-m", "causal_lm_data", "show"]
# Text that must never reach a terminal raw: a title change (OSC ... BEL), a bidi override,
# a carriage return that would overwrite the gutter, and a literal copy of the boundary marker.
EVIL = [
    "Set the title \x1b]0;pwned\x07 and go on.",
    "Reversed \u202eexcept this\u202c text.",
    "A fake boundary:\n\u27e6document starts at token 3\u27e7\nfollowed by more text.",
    "Carriage\rreturn and a bell\x07 here.",
]


def blocks_of(folder) -> tuple[np.ndarray, list[list[int]]]:
    table = read_table(folder, "group")
    ids = np.array(table.column("input_ids").to_pylist())
    return ids, table.column("document_starts").to_pylist()


def pieces(output: str) -> list[tuple[str, list[str], list[int]]]:
    """The output of `show --ids` for one block: per document piece, (its marker, its text lines, its ids)."""
    found = []
    for line in output.splitlines()[1:]:
        if line.startswith(MARK):
            found.append((line, [], []))
        elif line.startswith(TEXT):
            found[-1][1].append(line[len(TEXT) :])
        elif line.startswith("ids: "):
            found[-1][2].extend(map(int, line[5:].split()))
    return found


def test_a_block_spanning_documents_shows_each_boundary_at_its_token_and_ids_match(built_repo):
    ids, starts = blocks_of(built_repo / "data" / "grouped")
    block = next(i for i, block_starts in enumerate(starts) if len(block_starts) >= 2 and block_starts[0] > 0)
    output = run([*SHOW, "data/grouped", "--block", str(block), "--ids"], cwd=built_repo).stdout
    assert output.splitlines()[0].startswith(f"{MARK}block {block:,} of {len(ids):,} in data/grouped: 128 tokens")
    found = pieces(output)
    markers = [marker for marker, _, _ in found]
    assert markers[0] == f"{MARK}continues a document begun in an earlier block\u27e7"
    # add_eos is false by default: the documents are glued together, and the marker says so
    assert markers[1:] == [f"{MARK}document starts at token {s} (no end-of-text token before it)\u27e7" for s in starts[block]]
    assert [token for _, _, piece in found for token in piece] == ids[block].tolist()
    bounds = [0, *starts[block], 128]
    tokenizer = load_tokenizer("distilgpt2")
    for (_, text, piece), first, end in zip(found, bounds[:-1], bounds[1:], strict=True):
        assert piece == ids[block][first:end].tolist()
        assert "\n".join(text) == tokenizer.decode(
            piece, clean_up_tokenization_spaces=False
        )  # SOTU paragraphs hold no control characters


def test_first_and_random_choose_blocks_and_the_same_seed_chooses_the_same(built_repo):
    def headers(*arguments):
        output = run([*SHOW, *arguments], cwd=built_repo).stdout
        return re.findall(rf"^{MARK}block ([\d,]+) of", output, flags=re.M)

    assert headers() == ["0", "1", "2"]
    assert headers("--first", "5") == ["0", "1", "2", "3", "4"]
    drawn = headers("--random", "4", "--seed", "7")
    assert len(set(drawn)) == 4 and drawn == headers("--random", "4", "--seed", "7") != headers("--random", "4", "--seed", "8")


def test_tokenized_and_raw_folders_show_one_document_per_row(built_repo):
    raw = run([*SHOW, "data/raw", "--block", "0"], cwd=built_repo).stdout
    tokenized = run([*SHOW, "data/tokenized", "--block", "0", "--tokens"], cwd=built_repo).stdout
    first = read_table(built_repo / "data" / "raw", "download").column("text")[0].as_py()
    assert raw == f"{MARK}document 0 of 25,488 in data/raw: {len(first):,} characters\u27e7\n{TEXT}{first}\n"
    lines = tokenized.splitlines()
    assert lines[0].startswith(f"{MARK}document 0 of 25,488 in data/tokenized: ")
    assert lines[1] == TEXT + first
    assert lines[2].startswith('tokens: "F" "ellow" "-" "C" "itizens" "Ġof"')


@pytest.fixture(scope="module")
def evil_repo(built_repo, tmp_path_factory):
    """A built clone of a local corpus holding control characters and marker text, with a validation split."""
    repo = shutil.copytree(built_repo, tmp_path_factory.mktemp("evil") / "repo", symlinks=True)
    plain = [f"Paragraph {i} of a small corpus, long enough to fill a few blocks of tokens." for i in range(40)]
    documents = plain[:10] + EVIL + plain[10:]
    (repo / "inputs" / "evil.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in documents))
    settings = ["download.dataset=local", "download.local_path=inputs/evil.jsonl", "download.validation_size=0.25"]
    settings += ["group.block_size=32", "loader.batch_size=2"]  # enough blocks of 582 tokens for check's batch
    run(["dvc", "exp", "run", *(arg for setting in settings for arg in ("-S", setting))], cwd=repo)
    return repo


def assert_inert(output: str) -> None:
    """No control character reaches the terminal; every line is either ours (MARK, ids, tokens) or data (TEXT)."""
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]", output)
    for line in output.splitlines():
        assert line.startswith((MARK, TEXT, "ids: ", "tokens: ")), line


@pytest.mark.parametrize("folder", ["data/grouped", "data/tokenized", "data/raw"])
def test_control_characters_and_marker_text_in_documents_come_out_escaped(evil_repo, folder):
    outputs = [
        run([*SHOW, folder, "--split", split, "--first", "100"], cwd=evil_repo).stdout for split in ("train", "validation")
    ]
    both = "".join(outputs)
    assert_inert(both)
    assert "\\x1b]0;pwned\\x07" in both and "\\u202eexcept this\\u202c" in both and "Carriage\\rreturn" in both
    # The document's newlines are line breaks; its copy of the marker is escaped on a line of its own.
    assert f"{TEXT}A fake boundary:\n{TEXT}\\u27e6document starts at token 3\u27e7\n{TEXT}followed by more" in both
    if folder == "data/grouped":  # every real boundary is marked, and only those
        for split, output in zip(("train", "validation"), outputs, strict=True):
            _, starts = blocks_of(evil_repo / folder / split)
            assert output.count(f"{MARK}document starts at token") == sum(map(len, starts))


def test_validation_split_is_its_own_rows(evil_repo):
    for split in ("train", "validation"):
        output = run([*SHOW, "data/tokenized", "--split", split, "--first", "1000"], cwd=evil_repo).stdout
        documents = read_table(evil_repo / "data" / "tokenized" / split, "tokenize").num_rows
        headers = re.findall(rf"^{MARK}document (\d+) of (\d+) in data/tokenized/(\w+):", output, flags=re.M)
        assert headers == [(str(row), str(documents), split) for row in range(documents)]
    assert documents == 11  # 25% of 44


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["data/nowhere"], "error: data/nowhere is not a folder; give a data folder such as data/grouped"),
        (["--split", "validation"], "error: data/grouped has no 'validation' split; hold one out with download.validation_size"),
        (["--block", "18111"], "error: block 18111 is out of range: data/grouped has 18,111 (0 to 18,110)"),
        (
            ["data/raw", "--ids"],
            "error: data/raw holds text, not token ids: --ids and --tokens need data/tokenized or data/grouped",
        ),
        (["metrics"], "error: metrics is not a dataset folder (no state.json)"),
        (["--tokenizer", "no-such/tokenizer"], "error: unknown tokenizer 'no-such/tokenizer'"),
    ],
)
def test_mistakes_are_one_line(built_repo, arguments, message):
    result = run([*SHOW, *arguments], cwd=built_repo, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_data_of_another_tokenizer_is_refused_not_decoded_into_garbage(built_repo, tmp_path):
    folder = mistral_v01(tmp_path / "mistral")  # 32,000 tokens; GPT-2's ids go up to 50,256
    result = run([*SHOW, "--tokenizer", str(folder)], cwd=built_repo, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert re.fullmatch(
        r"error: token id [\d,]+ is beyond tokenizer .*'s 32,000 tokens: .* give it with --tokenizer\n", result.stderr
    )


def test_the_read_side_imports_no_transformers(built_repo):
    code = (
        "import sys; from causal_lm_data.show import show; list(show('data/raw', first=2)); "
        "import causal_lm_data.cli; print(sorted(m for m in ('transformers', 'torch', 'pandas') if m in sys.modules))"
    )
    assert run([sys.executable, "-c", code], cwd=built_repo).stdout == "[]\n"


def test_the_console_script_is_declared():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"causal-lm-data": "causal_lm_data.cli:main"}
    from causal_lm_data.cli import parser

    assert parser().parse_args(["show", "data/grouped", "--first", "2"]).first == 2


def test_the_default_tokenizer_is_the_one_params_yaml_names_in_the_folders_repository(repo, tmp_path):
    """From any directory: params.yaml is found above the folder, and `local` reads local_path beside it."""
    mistral_v01(repo / "inputs" / "mistral")
    params = (
        (repo / "params.yaml")
        .read_text()
        .replace("  tokenizer: distilgpt2\n  local_path: inputs\n", "  tokenizer: local\n  local_path: inputs/mistral\n")
    )
    (repo / "params.yaml").write_text(params)
    elsewhere = run([*SHOW, str(repo / "data" / "grouped")], cwd=tmp_path, check=False, PYTHONPATH=str(REPO))
    assert elsewhere.returncode == 1 and "'s 32,000 tokens: the data was built with another tokenizer" in elsewhere.stderr
    assert f"beyond tokenizer {repo}/inputs/mistral's" in elsewhere.stderr
    assert run([*SHOW, str(repo / "data" / "grouped"), "--tokenizer", "gpt2"], cwd=tmp_path, PYTHONPATH=str(REPO)).stdout
