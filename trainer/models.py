"""Score networks s(x_t, t): a U-Net for image states and a residual MLP for vector states.

Both take ``t`` as a float in [0, 1] of shape (B,) (the trainer passes t / T) and return a tensor of
the state's shape. Periodic (phase) states enter the U-Net as [sin x, cos x]; the network predicts two
fields (s1, s2) and returns s1 cos x + s2 sin x (paper A eq. 12), which is exactly 2 pi-periodic in x.
The output layer is zero-initialised, so a fresh network predicts a zero score.

Networks are described by JSON dicts (``model_config`` resolves a preset for a state shape,
``build_model`` rebuilds exactly, ``model.to_config()`` gives the dict back); that dict goes into
checkpoints next to the state dict.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIME_SCALE = 1000.0  # t in [0, 1] is scaled like a DDPM step index before the sinusoidal embedding


# -- building blocks ----------------------------------------------------------------------------
def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of ``t`` in [0, 1] (scaled by 1000), shape (B,) -> (B, dim), float32."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = TIME_SCALE * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def batch_times(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` as a (B,) tensor on ``x``'s device (B = x.shape[0]); a scalar is broadcast."""
    t = torch.as_tensor(t, device=x.device)
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    if t.shape != (x.shape[0],):
        raise ValueError(f"expected t of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


class TimeEmbedding(nn.Module):
    """t (B,) -> sinusoidal features (B, dim) -> MLP -> (B, out_dim)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """GroupNorm -> GELU -> conv, + projected time embedding, GroupNorm -> GELU -> dropout -> conv; residual."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        h = h + self.emb(F.gelu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.gelu(self.norm2(h))))
        return self.skip(x) + h


def attention_heads(channels: int, head_channels: int) -> int:
    """Number of heads: about channels / head_channels, at least 1, dividing ``channels``."""
    heads = max(1, channels // head_channels)
    while channels % heads:
        heads -= 1
    return heads


class AttentionBlock(nn.Module):
    """GroupNorm + multi-head self-attention over the H*W positions; residual, (B, C, H, W)."""

    def __init__(self, channels: int, head_channels: int, groups: int) -> None:
        super().__init__()
        self.heads = attention_heads(channels, head_channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class ResAttn(nn.Module):
    """One residual block, optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn if attn is not None else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attn(self.res(x, emb))


class Downsample(nn.Module):
    """3x3 conv with stride 2: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# -- U-Net --------------------------------------------------------------------------------------
def _check_int(name: str, value: Any, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_dropout(dropout: Any) -> None:
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


def unet_resolutions(image_size: int, mults: tuple[int, ...], patch: int = 1) -> list[int]:
    """Spatial size of each U-Net level; ValueError if ``image_size`` does not halve cleanly."""
    _check_int("image_size", image_size)
    _check_int("patch", patch)
    if not isinstance(mults, tuple | list) or not mults:
        raise ValueError(f"mults must be a non-empty sequence of integers, got {mults!r}")
    for m in mults:
        _check_int("every channel multiplier in mults", m)
    factor = patch * 2 ** (len(mults) - 1)
    if image_size % factor:
        raise ValueError(
            f"image_size {image_size} is not divisible by patch * 2^(len(mults)-1) = {factor} "
            f"(patch={patch}, mults={tuple(mults)}); use fewer levels or another image size"
        )
    return [image_size // patch // 2**i for i in range(len(mults))]


class UNet(nn.Module):
    """Score U-Net: x (B, C, H, W), t (B,) in [0, 1] -> score (B, C, H, W); periodic-aware in/out."""

    def __init__(
        self,
        channels: int,
        periodic: bool,
        base: int,
        mults: tuple[int, ...],
        blocks: int,
        attn_resolutions: tuple[int, ...],
        image_size: int,
        dropout: float = 0.0,
        groups: int = 8,
        head_channels: int = 64,
        patch: int = 1,
    ) -> None:
        super().__init__()
        for name, value in [("channels", channels), ("base", base), ("blocks", blocks)]:
            _check_int(name, value)
        _check_int("groups", groups)
        _check_int("head_channels", head_channels)
        _check_dropout(dropout)
        if not isinstance(periodic, bool):
            raise ValueError(f"periodic must be a bool, got {periodic!r}")
        if base % groups:
            raise ValueError(f"base ({base}) must be divisible by groups ({groups}) for GroupNorm")
        resolutions = unet_resolutions(image_size, mults, patch)
        if not isinstance(attn_resolutions, tuple | list):
            raise ValueError(f"attn_resolutions must be a sequence, got {attn_resolutions!r}")
        unknown = sorted(set(attn_resolutions) - set(resolutions))
        if unknown:
            raise ValueError(
                f"attention resolutions {unknown} are not levels of this U-Net "
                f"(image_size {image_size}, mults {tuple(mults)} -> levels {resolutions})"
            )
        self.channels, self.periodic, self.image_size = channels, periodic, image_size
        self.base, self.mults, self.blocks = base, tuple(mults), blocks
        self.attn_resolutions = tuple(sorted(set(attn_resolutions), reverse=True))
        self.dropout, self.groups, self.head_channels = float(dropout), groups, head_channels
        self.patch = patch
        self.factor = patch * 2 ** (len(mults) - 1)

        emb_dim = 4 * base
        io_ch = 2 * channels if periodic else channels
        self.time = TimeEmbedding(base, emb_dim)
        # patch > 1: space-to-depth before the stem and depth-to-space after the head (cheap on CPU)
        self.patchify = nn.PixelUnshuffle(patch) if patch > 1 else nn.Identity()
        self.stem = nn.Conv2d(io_ch * patch**2, base, 3, padding=1)

        def step(in_ch: int, out_ch: int, attn: bool) -> ResAttn:
            return ResAttn(
                ResBlock(in_ch, out_ch, emb_dim, dropout, groups),
                AttentionBlock(out_ch, head_channels, groups) if attn else None,
            )

        ch, skip_chs = base, [base]
        self.down = nn.ModuleList()
        for i, (m, res) in enumerate(zip(mults, resolutions, strict=True)):
            for _ in range(blocks):
                self.down.append(step(ch, base * m, res in self.attn_resolutions))
                ch = base * m
                skip_chs.append(ch)
            if i < len(mults) - 1:
                self.down.append(Downsample(ch))
                skip_chs.append(ch)
        lowest_attn = resolutions[-1] in self.attn_resolutions  # res -> attn -> res, as in DDPM
        self.mid = nn.ModuleList([step(ch, ch, lowest_attn), step(ch, ch, False)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(mults))):
            for _ in range(blocks + 1):
                attn = resolutions[i] in self.attn_resolutions
                self.up.append(step(ch + skip_chs.pop(), base * mults[i], attn))
                ch = base * mults[i]
            if i > 0:
                self.up.append(Upsample(ch))
        self.out_norm = nn.GroupNorm(groups, ch)
        self.head = nn.Conv2d(ch, io_ch * patch**2, 3, padding=1)
        self.unpatch = nn.PixelShuffle(patch) if patch > 1 else nn.Identity()
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def to_config(self) -> dict[str, Any]:
        """The JSON dict that ``build_model`` turns back into this architecture."""
        return {
            "arch": "unet",
            "channels": self.channels,
            "periodic": self.periodic,
            "base": self.base,
            "mults": list(self.mults),
            "blocks": self.blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "image_size": self.image_size,
            "dropout": self.dropout,
            "groups": self.groups,
            "head_channels": self.head_channels,
            "patch": self.patch,
        }

    def _check_inputs(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected x of shape (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"H and W must be divisible by {self.factor}, got {tuple(x.shape)}")
        return batch_times(t, x)

    def raw(self, x: Tensor, t: Tensor) -> Tensor:
        """Network output before the periodic projection: (B, C, H, W), or (B, 2C, H, W) if periodic."""
        t = self._check_inputs(x, t)
        emb = self.time(t).to(x.dtype)
        h = torch.cat([torch.sin(x), torch.cos(x)], dim=1) if self.periodic else x
        h = self.stem(self.patchify(h))
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResAttn) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResAttn):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.unpatch(self.head(F.gelu(self.out_norm(h))))

    def fields(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The two predicted fields (s1, s2), each (B, C, H, W), of a periodic U-Net."""
        if not self.periodic:
            raise ValueError("fields() is only defined for a periodic U-Net")
        s1, s2 = self.raw(x, t).chunk(2, dim=1)
        return s1, s2

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Score at (x, t): (B, C, H, W), (B,) -> (B, C, H, W); s1 cos x + s2 sin x if periodic."""
        if not self.periodic:
            return self.raw(x, t)
        s1, s2 = self.fields(x, t)
        return s1 * torch.cos(x) + s2 * torch.sin(x)


# -- residual MLP -------------------------------------------------------------------------------
class MLPBlock(nn.Module):
    """LayerNorm -> Linear, + time embedding, -> GELU -> dropout -> Linear; residual, (B, hidden)."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.fc1(self.norm(h)) + self.emb(F.gelu(emb))
        return h + self.fc2(self.dropout(F.gelu(z)))


class ResMLP(nn.Module):
    """Score MLP for vector states: x (B, dim), t (B,) in [0, 1] -> score (B, dim)."""

    def __init__(self, dim: int, hidden: int, depth: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("dim", dim)
        _check_int("hidden", hidden)
        _check_int("depth", depth)
        _check_dropout(dropout)
        self.dim, self.hidden, self.depth, self.dropout = dim, hidden, depth, float(dropout)
        self.time = TimeEmbedding(hidden, hidden)
        self.stem = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([MLPBlock(hidden, dropout) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, dim)
        # a direct linear path x -> output: without it, hidden < dim cannot represent the linear
        # (Gaussian) part of the score and reverse chains diverge (seen on d = 1000 SNPs)
        self.skip = nn.Linear(dim, dim, bias=False)
        for layer in (self.head, self.skip):
            nn.init.zeros_(layer.weight)
        nn.init.zeros_(self.head.bias)

    def to_config(self) -> dict[str, Any]:
        """The JSON dict that ``build_model`` turns back into this architecture."""
        return {
            "arch": "resmlp",
            "dim": self.dim,
            "hidden": self.hidden,
            "depth": self.depth,
            "dropout": self.dropout,
        }

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Score at (x, t): (B, dim), (B,) -> (B, dim)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape (B, {self.dim}), got {tuple(x.shape)}")
        emb = self.time(batch_times(t, x)).to(x.dtype)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(F.gelu(self.out_norm(h))) + self.skip(x)


# -- presets and factory ------------------------------------------------------------------------
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "resmlp": ResMLP}

# U-Net presets: "mults" is a tuple or {min image size: mults}; "attn_levels" puts attention at that
# many lowest levels. "paper" is paper A's network: 16/8/4 px at 32x32 and 24/12/6 px at 96x96 (which
# needs a fifth level there). Its dropout 0.1 follows DDPM's CIFAR-10 setting (A does not state one).
# "tiny" works on 2x2 patches (space-to-depth) so that it trains at ~10 steps/s on two CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "arch": "unet",
        "base": 32,
        "mults": (1, 2, 2),
        "blocks": 1,
        "attn_levels": 1,
        "patch": 2,
    },
    "small": {
        "arch": "unet",
        "base": 64,
        "mults": (1, 2, 2, 2),
        "blocks": 2,
        "attn_levels": 2,
        "dropout": 0.1,
    },
    "paper": {
        "arch": "unet",
        "base": 128,
        "mults": {0: (1, 2, 2, 2), 96: (1, 2, 2, 2, 2)},
        "blocks": 2,
        "attn_levels": 3,
        "dropout": 0.1,
    },
    "mlp-tiny": {"arch": "resmlp", "hidden": 128, "depth": 2},
    "mlp-small": {"arch": "resmlp", "hidden": 256, "depth": 4},
}

# Options fixed by the state shape (not overridable), per architecture.
_DERIVED = {"unet": {"channels", "periodic", "image_size"}, "resmlp": {"dim"}}


def _arch_params(arch: str) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(ARCHITECTURES[arch].__init__).parameters)
    params.pop("self")
    return params


def _derived_options(arch: str, shape: tuple[int, ...], periodic: bool) -> dict[str, Any]:
    if arch == "unet":
        C, H, W = shape
        if H != W:
            raise ValueError(f"the U-Net needs square images, got state shape {shape}")
        return {"channels": C, "periodic": periodic, "image_size": H}
    if periodic:
        raise ValueError("periodic vector states are not supported by the ResMLP")
    return {"dim": shape[0]}


def _resolve_unet(spec: dict[str, Any], image_size: int) -> dict[str, Any]:
    """Turn a U-Net preset's size-relative entries (mults table, attn_levels) into options."""
    spec = dict(spec)
    mults = spec["mults"]
    if isinstance(mults, dict):
        mults = mults[max(k for k in mults if k <= image_size)]
    spec["mults"] = mults
    levels = spec.pop("attn_levels")
    if "attn_resolutions" not in spec:
        resolutions = unet_resolutions(image_size, mults, spec.get("patch", 1))
        spec["attn_resolutions"] = tuple(resolutions[-levels:]) if levels else ()
    return spec


def model_config(
    preset: str, state_shape: tuple[int, ...], periodic: bool, **overrides: Any
) -> dict[str, Any]:
    """Resolve ``preset`` for states of shape (C, H, W) (U-Net) or (d,) (ResMLP) into a model config."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose from {sorted(PRESETS)}")
    shape = tuple(state_shape)
    want = {3: "unet", 1: "resmlp"}.get(len(shape))
    if want is None:
        raise ValueError(f"state shape must be (C, H, W) or (d,), got {shape}")
    spec = dict(PRESETS[preset])
    arch = spec.pop("arch")
    if arch != want:
        fitting = [n for n, p in PRESETS.items() if p["arch"] == want]
        raise ValueError(
            f"preset {preset!r} builds a {arch}, but state shape {shape} needs a {want}; "
            f"choose from {fitting}"
        )
    params = _arch_params(arch)
    allowed = set(params) - _DERIVED[arch]
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise ValueError(f"unknown or fixed {arch} options {bad}; overridable: {sorted(allowed)}")
    derived = _derived_options(arch, shape, periodic)
    resolved = {**spec, **overrides}
    if arch == "unet":
        resolved = _resolve_unet(resolved, derived["image_size"])
    resolved.update(derived)
    for name, p in params.items():
        resolved.setdefault(name, p.default)
    config = {"arch": arch}
    for name in params:
        value = resolved[name]
        config[name] = list(value) if isinstance(value, tuple) else value
    with torch.device("meta"):  # validate now, without allocating or initialising weights
        build_model(config)
    return config


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build exactly the architecture ``config`` describes (weights are freshly initialised)."""
    arch = config.get("arch") if isinstance(config, dict) else None
    if arch not in ARCHITECTURES:
        raise ValueError(f"model config arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    kwargs = {k: v for k, v in config.items() if k != "arch"}
    params = _arch_params(arch)
    unknown = sorted(set(kwargs) - set(params))
    missing = sorted(
        n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs
    )
    if unknown or missing:
        raise ValueError(f"bad {arch} config: unknown keys {unknown}, missing {missing}")
    for key in ("mults", "attn_resolutions"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return ARCHITECTURES[arch](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
