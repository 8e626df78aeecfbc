"""Pure measurement functions of the experiments (forward-chain statistics and small metrics).

Forward statistics use R independent replicate chains per source image: arrays laid out as
(R, N, ...) hold replicate r of source n at [r, n].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


# -- tabular -----------------------------------------------------------------------------------
def coordinate_errors(gen: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate |mean_gen - mean_ref| and |std_gen - std_ref| (ddof = 1), each (d,)."""
    g, r = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    return np.abs(g.mean(0) - r.mean(0)), np.abs(g.std(0, ddof=1) - r.std(0, ddof=1))


def outside_fraction(gen: np.ndarray, ref: np.ndarray, k: float = 5.0) -> float:
    """Share of generated rows with a coordinate more than ``k`` ranges outside ref's [min, max]."""
    g, r = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    lo, hi = r.min(0), r.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    bad = ((g < lo - k * span) | (g > hi + k * span)).any(1)
    return float(bad.mean())


# -- forward chains: dependence on x_0 ---------------------------------------------------------
def empirical_snr(z: Tensor, replicates: int) -> float:
    """Var over sources of E[z_t | x_0] / E[Var(z_t | x_0)], from R replicates per source.

    ``z`` is (R * N, *F) with replicate-major rows (row r * N + n); every feature is averaged.
    The between-source variance of the replicate means is corrected by the within-source
    variance / R, so the estimate is unbiased for signal and noise alike; negative signal -> 0.
    """
    R = replicates
    if R < 2 or z.shape[0] % R:
        raise ValueError(f"need R >= 2 replicates dividing the batch, got R={R}, {z.shape[0]} rows")
    y = z.double().reshape(R, z.shape[0] // R, -1)
    noise = float(y.var(0, unbiased=True).mean())
    means = y.mean(0)
    signal = float(means.var(0, unbiased=True).mean()) - noise / R
    if noise <= 0:
        return math.inf
    return max(signal, 0.0) / noise


def phase_features(theta: Tensor) -> Tensor:
    """(cos theta, sin theta) stacked on a new trailing axis: the phase as a point on the circle."""
    return torch.stack((torch.cos(theta), torch.sin(theta)), -1)


def first_below(values: list[float], threshold: float) -> int | None:
    """1-based index of the first entry <= threshold, or None if no entry is."""
    for i, v in enumerate(values):
        if v <= threshold:
            return i + 1
    return None


# -- distributions of pooled values --------------------------------------------------------------
def histogram_kl(p_counts: np.ndarray, q_probs: np.ndarray, eps: float = 1e-10) -> float:
    """KL(p || q) of a histogram ``p_counts`` against bin probabilities ``q_probs`` (same bins)."""
    p = np.asarray(p_counts, np.float64)
    p = p / p.sum() + eps
    q = np.asarray(q_probs, np.float64) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def sample_histogram_kl(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    """KL(hist a || hist b) of two 1-D samples on shared ``edges``."""
    pa, _ = np.histogram(np.ravel(a), edges)
    pb, _ = np.histogram(np.ravel(b), edges)
    return histogram_kl(pa, pb / max(pb.sum(), 1))


def log_i0(kappa: float) -> float:
    """log I_0(kappa), stable for large kappa."""
    return float(torch.log(torch.special.i0e(torch.tensor(kappa, dtype=torch.float64)))) + kappa


def mean_resultant(kappa: float) -> float:
    """A(kappa) = I_1(kappa) / I_0(kappa)."""
    k = torch.tensor(kappa, dtype=torch.float64)
    return float(torch.special.i1e(k) / torch.special.i0e(k))


def von_mises_kl(loc1: float, kappa1: float, loc2: float, kappa2: float) -> float:
    """KL(vM(loc1, kappa1) || vM(loc2, kappa2)) in closed form."""
    a = mean_resultant(kappa1)
    return a * (kappa1 - kappa2 * math.cos(loc1 - loc2)) + log_i0(kappa2) - log_i0(kappa1)


def von_mises_bin_probs(edges: np.ndarray, loc: float, kappa: float, fine: int = 64) -> np.ndarray:
    """Probability of each bin [edges_i, edges_i+1) under vM(loc, kappa) (midpoint rule, ``fine``/bin)."""
    e = np.asarray(edges, np.float64)
    probs = np.empty(len(e) - 1)
    for i in range(len(e) - 1):
        x = np.linspace(e[i], e[i + 1], fine + 1)
        mid = 0.5 * (x[1:] + x[:-1])
        logp = kappa * np.cos(mid - loc) - math.log(2 * math.pi) - log_i0(kappa)
        probs[i] = float(np.exp(logp).sum() * (e[i + 1] - e[i]) / fine)
    return probs


def von_mises_density(theta: np.ndarray, loc: float, kappa: float) -> np.ndarray:
    return np.exp(kappa * np.cos(theta - loc) - math.log(2 * math.pi) - log_i0(kappa))


def normal_bin_probs(edges: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Probability of each bin under N(mean, std^2); the outer bins absorb the tails."""
    from scipy.stats import norm

    c = norm.cdf((np.asarray(edges, np.float64) - mean) / std)
    c[0], c[-1] = 0.0, 1.0
    return np.diff(c)


# -- edges (paper C) -----------------------------------------------------------------------------
def gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central-difference gradient (d/dH, d/dW) of (..., C, H, W), replicated ghost pixels
    (the Neumann convention of the SPDE's stencil); each (..., C, H, W)."""
    xp = torch.nn.functional.pad(x.reshape(-1, *x.shape[-3:]), (1, 1, 1, 1), mode="replicate")
    gy = 0.5 * (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1])
    gx = 0.5 * (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2])
    return gy.reshape(x.shape), gx.reshape(x.shape)


def gradient_sq(x: Tensor) -> Tensor:
    """Squared gradient magnitude summed over channels: (..., C, H, W) -> (..., H, W)."""
    gy, gx = gradient(x)
    return (gy**2 + gx**2).sum(-3)


def edge_mask(x0: Tensor, fraction: float = 0.1) -> Tensor:
    """Boolean (N, H, W): each image's ``fraction`` of pixels with the largest gradient."""
    g = gradient_sq(x0).flatten(1)
    k = max(1, int(round(fraction * g.shape[1])))
    thresh = g.topk(k, dim=1).values[:, -1:]
    return (g >= thresh).reshape(x0.shape[0], *x0.shape[-2:])


def edge_statistics(x: Tensor, x0: Tensor, mask: Tensor, replicates: int) -> dict[str, float]:
    """How much of x_0's gradient E[x_t | x_0] keeps at strong edges and elsewhere.

    ``x`` is (R * N, C, H, W) replicate-major, ``x0`` (N, C, H, W), ``mask`` (N, H, W) the edge
    pixels. kept(S) = sum_S grad x_t . grad x_0 / sum_S |grad x_0|^2 over pixel set S and all
    replicates: linear in x_t, so unbiased for E[x_t | x_0] and far less noisy than |grad x_t|^2.
    selectivity = kept(edges) / kept(elsewhere); edge_snr = kept(edges)^2 mean_edges |grad x_0|^2
    over the mean gradient energy of x_t - E[x_t | x_0] (replicate variance, all pixels).
    """
    R = replicates
    y = x.double().reshape(R, x.shape[0] // R, *x.shape[1:])
    gy0, gx0 = gradient(x0.double())
    gy, gx = gradient(y)
    dot = (gy * gy0 + gx * gx0).sum(-3).mean(0)  # (N, H, W), mean over replicates
    e0 = (gy0**2 + gx0**2).sum(-3)
    m = mask.to(dot.device)
    edge = float(dot[m].sum() / e0[m].sum())
    flat = float(dot[~m].sum() / e0[~m].sum().clamp_min(1e-12))
    noise = float(gradient_sq(y - y.mean(0)).sum(0).mean() / (R - 1))
    snr = edge**2 * float(e0[m].mean()) / noise if noise > 0 else math.inf
    sel = edge / flat if flat != 0 else math.inf
    return {"edge_kept": edge, "flat_kept": flat, "selectivity": sel, "edge_snr": snr}
