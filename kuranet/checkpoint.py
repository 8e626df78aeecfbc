"""KuraNet checkpoints: a dict of tensors plus JSON configuration, read with ``weights_only=True``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import KuraNetConfig
from .coupling import CouplingNet

FORMAT = "orient-kuranet"
VERSION = 1


@dataclass
class Checkpoint:
    """A trained coupling function, its configuration and training curves."""

    config: KuraNetConfig
    net: CouplingNet
    history: Tensor  # training loss per gradient step
    test_history: Tensor  # monitoring test loss after each epoch


def build_net(cfg: KuraNetConfig, feature_dim: int) -> CouplingNet:
    return CouplingNet(feature_dim, cfg.hidden, cfg.depth, cfg.batch_norm)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(ckpt.config.to_json()),
        "feature_dim": ckpt.net.feature_dim,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.net.state_dict().items()},
        "history": ckpt.history.detach().cpu(),
        "test_history": ckpt.test_history.detach().cpu(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload: Any = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many kinds for truncated or foreign files
        raise ValueError(
            f"cannot read checkpoint {path}: {type(exc).__name__} (corrupted or not a checkpoint)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an orient KuraNet checkpoint")
    if payload.get("version") != VERSION:
        raise ValueError(
            f"{path} has checkpoint version {payload.get('version')}, expected {VERSION}"
        )
    try:
        cfg = KuraNetConfig.from_json(json.loads(payload["config"]))
        net = build_net(cfg, int(payload["feature_dim"]))
        net.load_state_dict(payload["state_dict"])
        history, test_history = payload["history"], payload["test_history"]
    except (KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {path} is damaged: {str(exc).splitlines()[0]}") from None
    return Checkpoint(cfg, net.to(device).eval(), history, test_history)
