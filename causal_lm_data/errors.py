"""User mistakes and environment failures are reported as one line and a non-zero exit, never a traceback."""

import errno
import sys
import unicodedata

# The Unicode categories that must never reach a terminal raw from the data: controls (Cc:
# C0, C1, DEL), format characters (Cf: bidi marks, embeddings, overrides and isolates,
# U+061C, zero-width joiners, U+2060-U+2064, U+FEFF, the tag characters U+E0000-U+E007F),
# line and paragraph separators (Zl, Zp), private use (Co), surrogates (Cs) and unassigned
# code points (Cn, which a later Unicode may make any of these). Each reorders, hides,
# breaks or fakes text on a terminal. Letters and marks of every script, symbols, emoji
# and spaces (Zs) print as they are.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})

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
    """`text` with every character of UNSAFE_CATEGORIES escaped (\\n, \\x1b, \\u202e, \\U000e0041...), so it prints as one safe line.

    Every message and every row of `show` that quotes the data goes through here.
    """
    if text.isprintable():  # the common case, in C: no character of those categories, nor a space but ' '
        return text
    return "".join(_escaped(character) for character in text)


def _escaped(character: str) -> str:
    if unicodedata.category(character) not in UNSAFE_CATEGORIES:  # a space such as U+00A0 (isprintable says no)
        return character
    return character.encode("unicode_escape", "backslashreplace").decode("ascii")


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
