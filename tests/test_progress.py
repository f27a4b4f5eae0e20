import io

from causal_lm_data.pipeline.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_a_total_an_eta_and_tokens_per_second_on_a_terminal():
    terminal = Terminal()
    progress = Progress("tokenize", terminal, total=1000)
    progress.update(500, 60_000)
    progress.close()
    shown = terminal.getvalue()
    assert "tokenize:" in shown and "500/1.00k" in shown and "M tokens/s" in shown
    assert "<" in shown  # elapsed<remaining: the ETA
    assert shown.endswith("\n")


def test_progress_is_silent_in_logs():
    log = io.StringIO()
    progress = Progress("download", log, total=10)
    progress.update(5)
    progress.close()
    assert log.getvalue() == ""
