"""Kuramoto process: identities, periodicity, exact scores, terminal law (paper A; docs/processes.md section 3)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from orient.dynamics import create_process, process_from_config
from orient.dynamics.kuramoto import TABLE5, KuramotoProcess
from orient.dynamics.wrapped import fit_von_mises_kappa, von_mises_sample, wrap


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def phases(shape, seed=0, dtype=torch.float64):
    return (torch.rand(shape, generator=gen(seed), dtype=dtype) * 2 - 1) * math.pi


@given(st.floats(-1e4, 1e4, allow_nan=False, width=32))
def test_wrap_lands_in_half_open_interval(x):
    for dtype in (torch.float32, torch.float64):
        y = float(wrap(torch.tensor([x], dtype=dtype))[0])
        assert -math.pi <= y < math.pi
        assert math.isclose(math.cos(y), math.cos(x), abs_tol=1e-3)


def test_wrap_edge_values():
    x = torch.tensor([math.pi, -math.pi, 3 * math.pi, -1e-9, 2 * math.pi - 1e-7])
    y = wrap(x)
    assert (y >= -math.pi).all() and (y < math.pi).all()


@pytest.mark.parametrize("variant", ["global", "local", "ref"])
def test_drift_and_score_are_2pi_periodic(variant):
    p = KuramotoProcess(T=100, variant=variant)
    th = phases((2, 1, 8, 8))
    k = torch.randint(-3, 4, th.shape, generator=gen(1)).double()
    t = 37
    torch.testing.assert_close(p.drift(th + 2 * math.pi * k, t), p.drift(th, t))
    x_t = p.transition_sample(th, t, 1, gen(2))[0]
    j = torch.randint(-3, 4, th.shape, generator=gen(3)).double()
    torch.testing.assert_close(
        p.transition_score(th + 2 * math.pi * k, x_t + 2 * math.pi * j, t),
        p.transition_score(th, x_t, t),
    )


@pytest.mark.parametrize("variant", ["global", "local", "ref"])
def test_states_stay_in_range(variant):
    p = KuramotoProcess(T=100, variant=variant)
    x = p.data_to_state(torch.rand((4, 1, 12, 12), generator=gen(0)) * 2 - 1)
    g = gen(1)
    for t in range(1, 101):
        x = p.step(x, t, g)
        assert x.min() >= -math.pi and x.max() < math.pi
        assert x.dtype == torch.float32


@pytest.mark.parametrize("channels", ["independent", "joint"])
def test_mean_field_equals_pairwise_sum(channels):
    p = KuramotoProcess(T=100, variant="global", channels=channels)
    th = phases((2, 3, 5, 6))
    t = 50
    K = float(p.K[t - 1])
    B, C = th.shape[:2]
    flat = th.reshape(B, C, -1) if channels == "independent" else th.reshape(B, 1, -1)
    pair = torch.sin(flat[..., None, :] - flat[..., :, None]).mean(-1)  # (B, C', N)
    expected = K * pair.reshape(th.shape) + float(p.K_ref[t - 1]) * torch.sin(-th)
    torch.testing.assert_close(p.drift(th, t), expected, rtol=1e-10, atol=1e-12)


def naive_local_drift(th, K, K_ref, window, boundary):
    B, C, H, W = th.shape
    r = window // 2
    out = torch.zeros_like(th)
    for b in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    terms = []
                    for di in range(-r, r + 1):
                        for dj in range(-r, r + 1):
                            ii, jj = i + di, j + dj
                            if boundary == "inside":
                                if not (0 <= ii < H and 0 <= jj < W):
                                    continue
                            elif boundary == "circular":
                                ii, jj = ii % H, jj % W
                            else:  # reflect (no edge repeat, like numpy/torch 'reflect')
                                ii = -ii if ii < 0 else (2 * (H - 1) - ii if ii >= H else ii)
                                jj = -jj if jj < 0 else (2 * (W - 1) - jj if jj >= W else jj)
                            terms.append(math.sin(th[b, c, ii, jj] - th[b, c, i, j]))
                    out[b, c, i, j] = K * sum(terms) / len(terms) + K_ref * math.sin(
                        -th[b, c, i, j]
                    )
    return out


@pytest.mark.parametrize("boundary", ["inside", "reflect", "circular"])
@pytest.mark.parametrize("window", [3, 5])
def test_local_drift_equals_naive_window_loop(boundary, window):
    p = KuramotoProcess(T=300, variant="local", window=window, boundary=boundary)
    th = phases((1, 2, 7, 6), seed=4)
    t = 123
    got = p.drift(th, t)
    want = naive_local_drift(th, float(p.K[t - 1]), float(p.K_ref[t - 1]), window, boundary)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_local_average_handles_wraparound_phases():
    """Phases near +-pi average through (sin, cos), not arithmetically (the reference bug)."""
    p = KuramotoProcess(T=100, variant="local", window=3)
    th = torch.full((1, 1, 3, 3), math.pi - 0.01, dtype=torch.float64)
    th[0, 0, 0, 0] = -math.pi + 0.01  # physically 0.02 rad away
    s, c = p.mean_field(th)
    psi = torch.atan2(s, c)
    assert (wrap(psi - math.pi).abs() < 0.02).all()


@pytest.mark.parametrize("variant", ["global", "local", "ref"])
@pytest.mark.parametrize("t", [1, 40, 100])
def test_score_equals_autograd_of_wrapped_normal(variant, t):
    p = KuramotoProcess(T=100, variant=variant, n_terms=3)
    big = KuramotoProcess(T=100, variant=variant, n_terms=12)
    x_prev = phases((2, 1, 6, 6), seed=5)
    x_t = p.transition_sample(x_prev, t, 3, gen(6))
    x_req = x_t.clone().requires_grad_(True)
    lp = big.transition_log_prob(x_prev, x_req, t).sum()
    (auto,) = torch.autograd.grad(lp, x_req)
    torch.testing.assert_close(p.transition_score(x_prev, x_t, t), auto, rtol=1e-6, atol=1e-8)


def test_score_is_accurate_for_wide_kernels():
    """With variance ~ pi^2 the wraps matter; K = 3 still matches K = 12 closely."""
    p = KuramotoProcess(T=2, variant="ref", schedule={"two_D": (3.0, 3.0), "K": (0, 0)})
    big = KuramotoProcess(
        T=2, variant="ref", schedule={"two_D": (3.0, 3.0), "K": (0, 0)}, n_terms=12
    )
    x_prev = phases((1, 1, 4, 4), seed=7)
    x_t = phases((5, 1, 1, 4, 4), seed=8)
    torch.testing.assert_close(
        p.transition_score(x_prev, x_t, 1), big.transition_score(x_prev, x_t, 1), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("t", [1, 50, 100])
def test_score_has_zero_monte_carlo_mean(t):
    p = KuramotoProcess(T=100, variant="local")
    x_prev = p.data_to_state(torch.rand((1, 1, 8, 8), generator=gen(0)) * 2 - 1)
    tr = p.sample_transitions(x_prev, t, 4000, gen(1))
    var = float(p.two_D[t - 1])
    # score ~ -eps / sigma: mean of 4000 draws has std 1 / (sigma sqrt(4000)); allow 5 std
    tol = 5 / math.sqrt(var * 4000)
    assert tr.score.mean(0).abs().max() < tol
    assert tr.x.shape == (4000, 1, 1, 8, 8) and tr.score.shape == tr.x.shape


def test_von_mises_sampler_and_fit():
    x = von_mises_sample(0.3, 2.0, (20000,), gen(0), dtype=torch.float64)
    loc, kappa = fit_von_mises_kappa(x)
    assert abs(loc - 0.3) < 0.03 and abs(kappa - 2.0) < 0.08
    assert x.min() >= -math.pi and x.max() < math.pi


def test_chain_ends_near_eq7_von_mises_and_synchronises():
    """Table 5 global-100: terminal phases are ~ von Mises(0, kappa_eq7) within 15 %."""
    p = KuramotoProcess(T=100, variant="global", schedule="global-100")
    y = torch.rand((64, 1, 16, 16), generator=gen(0)) * 2 - 1  # uniform pixels: r(0) small
    xs = p.simulate(p.data_to_state(y), gen(1))
    r = torch.stack([p.order_parameter(x).mean() for x in xs])
    assert r[-1] > r[0] + 0.2  # synchronises toward psi_ref
    assert (r[60:] > r[:40].max()).all()
    loc, kappa_fit = fit_von_mises_kappa(xs[-1])
    kappa_eq7 = p.eq7_kappa(float(r[-1]))
    assert abs(loc) < 0.05
    assert abs(kappa_fit / kappa_eq7 - 1) < 0.15, (kappa_fit, kappa_eq7)


def test_named_schedules_match_table5():
    p = KuramotoProcess(T=300, variant="local")
    assert p.schedule_name == "local-300"
    assert math.isclose(float(p.two_D[0]), 1e-4) and math.isclose(float(p.two_D[-1]), 0.07)
    assert math.isclose(float(p.K[-1]), 0.03) and math.isclose(float(p.K_ref[-1]), 0.03)
    g = KuramotoProcess(T=1000, variant="global")
    assert math.isclose(float(g.K_ref[-1]), 1.5 * float(g.K[-1]))
    ref = KuramotoProcess(T=100, variant="ref")
    assert float(ref.K.abs().max()) == 0.0
    assert set(TABLE5) == {f"{v}-{T}" for v in ("global", "local") for T in (100, 300, 1000)}


@pytest.mark.parametrize("name", ["kuramoto-local", "kuramoto-global", "kuramoto-ref"])
def test_config_round_trip_gives_identical_outputs(name):
    example = torch.zeros((2, 1, 8, 8))
    p = create_process(name, steps=100, example=example, psi_ref=0.2, window=3)
    q = process_from_config(json.loads(json.dumps(p.to_config())))
    assert q.config_hash == p.config_hash
    x = p.data_to_state(torch.rand((2, 1, 8, 8), generator=gen(0)) * 2 - 1)
    a = p.sample_transitions(x, 10, 2, gen(5))
    b = q.sample_transitions(x, 10, 2, gen(5))
    assert torch.equal(a.x, b.x) and torch.equal(a.score, b.score)
    assert torch.equal(p.sample_prior((2, 1, 8, 8), gen(3)), q.sample_prior((2, 1, 8, 8), gen(3)))


def test_custom_schedule_string_and_hash_sensitivity():
    ex = torch.zeros((1, 1, 8, 8))
    a = create_process("kuramoto-global", steps=50, example=ex, schedule="two_D=1e-4:0.1,K=0:0.02")
    b = create_process("kuramoto-global", steps=50, example=ex, schedule="two_D=1e-4:0.1,K=0:0.03")
    assert a.config_hash != b.config_hash
    assert math.isclose(float(a.K_ref[-1]), 0.02)  # K_ref defaults to K


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"T": 0}, "steps"),
        ({"T": 100, "window": 4}, "odd"),
        ({"T": 100, "window": 0}, "odd"),
        ({"T": 100, "schedule": {"two_D": (-1e-4, 0.1), "K": (0, 0.1)}}, "2D_t"),
        ({"T": 100, "schedule": "global-7"}, "unknown Kuramoto schedule"),
        ({"T": 100, "variant": "mean"}, "variant"),
        ({"T": 100, "boundary": "zeros"}, "boundary"),
    ],
)
def test_invalid_parameters_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KuramotoProcess(**kwargs)


def test_data_state_mapping_round_trip():
    p = KuramotoProcess(T=100)
    x = torch.linspace(-1, 1, 101)
    s = p.data_to_state(x)
    assert math.isclose(float(s.max()), 0.9 * math.pi, rel_tol=1e-6)
    torch.testing.assert_close(p.state_to_data(s), x)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    t=st.integers(1, 100),
    m=st.integers(1, 3),
    variant=st.sampled_from(["global", "local", "ref"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_shapes_and_dtypes(b, c, h, w, t, m, variant, dtype):
    p = KuramotoProcess(T=100, variant=variant)
    x = phases((b, c, h, w), dtype=dtype)
    tr = p.sample_transitions(x, t, m, gen(0))
    assert tr.x.shape == (m, b, c, h, w) and tr.x.dtype == dtype
    assert tr.score.shape == tr.x.shape and torch.isfinite(tr.score).all()
    tt = torch.full((b,), t)
    torch.testing.assert_close(p.transition_score(x, tr.x, tt), tr.score)
    y = p.reverse_step(tr.x[0], t, tr.score[0], gen(1))
    assert y.shape == x.shape and (y >= -math.pi).all() and (y < math.pi).all()
    prior = p.sample_prior((b, c, h, w), gen(2))
    assert prior.shape == (b, c, h, w)


def test_prior_kappa_from_eq7_and_fit():
    p = KuramotoProcess(T=100, variant="global")
    # reference implementation's kappa = 4 K_T / sigma_T^2 is eq. 7 with r = 0.5
    assert math.isclose(p.kappa, 4 * float(p.K[-1]) / float(p.two_D[-1]), rel_tol=1e-12)
    fitted = p.fit_prior(torch.rand((16, 1, 8, 8), generator=gen(0)) * 2 - 1, gen(1))
    assert fitted.prior_kappa is not None and 0.5 < fitted.kappa < 2.5
    draws = fitted.sample_prior((50, 1, 20, 20), gen(2))
    _, k = fit_von_mises_kappa(draws)
    assert abs(k / fitted.kappa - 1) < 0.1


def test_reverse_step_index_matches_forward_transition():
    """Transition t, its loss weight and the reverse step at t use one schedule entry (t - 1).

    The reference implementation samples with entry t for a transition trained with t - 1.
    """
    p = KuramotoProcess(T=2, variant="ref", schedule={"two_D": (0.01, 1.0), "K": (0, 0)})
    x = torch.zeros((1, 1, 64, 64), dtype=torch.float64)
    draws = p.transition_sample(x, 1, 50, gen(0))
    assert abs(float(draws.var()) / 0.01 - 1) < 0.05
    assert math.isclose(float(p.loss_weight(1)), 0.01)
    ones = torch.ones_like(x)
    back = p.reverse_step(x, 1, ones, method="ode")
    torch.testing.assert_close(back, x - p.drift(x, 1) + 0.5 * 0.01 * ones)
    back2 = p.reverse_step(x, 2, ones, method="ode")
    torch.testing.assert_close(back2, x - p.drift(x, 2) + 0.5 * 1.0 * ones)
