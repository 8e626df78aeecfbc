"""The reverse chain x_T -> x_0 (k-diffusion style: a pure function of its arguments)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from orient.dynamics import Process
from orient.trainer.score_model import ScoreModel

METHODS = ("sde", "ode", "pc")


@torch.no_grad()
def reverse_chain(
    model: ScoreModel,
    process: Process,
    x_T: Tensor,
    generator: torch.Generator,
    method: str = "sde",
    corrector_steps: int = 0,
    corrector_size: float = 0.5,
    snapshots: int = 0,
    on_step: Callable[[], None] | None = None,
) -> tuple[Tensor, list[Tensor], list[int]]:
    """Run t = T..1 from x_T (state space); returns x_0 and ``snapshots`` states along the way.

    sde / ode: ``process.reverse_step`` with the model's score at (x_t, t). pc: the SDE step at t,
    then (t > 1) ``corrector_steps`` Langevin steps at the marginal of x_{t-1}. ``on_step`` is
    called after each of the T steps (progress)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} ({', '.join(METHODS)})")
    predictor = "sde" if method == "pc" else method
    T = process.T
    keep = set(np.linspace(T, 0, snapshots).round().astype(int).tolist()) if snapshots else set()
    traj, steps = [], []
    x = x_T
    if T in keep:
        traj.append(x.cpu())
        steps.append(T)
    for t in range(T, 0, -1):
        x = process.reverse_step(x, t, model.score(x, t), generator, method=predictor)
        if method == "pc" and t > 1:
            for _ in range(corrector_steps):
                x = process.langevin_step(
                    x, t - 1, model.score(x, t - 1), generator, corrector_size
                )
        if t - 1 in keep:
            traj.append(x.cpu())
            steps.append(t - 1)
        if on_step is not None:
            on_step()
    return x, traj, steps
