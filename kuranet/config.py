"""Typed configuration of a KuraNet run: defaults, per-case overrides, and the seeds derived from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .coupling import check_mode
from .data import CASES, GLOBAL_CASES
from .simulate import Integration


@dataclass
class KuraNetConfig:
    """Everything a run depends on. Defaults: paper D and the authors' code for Case I, except the
    optimiser (Adam 1e-3 for 5 epochs instead of SGD 5e-4 for 2; see docs/kuranet.md)."""

    case: str = "I"
    seed: int = 0
    # data: 10,000 training and 10,000 test oscillators; training networks of n = 100 (D III A)
    n: int = 100
    train_size: int = 10_000
    test_size: int = 10_000
    data_options: dict[str, float] = field(default_factory=dict)
    image: str | None = None
    mask: str | None = None
    max_delay: int = 40
    # coupling function K_mu
    hidden: int = 128
    depth: int = 2
    batch_norm: bool = True
    mode: str = "positive"
    avg_degree: float = 1.0
    symmetric: bool = True
    # dynamics: Euler dt, burn-in t0 = burn_in dt, loss window of `steps` steps
    dt: float = 0.1
    burn_in: int = 100
    steps: int = 100
    init: str = "zero"
    grad_burn_in: bool = False
    # optimisation
    epochs: int = 5
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    max_grad_norm: float = 10.0
    eval_batches: int = 10  # test networks scored after every epoch (monitoring only)
    device: str = "cpu"

    @property
    def clustered(self) -> bool:
        return self.case not in GLOBAL_CASES

    @property
    def integration(self) -> Integration:
        return Integration(self.dt, self.burn_in, self.steps, self.init, self.grad_burn_in)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KuraNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown KuraNet configuration keys {sorted(unknown)}")
        return cls(**d).validated()

    def validated(self) -> KuraNetConfig:
        if self.case not in CASES:
            raise ValueError(
                f"unknown KuraNet case {self.case!r}; choose one of {', '.join(CASES)}"
            )
        if self.n < 2:
            raise ValueError(f"a network needs n >= 2 oscillators, got {self.n}")
        if self.train_size < self.n or self.test_size < self.n:
            raise ValueError(f"the training and test sets need at least n = {self.n} oscillators")
        if self.epochs < 0 or self.lr <= 0 or self.max_grad_norm <= 0 or self.avg_degree <= 0:
            raise ValueError("epochs must be >= 0 and lr, max_grad_norm, avg_degree > 0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r} ({', '.join(OPTIMIZERS)})")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {self.device!r} (cpu, cuda)")
        check_mode(self.mode)
        self.integration  # noqa: B018  (validates dt, burn_in, steps, init)
        return self


OPTIMIZERS = ("sgd", "adam")

# Per-case settings of the authors' experiments.cfg (SI Methods), adapted where noted in docs/kuranet.md.
CASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "I": {},
    "II": {},
    "III": {"max_grad_norm": 5.0, "steps": 50},
}
CLUSTER_DEFAULTS: dict[str, Any] = {
    "mode": "signed",
    "init": "uniform",
    "dt": 1.0,
    "burn_in": 0,  # a burn-in without gradients can end where sin(theta_j - theta_i) = 0 and stall
    "steps": 100,
    "epochs": 3,
    "optimizer": "adam",
    "lr": 1e-3,
}


def resolve_config(case: str, **overrides: Any) -> KuraNetConfig:
    """Defaults, then the case's settings, then the given (non-None) overrides."""
    if case not in CASES:
        raise ValueError(f"unknown KuraNet case {case!r}; choose one of {', '.join(CASES)}")
    settings: dict[str, Any] = dict(CASE_DEFAULTS.get(case, CLUSTER_DEFAULTS))
    known = {f.name for f in fields(KuraNetConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown KuraNet option {key!r}")
        if value is not None:
            settings[key] = value
    return KuraNetConfig(case=case, **settings).validated()


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream (seed, *keys), e.g. network initialisation or initial phases."""
    return int(
        np.random.SeedSequence([seed, *keys]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    )


# stream keys of derive_seed / data.stream (0 and 1 are the training and test features)
NET_INIT, BATCH_ORDER, PHASES, CONTROL_INIT, EVAL_PHASES = 3, 4, 5, 6, 7
