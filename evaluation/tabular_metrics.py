"""Distances between generated (N, d) and held-out (M, d) tabular samples (paper B, tables 1-3).

Conventions: standard deviations and covariances use ddof = 1; a zero-variance column has correlation
0 with every other column and 1 with itself; W2 is the exact 2-Wasserstein distance between the two
empirical 1-D laws (quantile functions merged at every breakpoint i/N, j/M, so N != M is exact too);
histogram KL is KL(ref || gen) on shared bins (below), with ``eps`` added to every bin probability.

Binning for KL: per column, if the two samples together take at most ``bins`` distinct values (e.g.
genotypes {0, 1, 2}) each value is its own bin; otherwise ``bins`` equal-width bins span the pooled
[min, max]. For d = 2 the joint KL uses the product of the two columns' bins. Histogram KL is biased
upwards for finite samples (about occupied bins / 2N, plus eps-dominated terms for reference-only bins:
two samples of N = 2000 from one 2-D mixture give kl_joint2d ~ 1.2 with 30 x 30 bins, kl_marginal ~ 0.01),
so read it against a same-law baseline such as train vs held-out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_matrix(x: Any) -> np.ndarray:
    """Numpy array or torch tensor -> float64 (N, d) array; a 1-D input becomes (N, 1)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"expected (N, d) samples, got shape {a.shape}")
    return a


def _check_pair(gen: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    g, r = as_matrix(gen), as_matrix(ref)
    if g.shape[1] != r.shape[1]:
        raise ValueError(f"dimension mismatch: {g.shape[1]} vs {r.shape[1]}")
    if min(len(g), len(r)) < 2:
        raise ValueError("need at least 2 samples on each side")
    return g, r


def mean_mae(gen: Any, ref: Any) -> float:
    """Mean over dimensions of |mean_gen - mean_ref|; gen (N, d), ref (M, d)."""
    g, r = _check_pair(gen, ref)
    return float(np.abs(g.mean(0) - r.mean(0)).mean())


def std_mae(gen: Any, ref: Any) -> float:
    """Mean over dimensions of |std_gen - std_ref| (ddof = 1); gen (N, d), ref (M, d)."""
    g, r = _check_pair(gen, ref)
    return float(np.abs(g.std(0, ddof=1) - r.std(0, ddof=1)).mean())


def covariance(x: Any) -> np.ndarray:
    """Sample covariance (ddof = 1) of (N, d) samples -> (d, d)."""
    a = as_matrix(x)
    c = a - a.mean(0)
    return c.T @ c / (len(a) - 1)


def correlation(x: Any) -> np.ndarray:
    """Correlation matrix (d, d) of (N, d) samples; zero-variance columns get 0 off-diagonal, 1 on it."""
    cov = covariance(x)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    ok = sd > 1e-12 * max(1.0, float(sd.max(initial=0.0)))
    inv = np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)
    corr = np.clip(cov * inv[:, None] * inv[None, :], -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def cov_frobenius(gen: Any, ref: Any) -> float:
    """Frobenius norm of cov(gen) - cov(ref); gen (N, d), ref (M, d)."""
    g, r = _check_pair(gen, ref)
    return float(np.linalg.norm(covariance(g) - covariance(r)))


def corr_frobenius(gen: Any, ref: Any) -> float:
    """Frobenius norm of corr(gen) - corr(ref), zero-variance columns guarded; (N, d), (M, d)."""
    g, r = _check_pair(gen, ref)
    return float(np.linalg.norm(correlation(g) - correlation(r)))


def wasserstein2_1d(a: Any, b: Any) -> float:
    """Exact W2 between the empirical laws of 1-D samples a (N,) and b (M,), any N, M."""
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())
    n, m = len(x), len(y)
    if n == m:
        return float(np.sqrt(np.mean((x - y) ** 2)))
    u = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
    width, mid = np.diff(u), 0.5 * (u[1:] + u[:-1])
    ix = np.minimum((mid * n).astype(np.int64), n - 1)
    iy = np.minimum((mid * m).astype(np.int64), m - 1)
    return float(np.sqrt(np.sum(width * (x[ix] - y[iy]) ** 2)))


def wasserstein2_per_dim(gen: Any, ref: Any, dims: int | None = None) -> np.ndarray:
    """Per-dimension exact 1-D W2 for the first ``dims`` columns (all if None) -> (dims,)."""
    g, r = _check_pair(gen, ref)
    k = g.shape[1] if dims is None else min(dims, g.shape[1])
    return np.array([wasserstein2_1d(g[:, j], r[:, j]) for j in range(k)])


def shared_bin_edges(a: np.ndarray, b: np.ndarray, bins: int = 30) -> np.ndarray:
    """Bin edges shared by 1-D samples a, b: one bin per value if <= ``bins`` distinct, else equal-width."""
    values = np.unique(np.concatenate([a, b]))
    if len(values) == 1:
        return np.array([values[0] - 0.5, values[0] + 0.5])
    if len(values) <= bins:
        mids = 0.5 * (values[1:] + values[:-1])
        return np.concatenate([[values[0] - 0.5], mids, [values[-1] + 0.5]])
    return np.linspace(values[0], values[-1], bins + 1)


def _kl_counts(p_counts: np.ndarray, q_counts: np.ndarray, eps: float) -> float:
    p = p_counts.ravel() / p_counts.sum() + eps
    q = q_counts.ravel() / q_counts.sum() + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def histogram_kl_marginals(gen: Any, ref: Any, bins: int = 30, eps: float = 1e-10) -> np.ndarray:
    """Per-dimension histogram KL(ref || gen) on shared bins -> (d,)."""
    g, r = _check_pair(gen, ref)
    out = np.empty(g.shape[1])
    for j in range(g.shape[1]):
        edges = shared_bin_edges(g[:, j], r[:, j], bins)
        pc, _ = np.histogram(r[:, j], edges)
        qc, _ = np.histogram(g[:, j], edges)
        out[j] = _kl_counts(pc, qc, eps)
    return out


def histogram_kl_joint2d(gen: Any, ref: Any, bins: int = 30, eps: float = 1e-10) -> float:
    """Joint 2-D histogram KL(ref || gen) for (N, 2) samples on the product of shared marginal bins."""
    g, r = _check_pair(gen, ref)
    if g.shape[1] != 2:
        raise ValueError(f"joint 2-D KL needs d = 2, got d = {g.shape[1]}")
    edges = [shared_bin_edges(g[:, j], r[:, j], bins) for j in range(2)]
    pc, _, _ = np.histogram2d(r[:, 0], r[:, 1], bins=edges)
    qc, _, _ = np.histogram2d(g[:, 0], g[:, 1], bins=edges)
    return _kl_counts(pc, qc, eps)


def tabular_report(
    gen: Any, ref: Any, w2_dims: int = 5, bins: int = 30, eps: float = 1e-10
) -> dict[str, float]:
    """All tabular metrics of generated (N, d) vs held-out (M, d) samples, keyed by name."""
    g, r = _check_pair(gen, ref)
    w2 = wasserstein2_per_dim(g, r, w2_dims)
    report = {
        "mean_mae": mean_mae(g, r),
        "std_mae": std_mae(g, r),
        "cov_frobenius": cov_frobenius(g, r),
        "corr_frobenius": corr_frobenius(g, r),
        "w2_mean": float(w2.mean()),
        **{f"w2_dim{j}": float(v) for j, v in enumerate(w2)},
        "kl_marginal": float(histogram_kl_marginals(g, r, bins, eps).mean()),
    }
    if g.shape[1] == 2:
        report["kl_joint2d"] = histogram_kl_joint2d(g, r, bins, eps)
    return report
