"""VP and GOU: exact Gaussian transitions, closed-form moments, reverse samplers (papers A and B; docs/processes.md sections 4-5)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from orient.dynamics import create_process, process_from_config
from orient.dynamics.gou import GOUProcess
from orient.dynamics.vp import VP_SCHEDULES, VPProcess


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


TARGET_MEAN = torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
TARGET_COV = torch.tensor(
    [[1.0, 0.6, 0.1], [0.6, 0.5, 0.05], [0.1, 0.05, 0.2]], dtype=torch.float64
)


def target_samples(n: int, seed: int = 0) -> torch.Tensor:
    L = torch.linalg.cholesky(TARGET_COV)
    return TARGET_MEAN + torch.randn((n, 3), generator=gen(seed), dtype=torch.float64) @ L.T


def fitted_gou(T: int = 50, **kw) -> GOUProcess:
    return GOUProcess.fit_from_data(target_samples(4000), T, **kw)


def empirical(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T)


# -- VP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 30, 100])
def test_vp_score_equals_autograd(t):
    p = VPProcess(T=100, state_ndim=1)
    x_prev = target_samples(5)
    x_t = p.transition_sample(x_prev, t, 2, gen(1)).requires_grad_(True)
    (auto,) = torch.autograd.grad(p.transition_log_prob(x_prev, x_t, t).sum(), x_t)
    torch.testing.assert_close(p.transition_score(x_prev, x_t.detach(), t), auto)


def test_vp_schedules_are_paper_a_baselines():
    assert VP_SCHEDULES["vp-300"] == (1e-4, 0.07)
    p = VPProcess(T=1000)
    assert math.isclose(float(p.beta[-1]), 0.02) and math.isclose(float(p.beta[0]), 1e-4)


@pytest.mark.parametrize("method", ["sde", "ode"])
def test_vp_reverse_with_exact_score_recovers_gaussian(method):
    p = VPProcess(T=1000, state_ndim=1)
    eye = torch.eye(3, dtype=torch.float64)

    def score(x, t):
        abar, var = p.marginal_coefficients(t)
        cov = abar**2 * TARGET_COV + var * eye
        return -(x - abar * TARGET_MEAN) @ torch.linalg.inv(cov)

    g = gen(3)
    x = torch.randn((20000, 3), generator=g, dtype=torch.float64)  # the N(0, I) prior
    for t in range(p.T, 0, -1):
        x = p.reverse_step(x, t, score(x, t), g, method=method)
    m, c = empirical(x)
    torch.testing.assert_close(m, TARGET_MEAN, atol=0.04, rtol=0)
    torch.testing.assert_close(c, TARGET_COV, atol=0.05, rtol=0)


def test_vp_marginal_matches_simulation():
    p = VPProcess(T=100, state_ndim=1)
    x0 = target_samples(20000, seed=1)
    x = p.simulate(x0, gen(2), t_end=40)[-1]
    abar, var = p.marginal_coefficients(40)
    m, c = empirical(x)
    torch.testing.assert_close(m, abar * TARGET_MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(
        c, abar**2 * TARGET_COV + var * torch.eye(3).double(), atol=0.04, rtol=0
    )


# -- GOU -------------------------------------------------------------------------------------


def test_gou_rates_follow_eq2():
    p = fitted_gou(a=0.3, gamma=0.7, b=1.5)
    lam = p.lam
    expected = -1.5 * (0.3 + 0.7 * (1 - lam / lam.max()))
    torch.testing.assert_close(p.c, expected)
    assert float(p.c.max()) <= -0.3 * 1.5 + 1e-12 and float(p.c.min()) >= -1.5 - 1e-12
    # eigen-decomposition reproduces the empirical covariance
    torch.testing.assert_close((p.U * p.lam) @ p.U.T, torch.cov(target_samples(4000).T))


def test_gou_moments_solve_the_mean_ode_and_lyapunov_equation():
    """d mean/dt = M (mean - mu); d Sigma/dt = M Sigma + Sigma M^T + beta I (exactly)."""
    p = fitted_gou()
    M = (p.U * p.c) @ p.U.T
    x0 = torch.tensor([[2.0, 1.0, -1.0]], dtype=torch.float64)
    t, eps = 0.7, 1e-6
    m_plus, S_plus = p.moments(x0, t + eps)
    m_minus, S_minus = p.moments(x0, t - eps)
    m, S = p.moments(x0, t)
    torch.testing.assert_close(
        (m_plus - m_minus) / (2 * eps), (m - p.mu) @ M.T, atol=1e-7, rtol=1e-6
    )
    lyap = M @ S + S @ M.T + p.beta * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close((S_plus - S_minus) / (2 * eps), lyap, atol=1e-7, rtol=1e-6)
    # and the mean is mu + e^{M t}(x0 - mu) with the matrix exponential
    torch.testing.assert_close(m[0], p.mu + torch.linalg.matrix_exp(M * t) @ (x0[0] - p.mu))


def test_gou_simulated_moments_match_closed_form():
    p = fitted_gou(T=50)
    x0 = torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64).expand(20000, 3)
    n = 20
    x = p.simulate(x0.clone(), gen(4), t_end=n)[-1]
    m_exact, S_exact = p.moments(x0[:1], float(p.times[n]))  # the grid time of step n
    m, S = empirical(x)
    torch.testing.assert_close(m, m_exact[0], atol=0.03, rtol=0)
    torch.testing.assert_close(S, S_exact, atol=0.04, rtol=0)


def test_gou_long_run_covariance_is_stationary_solution():
    p = fitted_gou(T=20, horizon=30.0)
    M = (p.U * p.c) @ p.U.T
    stat = -p.beta / 2 * torch.linalg.inv(M)
    torch.testing.assert_close(p.stationary_covariance(), stat)
    x = p.simulate(target_samples(20000, seed=2), gen(5))[-1]
    torch.testing.assert_close(torch.cov(x.T), stat, atol=0.1, rtol=0.05)


def test_gou_two_steps_of_h_equal_one_of_2h():
    p = fitted_gou()
    h = 0.13
    x0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    m1, S1 = p.moments(x0, h)
    A = (p.U * torch.exp(p.c * h)) @ p.U.T
    m2, S2 = p.moments(m1, h)  # mean of the second step from the first step's mean
    m_2h, S_2h = p.moments(x0, 2 * h)
    torch.testing.assert_close(m2, m_2h)
    torch.testing.assert_close(A @ S1 @ A.T + S1, S_2h)
    # and in distribution, by sampling
    q = GOUProcess.fit_from_data(target_samples(4000), 2, horizon=2 * h)
    r = GOUProcess.fit_from_data(target_samples(4000), 1, horizon=2 * h)
    start = x0.expand(30000, 3).clone()
    two = q.simulate(start, gen(6))[-1]
    one = r.simulate(start, gen(7))[-1]
    torch.testing.assert_close(two.mean(0), one.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(two.T), torch.cov(one.T), atol=0.03, rtol=0)


@pytest.mark.parametrize("t", [1, 25, 50])
def test_gou_score_equals_autograd_and_has_zero_mean(t):
    p = fitted_gou()
    x_prev = target_samples(4, seed=3)
    x_t = p.transition_sample(x_prev, t, 3, gen(8)).requires_grad_(True)
    (auto,) = torch.autograd.grad(p.transition_log_prob(x_prev, x_t, t).sum(), x_t)
    torch.testing.assert_close(p.transition_score(x_prev, x_t.detach(), t), auto)
    tr = p.sample_transitions(x_prev[:1], t, 20000, gen(9))
    sd = (1 / p.var[t - 1]).sqrt().max()  # the largest per-coordinate score std
    assert tr.score.mean(0).abs().max() < 5 * sd / math.sqrt(20000)


@pytest.mark.parametrize("method", ["sde", "ode"])
def test_gou_reverse_with_exact_score_recovers_gaussian(method):
    p = fitted_gou(T=200)

    def marginal(t):  # exact at the grid time s_t
        A = (p.U * torch.exp(p.c * p.times[t])) @ p.U.T
        _, noise = p.moments(TARGET_MEAN[None], float(p.times[t]))
        return p.mu + A @ (TARGET_MEAN - p.mu), A @ TARGET_COV @ A.T + noise

    g = gen(10)
    mT, ST = marginal(p.T)
    x = mT + torch.randn((20000, 3), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(ST).T
    for t in range(p.T, 0, -1):
        m, S = marginal(t)
        x = p.reverse_step(x, t, -(x - m) @ torch.linalg.inv(S), g, method=method)
    mean, cov = empirical(x)
    torch.testing.assert_close(mean, TARGET_MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(cov, TARGET_COV, atol=0.04, rtol=0)


def test_gou_anchor_prior_follows_eq12():
    p = fitted_gou(n_anchors=1)
    x = p.sample_prior((20000, 3), gen(11)).double()
    m, S = p.moments(p.anchors, p.horizon)
    torch.testing.assert_close(x.mean(0), m[0], atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), S, atol=0.04, rtol=0)
    stationary = GOUProcess.fit_from_data(target_samples(4000), 10, prior="stationary")
    y = stationary.sample_prior((20000, 3), gen(12)).double()
    torch.testing.assert_close(
        torch.cov(y.T), stationary.stationary_covariance(), atol=0.1, rtol=0.05
    )


def test_gou_config_round_trip_needs_matching_buffers():
    p = create_process(
        "gou", steps=30, example=target_samples(500).float(), b=1.0, a=0.5, gamma=0.5
    )
    cfg = json.loads(json.dumps(p.to_config()))
    q = process_from_config(cfg, p.buffers())
    assert q.config_hash == p.config_hash
    x = target_samples(3).float()
    assert torch.equal(
        p.sample_transitions(x, 5, 2, gen(0)).x, q.sample_transitions(x, 5, 2, gen(0)).x
    )
    assert torch.equal(p.sample_prior((4, 3), gen(1)), q.sample_prior((4, 3), gen(1)))
    bad = dict(p.buffers())
    bad["mu"] = bad["mu"] + 1e-9
    with pytest.raises(ValueError, match="digest"):
        process_from_config(cfg, bad)
    with pytest.raises(ValueError, match="buffers"):
        process_from_config(cfg, None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"a": 0.5, "gamma": 0.6}, "a \\+ gamma = 1"),
        ({"a": -0.1, "gamma": 1.1}, ">= 0"),
        ({"beta": -1.0}, "beta"),
        ({"b": 0.0}, "b "),
        ({"horizon": 0.0}, "horizon"),
        ({"prior": "uniform"}, "prior"),
    ],
)
def test_gou_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fitted_gou(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match", [({"T": 0}, "steps"), ({"T": 10, "schedule": "vp-7"}, "unknown")]
)
def test_vp_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VPProcess(**kwargs)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 4),
    d=st.integers(1, 6),
    m=st.integers(1, 3),
    t=st.integers(1, 10),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    name=st.sampled_from(["gou", "vp"]),
)
def test_vector_process_shapes(n, d, m, t, dtype, name):
    data = torch.randn((50, d), generator=gen(0))
    p = create_process(
        name, steps=10, schedule="beta=1e-3:0.1" if name == "vp" else None, example=data
    )
    x = torch.randn((n, d), generator=gen(1), dtype=dtype)
    tr = p.sample_transitions(x, t, m, gen(2))
    assert tr.x.shape == (m, n, d) and tr.x.dtype == dtype and tr.score.dtype == dtype
    assert torch.isfinite(tr.score).all()
    y = p.reverse_step(x, torch.full((n,), t), tr.score[0], gen(3))
    assert y.shape == x.shape
    assert p.sample_prior((n, d), gen(4)).shape == (n, d)


def test_gou_time_grid_is_quadratic_and_old_configs_stay_uniform():
    """s_t = horizon (t / T)^2: the first step's noise (beta h_1 ~ beta horizon / T^2) stays below
    the data's least variance, which a uniform grid's first step (beta horizon / T) drowns."""
    p = fitted_gou(T=100)
    torch.testing.assert_close(p.times, 2.0 * (torch.arange(101, dtype=torch.float64) / 100) ** 2)
    assert float(p.var[0].max()) < 0.1 * float(p.lam.min()) < float(p.var[-1].min())
    cfg = json.loads(json.dumps(p.to_config()))
    assert cfg["grid_power"] == 2.0
    del cfg["grid_power"]
    old = GOUProcess.from_config(cfg, p.buffers())
    torch.testing.assert_close(old.times, torch.linspace(0, 2.0, 101, dtype=torch.float64))
    uniform = create_process(
        "gou", steps=100, schedule="uniform", example=target_samples(500).float()
    )
    assert uniform.grid_power == 1.0
    with pytest.raises(ValueError, match="time grids"):
        create_process("gou", steps=100, schedule="cosine", example=target_samples(500).float())


def test_gou_baseline_is_the_exact_score_of_the_fitted_gaussian():
    """For data N(mu, U diag(lambda) U^T), the fitted moments, the baseline is the exact marginal
    score at every t; configs written before it (no ``baseline``) have none."""
    p = fitted_gou(T=40)
    C0 = (p.U * p.lam) @ p.U.T
    x = target_samples(5, seed=3)
    for t in (1, 20, 40):
        A = (p.U * torch.exp(p.c * p.times[t])) @ p.U.T
        _, noise = p.moments(p.mu[None], float(p.times[t]))
        cov = A @ C0 @ A.T + noise
        want = -(x - p.mu) @ torch.linalg.inv(cov)
        torch.testing.assert_close(p.baseline_score(x, t), want)
    tt = torch.tensor([1, 40, 20, 3, 7])
    rows = torch.cat([p.baseline_score(x[i : i + 1], int(tt[i])) for i in range(5)])
    torch.testing.assert_close(p.baseline_score(x, tt), rows)
    cfg = json.loads(json.dumps(p.to_config()))
    del cfg["baseline"]
    assert GOUProcess.from_config(cfg, p.buffers()).baseline_score(x, 3) is None
