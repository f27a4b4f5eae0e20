import io

from stages.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_live_on_a_terminal():
    terminal = Terminal()
    progress = Progress("tokenize", terminal)
    progress.drawn -= 1  # as if the last redraw was a second ago
    progress.update(500, 60_000)
    progress.close()
    lines = terminal.getvalue()
    assert lines.startswith("\rtokenize: 500 documents (") and "tokens/s)" in lines and lines.endswith("\n")


def test_progress_is_silent_in_logs():
    log = io.StringIO()
    progress = Progress("download", log)
    progress.drawn -= 1
    progress.update(500)
    progress.close()
    assert log.getvalue() == ""
