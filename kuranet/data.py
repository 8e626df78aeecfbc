"""Node features of paper D: disorder cases I-III (section III A) and cluster data (section III B).

Every set is a pure function of (case, seed, split): ``case_data`` draws the training set from
stream (seed, 0) and the test set from stream (seed, 1) of numpy's SeedSequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

Rng = np.random.Generator


@dataclass(frozen=True)
class Features:
    """n oscillators: network inputs ``x`` (n, m) and the intrinsic terms of D eq. 1 they carry."""

    x: Tensor
    omega: Tensor | None = None  # natural frequencies (n,)
    field: Tensor | None = None  # external field strengths b_i (n,)
    delay: Tensor | None = None  # integer delays tau_i in Euler steps (n,), int64
    labels: Tensor | None = None  # cluster labels (n,), int64

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> Features:
        """``fn`` applied to every tensor present (indexing, moving to a device)."""
        return Features(*(None if t is None else fn(t) for t in astuple_shallow(self)))

    def subset(self, index: Tensor | slice) -> Features:
        """The oscillators at ``index``."""
        return self.map(lambda t: t[index])

    def to(self, device: torch.device | str) -> Features:
        return self.map(lambda t: t.to(device))


def astuple_shallow(f: Features) -> tuple[Tensor | None, ...]:
    return (f.x, f.omega, f.field, f.delay, f.labels)


@dataclass(frozen=True)
class CaseData:
    """Training and test features of one case; ``k`` groups for cluster cases, else None."""

    train: Features
    test: Features
    k: int | None

    @property
    def clustered(self) -> bool:
        return self.k is not None


def _t(a: np.ndarray) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


# -- disorder cases (global synchrony) ------------------------------------------------------
def case_i(n: int, rng: Rng) -> Features:
    """Case I: omega ~ U[-1, 1]; features (omega)."""
    omega = rng.uniform(-1.0, 1.0, n)
    return Features(x=_t(omega[:, None]), omega=_t(omega))


def case_ii(n: int, rng: Rng) -> Features:
    """Case II: omega, b ~ U[-1, 1]; features (omega, b)."""
    omega, b = rng.uniform(-1.0, 1.0, n), rng.uniform(-1.0, 1.0, n)
    return Features(x=_t(np.stack([omega, b], 1)), omega=_t(omega), field=_t(b))


def case_iii(n: int, rng: Rng, max_delay: int = 40) -> Features:
    """Case III: omega ~ U[2, 4], tau ~ NB(r=15, p=0.5) (mean 15) clipped to ``max_delay``; features (omega, tau)."""
    omega = rng.uniform(2.0, 4.0, n)
    tau = np.minimum(rng.negative_binomial(15, 0.5, n), max_delay)
    return Features(
        x=_t(np.stack([omega, tau], 1)),
        omega=_t(omega),
        delay=torch.as_tensor(tau, dtype=torch.int64),
    )


# -- cluster data (features = 2-D points, labels = mixture components) ---------------------
def _clustered(points: np.ndarray, labels: np.ndarray) -> Features:
    return Features(x=_t(points), labels=torch.as_tensor(labels, dtype=torch.int64))


def moons(n: int, rng: Rng, noise: float = 0.05) -> Features:
    """Two interleaved half circles (as scikit-learn's make_moons, with random positions)."""
    y = rng.integers(0, 2, n)
    t = rng.uniform(0.0, math.pi, n)
    p = np.where(
        y[:, None] == 0,
        np.stack([np.cos(t), np.sin(t)], 1),
        np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1),
    )
    return _clustered(p + noise * rng.standard_normal((n, 2)), y)


def circles(n: int, rng: Rng, noise: float = 0.05, factor: float = 0.5) -> Features:
    """Two concentric circles of radii 1 and ``factor`` (as make_circles)."""
    y = rng.integers(0, 2, n)
    t = rng.uniform(0.0, 2 * math.pi, n)
    r = np.where(y == 0, 1.0, factor)
    p = r[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
    return _clustered(p + noise * rng.standard_normal((n, 2)), y)


def spirals(n: int, rng: Rng, noise: float = 0.5) -> Features:
    """Two interlinked spirals r = +-(2 t + pi), t = 2 pi sqrt(u), plus Gaussian noise."""
    y = rng.integers(0, 2, n)
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * 2 * math.pi
    r = np.where(y == 0, 1.0, -1.0) * (2 * t + math.pi)
    p = np.stack([np.cos(t) * r, np.sin(t) * r], 1)
    return _clustered(p + noise * rng.standard_normal((n, 2)), y)


def gmm(n: int, rng: Rng, k: int = 5, radius: float = 10.0, std: float = 1.0) -> Features:
    """k isotropic Gaussians (std ``std``) with means equally spaced on a ring of radius ``radius``."""
    if k < 2:
        raise ValueError(f"a Gaussian mixture needs k >= 2 components, got {k}")
    y = rng.integers(0, k, n)
    a = 2 * math.pi * y / k
    p = radius * np.stack([np.cos(a), np.sin(a)], 1)
    return _clustered(p + std * rng.standard_normal((n, 2)), y)


GLOBAL_CASES: dict[str, Callable[..., Features]] = {"I": case_i, "II": case_ii, "III": case_iii}
CLUSTER_CASES: dict[str, Callable[..., Features]] = {
    "moons": moons,
    "circles": circles,
    "spirals": spirals,
    **{f"gmm{k}": lambda n, rng, k=k, **o: gmm(n, rng, k=k, **o) for k in range(2, 11)},
}
CASES = (*GLOBAL_CASES, *CLUSTER_CASES, "image")


def stream(seed: int, *keys: int) -> Rng:
    """The numpy generator of (seed, *keys): independent, reproducible streams."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def case_data(
    case: str,
    seed: int,
    train_size: int = 10_000,
    test_size: int = 10_000,
    image: str | None = None,
    mask: str | None = None,
    **options: float,
) -> CaseData:
    """Training and test features of ``case`` (one of :data:`CASES`), drawn from ``seed``."""
    if case == "image":
        if image is None or mask is None:
            raise ValueError("the image case needs an image and a label mask (--image, --mask)")
        return image_data(image, mask, seed, train_size, test_size)
    if case in GLOBAL_CASES:
        make, k = GLOBAL_CASES[case], None
    elif case in CLUSTER_CASES:
        make = CLUSTER_CASES[case]
        k = int(case[3:]) if case.startswith("gmm") else 2
    else:
        raise ValueError(f"unknown KuraNet case {case!r}; choose one of {', '.join(CASES)}")
    for name, size in (("training", train_size), ("test", test_size)):
        if size < 2:
            raise ValueError(f"the {name} set needs at least 2 oscillators, got {size}")
    return CaseData(
        make(train_size, stream(seed, 0), **options), make(test_size, stream(seed, 1), **options), k
    )


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as float array (H, W, 3) in [0, 1]."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {p} does not exist")
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def read_mask(path: str | Path) -> np.ndarray:
    """A label mask (H, W): a .npy integer array or an image whose distinct values are the labels."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"label mask {p} does not exist")
    if p.suffix.lower() == ".npy":
        m = np.load(p, allow_pickle=False)
    else:
        with Image.open(p) as im:
            m = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "P") else im)
    if m.ndim != 2:
        raise ValueError(f"label mask {p} must be 2-D (H, W), got shape {m.shape}")
    return np.unique(m, return_inverse=True)[1].reshape(m.shape)


def image_data(image: str, mask: str, seed: int, train_size: int, test_size: int) -> CaseData:
    """Pixels as oscillators: features (r, g, b, p/W, q/H), labels from the mask; a seeded split.

    Half the pixels (a seeded permutation) form the training pool and the rest the test pool, as
    in the paper; each pool is cut to ``train_size`` / ``test_size`` pixels.
    """
    img, lab = read_image(image), read_mask(mask)
    if img.shape[:2] != lab.shape:
        raise ValueError(
            f"image {img.shape[1]}x{img.shape[0]} and mask {lab.shape[1]}x{lab.shape[0]} differ in size"
        )
    h, w = lab.shape
    if h * w < 4:
        raise ValueError("the image needs at least 4 pixels")
    q, p = np.mgrid[0:h, 0:w]
    x = np.concatenate([img.reshape(-1, 3), (p / w).reshape(-1, 1), (q / h).reshape(-1, 1)], 1)
    feats = Features(x=_t(x), labels=torch.as_tensor(lab.reshape(-1), dtype=torch.int64))
    order = torch.as_tensor(stream(seed, 2).permutation(h * w))
    half = h * w // 2
    train = feats.subset(order[:half][:train_size])
    test = feats.subset(order[half:][:test_size])
    return CaseData(train, test, int(lab.max()) + 1)
