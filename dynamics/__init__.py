"""Forward processes behind one interface (:class:`Process`), and the registry that names them.

Nothing outside a process's own module asks which process it is: the precompute stage, the trainer
and the sampler use :func:`create_process` / :func:`process_from_config` and the interface alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor

from .base import Process, Transitions, append_dims
from .gou import GOUProcess
from .kuramoto import KuramotoProcess
from .spde import SPDEProcess
from .vp import VPProcess

PROCESS_CLASSES: dict[str, type[Process]] = {
    cls.kind: cls for cls in (KuramotoProcess, VPProcess, GOUProcess, SPDEProcess)
}

# CLI names -> constructors taking (steps=, schedule=, example=, **options)
PROCESSES: dict[str, Callable[..., Process]] = {
    "kuramoto-local": partial(KuramotoProcess.create, variant="local"),
    "kuramoto-global": partial(KuramotoProcess.create, variant="global"),
    "kuramoto-ref": partial(KuramotoProcess.create, variant="ref"),
    "vp": VPProcess.create,
    "gou": GOUProcess.create,
    "spde-aniso": partial(SPDEProcess.create, instance="anisotropic"),
    "spde-heat": partial(SPDEProcess.create, instance="heat"),
    "spde-ve": partial(SPDEProcess.create, instance="ve"),
}


def create_process(
    name: str, *, steps: int | None, schedule: str | None = None, example: Tensor, **options: Any
) -> Process:
    """Build the process called ``name`` (a key of :data:`PROCESSES`) for data like ``example``.

    ``steps`` None lets the process choose T (DEFAULT_STEPS, or more where its scheme needs it).
    """
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose one of {', '.join(PROCESSES)}")
    try:
        return PROCESSES[name](steps=steps, schedule=schedule, example=example, **options)
    except TypeError as exc:  # an option the process does not take
        if "unexpected keyword argument" not in str(exc):
            raise
        bad = str(exc).split("argument")[-1].strip()
        raise ValueError(f"process {name} has no option {bad} (see docs/processes.md)") from None


def process_from_config(
    config: dict[str, Any], buffers: dict[str, Tensor] | None = None
) -> Process:
    """Rebuild exactly the process described by ``config`` (and its fitted ``buffers``)."""
    kind = config.get("process")
    if kind not in PROCESS_CLASSES:
        raise ValueError(f"unknown process kind {kind!r} in configuration")
    return PROCESS_CLASSES[kind].from_config(config, buffers)


__all__ = [
    "PROCESSES",
    "PROCESS_CLASSES",
    "Process",
    "Transitions",
    "append_dims",
    "create_process",
    "process_from_config",
]
