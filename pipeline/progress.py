"""A dependency-free progress line: redrawn in place on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "precompute")``; call ``update(n, **fields)`` and ``close()``."""

    def __init__(
        self,
        total: int,
        label: str,
        unit: str = "it",
        stream: TextIO | None = None,
        every: float = 5.0,
    ) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if not self.tty else 0.1
        self.n = 0
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, n: int = 1, **fields: object) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every or self.n >= self.total:
            self.last = now
            self._draw(now, fields)

    def _draw(self, now: float, fields: dict) -> None:
        el = now - self.start
        frac = self.n / self.total if self.total else 1.0
        rate = self.n / el if el > 0 else 0.0
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
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
