"""``sample()``: draw samples from a checkpoint (``orient sample``, the quickstart, reproduce)."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from orient.pipeline.progress import Progress

from .chain import METHODS, reverse_chain
from .model import load_score_model
from .priors import initial_states, with_prior


@dataclass
class SampleResult:
    samples: Tensor  # data space, (n, *S), on the CPU
    trajectory: list[Tensor]  # data-space snapshots (k, *S) along the reverse chain
    steps: list[int]  # the t of each snapshot (T, ..., 0)


def sample(
    checkpoint: str | Path,
    n: int = 64,
    method: str = "sde",
    prior: str = "default",
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    trajectory: int = 0,
    corrector_steps: int = 1,
    corrector_size: float = 0.5,
    use_ema: bool = True,
    progress: bool = False,
) -> SampleResult:
    """Draw ``n`` samples; batch b uses a generator seeded from (seed, b), so results do not
    depend on anything but (seed, batch size). ``progress`` draws a progress line on stderr."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} ({', '.join(METHODS)})")
    device = torch.device(device)
    model, process, ckpt = load_score_model(checkpoint, device, use_ema)
    shape = tuple(json.loads(ckpt["state_shape"]))
    process = with_prior(process, ckpt, prior, torch.Generator(device=device).manual_seed(seed))
    outs, traj, steps = [], [], []
    batches = math.ceil(n / batch_size)
    bar = Progress(batches * process.T, "sample", unit="steps") if progress else None
    start = time.perf_counter()
    for b in range(batches):
        m = min(batch_size, n - b * batch_size)
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
        x = initial_states(process, ckpt, prior, (m, *shape), g)
        x0, tr, st = reverse_chain(
            model,
            process,
            x,
            g,
            method,
            corrector_steps,
            corrector_size,
            trajectory if b == 0 else 0,
            bar.update if bar is not None else None,
        )
        outs.append(process.state_to_data(x0).cpu())
        if tr:
            traj, steps = [process.state_to_data(s.to(device)).cpu() for s in tr], st
    if bar is not None:
        bar.close()
        took = time.perf_counter() - start
        print(f"sampled {n} in {took:.1f} s ({n / took:.1f} samples/s)", file=sys.stderr)
    return SampleResult(torch.cat(outs), traj, steps)
