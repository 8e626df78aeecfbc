"""Procedural, seeded, SFinGe-style synthetic fingerprints (the project's default data set).

Each image is built in four steps (a procedural stand-in for SOCOFing, which cannot be downloaded here):

1. Orientation field from singular points (zero-pole model, y axis pointing down)::

       theta(z) = theta_inf + 1/2 sum_cores arg(z - c) - 1/2 sum_deltas arg(z - d)   (mod pi)

   with theta_inf = 0 before the rotation. The class sets the placement: a loop has one core and one delta below it, on the left for a
   right loop and on the right for a left loop; a whorl has two cores near the centre and two
   deltas low on either side; a tented arch has a core right above a delta. An arch has no
   singular point: its ridges follow ``y = y0 - h(y0) exp(-x^2 / 2 s^2)`` (bumps that flatten
   towards the bottom). Positions are jittered and the whole pattern is rotated by a random angle.
2. Ridges: sparse random impulses, then ``N_ITERATIONS`` rounds of orientation-steered Gabor
   filtering. The Gabor bank (``N_BINS`` ridge directions, sigma = ``SIGMA_PER_PERIOD`` x period)
   is applied in the Fourier domain (circular, the border is masked away anyway) and each pixel
   takes the linear blend of the two bank outputs nearest its orientation. Between rounds the
   image is divided by its RMS and squashed with tanh, which grows continuous ridges of uniform
   contrast out of the impulses. Where the period exceeds ~4.5 px (sizes above 48) the ridges
   grow on a coarser grid with a ~4.5 px period (54 x 54 for 64-128 px) and are upsampled
   bicubically before the final tanh: 3x faster at 96x96, and the same pattern at every size.
3. Contrast: a final tanh, ridges dark (-1) and valleys light (+1).
4. An elliptical, soft-edged mask on a light background (+1).

The ridge period is ``max(size / 12 * j, 3.5)`` pixels with ``j ~ U(0.92, 1.08)`` per image:
about 7.4-8.6 px at 96x96 and always 3.5 px at 32x32.

Image ``i`` of a call is a pure function of ``(seed, start + i, size, classes)``: it draws from
its own ``torch.Generator`` seeded with a hash of ``(seed, start + i)``, so any slice can be
regenerated without the rest, whatever ``n`` and the internal batching. Batches have a fixed
shape and the ridges grow in float64, so slices are bit-identical to a full run, also across
torch thread counts (float32 FFTs differed by ~1e-5 between 1 and 2 threads). Batches are rendered
side by side, one thread per core.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .machine import available_cores

__all__ = [
    "CLASSES",
    "DEFAULT_CLASSES",
    "FingerprintBatch",
    "generate_fingerprints",
    "generate_fingerprints_with_labels",
    "check_arguments",
    "ridge_period",
]

DEFAULT_CLASSES: tuple[str, ...] = ("loop", "whorl", "arch", "tented-arch")
CLASSES: tuple[str, ...] = ("loop", "left-loop", "right-loop", "whorl", "arch", "tented-arch")
N_ITERATIONS = 12
N_BINS = 16
SIGMA_PER_PERIOD = 0.45
MIN_PERIOD = 3.5
PERIODS_PER_SIZE = 12.0
PERIOD_JITTER = 0.08
MAX_ROTATION = math.radians(20.0)
_CHUNK = 16  # images per batch; every batch is padded to exactly this many
_DTYPE = torch.float64  # ridge growth precision (float32 differs by ~1e-5 across thread counts)
_FEATURE_GAIN = 2.0  # tanh gain between iterations (on RMS-normalised images)
_FINAL_GAIN = 1.5  # final tanh contrast
_WORK_PERIOD = 4.5  # ridges grow on a grid where the nominal period is about this (>= 3.5)


@dataclass(frozen=True)
class FingerprintBatch:
    """Images with their ground truth.

    images: (n, 1, size, size) float32 in [-1, 1], ridges dark, background +1.
    labels: (n,) str, one of "left-loop", "right-loop", "whorl", "arch", "tented-arch".
    cores, deltas: per image, (k, 2) float arrays of (x, y) pixel positions (x right, y down).
    periods: (n,) ridge period in pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    cores: list[np.ndarray]
    deltas: list[np.ndarray]
    periods: np.ndarray


@dataclass(frozen=True)
class _Params:
    """Random geometry of one image, in normalised coordinates (pixel centre / (size / 2))."""

    label: str
    cores: np.ndarray  # (k, 2) canonical (unrotated) positions
    deltas: np.ndarray
    rotation: float
    arch: tuple[float, float, float]  # (h, s, y0) of the arch field
    period: float
    ellipse: tuple[float, float, float, float]  # (cx, cy, ax, ay)


def ridge_period(size: int) -> float:
    """Nominal ridge period in pixels for images of side ``size`` (before per-image jitter)."""
    return max(size / PERIODS_PER_SIZE, MIN_PERIOD)


def _image_seed(seed: int, index: int) -> int:
    """63-bit seed of image ``index`` of data set ``seed``."""
    digest = hashlib.blake2b(f"orient-fingerprint:{seed}:{index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    """One uniform draw in [lo, hi)."""
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _singular_points(label: str, g: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Jittered canonical (cores, deltas) for a class, each (k, 2) in normalised coordinates."""
    if label in ("left-loop", "right-loop"):
        side = -1.0 if label == "right-loop" else 1.0  # a right loop has its delta on the left
        core = (_u(g, -0.15, 0.15), _u(g, -0.35, -0.05))
        delta = (core[0] + side * _u(g, 0.35, 0.6), core[1] + _u(g, 0.5, 0.75))
        return np.array([core]), np.array([delta])
    if label == "whorl":
        mx, my = _u(g, -0.1, 0.1), _u(g, -0.2, 0.05)
        half = _u(g, 0.04, 0.14)
        tilt = _u(g, -0.6, 0.6)
        dx, dy = half * math.sin(tilt), half * math.cos(tilt)
        cores = [(mx - dx, my - dy), (mx + dx, my + dy)]
        deltas = [
            (mx - _u(g, 0.5, 0.7), my + _u(g, 0.45, 0.65)),
            (mx + _u(g, 0.5, 0.7), my + _u(g, 0.45, 0.65)),
        ]
        return np.array(cores), np.array(deltas)
    if label == "tented-arch":
        core = (_u(g, -0.1, 0.1), _u(g, -0.2, 0.05))
        delta = (core[0] + _u(g, -0.04, 0.04), core[1] + _u(g, 0.25, 0.4))
        return np.array([core]), np.array([delta])
    return np.zeros((0, 2)), np.zeros((0, 2))


def _draw_params(seed: int, index: int, size: int, classes: tuple[str, ...]) -> _Params:
    """All random geometry of image ``index`` (its impulses come from ``_impulses``)."""
    g = torch.Generator().manual_seed(_image_seed(seed, index))
    label = classes[int(torch.randint(len(classes), (), generator=g))]
    if label == "loop":
        label = "left-loop" if _u(g, 0.0, 1.0) < 0.5 else "right-loop"
    cores, deltas = _singular_points(label, g)
    rotation = _u(g, -MAX_ROTATION, MAX_ROTATION)
    arch = (_u(g, 0.6, 1.1), _u(g, 0.35, 0.5), _u(g, 0.0, 0.4))
    period = max(size / PERIODS_PER_SIZE * _u(g, 1 - PERIOD_JITTER, 1 + PERIOD_JITTER), MIN_PERIOD)
    ellipse = (_u(g, -0.04, 0.04), _u(g, -0.03, 0.03), _u(g, 0.68, 0.78), _u(g, 0.88, 0.96))
    return _Params(label, cores, deltas, rotation, arch, period, ellipse)


def _impulses(seed: int, index: int, size: int, period: float) -> torch.Tensor:
    """(size, size) sparse Gaussian impulses, about one per 2 period^2 pixels."""
    g = torch.Generator().manual_seed(_image_seed(seed, index) ^ 0x5EED)
    keep = torch.rand((size, size), generator=g) < 1.0 / (2.0 * period**2)
    return torch.randn((size, size), generator=g) * keep


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) normalised pixel-centre coordinates, each (size, size), in (-1, 1), y down."""
    t = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / (size / 2)
    return t[None, :].expand(size, size), t[:, None].expand(size, size)


def _rotate(x: torch.Tensor, y: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates rotated by ``angle`` (x right, y down)."""
    c, s = math.cos(angle), math.sin(angle)
    return c * x - s * y, s * x + c * y


def _orientation(p: _Params, size: int) -> torch.Tensor:
    """(size, size) ridge orientation in [0, pi), float64, angle of the ridge direction."""
    x, y = _rotate(*_grid(size), -p.rotation)  # canonical coordinates of each pixel
    if p.label == "arch":
        h, s, y0 = p.arch
        envelope = h * torch.sigmoid((y0 - y) / 0.35)
        theta = torch.atan(envelope * x / s**2 * torch.exp(-(x**2) / (2 * s**2)))
    else:
        theta = torch.zeros_like(x)
        for cx, cy in p.cores:
            theta = theta + 0.5 * torch.atan2(y - cy, x - cx)
        for dx, dy in p.deltas:
            theta = theta - 0.5 * torch.atan2(y - dy, x - dx)
    return torch.remainder(theta + p.rotation, math.pi)


def _mask(p: _Params, size: int) -> torch.Tensor:
    """(size, size) soft elliptical mask in [0, 1], edge about half a ridge period wide."""
    x, y = _grid(size)
    cx, cy, ax, ay = p.ellipse
    rho = torch.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    inside_px = (1.0 - rho) * min(ax, ay) * size / 2
    return torch.clamp(0.5 + inside_px / (0.5 * p.period), 0.0, 1.0)


def _gabor_bank(periods: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N_BINS, size, size // 2 + 1) rfft2 transfer functions of even Gabor filters.

    Bin k passes ridges running along angle k pi / N_BINS: an isotropic Gaussian of std
    1 / (2 pi sigma) around +-(1 / period) times the ridge normal, summed over the aliases
    (separable, so built from 1-D factors), zero at DC, peak gain 1.
    """
    fy = torch.fft.fftfreq(size, dtype=torch.float64)
    fx = torch.fft.rfftfreq(size, dtype=torch.float64)
    phi = torch.arange(N_BINS, dtype=torch.float64) * math.pi / N_BINS
    f0 = (1.0 / periods)[:, None, None]
    a = (2 * math.pi**2 * (SIGMA_PER_PERIOD * periods) ** 2)[:, None, None]
    aliases = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)[:, None]

    def factor(f: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """(B, N_BINS, len(f)) sum over aliases of exp(-a (f + alias - centre)^2)."""
        d = f[None, None, None, :] + aliases - centre[..., None, None]
        return torch.exp(-a[..., None] * d**2).sum(dim=-2)

    nx, ny = -torch.sin(phi)[None, :], torch.cos(phi)[None, :]
    bank = sum(
        factor(fy, s * f0[..., 0] * ny)[..., :, None]
        * factor(fx, s * f0[..., 0] * nx)[..., None, :]
        for s in (-1.0, 1.0)
    )
    bank[..., 0, 0] = 0.0
    return (bank / bank.amax(dim=(-2, -1), keepdim=True)).to(_DTYPE)


def _steer_weights(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel (i0, i1, w): blend (1 - w) * bin i0 + w * bin i1 for orientation ``theta``."""
    pos = theta * (N_BINS / math.pi)
    i0 = torch.floor(pos).long() % N_BINS
    w = (pos - torch.floor(pos)).to(_DTYPE)
    return i0[:, None], ((i0 + 1) % N_BINS)[:, None], w[:, None]


def _work_size(size: int) -> int:
    """Side of the grid the ridges grow on: ``size``, or smaller so that the period is ~4.5 px."""
    return min(size, math.ceil(size * _WORK_PERIOD / ridge_period(size)))


def _grow_ridges(x: torch.Tensor, theta: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """(B, m, m) impulses -> (B, 1, m, m) RMS-normalised ridge field following ``theta``.

    ``periods`` are in pixels of the m x m grid.
    """
    m = x.shape[-1]
    bank = _gabor_bank(periods, m)
    i0, i1, w = _steer_weights(theta)
    x = x[:, None].to(_DTYPE)
    for it in range(N_ITERATIONS):
        out = torch.fft.irfft2(torch.fft.rfft2(x) * bank, s=(m, m))
        x = (1 - w) * out.gather(1, i0) + w * out.gather(1, i1)
        x = x / x.square().mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
        if it < N_ITERATIONS - 1:
            x = torch.tanh(_FEATURE_GAIN * x)
    return x


def _render(params: list[_Params], impulses: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size) float32 images in [-1, 1]; ``impulses`` are (B, m, m)."""
    m = impulses.shape[-1]
    theta = torch.stack([_orientation(p, m) for p in params])
    periods = torch.tensor([p.period * m / size for p in params], dtype=torch.float64)
    field = _grow_ridges(impulses, theta, periods)
    if m != size:
        field = torch.nn.functional.interpolate(field, size=(size, size), mode="bicubic")
    ridges = torch.tanh(_FINAL_GAIN * field)[:, 0]
    mask = torch.stack([_mask(p, size) for p in params]).to(_DTYPE)
    return (mask * ridges + (1 - mask)).clamp(-1, 1).float()


def _render_chunk(params: list[_Params], seed: int, start: int, size: int) -> np.ndarray:
    """Images ``start .. start + len(params) - 1``, rendered as one batch of exactly ``_CHUNK``.

    The fixed batch shape (short chunks are padded with copies of their last image) keeps every
    image's arithmetic the same whatever ``n`` and ``start`` are (FFT libraries may take other
    code paths for other batch sizes).
    """
    work = _work_size(size)
    imp = [_impulses(seed, start + j, work, p.period * work / size) for j, p in enumerate(params)]
    pad = _CHUNK - len(params)
    out = _render(params + params[-1:] * pad, torch.stack(imp + imp[-1:] * pad), size)
    return out[: len(params)].numpy()


def _to_pixels(points: np.ndarray, rotation: float, size: int) -> np.ndarray:
    """Canonical normalised (k, 2) points -> rotated (x, y) pixel positions."""
    c, s = math.cos(rotation), math.sin(rotation)
    rot = points @ np.array([[c, s], [-s, c]])
    return rot * (size / 2) + (size - 1) / 2


def check_arguments(n: int, size: int, start: int, classes: tuple[str, ...]) -> None:
    """Raise a one-line ValueError on bad arguments."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if not classes:
        raise ValueError("classes must not be empty")
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown fingerprint class(es) {unknown}; choose from {CLASSES}")


def generate_fingerprints_with_labels(
    n: int,
    size: int = 32,
    seed: int = 0,
    start: int = 0,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
) -> FingerprintBatch:
    """Images ``start .. start + n - 1`` of data set ``seed`` with labels and singular points.

    ``classes`` (from ``CLASSES``) are drawn uniformly per image; "loop" is left or right with
    probability 1/2. Image ``i`` depends only on ``(seed, start + i, size, classes)``.
    """
    classes = tuple(classes)
    check_arguments(n, size, start, classes)
    params = [_draw_params(seed, start + i, size, classes) for i in range(n)]
    images = np.empty((n, 1, size, size), dtype=np.float32)

    def render(lo: int) -> None:
        chunk = params[lo : lo + _CHUNK]
        images[lo : lo + len(chunk), 0] = _render_chunk(chunk, seed, start + lo, size)

    # batches side by side on every core (torch releases the GIL), each on one intra-op thread
    # (every render thread using all cores oversubscribed a 16-core machine: 2x instead of ~10x);
    # a batch's bytes depend neither on which thread renders it nor on how many threads there are
    starts = range(0, n, _CHUNK)
    threads = min(len(starts), available_cores())
    intra = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(render, starts))
    finally:
        torch.set_num_threads(intra)
    return FingerprintBatch(
        images=images,
        labels=np.array([p.label for p in params]),
        cores=[_to_pixels(p.cores, p.rotation, size) for p in params],
        deltas=[_to_pixels(p.deltas, p.rotation, size) for p in params],
        periods=np.array([p.period for p in params]),
    )


def generate_fingerprints(
    n: int,
    size: int = 32,
    seed: int = 0,
    start: int = 0,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
) -> np.ndarray:
    """(n, 1, size, size) float32 fingerprints in [-1, 1] (ridges dark, background +1).

    Image ``i`` is a pure function of ``(seed, start + i, size, classes)``, so
    ``generate_fingerprints(10, start=5)`` equals ``generate_fingerprints(15)[5:]``.
    """
    return generate_fingerprints_with_labels(n, size, seed, start, classes).images
