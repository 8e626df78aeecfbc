"""Differentiable Euler integration of D eq. 1 with integer delays, burn-in and a time-averaged loss.

theta_{s+1} = theta_s + dt f(theta_s), f = :func:`orient.dynamics.kuramoto.phase_drift`, with the
delayed sources theta_j(s - tau_j) read from a history that is constant (theta_0) before s = 0.
The loss is (1 / steps) sum_{s = burn_in + 1}^{burn_in + steps} l(theta_s), a Riemann sum of
(1 / (T - t0)) int_{t0}^{T} l(theta(t)) dt (D eq. 3) with t0 = burn_in dt and T = (burn_in + steps) dt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from orient.dynamics.kuramoto import Coupling, phase_drift

from .data import Features

INITS = ("zero", "uniform", "normal")


@dataclass(frozen=True)
class Integration:
    """Euler step ``dt``, ``burn_in`` steps before the loss window of ``steps`` steps, initial phases."""

    dt: float = 0.1
    burn_in: int = 100
    steps: int = 100
    init: str = "zero"  # zero (all in phase), uniform on the circle, or normal N(pi, 1)
    grad_burn_in: bool = False  # back-propagate through the burn-in too

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"the Euler step dt must be > 0, got {self.dt}")
        if self.burn_in < 0 or self.steps < 1:
            raise ValueError("burn_in must be >= 0 and steps >= 1")
        if self.init not in INITS:
            raise ValueError(f"unknown initial phases {self.init!r} ({', '.join(INITS)})")

    @property
    def total(self) -> int:
        return self.burn_in + self.steps


def initial_phases(
    n: int, init: str, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """theta_0 (n,): zeros, U[-pi, pi) or N(pi, 1), drawn from ``generator``."""
    if init == "zero":
        return torch.zeros(n, device=device)
    if generator is None:
        raise ValueError(f"initial phases {init!r} need a generator")
    if init == "uniform":
        u = torch.rand(n, generator=generator, device=generator.device)
        return ((2 * u - 1) * math.pi).to(device)
    if init == "normal":
        return (math.pi + torch.randn(n, generator=generator, device=generator.device)).to(device)
    raise ValueError(f"unknown initial phases {init!r} ({', '.join(INITS)})")


@dataclass
class Run:
    """A simulation: the window loss, the per-step loss curve and the recorded phases."""

    loss: Tensor
    curve: Tensor | None = None  # l(theta_s) for s = 1..total (detached)
    snapshots: dict[int, Tensor] = field(default_factory=dict)  # step -> theta_s (detached)
    final: Tensor | None = None


def simulate(
    feats: Features,
    coupling: Coupling | None,
    spec: Integration,
    theta0: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    curve: bool = False,
    snapshot_steps: Sequence[int] = (),
    tick: Callable[[int, int], None] | None = None,
) -> Run:
    """Integrate D eq. 1 from ``theta0`` (n,) and return the time-averaged window loss (see module).

    ``curve`` records l(theta_s) at every step, ``snapshot_steps`` the phases at those steps, and
    ``tick(step, total)`` reports progress.
    """
    delays = feats.delay
    depth = int(delays.max()) if delays is not None and delays.numel() else 0
    history = [theta0] * (depth + 1)  # history[-1 - d] = theta d steps ago
    theta = theta0
    window: list[Tensor] = []
    values: list[Tensor] = []
    snaps = {0: theta0.detach()} if 0 in snapshot_steps else {}
    grad = torch.is_grad_enabled()
    for s in range(1, spec.total + 1):
        inside = s > spec.burn_in
        with torch.set_grad_enabled(grad and (inside or spec.grad_burn_in)):
            delayed = None
            if depth:
                past = torch.stack(history)  # (depth + 1, n), row depth = now
                delayed = past.gather(0, (depth - delays)[None, :]).squeeze(0)
            theta = theta + spec.dt * phase_drift(
                theta, coupling, feats.omega, feats.field, delayed
            )
            if depth:
                history = history[1:] + [theta]
            if inside:
                window.append(loss_fn(theta))
        if curve:
            values.append(window[-1].detach() if inside else loss_fn(theta.detach()))
        if s in snapshot_steps:
            snaps[s] = theta.detach()
        if tick is not None:
            tick(s, spec.total)
    return Run(
        loss=torch.stack(window).mean(0),
        curve=torch.stack(values) if curve else None,
        snapshots=snaps,
        final=theta.detach(),
    )
