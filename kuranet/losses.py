"""Synchrony losses of paper D: circular variance (global) and the cluster loss of eqs. 5-6.

All functions take phases ``theta`` of shape (..., n) and reduce over the last (oscillator) axis,
so a trajectory (T, n) gives one value per time step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def circular_variance(theta: Tensor) -> Tensor:
    """V = 1 - R with R e^{i psi} = (1/n) sum_j e^{i theta_j} (D eq. 2); shape (...)."""
    return 1.0 - torch.hypot(torch.cos(theta).mean(-1), torch.sin(theta).mean(-1))


def group_order(theta: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(R_l, <theta>_l) of every group present in ``labels`` (n,), in sorted label order; (..., k) each.

    R_l e^{i <theta>_l} = mean over oscillators j with label l of e^{i theta_j}.
    """
    present, index = torch.unique(labels, sorted=True, return_inverse=True)
    onehot = torch.nn.functional.one_hot(index, present.numel()).to(theta.dtype)  # (n, k)
    count = onehot.sum(0)
    c = (torch.cos(theta) @ onehot) / count
    s = (torch.sin(theta) @ onehot) / count
    return torch.hypot(c, s), torch.atan2(s, c)


def splay_max(k: int) -> float:
    """Largest value of the splay term S for k groups (all means equal): (k/2) sum_{g<=k/2} 1/g^2."""
    return 0.5 * k * sum(1.0 / g**2 for g in range(1, k // 2 + 1))


def splay_term(angles: Tensor) -> Tensor:
    """S = sum_{g=1}^{floor(k/2)} |sum_l e^{i g a_l}|^2 / (2 g^2 k) over the k angles (D eq. 6); shape (...).

    S >= 0, and S = 0 exactly when the angles are splay (equally spaced): vanishing power sums
    p_1..p_{k/2} of points on the unit circle force every elementary symmetric polynomial but
    e_k to vanish, so the points are the roots of z^k = const.
    """
    k = angles.shape[-1]
    total = torch.zeros(angles.shape[:-1], dtype=angles.dtype, device=angles.device)
    for g in range(1, k // 2 + 1):
        c = torch.cos(g * angles).sum(-1)
        s = torch.sin(g * angles).sum(-1)
        total = total + (c * c + s * s) / (2 * g * g * k)
    return total


def cluster_loss(theta: Tensor, labels: Tensor, normalise: bool = True) -> Tensor:
    """L = 1/2 (mean_l V_l + S) (D eqs. 5-6) over the k groups present in ``labels``; shape (...).

    With ``normalise`` L is divided by the bound (1 + S_max(k)) / 2 (as the authors' code), so
    0 <= L <= 1 as in the paper's table II; for k = 2 the two agree.
    """
    R, mean = group_order(theta, labels)
    k = R.shape[-1]
    loss = 0.5 * ((1.0 - R).mean(-1) + splay_term(mean))
    return loss / (0.5 * (1.0 + splay_max(k))) if normalise else loss


def splay_angles(k: int, offset: float = 0.0) -> Tensor:
    """k equally spaced angles offset + 2 pi l / k (float64)."""
    return offset + 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
