"""Circular helpers: wrapping onto [-pi, pi), the truncated wrapped normal, von Mises draws."""

from __future__ import annotations

import math

import torch
from torch import Tensor

TWO_PI = 2.0 * math.pi


def wrap(theta: Tensor) -> Tensor:
    """((theta + pi) mod 2 pi) - pi, guaranteed to lie in [-pi, pi) in floating point."""
    y = torch.remainder(theta + math.pi, TWO_PI) - math.pi
    # float rounding can land exactly on +pi; fold it onto -pi
    return torch.where(y >= math.pi, y - TWO_PI, y)


def _wrapped_terms(x: Tensor, mean: Tensor, var: Tensor, n_terms: int):
    """d = wrap(x - mean) and e_k = N(d - 2 pi k) / N(d) for k = +-1..+-K (each <= 1 since |d| <= pi).

    log e_k = 2 pi k (d - pi k) / var <= -2 pi^2 |k| (|k| - 1) / var, so the k = 0 term dominates (no
    log-sum-exp needed) and terms whose bound is below -80 (e_k < 1e-35) are dropped exactly in float32.
    """
    d = wrap(x - mean)
    var_max = float(var.max())
    terms = []
    for k in range(1, n_terms + 1):
        if 2 * math.pi**2 * k * (k - 1) / var_max > 80.0:
            break
        for kk in (k, -k):
            # clamp: exp of very negative numbers yields denormals, ~50x slower on CPUs
            terms.append((kk, torch.exp((TWO_PI * kk * (d - math.pi * kk) / var).clamp_min(-80.0))))
    return d, terms


def wrapped_normal_log_prob(
    x: Tensor, mean: Tensor, var: Tensor | float, n_terms: int = 3
) -> Tensor:
    """Elementwise log sum_{|k|<=K} N(x; mean + 2 pi k, var), from the wrapped residual."""
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    d, terms = _wrapped_terms(x, mean, var, n_terms)
    total = 1.0 + sum(e for _, e in terms)
    return -(d * d) / (2 * var) - 0.5 * torch.log(TWO_PI * var) + torch.log(total)


def wrapped_normal_score(x: Tensor, mean: Tensor, var: Tensor | float, n_terms: int = 3) -> Tensor:
    """d/dx log WN_K(x; mean, var) = sum_k w_k (-(d - 2 pi k) / var), w_k = e_k / sum_j e_j."""
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    d, terms = _wrapped_terms(x, mean, var, n_terms)
    num = d.clone()
    den = torch.ones_like(d)
    for k, e in terms:
        num.add_(e * (d - TWO_PI * k))
        den.add_(e)
    return num.div_(den).div_(-var)


def von_mises_sample(
    loc: float,
    kappa: float,
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Von Mises draws by Best & Fisher's (1979) rejection sampler, from an explicit generator."""
    n = math.prod(shape)
    if kappa < 1e-6:
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return wrap((TWO_PI * u - math.pi + loc).to(dtype)).reshape(shape)
    tau = 1.0 + math.sqrt(1.0 + 4.0 * kappa * kappa)
    rho = (tau - math.sqrt(2.0 * tau)) / (2.0 * kappa)
    r = (1.0 + rho * rho) / (2.0 * rho)
    out = torch.empty(n, device=device, dtype=torch.float64)
    todo = torch.arange(n, device=device)
    while todo.numel():
        m = todo.numel()
        u = torch.rand((3, m), generator=generator, device=device, dtype=torch.float64)
        z = torch.cos(math.pi * u[0])
        f = (1.0 + r * z) / (r + z)
        c = kappa * (r - f)
        accept = (c * (2.0 - c) - u[1] > 0) | (torch.log(c / u[1]) + 1.0 - c >= 0)
        theta = torch.sign(u[2] - 0.5) * torch.acos(f.clamp(-1.0, 1.0))
        out[todo[accept]] = theta[accept]
        todo = todo[~accept]
    return wrap((out + loc).to(dtype)).reshape(shape)


def fit_von_mises_kappa(theta: Tensor) -> tuple[float, float]:
    """Maximum-likelihood (loc, kappa) of a von Mises fitted to all entries of ``theta``.

    kappa solves I1(k)/I0(k) = R (the mean resultant length), by Newton iterations.
    """
    th = theta.double().flatten()
    C, S = torch.cos(th).mean(), torch.sin(th).mean()
    R = float(torch.hypot(C, S))
    loc = float(torch.atan2(S, C))
    # Fisher's approximation as a start, then Newton on A(k) = I1/I0
    if R < 0.53:
        k = 2 * R + R**3 + 5 * R**5 / 6
    elif R < 0.85:
        k = -0.4 + 1.39 * R + 0.43 / (1 - R)
    else:
        k = 1 / (R**3 - 4 * R**2 + 3 * R)
    for _ in range(50):
        kt = torch.tensor(k, dtype=torch.float64)
        i0, i1 = torch.special.i0e(kt), torch.special.i1e(kt)
        A = float(i1 / i0)
        dA = 1 - A / k - A * A if k > 0 else 0.5
        step = (A - R) / dA
        k = max(k - step, 1e-8)
        if abs(step) < 1e-12:
            break
    return loc, k
