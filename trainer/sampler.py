"""``orient sample``: rebuild the process from a checkpoint and run its reverse chain.

The process (schedule, T, fitted buffers) comes from the checkpoint only, so a model can never be
paired with another schedule. Priors: the process's own (``default``), any named prior of the
process (von Mises eq. 7 or fitted, GOU anchors or stationary, SPDE fitted or noise, Gaussian), or
``forward``: the forward chain simulated from training data.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from orient.dynamics import Process
from orient.pipeline.progress import Progress
from orient.storage.store import TupleStore

from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    process_from_checkpoint,
    state_dict_mismatch,
)
from .models import build_model
from .score_model import ScoreModel

FITTED_PRIOR_EXAMPLES = 256  # training examples a re-fitted (--prior fitted) prior draws on


@dataclass
class SampleResult:
    samples: Tensor  # data space, (n, *S), on the CPU
    trajectory: list[Tensor]  # data-space snapshots (k, *S) along the reverse chain
    steps: list[int]  # the t of each snapshot (T, ..., 0)


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: the {key} weights cannot be loaded ({first})") from None
    return model.to(device).eval(), process, ckpt


def training_data(ckpt: dict[str, Any], n: int, generator: torch.Generator) -> Tensor:
    """``n`` training examples (with replacement) from the store the checkpoint was trained on."""
    url = json.loads(ckpt["store"])["url"]
    try:
        store = TupleStore.open(url)
    except ValueError as exc:
        raise ValueError(f"this prior needs the training store {url}: {exc}") from None
    store.check_process(ckpt["process_hash"], what="the checkpoint")
    x0 = store.source()
    idx = torch.randint(
        len(x0),
        (n,),
        generator=torch.Generator().manual_seed(
            int(torch.randint(2**31, (1,), generator=generator))
        ),
    )
    return torch.from_numpy(x0[idx.numpy()])


@torch.no_grad()
def reverse_chain(
    model: ScoreModel,
    process: Process,
    x_T: Tensor,
    generator: torch.Generator,
    method: str = "sde",
    corrector_steps: int = 0,
    corrector_size: float = 0.5,
    snapshots: int = 0,
    on_step: Callable[[], None] | None = None,
) -> tuple[Tensor, list[Tensor], list[int]]:
    """Run t = T..1 from x_T (state space); returns x_0 and ``snapshots`` states along the way.

    pc: after the predictor step at t (t > 1), ``corrector_steps`` Langevin steps at t - 1.
    ``on_step`` is called after each of the T steps (progress)."""
    predictor = "sde" if method == "pc" else method
    T = process.T
    keep = set(np.linspace(T, 0, snapshots).round().astype(int).tolist()) if snapshots else set()
    traj, steps = [], []
    x = x_T
    if T in keep:
        traj.append(x.cpu())
        steps.append(T)
    for t in range(T, 0, -1):
        x = process.reverse_step(x, t, model.score(x, t), generator, method=predictor)
        if method == "pc" and t > 1:
            for _ in range(corrector_steps):
                x = process.langevin_step(
                    x, t - 1, model.score(x, t - 1), generator, corrector_size
                )
        if t - 1 in keep:
            traj.append(x.cpu())
            steps.append(t - 1)
        if on_step is not None:
            on_step()
    return x, traj, steps


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
    if method not in ("sde", "ode", "pc"):
        raise ValueError(f"unknown method {method!r} (sde, ode, pc)")
    device = torch.device(device)
    model, process, ckpt = load_score_model(checkpoint, device, use_ema)
    shape = tuple(json.loads(ckpt["state_shape"]))
    g0 = torch.Generator(device=device).manual_seed(seed)
    if prior not in ("default", "forward"):
        need = FITTED_PRIOR_EXAMPLES if prior in ("fitted",) else 0
        data = training_data(ckpt, need, g0).to(device) if need else None
        process = process.with_prior(prior, data, g0)
    outs, traj, steps = [], [], []
    batches = math.ceil(n / batch_size)
    bar = Progress(batches * process.T, "sample", unit="steps") if progress else None
    start = time.perf_counter()
    for b in range(batches):
        m = min(batch_size, n - b * batch_size)
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
        if prior == "forward":
            x = process.data_to_state(training_data(ckpt, m, g).to(device))
            for t in range(1, process.T + 1):
                x = process.step(x, t, g)
        else:
            x = process.sample_prior((m, *shape), g).to(device)
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
