"""Geometry-aware Ornstein-Uhlenbeck process, GOU (paper B).

Fitted from data: mu, Sigma = U diag(lambda) U^T, rates c_i = -b (a + gamma (1 - lambda_i / lambda_max))
with a + gamma = 1 (B eq. 2), drift matrix M = U diag(c) U^T. The SDE dX = M (X - mu) dt + sqrt(beta) dW
is solved exactly (B thm 4-5) on the time grid s_t = horizon (t / T)^rho (``grid_power`` rho, 2 by
default: short steps near the data, where a uniform grid's first step (variance ~ beta horizon / T)
would drown the data's least-variance directions), with h_t = s_t - s_{t-1}:

    x_t | x_{t-1} ~ N( mu + U diag(e^{c h_t}) U^T (x_{t-1} - mu),  U diag(v_t) U^T ),  v_ti = beta (e^{2 c_i h_t} - 1) / (2 c_i)

Local score: -U diag(1/v) U^T (x_t - m). Reverse step (the ancestral analogue of DDPM's, exact inverse
of the mean map): x_{t-1} = mu + A^{-1}(x_t - mu + Sigma_h s) + Sigma_h^{1/2} z, A = e^{M h}.
Prior (B eq. 12): an anchor x_hat (k-means centre or data point), then N(mu + e^{M H}(x_hat - mu), Sigma_H),
H = horizon; or the stationary law N(mu, -beta/2 M^{-1}).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from .base import (
    DEFAULT_STEPS,
    Process,
    check_buffers,
    check_config_kind,
    check_options,
    check_positive,
    check_steps,
    randn,
    schedule_at,
)

Prior = Literal["anchors", "stationary"]
AnchorMode = Literal["kmeans", "data"]


def kmeans(x: Tensor, k: int, generator: torch.Generator, iters: int = 50) -> Tensor:
    """Lloyd's k-means with k-means++ seeding from ``generator``; returns (k, d) centres."""
    n = x.shape[0]
    k = min(k, n)
    idx = torch.randint(n, (1,), generator=generator)
    centres = [x[idx[0]]]
    d2 = ((x - centres[0]) ** 2).sum(-1)
    for _ in range(1, k):
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1 / n)
        j = torch.multinomial(p, 1, generator=generator)[0]
        centres.append(x[j])
        d2 = torch.minimum(d2, ((x - x[j]) ** 2).sum(-1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.stack(
            [x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)]
        )
        if torch.allclose(new, c):
            break
        c = new
    return c


class GOUProcess(Process):
    """GOU chain on vectors (B, d) (any (B, *S) state is flattened to d = prod(S))."""

    kind = "gou"
    options = {
        "a": "float >= 0, a + gamma = 1",
        "gamma": "float >= 0, a + gamma = 1",
        "b": "float > 0",
        "beta": "float > 0",
        "horizon": "float > 0",
        "grid_power": "float > 0",
        "baseline": "true or false (the fitted Gaussian's score added to the network's)",
        "prior": "anchors or stationary",
        "n_anchors": "int >= 1",
        "anchor_mode": "kmeans or data",
        "anchor_seed": "int",
    }
    FIT_OPTIONS = ("n_anchors", "anchor_mode", "anchor_seed")  # recorded in the config's "fit"
    # configs before the grid were uniform and had no baseline score
    config_defaults = {"grid_power": 1.0, "baseline": False}
    schedule_keys = ("horizon", "grid_power")

    def __init__(
        self,
        T: int,
        mu: Tensor,
        U: Tensor,
        lam: Tensor,
        anchors: Tensor,
        a: float = 0.2,
        b: float = 2.0,
        gamma: float = 0.8,
        beta: float = 2.0,
        horizon: float = 2.0,
        prior: Prior = "anchors",
        state_ndim: int = 1,
        fit: dict[str, Any] | None = None,
        grid_power: float = 2.0,
        baseline: bool = True,
    ) -> None:
        check_steps(T)
        check_positive("grid_power (time grid exponent)", grid_power)
        if not (a >= 0 and gamma >= 0):
            raise ValueError(f"a and gamma must be >= 0, got a={a}, gamma={gamma}")
        if abs(a + gamma - 1.0) > 1e-9:
            raise ValueError(f"GOU needs a + gamma = 1 (B eq. 2), got a + gamma = {a + gamma}")
        check_positive("b (contraction scale)", b)
        check_positive("beta (noise level)", beta)
        check_positive("horizon", horizon)
        if prior not in ("anchors", "stationary"):
            raise ValueError(f"unknown GOU prior {prior!r} (anchors, stationary)")
        d = mu.numel()
        if U.shape != (d, d) or lam.shape != (d,) or anchors.ndim != 2 or anchors.shape[1] != d:
            raise ValueError("GOU buffers have inconsistent shapes")
        self.T = T
        self.a, self.b, self.gamma, self.beta, self.horizon = a, b, gamma, beta, horizon
        self.prior = prior
        self.state_ndim = state_ndim
        self.fit = fit or {}
        self.mu, self.U, self.lam, self.anchors = (
            v.double().contiguous() for v in (mu, U, lam, anchors)
        )
        lam_max = float(self.lam.max())
        ratio = self.lam / lam_max if lam_max > 0 else torch.zeros_like(self.lam)
        self.c = -b * (a + gamma * (1 - ratio))  # (d,), in [-b, -a b]
        self.grid_power = float(grid_power)
        self.baseline = bool(baseline)
        self.times = horizon * (torch.arange(T + 1, dtype=torch.float64) / T) ** self.grid_power
        h = torch.diff(self.times)[:, None]  # (T, 1): step lengths
        # per-step decay and variance per eigen-direction, (T, d), float64
        self.decay = torch.exp(self.c * h)
        self.var = self._variance(h)
        # a scalar loss weight per step: the mean transition variance over the directions
        self.step_var = self.var.mean(1)
        # accumulated noise variance per direction, V_t = decay_t^2 V_{t-1} + v_t, (T + 1, d)
        acc = [torch.zeros_like(self.c)]
        for t in range(T):
            acc.append(self.decay[t] ** 2 * acc[-1] + self.var[t])
        self.noise_var = torch.stack(acc)

    # -- exact Gaussian solution ----------------------------------------------------------
    def _variance(self, h: float | Tensor) -> Tensor:
        """v_i(h) = beta (e^{2 c_i h} - 1) / (2 c_i), computed with expm1."""
        return self.beta * torch.expm1(2 * self.c * h) / (2 * self.c)

    def moments(self, x0: Tensor, h: float) -> tuple[Tensor, Tensor]:
        """Mean (B, d) and covariance (d, d) of X_{s+h} | X_s = x0, in float64 (B thm 4-5)."""
        U = self.U
        mean = self.mu + ((x0.double() - self.mu) @ U) * torch.exp(self.c * h) @ U.T
        cov = (U * self._variance(h)) @ U.T
        return mean, cov

    def stationary_covariance(self) -> Tensor:
        """-beta/2 M^{-1} = U diag(-beta / (2 c)) U^T."""
        return (self.U * (-self.beta / (2 * self.c))) @ self.U.T

    def _flat(self, x: Tensor) -> Tensor:
        return x.flatten(-self.state_ndim) if self.state_ndim != 1 else x

    def _unflat(self, x: Tensor, like: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], *like.shape[-self.state_ndim :])

    def _cast(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu.to(like.dtype), self.U.to(like.dtype)

    def _step(self, table: Tensor, t: int | Tensor, like: Tensor) -> Tensor:
        """Row t - 1 of a (T, d) table: (d,) for an int t, (B, d) for a tensor t."""
        if isinstance(t, int):
            return table[t - 1].to(device=like.device, dtype=like.dtype)
        return table.to(like.device)[torch.as_tensor(t, device=like.device).long() - 1].to(
            like.dtype
        )

    def _rotated_residual(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        """z = U^T (x_t - mean(x_{t-1})) in eigen-coordinates, shape (*lead, B, d)."""
        mu, U = self._cast(x_prev)
        xp, xt = self._flat(x_prev), self._flat(x_t)
        mean_rot = ((xp - mu) @ U) * self._step(self.decay, t, xp)
        return (xt - mu) @ U - mean_rot

    def transition_variance(self, t: int | Tensor) -> Tensor:
        return self.step_var[t - 1] if isinstance(t, int) else self.step_var[torch.as_tensor(t) - 1]

    def transition_sample(
        self, x_prev: Tensor, t: int | Tensor, m: int, generator: torch.Generator
    ) -> Tensor:
        schedule_at(self.step_var, t, x_prev, self.state_ndim)  # validates t
        mu, U = self._cast(x_prev)
        xp = self._flat(x_prev)
        rot = ((xp - mu) @ U) * self._step(self.decay, t, xp)
        eps = randn((m, *xp.shape), generator, xp) * self._step(self.var, t, xp).sqrt()
        return self._unflat(mu + (rot + eps) @ U.T, x_prev)

    def transition_score(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        schedule_at(self.step_var, t, x_prev, self.state_ndim)
        z = self._rotated_residual(x_prev, x_t, t)
        _, U = self._cast(x_prev)
        return self._unflat(-(z / self._step(self.var, t, z)) @ U.T, x_t)

    def transition_log_prob(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        schedule_at(self.step_var, t, x_prev, self.state_ndim)
        z = self._rotated_residual(x_prev, x_t, t)
        v = self._step(self.var, t, z)
        return (-(z * z) / (2 * v) - 0.5 * torch.log(2 * math.pi * v)).sum(-1)

    def baseline_score(self, x: Tensor, t: int | Tensor) -> Tensor | None:
        """The exact marginal score of x_t for Gaussian data with the fitted mean mu and
        covariance U diag(lambda) U^T: -U diag(1 / (e^{2 c s_t} lambda + V_t)) U^T (x - mu), s_t the
        grid time and V_t the accumulated noise variance. The score model adds it to the
        network's output, which then learns only the data's departure from that Gaussian (B's
        closed form in the fast-contracting directions). None when ``baseline`` is off."""
        if not self.baseline:
            return None
        var = self._table("base_var", self._marginal_variances, x)
        mu, U = self._cast(x)
        xf = self._flat(x)
        v = var[t] if isinstance(t, int) else var[torch.as_tensor(t, device=x.device).long()]
        return self._unflat(-(((xf - mu) @ U) / v) @ U.T, x)

    def _marginal_variances(self) -> Tensor:
        """(T + 1, d): e^{2 c s_t} lambda + V_t per direction, x_t's variance for the fitted law."""
        return torch.exp(2 * self.c * self.times[:, None]) * self.lam + self.noise_var

    def langevin_cap(self, t: int) -> Tensor:
        return self.var[t - 1].min()

    def _reverse_rotated(
        self, x_t: Tensor, t: int | Tensor, score: Tensor, w: Tensor | float
    ) -> Tensor:
        """mu + U (U^T (x - mu) + w v_t U^T s) / decay_t: the exact inverse of the mean map after a
        score correction of weight w per direction (1: the SDE's posterior mean)."""
        mu, U = self._cast(x_t)
        x, s = self._flat(x_t), self._flat(score)
        v, dec = self._step(self.var, t, x), self._step(self.decay, t, x)
        return self._unflat(mu + (((x - mu) @ U + w * v * (s @ U)) / dec) @ U.T, x_t)

    def _reverse_mean(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        return self._reverse_rotated(x_t, t, score, 1.0)

    def _reverse_ode(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """DDIM's weight per direction, k_t = 1 / (1 + decay_t sqrt(V_{t-1} / V_t)) (V_t the
        accumulated noise variance): 1/2 for short steps, 1 at t = 1 (docs/processes.md)."""
        x = self._flat(x_t)
        ratio = (
            self._step(self.noise_var[:-1], t, x) / self._step(self.noise_var[1:], t, x)
        ).sqrt()
        return self._reverse_rotated(x_t, t, score, 1 / (1 + self._step(self.decay, t, x) * ratio))

    def _reverse_noise(self, x_t: Tensor, t: int | Tensor, generator: torch.Generator) -> Tensor:
        _, U = self._cast(x_t)
        x = self._flat(x_t)
        z = self._step(self.var, t, x).sqrt() * randn(x.shape, generator, x)
        return self._unflat(z @ U.T, x_t)

    def sample_prior(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Anchor mixture of B eq. 12, or the stationary Gaussian."""
        dev = generator.device
        n, d = shape[0], self.mu.numel()
        U, mu = self.U.to(dev), self.mu.to(dev)
        if self.prior == "stationary":
            sd = (-self.beta / (2 * self.c)).sqrt().to(dev)
            z = torch.randn((n, d), generator=generator, device=dev, dtype=torch.float64) * sd
            return (mu + z @ U.T).float().reshape(shape)
        pick = torch.randint(self.anchors.shape[0], (n,), generator=generator, device=dev)
        mean, _ = self.moments(self.anchors.to(dev)[pick], self.horizon)
        sd = self._variance(self.horizon).sqrt().to(dev)
        z = torch.randn((n, d), generator=generator, device=dev, dtype=torch.float64) * sd
        return (mean + z @ U.T).float().reshape(shape)

    prior_names = ("anchors", "stationary")

    def _with_prior(self, name: str, data: Tensor | None, generator: torch.Generator) -> GOUProcess:
        cfg = self.to_config()
        cfg["prior"] = name
        return GOUProcess.from_config(cfg, self.buffers())

    # -- fitting and configuration ------------------------------------------------------------
    @classmethod
    def fit_from_data(
        cls,
        data: Tensor,
        T: int,
        n_anchors: int = 8,
        anchor_mode: AnchorMode = "kmeans",
        anchor_seed: int = 0,
        **params: Any,
    ) -> GOUProcess:
        """Fit mu, the covariance eigenbasis and the anchors to ``data`` of shape (N, *S)."""
        if data.shape[0] < 2:
            raise ValueError("fitting GOU needs at least 2 data points")
        if anchor_mode not in ("kmeans", "data"):
            raise ValueError(f"unknown anchor mode {anchor_mode!r} (kmeans, data)")
        if not isinstance(n_anchors, int) or n_anchors < 1:
            raise ValueError(f"n_anchors must be an integer >= 1, got {n_anchors!r}")
        x = data.double().flatten(1)
        if not torch.isfinite(x).all():
            raise ValueError("GOU data contain NaN or Inf")
        mu = x.mean(0)
        cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        lam, U = torch.linalg.eigh(cov)
        lam = lam.clamp_min(0).flip(0)
        U = U.flip(1)
        # a deterministic sign per eigenvector (largest-magnitude entry positive)
        sign = torch.sign(U.gather(0, U.abs().argmax(0, keepdim=True))).squeeze(0)
        U = U * torch.where(sign == 0, torch.ones_like(sign), sign)
        g = torch.Generator().manual_seed(anchor_seed)
        if anchor_mode == "kmeans":
            anchors = kmeans(x, n_anchors, g)
        else:
            anchors = x[torch.randperm(x.shape[0], generator=g)[:n_anchors]]
        fit = {"n_anchors": n_anchors, "anchor_mode": anchor_mode, "anchor_seed": anchor_seed}
        return cls(T, mu, U, lam, anchors, state_ndim=data.ndim - 1, fit=fit, **params)

    def buffers(self) -> dict[str, Tensor]:
        return {"mu": self.mu, "U": self.U, "lam": self.lam, "anchors": self.anchors}

    def _params(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "gamma": self.gamma,
            "beta": self.beta,
            "horizon": self.horizon,
            "prior": self.prior,
            "state_ndim": self.state_ndim,
            "fit": self.fit,
            "grid_power": self.grid_power,
            "baseline": self.baseline,
        }

    @classmethod
    def create(
        cls, *, steps: int | None, schedule: str | None, example: Tensor, **params: Any
    ) -> GOUProcess:
        check_options(cls, params)
        steps = DEFAULT_STEPS if steps is None else steps
        grids = {"uniform": 1.0, "quadratic": 2.0}
        if schedule is not None:
            if schedule not in grids:
                raise ValueError(
                    f"GOU's schedules are time grids over --horizon: {', '.join(grids)} "
                    "(or --process-opt grid_power=RHO)"
                )
            if "grid_power" in params:
                raise ValueError("give the GOU time grid once: --schedule or grid_power")
            params["grid_power"] = grids[schedule]
        return cls.fit_from_data(example, steps, **params)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], buffers: dict[str, Tensor] | None = None
    ) -> GOUProcess:
        check_config_kind(cls, config)
        bufs = check_buffers(config, buffers)
        keys = [k for k in cls.options if k not in cls.FIT_OPTIONS]
        params = cls.config_params(config, ("state_ndim", "fit", *keys))
        return cls(config["T"], bufs["mu"], bufs["U"], bufs["lam"], bufs["anchors"], **params)
