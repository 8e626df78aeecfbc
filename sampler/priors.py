"""The reverse chain's starting states, and the one place the sampler reads a training store.

Every prior but two needs the checkpoint alone (the process and its fitted buffers are in it).
``forward`` (the forward chain simulated from training examples) and the priors a process lists
in ``data_priors`` (refitted to training examples: Kuramoto's and the SPDE's ``fitted``) read the
training store the checkpoint names, which must still be where it was.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor

from orient.dynamics import Process
from orient.storage.store import TupleStore

FITTED_PRIOR_EXAMPLES = 256  # training examples a refitted prior draws on


def needs_training_store(process: Process, prior: str) -> bool:
    """Whether ``prior`` reads training examples from the store the checkpoint was trained on."""
    return prior == "forward" or prior in process.data_priors


def training_data(ckpt: dict[str, Any], n: int, generator: torch.Generator) -> Tensor:
    """``n`` training examples (with replacement) from the store the checkpoint was trained on."""
    url = json.loads(ckpt["store"])["url"]
    try:
        store = TupleStore.open(url)
    except ValueError as exc:
        raise ValueError(f"this prior needs the training store {url}: {exc}") from None
    store.check_process(ckpt["process_hash"], what="the checkpoint")
    x0 = store.source()
    seed = int(torch.randint(2**31, (1,), generator=generator))
    idx = torch.randint(len(x0), (n,), generator=torch.Generator().manual_seed(seed))
    return torch.from_numpy(x0[idx.numpy()])


def with_prior(
    process: Process, ckpt: dict[str, Any], prior: str, generator: torch.Generator
) -> Process:
    """The process whose ``sample_prior`` is ``prior`` (``default`` and ``forward``: itself)."""
    if prior in ("default", "forward"):
        return process
    data = None
    if prior in process.data_priors:
        data = training_data(ckpt, FITTED_PRIOR_EXAMPLES, generator).to(generator.device)
    return process.with_prior(prior, data, generator)


def initial_states(
    process: Process,
    ckpt: dict[str, Any],
    prior: str,
    shape: tuple[int, ...],
    generator: torch.Generator,
) -> Tensor:
    """x_T of shape ``shape`` = (n, *S), in state space on the generator's device."""
    device = generator.device
    if prior == "forward":
        x = process.data_to_state(training_data(ckpt, shape[0], generator).to(device))
        for t in range(1, process.T + 1):
            x = process.step(x, t, generator)
        return x
    return process.sample_prior(shape, generator).to(device)
