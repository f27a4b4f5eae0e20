"""User mistakes are reported as one line and a non-zero exit, never a traceback."""

import sys


class UserError(Exception):
    """Something the user can fix (a param, an input file); the message says how."""


def run_stage(main) -> None:
    """Run a stage's `main()`, turning a UserError into `error: ...` and exit code 1."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for wrapping a library's error in a UserError."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
