"""The score model and its process, rebuilt from a checkpoint alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from orient.dynamics import Process
from orient.trainer.checkpoint import (
    CheckpointError,
    load_checkpoint,
    process_from_checkpoint,
    state_dict_mismatch,
)
from orient.trainer.models import build_model
from orient.trainer.score_model import ScoreModel


def load_score_model(
    path: str | Path, device: torch.device, use_ema: bool = True
) -> tuple[ScoreModel, Process, dict]:
    """Model (EMA weights by default) and its process, both rebuilt from the checkpoint alone."""
    ckpt = load_checkpoint(path, map_location=device)
    process = process_from_checkpoint(ckpt).to(device)
    key = "ema" if use_ema else "model"
    if "model_config" not in ckpt or not isinstance(ckpt.get(key), dict):
        raise CheckpointError(f"{path} holds no model_config or {key} weights")
    try:
        net = build_model(json.loads(ckpt["model_config"]))
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: its model_config cannot be built ({exc})") from None
    model = ScoreModel(net, process)
    why = state_dict_mismatch(model.state_dict(), ckpt[key])
    if why:
        raise CheckpointError(f"{path}: the {key} weights do not fit the recorded model ({why})")
    try:
        model.load_state_dict(ckpt[key])
    except (RuntimeError, TypeError, ValueError) as exc:  # e.g. an entry that is not a tensor
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail given"
        raise CheckpointError(f"{path}: the {key} weights cannot be loaded ({first})") from None
    return model.to(device).eval(), process, ckpt
