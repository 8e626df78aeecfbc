"""VP-SDE / DDPM baseline ("SGM" in paper A, "isotropic DDPM" in paper B).

Transition t: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps, beta linear (A's schedules).
Exact local score: -(x_t - sqrt(1 - beta_t) x_{t-1}) / beta_t. Prior N(0, I).
Reverse (ancestral; the exact inverse of the mean map plus the score correction):
    SDE: x_{t-1} = (x_t + beta_t s) / sqrt(1 - beta_t) + sqrt(beta_t) z
    ODE: x_{t-1} = (x_t + beta_t s / 2) / sqrt(1 - beta_t)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import (
    DEFAULT_STEPS,
    Process,
    check_config_kind,
    check_options,
    check_steps,
    randn,
    schedule_at,
)
from .schedules import for_steps, linear, named_or_custom, same_signal

# Paper A's SGM baselines: linear beta from 1e-4 to these values.
VP_SCHEDULES: dict[str, tuple[float, float]] = {
    "vp-100": (1e-4, 0.1),
    "vp-300": (1e-4, 0.07),
    "vp-1000": (1e-4, 0.02),
}


def default_beta(T: int) -> dict[str, tuple[float, float]]:
    """Endpoints of beta for T steps: a row of VP_SCHEDULES, log-interpolated between rows, and
    outside them the nearest row rescaled to leave the same signal prod sqrt(1 - beta_t)."""
    rows = {int(k.split("-")[1]): {"beta": v} for k, v in VP_SCHEDULES.items()}
    return for_steps(rows, T, rescale=same_signal)


class VPProcess(Process):
    """Discrete VP chain on any state shape (B, *S)."""

    kind = "vp"
    schedule_keys = ("schedule", "endpoints")

    def __init__(
        self,
        T: int,
        schedule: str | dict[str, tuple[float, float]] | None = None,
        state_ndim: int = 3,
    ) -> None:
        check_steps(T)
        if schedule is None:  # paper A's row, or the rule of docs/processes.md for another T
            schedule = f"vp-{T}" if f"vp-{T}" in VP_SCHEDULES else default_beta(T)
        if isinstance(schedule, str):
            if schedule not in VP_SCHEDULES:
                raise ValueError(
                    f"unknown VP schedule {schedule!r}; named: {', '.join(VP_SCHEDULES)}"
                )
            self.schedule_name: str | None = schedule
            lo, hi = VP_SCHEDULES[schedule]
        else:
            if set(schedule) != {"beta"}:
                raise ValueError(
                    f"a custom VP schedule has exactly one key, beta; got {sorted(schedule)}"
                )
            self.schedule_name = None
            lo, hi = (float(v) for v in schedule["beta"])
        for v in (lo, hi):
            if not (math.isfinite(v) and 0 < v < 1):
                raise ValueError(f"beta must lie in (0, 1), got {v}")
        self.T = T
        self.state_ndim = state_ndim
        self.ends = (lo, hi)
        self.beta = linear(lo, hi, T)

    def transition_variance(self, t: int | Tensor) -> Tensor:
        return self.beta[t - 1] if isinstance(t, int) else self.beta[torch.as_tensor(t) - 1]

    def _coefs(self, t: int | Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        beta = schedule_at(self.beta, t, like, self.state_ndim)
        return (1 - beta).sqrt(), beta

    def transition_sample(
        self, x_prev: Tensor, t: int | Tensor, m: int, generator: torch.Generator
    ) -> Tensor:
        a, beta = self._coefs(t, x_prev)
        return a * x_prev + beta.sqrt() * randn((m, *x_prev.shape), generator, x_prev)

    def transition_score(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        a, beta = self._coefs(t, x_prev)
        return -(x_t - a * x_prev) / beta

    def transition_log_prob(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        a, beta = self._coefs(t, x_prev)
        lp = -((x_t - a * x_prev) ** 2) / (2 * beta) - 0.5 * torch.log(2 * math.pi * beta)
        return lp.flatten(-self.state_ndim).sum(-1)

    def marginal_coefficients(self, t: int) -> tuple[float, float]:
        """x_t | x_0 ~ N(abar x_0, (1 - abar^2) I): returns (abar, 1 - abar^2)."""
        abar = float(torch.prod((1 - self.beta[:t]).sqrt()))
        return abar, 1 - abar * abar

    def _reverse_mean(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        a, beta = self._coefs(t, x_t)
        return (x_t + beta * score) / a

    def _reverse_noise(self, x_t: Tensor, t: int | Tensor, generator: torch.Generator) -> Tensor:
        return schedule_at(self.beta, t, x_t, self.state_ndim).sqrt() * randn(
            x_t.shape, generator, x_t
        )

    def _reverse_ode(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """(x + k_t beta s) / a with DDIM's weight k_t = 1 / (1 + a sqrt(V_{t-1} / V_t)),
        V_t = 1 - prod_{j <= t} (1 - beta_j) the noise variance of x_t given x_0: 1/2 for
        short steps, 1 at t = 1 (docs/processes.md, "Reverse step, derived once")."""
        a, beta = self._coefs(t, x_t)
        abar2 = torch.cumprod(1 - self.beta, 0)
        noise = torch.cat([abar2.new_zeros(1), 1 - abar2])
        ratio = schedule_at((noise[:-1] / noise[1:]).sqrt(), t, x_t, self.state_ndim)
        return (x_t + beta * score / (1 + a * ratio)) / a

    prior_names = ("gaussian",)

    def sample_prior(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return torch.randn(tuple(shape), generator=generator, device=generator.device)

    def _params(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule_name,
            "endpoints": {"beta": list(self.ends)},
            "state_ndim": self.state_ndim,
        }

    @classmethod
    def create(
        cls, *, steps: int | None, schedule: str | None, example: Tensor, **params: Any
    ) -> VPProcess:
        check_options(cls, params)
        steps = DEFAULT_STEPS if steps is None else steps
        sched = named_or_custom(schedule)
        return cls(T=steps, schedule=sched, state_ndim=example.ndim - 1)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], buffers: dict[str, Tensor] | None = None
    ) -> VPProcess:
        check_config_kind(cls, config)
        schedule = config["schedule"] or {"beta": tuple(config["endpoints"]["beta"])}
        return cls(T=config["T"], schedule=schedule, state_ndim=config["state_ndim"])
