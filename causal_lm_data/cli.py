"""The `causal-lm-data` command: look at the data and the plots of this pipeline.

causal-lm-data show data/grouped --first 3      # blocks decoded back to text, documents marked
causal-lm-data plots --format png               # dvc_plots/*.png, rendered offline
"""

import argparse
import signal
import sys

from causal_lm_data.errors import run_command


def _show(arguments: argparse.Namespace) -> None:
    from causal_lm_data.show import show

    rows = show(
        arguments.folder,
        arguments.split,
        arguments.first,
        arguments.block,
        arguments.random,
        arguments.seed,
        arguments.tokenizer,
        arguments.ids,
        arguments.tokens,
    )
    for row in rows:
        print(row, flush=True)


def _plots(arguments: argparse.Namespace) -> None:
    from causal_lm_data.plots import render_plots

    for path in render_plots(arguments.revisions, arguments.out, arguments.format):
        print(path)


def _whole_number(text: str, least: int) -> int:
    """`text` as a whole number >= least, else the one-line usage error argparse prints.

    Digits only, in ASCII: int() accepts Arabic-Indic digits but not '²', which
    str.isdigit() lets through.
    """
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    """A whole number >= 1 (how many rows to show)."""
    return _whole_number(text, 1)


def _seed(text: str) -> int:
    """A whole number >= 0: numpy's generators take no negative seed."""
    return _whole_number(text, 0)


def _row(text: str) -> int:
    """A row index: a whole number, negative counting from the end."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number (negative: from the end), got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(prog="causal-lm-data", description=__doc__.split("\n")[0])
    subcommands = commands.add_subparsers(dest="command", required=True)

    show = subcommands.add_parser(
        "show",
        help="print rows of a data folder decoded back to text, document boundaries marked",
        description="Print blocks of data/grouped (or documents of data/tokenized, data/raw) as text. Lines that start "
        "with \u27e6 are this command's (headers, document boundaries); lines of the data start with \u2502. Control "
        "characters in the data are printed escaped (\\x1b, \\u202e), newlines as line breaks.",
    )
    show.add_argument("folder", nargs="?", default="data/grouped", help="a data folder (default: data/grouped)")
    show.add_argument("--split", default=None, help="train (default) or validation, when the folder holds splits")
    chosen = show.add_mutually_exclusive_group()
    chosen.add_argument("--first", type=_count, default=3, metavar="N", help="the first N rows (default 3)")
    chosen.add_argument("--block", type=_row, action="append", metavar="K", help="row K (repeatable; -1 is the last)")
    chosen.add_argument("--random", type=_count, metavar="N", help="N rows drawn at random (with --seed)")
    show.add_argument("--seed", type=_seed, default=0, help="the seed of --random, a whole number >= 0 (default 0)")
    show.add_argument("--ids", action="store_true", help="also print each document piece's token ids")
    show.add_argument("--tokens", action="store_true", help="also print each document piece's tokens")
    show.add_argument(
        "--tokenizer",
        metavar="NAME_OR_FOLDER",
        help="the tokenizer to decode with (default: the one params.yaml's tokenize section names)",
    )
    show.set_defaults(run=_show)

    plots = subcommands.add_parser(
        "plots",
        help="render the DVC plots to PNG or SVG files, offline",
        description="Render `dvc plots show` (or, given revisions, `dvc plots diff REV...`) to one image per plot, "
        "without a browser or network, and print the paths.",
    )
    plots.add_argument(
        "revisions", nargs="*", metavar="REV", help="git revisions to compare (dvc plots diff); none: the workspace"
    )
    plots.add_argument("--out", default="dvc_plots", help="the folder to write the images to (default: dvc_plots)")
    plots.add_argument("--format", choices=("png", "svg"), default="png", help="png (default) or svg")
    plots.set_defaults(run=_plots)
    return commands


def main(argv: list[str] | None = None) -> None:
    # Piped into `head`: stop quietly when the reader goes away, as other command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    arguments = parser().parse_args(sys.argv[1:] if argv is None else argv)
    run_command(lambda: arguments.run(arguments))
