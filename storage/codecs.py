"""Encodings of stored quantities, chosen by measurement (docs/store-format.md).

* ``phase-u16``: periodic states as uint16, u = round((theta + pi) * 65535 / 2 pi); worst error
  pi / 65535 = 4.8e-5 rad (20x better than float16 for the same two bytes).
* ``float32``: non-periodic states, kept exact (float16 would exceed 1 % of the smallest noise std
  of the VP and SPDE chains).
* ``scaled-f16``: local scores multiplied by sqrt(w(t)) (so they are O(1)) and stored as float16:
  relative error <= 2^-11 = 4.9e-4 on the loss target, and no overflow whatever the noise level.

Encoding runs on the writer's device; decoding takes a torch tensor on the reader's (training)
device, so quantised phases are expanded there and not on the host.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

PHASE_SCALE = 65535.0 / (2.0 * math.pi)

ENCODINGS = {"phase-u16": "uint16", "float32": "float32", "scaled-f16": "float16"}


def state_encoding(periodic: bool) -> str:
    return "phase-u16" if periodic else "float32"


# torch dtypes that carry each stored dtype's bits: uint16 phases travel as int16 bits, since torch's
# uint16 lacks the indexing kernels (index_copy_) that gather a block's tuples on its device
CARRIERS = {"phase-u16": torch.int16, "float32": torch.float32, "scaled-f16": torch.float16}


def encode_tensor(x: Tensor, encoding: str) -> Tensor:
    """Tensor -> the stored dtype's bits (dtype ``CARRIERS[encoding]``), on ``x``'s device."""
    if encoding == "phase-u16":
        # floor((theta + pi) * scale + 0.5), clamped to [0, 65535]: three passes in float32
        u = x.detach().float().mul(PHASE_SCALE).add_(math.pi * PHASE_SCALE + 0.5)
        return u.clamp_(0.0, 65535.0).to(torch.uint16).view(torch.int16)
    if encoding == "float32":
        return x.detach().float()
    if encoding == "scaled-f16":
        return x.detach().to(torch.float16)
    raise ValueError(f"unknown encoding {encoding!r}")


def encode(x: Tensor, encoding: str) -> np.ndarray:
    """Tensor -> numpy array in the stored dtype (scores must already be scaled by sqrt(w))."""
    return encode_tensor(x, encoding).cpu().numpy().view(ENCODINGS[encoding])


def carrier_view(a: np.ndarray, encoding: str) -> Tensor:
    """A torch view of a stored-dtype numpy array, in the dtype :func:`encode_tensor` returns."""
    return torch.from_numpy(a.view(np.dtype(str(CARRIERS[encoding]).removeprefix("torch."))))


def decode(a: np.ndarray | Tensor, encoding: str, device: torch.device | str = "cpu") -> Tensor:
    """Stored array -> float32 tensor on ``device`` (phases decoded there)."""
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a)
    if encoding == "phase-u16":
        t = t.to(device)
        if t.dtype == torch.int16:  # uint16 bits travel as int16 through torch
            t = t.view(torch.uint16)
        return t.to(torch.float32).mul_(1.0 / PHASE_SCALE).sub_(math.pi)
    if encoding in ("float32", "scaled-f16"):
        return t.to(device).float()
    raise ValueError(f"unknown encoding {encoding!r}")


def max_error(encoding: str) -> float:
    """Worst-case absolute round-trip error of an encoding (relative for scaled-f16)."""
    return {"phase-u16": 0.5 / PHASE_SCALE, "float32": 0.0, "scaled-f16": 2.0**-11}[encoding]


def state_precision_problem(process: Any) -> str | None:
    """Why ``process``'s states cannot be stored to within 1 % of its smallest transition noise
    std (what docs/store-format.md promises; tests/test_storage.py checks every default schedule),
    or None. Only a schedule with very little noise at some step can fail it (phases: a std below
    ~4.8e-3 rad, i.e. 100x the uint16 resolution)."""
    err = max_error(state_encoding(process.periodic))
    if err == 0.0:
        return None
    T = process.T
    var = process.transition_variance(torch.arange(1, T + 1)).reshape(-1).double()
    var = var.expand(T) if var.numel() == 1 else var
    t = int(var.argmin()) + 1
    std = float(var[t - 1].sqrt())
    if err < 0.01 * std:
        return None
    return (
        f"the schedule's smallest transition noise std ({std:.3g} at t={t}) is under 100x the "
        f"resolution of the stored states ({err:.2g}): they would be off by more than 1 % of the "
        "noise; use a schedule with more noise at every step"
    )
