"""Per-step schedules as float64 tensors of shape (T,); entry t-1 belongs to transition t."""

from __future__ import annotations

import torch
from torch import Tensor


def linear(start: float, end: float, T: int) -> Tensor:
    """start -> end linearly over T steps (both ends included; a single step takes ``start``)."""
    if T == 1:
        return torch.tensor([start], dtype=torch.float64)
    return torch.linspace(start, end, T, dtype=torch.float64)


def geometric(lo: float, hi: float, times: Tensor, horizon: float) -> Tensor:
    """alpha(t) = lo (hi / lo)^(t / horizon) at the given times (C eq. 15)."""
    return lo * (hi / lo) ** (times / horizon)


def polynomial(lo: float, hi: float, times: Tensor, horizon: float, power: float) -> Tensor:
    """alpha(t) = lo + (hi - lo) (t / horizon)^power (C fig. 5)."""
    return lo + (hi - lo) * (times / horizon) ** power


def parse_endpoints(text: str) -> dict[str, tuple[float, float]]:
    """Parse ``"name=a:b,name2=c:d"`` into ``{name: (a, b)}`` (custom linear schedules)."""
    out: dict[str, tuple[float, float]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, rng = part.partition("=")
        lo, sep2, hi = rng.partition(":")
        if not sep or not sep2:
            raise ValueError(f"cannot parse schedule part {part!r}; expected name=start:end")
        try:
            out[key.strip()] = (float(lo), float(hi))
        except ValueError:
            raise ValueError(f"schedule part {part!r} has a value that is not a number") from None
    return out


def named_or_custom(schedule: str | None) -> str | dict[str, tuple[float, float]] | None:
    """A CLI ``--schedule`` value: a schedule name, ``"key=start:end,..."`` (parsed), or None."""
    if schedule is not None and "=" in schedule:
        return parse_endpoints(schedule)
    return schedule
