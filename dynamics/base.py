"""The forward-process interface shared by the precompute stage, the trainer and the sampler.

Every process is a discrete Markov chain x_0 -> x_1 -> ... -> x_T whose transition kernel
p(x_t | x_{t-1}) has a closed-form score (paper A, eq. 9-10; docs/processes.md). Conventions, for every process:

* ``t`` is the 1-based index of a transition: transition ``t`` maps x_{t-1} to x_t and uses the
  schedule entry ``t - 1``. The reverse step at ``t`` maps x_t to x_{t-1} with the *same* entry,
  so training (which regresses the score of transition ``t``) and sampling agree by construction.
* ``t`` is a Python int (one t for the whole batch) or an integer tensor of shape (B,).
* States have shape (B, *S); M transition draws have shape (M, B, *S).
* Every random draw takes an explicit ``torch.Generator`` on the state's device.
* ``to_config()`` is JSON; large fitted arrays (GOU's eigenbasis, anchors) live in ``buffers()``
  and their SHA-256 digests are part of the config, so ``config_hash`` identifies both.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

CONFIG_FORMAT = 1
DEFAULT_STEPS = 100  # T when none is given (a process may need more: SPDEProcess.create)
Method = Literal["sde", "ode"]


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``x`` until it has ``ndim`` dims (k-diffusion style)."""
    if x.ndim > ndim:
        raise ValueError(f"cannot broadcast a {x.ndim}-d tensor to {ndim} dims")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


def schedule_at(values: Tensor, t: int | Tensor, like: Tensor, state_ndim: int) -> Tensor:
    """Schedule entry of transition ``t`` (entry ``t - 1``), broadcastable against ``like``.

    ``values`` has shape (T,). ``like`` has shape (*lead, B, *S) where S has ``state_ndim`` dims.
    """
    T = values.shape[0]
    if isinstance(t, int):
        if not 1 <= t <= T:
            raise ValueError(f"t must be in 1..{T}, got {t}")
        return values[t - 1].to(device=like.device, dtype=like.dtype)
    t = torch.as_tensor(t, device=values.device)
    if t.ndim != 1:
        raise ValueError(f"t must be an int or a 1-d tensor, got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 1 or int(t.max()) > T):
        raise ValueError(f"t must be in 1..{T}")
    v = values[t.long() - 1].to(device=like.device, dtype=like.dtype)
    return v.reshape(-1, *([1] * state_ndim))


def tensor_digest(x: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and little-endian bytes."""
    a = np.ascontiguousarray(x.detach().cpu().numpy())
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, no spaces; floats round-trip exactly)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def randn(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws on ``like``'s device and dtype from an explicit generator."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class Transitions:
    """M draws of x_t from p(. | x_{t-1}) and their local scores, both of shape (M, B, *S)."""

    x: Tensor
    score: Tensor


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_t(t: int | Tensor, T: int, batch: int) -> None:
    """``t`` is an int in 1..T or a 1-d integer tensor of ``batch`` such values."""
    if isinstance(t, int) and not isinstance(t, bool):
        if not 1 <= t <= T:
            raise ValueError(f"t must be in 1..{T}, got {t}")
        return
    if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(f"t must be an int or a tensor of shape ({batch},)")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"t must hold integer steps, got {t.dtype}")
    if t.numel() and (int(t.min()) < 1 or int(t.max()) > T):
        raise ValueError(f"t must be in 1..{T}")


def check_steps(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"the number of steps T must be an integer >= 1, got {T!r}")


class Process(ABC):
    """A forward chain with closed-form transition scores, its reverse step and its prior."""

    kind: ClassVar[str]  # the config's "process" field; one class per kind
    periodic: ClassVar[bool] = False
    # the keyword options ``create`` takes (``--process-opt``), each with what it accepts;
    # checked by :func:`check_options`, the one place that rejects an unknown option
    options: ClassVar[Mapping[str, str]] = {}
    # values for parameters that configs written by earlier versions lack (GOU's grid_power,
    # the SPDE's scheme): such a config rebuilds the chain that wrote it
    config_defaults: ClassVar[Mapping[str, Any]] = {}
    # config keys that say which chain of its kind this is (Kuramoto's variant, the SPDE's
    # instance), and those of its schedule, for :meth:`describe`
    describe_keys: ClassVar[tuple[str, ...]] = ()
    schedule_keys: ClassVar[tuple[str, ...]] = ("schedule",)
    T: int
    state_ndim: int  # number of state dims after the batch dim (3 for C,H,W images, 1 for vectors)

    # -- data <-> state -------------------------------------------------------------------
    def data_to_state(self, x: Tensor) -> Tensor:
        """Map data (images in [-1, 1], or vectors) to the chain's state space."""
        return x.float()

    def state_to_data(self, s: Tensor) -> Tensor:
        """Map a state back to data space."""
        return s

    # -- forward ------------------------------------------------------------------------
    @abstractmethod
    def transition_sample(
        self, x_prev: Tensor, t: int | Tensor, m: int, generator: torch.Generator
    ) -> Tensor:
        """``m`` draws of x_t ~ p(. | x_{t-1}); shape (m, B, *S)."""

    @abstractmethod
    def transition_score(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        """grad_{x_t} log p(x_t | x_{t-1}) in closed form; ``x_t`` may carry leading draw dims."""

    @abstractmethod
    def transition_log_prob(self, x_prev: Tensor, x_t: Tensor, t: int | Tensor) -> Tensor:
        """log p(x_t | x_{t-1}) summed over the state dims; shape (*lead, B)."""

    def step(self, x_prev: Tensor, t: int | Tensor, generator: torch.Generator) -> Tensor:
        """One forward transition x_{t-1} -> x_t."""
        return self.transition_sample(x_prev, t, 1, generator)[0]

    def sample_transitions(
        self, x_prev: Tensor, t: int | Tensor, m: int, generator: torch.Generator
    ) -> Transitions:
        """M draws of x_t with their closed-form local scores (the training targets)."""
        if m < 1:
            raise ValueError(f"the number of draws M must be >= 1, got {m}")
        x = self.transition_sample(x_prev, t, m, generator)
        return Transitions(x=x, score=self.transition_score(x_prev, x, t))

    def simulate(
        self, x0: Tensor, generator: torch.Generator, t_end: int | None = None
    ) -> list[Tensor]:
        """The chain [x_0, x_1, ..., x_{t_end}] (t_end defaults to T)."""
        t_end = self.T if t_end is None else t_end
        xs = [x0]
        for t in range(1, t_end + 1):
            xs.append(self.step(xs[-1], t, generator))
        return xs

    @abstractmethod
    def transition_variance(self, t: int | Tensor) -> Tensor:
        """Scalar noise variance of transition t (the mean over state dims where it varies)."""

    def loss_weight(self, t: int | Tensor) -> Tensor:
        """w(t) of the local score-matching loss: the transition noise variance (A eq. 10)."""
        return self.transition_variance(t)

    # -- reverse ------------------------------------------------------------------------
    def reverse_step(
        self,
        x_t: Tensor,
        t: int | Tensor,
        score: Tensor,
        generator: torch.Generator | None = None,
        method: Method = "sde",
    ) -> Tensor:
        """x_t -> x_{t-1} given the score s(x_t, t); the one entry point of every reverse chain.

        The method, the generator, the shapes and t are checked here once; the process supplies
        three small pieces:

        * SDE: ``project(_reverse_mean(x, t, s) + _reverse_noise(x, t, g))``, where the mean is
          the process's estimate of E[x_{t-1} | x_t] from the score (it undoes the forward mean
          map) and the noise has the transition's covariance. Transition 1 adds no noise: it is
          the step onto the data, whose posterior spread is at most the first transition's, and
          DDPM's convention (z = 0 at the last step) keeps point-like data laws points.
        * ODE: ``project(_reverse_ode(x, t, s))``, a deterministic step that transports the
          marginal of x_t to that of x_{t-1}.
        """
        if method not in ("sde", "ode"):
            raise ValueError(f"unknown reverse method {method!r} (sde, ode)")
        if score.shape != x_t.shape:
            raise ValueError(
                f"the score has shape {tuple(score.shape)}, the state {tuple(x_t.shape)}"
            )
        if x_t.ndim != self.state_ndim + 1:
            raise ValueError(
                f"reverse steps take states (B, *S) with {self.state_ndim} state dims, "
                f"got shape {tuple(x_t.shape)}"
            )
        check_t(t, self.T, x_t.shape[0])
        if method == "ode":
            return self.project(self._reverse_ode(x_t, t, score))
        if generator is None:
            raise ValueError("the SDE reverse step needs a generator")
        x = self._reverse_mean(x_t, t, score)
        if isinstance(t, int):
            return self.project(x + self._reverse_noise(x_t, t, generator) if t > 1 else x)
        noise = self._reverse_noise(x_t, t, generator)
        keep = append_dims((torch.as_tensor(t, device=x.device) > 1).to(x.dtype), x.ndim)
        return self.project(x + keep * noise)

    @abstractmethod
    def _reverse_mean(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """The SDE step's mean: E[x_{t-1} | x_t] as the process estimates it from the score."""

    @abstractmethod
    def _reverse_noise(self, x_t: Tensor, t: int | Tensor, generator: torch.Generator) -> Tensor:
        """A draw of the SDE step's noise (the transition's covariance), shaped like ``x_t``."""

    @abstractmethod
    def _reverse_ode(self, x_t: Tensor, t: int | Tensor, score: Tensor) -> Tensor:
        """The deterministic (probability-flow) step x_t -> x_{t-1}."""

    def _table(self, key: str, build: Callable[[], Tensor], like: Tensor) -> Tensor:
        """A table derived from the schedule (e.g. (T + 1, ...) per-step values), built once and
        kept per device and dtype, so that the training and sampling steps only index it."""
        cache = self.__dict__.setdefault("_tables", {})
        k = (key, like.device, like.dtype)
        if k not in cache:
            cache[k] = build().to(device=like.device, dtype=like.dtype)
        return cache[k]

    def baseline_score(self, x: Tensor, t: int | Tensor) -> Tensor | None:
        """An analytic part of the marginal score of x_t that the score model adds to its
        network's output (the network then learns the rest); None (the default): none."""
        return None

    @abstractmethod
    def sample_prior(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Draws from the reverse chain's initial distribution; ``shape`` = (B, *S)."""

    prior_names: ClassVar[tuple[str, ...]] = ()
    # the priors of ``prior_names`` that ``with_prior`` fits to training data (``data`` needed)
    data_priors: ClassVar[frozenset[str]] = frozenset()

    def with_prior(self, name: str, data: Tensor | None, generator: torch.Generator) -> Process:
        """A copy of this process whose ``sample_prior`` uses the prior called ``name``.

        ``data`` (data space) is used by priors fitted to simulated terminal states.
        """
        if name not in self.prior_names:
            raise ValueError(
                f"process {self.kind} has no prior {name!r}; it has {', '.join(self.prior_names)}"
            )
        return self._with_prior(name, data, generator)

    def _with_prior(self, name: str, data: Tensor | None, generator: torch.Generator) -> Process:
        return self

    def project(self, x: Tensor) -> Tensor:
        """Map a state back onto the state space (wrapping for periodic states)."""
        return x

    def langevin_step(
        self, x: Tensor, t: int, score: Tensor, generator: torch.Generator, size: float = 0.5
    ) -> Tensor:
        """Unadjusted Langevin corrector at the marginal of x_t: x + eps s + sqrt(2 eps) z with
        eps = ``size`` x ``langevin_cap(t)``, the same for every example.

        The marginal of x_t has at least the variance of transition t's noise in every
        direction, so for size < 2 the step contracts every Gaussian mode (multiplier
        1 - eps / v in (-1, 1)), and its bias on a Gaussian's variance is eps^2 / v per step.
        Song et al.'s rule eps = 2 (snr |z| / |s|)^2 per example is not used: a step that depends
        on the state through |s| breaks the invariance of the target law (measured on 3-d
        Gaussians with exact scores: +30 % variance per dimension over a VP chain at snr 0.16),
        and a batch-wide norm would make a sample depend on the rest of its batch."""
        if not 0 < size < 2:
            raise ValueError(f"the corrector size must be in (0, 2), got {size}")
        z = randn(x.shape, generator, x)
        eps = size * self.langevin_cap(t).to(device=x.device, dtype=x.dtype)
        return self.project(x + eps * score + (2 * eps).sqrt() * z)

    def langevin_cap(self, t: int) -> Tensor:
        """The largest Langevin step at the marginal of x_t: the smallest noise variance of
        transition t in any direction (``transition_variance`` where the noise is isotropic)."""
        return self.transition_variance(t)

    # -- configuration ----------------------------------------------------------------------
    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The JSON parameters that, with the buffers, rebuild this process exactly."""

    def buffers(self) -> dict[str, Tensor]:
        """Fitted arrays that are part of the process (empty for most processes)."""
        return {}

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable configuration: process kind, T, parameters and buffer digests."""
        cfg = {"format": CONFIG_FORMAT, "process": self.kind, "T": self.T, **self._params()}
        bufs = self.buffers()
        if bufs:
            cfg["buffers"] = {
                k: {"shape": list(v.shape), "sha256": tensor_digest(v)} for k, v in bufs.items()
            }
        return cfg

    @property
    def config_hash(self) -> str:
        """Stable SHA-256 of the canonical configuration JSON (buffers enter through digests)."""
        return hashlib.sha256(canonical_json(self.to_config()).encode()).hexdigest()

    @classmethod
    def config_params(cls, config: Mapping[str, Any], keys: Any) -> dict[str, Any]:
        """``{k: config[k]}`` for the parameters ``keys``, a key missing from an earlier
        version's config taking its value from :attr:`config_defaults` (else a KeyError)."""
        return {k: config[k] if k in config else cls.config_defaults[k] for k in keys}

    def describe(self) -> str:
        """One line for people: kind, variant or instance, T and the schedule, e.g.
        ``kuramoto local T=100 schedule=local-100``, from :meth:`to_config` alone."""
        return self.describe_config(self.to_config())

    @classmethod
    def describe_config(cls, config: Mapping[str, Any]) -> str:
        """:meth:`describe` of the process ``config`` records (no buffers needed). A named
        schedule stands for its endpoints, which are shown only when it has no name."""
        parts = [str(config["process"])]
        parts += [str(config[k]) for k in cls.describe_keys if config.get(k) is not None]
        parts.append(f"T={config['T']}")
        for key in cls.schedule_keys:
            value = config.get(key)
            if value is None or (key == "endpoints" and config.get("schedule")):
                continue
            items = value.items() if isinstance(value, Mapping) else [(key, value)]
            parts += [f"{k}={_short(v)}" for k, v in items]
        return " ".join(parts)

    @classmethod
    @abstractmethod
    def create(cls, *, steps: int, schedule: str | None, example: Tensor, **params: Any) -> Process:
        """Build for data like ``example`` (a data-space batch (B, *S)) from CLI-level options.

        ``schedule`` is a named schedule or a custom ``"key=start:end,..."`` string (or None for
        the default of ``steps``); ``params`` are process-specific keyword options.
        """

    @classmethod
    @abstractmethod
    def from_config(
        cls, config: dict[str, Any], buffers: dict[str, Tensor] | None = None
    ) -> Process:
        """Rebuild exactly the process that wrote ``config``."""

    def to(self, device: torch.device | str) -> Process:
        """Move schedule tensors and buffers to ``device`` (in place); returns self."""
        for name, value in list(vars(self).items()):
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({canonical_json(self._params())[:200]})"


def _short(value: Any) -> str:
    """A config value in a few characters: numbers with 4 significant digits, pairs as a:b."""
    if isinstance(value, list | tuple):
        return ":".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def check_options(cls: type[Process], options: Mapping[str, Any], name: str | None = None) -> None:
    """Reject options that process class ``cls`` does not declare in :attr:`Process.options`,
    in one line that lists those it takes; ``name`` is the process's CLI name (default: its
    config kind)."""
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        takes = ", ".join(sorted(cls.options)) or "none"
        raise ValueError(
            f"process {name or cls.kind} has no option{s} {', '.join(map(repr, unknown))}; "
            f"it takes: {takes}"
        )


def check_buffers(config: dict[str, Any], buffers: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """Verify that ``buffers`` are exactly those whose digests ``config`` records."""
    expected = config.get("buffers", {})
    buffers = buffers or {}
    if set(expected) != set(buffers):
        raise ValueError(
            f"process config expects buffers {sorted(expected)}, got {sorted(buffers)}"
        )
    for name, meta in expected.items():
        if tensor_digest(buffers[name]) != meta["sha256"]:
            raise ValueError(f"buffer {name!r} does not match the digest in the process config")
    return buffers


def check_config_kind(cls: type[Process], config: dict[str, Any]) -> None:
    if config.get("format") != CONFIG_FORMAT:
        raise ValueError(
            f"process config format {config.get('format')!r} is not supported "
            f"(this version reads format {CONFIG_FORMAT})"
        )
    if config.get("process") != cls.kind:
        raise ValueError(f"config is for process {config.get('process')!r}, not {cls.kind!r}")
