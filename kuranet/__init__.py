"""KuraNet (paper D): learned coupling functions K_mu(x_i, x_j) for Kuramoto synchrony.

Public entry points: :func:`resolve_config` -> :func:`train` -> :func:`save_checkpoint`, and
:func:`load_checkpoint` -> :func:`evaluate`; the pieces live in one module each.
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import KuraNetConfig, resolve_config
from .coupling import CouplingNet, build_coupling, coupling_matrix, normalise
from .data import CASES, case_data
from .evaluate import REGIMES, evaluate
from .losses import circular_variance, cluster_loss, splay_term
from .simulate import Integration, simulate
from .train import train

__all__ = [
    "CASES",
    "REGIMES",
    "Checkpoint",
    "CouplingNet",
    "Integration",
    "KuraNetConfig",
    "build_coupling",
    "case_data",
    "circular_variance",
    "cluster_loss",
    "coupling_matrix",
    "evaluate",
    "load_checkpoint",
    "normalise",
    "resolve_config",
    "save_checkpoint",
    "simulate",
    "splay_term",
    "train",
]
