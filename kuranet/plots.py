"""Figures of paper D: phase snapshots of trained vs control (fig. 2A) and sorted couplings (fig. 3B)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checkpoint import Checkpoint
from .coupling import BlockControl, dense_coupling
from .data import CaseData
from .evaluate import Evaluation, control_net

COLORS = {"trained": "tab:red", "control": "tab:blue", "block": "tab:green"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_phase_snapshots(
    ev: Evaluation, path: str | Path, max_points: int = 2000, seed: int = 0
) -> Path:
    """Phases on the unit circle at several times, one row per model, plus the loss over time.

    Oscillators are drawn as points at radius 1 + jitter (a random subsample of ``max_points``);
    the arrow is the order parameter R e^{i psi}.
    """
    plt = _pyplot()
    models = [m for m in ("trained", "control", "block") if m in ev.traces]
    steps = sorted(ev.traces[models[0]].snapshots)
    fig, axes = plt.subplots(
        len(models),
        len(steps) + 1,
        figsize=(2.2 * (len(steps) + 1), 2.4 * len(models)),
        squeeze=False,
    )
    rng = np.random.default_rng(seed)
    for i, m in enumerate(models):
        tr = ev.traces[m]
        for j, s in enumerate(steps):
            th = tr.snapshots[s].numpy()
            pick = rng.choice(th.size, min(max_points, th.size), replace=False)
            r = 1 + 0.08 * rng.standard_normal(pick.size)
            ax = axes[i, j]
            ax.scatter(
                r * np.cos(th[pick]),
                r * np.sin(th[pick]),
                s=1,
                alpha=0.3,
                color=COLORS[m],
                rasterized=True,
            )
            z = np.exp(1j * th).mean()
            ax.annotate(
                "",
                xy=(z.real, z.imag),
                xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "color": "k"},
            )
            ax.add_patch(plt.Circle((0, 0), 1, fill=False, lw=0.5, color="gray"))
            ax.set(xlim=(-1.4, 1.4), ylim=(-1.4, 1.4), aspect="equal", xticks=[], yticks=[])
            ax.set_title(f"t = {s * ev.dt:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(m, fontsize=10)
        axes[i, -1].axis("off")
    ax = axes[0, -1]
    ax.axis("on")
    for m in models:
        c = ev.traces[m].curve.numpy()
        ax.plot(ev.dt * np.arange(1, c.size + 1), c, color=COLORS[m], lw=1, label=m)
    ax.set(ylim=(0, 1.02), xlabel="t")
    ax.set_title(ev.metric, fontsize=9)
    ax.legend(fontsize=7)
    n = ev.traces[models[0]].snapshots[steps[0]].numel()
    fig.suptitle(
        f"data+size regime, n = {n:,} (points: {min(max_points, n):,} random oscillators)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def sort_order(x: Tensor, labels: Tensor | None) -> Tensor:
    """Indices sorting oscillators by label (then first feature), or by the first feature."""
    key = x[:, 0].double()
    if labels is not None:
        key = labels.double() * (1 + 2 * key.abs().max()) + key
    return torch.argsort(key)


def plot_coupling_matrices(
    mats: dict[str, Tensor], x: Tensor, labels: Tensor | None, path: str | Path, feature_name: str
) -> Path:
    """Coupling matrices (n x n each) with rows and columns sorted by cluster (or by the first feature)."""
    plt = _pyplot()
    order = sort_order(x, labels)
    fig, axes = plt.subplots(1, len(mats), figsize=(4.4 * len(mats), 4), squeeze=False)
    for ax, (name, k) in zip(axes[0], mats.items(), strict=True):
        ks = k[order][:, order].numpy()
        n = ks.shape[0]
        signed = bool((ks < 0).any())
        lim = float(np.quantile(np.abs(ks), 0.995)) or 1.0
        im = ax.imshow(
            n * ks,
            cmap="RdBu_r" if signed else "viridis",
            vmin=-n * lim if signed else 0,
            vmax=n * lim,
            interpolation="nearest",
        )
        fig.colorbar(im, ax=ax, fraction=0.046, label="n K_ij")
        ax.set_title(f"{name} (n = {n})", fontsize=10)
        if labels is not None:
            edges = np.cumsum(torch.bincount(labels[order]).numpy())[:-1]
            for e in edges:
                ax.axhline(e - 0.5, color="k", lw=0.5)
                ax.axvline(e - 0.5, color="k", lw=0.5)
            ax.set(xlabel="oscillator (sorted by cluster)", ylabel="oscillator")
        else:
            f = x[order, 0].numpy()
            ticks = np.linspace(0, n - 1, 5).astype(int)
            ax.set_xticks(ticks, [f"{f[t]:.2g}" for t in ticks])
            ax.set_yticks(ticks, [f"{f[t]:.2g}" for t in ticks])
            ax.set(xlabel=f"{feature_name}_j (sorted)", ylabel=f"{feature_name}_i (sorted)")
    fig.tight_layout()
    return _save(fig, path)


def plot_training(history: Tensor, test_history: Tensor, path: str | Path, metric: str) -> Path:
    """Training loss per gradient step (and a running mean) with the per-epoch test loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    h = history.numpy()
    ax.plot(np.arange(1, h.size + 1), h, lw=0.5, alpha=0.4, color="gray", label="batch")
    w = max(1, h.size // 50)
    if h.size >= w:
        ax.plot(
            np.arange(w, h.size + 1),
            np.convolve(h, np.ones(w) / w, "valid"),
            color="k",
            lw=1,
            label=f"mean of {w}",
        )
    if test_history.numel():
        per = h.size // test_history.numel()
        ax.plot(
            per * np.arange(1, test_history.numel() + 1),
            test_history.numpy(),
            "o-",
            color="tab:red",
            ms=3,
            label="test (end of epoch)",
        )
    ax.set(
        xlabel="gradient step", ylabel=metric, yscale="log" if h.size and h.min() > 0 else "linear"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(
    ckpt: Checkpoint, ev: Evaluation, data: CaseData, folder: str | Path, matrix_n: int = 1000
) -> list[Path]:
    """Phase snapshots (fig. 2A, if the data+size regime ran), sorted coupling matrices (fig. 3B)
    and the training curve."""
    cfg, folder = ckpt.config, Path(folder)
    paths = []
    if ev.traces:  # recorded in the data+size regime
        paths.append(plot_phase_snapshots(ev, folder / f"{cfg.case}-phases.png", seed=cfg.seed))
    feats = data.train.subset(slice(0, min(matrix_n, data.train.n)))
    mats = {}
    for name, net in (
        ("trained", ckpt.net.cpu().eval()),
        ("untrained control", control_net(ckpt, feats.x.shape[1])),
    ):
        mats[name] = dense_coupling(net, feats.x, cfg.mode, cfg.avg_degree, cfg.symmetric)
    if feats.labels is not None:
        mats["block control"] = BlockControl(
            feats.labels, float(mats["trained"].abs().max())
        ).dense()
    name = "feature" if feats.labels is not None else "omega"
    paths.append(
        plot_coupling_matrices(
            mats, feats.x, feats.labels, folder / f"{cfg.case}-couplings.png", name
        )
    )
    paths.append(
        plot_training(
            ckpt.history, ckpt.test_history, folder / f"{cfg.case}-training.png", ev.metric
        )
    )
    return paths
