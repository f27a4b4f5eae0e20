"""Progress for long stages: a live line on a terminal, nothing in logs or under CI."""

import sys
import time


class Progress:
    """Counts items (and tokens) and redraws `label: N docs (R docs/s, T tokens/s)` twice a second."""

    def __init__(self, label: str, stream=sys.stderr):
        self.label, self.stream = label, stream
        self.live = stream.isatty()
        self.documents = self.tokens = 0
        self.start = self.drawn = time.monotonic()

    def update(self, documents: int, tokens: int = 0) -> None:
        self.documents += documents
        self.tokens += tokens
        if self.live and time.monotonic() - self.drawn >= 0.5:
            self._draw()

    def _draw(self, end: str = "") -> None:
        self.drawn = time.monotonic()
        seconds = max(self.drawn - self.start, 1e-9)
        line = f"{self.label}: {self.documents:,} documents ({self.documents / seconds:,.0f}/s"
        line += f", {self.tokens / seconds:,.0f} tokens/s)" if self.tokens else ")"
        self.stream.write(f"\r{line}\x1b[K{end}")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self._draw(end="\n")
