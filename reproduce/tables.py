"""Result tables: aligned text for the terminal, Markdown for the docs, plain lists for JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DASH = "—"  # a cell the paper (or this run) has no number for

Cell = str | int | float | None


def format_cell(value: Cell) -> str:
    """None -> "—"; floats to 4 significant digits (scientific when tiny or huge); the rest as str."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


@dataclass
class Table:
    """A titled table: ``columns`` names, ``rows`` of cells, free-text ``notes`` printed below."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(
                f"row has {len(cells)} cells, table {self.title!r} has {len(self.columns)}"
            )
        self.rows.append(list(cells))

    def column(self, name: str) -> list[Cell]:
        j = self.columns.index(name)
        return [r[j] for r in self.rows]

    def text(self) -> str:
        """Aligned plain text: title, header, rule, rows, notes (numbers right-aligned)."""
        cells = [[format_cell(c) for c in r] for r in self.rows]
        widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(self.columns)]

        def line(values: list[str], numeric: list[bool]) -> str:
            return "  ".join(
                v.rjust(w) if num else v.ljust(w)
                for v, w, num in zip(values, widths, numeric, strict=True)
            ).rstrip()

        numeric_cols = [
            j > 0 and all(isinstance(r[j], int | float) or r[j] is None for r in self.rows)
            for j in range(len(self.columns))
        ]
        out = [self.title, line(self.columns, numeric_cols)]
        out.append("  ".join("-" * w for w in widths))
        out += [line(r, numeric_cols) for r in cells]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        """A GitHub Markdown table under a bold title, notes as a list below."""

        def esc(text: str) -> str:
            return text.replace("|", "\\|")

        out = [f"**{esc(self.title)}**", ""]
        out.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        out.append("|" + "|".join("---" for _ in self.columns) + "|")
        for r in self.rows:
            out.append("| " + " | ".join(esc(format_cell(c)) for c in r) + " |")
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        def clean(c: Cell) -> Cell:
            return None if isinstance(c, float) and not math.isfinite(c) else c

        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [[clean(c) for c in r] for r in self.rows],
            "notes": self.notes,
        }
