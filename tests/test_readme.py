"""The README's and the docs pages' commands: what they tell users to type runs, in order, in a fresh clone, and does
what they say.

`test_every_block_runs_in_order` runs every ```bash block, the `$ ` lines of every ```console block and every
```python block, top to bottom, as one reader would: the README first, then each page of PAGES in turn, every page
starting in the README's clone as the README left it (a page's commands build on the README's experiments, and each
page's examples start from the repository, not from wherever the page before ended); within a page the current folder
carries over from block to block (a `cd` into a teammate's clone stays there), a git server and a DVC remote are
folders in a temporary directory. A block
preceded by `<!-- not run by tests: REASON -->` is not run: it is listed with its reason, as a skipped
`test_block_not_run_by_tests[line N]`. A command whose comment starts with `# fails` must exit non-zero. Other
blocks (```yaml, plain ```, output) are text.
"""

import ast
import copy
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import yaml

from causal_lm_data.pipeline.params import validate
from tests.helpers import ENV, REPO, clone_repo, run

README = (REPO / "README.md").read_text()
# The order the pages run in: each page needs what the pages before it made. experiments.md applies a validation
# split and add_eos that loader.md trains on; troubleshooting.md's failed experiment is put back before sharing.md
# keeps the README's long-docs experiment as a branch and publishes it as a registry's tag. The others hold no
# command that runs (they need the Hub, your files or a cluster, and say so).
PAGES = [
    "README.md",
    "docs/experiments.md",
    "docs/loader.md",
    "docs/troubleshooting.md",
    "docs/sharing.md",
    "docs/inputs.md",
    "docs/tokenization.md",
    "docs/recipes.md",
    "docs/cleaning.md",
    "docs/folder-format.md",
    "docs/scaling.md",
    "docs/tests.md",
]
TEXTS = {page: (REPO / page).read_text() for page in PAGES}
BLOCKS = [block for text in TEXTS.values() for block in re.findall(r"```(\w*)\n(.*?)```", text, re.S)]

RUN = ("bash", "console", "python")
NOT_RUN = re.compile(r"<!-- not run by tests: (.+?) -->")
FAILS = re.compile(r"\s#\s*fails\b")
SAYS = re.compile(r"\s#\s*fails:\s*(.*?)\s*$")  # `# fails: MESSAGE`: the command's output must show MESSAGE

# What stands for the reader's own things in the README's commands, and what the test puts there. {tmp}: the
# test's temporary folder; {server}: the team's git server (a bare repository there); {clone}: the reader's clone.
PLACEHOLDERS = {
    # The install: the tests run in the environment `pip install -r requirements.txt` made.
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt": "true",
    # The team's DVC remote: a shared folder.
    "/mnt/shared/lm-data": "{tmp}/lm-data-remote",
    # The repository's git URL, and the folder a teammate clones it into.
    "git clone <repo> && cd <repo>": "git clone {server} {tmp}/teammate && cd {tmp}/teammate",
    "https://github.com/you/lm-data": "{server}",
    "/path/to/lm-data": "{clone}",
}
# Python fragments train "your" model for whole epochs: here a tiny GPT-2 (the names below, defined before a block
# that uses them without defining them) takes one step per loop: a step costs ~1 s (logits over 50,257 ids).
FRAGMENT_NAMES = {
    "model": (
        "import torch\nfrom transformers import GPT2Config, GPT2LMHeadModel\ntorch.manual_seed(0)\n"
        "model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=1024))\n"
    ),
}
STEPS = 1
SHORTER = {
    "for batch in loader:": f"for batch in __import__('itertools').islice(loader, {STEPS}):",
    "per_device_train_batch_size=8)": f"per_device_train_batch_size=8, max_steps={STEPS}, report_to=[])",
}


@dataclass
class Block:
    line: int  # of the opening fence in its page
    info: str
    code: str
    not_run: str | None  # why the block is not run, from the comment just before it
    page: str = "README.md"


def readme_blocks(page: str = "README.md") -> list[Block]:
    """The blocks of one page (a path relative to the repository), in order."""
    lines = TEXTS[page].splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\S*)\s*", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        reason = NOT_RUN.fullmatch(before.strip())
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(i + 1, fence.group(1), code, reason and reason.group(1), page))
        i = end + 1
    return blocks


def substitute(code: str, table: dict[str, str], used: set[str], **values) -> str:
    for text, replacement in table.items():
        if text in code:
            used.add(text)
            code = code.replace(text, replacement.format(**values))
    return code


def bash_script(block: Block, code: str, cwd: str, state: str) -> str:
    """The block as one bash script: every command checked (a failure in an `a && b` list too), cwd written back."""
    commands = [f"cd {shlex.quote(cwd)}"]
    for offset, line in enumerate(code.splitlines()):
        if block.info == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{block.page} line {block.line + 1 + offset}"
        assert not line.rstrip().endswith("\\"), f"{where}: one command per line"
        # A newline before the closing brace ends the line's comment.
        says = SAYS.search(line)
        if says and says.group(1):
            # Failing is not enough: a typo fails too. The output must say what the README shows.
            message = shlex.quote(says.group(1))
            commands.append(
                f"if output=$( {{ {line}\n}} 2>&1 ); then echo '{where}: expected to fail, but succeeded' >&2; exit 1; fi\n"
                f"printf '%s\\n' \"$output\"\n"
                f"grep -qF -- {message} <<< \"$output\" || {{ echo '{where}: failed without saying '{message} >&2; exit 1; }}"
            )
        elif FAILS.search(line):
            commands.append(f"if {{ {line}\n}}; then echo '{where}: expected to fail, but succeeded' >&2; exit 1; fi")
        else:
            commands.append(f"{{ {line}\n}} || {{ echo '{where} failed' >&2; exit 1; }}")
    commands.append(f"pwd > {shlex.quote(state)}")
    return "\n".join(commands)


def python_code(code: str) -> str:
    prelude = [
        source
        for name, source in FRAGMENT_NAMES.items()
        if re.search(rf"\b{name}\b", code) and not re.search(rf"^{name} = ", code, re.M)
    ]
    return "".join(prelude) + code


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in readme_blocks(page)]


def test_every_docs_page_is_run():
    """A new page in docs/ is listed in PAGES, so its commands run too."""
    assert sorted(PAGES[1:]) == sorted(f"docs/{path.name}" for path in (REPO / "docs").glob("*.md"))


def test_every_block_runs_in_order(tmp_path):
    """The README top to bottom in a fresh clone of the team's git server (setup, experiments, the look at the data,
    a training fragment, a DVC remote, a teammate's clone that pulls and loads), then the docs pages from that clone:
    plots and a validation split, the loader's fragments, the recovery after a bad value, an experiment pushed as a
    branch, and a registry consumer that imports, loads and updates."""
    blocks = all_blocks()
    not_run = [block for block in blocks if block.not_run]
    print("\nblocks not run by tests:")
    for block in not_run:
        print(f"  {block.page} line {block.line} ({block.info}): {block.not_run}")

    # The team's git server, and the reader's fresh clone of it.
    seed = clone_repo(tmp_path / "seed")
    server = tmp_path / "lm-data.git"
    run(["git", "clone", "-q", "--bare", str(seed), str(server)], cwd=tmp_path)
    clone = tmp_path / "lm-data"
    run(["git", "clone", "-q", str(server), str(clone)], cwd=tmp_path)
    values = {"tmp": tmp_path, "server": server, "clone": clone}
    identity = {"name": "reader", "email": "reader@example.com"}
    env = {
        **ENV,
        "PYTHONPATH": str(clone),  # the library of the clone under test (a reader's `pip install -e .`)
        "HF_HUB_OFFLINE": "1",
        **{f"GIT_{who}_{key.upper()}": value for who in ("AUTHOR", "COMMITTER") for key, value in identity.items()},
    }

    cwd, state, used, timings, page = str(clone), str(tmp_path / "cwd"), set(), [], None
    for block in (b for b in blocks if b.info in RUN and not b.not_run):
        if block.page != page:  # every page starts in the reader's clone
            cwd, page = str(clone), block.page
        code = substitute(block.code, PLACEHOLDERS, used, **values)
        started = time.monotonic()
        if block.info == "python":
            code = python_code(substitute(code, SHORTER, used))
            args = [sys.executable, "-c", code]
        else:
            args = ["bash", "-o", "pipefail", "-c", bash_script(block, code, cwd, state)]
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        timings.append((time.monotonic() - started, f"{block.page}:{block.line}"))
        if result.returncode != 0:
            raise AssertionError(
                f"{block.page} line {block.line} ({block.info} block) failed in {cwd}:\n{code}\n"
                f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
            )
        if block.info != "python":
            cwd = open(state).read().strip()
    print("seconds per block: " + ", ".join(f"{where} {seconds:.1f}" for seconds, where in timings))
    assert used == set(PLACEHOLDERS) | set(SHORTER), f"no longer in the pages: {set(PLACEHOLDERS) | set(SHORTER) - used}"
    # Where the reader ends up: every folder as DVC last left it (nothing written into a tracked output).
    for folder in (clone, tmp_path / "teammate", tmp_path / "other-project"):
        assert "up to date" in run(["dvc", "status"], cwd=folder).stdout, folder
    assert "rev: v2" in (tmp_path / "other-project" / "grouped.dvc").read_text()


def test_blocks_not_run_say_why_and_are_commands():
    """A `not run by tests` comment stands right before a command block and gives a reason."""
    marked = [block for block in all_blocks() if block.not_run]
    assert marked and all(block.info in RUN and len(block.not_run) > 10 for block in marked)
    assert sum(text.count("<!-- not run by tests:") for text in TEXTS.values()) == len(marked)


@pytest.mark.parametrize(
    ("info", "code", "error"),
    [
        ("bash", "false && true   # a comment\necho after\n", "README.md line 2 failed"),
        ("bash", "true && false\n", "README.md line 2 failed"),
        ("bash", "false   # fails\ncd / && echo ok\n", None),
        ("bash", "sh -c 'echo error: bad value >&2; exit 2'   # fails: error: bad value\ncd / && echo ok\n", None),
        ("bash", "true   # fails: but it does not\n", "README.md line 2: expected to fail, but succeeded"),
        # a typo fails too, but does not say what the README shows
        ("bash", "ls /no/such/folder   # fails: error: bad value\n", "README.md line 2: failed without saying error: bad value"),
        ("console", "$ cd /\nsome output\n$ false\n", "README.md line 4 failed"),
    ],
)
def test_the_runner_checks_every_command(tmp_path, info, code, error):
    """A failure anywhere in a line (`a && b` too) fails the block; a `# fails` command must fail; cwd carries over."""
    block, state = Block(1, info, code, None), str(tmp_path / "cwd")
    result = subprocess.run(["bash", "-c", bash_script(block, code, str(tmp_path), state)], capture_output=True, text=True)
    assert (result.returncode, result.stderr.strip()) == ((1, error) if error else (0, ""))
    if not error:
        assert open(state).read().strip() == "/"


@pytest.mark.parametrize(
    "block", [block for block in all_blocks() if block.not_run], ids=lambda block: f"{block.page} line {block.line}"
)
def test_block_not_run_by_tests(block):
    """Each block a page marks as not run, listed with its reason among the skipped tests (`pytest -rs`)."""
    pytest.skip(f"{block.page} line {block.line} ({block.info}) is not run: {block.not_run}")


def test_ci_runs_exactly_the_readmes_test_command():
    command = next(line for line in README.splitlines() if line.startswith("python3 -m venv") and "pytest" in line)
    assert command in (REPO / ".ci" / "run").read_text()


def test_every_python_block_of_the_readme_parses():
    for language, code in BLOCKS:
        if language == "python":
            ast.parse(code)


def test_every_param_the_readme_sets_exists_and_its_value_is_valid():
    """Each `dvc exp run -S key=value` of the pages (but those shown failing), applied to the shipped params.yaml,
    passes validation."""
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = []
    for language, code in BLOCKS:
        if language not in ("bash", "console"):
            continue
        for line in code.replace("\\\n", " ").splitlines():
            if "dvc exp run" not in line or FAILS.search(line):
                continue
            words = shlex.split(line.split("#")[0].replace("$ ", ""))
            settings.append([words[i + 1] for i, word in enumerate(words) if word == "-S"])
    assert len(settings) >= 10
    for changes in settings:
        params = copy.deepcopy(shipped)
        for change in changes:
            key, value = change.split("=", 1)
            *sections, name = key.split(".")
            target = params
            for section in sections:
                assert section in target, f"a page sets unknown param {key}"
                target = target[section]
            assert name in target or sections[:1] == ["mixture"], f"a page sets unknown param {key}"
            target[name] = yaml.safe_load(value) if value else ""
        if changes and "local" in " ".join(changes):  # local paths of the examples need not exist here
            continue
        validate(params)


def stage_options() -> dict[str, set[str]]:
    """Each stage command's options, as dvc.yaml's commands pass them (main and `foreach` stages alike)."""
    options: dict[str, set[str]] = {}
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        command = stage.get("do", stage)["cmd"]
        module = re.search(r"-m stages\.(\w+)", command).group(1)
        options.setdefault(module, set()).update(re.findall(r"(--[\w-]+)", command))
    return options


@pytest.mark.parametrize(("module", "options"), sorted(stage_options().items()))
def test_every_stage_help_explains_each_argument(module, options):
    """`python -m stages.X --help`: a short usage with a sentence or two of description, and a help text beside each
    option dvc.yaml passes; no `${...}` of dvc.yaml's templating, no implementation notes."""
    result = run([sys.executable, "-m", f"stages.{module}", "--help"], cwd=REPO)
    text = result.stdout
    assert "${" not in text and text.startswith(f"usage: python -m stages.{module} ")
    described = {}
    for match in re.finditer(r"^  (--[\w-]+) [A-Z]+ *(.*(?:\n {10,}\S.*)*)", text, re.M):
        described[match.group(1)] = " ".join(match.group(2).split())
    # --corpus NAME=PATH: mix takes one per corpus of a recipe, and the default recipe has none
    repeated = {"--corpus"} if module == "mix" else set()
    assert set(described) - repeated == options, f"--help lists {sorted(described)}, dvc.yaml passes {sorted(options)}"
    assert all(len(words) > 20 for words in described.values()), described
    description = text.split("\n\n")[1]
    assert description.startswith(f"Stage {module}:") and len(description.splitlines()) <= 5, description


# The plot images another change renders into docs/images/ (`causal-lm-data plots`); until it lands they may be missing.
IMAGES_RENDERED_ELSEWHERE = {"docs/images/document_lengths.png", "docs/images/tokens_kept.png", "docs/images/mixture_shares.png"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def relative_links(page: str) -> list[str]:
    text = re.sub(r"```.*?```", "", TEXTS[page], flags=re.S)  # a link inside a code block is text
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_points_to_a_file_and_heading(page):
    """Each relative link of a page names a file of the repository (and, after `#`, a heading of it)."""
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (REPO / page).parent / path if path else REPO / page
        name = resolved.resolve().relative_to(REPO.resolve()).as_posix()
        if not resolved.exists():
            if name not in IMAGES_RENDERED_ELSEWHERE:
                broken.append(target)
        elif anchor and anchor not in heading_anchors(resolved.read_text()):
            broken.append(target)
    assert not broken, f"{page}: links to nothing: {broken}"


def test_the_link_check_sees_links():
    assert "docs/inputs.md" in relative_links("README.md") and "#share-it" in relative_links("README.md")
    assert "../README.md" in relative_links("docs/sharing.md")
