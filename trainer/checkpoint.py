"""Checkpoints: one self-contained file per save, written atomically, loaded with weights_only=True.

A checkpoint holds the model, EMA, optimizer, step, reader state and RNG states, and the full
configuration as JSON text: the process (with its fitted buffers), the store identity, the model
and the training run. The sampler rebuilds the process from it, so a model cannot be paired with
the wrong schedule.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from orient.dynamics import Process, process_from_config

CHECKPOINT_FORMAT = 1
NAME_RE = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A missing, corrupted or incompatible checkpoint (one-line message)."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt-{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    d = Path(run_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if NAME_RE.match(p.name)), key=lambda p: p.name)


def newest_checkpoint(run_dir: str | Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(
            f"no checkpoint (ckpt-*.pt) in {run_dir}; train first or pass --checkpoint"
        )
    return found[-1]


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep: int | None = None) -> Path:
    """torch.save to a temporary file, fsync, then rename over ``path``; prune to ``keep`` newest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if keep:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; every failure is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupted or not a torch file, or another device's
        raise CheckpointError(f"checkpoint {path} {_unreadable(path, exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an orient checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a few words."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "is corrupted: the file is empty"
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        return "is corrupted: not a torch checkpoint (torch.save writes a zip archive)"
    if isinstance(exc, pickle.UnpicklingError):
        return (
            "is corrupted: it holds Python objects that a weights-only load refuses to unpickle "
            "(orient checkpoints hold only tensors and plain data)"
        )
    if isinstance(exc, EOFError) or "zip archive" in str(exc) or "PytorchStreamReader" in str(exc):
        return "is corrupted: the zip archive is truncated or damaged (an interrupted copy?)"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "torch.load stopped without saying why"
    return f"cannot be loaded: {first}"  # e.g. tensors of a device this machine lacks


def state_dict_mismatch(expected: dict[str, Any], given: dict[str, Any]) -> str | None:
    """What keeps ``given`` from loading into a module whose state dict is ``expected``, or None."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            parts.append(f"{label}: {', '.join(names[:3])}{more}")
    return "; ".join(parts) or None


def process_payload(process: Process) -> dict[str, Any]:
    return {
        "process": json.dumps(process.to_config()),
        "process_buffers": {k: v.cpu() for k, v in process.buffers().items()},
    }


def process_from_checkpoint(ckpt: dict[str, Any]) -> Process:
    """Rebuild exactly the process the checkpoint was trained for (config hash checked)."""
    config = json.loads(ckpt["process"])
    process = process_from_config(config, ckpt.get("process_buffers") or None)
    if process.config_hash != ckpt["process_hash"]:
        raise CheckpointError(
            "the checkpoint's process configuration does not match its recorded hash"
        )
    return process
