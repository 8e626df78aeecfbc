"""Matplotlib figures (Agg backend, no display needed): scatters, image rows, heatmaps, curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = {
    "local": "tab:blue",
    "global": "tab:orange",
    "ref": "tab:green",
    "sgm": "tab:red",
    "vp": "tab:red",
    "gou": "tab:blue",
    "iso": "tab:red",
    "anisotropic": "tab:blue",
    "heat": "tab:orange",
    "ve": "tab:red",
}


def colour(key: str) -> str:
    return COLOURS.get(key, "black")


def scatter_panels(panels: Sequence[tuple[str, np.ndarray]]) -> Any:
    """One 2-D scatter per (title, points (N, 2)); axes fit the first panel (the data), and each
    title counts the points that fall outside them."""
    ref = panels[0][1][:, :2]
    lo, hi = ref.min(0), ref.max(0)
    pad = 0.25 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (title, p) in zip(axes[0], panels, strict=True):
        outside = int((~((p[:, :2] >= lo) & (p[:, :2] <= hi)).all(1)).sum())
        ax.scatter(p[:, 0], p[:, 1], s=3, alpha=0.5, color="black", linewidths=0)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"{title}\n({outside} of {len(p)} outside the axes)", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def scatter_grid(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]]) -> Any:
    """Rows of 2-D scatters (forward snapshots): rows = (row title, [(panel title, points)])."""
    ncol = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.4 * ncol, 2.4 * len(rows)), squeeze=False)
    allp = np.concatenate([p[:, :2] for _, panels in rows for _, p in panels])
    lo, hi = np.percentile(allp, 0.5, axis=0), np.percentile(allp, 99.5, axis=0)
    pad = 0.1 * (hi - lo)
    for i, (row_title, panels) in enumerate(rows):
        for j, (title, p) in enumerate(panels):
            ax = axes[i][j]
            ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5, color="black", linewidths=0)
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(row_title, fontsize=9)
    fig.tight_layout()
    return fig


def heatmaps(panels: Sequence[tuple[str, np.ndarray]], vmax: float | None = None) -> Any:
    """Side-by-side matrices on one symmetric colour scale (covariances)."""
    vmax = vmax or max(float(np.abs(m).max()) for _, m in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    im = None
    for ax, (title, m) in zip(axes[0], panels, strict=True):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return fig


def image_rows(
    rows: Sequence[tuple[str, np.ndarray]],
    col_titles: Sequence[str] | None = None,
    size: float = 0.9,
) -> Any:
    """Rows of grayscale images in [-1, 1]: rows = (row title, images (K, 1 or C, H, W))."""
    ncol = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(
        len(rows), ncol, figsize=(size * ncol + 1.2, size * len(rows) + 0.3), squeeze=False
    )
    for i, (title, imgs) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(imgs):
                img = np.asarray(imgs[j])
                img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
                ax.imshow(np.clip(img, -1, 1), cmap="gray", vmin=-1, vmax=1)
            if j == 0:
                ax.set_ylabel(title, fontsize=8, rotation=0, ha="right", va="center")
            if i == 0 and col_titles is not None and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def curve_panels(
    panels: Sequence[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]],
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    hline: float | None = None,
) -> Any:
    """One axis per (title, {series key: (x, y)}), colours by series key."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for key, (x, y) in series.items():
            y = np.asarray(y, np.float64)
            if logy:
                y = np.where(y > 0, y, np.nan)
            ax.plot(x, y, label=key, color=colour(key.split(" ")[0]), lw=1.3)
        if hline is not None:
            ax.axhline(hline, color="gray", lw=0.8, ls="--")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
