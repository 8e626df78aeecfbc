"""The papers' own numbers, as printed beside ours (the papers' tables).

``None`` means the paper reports no number for that cell (printed as "—"). Every entry names its
source so a table can cite it.
"""

from __future__ import annotations

# Paper B, table 1 (two-Gaussian mixture, section 7.1): (isotropic DDPM, GOU).
GOU_MOG_SOURCE = "paper B, table 1"
GOU_MOG: dict[str, tuple[float | None, float | None]] = {
    "mean_err_x1": (0.52, 0.003),
    "mean_err_x2": (0.12, 0.002),
    "std_err_x1": (3.07, 0.003),
    "std_err_x2": (0.13, 0.002),
    "cov_frobenius": (29.35, 0.034),
    "corr_frobenius": (0.19, 0.00),
    "w2_x1": (3.21, 0.02),
    "w2_x2": (0.15, 0.02),
    "kl_hist": (17.13, 0.83),
}

# Paper B, table 2 (simulated SNPs, section 7.2): (isotropic DDPM, GOU ("structured drift")).
GOU_SNP_SOURCE = "paper B, table 2"
GOU_SNP: dict[str, tuple[float | None, float | None]] = {
    "mean_err": (0.43, 0.006),
    "std_err": (2.68, 0.02),
    "cov_frobenius": (644.87, 8.74),
    "corr_frobenius": (66.61, 16.67),
    "w2_first5": (2.47, 0.14),
    "kl_hist": (7.73, 2.40),
}

# Paper A, FID (lower is better) by diffusion steps. SOCOFing (table 1) is 96x96 real fingerprints;
# Brodatz (tables 2 and 6) is 32x32 textures. The reference-only ablation exists for Brodatz only.
KURAMOTO_FID_SOURCE = {
    "socofing": "paper A, table 1 (SOCOFing 96x96)",
    "brodatz": "paper A, tables 2 and 6 (Brodatz 32x32)",
}
KURAMOTO_FID: dict[str, dict[str, dict[int, float | None]]] = {
    "socofing": {
        "local": {100: 67.49, 300: 43.57, 1000: 18.75},
        "global": {100: 74.41, 300: 47.93, 1000: 20.64},
        "ref": {100: None, 300: None, 1000: None},
        "sgm": {100: 104.92, 300: 62.66, 1000: 23.84},
    },
    "brodatz": {
        "local": {100: 18.47, 300: 15.93, 1000: 14.19},
        "global": {100: 20.26, 300: 18.51, 1000: 15.42},
        "ref": {100: 33.76, 300: 20.54, 1000: 19.01},
        "sgm": {100: 38.33, 300: 22.40, 1000: 20.37},
    },
}
# Which of the paper's data sets stands in for each of ours.
PAPER_IMAGE_DATA = {"synthetic-fingerprints": "socofing", "textures": "brodatz"}

# Paper C, table 1, CIFAR-10 32x32 (FID, KID). "ve" is Song et al.'s VE-SDE; "heat" is C's
# "Ours (isotropic)" (stochastic heat equation); both are C's reported values.
SPDE_SOURCE = "paper C, table 1 (CIFAR-10 32x32)"
SPDE_CIFAR10: dict[str, dict[str, float | None]] = {
    "anisotropic": {"fid": 2.0, "kid": 6.1e-4},
    "heat": {"fid": 19.6, "kid": 1.6e-2},
    "ve": {"fid": 7.1, "kid": 6.6e-4},
}


def kuramoto_fid(dataset: str, model: str, steps: int) -> float | None:
    """Paper A's FID for our data set's stand-in, a model key (local, global, ref, sgm) and T."""
    paper = PAPER_IMAGE_DATA.get(dataset)
    if paper is None:
        return None
    return KURAMOTO_FID[paper].get(model, {}).get(steps)
