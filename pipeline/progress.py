"""A dependency-free progress line: redrawn in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "precompute")``; call ``update(n, **fields)`` and ``close()``.

    ``done``: units already done before this run (a resumed one), shown from the start; the rate
    and the time left count this run's units only.
    """

    def __init__(
        self,
        total: int,
        label: str,
        unit: str = "it",
        stream: TextIO | None = None,
        every: float = 5.0,
        done: int = 0,
    ) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if not self.tty else 0.1
        self.n = self.first = done
        self.start = time.perf_counter()
        self.last = 0.0
        self.fields: dict = {}
        self.shown = -1  # the count last drawn
        if done:
            self._draw(self.start, {})

    def update(self, n: int = 1, **fields: object) -> None:
        self.n += n
        self.fields = fields
        now = time.perf_counter()
        if now - self.last >= self.every or self.n >= self.total:
            self.last = now
            self._draw(now, fields)

    def set(self, n: int) -> None:
        """Make the count ``n`` (e.g. what is on disk, when that is the truth)."""
        self.n = n

    def _draw(self, now: float, fields: dict) -> None:
        self.shown = self.n
        el = now - self.start
        frac = self.n / self.total if self.total else 1.0
        rate = (self.n - self.first) / el if el > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        extra = "".join(f" {k}={v}" for k, v in fields.items())
        bar = "#" * int(24 * frac)
        line = (
            f"{self.label} [{bar:<24}] {self.n}/{self.total} {self.unit} "
            f"{frac:6.1%} {el:6.1f}s eta {eta:5.0f}s{extra}"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the line; a count not yet drawn (e.g. at an interruption) is drawn first."""
        if self.n != self.shown:
            self._draw(time.perf_counter(), self.fields)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
