"""Per-step schedules as float64 tensors of shape (T,); entry t-1 belongs to transition t."""

from __future__ import annotations

import math

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


# -- a table's schedules for any number of steps (docs/processes.md, "Any T") ------------------

Rows = dict[int, dict[str, tuple[float, float]]]  # T -> {key: (start, end)} of linear schedules


def linear_total(start: float, end: float, T: int) -> float:
    """Sum of :func:`linear` (start, end, T): T (start + end) / 2, or ``start`` for T = 1."""
    return start if T == 1 else T * (start + end) / 2


def same_totals(ends: dict[str, tuple[float, float]], T_row: int, T: int) -> dict:
    """``ends`` (a row for ``T_row`` steps) for T steps with the same sum of every schedule over
    the chain: the start kept (as the table keeps it across its rows), the end 2 sum / T - start;
    a constant sum / T where that end would fall below the start (T > sum / start), and for T = 1
    one step of the whole sum."""
    out = {}
    for key, (lo, hi) in ends.items():
        total = linear_total(lo, hi, T_row)
        end = 2 * total / T - lo
        out[key] = (lo, end) if T > 1 and end >= lo else (total / T, total / T)
    return out


def same_signal(ends: dict[str, tuple[float, float]], T_row: int, T: int) -> dict:
    """A linear beta row (key ``beta``) for T steps leaving the same signal prod sqrt(1 - beta_t)
    as the row (the same sum of -log(1 - beta_t)): the start kept, the end found by bisection;
    a constant beta where even a flat schedule at the start leaves less (and for T = 1)."""
    lo, hi = ends["beta"]
    target = -float(torch.log1p(-linear(lo, hi, T_row)).sum())
    if T == 1 or -T * math.log1p(-lo) >= target:
        b = -math.expm1(-target / T)
        return {"beta": (b, b)}
    a, b = lo, 1.0  # the sum grows from below the target to infinity as the end goes to 1
    for _ in range(200):
        end = (a + b) / 2
        if -float(torch.log1p(-linear(lo, end, T)).sum()) < target:
            a = end
        else:
            b = end
    return {"beta": (lo, (a + b) / 2)}


def for_steps(rows: Rows, T: int, rescale=same_totals) -> dict[str, tuple[float, float]]:
    """Endpoints for T steps from a table of rows (paper A's table 5, its VP baselines).

    A row's T gives that row exactly. Between two rows every endpoint is interpolated linearly in
    (log T, log value). Outside the table the nearest row is ``rescale``d to T steps (by default
    :func:`same_totals`: the same total noise and coupling over the chain).
    """
    if T in rows:
        return dict(rows[T])
    Ts = sorted(rows)
    if T < Ts[0] or T > Ts[-1]:
        near = Ts[0] if T < Ts[0] else Ts[-1]
        return rescale(dict(rows[near]), near, T)
    t0 = max(r for r in Ts if r < T)
    t1 = min(r for r in Ts if r > T)
    f = (math.log(T) - math.log(t0)) / (math.log(t1) - math.log(t0))

    def mix(a: float, b: float) -> float:
        if a == b:
            return a
        if a <= 0 or b <= 0:
            return (1 - f) * a + f * b
        return math.exp((1 - f) * math.log(a) + f * math.log(b))

    return {
        key: (mix(rows[t0][key][0], rows[t1][key][0]), mix(rows[t0][key][1], rows[t1][key][1]))
        for key in rows[t0]
    }
