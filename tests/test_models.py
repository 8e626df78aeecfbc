"""Score networks: shapes, the periodic projection (A eq. 12), time conditioning, exact rebuilds."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from orient.trainer.models import (
    PRESETS,
    UNet,
    build_model,
    count_parameters,
    model_config,
    timestep_embedding,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread avoids OpenMP stalls when the two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed(model: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """``model`` in eval mode with seeded noise added to every parameter (the head is zero-init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def phases(
    shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul(math.pi).to(dtype)


def tiny(shape: tuple[int, ...], periodic: bool, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    preset = "tiny" if len(shape) == 3 else "mlp-tiny"
    return build_model(model_config(preset, shape, periodic, **overrides))


@functools.cache
def periodic_net() -> UNet:
    """A perturbed float64 periodic tiny U-Net shared by the property tests (not mutated)."""
    return perturbed(tiny((2, 16, 16), periodic=True), seed=1).double()


# -- shapes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 32, 96])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("periodic", [False, True])
def test_unet_output_shape(size: int, channels: int, periodic: bool) -> None:
    net = perturbed(tiny((channels, size, size), periodic))
    x = phases((2, channels, size, size))
    with torch.no_grad():
        out = net(x, torch.tensor([0.1, 0.9]))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


def test_unet_not_power_of_two_sizes() -> None:
    config = model_config("tiny", (1, 24, 24), False, patch=1, mults=(1, 2, 2, 2))
    assert config["attn_resolutions"] == [3]  # levels 24, 12, 6, 3; attention at the lowest
    net = UNet(3, True, base=16, mults=(1, 2, 2), blocks=2, attn_resolutions=(12, 6), image_size=24)
    for model, c in [(build_model(config), 1), (net, 3)]:
        x = phases((2, c, 24, 24))
        assert model(x, torch.rand(2)).shape == x.shape


@pytest.mark.parametrize(
    ("size", "mults", "attn"), [(32, [1, 2, 2, 2], [16, 8, 4]), (96, [1, 2, 2, 2, 2], [24, 12, 6])]
)
def test_paper_preset_matches_paper_a(size: int, mults: list[int], attn: list[int]) -> None:
    config = model_config("paper", (3, size, size), True)
    assert config["base"] == 128 and config["blocks"] == 2 and config["mults"] == mults
    assert config["attn_resolutions"] == attn


@pytest.mark.parametrize("dim", [1, 3, 17])
def test_resmlp_output_shape(dim: int) -> None:
    net = perturbed(tiny((dim,), periodic=False))
    x = torch.randn(5, dim)
    out = net(x, torch.rand(5))
    assert out.shape == (5, dim) and torch.isfinite(out).all()
    assert torch.equal(net(x, torch.tensor(0.3)), net(x, torch.full((5,), 0.3)))


@pytest.mark.parametrize("dim", [1, 8, 33])
def test_timestep_embedding_shape(dim: int) -> None:
    emb = timestep_embedding(torch.linspace(0, 1, 7), dim)
    assert emb.shape == (7, dim) and emb.abs().max() <= 1


# -- initial output -----------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_output_is_zero_at_construction(preset: str) -> None:
    shape = (2, 16, 16) if PRESETS[preset]["arch"] == "unet" else (6,)
    net = build_model(model_config(preset, shape, periodic=len(shape) == 3)).eval()
    x = phases((3, *shape))
    with torch.no_grad():
        assert torch.equal(net(x, torch.rand(3)), torch.zeros_like(x))


# -- periodic projection --------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(k=st.integers(-3, 3).filter(bool), seed=st.integers(0, 2**16))
def test_periodic_output_is_2pi_periodic(k: int, seed: int) -> None:
    net = periodic_net()
    x = phases((2, 2, 16, 16), seed, torch.float64)
    t = torch.rand(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        out, shifted = net(x, t), net(x + 2 * math.pi * k, t)
        half = net(x + math.pi, t)
    scale = out.abs().max()
    assert scale > 1e-3
    torch.testing.assert_close(shifted, out, rtol=0, atol=1e-9 * scale)
    assert (half - out).abs().max() > 1e-3 * scale  # not trivially invariant


def test_periodic_output_is_projection_of_two_fields() -> None:
    net = perturbed(tiny((3, 16, 16), periodic=True), seed=2)
    seen: list[torch.Tensor] = []
    hook = net.unpatch.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x, t = phases((2, 3, 16, 16)), torch.rand(2)
    with torch.no_grad():
        out = net(x, t)
        s1, s2 = net.fields(x, t)
    hook.remove()
    h1, h2 = seen[0].chunk(2, dim=1)  # the last layer's 2C channels
    assert h1.shape == h2.shape == x.shape
    torch.testing.assert_close(out, h1 * torch.cos(x) + h2 * torch.sin(x), rtol=0, atol=0)
    assert torch.equal(s1, h1) and torch.equal(s2, h2)


def test_plain_unet_has_no_fields() -> None:
    net = tiny((1, 16, 16), periodic=False)
    with pytest.raises(ValueError, match="periodic"):
        net.fields(torch.zeros(1, 1, 16, 16), torch.zeros(1))


# -- time conditioning ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 16, 16), (4,)])
def test_time_conditioning_changes_output(seed: int, shape: tuple[int, ...]) -> None:
    net = perturbed(tiny(shape, periodic=len(shape) == 3, seed=seed), seed=seed)
    x = phases((3, *shape), seed)
    with torch.no_grad():
        early, late = net(x, torch.full((3,), 0.05)), net(x, torch.full((3,), 0.95))
    assert (early - late).abs().max() > 1e-3 * early.abs().max()


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("preset", "shape", "periodic", "overrides"),
    [
        ("tiny", (3, 16, 16), True, {}),
        ("tiny", (1, 32, 32), False, {"dropout": 0.2, "base": 16}),
        ("small", (1, 16, 16), True, {"blocks": 1}),
        ("mlp-tiny", (5,), False, {"depth": 3}),
    ],
)
def test_config_round_trip_rebuilds_exactly(preset, shape, periodic, overrides) -> None:
    config = model_config(preset, shape, periodic, **overrides)
    loaded = json.loads(json.dumps(config))
    assert loaded == config
    torch.manual_seed(0)
    net = perturbed(build_model(config))
    torch.manual_seed(1)
    rebuilt = build_model(loaded)
    assert net.to_config() == rebuilt.to_config() == config
    assert count_parameters(net) == count_parameters(rebuilt)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    rebuilt.eval()
    x = phases((2, *shape))
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor([0.2, 0.7])), rebuilt(x, torch.tensor([0.2, 0.7])))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: model_config("tiny", (1, 18, 18), False), "divisible"),
        (lambda: model_config("paper", (1, 20, 20), True), "divisible"),
        (lambda: model_config("tiny", (1, 16, 16), False, mults=(1, 2, 2, 2, 2)), "divisible"),
        (lambda: model_config("mlp-tiny", (1, 16, 16), False), "needs a unet"),
        (lambda: model_config("tiny", (5,), False), "needs a resmlp"),
        (lambda: model_config("huge", (1, 16, 16), False), "unknown model preset"),
        (lambda: model_config("tiny", (1, 16, 16), False, channels=3), "channels"),
        (lambda: model_config("tiny", (1, 16, 16), False, width=3), "width"),
        (lambda: model_config("tiny", (1, 16, 32), False), "square"),
        (lambda: model_config("tiny", (16, 16), False), "state shape"),
        (lambda: model_config("mlp-tiny", (4,), True), "periodic"),
        (lambda: model_config("tiny", (1, 16, 16), False, groups=7), "groups"),
        (lambda: model_config("tiny", (1, 16, 16), False, attn_resolutions=(5,)), "attention"),
        (lambda: model_config("tiny", (1, 16, 16), False, mults=()), "mults"),
        (lambda: model_config("tiny", (1, 16, 16), False, dropout=1.0), "dropout"),
        (lambda: model_config("tiny", (1, 16, 16), False, blocks=0), "blocks"),
        (lambda: model_config("mlp-tiny", (4,), False, hidden=0), "hidden"),
        (lambda: build_model({"arch": "transformer"}), "arch"),
        (lambda: build_model("unet"), "arch"),  # type: ignore[arg-type]
        (lambda: build_model({**model_config("tiny", (1, 16, 16), False), "x": 1}), "unknown"),
        (lambda: build_model({"arch": "resmlp", "dim": 3, "hidden": 8}), "missing"),
    ],
)
def test_invalid_configs_raise(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("shape", "x", "t"),
    [
        ((1, 16, 16), torch.zeros(2, 3, 16, 16), torch.zeros(2)),  # wrong channel count
        ((1, 16, 16), torch.zeros(2, 1, 12, 12), torch.zeros(2)),  # 12 not divisible by 8
        ((1, 16, 16), torch.zeros(2, 1, 16, 16), torch.zeros(3)),  # t does not match the batch
        ((4,), torch.zeros(2, 5), torch.zeros(2)),
        ((4,), torch.zeros(2, 4), torch.zeros(2, 1)),
    ],
)
def test_bad_inputs_raise(shape, x, t) -> None:
    with pytest.raises(ValueError, match="expected|divisible"):
        tiny(shape, periodic=False)(x, t)


# -- learning -------------------------------------------------------------------------------------
def test_tiny_unet_overfits_a_fixed_batch() -> None:
    net = tiny((1, 16, 16), periodic=True).train()
    x, t = phases((4, 1, 16, 16), seed=3), torch.rand(4, generator=torch.Generator().manual_seed(3))
    target = -torch.sin(x - 0.5) / (0.2 + t[:, None, None, None])  # a wrapped-normal-like score
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, foreach=True)
    start = (net(x, t) - target).pow(2).mean().item()
    for _ in range(200):
        loss = (net(x, t) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = (net(x, t) - target).pow(2).mean().item()
    assert final < 0.1 * start, (start, final)
