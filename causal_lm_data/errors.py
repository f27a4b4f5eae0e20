"""User mistakes and environment failures are reported as one line and a non-zero exit, never a traceback."""

import errno
import re
import sys

# C0 and C1 control characters, DEL, and the Unicode controls that reorder or hide
# text on a terminal (bidi overrides and isolates, zero-width joiners, line and
# paragraph separators): data must never reach the terminal with these raw.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")

# What the user can do about an OSError the stage hit while reading or writing a path.
_OS_FIXES = {
    errno.ENOSPC: "the disk is full; free space and run again",
    errno.EDQUOT: "the disk quota is exceeded; free space and run again",
    errno.EROFS: "the file system is read-only; make it writable and run again",
    errno.EACCES: "permission denied; make it writable (and readable) for this user and run again",
    errno.EPERM: "the operation is not permitted (an immutable or locked file?); fix its permissions and run again",
}


class UserError(ValueError):
    """Something the user can fix (a param, an input file, the disk); the message says how.

    A ValueError, so code that calls the loader can catch it as one.
    """


def printable(text: str) -> str:
    """`text` with every control character escaped (\\n, \\x1b, \\u202e...), so it prints as one safe line."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def os_failure(error: OSError) -> UserError | None:
    """A one-line UserError for an environment failure (disk full, read-only, permissions), else None."""
    fix = _OS_FIXES.get(error.errno)
    if fix is None:
        return None
    return UserError(f"{error.filename or 'a file'}: {fix}")


def run_command(main, explain=str) -> None:
    """Run a command's `main()`, turning a UserError or an environment failure into `error: ...` and exit 1.

    `explain(error)` words a UserError (the stage commands add the dvc command that
    mends a broken data folder). Every message is escaped: one built from data (a
    column name, a document) prints as one line, its control characters visible but inert.
    """
    try:
        main()
    except OSError as error:
        failure = os_failure(error)
        if failure is None:
            raise
        print(f"error: {printable(str(failure))}", file=sys.stderr)
        sys.exit(1)
    except UserError as error:
        print(f"error: {printable(explain(error))}", file=sys.stderr)
        sys.exit(1)


def quoted(value, limit: int = 200) -> str:
    """A value read from the data (a file name, a split name), quoted and escaped for a one-line message."""
    text = repr(value)  # repr escapes every non-printable character
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for wrapping a library's error in a UserError."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
