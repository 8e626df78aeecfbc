"""Kuramoto orientation diffusion (paper A): phases of coupled oscillators, one per pixel.

Forward transition t (entry t-1 of every schedule; paper A, Alg. 1; docs/processes.md section 3):

    mu_t    = theta + f(theta, t),   f = K (cos(theta) <sin> - sin(theta) <cos>) + K_ref sin(psi_ref - theta)
    theta_t = wrap(mu_t + sqrt(2 D) eps),                       eps ~ N(0, I)

where <.> is the mean over all pixels of the image (global coupling; the exact mean-field identity
(1/N) sum_j sin(theta_j - theta_i) = r sin(psi - theta_i) makes it O(N)), over a k x k window
(local coupling, two box filters), or K = 0 (reference-only ablation). The kernel is a wrapped
normal WN(mu_t, 2D) truncated to |k| <= n_terms.

Open choices (parameters, documented in docs/processes.md):
* ``boundary`` for local windows: "inside" averages over the neighbours inside the image (|N_i| is
  counted inside), "reflect" and "circular" pad.
* ``channels``: "independent" (channels never couple) or "joint" (one mean field over all channels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (
    DEFAULT_STEPS,
    Process,
    Transitions,
    check_config_kind,
    check_options,
    check_positive,
    check_steps,
    randn,
    schedule_at,
)
from .schedules import for_steps, linear, named_or_custom
from .wrapped import (
    fit_von_mises_kappa,
    von_mises_sample,
    wrap,
    wrapped_normal_log_prob,
    wrapped_normal_score,
)

Variant = Literal["global", "local", "ref"]
Boundary = Literal["inside", "reflect", "circular"]
Channels = Literal["independent", "joint"]

DATA_SCALE = 0.9 * math.pi  # pixels in [-1, 1] <-> phases in [-0.9 pi, 0.9 pi]

# Paper A, table 5: linear endpoints of 2D_t, K(t) and K_ref(t).
TABLE5: dict[str, dict[str, tuple[float, float]]] = {
    "global-100": {"two_D": (1e-4, 0.1), "K": (3e-5, 0.03), "K_ref": (4.5e-5, 0.045)},
    "global-300": {"two_D": (1e-4, 0.07), "K": (3e-5, 0.02), "K_ref": (4.5e-5, 0.03)},
    "global-1000": {"two_D": (1e-4, 0.015), "K": (3e-5, 0.0045), "K_ref": (4.5e-5, 0.00675)},
    "local-100": {"two_D": (1e-4, 0.1), "K": (5e-5, 0.05), "K_ref": (5e-5, 0.05)},
    "local-300": {"two_D": (1e-4, 0.07), "K": (5e-5, 0.03), "K_ref": (5e-5, 0.03)},
    "local-1000": {"two_D": (1e-4, 0.025), "K": (5e-5, 0.01), "K_ref": (5e-5, 0.01)},
}
SCHEDULE_KEYS = ("two_D", "K", "K_ref")


def default_schedule(variant: Variant, T: int) -> str | dict[str, tuple[float, float]]:
    """Table 5's row for (variant, T) by name; for another T, endpoints by the table's rule
    (``schedules.for_steps``: log-interpolated between rows, same totals outside them). The
    reference-only ablation uses the global rows."""
    prefix = "local" if variant == "local" else "global"
    if f"{prefix}-{T}" in TABLE5:
        return f"{prefix}-{T}"
    rows = {int(k.split("-")[1]): v for k, v in TABLE5.items() if k.startswith(prefix + "-")}
    return for_steps(rows, T)


def coupling_interaction(theta: Tensor, s: Tensor, c: Tensor) -> Tensor:
    """cos(theta_i) s_i - sin(theta_i) c_i, which is sum_j K_ij sin(theta_j - theta_i) for (s, c) = K (sin, cos)."""
    return torch.cos(theta) * s - torch.sin(theta) * c


Coupling = float | Tensor | Callable[[Tensor], Tensor]


def phase_drift(
    theta: Tensor,
    coupling: Coupling | None = None,
    omega: Tensor | None = None,
    field: Tensor | None = None,
    delayed: Tensor | None = None,
) -> Tensor:
    """d theta_i/dt = omega_i + sum_j K_ij sin(theta_j(t - tau_j) - theta_i) + b_i sin(theta_i) (D eq. 1).

    ``theta`` (..., n); ``delayed`` the source phases theta_j(t - tau_j) (default ``theta``);
    ``omega`` and ``field`` (b_i) broadcast against ``theta``. ``coupling`` is None (no interaction),
    a number g (mean field K_ij = g / n, O(n) by the identity used for global coupling), a matrix
    (..., n, n), or a callable mapping (..., n, 2) = (sin, cos) of the sources to K @ them (a blocked
    operator for large n).
    """
    src = theta if delayed is None else delayed
    f = torch.zeros_like(theta)
    if isinstance(coupling, int | float):
        s = torch.sin(src).mean(-1, keepdim=True)
        c = torch.cos(src).mean(-1, keepdim=True)
        f = coupling * coupling_interaction(theta, s, c)
    elif coupling is not None:
        sc = torch.stack((torch.sin(src), torch.cos(src)), -1)
        ksc = coupling @ sc if isinstance(coupling, Tensor) else coupling(sc)
        f = coupling_interaction(theta, ksc[..., 0], ksc[..., 1])
    if omega is not None:
        f = f + omega
    if field is not None:
        f = f + field * torch.sin(theta)
    return f


class KuramotoProcess(Process):
    """Kuramoto chain on phases in [-pi, pi); state shape (B, C, H, W) (or any (B, *S) for global)."""

    kind = "kuramoto"
    periodic = True
    options = {
        "window": "odd int >= 1",
        "boundary": "inside, reflect or circular",
        "channels": "independent or joint",
        "psi_ref": "float (rad)",
        "n_terms": "int >= 1",
        "prior_r": "float in [0, 1]",
        "prior_kappa": "float >= 0 or null (eq. 7)",
    }
    describe_keys = ("variant",)
    schedule_keys = ("schedule", "endpoints")

    def __init__(
        self,
        T: int,
        variant: Variant = "local",
        schedule: str | dict[str, tuple[float, float]] | None = None,
        window: int = 5,
        boundary: Boundary = "inside",
        channels: Channels = "independent",
        psi_ref: float = 0.0,
        n_terms: int = 3,
        prior_kappa: float | None = None,
        prior_r: float = 0.5,
        state_ndim: int = 3,
    ) -> None:
        check_steps(T)
        if variant not in ("global", "local", "ref"):
            raise ValueError(f"unknown Kuramoto variant {variant!r} (global, local, ref)")
        if not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"the local window size must be an odd integer >= 1, got {window!r}")
        if boundary not in ("inside", "reflect", "circular"):
            raise ValueError(f"unknown boundary {boundary!r} (inside, reflect, circular)")
        if channels not in ("independent", "joint"):
            raise ValueError(f"unknown channel handling {channels!r} (independent, joint)")
        if not isinstance(n_terms, int) or n_terms < 1:
            raise ValueError(
                f"n_terms (wrapped-normal terms) must be an integer >= 1, got {n_terms}"
            )
        if not 0.0 <= prior_r <= 1.0:
            raise ValueError(f"prior_r must lie in [0, 1], got {prior_r}")
        if prior_kappa is not None and not (math.isfinite(prior_kappa) and prior_kappa >= 0):
            raise ValueError(f"prior_kappa must be a finite number >= 0, got {prior_kappa}")
        if variant == "local" and state_ndim != 3:
            raise ValueError("local coupling needs image states (B, C, H, W)")
        if schedule is None:
            schedule = default_schedule(variant, T)
        if isinstance(schedule, str):
            if schedule not in TABLE5:
                raise ValueError(
                    f"unknown Kuramoto schedule {schedule!r}; named ones: {', '.join(TABLE5)}"
                )
            self.schedule_name: str | None = schedule
            ends = dict(TABLE5[schedule])
        else:
            self.schedule_name = None
            ends = {k: tuple(float(x) for x in v) for k, v in schedule.items()}
            missing = {"two_D", "K"} - set(ends)
            unknown = set(ends) - set(SCHEDULE_KEYS)
            if missing or unknown:
                raise ValueError(
                    f"a custom Kuramoto schedule needs two_D and K (and optionally K_ref); "
                    f"missing {sorted(missing)}, unknown {sorted(unknown)}"
                )
            ends.setdefault("K_ref", ends["K"])
        for key in SCHEDULE_KEYS:
            lo, hi = ends[key]
            if key == "two_D":
                check_positive("2D_t (noise variance)", lo)
                check_positive("2D_t (noise variance)", hi)
            elif lo < 0 or hi < 0 or not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"{key} must be finite and >= 0, got {lo}, {hi}")
        if variant == "ref":
            ends["K"] = (0.0, 0.0)
        self.T = T
        self.variant: Variant = variant
        self.ends = ends
        self.window = window
        self.boundary: Boundary = boundary
        self.channels: Channels = channels
        self.psi_ref = float(psi_ref)
        self.n_terms = n_terms
        self.prior_r = float(prior_r)
        self.state_ndim = state_ndim
        self.two_D = linear(*ends["two_D"], T)
        self.K = linear(*ends["K"], T)
        self.K_ref = linear(*ends["K_ref"], T)
        self.prior_kappa = prior_kappa

    # -- data <-> state -------------------------------------------------------------------
    def data_to_state(self, x: Tensor) -> Tensor:
        return x.float().clamp(-1.0, 1.0) * DATA_SCALE

    def state_to_data(self, s: Tensor) -> Tensor:
        return (wrap(s) / DATA_SCALE).clamp(-1.0, 1.0)

    # -- dynamics ---------------------------------------------------------------------------
    def mean_field(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(<sin theta>, <cos theta>) over each oscillator's neighbourhood, broadcastable to theta."""
        s, c = torch.sin(theta), torch.cos(theta)
        if self.variant == "local":
            s, c = self._box(s), self._box(c)
            if self.channels == "joint":
                s, c = s.mean(-3, keepdim=True), c.mean(-3, keepdim=True)
            return s, c
        dims = tuple(range(-self.state_ndim, 0))
        if self.channels == "independent" and self.state_ndim >= 2:
            dims = dims[1:]  # average over the pixels of each channel
        return s.mean(dims, keepdim=True), c.mean(dims, keepdim=True)

    def _box(self, x: Tensor) -> Tensor:
        """k x k neighbourhood average of every channel, on (*lead, C, H, W)."""
        lead = x.shape[:-3]
        y = x.reshape(-1, *x.shape[-3:])
        p = self.window // 2
        if self.boundary == "inside":
            y = F.avg_pool2d(y, self.window, stride=1, padding=p, count_include_pad=False)
        else:
            y = F.avg_pool2d(F.pad(y, (p, p, p, p), mode=self.boundary), self.window, stride=1)
        return y.reshape(*lead, *y.shape[-3:])

    def drift(self, theta: Tensor, t: int | Tensor) -> Tensor:
        """f(theta, t) = K <sin(theta_j - theta_i)> + K_ref sin(psi_ref - theta_i), per step."""
        K_ref = schedule_at(self.K_ref, t, theta, self.state_ndim)
        f = K_ref * torch.sin(self.psi_ref - theta)
        if self.variant != "ref":
            K = schedule_at(self.K, t, theta, self.state_ndim)
            s, c = self.mean_field(theta)
            f = f + K * coupling_interaction(theta, s, c)
        return f

    def order_parameter(self, theta: Tensor) -> Tensor:
        """r = |mean_j e^{i theta_j}| over all state dims of each example (A eq. 4); shape (B,)."""
        dims = tuple(range(-self.state_ndim, 0))
        return torch.hypot(torch.sin(theta).mean(dims), torch.cos(theta).mean(dims))

    def transition_variance(self, t: int | Tensor) -> Tensor:
        return self.two_D[t - 1] if isinstance(t, int) else self.two_D[torch.as_tensor(t) - 1]

    def _mean_var(self, x_prev: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        return x_prev + self.drift(x_prev, t), schedule_at(self.two_D, t, x_prev, self.state_ndim)

    def transition_sample(
        self, x_prev: Tensor, t: int | Tensor, m: int, generator: torch.Generator
    ) -> Tensor:
        mu, var = self._mean_var(x_prev, t)
        eps = randn((m, *x_prev.shape), generator, x_prev)
        return wrap(mu + var.sqrt() * eps)

    def sample_transitions(
        self, x_prev: Tensor, t: int | Tensor, m: int, generator: torch.Generator
    ) -> Transitions:
        """As the base method, computing the drift (two box filters) once for draws and scores."""
        if m < 1:
            raise ValueError(f"the number of draws M must be >= 1, got {m}")
        mu, var = self._mean_var(x_prev, t)
        x = wrap(mu + var.sqrt() * randn((m, *x_prev.shape), generator, x_prev))
        return Transitions(x=x, score=wrapped_normal_score(x, mu, var, self.n_terms))

    def transition_score(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        mu, var = self._mean_var(x_prev, t)
        return wrapped_normal_score(x_t, mu, var, self.n_terms)

    def transition_log_prob(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        mu, var = self._mean_var(x_prev, t)
        lp = wrapped_normal_log_prob(x_t, mu, var, self.n_terms)
        return lp.flatten(-self.state_ndim).sum(-1)

    def _reverse_mean(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """x - f(x) + 2D s (A, Alg. 2), wrapped by ``project``."""
        var = schedule_at(self.two_D, t, x_t, self.state_ndim)
        return x_t - self.drift(x_t, t) + var * score

    def _reverse_noise(self, x_t: Tensor, t: int | Tensor, generator: torch.Generator) -> Tensor:
        var = schedule_at(self.two_D, t, x_t, self.state_ndim)
        return var.sqrt() * randn(x_t.shape, generator, x_t)

    def _reverse_ode(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """x - f(x) + D s (A, Alg. 2)."""
        var = schedule_at(self.two_D, t, x_t, self.state_ndim)
        return x_t - self.drift(x_t, t) + 0.5 * var * score

    # -- prior ------------------------------------------------------------------------------
    def eq7_kappa(self, r_T: float | None = None) -> float:
        """kappa = (K(T) r(T) + K_ref(T)) / D_T (A eq. 7), with r(T) = ``prior_r`` by default."""
        r = self.prior_r if r_T is None else r_T
        D_T = float(self.two_D[-1]) / 2
        return (float(self.K[-1]) * r + float(self.K_ref[-1])) / D_T

    @property
    def kappa(self) -> float:
        """The prior's concentration: the fitted/explicit value if set, else eq. 7."""
        return self.eq7_kappa() if self.prior_kappa is None else self.prior_kappa

    def sample_prior(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """theta_T ~ von Mises(psi_ref, kappa) independently per oscillator."""
        dev = generator.device
        return von_mises_sample(self.psi_ref, self.kappa, tuple(shape), generator, dev)

    prior_names = ("eq7", "fitted")
    data_priors = frozenset({"fitted"})

    def _with_prior(
        self, name: str, data: Tensor | None, generator: torch.Generator
    ) -> KuramotoProcess:
        if name == "fitted":
            if data is None:
                raise ValueError("the fitted von Mises prior needs training data to simulate")
            return self.fit_prior(data, generator)
        cfg = self.to_config()
        cfg["prior_kappa"] = None
        return KuramotoProcess.from_config(cfg)

    def project(self, x: Tensor) -> Tensor:
        return wrap(x)

    def fit_prior(self, x0: Tensor, generator: torch.Generator) -> KuramotoProcess:
        """A copy whose prior kappa is fitted (MLE) to terminal states simulated from data ``x0``."""
        theta_T = self.simulate(self.data_to_state(x0), generator)[-1]
        _, kappa = fit_von_mises_kappa(theta_T)
        cfg = self.to_config()
        cfg["prior_kappa"] = kappa
        return KuramotoProcess.from_config(cfg)

    # -- configuration ----------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "schedule": self.schedule_name,
            "endpoints": {k: list(v) for k, v in self.ends.items()},
            "window": self.window,
            "boundary": self.boundary,
            "channels": self.channels,
            "psi_ref": self.psi_ref,
            "n_terms": self.n_terms,
            "prior_kappa": self.prior_kappa,
            "prior_r": self.prior_r,
            "state_ndim": self.state_ndim,
        }

    @classmethod
    def create(
        cls,
        *,
        steps: int | None,
        schedule: str | None,
        example: Tensor,
        variant: Variant = "local",
        **params: Any,
    ) -> KuramotoProcess:
        check_options(cls, params)
        steps = DEFAULT_STEPS if steps is None else steps
        sched = named_or_custom(schedule)
        return cls(steps, variant, sched, state_ndim=example.ndim - 1, **params)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], buffers: dict[str, Tensor] | None = None
    ) -> KuramotoProcess:
        check_config_kind(cls, config)
        schedule = config["schedule"] or {k: tuple(v) for k, v in config["endpoints"].items()}
        params = cls.config_params(config, ("variant", "state_ndim", *cls.options))
        return cls(config["T"], schedule=schedule, **params)
