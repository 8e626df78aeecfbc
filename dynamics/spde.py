"""Anisotropic SPDE diffusion (paper C): a stochastic Perona-Malik equation on each image channel.

    dU = div(g1(s, grad U) grad U) ds + g2(s, grad U) dW,   g_i(s, x) = alpha_i(s) / sqrt(1 + |x / lambda_i(s)|^2)

on the pixel grid (spacing 1, zero-flux Neumann boundaries, channels independent), with T steps of
h = horizon / T. Transition t uses the coefficients at s = (t - 1) h, and with u = x_{t-1}:

    x_t ~ N(m(u), h D Q D),   D = diag g2(s, grad u),

where Q is the spatial noise correlation (I when corr_length = 0; otherwise the reflected
exponential kernel, diagonal in the DCT-II basis after a diagonal rescaling). Two time schemes give
the mean m (``scheme``):

* ``semi-implicit`` (the default): m = (I - h A_u)^{-1} u, where A_u v = div(g1(s, grad u) grad v)
  is the drift with its diffusivity frozen at u (the linearly implicit scheme of Catte et al. and
  Weickert). Every mode's multiplier lies in (0, 1], so the mean map is invertible with a
  well-conditioned inverse, I - h A; the solve is conjugate gradients, run per example to a
  relative error of 1e-6 (the iteration count follows from the condition bound 1 + 8 h alpha1).
* ``tamed``: paper C's tamed Euler-Maruyama, m = u + h b(u) / (1 + h |b(u)|), b = A_u u. Its
  highest modes have multipliers near -1 at the default T, which no reverse step can undo
  stably; it is kept to reproduce paper C's forward figures.

The transition is Gaussian, so its score and log-density are exact. The reverse step undoes the
mean map after the score correction: for the semi-implicit scheme,
x_{t-1} = (I - h A_y) y with y = x_t + h (div Sigma + Sigma s) (+ noise), exact for linear drifts.
Derivation, stability and choices: docs/processes.md, "Anisotropic SPDE".
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
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
from .schedules import geometric, parse_endpoints, polynomial

Instance = Literal["anisotropic", "heat", "ve"]
Shape = Literal["geometric", "polynomial"]
Prior = Literal["fitted", "noise"]
Scheme = Literal["semi-implicit", "tamed"]

DEFAULT_HORIZON = 2.0  # C sec. 5.4: T = 2
LAMBDA_MIN, LAMBDA_K = 0.025, 0.5  # C eq. 16
# VE: Song et al.'s CIFAR-10 sigma in [0.01, 50] for data in [0, 1], doubled for data in [-1, 1];
# sigma_max grows with the image side as in Song et al.'s CelebA-64 (90) and LSUN-256 (380) configs.
VE_SIGMA_MIN, VE_SIGMA_MAX_PER_PIXEL = 0.02, 100.0 / 32
PRIOR_EXAMPLES = 256  # the fitted prior's variances then carry ~9 % relative standard error
PRIOR_SE_WARN = 0.15  # warn above this measured relative standard error of the fitted variances
CG_TOL = 1e-6  # relative A-norm error of the semi-implicit solve
EIG_FLOOR = 1e-6  # eigenvalues of the reflected kernel are clipped at EIG_FLOOR * max
PRIOR_KEYS = ("prior_mean", "prior_var")
BASE_KEYS = ("base_mean", "base_var")  # per-(channel, DCT mode) moments of the data


def instance_defaults(instance: str, image_size: int, horizon: float) -> dict[str, Any]:
    """Paper C section 5's parameters of ``instance`` for images whose longer side is ``image_size``."""
    if instance == "anisotropic":  # C sec. 5.2
        return {"alpha1": (0.5, 2.0 * image_size), "alpha2": (0.01, 2.0), "lambda1": LAMBDA_MIN}
    if instance == "heat":  # C sec. 5.3
        return {"alpha1": (0.5, 2.0 * image_size), "alpha2": (0.01, 0.5), "lambda1": None}
    if instance == "ve":  # C sec. 5.1: alpha2 = sqrt(d sigma^2 / ds) for geometric sigma(s)
        check_positive("horizon", horizon)
        lo, hi = VE_SIGMA_MIN, VE_SIGMA_MAX_PER_PIXEL * image_size
        c = math.sqrt(2.0 * math.log(hi / lo) / horizon)
        return {"alpha1": (0.0, 0.0), "alpha2": (lo * c, hi * c), "lambda1": None}
    raise ValueError(f"unknown SPDE instance {instance!r} (anisotropic, heat, ve)")


def _check_ends(name: str, ends: Any, positive: bool) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in ends)
    except (TypeError, ValueError):
        raise ValueError(f"{name} needs two endpoints (start, end), got {ends!r}") from None
    for v in (lo, hi):
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            kind = "positive" if positive else ">= 0"
            raise ValueError(f"{name} endpoints must be finite and {kind}, got {lo}, {hi}")
    return lo, hi


def _check_lambda(name: str, value: float | None) -> float | None:
    if value is None or value == math.inf:
        return None  # infinity: that term is isotropic
    check_positive(name, value)
    return float(value)


def _check_k(name: str, k: float | None) -> float | None:
    if k is None:
        return None
    if not (isinstance(k, int | float) and math.isfinite(k) and k >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 or None (constant), got {k!r}")
    return float(k)


def alpha_schedule(
    ends: tuple[float, float], shape: Shape, power: float, times: Tensor, horizon: float
) -> Tensor:
    """alpha(s) at ``times``: geometric (C eq. 15) or polynomial (C fig. 5); equal ends: constant."""
    lo, hi = ends
    if lo == hi:
        return torch.full_like(times, lo)
    if shape == "geometric":
        if lo <= 0 or hi <= 0:
            raise ValueError(
                f"a geometric schedule needs positive endpoints, got {lo}, {hi} (use polynomial)"
            )
        return geometric(lo, hi, times, horizon)
    return polynomial(lo, hi, times, horizon, power)


def lambda_schedule(lmin: float | None, k: float | None, times: Tensor, horizon: float) -> Tensor:
    """lambda(s) = lmin (e^{k H} - 1) / (e^{k (H - s)} - 1) (C eq. 16); k = 0: its limit
    lmin H / (H - s); k = None: constant lmin; lmin = None: infinity (isotropic)."""
    if lmin is None:
        return torch.full_like(times, math.inf)
    if k is None:
        return torch.full_like(times, lmin)
    if k == 0:
        return lmin * horizon / (horizon - times)
    return lmin * math.expm1(k * horizon) / torch.expm1(k * (horizon - times))


def dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II matrix (n, n), float64: it diagonalises the Neumann 5-point Laplacian."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    c = torch.cos(math.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def reflected_kernel_eigenvalues(height: int, width: int, corr_length: float) -> Tensor:
    """DCT-II eigenvalues (H, W) of exp(-|x - y| / l) mirrored across the image's edges.

    The kernel sampled on the (2H, 2W) torus (minimum-image distances) is even in each axis, so its
    FFT is real, and the DCT-II diagonalises the restriction of its circular convolution to
    half-sample-symmetric images: the matrix A_ij = sum over the 4 mirror images of k(x_i - x_j').
    """
    n1 = torch.arange(2 * height, dtype=torch.float64)
    n2 = torch.arange(2 * width, dtype=torch.float64)
    d1 = torch.minimum(n1, 2 * height - n1)[:, None]
    d2 = torch.minimum(n2, 2 * width - n2)[None]
    kernel = torch.exp(-torch.sqrt(d1**2 + d2**2) / corr_length)
    lam = torch.fft.fft2(kernel).real[:height, :width]
    return lam.clamp_min(EIG_FLOOR * float(lam.max()))


def _diffs(u: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences across the faces: along H (..., H-1, W) and along W (..., H, W-1)."""
    return u[..., 1:, :] - u[..., :-1, :], u[..., :, 1:] - u[..., :, :-1]


def _central(dv: Tensor, dw: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel central differences (u_{i+1} - u_{i-1}) / 2 along H and W, ghost pixels replicated."""
    dv, dw = F.pad(dv, (0, 0, 1, 1)), F.pad(dw, (1, 1))
    return 0.5 * (dv[..., 1:, :] + dv[..., :-1, :]), 0.5 * (dw[..., 1:] + dw[..., :-1])


class SPDEProcess(Process):
    """Tamed Euler-Maruyama chain of the stochastic Perona-Malik SPDE; state (B, C, H, W)."""

    kind = "spde"
    periodic = False
    state_ndim = 3
    options = {
        "alpha1": "start:end of the drift diffusivity",
        "alpha2": "start:end of the noise intensity",
        "horizon": "float > 0",
        "shape": "geometric or polynomial",
        "power": "float > 0",
        "lambda1": "float > 0 or null (isotropic)",
        "lambda1_k": "float >= 0 or null (constant)",
        "lambda2": "float > 0 or null (isotropic)",
        "lambda2_k": "float >= 0 or null (constant)",
        "corr_length": "float >= 0",
        "prior": "fitted or noise",
        "prior_examples": "int >= 1",
        "prior_seed": "int",
        "scheme": "semi-implicit or tamed",
    }
    config_defaults = {"scheme": "tamed"}  # configs before the semi-implicit scheme were tamed
    describe_keys = ("instance",)
    schedule_keys = ("alpha1", "alpha2", "horizon", "scheme")

    def __init__(
        self,
        T: int,
        *,
        instance: Instance,
        height: int,
        width: int,
        alpha1: tuple[float, float],
        alpha2: tuple[float, float],
        horizon: float = DEFAULT_HORIZON,
        shape: Shape = "geometric",
        power: float = 1.0,
        lambda1: float | None = None,
        lambda1_k: float | None = LAMBDA_K,
        lambda2: float | None = None,
        lambda2_k: float | None = LAMBDA_K,
        corr_length: float = 0.0,
        prior: Prior = "fitted",
        prior_examples: int = PRIOR_EXAMPLES,
        prior_seed: int = 0,
        buffers: dict[str, Tensor] | None = None,
        scheme: Scheme = "semi-implicit",
    ) -> None:
        check_steps(T)
        if instance not in ("anisotropic", "heat", "ve"):
            raise ValueError(f"unknown SPDE instance {instance!r} (anisotropic, heat, ve)")
        for name, n in (("height", height), ("width", width)):
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"the image {name} must be an integer >= 1, got {n!r}")
        check_positive("horizon", horizon)
        if shape not in ("geometric", "polynomial"):
            raise ValueError(f"unknown schedule shape {shape!r} (geometric, polynomial)")
        check_positive("power (polynomial schedule exponent)", power)
        if not (isinstance(corr_length, int | float) and math.isfinite(corr_length)):
            raise ValueError(f"corr_length must be a finite number >= 0, got {corr_length!r}")
        if corr_length < 0:
            raise ValueError(f"corr_length must be a finite number >= 0, got {corr_length!r}")
        if scheme not in ("semi-implicit", "tamed"):
            raise ValueError(f"unknown SPDE time scheme {scheme!r} (semi-implicit, tamed)")
        if prior not in ("fitted", "noise"):
            raise ValueError(f"unknown SPDE prior {prior!r} (fitted, noise)")
        if not isinstance(prior_examples, int) or prior_examples < 1:
            raise ValueError(f"prior_examples must be an integer >= 1, got {prior_examples!r}")
        if not isinstance(prior_seed, int):
            raise ValueError(f"prior_seed must be an integer, got {prior_seed!r}")
        self.T = T
        self.scheme: Scheme = scheme
        self.instance: Instance = instance
        self.height, self.width = height, width
        self.horizon = float(horizon)
        self.h = self.horizon / T
        self.shape: Shape = shape
        self.power = float(power)
        self.ends1 = _check_ends("alpha1 (drift diffusivity)", alpha1, positive=False)
        self.ends2 = _check_ends("alpha2 (noise intensity)", alpha2, positive=True)
        self.lambda1_min = _check_lambda("lambda1", lambda1)
        self.lambda2_min = _check_lambda("lambda2", lambda2)
        self.lambda1_k = _check_k("lambda1_k", lambda1_k)
        self.lambda2_k = _check_k("lambda2_k", lambda2_k)
        self.corr_length = float(corr_length)
        self.prior: Prior = prior
        self.prior_examples, self.prior_seed = prior_examples, prior_seed

        times = torch.arange(T, dtype=torch.float64) * self.h  # s = (t - 1) h
        self.alpha1 = alpha_schedule(self.ends1, shape, self.power, times, self.horizon)
        self.alpha2 = alpha_schedule(self.ends2, shape, self.power, times, self.horizon)
        self.lambda1 = lambda_schedule(self.lambda1_min, self.lambda1_k, times, self.horizon)
        self.lambda2 = lambda_schedule(self.lambda2_min, self.lambda2_k, times, self.horizon)
        self.noise_var = self.alpha2**2 * self.h
        self.has_drift = bool(self.alpha1.abs().max() > 0)
        if float(self.alpha1.max()) * self.h > 0.25:
            need = math.ceil(4 * float(self.alpha1.max()) * self.horizon)
            why = (
                "taming keeps the chain bounded, not accurate"
                if scheme == "tamed"
                else "the semi-implicit step stays stable, but each reverse step multiplies "
                f"score errors by up to {1 + 8 * float(self.alpha1.max()) * self.h:.3g}"
            )
            warnings.warn(
                f"SPDE steps beyond the explicit stability limit: max alpha1 * h = "
                f"{float(self.alpha1.max()) * self.h:.3g} > 1/4; use about T >= {need} steps "
                f"({why})",
                RuntimeWarning,
                stacklevel=2,
            )

        self.dct_h, self.dct_w = dct_matrix(height), dct_matrix(width)
        if self.corr_length > 0:
            lam = reflected_kernel_eigenvalues(height, width, self.corr_length)
            ch, cw = self.dct_h, self.dct_w
            diag = (ch**2).T @ lam @ cw**2  # diag of A = C^T diag(lam) C
            self.q_eig = lam
            self.q_scale = diag.rsqrt()  # Q = S A S with S = diag(A)^(-1/2): unit diagonal
            s = self.q_scale
            # Q_{i, i+e} between vertical and horizontal neighbours
            self.q_band_h = (ch[:, :-1] * ch[:, 1:]).T @ lam @ cw**2 * s[:-1] * s[1:]
            self.q_band_w = (ch**2).T @ lam @ (cw[:, :-1] * cw[:, 1:]) * s[:, :-1] * s[:, 1:]
            self.q_logdet = float(lam.log().sum() + 2 * s.log().sum())  # per channel
        # CG iterations of transition t: the error falls by (sqrt(k) - 1) / (sqrt(k) + 1) per
        # iteration, k = 1 + 8 h alpha1 bounding the condition number of I - h A_u
        kappa = 1 + 8 * self.h * self.alpha1.abs()
        rate = (kappa.sqrt() - 1) / (kappa.sqrt() + 1)
        need = (
            torch.log(torch.tensor(CG_TOL / 2, dtype=torch.float64)) / rate.clamp_min(1e-300).log()
        )
        self.cg_iters = torch.where(rate > 0, need.ceil(), torch.zeros_like(need)).long()
        self.noise_prior_var = self._linearised_variances()[-1]
        self.prior_mean: Tensor | None = None
        self.prior_var: Tensor | None = None
        self.base_mean: Tensor | None = None
        self.base_var: Tensor | None = None
        buffers = dict(buffers or {})
        unknown = set(buffers) - set(PRIOR_KEYS) - set(BASE_KEYS)
        if unknown:
            raise ValueError(f"unknown SPDE buffers {sorted(unknown)}")
        base = {k: buffers.pop(k) for k in BASE_KEYS if k in buffers}
        if base:
            self._set_base(base)
        if buffers:
            self._set_prior(buffers)

    @property
    def image_size(self) -> int:
        return max(self.height, self.width)

    # -- dynamics ---------------------------------------------------------------------------
    def conductances(self, u: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        """g1(s, face gradient of u) on the faces between rows (..., H-1, W) and between columns
        (..., H, W-1); the tangential derivative at a face is the mean of the pixels' central ones."""
        a1 = schedule_at(self.alpha1, t, u, 3)
        dv, dw = _diffs(u)
        if self.lambda1_min is None:
            return a1.expand_as(dv), a1.expand_as(dw)
        lam2 = schedule_at(self.lambda1, t, u, 3) ** 2
        cv, cw = _central(dv, dw)
        tv = 0.5 * (cw[..., 1:, :] + cw[..., :-1, :])  # d/dW at the faces between rows
        tw = 0.5 * (cv[..., :, 1:] + cv[..., :, :-1])  # d/dH at the faces between columns
        return a1 * torch.rsqrt(1 + (dv**2 + tv**2) / lam2), a1 * torch.rsqrt(
            1 + (dw**2 + tw**2) / lam2
        )

    @staticmethod
    def flux_divergence(gv: Tensor, gw: Tensor, v: Tensor) -> Tensor:
        """A v = sum over faces g (v_nb - v_i), zero flux through the outer faces."""
        dv, dw = _diffs(v)
        dv, dw = F.pad(gv * dv, (0, 0, 1, 1)), F.pad(gw * dw, (1, 1))
        return (dv[..., 1:, :] - dv[..., :-1, :]) + (dw[..., 1:] - dw[..., :-1])

    def drift(self, u: Tensor, t: int | Tensor) -> Tensor:
        """Flux-form Perona-Malik drift b(u) = A_u u = sum over faces g1(face gradient) (u_nb - u_i)."""
        if not self.has_drift:
            return torch.zeros_like(u)
        return self.flux_divergence(*self.conductances(u, t), u)

    def tamed_increment(self, u: Tensor, t: int | Tensor) -> Tensor:
        """h b / (1 + h |b|), |b| the L2 norm over each example's (C, H, W); its norm is < 1."""
        b = self.drift(u, t)
        norm = b.flatten(-3).norm(dim=-1)[..., None, None, None]
        return self.h * b / (1 + self.h * norm)

    def implicit_solve(self, u: Tensor, t: int | Tensor) -> Tensor:
        """y = (I - h A_u)^{-1} u by conjugate gradients (I - h A_u is symmetric positive definite).

        Each example runs the iteration count of its own t (``cg_iters``) with its own inner
        products, so a row's result does not depend on the other rows of the batch."""
        if not self.has_drift:
            return u
        gv, gw = self.conductances(u, t)
        gv, gw = self.h * gv, self.h * gw
        if isinstance(t, int):
            iters = torch.full((1,), int(self.cg_iters[t - 1]), device=u.device)
        else:
            iters = self.cg_iters.to(u.device)[torch.as_tensor(t, device=u.device).long() - 1]
        lead = u.ndim - 3
        iters = iters.reshape(*iters.shape, *([1] * (lead - iters.ndim + 3)))

        def dot(a: Tensor, b: Tensor) -> Tensor:
            return (a * b).flatten(-3).sum(-1)[..., None, None, None]

        y = u.clone()
        r = u - (y - self.flux_divergence(gv, gw, y))
        p, rr = r.clone(), dot(r, r)
        tiny = torch.finfo(u.dtype).tiny
        for k in range(int(iters.max())):
            ap = p - self.flux_divergence(gv, gw, p)
            alpha = rr / dot(p, ap).clamp_min(tiny)
            active = (k < iters).to(u.dtype)
            y = y + active * alpha * p
            r = r - alpha * ap
            rr_new = dot(r, r)
            p = r + (rr_new / rr.clamp_min(tiny)) * p
            rr = rr_new
        return y

    def transition_mean(self, u: Tensor, t: int | Tensor) -> Tensor:
        """The mean m(u) of x_t given x_{t-1} = u under the process's time scheme."""
        if self.scheme == "tamed":
            return u + self.tamed_increment(u, t)
        return self.implicit_solve(u, t)

    def undo_mean(self, y: Tensor, t: int | Tensor) -> Tensor:
        """(I - h A_y) y: the inverse of the semi-implicit mean map with the diffusivity frozen at
        y instead of at x_{t-1} (exact when the drift is linear)."""
        return y - self.h * self.drift(y, t)

    def noise_scale(self, u: Tensor, t: int | Tensor) -> Tensor:
        """Per-pixel g2(s, grad u) (pixel central differences), broadcast to ``u``'s shape."""
        a2 = schedule_at(self.alpha2, t, u, 3)
        if self.lambda2_min is None:
            return torch.broadcast_to(a2, u.shape)
        gv, gw = _central(*_diffs(u))
        return a2 * torch.rsqrt(1 + (gv**2 + gw**2) / schedule_at(self.lambda2, t, u, 3) ** 2)

    def sigma_divergence(self, u: Tensor, t: int | Tensor) -> Tensor:
        """(div Sigma)_i = sum_j d Sigma_ij / d u_j for Sigma = D Q D; zero when lambda2 = inf."""
        if self.lambda2_min is None:
            return torch.zeros_like(u)
        lam2 = schedule_at(self.lambda2, t, u, 3) ** 2
        gv, gw = _central(*_diffs(u))
        d = schedule_at(self.alpha2, t, u, 3) * torch.rsqrt(1 + (gv**2 + gw**2) / lam2)
        pv = -d * gv / (lam2 + gv**2 + gw**2)  # d d_i / d gv_i
        pw = -d * gw / (lam2 + gv**2 + gw**2)
        if self.corr_length > 0:
            qh = self.q_band_h.to(u)
            qw = self.q_band_w.to(u)
        else:
            qh = qw = torch.zeros((), dtype=u.dtype, device=u.device)
        # Q_ij d_j at the (clamped) neighbours j entering the central differences of pixel i
        up = torch.cat([qh * d[..., 1:, :], d[..., -1:, :]], dim=-2)
        down = torch.cat([d[..., :1, :], qh * d[..., :-1, :]], dim=-2)
        right = torch.cat([qw * d[..., :, 1:], d[..., :, -1:]], dim=-1)
        left = torch.cat([d[..., :, :1], qw * d[..., :, :-1]], dim=-1)
        term1 = 0.5 * (pv * (up - down) + pw * (right - left))  # sum_j Q_ij d_j dd_i/du_j
        edge_h = torch.zeros(self._hw(u)[0], 1, dtype=u.dtype, device=u.device)
        edge_w = torch.zeros(self._hw(u)[1], dtype=u.dtype, device=u.device)
        edge_h[-1] += 0.5
        edge_h[0] -= 0.5
        edge_w[-1] += 0.5
        edge_w[0] -= 0.5
        diag = pv * edge_h + pw * edge_w  # dd_j/du_j: nonzero only on the border
        return term1 + d * self._corr(diag, "cov")  # + d_i sum_j Q_ij dd_j/du_j

    # -- spatial noise correlation Q ------------------------------------------------------------
    def _hw(self, v: Tensor) -> tuple[int, int]:
        return v.shape[-2], v.shape[-1]

    def _dct(self, v: Tensor, inverse: bool = False) -> Tensor:
        if self._hw(v) != (self.height, self.width):
            raise ValueError(
                f"this SPDE process was built for {self.height}x{self.width} images "
                f"(correlated noise and prior), got {self._hw(v)[0]}x{self._hw(v)[1]}"
            )
        ch = self.dct_h.to(device=v.device, dtype=v.dtype)
        cw = self.dct_w.to(device=v.device, dtype=v.dtype)
        return ch.T @ v @ cw if inverse else ch @ v @ cw.T

    def _corr(self, v: Tensor, op: Literal["cov", "sqrt", "inv"]) -> Tensor:
        """Q v, L v (with L L^T = Q) or Q^{-1} v over the last two dims; identity when l = 0."""
        if self.corr_length == 0:
            return v
        lam = self.q_eig.to(device=v.device, dtype=v.dtype)
        s = self.q_scale.to(device=v.device, dtype=v.dtype)
        if op == "cov":
            return s * self._dct(lam * self._dct(s * v), inverse=True)
        if op == "sqrt":
            return s * self._dct(lam.sqrt() * self._dct(v), inverse=True)
        return self._dct(self._dct(v / s) / lam, inverse=True) / s

    def spatial_covariance(self) -> Tensor:
        """Dense Q (H W, H W), float64, row-major pixels; for tests and small images only."""
        n = self.height * self.width
        if self.corr_length == 0:
            return torch.eye(n, dtype=torch.float64)
        eye = torch.eye(n, dtype=torch.float64).reshape(n, self.height, self.width)
        return self._corr(eye, "cov").reshape(n, n)

    # -- transitions ------------------------------------------------------------------------
    def transition_variance(self, t: int | Tensor) -> Tensor:
        """alpha2(s)^2 h: the variance where grad u = 0 (an upper bound when lambda2 < inf)."""
        if isinstance(t, int):
            return self.noise_var[t - 1]
        return self.noise_var[torch.as_tensor(t) - 1]

    def _mean_scale(self, x_prev: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        return self.transition_mean(x_prev, t), self.noise_scale(x_prev, t)

    def transition_sample(
        self, x_prev: Tensor, t: int | Tensor, m: int, generator: torch.Generator
    ) -> Tensor:
        mean, d = self._mean_scale(x_prev, t)
        z = randn((m, *x_prev.shape), generator, x_prev)
        return mean + math.sqrt(self.h) * d * self._corr(z, "sqrt")

    def transition_score(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        """-(h D Q D)^{-1} (x_t - mean)."""
        mean, d = self._mean_scale(x_prev, t)
        return -self._corr((x_t - mean) / d, "inv") / (d * self.h)

    def transition_log_prob(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        mean, d = self._mean_scale(x_prev, t)
        y = (x_t - mean) / d
        if self.corr_length > 0:
            w = self._dct(y / self.q_scale.to(y)) ** 2 / self.q_eig.to(y)
        else:
            w = y**2
        n = x_prev[0].numel()
        c = x_prev.shape[-3]
        logdet = 2 * d.log().flatten(-3).sum(-1) + n * math.log(self.h)
        if self.corr_length > 0:
            logdet = logdet + c * self.q_logdet
        maha = w.flatten(-3).sum(-1) / self.h
        return -0.5 * (maha + logdet + n * math.log(2 * math.pi))

    # -- reverse ----------------------------------------------------------------------------
    def _correction(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """h (div Sigma + Sigma s), Sigma = D Q D at x_t: E[m(x_{t-1}) | x_t] - x_t to first order."""
        d = self.noise_scale(x_t, t)
        return self.h * (self.sigma_divergence(x_t, t) + d * self._corr(d * score, "cov"))

    def langevin_cap(self, t: int) -> Tensor:
        """alpha2^2 h times Q's smallest eigenvalue (1 for white noise); with lambda2 < inf the
        noise is weaker at edges than this bound."""
        q_min = float((self.q_eig * self.q_scale.min() ** 2).min()) if self.corr_length > 0 else 1.0
        return self.noise_var[t - 1] * q_min

    def _reverse_mean(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """semi-implicit: (I - h A_y) y, y = x_t + correction; tamed: x - tamed(b) + correction."""
        if self.scheme == "tamed":
            return x_t - self.tamed_increment(x_t, t) + self._correction(x_t, t, score)
        return self.undo_mean(x_t + self._correction(x_t, t, score), t)

    def _reverse_noise(self, x_t: Tensor, t: int | Tensor, generator: torch.Generator) -> Tensor:
        z = randn(x_t.shape, generator, x_t)
        return math.sqrt(self.h) * self.noise_scale(x_t, t) * self._corr(z, "sqrt")

    def _reverse_ode(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """semi-implicit: (I - h A_y) y with y = x_t + k_t * correction, k_t applied per DCT mode;
        tamed: x - tamed(b) + correction / 2.

        k_t = 1 / (1 + a_t sqrt(V_{t-1} / V_t)) is the weight of a DDIM step for the linearised
        chain (multipliers a_t, accumulated noise variances V_t per mode): it is 1/2 for small
        steps, 1 at t = 1 (V_0 = 0), and 1 / (1 + a_t) for a mode at equilibrium, where a
        Euler weight of 1/2 would grow the mode by (1 + a^2) / (2a) per step."""
        c = self._correction(x_t, t, score)
        if self.scheme == "tamed":
            return x_t - self.tamed_increment(x_t, t) + 0.5 * c
        weight = self._table("ode_weight", self.ode_weight, x_t)
        k = weight[t - 1] if isinstance(t, int) else None
        if k is None:
            k = weight[torch.as_tensor(t, device=x_t.device).long() - 1]
            k = k[:, None]  # (B, 1, H, W)
        k = k.to(device=x_t.device, dtype=x_t.dtype)
        return self.undo_mean(x_t + self._dct(k * self._dct(c), inverse=True), t)

    def ode_weight(self) -> Tensor:
        """k_t per DCT mode, (T, H, W) float64, from the linearised variances."""
        v = self._linearised_variances()
        return 1 / (1 + self._linear_multipliers() * (v[:-1] / v[1:]).sqrt())

    def _linear_gains(self) -> Tensor:
        """(T + 1, H, W): P_t = a_1 ... a_t per DCT mode (P_0 = 1)."""
        a = self._linear_multipliers()
        return torch.cat([torch.ones_like(a[:1]), torch.cumprod(a, 0)])

    # -- prior ------------------------------------------------------------------------------
    def _linear_multipliers(self) -> Tensor:
        """(T, H, W): each DCT mode's mean multiplier under the isotropic linearisation
        (drift alpha1 L, L the Neumann Laplacian with eigenvalues mu <= 0, taming ignored):
        1 / (1 - h alpha1 mu) (semi-implicit) or 1 + h alpha1 mu (tamed)."""
        kh = torch.arange(self.height, dtype=torch.float64)[:, None]
        kw = torch.arange(self.width, dtype=torch.float64)[None]
        mu = -4 * (
            torch.sin(math.pi * kh / (2 * self.height)) ** 2
            + torch.sin(math.pi * kw / (2 * self.width)) ** 2
        )
        ha = (self.h * self.alpha1)[:, None, None]
        return 1 / (1 - ha * mu) if self.scheme == "semi-implicit" else 1 + ha * mu

    def _linearised_variances(self) -> Tensor:
        """(T + 1, H, W): V_t per DCT mode, the variance of x_t started from x_0 = 0 under the
        linearisation, V_t = a_t^2 V_{t-1} + h alpha2^2 q (q: Q's eigenvalues, 1 when l = 0)."""
        a = self._linear_multipliers()
        q = self.q_eig if self.corr_length > 0 else torch.ones_like(a[0])
        var = [torch.zeros_like(a[0])]
        for t in range(self.T):
            var.append(a[t] ** 2 * var[-1] + float(self.noise_var[t]) * q)
        return torch.stack(var)

    def _set_base(self, buffers: dict[str, Tensor]) -> None:
        if set(buffers) != set(BASE_KEYS):
            raise ValueError(f"the baseline score needs buffers {BASE_KEYS}, got {sorted(buffers)}")
        mean, var = (buffers[k].to(torch.float64) for k in BASE_KEYS)
        if mean.ndim != 3 or mean.shape != var.shape or mean.shape[1:] != (self.height, self.width):
            raise ValueError(f"baseline buffers must have shape (C, {self.height}, {self.width})")
        if not bool(torch.all(var >= 0)):
            raise ValueError("baseline variances must be >= 0")
        self.base_mean, self.base_var = mean, var

    def fit_baseline(self, x0: Tensor) -> SPDEProcess:
        """A copy whose ``baseline_score`` uses the per-(channel, DCT mode) mean and variance of
        the images ``x0`` (B, C, H, W) (a DCT of each; no simulation)."""
        if x0.ndim != 4 or x0.shape[-2:] != (self.height, self.width):
            raise ValueError(f"fit_baseline needs images (B, C, {self.height}, {self.width})")
        coef = self._dct(self.data_to_state(x0).to(torch.float64)).cpu()
        var = coef.var(0) if coef.shape[0] > 1 else torch.zeros_like(coef[0])
        return self._copy({**self.buffers(), "base_mean": coef.mean(0), "base_var": var})

    def _copy(self, buffers: dict[str, Tensor], **changes: Any) -> SPDEProcess:
        cfg = {**self.to_config(), **changes}
        cfg.pop("buffers", None)
        with warnings.catch_warnings():  # any stability warning was given for self already
            warnings.simplefilter("ignore", RuntimeWarning)
            return type(self)._from_params(cfg, buffers)

    def baseline_score(self, x: Tensor, t: int | Tensor) -> Tensor | None:
        """The exact score of x_t for Gaussian data with the fitted per-mode moments under the
        isotropic linearisation (mode k: mean P_tk m_k, variance P_tk^2 d_k + V_tk, P_t the
        product of the multipliers a_1..a_t, V_t the accumulated noise variance):

            s_base(x, t) = -C^T [ (C x C^T - P_t m) / (P_t^2 d + V_t) ] C   per channel.

        The score model adds it to the network's output, so an untrained network already has
        the chain's Gaussian response in every mode (the highest ones, which the reverse step
        amplifies by up to 1 + 8 h alpha1 before the score shrinks them, included); the network
        learns the rest. None without fitted moments (configs written before it)."""
        if self.base_mean is None or self.base_var is None:
            return None
        gain = self._table("base_gain", self._linear_gains, x)
        noise = self._table("base_noise", self._linearised_variances, x)
        m = self._table("base_mean", lambda: self.base_mean, x)
        d = self._table("base_var", lambda: self.base_var, x)
        if isinstance(t, int):
            g, v = gain[t], noise[t]
        else:
            idx = torch.as_tensor(t, device=x.device).long()
            g, v = gain[idx][:, None], noise[idx][:, None]  # (B, 1, H, W)
        return -self._dct((self._dct(x) - g * m) / (g * g * d + v), inverse=True)

    def _set_prior(self, buffers: dict[str, Tensor]) -> None:
        if self.prior != "fitted":
            raise ValueError(f"prior buffers are only used by the fitted prior, not {self.prior!r}")
        if set(buffers) != set(PRIOR_KEYS):
            raise ValueError(f"the fitted prior needs buffers {PRIOR_KEYS}, got {sorted(buffers)}")
        mean, var = (buffers[k].to(torch.float64) for k in PRIOR_KEYS)
        if mean.ndim != 3 or mean.shape != var.shape or mean.shape[1:] != (self.height, self.width):
            raise ValueError(f"prior buffers must have shape (C, {self.height}, {self.width})")
        if not bool(torch.all(var > 0)):
            raise ValueError("prior variances must be positive")
        self.prior_mean, self.prior_var = mean, var

    prior_names = ("fitted", "noise")
    data_priors = frozenset({"fitted"})

    def _with_prior(
        self, name: str, data: Tensor | None, generator: torch.Generator
    ) -> SPDEProcess:
        if name == "fitted":
            if data is None:
                raise ValueError("the fitted SPDE prior needs training data to simulate")
            return self.with_prior_kind("fitted").fit_prior(data)
        return self.with_prior_kind("noise")

    def with_prior_kind(self, kind: str) -> SPDEProcess:
        """The same process with prior ``kind`` and no fitted prior buffers."""
        return self._copy(self._base_buffers(), prior=kind)

    def _base_buffers(self) -> dict[str, Tensor]:
        if self.base_mean is None or self.base_var is None:
            return {}
        return {"base_mean": self.base_mean, "base_var": self.base_var}

    def fit_prior(self, x0: Tensor) -> SPDEProcess:
        """A copy whose prior is the per-(channel, DCT mode) Gaussian fitted to x_T simulated from
        the first ``prior_examples`` images of ``x0``; variances floored at the noise-only value."""
        if x0.ndim != 4 or x0.shape[-2:] != (self.height, self.width):
            raise ValueError(f"fit_prior needs images (B, C, {self.height}, {self.width})")
        gen = torch.Generator(device=x0.device).manual_seed(self.prior_seed)
        x = self.data_to_state(x0[: self.prior_examples])
        for t in range(1, self.T + 1):
            x = self.step(x, t, gen)
        coef = self._dct(x.to(torch.float64)).cpu()
        var = coef.var(0) if coef.shape[0] > 1 else torch.zeros_like(coef[0])
        self._warn_prior_error(coef, var)
        prior = {"prior_mean": coef.mean(0), "prior_var": torch.maximum(var, self.noise_prior_var)}
        return self._copy({**self._base_buffers(), **prior})

    def _warn_prior_error(self, coef: Tensor, var: Tensor) -> None:
        """Warn when the fitted variances are noisy: the median over the modes whose fitted
        variance exceeds the noise floor of se(var) / var, se^2 = (m4 - var^2) / n measured."""
        n = coef.shape[0]
        fitted = var > self.noise_prior_var
        if n > 1 and bool(fitted.any()):
            m4 = ((coef - coef.mean(0)) ** 4).mean(0)
            rel = ((m4 - var**2).clamp_min(0) / n).sqrt() / var
            err = float(rel[fitted].median())
        else:
            err = math.inf if bool(fitted.any()) or n < 2 else 0.0
        if err > PRIOR_SE_WARN:
            warnings.warn(
                f"the fitted SPDE prior draws on {n} example(s): its variances carry a measured "
                f"relative standard error of {err:.0%} (median over modes); give more training "
                f"examples (prior_examples={self.prior_examples}) or use --prior noise",
                UserWarning,
                stacklevel=3,
            )

    def sample_prior(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """x_T = DCT^{-1}(m + sqrt(v) z) per channel: fitted (m, v) or, for "noise", (0, noise var)."""
        dev = generator.device
        z = torch.randn(tuple(shape), generator=generator, device=dev)
        if self.prior == "noise":
            mean, var = torch.zeros(()), self.noise_prior_var
        elif self.prior_mean is None or self.prior_var is None:
            raise ValueError("the fitted SPDE prior has not been fitted (use create or fit_prior)")
        else:
            mean, var = self.prior_mean, self.prior_var
            if len(shape) != 4 or shape[1] != mean.shape[0]:
                raise ValueError(f"the fitted prior has {mean.shape[0]} channels, asked {shape}")
        mean, var = mean.to(device=dev, dtype=z.dtype), var.to(device=dev, dtype=z.dtype)
        return self._dct(mean + var.sqrt() * z, inverse=True)

    # -- configuration ----------------------------------------------------------------------
    def buffers(self) -> dict[str, Tensor]:
        bufs = self._base_buffers()
        if self.prior_mean is not None and self.prior_var is not None:
            bufs.update(prior_mean=self.prior_mean, prior_var=self.prior_var)
        return bufs

    def _params(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "image_size": self.image_size,
            "height": self.height,
            "width": self.width,
            "horizon": self.horizon,
            "shape": self.shape,
            "power": self.power,
            "alpha1": list(self.ends1),
            "alpha2": list(self.ends2),
            "lambda1": self.lambda1_min,
            "lambda1_k": self.lambda1_k,
            "lambda2": self.lambda2_min,
            "lambda2_k": self.lambda2_k,
            "corr_length": self.corr_length,
            "prior": self.prior,
            "prior_examples": self.prior_examples,
            "prior_seed": self.prior_seed,
            "scheme": self.scheme,
        }

    @classmethod
    def create(
        cls,
        *,
        steps: int | None,
        schedule: str | None,
        example: Tensor,
        instance: Instance = "anisotropic",
        **params: Any,
    ) -> SPDEProcess:
        """Paper C's ``instance`` for images like ``example`` (B, C, H, W), with overrides.

        ``schedule`` is None or ``"alpha1=a:b,alpha2=c:d"``; ``params`` are any of :attr:`options`.
        ``steps`` None picks max(DEFAULT_STEPS, the explicit stability limit 4 max(alpha1) horizon).
        The fitted prior (the default) simulates the chain on ``example`` here.
        """
        if example.ndim != 4:
            raise ValueError(
                f"the SPDE process needs image batches (B, C, H, W), got {example.ndim}-d"
            )
        check_options(cls, params)
        height, width = int(example.shape[-2]), int(example.shape[-1])
        horizon = params.get("horizon", DEFAULT_HORIZON)
        opts = instance_defaults(instance, max(height, width), horizon)
        if schedule is not None:
            if "=" not in schedule:
                raise ValueError(
                    f"the SPDE process has no named schedules ({schedule!r}); give endpoints, "
                    "e.g. 'alpha1=0.5:64,alpha2=0.01:2' (the instance sets the defaults)"
                )
            ends = parse_endpoints(schedule)
            bad = set(ends) - {"alpha1", "alpha2"}
            if bad:
                raise ValueError(f"SPDE schedule keys are alpha1 and alpha2, got {sorted(bad)}")
            if set(ends) & set(params):
                raise ValueError(
                    f"{sorted(set(ends) & set(params))} given twice (schedule, option)"
                )
            opts.update(ends)
        opts.update(params)
        if steps is None:
            a1 = max(abs(float(a)) for a in opts["alpha1"])
            steps = max(DEFAULT_STEPS, math.ceil(4 * a1 * opts.get("horizon", horizon)))
        proc = cls(steps, instance=instance, height=height, width=width, **opts)
        proc = proc.fit_baseline(example)
        return proc.fit_prior(example) if proc.prior == "fitted" else proc

    @classmethod
    def _from_params(cls, config: dict[str, Any], buffers: dict[str, Tensor] | None) -> SPDEProcess:
        keys = [k for k in cls.options if k not in ("alpha1", "alpha2")]
        return cls(
            config["T"],
            instance=config["instance"],
            height=config["height"],
            width=config["width"],
            alpha1=tuple(config["alpha1"]),
            alpha2=tuple(config["alpha2"]),
            buffers=buffers or None,
            **cls.config_params(config, keys),
        )

    @classmethod
    def from_config(
        cls, config: dict[str, Any], buffers: dict[str, Tensor] | None = None
    ) -> SPDEProcess:
        check_config_kind(cls, config)
        with warnings.catch_warnings():  # warned when the process was first created
            warnings.simplefilter("ignore", RuntimeWarning)
            return cls._from_params(config, check_buffers(config, buffers))
