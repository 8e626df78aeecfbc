"""KuraNet (paper D; docs/kuranet.md): losses, shared phase drift, coupling normalisation, blocked
evaluation, integration with delays, data, determinism, checkpoints and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from orient.dynamics.kuramoto import KuramotoProcess, phase_drift
from orient.kuranet.checkpoint import load_checkpoint, save_checkpoint
from orient.kuranet.config import resolve_config
from orient.kuranet.coupling import (
    BlockControl,
    BlockedCoupling,
    CouplingNet,
    build_coupling,
    coupling_matrix,
    dense_coupling,
    mean_degree,
    normalise,
    symmetrise,
)
from orient.kuranet.data import case_data, image_data
from orient.kuranet.evaluate import evaluate
from orient.kuranet.losses import (
    circular_variance,
    cluster_loss,
    group_order,
    splay_angles,
    splay_max,
    splay_term,
)
from orient.kuranet.simulate import Integration, initial_phases, simulate
from orient.kuranet.train import init_net, train

from conftest import run_cli

PI = math.pi
F64 = torch.float64


def t64(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=F64)


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny: one thread avoids thread-pool stalls on a shared CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- losses -----------------------------------------------------------------------------------
def test_circular_variance_hand_values():
    assert float(circular_variance(t64(0.3, 0.3, 0.3))) == pytest.approx(0.0, abs=1e-15)
    assert float(circular_variance(t64(0.0, PI))) == pytest.approx(1.0, abs=1e-15)
    assert float(circular_variance(t64(0.0, PI / 2))) == pytest.approx(
        1 - math.sqrt(2) / 2, abs=1e-15
    )
    assert float(circular_variance(t64(0, 2 * PI / 3, 4 * PI / 3))) == pytest.approx(1.0, abs=1e-15)
    traj = torch.stack([t64(0.0, 0.0), t64(0.0, PI)])  # (T, n): one value per time
    torch.testing.assert_close(circular_variance(traj), t64(0.0, 1.0), atol=1e-15, rtol=0)


@given(st.lists(st.floats(-10, 10), min_size=1, max_size=30), st.floats(-10, 10))
def test_circular_variance_bounded_and_rotation_invariant(phases, shift):
    th = torch.tensor(phases, dtype=F64)
    v = float(circular_variance(th))
    assert -1e-12 <= v <= 1 + 1e-12
    assert float(circular_variance(th + shift)) == pytest.approx(v, abs=1e-9)


def test_cluster_loss_hand_values():
    lab = torch.tensor([0, 0, 1, 1])
    assert float(cluster_loss(t64(0, 0, PI, PI), lab)) == pytest.approx(
        0.0, abs=1e-15
    )  # in sync, antiphase
    assert float(cluster_loss(t64(0, 0, 0, 0), lab)) == pytest.approx(0.5, abs=1e-15)  # global sync
    # group 0 = {0, pi/2}: R = sqrt(2)/2 at pi/4; group 1 = {pi, pi}: R = 1 at pi
    s = (2 + 2 * math.cos(3 * PI / 4)) / 4
    want = 0.5 * ((1 - math.sqrt(2) / 2) / 2 + s)
    assert float(cluster_loss(t64(0, PI / 2, PI, PI), lab, normalise=False)) == pytest.approx(
        want, abs=1e-14
    )
    assert float(cluster_loss(t64(0, PI / 2, PI, PI), lab)) == pytest.approx(
        want, abs=1e-14
    )  # k = 2: max 1
    # k = 3, all in phase: V_l = 0, S = |3|^2 / 6 = 1.5 = S_max(3); eq. 5 gives 0.75
    lab3, zero = torch.tensor([0, 1, 2]), torch.zeros(3, dtype=F64)
    assert splay_max(3) == 1.5
    assert float(cluster_loss(zero, lab3, normalise=False)) == pytest.approx(0.75)
    assert float(cluster_loss(zero, lab3)) == pytest.approx(0.75 / 1.25)  # bound (1 + S_max) / 2
    # labels need not be 0..k-1 and groups are found in sorted order
    R, mean = group_order(t64(1.0, 2.0, 2.0), torch.tensor([7, 3, 3]))
    torch.testing.assert_close(R, t64(1.0, 1.0))
    torch.testing.assert_close(mean, t64(2.0, 1.0))


@pytest.mark.parametrize("k", range(2, 11))
def test_splay_term_vanishes_exactly_on_splay_states(k):
    perm = torch.randperm(k, generator=gen(k))
    for offset in (0.0, 0.7, -2.9):
        assert float(splay_term(splay_angles(k, offset)[perm])) == pytest.approx(0.0, abs=1e-12)
    assert float(splay_term(torch.zeros(k, dtype=F64))) == pytest.approx(splay_max(k))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.integers(0, 10_000), st.floats(1e-3, 0.5))
def test_splay_term_is_positive_off_splay(k, seed, size):
    a = splay_angles(k)
    g = gen(seed)
    bump = torch.randn(k, generator=g, dtype=F64)
    bump = bump - bump.mean()  # a common rotation would keep the state splay
    bump = size * bump / bump.abs().max()
    assert float(splay_term(a + bump)) > 0
    rand = (torch.rand(k, generator=g, dtype=F64) * 2 - 1) * PI
    s = float(splay_term(rand))
    assert 0 <= s <= splay_max(k) + 1e-12


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_minimising_splay_term_gives_equal_spacing(k):
    a = ((torch.rand(k, generator=gen(k), dtype=F64) * 2 - 1) * PI).requires_grad_()
    opt = torch.optim.LBFGS([a], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        opt.zero_grad()
        loss = splay_term(a)
        loss.backward()
        return loss

    opt.step(closure)
    assert float(splay_term(a.detach())) < 1e-12
    gaps = torch.diff(torch.sort(torch.remainder(a.detach(), 2 * PI)).values)
    gaps = torch.cat([gaps, 2 * PI - gaps.sum().reshape(1)])
    torch.testing.assert_close(gaps, torch.full((k,), 2 * PI / k, dtype=F64), atol=1e-5, rtol=0)


# -- shared phase drift (dynamics/kuramoto.py) -------------------------------------------------
def test_constant_coupling_reduces_to_global_kuramoto_drift():
    proc = KuramotoProcess(
        T=10,
        variant="global",
        schedule={"two_D": (1e-4, 0.1), "K": (0.01, 0.05), "K_ref": (0.0, 0.0)},
        state_ndim=1,
    )
    theta = (torch.rand(3, 64, generator=gen(0), dtype=F64) * 2 - 1) * PI
    for t in (1, 7):
        ref = proc.drift(theta, t)
        K = float(proc.K[t - 1])
        assert torch.equal(phase_drift(theta, K), ref)  # mean-field form: bit for bit
        dense = torch.full((64, 64), K / 64, dtype=F64)
        torch.testing.assert_close(phase_drift(theta, dense), ref, atol=1e-15, rtol=1e-12)


def test_phase_drift_equals_pairwise_sum_with_field_and_delays():
    n = 7
    g = gen(1)
    th, past = (torch.rand(2, n, generator=g, dtype=F64) * 2 - 1) * PI
    K = torch.randn(n, n, generator=g, dtype=F64)
    omega, b = torch.randn(2, n, generator=g, dtype=F64)
    want = torch.tensor(
        [
            omega[i]
            + sum(K[i, j] * math.sin(past[j] - th[i]) for j in range(n))
            + b[i] * math.sin(th[i])
            for i in range(n)
        ],
        dtype=F64,
    )
    got = phase_drift(th, K, omega, b, delayed=past)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        phase_drift(th, lambda v: K @ v, omega, b, past), want, atol=1e-12, rtol=0
    )
    torch.testing.assert_close(phase_drift(th, omega=omega), omega.expand(n))


# -- couplings ---------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.floats(0.1, 5.0), st.integers(0, 1000))
def test_normalisation_gives_the_mean_degree(n, d, seed):
    logits = 3 * torch.randn(n, n, generator=gen(seed), dtype=F64)
    k = symmetrise(normalise(logits, "positive", d))
    assert (k > 0).all()
    assert float(mean_degree(k)) == pytest.approx(d, rel=1e-12)
    torch.testing.assert_close(k, k.T)
    signed = normalise(logits, "signed", d)
    torch.testing.assert_close(signed.abs().sum(1), torch.full((n,), d, dtype=F64))


def test_coupling_net_is_the_mlp_of_the_concatenated_pair():
    torch.manual_seed(0)
    net = CouplingNet(2, hidden=16, depth=2).train()
    x = torch.randn(6, 2)
    pairs = torch.cat([x[:, None].expand(6, 6, 2), x[None, :].expand(6, 6, 2)], -1).reshape(-1, 4)
    seq = torch.nn.Sequential(
        net.first,
        net.norms[0],
        torch.nn.LeakyReLU(),
        net.inner[0],
        net.norms[1],
        torch.nn.LeakyReLU(),
        net.out,
    )
    torch.testing.assert_close(net(x), seq(pairs).reshape(6, 6))
    net.eval()  # eval: BatchNorm folded into the linear layers (no autograd) gives the same logits
    with torch.no_grad():
        folded = net.pair_logits(x[:4], x)
    torch.testing.assert_close(folded, seq(pairs).reshape(6, 6)[:4], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["positive", "signed"])
def test_blocked_couplings_equal_the_dense_matrix(mode):
    torch.manual_seed(1)
    net = CouplingNet(2, hidden=8).eval()
    for bn in net.norms:  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(50, 2)
    want = coupling_matrix(net, x, mode, 1.5).detach()
    tiny = 4 * 50 * 8 * 2 * 3  # three rows per block
    got = dense_coupling(net, x, mode, 1.5, block_bytes=tiny)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    op = build_coupling(net, x, mode, 1.5, max_dense_bytes=100, block_bytes=tiny)
    assert isinstance(op, BlockedCoupling)
    v = torch.randn(50, 2)
    torch.testing.assert_close(op(v), want @ v, atol=1e-5, rtol=1e-5)
    assert op.max_abs() == pytest.approx(float(want.abs().max()), rel=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        build_coupling(net.train(), x)


def test_block_control_operator_matches_its_matrix():
    labels = torch.tensor([2, 0, 2, 1, 0])
    ctl = BlockControl(labels, 0.3)
    k = ctl.dense()
    assert k[0, 2] == pytest.approx(0.3) and k[0, 1] == pytest.approx(-0.3)
    v = torch.randn(5, 2)
    torch.testing.assert_close(ctl(v), k @ v)


# -- integration -------------------------------------------------------------------------------
def test_uncoupled_oscillators_rotate_at_their_frequency():
    feats = case_data("I", 0, 10, 10).train
    spec = Integration(dt=0.1, burn_in=3, steps=4)
    run = simulate(
        feats, None, spec, torch.zeros(10), circular_variance, curve=True, snapshot_steps=(0, 7)
    )
    torch.testing.assert_close(run.final, 0.7 * feats.omega, atol=1e-6, rtol=0)
    torch.testing.assert_close(run.loss, run.curve[3:].mean())  # window = steps 4..7


def test_delayed_integration_matches_a_naive_loop():
    n, dt, total = 5, 0.2, 12
    g = gen(3)
    feats = case_data("III", 0, n, n).train
    feats = type(feats)(feats.x, feats.omega, None, torch.tensor([0, 1, 3, 5, 2]))
    K = torch.rand(n, n, generator=g)
    th0 = torch.rand(n, generator=g) * 6
    run = simulate(feats, K, Integration(dt, 4, total - 4), th0, circular_variance)
    hist = [th0.clone()]
    for s in range(total):
        now = hist[-1]
        past = torch.stack([hist[max(s - int(feats.delay[j]), 0)][j] for j in range(n)])
        hist.append(now + dt * phase_drift(now, K, feats.omega, None, past))
    torch.testing.assert_close(run.final, hist[-1])


def test_initial_phases():
    assert torch.equal(initial_phases(4, "zero"), torch.zeros(4))
    u = initial_phases(1000, "uniform", gen(0))
    assert u.min() >= -PI and u.max() < PI and abs(float(u.mean())) < 0.3
    assert torch.equal(u, initial_phases(1000, "uniform", gen(0)))


# -- data --------------------------------------------------------------------------------------
def test_disorder_cases_follow_the_paper():
    d = case_data("III", 5, 4000, 100)
    assert d.train.omega.min() >= 2 and d.train.omega.max() <= 4
    assert d.train.delay.max() <= 40 and abs(float(d.train.delay.double().mean()) - 15) < 0.5
    ii = case_data("II", 5, 100, 100).train
    assert ii.x.shape == (100, 2) and ii.field.abs().max() <= 1
    a, b = case_data("I", 5, 50, 50), case_data("I", 5, 50, 50)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, a.test.x)
    assert not torch.equal(a.train.x, case_data("I", 6, 50, 50).train.x)


def test_gmm_means_lie_on_the_ring():
    d = case_data("gmm5", 0, 5000, 10)
    assert d.k == 5
    for lab in range(5):
        m = d.train.x[d.train.labels == lab].mean(0)
        assert float(m.norm()) == pytest.approx(10, abs=0.2)
        assert math.atan2(m[1], m[0]) % (2 * PI) == pytest.approx(2 * PI * lab / 5, abs=0.05)
    for case in ("moons", "circles", "spirals"):
        f = case_data(case, 0, 200, 10).train
        assert set(f.labels.tolist()) == {0, 1} and f.x.shape == (200, 2)


def test_image_case_and_size_mismatch(tmp_path):
    from PIL import Image

    img = np.zeros((6, 8, 3), np.uint8)
    img[:, 4:] = 200
    mask = np.zeros((6, 8), np.uint8)
    mask[:, 4:] = 9
    Image.fromarray(img).save(tmp_path / "im.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    d = image_data(str(tmp_path / "im.png"), str(tmp_path / "mask.png"), 0, 100, 100)
    assert d.k == 2 and d.train.n == 24 and d.test.n == 24 and d.train.x.shape[1] == 5
    torch.testing.assert_close(
        d.train.labels.float(), (d.train.x[:, 0] > 0.5).float()
    )  # label follows colour
    Image.fromarray(mask[:, :7]).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="differ in size"):
        image_data(str(tmp_path / "im.png"), str(tmp_path / "small.png"), 0, 100, 100)


# -- training, checkpoints, evaluation -------------------------------------------------------
TINY = dict(
    n=10, train_size=60, test_size=60, hidden=8, epochs=2, burn_in=5, steps=5, eval_batches=2
)


def test_training_is_deterministic_and_checkpoints_round_trip(tmp_path):
    cfg = resolve_config("I", **TINY)
    a, b = train(cfg, log=lambda _: None), train(cfg, log=lambda _: None)
    assert a.history.numel() == 12 and torch.isfinite(a.history).all()
    assert torch.equal(a.history, b.history)
    for (ka, va), (_, vb) in zip(
        a.net.state_dict().items(), b.net.state_dict().items(), strict=True
    ):
        assert torch.equal(va, vb), ka
    path = save_checkpoint(tmp_path / "c.pt", a)
    back = load_checkpoint(path)
    assert back.config == cfg and not back.net.training
    x = case_data("I", 0, 20, 20).test.x
    with torch.no_grad():
        torch.testing.assert_close(back.net(x), a.net(x))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_training_lowers_the_circular_variance():
    cfg = resolve_config(
        "I",
        **{
            **TINY,
            "n": 30,
            "train_size": 600,
            "test_size": 300,
            "epochs": 1,
            "burn_in": 20,
            "steps": 20,
            "lr": 3e-3,
        },
    )
    data = case_data("I", 0, 600, 300)
    from orient.kuranet.train import test_loss

    before = test_loss(init_net(cfg, 1), data, cfg, 10, 7)
    after = test_loss(train(cfg, log=lambda _: None).net, data, cfg, 10, 7)
    assert after < 0.7 * before


def test_evaluation_blocked_and_dense_agree():
    cfg = resolve_config("gmm3", **{**TINY, "train_size": 80, "test_size": 80, "epochs": 1})
    ckpt = train(cfg, log=lambda _: None)
    dense = evaluate(ckpt, size_n=40, data_networks=2, log=lambda _: None)
    blocked = evaluate(ckpt, size_n=40, data_networks=2, max_dense_bytes=100, log=lambda _: None)
    assert [r.regime for r in dense.rows] == ["data", "size", "data+size"]
    for r, s in zip(dense.rows, blocked.rows, strict=True):
        assert r.n == s.n and r.block is not None
        for a, b in ((r.trained, s.trained), (r.control, s.control), (r.block, s.block)):
            assert a == pytest.approx(b, abs=1e-4)
    assert set(dense.traces) == {"trained", "control", "block"}


# -- command line ------------------------------------------------------------------------------
def test_cli_train_and_eval(tmp_path, capsys):
    ck = tmp_path / "k.pt"
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("n", "epochs", "hidden")]
    code, out, err = run_cli(
        [
            "kuranet",
            "train",
            "--case",
            "I",
            "--n",
            "10",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--out",
            str(ck),
            *sets,
        ],
        capsys,
    )
    assert code == 0, err
    assert f"wrote checkpoint {ck}" in out
    code, out, err = run_cli(
        [
            "kuranet",
            "eval",
            str(ck),
            "--size-n",
            "40",
            "--data-networks",
            "2",
            "--matrix-n",
            "30",
            "--figures",
            str(tmp_path / "fig"),
        ],
        capsys,
    )
    assert code == 0, err
    assert "| data+size | 40 |" in out and "0.0667" in out  # paper's table I next to ours
    res = json.loads((tmp_path / "k.pt.eval.json").read_text())
    assert [r["regime"] for r in res["rows"]] == ["data", "size", "data+size"]
    for name in ("I-phases.png", "I-couplings.png", "I-training.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000
        assert f"wrote figure {tmp_path / 'fig' / name}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--case", "IV"], "unknown KuraNet case"),
        (["train", "--n", "1"], "n >= 2"),
        (["train", "--case", "image"], "needs an image and a label mask"),
        (["train", "--set", "bogus=1"], "unknown KuraNet option"),
        (["eval", "nowhere.pt"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(args, message, capsys, tmp_path):
    code, out, err = run_cli(
        ["kuranet", *args, *(["--out", str(tmp_path / "x.pt")] if args[0] == "train" else [])],
        capsys,
    )
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_corrupted_checkpoint_and_mismatched_mask(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["kuranet", "eval", str(bad)], capsys)
    assert code == 2 and "cannot read checkpoint" in err and len(err.strip().splitlines()) == 1
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "im.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "m.png")
    code, _, err = run_cli(
        [
            "kuranet",
            "train",
            "--case",
            "image",
            "--image",
            str(tmp_path / "im.png"),
            "--mask",
            str(tmp_path / "m.png"),
            "--out",
            str(tmp_path / "c.pt"),
        ],
        capsys,
    )
    assert code == 2 and "differ in size" in err and len(err.strip().splitlines()) == 1
