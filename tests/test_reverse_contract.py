"""Contract tests of the reverse chain: given the *exact* score, a sampler must return the data.

Every process of the registry ``orient.dynamics.PROCESSES`` is tested, so a new process joins the
suite by being registered (models: k-diffusion's and score_sde's sampler tests against analytic
scores). The exact score reaches the sampler through the real interface training produces: a
small network whose forward(x, t / T) returns sqrt(w(t)) times the exact marginal score (the
integer t recovered as round(t / T * T)), wrapped in ``ScoreModel`` and run by ``reverse_chain``
with method sde, ode and pc. Each process runs at its default T on the smallest state it accepts
(3-d vectors, else 8x8 single-channel images); a process that is not linear-Gaussian and has no
test of its own gets the one-step contract only. Single-threaded (see ``one_thread``); about 40 s
on a shared 2-core machine.

* Linear-Gaussian processes are detected from the interface alone: the transition score is affine
  in (x_{t-1}, x_t) at random float64 points. For them each transition's mean map A_t x + c_t and
  covariance Sigma_t are read off ``transition_score`` at basis vectors
  (s(x_prev, x_t) = -Sigma^{-1}(x_t - A x_prev - c)), a Gaussian data law N(m_0, C_0) is propagated
  exactly through those transitions (float64), and the reverse chain (float32 states, the exact
  score -C_t^{-1}(x - m_t) computed in float64 and cast) is started from the exact N(m_T, C_T).
  Checks: sample mean and covariance against the statistical floor; the highest-frequency power at
  every step against the exact marginal's; a point-mass data law comes back to its point.
* kuramoto-ref (pixels independent): the exact per-pixel marginal density by quadrature on a
  periodic grid (Chapman-Kolmogorov with the process's own ``transition_log_prob``); the score is
  the posterior average of ``transition_score``. Checks: circular moments against the floor.
* Every process (the nonlinear ones have no closed-form marginal): a one-step contract with the
  exact one-step marginal score of a finite data set (see ``test_one_step_contract``).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from functools import cache

import pytest
import torch
from torch import nn

from orient.dynamics import PROCESSES, create_process
from orient.sampler import reverse_chain  # the one place the sampler is imported from
from orient.trainer.score_model import ScoreModel

F64 = torch.float64
N_SAMPLES = 2000  # reverse-chain samples per method (and exact draws per floor set)
FLOOR_SETS = 8  # the floor is the RMS error of this many independent sets of exact draws
FLOOR_FACTOR = 3.0  # sampler error must be <= FLOOR_FACTOR x the statistical floor
HF_FACTOR = 3.0  # highest-frequency power within this factor of the exact marginal's, every step
N_POINT = 200  # chains of the point-mass test (a distance, not a statistic)
POINT_TOL = 1e-3  # per-element RMS error of a point-mass data law after the SDE / PC chain
PC_CORRECTORS, PC_SIZE = 1, 0.5  # the sampler's defaults (orient sample)
IMAGE, VECTOR = (1, 8, 8), (3,)
SHAPES = {"vector3": VECTOR, "image8": IMAGE}  # in order of preference
METHODS = ("sde", "ode", "pc")


# -- data laws ------------------------------------------------------------------------------------
def gaussian_law(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(m_0, C_0) flattened, float64: a smooth image mean with a squared-exponential covariance
    (length 2 px, sd 0.3) plus a 0.05 nugget, or a fixed correlated 3x3 for vectors."""
    if kind == "image8":
        h, w = IMAGE[1:]
        i, j = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
        m = 0.4 * torch.sin(2 * math.pi * i / h) * torch.cos(math.pi * j / w) + 0.1
        p = torch.stack([i.flatten(), j.flatten()], 1)
        d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
        C = 0.3**2 * torch.exp(-d2 / (2 * 2.0**2)) + 0.05**2 * torch.eye(h * w, dtype=F64)
        return m.flatten(), C
    L = torch.tensor([[0.5, 0, 0], [0.3, 0.2, 0], [-0.1, 0.15, 0.1]], dtype=F64)
    return torch.tensor([0.5, -0.3, 0.2], dtype=F64), L @ L.T


def gaussian_draws(m: torch.Tensor, C: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n draws of N(m, C) in float64, shape (n, d) (C may be singular)."""
    g = torch.Generator().manual_seed(seed)
    evals, evecs = torch.linalg.eigh(C)
    root = evecs * evals.clamp_min(0).sqrt()
    return m + torch.randn((n, m.numel()), generator=g, dtype=F64) @ root.T


@cache
def build(name: str, kind: str):
    """The process ``name`` with its default T for data of ``kind``, or None if it refuses them."""
    m, C = gaussian_law(kind)
    example = gaussian_draws(m, C, 256, seed=1).float().reshape(-1, *SHAPES[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SPDE's stability warning is tested here
        return create_process(name, steps=None, example=example)


def accepts(name: str, kind: str) -> bool:
    try:
        build(name, kind)
    except ValueError:  # the process does not take this state shape
        return False
    except Exception:  # any other error: let the test itself report it
        return True
    return True


def is_affine(process, shape: tuple[int, ...]) -> bool:
    """True when transition_score is affine in (x_prev, x_t) at random float64 points, t = 1, T/2, T."""
    g = torch.Generator().manual_seed(7)
    a, b = (torch.randn((2, 4, *shape), generator=g, dtype=F64) for _ in range(2))
    for t in sorted({1, max(1, process.T // 2), process.T}):
        sa, sb = process.transition_score(a[0], a[1], t), process.transition_score(b[0], b[1], t)
        for lam in (0.3, 2.5):
            x = lam * a + (1 - lam) * b
            got = process.transition_score(x[0], x[1], t)
            want = lam * sa + (1 - lam) * sb
            if float((got - want).abs().max()) > 1e-6 * float(want.abs().max()):
                return False  # 1e-6: a linear solve inside the mean map may be iterative
    return True


@cache
def classify(name: str, kind: str) -> bool:
    try:
        return is_affine(build(name, kind), SHAPES[kind])
    except Exception:
        return False


@contextmanager
def one_thread():
    """Run single-threaded: on a shared 2-core machine two torch threads spin against each other
    (measured here: 10-40x slower); the previous setting is restored."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


with one_thread():  # each process on the smallest state it accepts (vectors, else 8x8 images)
    CASES = [(n, next((k for k in SHAPES if accepts(n, k)), "image8")) for n in PROCESSES]
    GAUSSIAN_CASES = [c for c in CASES if classify(*c)]


def case_id(c: tuple[str, str]) -> str:
    return f"{c[0]}-{c[1]}"


# -- exact Gaussian marginals ---------------------------------------------------------------------
def gaussian_transition(process, shape: tuple[int, ...], t: int):
    """(A, c, Sigma) of transition t, read off transition_score at basis vectors (float64)."""
    n = math.prod(shape)
    E = torch.eye(n, dtype=F64).reshape(n, *shape)
    Z = torch.zeros((n + 1, *shape), dtype=F64)
    x_prev = torch.cat([Z, E])
    x_t = torch.cat([Z[:1], E, Z[:n]])
    s = process.transition_score(x_prev, x_t, t).reshape(2 * n + 1, n).to(F64)
    s0 = s[0]
    P = -(s[1 : n + 1] - s0).T  # column i: s(0, e_i) - s(0, 0) = -P e_i
    PA = (s[n + 1 :] - s0).T  # column i: s(e_i, 0) - s(0, 0) = P A e_i
    P = 0.5 * (P + P.T)
    Sigma = torch.linalg.inv(P)
    return Sigma @ PA, Sigma @ s0, 0.5 * (Sigma + Sigma.T)


@cache
def exact_marginals(name: str, kind: str, point: bool = False):
    """[(m_t, C_t)] for t = 0..T from the process's own transitions; ``point``: C_0 = 0."""
    process, shape = build(name, kind), SHAPES[kind]
    m, C = gaussian_law(kind)
    if point:
        C = torch.zeros_like(C)
    out = [(m, C, None)]
    for t in range(1, process.T + 1):
        A, c, Sigma = gaussian_transition(process, shape, t)
        m, C = A @ m + c, A @ C @ A.T + Sigma
        C = 0.5 * (C + C.T)
        out.append((m, C, torch.cholesky_inverse(torch.linalg.cholesky(C))))
    return out


class ExactGaussianScore(nn.Module):
    """The "network" a perfect training run would give: sqrt(w(t)) x (-C_t^{-1}(x - m_t) minus
    the process's baseline score, which the score model adds back)."""

    def __init__(self, process, marginals, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.process = process
        self.T, self.shape = process.T, shape
        self.means = [m for m, _, _ in marginals]
        self.precisions = [P for _, _, P in marginals]
        steps = torch.arange(1, process.T + 1)
        self.sqrt_w = process.loss_weight(steps).to(F64).sqrt()

    def forward(self, x: torch.Tensor, tfrac: torch.Tensor) -> torch.Tensor:
        ts = torch.round(tfrac.to(F64) * self.T).long()
        t = int(ts[0])
        assert bool((ts == t).all()) and 1 <= t <= self.T
        z = x.to(F64).flatten(1) - self.means[t]
        s = -(z @ self.precisions[t]).reshape(x.shape)
        base = self.process.baseline_score(x.to(F64), t)
        if base is not None:
            s = s - base
        return (s * self.sqrt_w[t - 1]).to(x.dtype)


def gaussian_errors(x: torch.Tensor, m: torch.Tensor, C: torch.Tensor) -> tuple[float, float]:
    """(RMS error of the sample mean, Frobenius error of the sample covariance / d)."""
    x = x.to(F64).flatten(1)
    d = x.shape[1]
    mean_err = float((x.mean(0) - m).pow(2).mean().sqrt())
    cov_err = float(torch.linalg.matrix_norm(torch.cov(x.T).reshape(d, d) - C)) / d
    return mean_err, cov_err


@cache
def gaussian_floor(kind: str, n: int) -> tuple[float, float]:
    m, C = gaussian_law(kind)
    errs = torch.tensor(
        [gaussian_errors(gaussian_draws(m, C, n, 1000 + k), m, C) for k in range(FLOOR_SETS)]
    )
    return tuple(errs.pow(2).mean(0).sqrt().tolist())


def high_frequency_direction(kind: str) -> torch.Tensor:
    """Images: the unit checkerboard; vectors: the data covariance's smallest eigenvector."""
    if kind == "image8":
        i, j = torch.meshgrid(torch.arange(IMAGE[1]), torch.arange(IMAGE[2]), indexing="ij")
        v = ((-1.0) ** (i + j)).to(F64).flatten()
        return v / v.norm()
    return torch.linalg.eigh(gaussian_law(kind)[1])[1][:, 0]


@cache
def run_gaussian(name: str, kind: str, method: str, point: bool = False):
    """(samples x_0 float32 (n, d), snapshots, steps) of reverse_chain from the exact N(m_T, C_T)."""
    process, shape = build(name, kind), SHAPES[kind]
    marg = exact_marginals(name, kind, point)
    model = ScoreModel(ExactGaussianScore(process, marg, shape), process)
    mT, CT, _ = marg[-1]
    x_T = (
        gaussian_draws(mT, CT, N_POINT if point else N_SAMPLES, seed=11).float().reshape(-1, *shape)
    )
    g = torch.Generator().manual_seed(12)
    x0, traj, steps = reverse_chain(
        model, process, x_T, g, method, PC_CORRECTORS, PC_SIZE, 0 if point else process.T + 1
    )
    return x0.flatten(1), traj, steps


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=case_id)
def test_gaussian_moments_match_data(case, method):
    """Proves: with the exact score and the exact prior, the sampler's x_0 has the data's mean and
    covariance up to FLOOR_FACTOR x the error of as many exact draws (discretisation bias of the
    reverse step included). Does not prove anything about laws that are not Gaussian."""
    name, kind = case
    x0, _, _ = run_gaussian(name, kind, method)
    assert bool(torch.isfinite(x0).all()), f"{name} {method}: non-finite samples"
    m0, C0 = gaussian_law(kind)
    mean_err, cov_err = gaussian_errors(x0, m0, C0)
    mean_floor, cov_floor = gaussian_floor(kind, N_SAMPLES)
    assert mean_err <= FLOOR_FACTOR * mean_floor and cov_err <= FLOOR_FACTOR * cov_floor, (
        f"{name} ({kind}) {method}: mean error {mean_err:.3g} (floor {mean_floor:.3g}), "
        f"covariance error {cov_err:.3g} (floor {cov_floor:.3g}); allowed {FLOOR_FACTOR}x floor"
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=case_id)
def test_gaussian_high_frequency_power_stays_exact(case, method):
    """Proves: at every step t = T..0 the states' variance along the highest-frequency direction
    (checkerboard for images, the data's least-variance eigenvector for vectors) stays within a
    factor HF_FACTOR of the exact marginal's, so the reverse chain neither amplifies nor damps the
    stiffest mode (an unstable explicit step fails here long before the end)."""
    name, kind = case
    _, traj, steps = run_gaussian(name, kind, method)
    marg = exact_marginals(name, kind)
    v = high_frequency_direction(kind)
    worst = (1.0, None)
    for x, t in zip(traj, steps, strict=True):
        m, C, _ = marg[t]
        got = float(((x.to(F64).flatten(1) - m) @ v).pow(2).mean())
        want = float(v @ C @ v)
        ratio = got / want if math.isfinite(got) else math.inf
        if abs(math.log(ratio)) > abs(math.log(worst[0])):
            worst = (ratio, t)
    ratio, t = worst
    assert 1 / HF_FACTOR <= ratio <= HF_FACTOR, (
        f"{name} ({kind}) {method}: high-frequency power / exact = {ratio:.3g} at t = {t} "
        f"(allowed {1 / HF_FACTOR:.3g}..{HF_FACTOR})"
    )


@pytest.mark.parametrize("method", ["sde", "pc"])
@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=case_id)
def test_point_mass_comes_back_to_its_point(case, method):
    """Proves: for a point-mass data law (C_0 = 0, the marginals stay Gaussian) the SDE and PC
    chains end on the point (per-element RMS error < POINT_TOL): the last reverse step inverts the
    first transition exactly and adds no noise."""
    name, kind = case
    x0, _, _ = run_gaussian(name, kind, method, point=True)
    m0 = gaussian_law(kind)[0]
    err = float((x0.to(F64) - m0).pow(2).mean().sqrt())
    assert err < POINT_TOL, f"{name} ({kind}) {method}: RMS distance to the point {err:.3g}"


@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=case_id)
def test_default_prior_is_close_to_exact_terminal_marginal(case):
    """Reports how far the process's default prior is from the exact N(m_T, C_T) (the reverse-chain
    tests above start from the exact one): relative 2-Wasserstein distance of the Gaussian fitted
    to prior draws, asserted below 0.25 (a loose bound; the number is in the message)."""
    name, kind = case
    process, shape = build(name, kind), SHAPES[kind]
    mT, CT, _ = exact_marginals(name, kind)[-1]
    g = torch.Generator().manual_seed(21)
    x = process.sample_prior((N_SAMPLES, *shape), g).to(F64).flatten(1)
    d = x.shape[1]
    m, C = x.mean(0), torch.cov(x.T).reshape(d, d)
    w2 = float(((m - mT) ** 2).sum() + gaussian_bures2(C, CT)) ** 0.5
    rel = w2 / float(torch.trace(CT)) ** 0.5
    assert rel < 0.25, f"{name} ({kind}): W2(prior, exact terminal) / sqrt(tr C_T) = {rel:.3g}"


def gaussian_bures2(A: torch.Tensor, B: torch.Tensor) -> float:
    """tr A + tr B - 2 tr (A^1/2 B A^1/2)^1/2."""

    def sqrtm(M):
        e, V = torch.linalg.eigh(0.5 * (M + M.T))
        return (V * e.clamp_min(0).sqrt()) @ V.T

    rA = sqrtm(A)
    return float(torch.trace(A) + torch.trace(B) - 2 * torch.trace(sqrtm(rA @ B @ rA)))


# -- kuramoto-ref: exact per-pixel marginals by quadrature -----------------------------------------
GRID = 512  # periodic grid on [-pi, pi); its spacing 0.012 is about the smallest transition sd 0.01
REF = "kuramoto-ref"


def circular_law_log_density(theta: torch.Tensor) -> torch.Tensor:
    """Unnormalised log density of the per-pixel data law (state space): 0.6 vM(-1.2, 8) + 0.4 vM(1.3, 3)."""
    a = math.log(0.6) + 8 * torch.cos(theta + 1.2) - 8
    b = math.log(0.4) + 3 * torch.cos(theta - 1.3) - 3 + math.log(8 / 3) / 2
    return torch.logaddexp(a, b)


def wrap(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


@cache
def ref_marginals(kind: str):
    """(grid, [p_t on the grid], [score of p_t on the grid]) for t = 0..T, float64.

    p_t(theta_i) = sum_j p(theta_i | theta'_j) p_{t-1}(theta'_j) dtheta with the process's own
    transition_log_prob, and the score is the posterior average of transition_score (paper A
    eq. 9's identity), both per pixel on one-pixel states: kuramoto-ref's pixels are
    independent and identical.
    """
    process, shape = build(REF, kind), SHAPES[kind]
    grid = -math.pi + 2 * math.pi * torch.arange(GRID, dtype=F64) / GRID
    dx = 2 * math.pi / GRID
    logp = circular_law_log_density(grid)
    logp = logp - torch.logsumexp(logp, 0) - math.log(dx)
    x_prev = grid.reshape(GRID, *([1] * len(shape)))  # one-pixel states (the chain is per pixel)
    x_t = x_prev[:, None]  # (GRID_t, 1, 1..) against (GRID_prev, 1..)
    dens, scores = [logp.exp()], [None]
    for t in range(1, process.T + 1):
        logk = process.transition_log_prob(x_prev, x_t, t)  # (GRID_t, GRID_prev)
        sk = process.transition_score(x_prev, x_t, t).flatten(2)[..., 0]
        joint = logk + logp[None]
        post = torch.softmax(joint, dim=1)
        scores.append((post * sk).sum(1))
        logp = torch.logsumexp(joint, dim=1) + math.log(dx)
        logp = logp - torch.logsumexp(logp, 0) - math.log(dx)  # quadrature round-off only
        dens.append(logp.exp())
    return grid, dens, scores


def grid_draws(grid: torch.Tensor, dens: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n draws from the piecewise-constant density ``dens`` on the periodic ``grid``."""
    g = torch.Generator().manual_seed(seed)
    cdf = torch.cumsum(dens, 0)
    cdf = cdf / cdf[-1]
    idx = torch.searchsorted(cdf, torch.rand(n, generator=g, dtype=F64)).clamp_max(GRID - 1)
    dx = 2 * math.pi / GRID
    return wrap(grid[idx] + (torch.rand(n, generator=g, dtype=F64) - 0.5) * dx)


class ExactPeriodicScore(nn.Module):
    """sqrt(w(t)) x the per-pixel marginal score, periodic linear interpolation on the grid."""

    def __init__(self, process, grid: torch.Tensor, scores: list) -> None:
        super().__init__()
        self.process = process
        self.T, self.grid, self.scores = process.T, grid, scores
        self.sqrt_w = process.loss_weight(torch.arange(1, process.T + 1)).to(F64).sqrt()

    def forward(self, x: torch.Tensor, tfrac: torch.Tensor) -> torch.Tensor:
        ts = torch.round(tfrac.to(F64) * self.T).long()
        t = int(ts[0])
        assert bool((ts == t).all()) and 1 <= t <= self.T
        u = (wrap(x.to(F64)) + math.pi) * (GRID / (2 * math.pi))
        i0 = torch.floor(u).long()
        f = u - i0
        s = self.scores[t]
        out = (1 - f) * s[i0 % GRID] + f * s[(i0 + 1) % GRID]
        assert self.process.baseline_score(x, t) is None  # Kuramoto has no baseline
        return (out * self.sqrt_w[t - 1]).to(x.dtype)


def circular_moments(theta: torch.Tensor) -> torch.Tensor:
    """(E cos, E sin, E cos 2, E sin 2) over all elements."""
    th = theta.to(F64).flatten()
    return torch.stack([f(k * th).mean() for k in (1, 2) for f in (torch.cos, torch.sin)])


@pytest.mark.parametrize("method", METHODS)
def test_kuramoto_ref_recovers_circular_moments(method):
    """Proves: with the exact per-pixel score (quadrature) and x_T from the exact p_T, the sampler's
    phases have the data law's first two circular moments within FLOOR_FACTOR x the error of as
    many exact draws. Does not test pixel coupling (kuramoto-ref has none)."""
    kind = dict(CASES)[REF]
    process, shape = build(REF, kind), SHAPES[kind]
    grid, dens, scores = ref_marginals(kind)
    n = N_SAMPLES * math.prod(shape)
    x_T = grid_draws(grid, dens[-1], n, seed=31).float().reshape(N_SAMPLES, *shape)
    model = ScoreModel(ExactPeriodicScore(process, grid, scores), process)
    g = torch.Generator().manual_seed(32)
    x0, _, _ = reverse_chain(model, process, x_T, g, method, PC_CORRECTORS, PC_SIZE, 0)
    want = (dens[0][:, None] * torch.stack([torch.cos(grid), torch.sin(grid)], 1)).sum(0)
    want2 = (dens[0][:, None] * torch.stack([torch.cos(2 * grid), torch.sin(2 * grid)], 1)).sum(0)
    want = torch.cat([want, want2]) * (2 * math.pi / GRID)
    err = float((circular_moments(x0) - want).norm())
    floor = float(
        torch.tensor(
            [
                (circular_moments(grid_draws(grid, dens[0], n, 2000 + k)) - want).norm()
                for k in range(FLOOR_SETS)
            ]
        )
        .pow(2)
        .mean()
        .sqrt()
    )
    assert err <= FLOOR_FACTOR * floor, (
        f"{REF} {method}: circular-moment error {err:.3g}, floor {floor:.3g} "
        f"(allowed {FLOOR_FACTOR}x)"
    )


# -- every process: the one-step contract with the exact one-step marginal score ------------------
ONE_STEP_K, ONE_STEP_B, ONE_STEP_M = 8, 16, 128  # data states, x_t draws, SDE draws per x_t
RHO = 0.25  # reverse SDE mean within RHO x the posterior spread of the posterior mean
RHO_POINT = 0.02  # point mass at t = 1: back to the point within RHO_POINT x the distance moved


def data_states(process, kind: str, k: int, seed: int) -> torch.Tensor:
    m, C = gaussian_law(kind)
    x = gaussian_draws(m, C, k, seed).float().reshape(k, *SHAPES[kind])
    return process.data_to_state(x).to(F64)


def mixture_score(process, X: torch.Tensor, x_t: torch.Tensor, t: int):
    """Exact score of the one-step marginal (1/K) sum_k p(x_t | X_k) and the posterior weights:
    grad log sum_k p(x_t | X_k) = sum_k softmax_k(log p(x_t | X_k)) grad log p(x_t | X_k)."""
    B, K = x_t.shape[0], X.shape[0]
    xe = x_t[:, None].expand(B, K, *x_t.shape[1:])
    w = torch.softmax(process.transition_log_prob(X, xe, t), dim=1)  # (B, K)
    sc = process.transition_score(X, xe, t)  # (B, K, *S)
    return (w.reshape(B, K, *([1] * (x_t.ndim - 1))) * sc).sum(1), w


def per_example_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_one_step_contract(case):
    """The one-step contract, for every process (the only exact check for the nonlinear ones).

    Take K data states x_{t-1} (K = 1: a point mass), draw x_t by the process's own forward
    transition, and compute the exact score of the one-step marginal (1/K) sum_k p(x_t | x^(k))
    from transition_log_prob and transition_score (log-sum-exp weights). At t = 1, T/2, T:

    * SDE: the mean of the reverse SDE step (over ONE_STEP_M draws, their Monte-Carlo variance
      subtracted from the squared error) lands on the posterior mean E[x_{t-1} | x_t] within
      RHO x the posterior RMS distance sqrt(E[|x_{t-1} - x_t|^2 | x_t]).
      For a Gaussian transition with mean map x + f(x), Tweedie's identity makes
      x_t + Sigma s = E[x + f(x) | x_t] exact, so the step's error is E[f(x_{t-1}) | x_t] - f(x_t):
      first order in the drift's Lipschitz constant (Kuramoto: K + K_ref <= 0.1) times the
      distance. Checked over all state dims and along the stiffest direction alone (checkerboard,
      least-variance eigenvector), where an explicit reverse of a stiff drift overshoots.
    * Point mass at t = 1, one draw (no averaging): the SDE step returns x_t to the point within
      RHO_POINT x |x_1 - x_0|: the last step adds no noise and the score enters with the
      transition's own variance (schedule entry t - 1).
    * ODE: the score moves the probability-flow step the same way as the SDE step, by at most as
      much: with the same noise, ODE(s) - ODE(0) has a positive inner product with SDE(s) - SDE(0)
      and no larger norm (Euler's weight 1/2, a DDIM weight in (1/2, 1]).

    What it does not prove: anything over more than one step (stability and the accumulated
    discretisation error are the Gaussian tests' job), nor that the ODE transports the marginal.
    """
    name, kind = case
    process = build(name, kind)
    shape = SHAPES[kind]
    g = torch.Generator().manual_seed(41)
    proj = process.project
    v = high_frequency_direction(kind)
    report = []
    for K in (ONE_STEP_K, 1):
        X = data_states(process, kind, K, seed=42 + K)
        for t in sorted({1, max(1, process.T // 2), process.T}):
            if K == 1 and t != 1:
                continue
            x_prev = X[torch.randint(K, (ONE_STEP_B,), generator=g)]
            x_t = process.transition_sample(x_prev, t, 1, g)[0]
            score, w = mixture_score(process, X, x_t, t)
            diff = proj(X[None] - x_t[:, None])  # (B, K, *S): x^(k) - x_t, wrapped if periodic
            wv = w.reshape(*w.shape, *([1] * len(shape)))
            post = (wv * diff).sum(1)
            spread = (w * diff.flatten(2).pow(2).sum(-1)).sum(1).sqrt()
            M = ONE_STEP_M if K > 1 else 1
            reps = (M, *([1] * len(shape)))
            x_rep = x_t.repeat(reps)
            out = process.reverse_step(x_rep, t, score.repeat(reps), g, method="sde")
            draws = proj(out - x_rep).reshape(M, ONE_STEP_B, -1)
            step = draws.mean(0)
            # squared error of the M-draw mean minus its Monte-Carlo part (unbiased): the bias
            noise = draws.var(0).sum(-1) / M if M > 1 else torch.zeros(ONE_STEP_B, dtype=F64)
            err2 = (step - post.flatten(1)).pow(2).sum(-1) - noise
            ratio = float(err2.mean().clamp_min(0).sqrt() / spread.pow(2).mean().sqrt())
            # the same along the stiffest direction (checkerboard / least-variance eigenvector)
            noise_hf = (draws @ v).var(0) / M if M > 1 else torch.zeros(ONE_STEP_B, dtype=F64)
            err2_hf = ((step - post.flatten(1)) @ v).pow(2) - noise_hf
            spread_hf = (w * (diff.flatten(2) @ v).pow(2)).sum(1)
            ratio_hf = float(err2_hf.mean().clamp_min(0).sqrt() / spread_hf.mean().sqrt())
            limit = RHO if K > 1 else RHO_POINT
            for what, r in (("", ratio), (" (highest frequency)", ratio_hf)):
                if not r <= limit:
                    report.append(
                        f"SDE K={K} t={t}: |mean - E[x_(t-1)|x_t]| / spread{what} {r:.3g}"
                    )
            # ODE: the score's effect is the SDE's scaled by a weight in [0, 1] (same noise draws)
            seed = int(torch.randint(2**31, (1,), generator=g))
            zero = torch.zeros_like(score)
            sde = [
                process.reverse_step(x_t, t, s, torch.Generator().manual_seed(seed), method="sde")
                for s in (score, zero)
            ]
            ode = [process.reverse_step(x_t, t, s, method="ode") for s in (score, zero)]
            full, part = proj(sde[0] - sde[1]).flatten(1), proj(ode[0] - ode[1]).flatten(1)
            cos = float(((full * part).sum(1) / (full.norm(dim=1) * part.norm(dim=1))).min())
            gain = float((part.norm(dim=1) / full.norm(dim=1)).max())
            if not (cos > 0 and gain <= 1 + 1e-6):
                report.append(
                    f"ODE K={K} t={t}: score term vs SDE's: cos {cos:.3g}, gain {gain:.3g}"
                )
    assert not report, f"{name} ({kind}): " + "; ".join(report)


@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=case_id)
def test_recovered_transitions_reproduce_the_process(case):
    """Checks the suite's own ground truth: the (A_t, c_t, Sigma_t) read off transition_score give
    the process's transition_log_prob (up to its constant) and its transition_sample's moments."""
    name, kind = case
    process, shape = build(name, kind), SHAPES[kind]
    d = math.prod(shape)
    g = torch.Generator().manual_seed(51)
    for t in sorted({1, max(1, process.T // 2), process.T}):
        A, c, Sigma = gaussian_transition(process, shape, t)
        P = torch.linalg.inv(Sigma)
        x_prev = torch.randn((4, *shape), generator=g, dtype=F64)
        x_t = torch.randn((3, 4, *shape), generator=g, dtype=F64)
        r = x_t.flatten(2) - x_prev.flatten(1) @ A.T - c
        quad = -0.5 * torch.einsum("...i,ij,...j->...", r, P, r)
        lp = process.transition_log_prob(x_prev, x_t, t)
        const = lp - quad
        assert float((const - const.flatten()[0]).abs().max()) < 1e-6 * float(quad.abs().max())
        draws = process.transition_sample(x_prev[:1], t, 4000, g).flatten(1) - (
            A @ x_prev[0].flatten() + c
        )
        emp = torch.cov(draws.T).reshape(d, d)
        scale = float(torch.diagonal(Sigma).max())
        assert float(draws.mean(0).abs().max()) < 0.1 * scale**0.5
        assert float((emp - Sigma).abs().max()) < 0.15 * scale
