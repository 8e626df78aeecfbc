"""The anisotropic SPDE process (paper C): drift stencil, taming, exact Gaussian scores, the
divergence term of the reverse SDE, configuration round trips and parameter validation."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from orient.dynamics.base import canonical_json
from orient.dynamics.spde import SPDEProcess, instance_defaults

D64 = torch.float64


def make(instance="anisotropic", T=20, hw=(6, 5), **kw) -> SPDEProcess:
    """A small process with data-free prior unless told otherwise."""
    example = torch.zeros(1, 1, *hw)
    kw.setdefault("prior", "noise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return SPDEProcess.create(steps=T, schedule=None, example=example, instance=instance, **kw)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_image(shape, seed=0, dtype=D64) -> torch.Tensor:
    return torch.rand(shape, generator=gen(seed), dtype=dtype) * 2 - 1


def neumann_laplacian(u: torch.Tensor) -> torch.Tensor:
    """Reference 5-point Laplacian with replicated ghost pixels (zero normal derivative)."""
    p = F.pad(u, (1, 1, 1, 1), mode="replicate")
    return p[..., 2:, 1:-1] + p[..., :-2, 1:-1] + p[..., 1:-1, 2:] + p[..., 1:-1, :-2] - 4 * u


def dense_sigma(p: SPDEProcess, x: torch.Tensor, t: int) -> torch.Tensor:
    """Sigma(x) = D Q D as a dense (N, N) matrix for one example x of shape (1, C, H, W)."""
    d = p.noise_scale(x, t)[0].flatten(-2)  # (C, HW)
    q = p.spatial_covariance().to(x.dtype)
    return torch.block_diag(*[dc[:, None] * q * dc[None, :] for dc in d])


# -- drift ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 1, 1, 6), (1, 2, 4, 1), (1, 1, 1, 1)])
def test_isotropic_drift_is_alpha1_times_neumann_laplacian(shape):
    p = make("heat", T=30, hw=shape[-2:])
    u = rand_image(shape)
    for t in (1, 17, 30):
        expected = float(p.alpha1[t - 1]) * neumann_laplacian(u)
        torch.testing.assert_close(p.drift(u, t), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("instance", ["anisotropic", "heat"])
def test_flux_form_conserves_the_image_mean(instance):
    p = make(instance, T=40, hw=(8, 9), alpha2=(1e-12, 1e-12))
    u = rand_image((3, 2, 8, 9))
    drift_sum = p.drift(u, 5).sum((-2, -1))
    assert drift_sum.abs().max() < 1e-10
    x = u
    for t in range(1, p.T + 1):
        x = p.step(x, t, gen(t))
    assert (x.mean((-2, -1)) - u.mean((-2, -1))).abs().max() < 1e-9
    assert (x - u).abs().max() > 1e-3  # the chain did move


@pytest.mark.parametrize("lambda2", [None, 0.3])
def test_stencils_respect_the_symmetries_of_the_grid(lambda2):
    """Flipping or transposing the image flips or transposes the drift, noise scale and divergence."""
    p = make("anisotropic", T=10, hw=(6, 6), lambda1=0.2, lambda2=lambda2)
    u = rand_image((2, 2, 6, 6), seed=8)
    for fn in (p.drift, p.noise_scale, p.sigma_divergence):
        for op in (lambda v: v.flip(-1), lambda v: v.flip(-2), lambda v: v.transpose(-1, -2)):
            torch.testing.assert_close(fn(op(u), 4), op(fn(u, 4)))


def test_anisotropic_drift_smooths_less_across_a_strong_edge():
    """Zero-noise chains from a step edge with faint texture: Perona-Malik keeps the edge, the heat
    equation blurs it; both smooth the faint texture in the flat halves about equally."""
    H = W = 16
    edge = torch.where(torch.arange(W) < W // 2, -0.5, 0.5).to(D64).expand(1, 1, H, W)
    u0 = edge + 0.005 * rand_image((1, 1, H, W), seed=3)
    common = dict(T=50, hw=(H, W), horizon=1.0, alpha1=(5.0, 5.0), alpha2=(1e-12, 1e-12))
    aniso = make("anisotropic", lambda1=0.025, lambda1_k=None, **common)
    heat = make("heat", **common)

    def run(p):
        x = u0
        for t in range(1, p.T + 1):
            x = p.transition_mean(x, t)
        contrast = (x[..., W // 2] - x[..., W // 2 - 1]).mean().item()
        texture = x[..., 2 : W // 2 - 3].std(-2).mean().item()  # left half, away from the edge
        return contrast, texture

    (c_a, tex_a), (c_h, tex_h) = run(aniso), run(heat)
    tex0 = u0[..., 2 : W // 2 - 3].std(-2).mean().item()
    assert c_a > 0.8 and c_h < 0.2, (c_a, c_h)  # started at 1.0 (measured 0.89, 0.13)
    assert tex_a < 0.5 * tex0 and tex_h < 0.5 * tex0
    assert 0.5 < tex_a / tex_h < 2.0


# -- taming -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(1e-6, 1e8), seed=st.integers(0, 2**16))
def test_tamed_increment_norm_is_below_one(scale, seed):
    p = make("heat", T=10, hw=(5, 4))
    u = scale * rand_image((3, 2, 5, 4), seed=seed)
    inc = p.tamed_increment(u, 10)
    assert bool(torch.all(inc.flatten(1).norm(dim=1) < 1))


def test_tamed_increment_equals_h_b_for_small_drift():
    p = make("anisotropic", T=100, hw=(6, 6))
    u = 1e-7 * rand_image((2, 1, 6, 6))
    hb = p.h * p.drift(u, 3)
    rel = (p.h * p.drift(u, 3).flatten(1).norm(dim=1)).max().item()  # h |b|, the taming factor
    assert rel < 1e-6
    torch.testing.assert_close(p.tamed_increment(u, 3), hb, rtol=2 * rel, atol=0)


# -- exact transition scores ------------------------------------------------------------------

CASES = {
    "white": dict(instance="heat"),
    "aniso-noise": dict(instance="anisotropic", lambda2=0.3, lambda2_k=None),
    "correlated": dict(instance="anisotropic", corr_length=1.5),
    "aniso-correlated": dict(instance="heat", lambda2=0.2, corr_length=2.0),
}


@pytest.mark.parametrize("case", CASES)
def test_transition_score_is_autograd_of_log_prob(case):
    p = make(T=30, hw=(5, 6), alpha2=(0.1, 0.8), **CASES[case])
    x_prev = rand_image((2, 3, 5, 6))
    x_t = p.transition_sample(x_prev, 12, 3, gen(1)).requires_grad_(True)
    lp = p.transition_log_prob(x_prev, x_t, 12)
    assert lp.shape == (3, 2)
    (grad,) = torch.autograd.grad(lp.sum(), x_t)
    torch.testing.assert_close(p.transition_score(x_prev, x_t.detach(), 12), grad)


@pytest.mark.parametrize("case", CASES)
def test_log_prob_and_draws_match_the_dense_gaussian(case):
    """The covariance we sample from is the one the score and log-density invert."""
    p = make(T=30, hw=(3, 4), alpha2=(0.1, 0.8), **CASES[case])
    x_prev = rand_image((1, 2, 3, 4), seed=5)
    t = 20
    cov = p.h * dense_sigma(p, x_prev, t)
    mean = p.transition_mean(x_prev, t).flatten()
    mvn = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    m = 20000
    draws = p.transition_sample(x_prev, t, m, gen(2))
    lp = p.transition_log_prob(x_prev, draws[:50], t)[:, 0]
    torch.testing.assert_close(lp, mvn.log_prob(draws[:50].flatten(1)))
    flat = draws.flatten(1)
    emp = torch.cov(flat.T)
    sd = cov.diagonal().sqrt()
    # entries of a sample covariance have sd <= sqrt(2 / m) in units of sd_i sd_j
    assert ((emp - cov).abs() / (sd[:, None] * sd[None])).max() < 5 * math.sqrt(2 / m)
    assert ((flat.mean(0) - mean).abs() / sd).max() < 5 / math.sqrt(m)


@pytest.mark.parametrize("case", CASES)
def test_score_has_zero_monte_carlo_mean(case):
    p = make(T=30, hw=(3, 3), alpha2=(0.1, 0.8), **CASES[case])
    x_prev = rand_image((2, 1, 3, 3), seed=7)
    m = 4000
    s = p.sample_transitions(x_prev, 25, m, gen(3)).score
    tstat = s.mean(0) / (s.std(0) / math.sqrt(m))  # ~N(0, 1) per component
    assert tstat.abs().max() < 4.5, tstat.abs().max()


# -- reverse step -----------------------------------------------------------------------------


@pytest.mark.parametrize("corr_length", [0.0, 1.3])
def test_sigma_divergence_matches_dense_jacobian(corr_length):
    p = make("anisotropic", T=30, hw=(3, 4), lambda2=0.4, corr_length=corr_length)
    x = rand_image((1, 2, 3, 4), seed=11)
    t = 9
    jac = torch.autograd.functional.jacobian(lambda v: dense_sigma(p, v, t), x)
    n = x.numel()
    expected = torch.einsum("ijj->i", jac.reshape(n, n, n)).reshape(x.shape)
    got = p.sigma_divergence(x, t)
    assert got.abs().max() > 1e-3  # nonzero for this configuration
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_divergence_vanishes_for_isotropic_noise():
    p = make("anisotropic", T=10, hw=(4, 4), corr_length=1.0)
    x = rand_image((1, 1, 4, 4))
    assert torch.equal(p.sigma_divergence(x, 3), torch.zeros_like(x))


def test_reverse_step_uses_the_forward_entry_of_transition_t():
    """VE: the ODE weight is DDIM's 1 / (1 + sqrt(V_{t-1} / V_t)) (V_t the accumulated noise
    variance, the same in every mode), the SDE adds the transition's noise except at t = 1."""
    p = make("ve", T=25, hw=(4, 4))
    x = rand_image((2, 1, 4, 4))
    s = rand_image((2, 1, 4, 4), seed=1)
    acc = torch.cumsum(p.alpha2**2 * p.h, 0)
    for t in (1, 13, 25):
        var = float(p.alpha2[t - 1]) ** 2 * p.h
        assert var == float(p.transition_variance(t))
        before = float(acc[t - 2]) if t > 1 else 0.0
        k = 1 / (1 + math.sqrt(before / float(acc[t - 1])))
        torch.testing.assert_close(p.reverse_step(x, t, s, method="ode"), x + k * var * s)
        z = torch.randn(x.shape, generator=gen(t), dtype=D64)
        expected = x + var * s + (math.sqrt(var) * z if t > 1 else 0)
        torch.testing.assert_close(p.reverse_step(x, t, s, gen(t)), expected)


@pytest.mark.parametrize("scheme", ["semi-implicit", "tamed"])
def test_reverse_step_formula_with_drift_and_state_dependent_noise(scheme):
    p = make("anisotropic", T=30, hw=(4, 5), lambda2=0.3, corr_length=1.0, scheme=scheme)
    x = rand_image((2, 1, 4, 5))
    s = rand_image((2, 1, 4, 5), seed=1)
    t = torch.tensor([4, 30])
    d = p.noise_scale(x, t)
    sig_s = torch.einsum("bij,bj->bi", dense_sigma_batch(p, x, t), s.flatten(1)).reshape(x.shape)
    corr = p.h * (p.sigma_divergence(x, t) + sig_s)
    z = torch.randn(x.shape, generator=gen(4), dtype=D64)
    noise = math.sqrt(p.h) * d * p._corr(z, "sqrt")  # covariance h D Q D, as forward
    if scheme == "tamed":
        base = x - p.tamed_increment(x, t)
        ode, mean = base + 0.5 * corr, base + corr
    else:  # (I - h A_y) y, the ODE's correction weighted per DCT mode
        k = p.ode_weight().to(D64)[t - 1][:, None]
        ode = p.undo_mean(x + p._dct(k * p._dct(corr), inverse=True), t)
        mean = p.undo_mean(x + corr, t)
    torch.testing.assert_close(p.reverse_step(x, t, s, method="ode"), ode)
    torch.testing.assert_close(p.reverse_step(x, t, s, gen(4)), mean + noise)


def dense_sigma_batch(p, x, t):
    return torch.stack([dense_sigma(p, x[i : i + 1], int(t[i])) for i in range(x.shape[0])])


def test_t_tensor_matches_int():
    p = make("anisotropic", T=12, hw=(4, 4), lambda2=0.5, corr_length=1.0)
    x = rand_image((3, 1, 4, 4))
    a = p.transition_sample(x, 7, 2, gen(5))
    b = p.transition_sample(x, torch.full((3,), 7), 2, gen(5))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        p.transition_score(x, a, 7), p.transition_score(x, a, torch.full((3,), 7))
    )
    with pytest.raises(ValueError):
        p.transition_sample(x, 13, 1, gen())


# -- spatial correlation ------------------------------------------------------------------------


def test_correlation_matrix_is_the_exponential_kernel_away_from_edges():
    H = W = 14
    p = make("heat", T=5, hw=(H, W), corr_length=1.0)
    q = p.spatial_covariance()
    torch.testing.assert_close(q, q.T)
    torch.testing.assert_close(q.diagonal(), torch.ones(H * W, dtype=D64))
    assert torch.linalg.eigvalsh(q).min() > 0
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([ii.flatten(), jj.flatten()], 1).to(D64)
    dist = torch.cdist(pos, pos)
    inner = ((pos >= 5) & (pos <= H - 6)).all(1)
    err = (q - torch.exp(-dist))[inner][:, inner].abs().max()
    assert err < 0.01, err


# -- prior ------------------------------------------------------------------------------------


def test_fitted_prior_matches_simulated_terminal_statistics():
    x0 = rand_image((16, 2, 6, 5), seed=2).float()
    p = SPDEProcess.create(
        steps=40, schedule="alpha1=0.5:4,alpha2=0.01:1", example=x0, instance="anisotropic"
    )
    assert set(p.buffers()) == {"prior_mean", "prior_var", "base_mean", "base_var"}
    assert p.prior_mean.shape == (2, 6, 5)
    assert bool(torch.all(p.prior_var >= p.noise_prior_var))
    xs = p.sample_prior((4000, 2, 6, 5), gen())
    assert xs.dtype == torch.float32 and xs.shape == (4000, 2, 6, 5)
    coef = p._dct(xs.double())
    sd = p.prior_var.sqrt()
    assert ((coef.mean(0) - p.prior_mean).abs() / sd).max() < 5 / math.sqrt(4000)
    assert ((coef.var(0) / p.prior_var) - 1).abs().max() < 0.15
    with pytest.raises(ValueError):
        p.sample_prior((2, 3, 6, 5), gen())


def test_noise_prior_of_ve_is_the_accumulated_variance():
    p = make("ve", T=200, hw=(4, 4))
    total = float(p.noise_var.sum())
    torch.testing.assert_close(p.noise_prior_var, torch.full((4, 4), total, dtype=D64))
    # the discrete VE chain accumulates about sigma_max^2 (the left Riemann sum is a bit smaller)
    sigma_max = 100.0 / 32 * 4
    assert 0.9 * sigma_max**2 < total < sigma_max**2


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw", [dict(), dict(lambda2=0.3, corr_length=1.2, shape="polynomial", power=2.0)]
)
def test_config_json_round_trip_gives_identical_draws(kw):
    x0 = rand_image((6, 2, 5, 7), seed=4).float()
    p = SPDEProcess.create(
        steps=30, schedule="alpha1=0.5:3,alpha2=0.01:1", example=x0, instance="anisotropic", **kw
    )
    cfg = json.loads(json.dumps(p.to_config()))
    canonical_json(cfg)  # strict JSON: no inf or nan
    q = SPDEProcess.from_config(cfg, p.buffers())
    assert q.config_hash == p.config_hash
    x = x0[:3]
    for proc_a, proc_b in [(p, q)]:
        a = proc_a.transition_sample(x, 11, 2, gen(9))
        b = proc_b.transition_sample(x, 11, 2, gen(9))
        assert torch.equal(a, b)
        assert torch.equal(proc_a.transition_score(x, a, 11), proc_b.transition_score(x, b, 11))
        s = a[0]
        assert torch.equal(
            proc_a.reverse_step(x, 11, s, gen(1)), proc_b.reverse_step(x, 11, s, gen(1))
        )
        assert torch.equal(
            proc_a.sample_prior((3, 2, 5, 7), gen(2)), proc_b.sample_prior((3, 2, 5, 7), gen(2))
        )
    with pytest.raises(ValueError):
        SPDEProcess.from_config(cfg)  # the fitted prior's buffers are part of the process
    bad = dict(cfg, process="vp")
    with pytest.raises(ValueError):
        SPDEProcess.from_config(bad, p.buffers())


def test_instances_follow_paper_c():
    example = torch.zeros(2, 3, 32, 24)
    aniso = make("anisotropic", T=2000, hw=(32, 24))
    cfg = aniso.to_config()
    assert cfg["image_size"] == 32 and cfg["horizon"] == 2.0
    assert cfg["alpha1"] == [0.5, 64.0] and cfg["alpha2"] == [0.01, 2.0]
    assert cfg["lambda1"] == 0.025 and cfg["lambda1_k"] == 0.5 and cfg["lambda2"] is None
    assert cfg["corr_length"] == 0.0
    assert math.isclose(aniso.h, 0.001)
    assert math.isclose(float(aniso.lambda1[0]), 0.025) and bool(
        torch.all(aniso.lambda1.diff() > 0)
    )
    heat = make("heat", T=2000, hw=(32, 24)).to_config()
    assert (
        heat["lambda1"] is None and heat["alpha2"] == [0.01, 0.5] and heat["alpha1"] == [0.5, 64.0]
    )
    ve = make("ve", T=100, hw=(32, 24))
    assert ve.to_config()["alpha1"] == [0.0, 0.0] and not ve.has_drift
    assert instance_defaults("ve", 32, 2.0)["alpha2"] == tuple(ve.ends2)
    # alpha geometric from the min at s = 0 (transition 1) towards the max at s = horizon
    assert math.isclose(float(aniso.alpha2[0]), 0.01)
    assert float(aniso.alpha2[-1]) < 2.0 and math.isclose(
        float(aniso.alpha2[-1]), 2.0, rel_tol=0.01
    )
    p = SPDEProcess.create(
        steps=10,
        schedule=None,
        example=example,
        instance="heat",
        prior="noise",
        alpha1=(0.1, 0.2),
        lambda1=math.inf,
        lambda2=float("inf"),
    )
    assert p.lambda1_min is None and p.lambda2_min is None


def test_unstable_step_size_warns():
    with pytest.warns(RuntimeWarning, match="stability"):
        SPDEProcess.create(steps=10, schedule=None, example=torch.zeros(1, 1, 8, 8), prior="noise")


@pytest.mark.parametrize("name", ["spde-aniso", "spde-heat", "spde-ve"])
@pytest.mark.parametrize("size", [16, 32])
def test_default_steps_respect_the_stability_limit(name, size):
    """No --steps: T is large enough that max alpha1 * h <= 1/4 (no warning); other processes 100."""
    from orient.dynamics import create_process

    x = torch.zeros(2, 1, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        p = create_process(name, steps=None, example=x, prior="noise")
    assert float(p.alpha1.max()) * p.h <= 0.25
    assert p.T >= 100 and (name == "spde-ve" or p.T == 4 * 2 * size * p.horizon)
    assert create_process("kuramoto-local", steps=None, example=x).T == 100


INVALID = [
    dict(steps=0),
    dict(instance="wave"),
    dict(horizon=0.0),
    dict(horizon=-1.0),
    dict(shape="cubic"),
    dict(shape="polynomial", power=0.0),
    dict(alpha2=(-0.1, 1.0)),
    dict(alpha2=(0.0, 1.0)),
    dict(alpha1=(-1.0, 2.0)),
    dict(alpha1=(0.0, 5.0)),  # geometric needs positive ends
    dict(alpha1=(1.0,)),
    dict(alpha2=(0.1, math.nan)),
    dict(lambda1=0.0),
    dict(lambda2=-1.0),
    dict(lambda1_k=-0.5),
    dict(corr_length=-1.0),
    dict(corr_length=math.inf),
    dict(prior="uniform"),
    dict(prior_examples=0),
    dict(foo=1),
    dict(schedule="vp-100"),
    dict(schedule="beta=0.1:0.2"),
    dict(schedule="alpha1=0.1:0.2", alpha1=(0.1, 0.2)),
    dict(example=torch.zeros(2, 8, 8)),
]


@pytest.mark.parametrize("kw", INVALID)
def test_invalid_parameters_raise(kw):
    kw = dict(kw)
    args = dict(
        steps=kw.pop("steps", 50),
        schedule=kw.pop("schedule", None),
        example=kw.pop("example", torch.zeros(1, 1, 8, 8)),
        instance=kw.pop("instance", "anisotropic"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError):
            SPDEProcess.create(**args, prior=kw.pop("prior", "noise"), **kw)


def test_reverse_step_rejects_bad_method_and_missing_generator():
    p = make("heat", T=5, hw=(4, 4))
    x = rand_image((1, 1, 4, 4))
    with pytest.raises(ValueError):
        p.reverse_step(x, 1, x, gen(), method="euler")
    with pytest.raises(ValueError):
        p.reverse_step(x, 1, x)
    q = make("heat", T=5, hw=(4, 4), corr_length=1.0)
    with pytest.raises(ValueError):
        q.transition_sample(rand_image((1, 1, 5, 4)), 1, 1, gen())


# -- properties over shapes and parameters ------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    instance=st.sampled_from(["anisotropic", "heat", "ve"]),
    lambda2=st.one_of(st.none(), st.floats(0.05, 5.0)),
    corr_length=st.sampled_from([0.0, 0.7, 2.5]),
    alpha2_hi=st.floats(0.05, 3.0),
    horizon=st.floats(0.5, 3.0),
    seed=st.integers(0, 1000),
)
def test_properties_over_shapes_and_parameters(
    b, c, h, w, instance, lambda2, corr_length, alpha2_hi, horizon, seed
):
    T = 16
    p = make(
        instance,
        T=T,
        hw=(h, w),
        lambda2=lambda2,
        corr_length=corr_length,
        horizon=horizon,
        alpha2=(0.01, alpha2_hi),
        **({} if instance == "ve" else {"alpha1": (0.5, 1.0)}),
    )
    x = rand_image((b, c, h, w), seed=seed)
    t = 1 + seed % T
    # flux form: the drift sums to zero per channel
    assert p.drift(x, t).sum((-2, -1)).abs().max() < 1e-10
    # exact score against autograd of the log-density
    xt = p.transition_sample(x, t, 2, gen(seed)).requires_grad_(True)
    (grad,) = torch.autograd.grad(p.transition_log_prob(x, xt, t).sum(), xt)
    torch.testing.assert_close(p.transition_score(x, xt.detach(), t), grad)
    # reverse steps and the prior produce finite states of the right shape in both dtypes
    for dtype in (torch.float32, D64):
        xd = x.to(dtype)
        s = p.transition_score(xd, p.step(xd, t, gen(seed)), t)
        for method in ("sde", "ode"):
            y = p.reverse_step(xd, t, s, gen(seed), method=method)
            assert y.shape == x.shape and y.dtype == dtype and bool(torch.isfinite(y).all())
    prior = p.sample_prior((b, c, h, w), gen(seed))
    assert prior.shape == (b, c, h, w) and bool(torch.isfinite(prior).all())
    # the configuration rebuilds the same process
    q = SPDEProcess.from_config(json.loads(json.dumps(p.to_config())), p.buffers())
    assert q.config_hash == p.config_hash
    assert torch.equal(p.step(x, t, gen(1)), q.step(x, t, gen(1)))


# -- the semi-implicit scheme -------------------------------------------------------------------


def fingerprint_states(size: int = 16, n: int = 3) -> torch.Tensor:
    from orient.pipeline.datasets import load_dataset

    return torch.as_tensor(load_dataset("synthetic-fingerprints", n=n, size=size, seed=0).data)


def mode_multipliers(p: SPDEProcess, t: int) -> torch.Tensor:
    """1 / (1 - h alpha1 mu_k): the semi-implicit heat step's multiplier of each DCT mode."""
    kh = torch.arange(p.height, dtype=D64)[:, None]
    kw = torch.arange(p.width, dtype=D64)[None]
    mu = -4 * (
        torch.sin(math.pi * kh / (2 * p.height)) ** 2 + torch.sin(math.pi * kw / (2 * p.width)) ** 2
    )
    return 1 / (1 - p.h * float(p.alpha1[t - 1]) * mu)


@pytest.mark.parametrize("t", [1, 40, 80])
def test_semi_implicit_heat_mean_is_the_exact_dct_solve(t):
    """Heat: m(u) = (I - h alpha1 L)^{-1} u, diagonal in the DCT-II basis; CG reaches it."""
    p = make("heat", T=80, hw=(8, 6))  # the default T of 8 px at horizon 2 is 128: steps are long
    u = rand_image((2, 1, 8, 6))
    want = p._dct(mode_multipliers(p, t) * p._dct(u), inverse=True)
    torch.testing.assert_close(p.transition_mean(u, t), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(p.undo_mean(p.transition_mean(u, t), t), u, rtol=0, atol=1e-6)


def test_semi_implicit_mode_multipliers_lie_in_the_unit_interval():
    """Every mode's multiplier is in (0, 1] (tamed Euler's highest modes sit near -1)."""
    p = make("heat", T=32, hw=(8, 8))
    t = 32
    assert float(p.alpha1[t - 1]) * p.h > 0.2  # near the explicit stability limit
    m = mode_multipliers(p, t)
    assert float(m.min()) > 0 and float(m.max()) == 1.0
    ii = torch.arange(8, dtype=D64)
    cb = ((-1.0) ** (ii[:, None] + ii[None]))[None, None]  # the highest mode
    ratio = float((p.transition_mean(cb, t) * cb).sum() / (cb * cb).sum())
    assert 0 < ratio < 0.5
    tamed = make("heat", T=32, hw=(8, 8), scheme="tamed")
    small = 1e-3 * cb  # small enough that taming leaves the explicit step as it is
    assert float((tamed.transition_mean(small, t) * small).sum() / (small * small).sum()) < -0.5


def test_anisotropic_mean_solves_the_frozen_system_at_real_states():
    p = make("anisotropic", T=128, hw=(16, 16))
    g = gen(0)
    x = p.data_to_state(fingerprint_states())
    for t in range(1, p.T + 1):
        if t in (1, 64, 128):
            y = p.transition_mean(x, t)
            gv, gw = p.conductances(x, t)
            resid = y - p.h * p.flux_divergence(gv, gw, y) - x
            assert float(resid.abs().max()) < 1e-5 * max(1.0, float(x.abs().max()))
        x = p.step(x, t, g)


def test_reverse_linear_part_undoes_the_forward_step_at_real_states():
    """Linearisation around real states of the anisotropic chain: for the highest (checkerboard)
    mode v, J_rev(m(x)) J_fwd(x) v = v up to the diffusivity being frozen at m(x) instead of x.
    The tamed scheme's Euler reversal misses by far more at the end of the chain."""
    from torch.func import jvp

    x0 = fingerprint_states(size=16)
    ii = torch.arange(16.0)
    cb = ((-1.0) ** (ii[:, None] + ii[None])).expand_as(x0).contiguous()
    worst = {}
    for scheme in ("semi-implicit", "tamed"):
        p = make("heat", T=256, hw=(16, 16), scheme=scheme)  # the default T
        g, x, errs = gen(1), p.data_to_state(x0), []
        if scheme == "semi-implicit":
            rev = p.undo_mean
        else:
            rev = lambda y, t, p=p: y - p.tamed_increment(y, t)  # noqa: E731
        for t in range(1, p.T + 1):
            if t % 32 == 0:
                _, a = jvp(lambda u, t=t, p=p: p.transition_mean(u, t), (x,), (cb,))
                _, b = jvp(lambda y, t=t, r=rev: r(y, t), (p.transition_mean(x, t),), (a,))
                errs.append(float((b - cb).flatten(1).norm(dim=1).max() / cb[0].norm()))
            x = p.step(x, t, g)
        worst[scheme] = max(errs)
    assert worst["semi-implicit"] < 1e-4 < 0.1 < worst["tamed"]
    p = make("anisotropic", T=256, hw=(16, 16))
    g, x = gen(1), p.data_to_state(x0)
    for t in range(1, p.T + 1):
        if t % 16 == 0:
            _, a = jvp(lambda u, t=t: p.transition_mean(u, t), (x,), (cb,))
            _, b = jvp(lambda y, t=t: p.undo_mean(y, t), (p.transition_mean(x, t),), (a,))
            assert float((b - cb).flatten(1).norm(dim=1).max() / cb[0].norm()) < 0.1
        x = p.step(x, t, g)


def test_cg_rows_do_not_depend_on_the_batch():
    p = make("anisotropic", T=40, hw=(6, 5))
    u = rand_image((4, 1, 6, 5), dtype=torch.float32)
    t = torch.tensor([1, 13, 40, 27])
    together = p.transition_mean(u, t)
    for i in range(4):
        alone = p.transition_mean(u[i : i + 1], int(t[i]))
        assert torch.equal(alone[0], together[i])


def test_configs_without_a_scheme_rebuild_the_tamed_chain():
    """Stores and checkpoints written before the semi-implicit scheme keep their chain."""
    p = make("anisotropic", T=20, hw=(4, 4), scheme="tamed")
    cfg = p.to_config()
    assert cfg["scheme"] == "tamed"
    del cfg["scheme"]
    q = SPDEProcess.from_config(cfg, p.buffers())
    assert q.scheme == "tamed"
    assert make("anisotropic", T=20, hw=(4, 4)).scheme == "semi-implicit"


def test_fitted_prior_warns_with_its_measured_error_when_examples_are_few():
    x = fingerprint_states(size=16, n=300)
    with pytest.warns(UserWarning, match="relative standard error"):
        make("heat", T=64, hw=(16, 16)).with_prior_kind("fitted").fit_prior(x[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make("heat", T=64, hw=(16, 16)).with_prior_kind("fitted").fit_prior(
            x
        )  # 256 of 300 examples


def test_baseline_score_is_the_exact_score_of_the_linearised_gaussian_chain():
    """Heat is linear: for Gaussian data with the fitted per-mode moments (independent DCT modes),
    propagated exactly through the process's own transitions, the baseline is the exact score."""
    x0 = rand_image((64, 1, 6, 5), seed=3)
    p = SPDEProcess.create(steps=30, schedule=None, example=x0, instance="heat", prior="noise")
    assert set(p.buffers()) == {"base_mean", "base_var"}
    n = 30
    eye = torch.eye(n, dtype=D64).reshape(n, 1, 6, 5)
    # the data law N(m0, C0) that the fitted moments describe, in pixel space
    basis = p._dct(eye, inverse=True).reshape(n, n)  # row k: DCT mode k as an image
    m0 = p.base_mean.flatten() @ basis
    C0 = basis.T @ torch.diag(p.base_var.flatten()) @ basis
    m, C = m0, C0
    for t in range(1, p.T + 1):
        A = p.transition_mean(eye, t).reshape(n, n).T
        m, C = A @ m, A @ C @ A.T + float(p.transition_variance(t)) * torch.eye(n, dtype=D64)
        if t in (1, 15, 30):
            x = rand_image((3, 1, 6, 5), seed=t)
            want = (-(x.flatten(1) - m) @ torch.linalg.inv(C)).reshape(x.shape)
            torch.testing.assert_close(p.baseline_score(x, t).double(), want, rtol=1e-4, atol=1e-3)
    t = torch.tensor([1, 30, 15])
    x = rand_image((3, 1, 6, 5), seed=9).float()
    rows = torch.cat([p.baseline_score(x[i : i + 1], int(t[i])) for i in range(3)])
    torch.testing.assert_close(p.baseline_score(x, t), rows)


def test_score_model_adds_the_baseline_and_old_configs_have_none():
    from torch import nn

    from orient.trainer.score_model import ScoreModel

    class Zero(nn.Module):
        def forward(self, x, tfrac):
            return torch.zeros_like(x)

    x0 = rand_image((8, 1, 6, 5), seed=4).float()
    p = SPDEProcess.create(steps=30, schedule=None, example=x0, instance="heat", prior="noise")
    model = ScoreModel(Zero(), p)
    x = rand_image((2, 1, 6, 5), seed=5).float()
    torch.testing.assert_close(model.score(x, 7), p.baseline_score(x, 7))
    cfg = p.to_config()
    del cfg["buffers"]
    assert SPDEProcess.from_config(cfg).baseline_score(x, 7) is None
