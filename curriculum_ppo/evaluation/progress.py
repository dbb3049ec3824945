"""The evaluation's progress lines on stderr: one line refreshed in place on a terminal, else one every few seconds."""

from __future__ import annotations

import sys
import time


class Progress:
    """Episodes done, frames played and frames per second, written at most every ``every`` seconds."""

    def __init__(self, total: int, every: float, stream=None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 1.0 if self.tty else every
        self.total = total
        self.t0 = self.last = time.time()

    def _line(self, done: int, frames: int) -> str:
        elapsed = time.time() - self.t0
        fps = frames / max(elapsed, 1e-9)
        return (f"evaluate: {done}/{self.total} episodes, {frames:,} frames, {fps:,.0f} frames/s, "
                f"{elapsed:.0f} s")

    def update(self, done: int, frames: int) -> None:
        now = time.time()
        if now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            print("\r" + self._line(done, frames).ljust(78), end="", file=self.stream, flush=True)
        else:
            print(self._line(done, frames), file=self.stream, flush=True)

    def finish(self, done: int, frames: int) -> None:
        elapsed = time.time() - self.t0
        line = (f"evaluate: {done}/{self.total} episodes done in {elapsed:.1f} s "
                f"({frames / max(elapsed, 1e-9):,.0f} frames/s)")
        print(("\r" + line.ljust(78)) if self.tty else line, file=self.stream, flush=True)
