"""``save_samples()``: the one writer of a samples folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from orient.trainer import images

from .run import SampleResult


def save_samples(result: SampleResult, out_dir: str | Path, meta: dict[str, Any]) -> list[Path]:
    """Write ``samples.npy`` (data space), a picture (``grid.png`` of the first 64 images, or
    ``scatter.png`` of vectors), ``trajectory.png`` when the result has snapshots, and
    ``sample.json`` (``meta``: checkpoint, n, method, prior, seed, batch size, ...). Returns the
    paths written, the picture's second."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = result.samples
    np.save(out / "samples.npy", x.numpy())
    written = [out / "samples.npy"]
    if x.ndim == 4:
        scale = 4 if x.shape[-1] <= 48 else 2
        written.append(images.save_png(images.grid(x[:64], scale=scale), out / "grid.png"))
        if result.trajectory:
            strip = images.strip(result.trajectory)
            written.append(images.save_png(strip, out / "trajectory.png"))
    elif x.ndim == 2 and x.shape[1] >= 2:
        written.append(images.save_png(images.scatter(x.numpy()), out / "scatter.png"))
    (out / "sample.json").write_text(json.dumps(meta, indent=2))
    written.append(out / "sample.json")
    return written
