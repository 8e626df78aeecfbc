"""The three testing regimes of paper D (section III A) for a trained coupling function and its controls.

* data:      new features from the test set, networks of n = cfg.n (averaged over test networks);
* size:      one network of ``size_n`` oscillators from the training set (paper: all 10,000);
* data+size: one network of ``size_n`` oscillators from the test set.

Controls: an untrained network of the same architecture and degree normalisation (another seed),
and for labelled data the block coupling (+b within, -b across groups, b = the trained max |K_ij|).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .checkpoint import Checkpoint
from .config import CONTROL_INIT, EVAL_PHASES, derive_seed
from .coupling import BlockControl, CouplingNet, build_coupling, max_abs
from .data import CaseData, Features
from .simulate import initial_phases, simulate
from .train import init_net as _init_net
from .train import load_case, loss_function, resolve_device

REGIMES = ("data", "size", "data+size")

# Paper D, table I (circular variance) and table II (cluster loss): (trained, control) per regime.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "I": {"data": (0.0667, 0.7412), "size": (0.0681, 0.9172), "data+size": (0.0682, 0.9144)},
    "II": {"data": (0.1527, 0.7370), "size": (0.1823, 0.8969), "data+size": (0.1890, 0.9378)},
    "III": {"data": (0.3800, 0.8920), "size": (0.7026, 0.9707), "data+size": (0.6855, 0.9753)},
    "moons": {"data": (0.0154, 0.5), "size": (0.0012, 0.5), "data+size": (0.0011, 0.5)},
    "circles": {"data": (0.0257, 0.5), "size": (0.0015, 0.5), "data+size": (0.0021, 0.5)},
    "spirals": {"data": (0.0182, 0.5), "size": (0.0096, 0.5), "data+size": (0.0094, 0.5)},
    "gmm": {"data": (0.0144, 0.4904), "size": (0.0069, 0.5424), "data+size": (0.0073, 0.5711)},
    "image": {"data": (0.0376, 0.7464), "size": (0.0088, 0.8363), "data+size": (0.0093, 0.8360)},
}


def paper_values(case: str) -> dict[str, tuple[float, float]] | None:
    """The paper's (trained, control) values for ``case`` (GMMk: the table's average over k)."""
    return PAPER.get("gmm" if case.startswith("gmm") else case)


@dataclass
class Row:
    """One regime: losses of the trained model and the controls, with the paper's values."""

    regime: str
    n: int
    trained: float
    control: float
    block: float | None = None
    paper: float | None = None
    paper_control: float | None = None


@dataclass
class Trace:
    """Recorded dynamics of one model in one regime (for the figures)."""

    curve: Tensor  # loss per Euler step
    snapshots: dict[int, Tensor] = field(default_factory=dict)


@dataclass
class Evaluation:
    rows: list[Row]
    traces: dict[str, Trace]  # "trained" / "control" / "block" in the data+size regime
    metric: str
    dt: float


def control_net(ckpt: Checkpoint, feature_dim: int) -> CouplingNet:
    """The untrained control: same architecture and normalisation, seed (cfg.seed, CONTROL_INIT)."""
    return _init_net(ckpt.config, feature_dim, key=CONTROL_INIT).eval()


Progress = Callable[[str, int, int], None]  # (what, done, total)


def _run(
    ckpt: Checkpoint,
    feats: Features,
    coupling,
    generator: torch.Generator,
    record: bool = False,
    tick: Callable[[int, int], None] | None = None,
) -> tuple[float, Trace | None]:
    cfg = ckpt.config
    theta0 = initial_phases(feats.n, cfg.init, generator, feats.x.device)
    steps = snapshot_steps(cfg.integration.total) if record else ()
    with torch.no_grad():
        run = simulate(
            feats, coupling, cfg.integration, theta0, loss_function(feats), record, steps, tick
        )
    trace = (
        Trace(run.curve.cpu(), {k: v.cpu() for k, v in run.snapshots.items()}) if record else None
    )
    return float(run.loss), trace


def snapshot_steps(total: int, count: int = 6) -> tuple[int, ...]:
    """``count`` roughly equally spaced Euler steps from 0 to ``total``."""
    return tuple(sorted({round(i * total / (count - 1)) for i in range(count)}))


def score_network(
    ckpt: Checkpoint,
    feats: Features,
    nets: dict[str, CouplingNet],
    generator_seed: int,
    record: bool = False,
    max_dense_bytes: int = 2**31,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, tuple[float, Trace | None]]:
    """Window loss (and trace) of one network of oscillators under every model, same theta_0.

    Models: each net's couplings, plus the block control beside the trained net for labelled data.
    """
    cfg = ckpt.config
    out: dict[str, tuple[float, Trace | None]] = {}
    for name, net in nets.items():
        tick = (lambda d, t, w=f"{name} couplings": progress(w, d, t)) if progress else None
        k = build_coupling(
            net, feats.x, cfg.mode, cfg.avg_degree, cfg.symmetric, max_dense_bytes, tick=tick
        )
        models = {name: k}
        if name == "trained" and feats.labels is not None:
            models["block"] = BlockControl(feats.labels, max_abs(k))
        for m, coupling in models.items():
            gen = torch.Generator().manual_seed(generator_seed)
            tick = (lambda d, t, w=f"{m} dynamics": progress(w, d, t)) if progress else None
            out[m] = _run(ckpt, feats, coupling, gen, record, tick)
        del k, models
    return out


def evaluate(
    ckpt: Checkpoint,
    size_n: int | None = None,
    data_networks: int | None = None,
    device: str = "cpu",
    max_dense_bytes: int = 2**31,
    log: Callable[[str], None] = print,
    data: CaseData | None = None,
    progress: Progress | None = None,
    regimes: tuple[str, ...] = REGIMES,
) -> Evaluation:
    """Score ``ckpt`` and its controls in the three regimes (see the module docstring).

    ``progress(what, done, total)`` reports the test networks of the data regime and the coupling
    blocks and Euler steps of the size regimes.
    """
    cfg = ckpt.config
    unknown = set(regimes) - set(REGIMES)
    if unknown or not regimes:
        raise ValueError(f"unknown regimes {sorted(unknown)}; choose from {', '.join(REGIMES)}")
    dev = resolve_device(device)
    data = load_case(cfg) if data is None else data
    n_big = min(size_n or 10_000, data.train.n, data.test.n)
    if n_big < 2:
        raise ValueError(f"the size regimes need n >= 2 oscillators, got {n_big}")
    count = data.test.n // cfg.n
    count = count if data_networks is None else min(data_networks, count)
    if count < 1:
        raise ValueError(f"the test set has fewer than n = {cfg.n} oscillators")
    nets = {
        "trained": ckpt.net.to(dev).eval(),
        "control": control_net(ckpt, data.train.x.shape[1]).to(dev),
    }
    paper = paper_values(cfg.case) or {}
    rows: list[Row] = []
    traces: dict[str, Trace] = {}
    for r, regime in enumerate(REGIMES):
        if regime not in regimes:
            continue
        if regime == "data":
            parts = [data.test.subset(slice(b * cfg.n, (b + 1) * cfg.n)) for b in range(count)]
        else:
            parts = [(data.train if regime == "size" else data.test).subset(slice(0, n_big))]
        scores: dict[str, list[float]] = {}
        for b, part in enumerate(parts):
            big = regime != "data"
            sub = (
                (lambda w, d, t, g=regime: progress(f"{g} {w}", d, t)) if progress and big else None
            )
            seed = derive_seed(cfg.seed, EVAL_PHASES, r, b)
            record = regime == "data+size"
            result = score_network(ckpt, part.to(dev), nets, seed, record, max_dense_bytes, sub)
            for m, (value, trace) in result.items():
                scores.setdefault(m, []).append(value)
                if trace is not None:
                    traces[m] = trace
            if progress and not big:
                progress("data regime networks", b + 1, len(parts))
        mean = {m: sum(v) / len(v) for m, v in scores.items()}
        p = paper.get(regime, (None, None))
        rows.append(
            Row(regime, parts[0].n, mean["trained"], mean["control"], mean.get("block"), *p)
        )
        log(format_row(rows[-1]))
    metric = "cluster loss" if data.clustered else "circular variance V"
    return Evaluation(rows, traces, metric, cfg.dt)


def format_row(row: Row) -> str:
    block = "" if row.block is None else f"  block {row.block:.4f}"
    paper = "" if row.paper is None else f"  (paper {row.paper:.4f} vs {row.paper_control:.4f})"
    return f"{row.regime:>9} n={row.n:<6} trained {row.trained:.4f}  control {row.control:.4f}{block}{paper}"


def markdown_table(ev: Evaluation) -> str:
    """The results as a markdown table: ours next to the paper's (control values after the slash)."""
    has_block = any(r.block is not None for r in ev.rows)
    head = ["regime", "n", f"trained ({ev.metric})", "untrained control"]
    head += ["block control"] if has_block else []
    head += ["paper trained", "paper control"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "-" if v is None or math.isnan(v) else f"{abs(v) if abs(v) < 5e-5 else v:.4f}"  # noqa: E731
    for r in ev.rows:
        cells = [r.regime, f"{r.n:,}", fmt(r.trained), fmt(r.control)]
        cells += [fmt(r.block)] if has_block else []
        cells += [fmt(r.paper), fmt(r.paper_control)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(ev: Evaluation, ckpt: Checkpoint) -> dict[str, Any]:
    """The evaluation as JSON: rows, metric and the checkpoint's configuration."""
    return {
        "metric": ev.metric,
        "rows": [asdict(r) for r in ev.rows],
        "config": ckpt.config.to_json(),
        "training_steps": int(ckpt.history.numel()),
        "final_test_loss": float(ckpt.test_history[-1]) if ckpt.test_history.numel() else None,
    }
