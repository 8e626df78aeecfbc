"""Synthetic fingerprints: contract, reproducibility, and that the images are fingerprint-like.

The quality checks use independent, simple estimators: a finite-difference structure tensor
(coherence, Poincare index) and a radially averaged power spectrum (ridge period).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from orient.pipeline.fingerprints import (
    generate_fingerprints,
    generate_fingerprints_with_labels,
    ridge_period,
)

LABELS = {"left-loop", "right-loop", "whorl", "arch", "tented-arch"}
FAST = settings(max_examples=8, deadline=None)


def structure_tensor(img: np.ndarray, sigma: float) -> tuple[np.ndarray, ...]:
    """(Jxx, Jxy, Jyy): central differences, Gaussian window of std ``sigma`` px."""
    gy, gx = np.gradient(img.astype(np.float64))
    return tuple(
        ndimage.gaussian_filter(a, sigma, mode="nearest") for a in (gx * gx, gx * gy, gy * gy)
    )


def coherence(img: np.ndarray, sigma: float) -> np.ndarray:
    jxx, jxy, jyy = structure_tensor(img, sigma)
    return np.hypot(jxx - jyy, 2 * jxy) / (jxx + jyy + 1e-12)


def central_disc(size: int, frac: float = 0.28) -> np.ndarray:
    """Pixels within ``frac * size`` of the centre: always inside the elliptical mask."""
    t = np.arange(size) - (size - 1) / 2
    return np.hypot(t[None], t[:, None]) < frac * size


def band_noise(size: int, period: float, rng: np.random.Generator) -> np.ndarray:
    """White noise through an isotropic ring filter at 1 / period, same bandwidth and contrast."""
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None])
    h = np.exp(-((f - 1 / period) ** 2) * 2 * (np.pi * 0.45 * period) ** 2)
    x = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * h).real
    return np.tanh(1.5 * x / x.std())


def radial_power(img: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum (integer rings, cycles per image) of a Hann-tapered disc."""
    size = img.shape[-1]
    t = np.arange(size) - (size - 1) / 2
    r = np.hypot(t[None], t[:, None]) / (0.35 * size)
    w = np.where(r < 1, 0.5 + 0.5 * np.cos(np.pi * r), 0.0)
    p = np.abs(np.fft.fft2((img - (img * w).sum() / w.sum()) * w)) ** 2
    k = np.rint(np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None]) * size)
    k = k.astype(int).ravel()
    return (np.bincount(k, p.ravel()) / np.bincount(k))[: size // 2]


def peak_period(radial: np.ndarray, size: int) -> float:
    """Period in px at the spectrum's peak (rings >= 2), refined by a parabola."""
    radial = radial.copy()
    radial[:2] = 0
    k = int(np.argmax(radial))
    a, b, c = radial[k - 1], radial[k], radial[k + 1]
    return size / (k + 0.5 * (a - c) / (a - 2 * b + c))


def poincare_index(img: np.ndarray, centre: np.ndarray, radius: float, sigma: float) -> float:
    """Turns of the estimated ridge orientation along a circle, / 2 (core +1/2, delta -1/2)."""
    jxx, jxy, jyy = structure_tensor(img, sigma)
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    coords = [centre[1] + radius * np.sin(t), centre[0] + radius * np.cos(t)]
    two_phi = np.arctan2(
        2 * ndimage.map_coordinates(jxy, coords, order=1),
        ndimage.map_coordinates(jxx, coords, order=1)
        - ndimage.map_coordinates(jyy, coords, order=1),
    )
    d = np.diff(np.append(two_phi, two_phi[0]))
    return float(((d + np.pi) % (2 * np.pi) - np.pi).sum() / (4 * np.pi))


@FAST
@given(
    n=st.integers(1, 4),
    size=st.integers(16, 64),
    seed=st.integers(0, 2**40),
    start=st.integers(0, 10**6),
)
def test_shape_dtype_range_and_background(n, size, seed, start):
    batch = generate_fingerprints_with_labels(n, size=size, seed=seed, start=start)
    x = batch.images
    assert x.shape == (n, 1, size, size) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
    assert (x[:, 0, 0, 0] == 1.0).all() and (x[:, 0, -1, -1] == 1.0).all()  # light background
    assert len(batch.labels) == n and set(batch.labels) <= LABELS
    assert (batch.periods >= 3.5).all()
    np.testing.assert_array_equal(x, generate_fingerprints(n, size=size, seed=seed, start=start))


def test_documented_example_slice_equals_full_run():
    np.testing.assert_array_equal(generate_fingerprints(10, start=5), generate_fingerprints(15)[5:])


@pytest.mark.parametrize("threads", [1, 3])
def test_bytes_do_not_depend_on_rendering_threads(monkeypatch, threads):
    """Batches rendered side by side (3 threads, 4 batches, one torch thread each) or one after
    another (1 thread, with the caller's torch threads) give the same bytes as the default, and
    the caller's torch thread count is left as it was."""
    import orient.pipeline.fingerprints as fp

    default = generate_fingerprints(57, size=24, seed=3)
    monkeypatch.setattr(fp, "available_cores", lambda: threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        again = generate_fingerprints(57, size=24, seed=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert default.tobytes() == again.tobytes()


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 1000), st.integers(1, 6), st.integers(1, 6), st.integers(0, 99))
def test_any_split_reproduces_the_same_images(start, n1, n2, seed):
    whole = generate_fingerprints(n1 + n2, size=16, seed=seed, start=start)
    tail = generate_fingerprints(n2, size=16, seed=seed, start=start + n1)
    np.testing.assert_array_equal(whole[n1:], tail)


def test_slices_across_internal_chunks_are_identical():
    whole = generate_fingerprints(70, size=16, seed=3)
    np.testing.assert_array_equal(whole[60:], generate_fingerprints(10, size=16, seed=3, start=60))


def test_images_do_not_depend_on_the_torch_thread_count():
    threads = torch.get_num_threads()
    expected = generate_fingerprints(20, size=32, seed=4)
    try:
        torch.set_num_threads(1)
        np.testing.assert_array_equal(generate_fingerprints(20, size=32, seed=4), expected)
    finally:
        torch.set_num_threads(threads)


def test_different_seeds_and_indices_differ():
    a, b = generate_fingerprints(4, seed=0), generate_fingerprints(4, seed=1)
    assert all(np.abs(a[i] - b[i]).mean() > 0.1 for i in range(4))
    assert all(np.abs(a[i] - a[i + 1]).mean() > 0.1 for i in range(3))


def test_classes_restrict_labels_and_singular_points():
    counts = {"whorl": (2, 2), "left-loop": (1, 1), "right-loop": (1, 1), "tented-arch": (1, 1)}
    counts["arch"] = (0, 0)
    for classes, allowed in [
        (("whorl",), {"whorl"}),
        (("loop",), {"left-loop", "right-loop"}),
        (("arch", "tented-arch"), {"arch", "tented-arch"}),
    ]:
        batch = generate_fingerprints_with_labels(12, size=16, seed=7, classes=classes)
        assert set(batch.labels) <= allowed
        for label, cores, deltas in zip(batch.labels, batch.cores, batch.deltas, strict=True):
            assert (len(cores), len(deltas)) == counts[label]
            assert cores.shape[1:] == deltas.shape[1:] == (2,)
    loops = generate_fingerprints_with_labels(40, size=16, classes=("loop",)).labels
    assert {"left-loop", "right-loop"} == set(loops)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 2, "size": 15},
        {"n": 2, "classes": ("loop", "spiral")},
        {"n": 2, "start": -1},
    ],
)
def test_invalid_arguments_raise_one_line_value_errors(kwargs):
    with pytest.raises(ValueError) as err:
        generate_fingerprints(**kwargs)
    assert "\n" not in str(err.value)


def test_ridge_period_rule():
    assert ridge_period(96) == 8.0
    assert ridge_period(32) == ridge_period(16) == 3.5


def test_ridges_are_dark_on_light():
    x = generate_fingerprints(8, size=64, seed=2)[:, 0]
    inside = x[:, central_disc(64)]
    assert 0.25 < (inside < 0).mean() < 0.75  # ridges and valleys both present
    assert inside.mean() < x[:, 0, :].mean()  # the print is darker than the paper


@pytest.mark.parametrize("size", [32, 96])
def test_coherence_is_high_and_beats_band_limited_noise(size):
    period = ridge_period(size)
    disc = central_disc(size)
    images = generate_fingerprints(16, size=size, seed=11)[:, 0]
    rng = np.random.default_rng(0)
    fp = np.median([np.median(coherence(im, period)[disc]) for im in images])
    noise = np.median(
        [np.median(coherence(band_noise(size, period, rng), period)[disc]) for _ in range(16)]
    )
    assert fp > 0.5
    assert noise < 0.3 and fp - noise > 0.3


@settings(max_examples=5, deadline=None)
@given(size=st.integers(32, 96), seed=st.integers(0, 2**32))
def test_dominant_frequency_matches_ridge_period(size, seed):
    # 64 images per draw: with 16, the mean's error scattered with sd 0.04 around +0.045 over
    # seeds (one seed drawn in CI reached 0.153); with 64, sd 0.017, worst of 41 seeds 0.084
    batch = generate_fingerprints_with_labels(64, size=size, seed=seed)
    spectra = [radial_power(im[0]) for im in batch.images]
    mean_period = peak_period(np.mean(spectra, axis=0), size)
    assert abs(mean_period / batch.periods.mean() - 1) < 0.15
    each = [peak_period(s, size) / p - 1 for s, p in zip(spectra, batch.periods, strict=True)]
    assert abs(np.median(each)) < 0.12


def test_poincare_index_around_cores():
    size = 64
    batch = generate_fingerprints_with_labels(
        24, size=size, seed=5, classes=("loop", "whorl", "arch")
    )
    seen = set()
    for img, label, cores in zip(batch.images, batch.labels, batch.cores, strict=True):
        centre = cores.mean(axis=0) if len(cores) else np.full(2, (size - 1) / 2)
        index = poincare_index(img[0], centre, radius=0.125 * size, sigma=ridge_period(size))
        assert index == pytest.approx(0.5 * len(cores), abs=0.1), label
        seen.add(label)
    assert {"whorl", "arch"} <= seen and seen & {"left-loop", "right-loop"}
