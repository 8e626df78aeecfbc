"""Writing samples as pictures: image grids, reverse-chain strips and 2-D scatter plots (PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_uint8(x: Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) or (H, W, 3) uint8."""
    a = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def grid(images: Tensor, ncol: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile (N, C, H, W) images in [-1, 1] into one picture (white padding)."""
    n, c, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    canvas = np.full(
        (nrow * (h + pad) + pad, ncol * (w + pad) + pad, *(() if c == 1 else (3,))), 255, np.uint8
    )
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = to_uint8(images[i])
    img = Image.fromarray(canvas)
    return (
        img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        if scale > 1
        else img
    )


def strip(snapshots: list[Tensor], rows: int = 4, scale: int = 2) -> Image.Image:
    """Reverse-chain strip: each row one sample, each column one snapshot (coarse to fine)."""
    k = len(snapshots)
    rows = min(rows, snapshots[0].shape[0])
    tiles = torch.stack([snapshots[j][i] for i in range(rows) for j in range(k)])
    return grid(tiles, ncol=k, scale=scale)


def scatter(points: np.ndarray, size: int = 512, ref: np.ndarray | None = None) -> Image.Image:
    """First two coordinates as a density picture (black: samples, red: reference, if given)."""
    sets = [points] + ([ref] if ref is not None else [])
    allp = np.concatenate([p[:, :2] for p in sets])
    lo, hi = np.percentile(allp, 0.5, axis=0), np.percentile(allp, 99.5, axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    canvas = np.full((size, size, 3), 255, np.uint8)
    for p, colour in zip(sets, ((0, 0, 0), (220, 30, 30)), strict=False):
        ij = ((p[:, :2] - lo) / span * (size - 1)).round().astype(int)
        ok = ((ij >= 0) & (ij < size)).all(1)
        canvas[size - 1 - ij[ok, 1], ij[ok, 0]] = colour
    return Image.fromarray(canvas)


def save_png(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    img.save(path)
    return path
