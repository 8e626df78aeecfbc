"""Forward processes behind one interface (:class:`Process`), and the registry that names them.

Nothing outside a process's own module asks which process it is: the precompute stage, the trainer
and the sampler use :func:`create_process` / :func:`process_from_config` and the interface alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import Tensor

from .base import Process, Transitions, append_dims, check_options
from .gou import GOUProcess
from .kuramoto import KuramotoProcess
from .spde import SPDEProcess
from .vp import VPProcess

PROCESS_CLASSES: dict[str, type[Process]] = {
    cls.kind: cls for cls in (KuramotoProcess, VPProcess, GOUProcess, SPDEProcess)
}

# CLI names -> (class, the keywords that pick the chain of that class)
REGISTRY: dict[str, tuple[type[Process], dict[str, str]]] = {
    "kuramoto-local": (KuramotoProcess, {"variant": "local"}),
    "kuramoto-global": (KuramotoProcess, {"variant": "global"}),
    "kuramoto-ref": (KuramotoProcess, {"variant": "ref"}),
    "vp": (VPProcess, {}),
    "gou": (GOUProcess, {}),
    "spde-aniso": (SPDEProcess, {"instance": "anisotropic"}),
    "spde-heat": (SPDEProcess, {"instance": "heat"}),
    "spde-ve": (SPDEProcess, {"instance": "ve"}),
}

# CLI names -> constructors taking (steps=, schedule=, example=, **options)
PROCESSES: dict[str, Callable[..., Process]] = {
    name: partial(cls.create, **fixed) for name, (cls, fixed) in REGISTRY.items()
}


def process_options(name: str) -> Mapping[str, str]:
    """The options (``--process-opt``) that process ``name`` takes, each with what it accepts."""
    if name not in REGISTRY:
        raise ValueError(f"unknown process {name!r}; choose one of {', '.join(PROCESSES)}")
    return REGISTRY[name][0].options


def create_process(
    name: str, *, steps: int | None, schedule: str | None = None, example: Tensor, **options: Any
) -> Process:
    """Build the process called ``name`` (a key of :data:`PROCESSES`) for data like ``example``.

    ``steps`` None lets the process choose T (DEFAULT_STEPS, or more where its scheme needs it).
    ``options`` are checked against the process's declared :attr:`Process.options` first.
    """
    process_options(name)  # an unknown name is an error
    check_options(REGISTRY[name][0], options, name)
    return PROCESSES[name](steps=steps, schedule=schedule, example=example, **options)


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
    "REGISTRY",
    "Process",
    "Transitions",
    "append_dims",
    "check_options",
    "create_process",
    "process_from_config",
    "process_options",
]
