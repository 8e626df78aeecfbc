"""Paper A's forward chains: order parameter, empirical SNR, terminal von Mises, snapshot strips.

For each chain (local, global, reference-only Kuramoto with table 5's schedules, and the VP chain
of A's SGM baseline) and each T, R replicate chains are run from N training images. Per step:
r(t) (A eq. 4, mean over images), the empirical SNR (Var over images of E[z_t | x_0] over the
mean Var(z_t | x_0), z = (cos theta, sin theta) for phases, z = x for VP; see ``measures``) and the
pooled histogram of the state. At T: the von Mises fitted to all terminal phases against eq. 7's
prediction. "Steps to terminal" are the first t with SNR <= 0.01 and the first t whose pooled
histogram is within KL 0.01 nats of the terminal one (thresholds fixed before any run).
"""

from __future__ import annotations

import math
import time
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from orient.dynamics import create_process
from orient.dynamics.wrapped import fit_von_mises_kappa
from orient.pipeline.blocks import derive_seed
from orient.pipeline.datasets import load_dataset, split_indices

from . import figures
from .common import Options, Report, Run, write_outputs
from .measures import (
    empirical_snr,
    first_below,
    histogram_kl,
    normal_bin_probs,
    phase_features,
    von_mises_bin_probs,
    von_mises_density,
    von_mises_kl,
)
from .tables import Table

CHAINS = {  # key -> (label, registry name)
    "local": ("local", "kuramoto-local"),
    "global": ("global", "kuramoto-global"),
    "ref": ("reference-only", "kuramoto-ref"),
    "vp": ("VP (SGM)", "vp"),
}
SNR_THRESHOLD = 0.01
KL_THRESHOLD = 0.01
BINS = 64
PHASE_EDGES = np.linspace(-math.pi, math.pi, BINS + 1)
VP_EDGES = np.linspace(-4.5, 4.5, BINS + 1)  # values beyond are counted in the outer bins


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sources": 4, "replicates": 2, "size": 16, "steps": [100], "snapshots": 5}
    return {"sources": 64, "replicates": 4, "size": 32, "steps": [100, 300, 1000], "snapshots": 9}


def training_images(n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` images of the seeded training split of synthetic fingerprints (test fraction 0.25)."""
    total = math.ceil(n / 0.75) + 1
    ds = load_dataset("synthetic-fingerprints", n=total, size=size, seed=seed)
    train, _ = split_indices(len(ds.data), 0.25, seed)
    return torch.from_numpy(ds.data[train[:n]])


def simulate(key: str, T: int, x0: torch.Tensor, R: int, seed: int, n_snap: int) -> dict[str, Any]:
    """Run R replicate chains of ``key`` from every image in x0 and collect the statistics."""
    proc = create_process(CHAINS[key][1], steps=T, example=x0)
    periodic = proc.periodic
    edges = PHASE_EDGES if periodic else VP_EDGES
    g = torch.Generator().manual_seed(derive_seed(seed, "kuramoto-forward", key, T))
    x = proc.data_to_state(x0).repeat(R, 1, 1, 1)  # replicate-major rows
    snap_t = set(np.linspace(0, T, n_snap).round().astype(int).tolist())
    snaps: dict[int, np.ndarray] = {0: proc.state_to_data(x[:2]).numpy()}
    r_t, snr_t, hists = [], [], []
    for t in range(1, T + 1):
        x = proc.step(x, t, g)
        z = phase_features(x) if periodic else x
        snr_t.append(empirical_snr(z, R))
        if periodic:
            r_t.append(float(proc.order_parameter(x).mean()))
        values = x.numpy().ravel()
        hists.append(np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0])
        if t in snap_t:
            snaps[t] = proc.state_to_data(x[:2]).numpy()
    kl_to_terminal = [histogram_kl(h, hists[-1] / hists[-1].sum()) for h in hists]
    out: dict[str, Any] = {
        "snr": snr_t,
        "r": r_t,
        "kl_to_terminal": kl_to_terminal,
        "t_snr": first_below(snr_t, SNR_THRESHOLD),
        "t_kl": first_below(kl_to_terminal, KL_THRESHOLD),
        "snapshots": snaps,
        "terminal": x.numpy().ravel(),
    }
    if periodic:
        loc, kappa_fit = fit_von_mises_kappa(x)
        r_T = r_t[-1]
        k_eq7 = proc.eq7_kappa(r_T)
        k_prior = proc.kappa
        out.update(
            r_T=r_T,
            loc_fit=loc,
            kappa_fit=kappa_fit,
            kappa_eq7=k_eq7,
            kappa_prior=k_prior,
            vm_kl=von_mises_kl(loc, kappa_fit, proc.psi_ref, k_eq7),
            kl_eq7=histogram_kl(hists[-1], von_mises_bin_probs(edges, proc.psi_ref, k_eq7)),
            kl_prior=histogram_kl(hists[-1], von_mises_bin_probs(edges, proc.psi_ref, k_prior)),
        )
    else:
        out.update(
            std_T=float(x.std()),
            kl_prior=histogram_kl(hists[-1], normal_bin_probs(edges)),
        )
    return out


def run(opts: Options) -> Report:
    """``orient reproduce kuramoto-forward``."""
    t0 = time.perf_counter()
    run_ = Run("kuramoto-forward", opts)
    cfg = settings(opts.quick)
    x0 = training_images(cfg["sources"], cfg["size"], opts.seed)
    R = cfg["replicates"]
    res: dict[int, dict[str, dict[str, Any]]] = {}
    for T in cfg["steps"]:
        res[T] = {}
        for key in CHAINS:
            run_.say(f"T={T} {key}: {len(x0)} images x {R} replicates")
            with run_.timed(f"T{T}/{key}"):
                res[T][key] = simulate(key, T, x0, R, opts.seed, cfg["snapshots"])
    table = Table(
        f"kuramoto-forward: {len(x0)} synthetic fingerprints {cfg['size']}x{cfg['size']}, "
        f"{R} replicate chains each",
        ["chain", "T", "r(T)", "kappa fitted", "kappa eq.7 (r(T))", "kappa prior (r=0.5)",
         "KL(vM fit||eq.7)", "KL(x_T||eq.7)", "KL(x_T||prior)", "t: SNR<=0.01",
         "t: KL(x_t||x_T)<=0.01"],
    )  # fmt: skip
    for T in cfg["steps"]:
        for key, (label, _) in CHAINS.items():
            s = res[T][key]
            if key == "vp":
                table.add(label, T, None, None, None, None, None, None, s["kl_prior"],
                          s["t_snr"], s["t_kl"])  # fmt: skip
            else:
                table.add(label, T, s["r_T"], s["kappa_fit"], s["kappa_eq7"], s["kappa_prior"],
                          s["vm_kl"], s["kl_eq7"], s["kl_prior"], s["t_snr"], s["t_kl"])  # fmt: skip
    table.notes = [
        "paper A gives no numbers for these (fig. 6 is a plot, eq. 7 the prediction in column "
        "'kappa eq.7'); claim under test: the Kuramoto chains reach their terminal law in fewer "
        "steps than VP",
        "KL(x_T||.) are histogram KLs (64 bins) of all terminal values pooled; the prior of VP is "
        "N(0, 1); '—' in a t column: never within T",
    ]
    _figures(run_, res, cfg)
    record = {
        str(T): {
            k: {kk: v for kk, v in s.items() if kk not in ("snapshots", "terminal")}
            for k, s in by.items()
        }
        for T, by in res.items()
    }
    report = Report("kuramoto-forward", [table], run_.figures, record, time.perf_counter() - t0)
    write_outputs(
        run_,
        report,
        {**cfg, "snr_threshold": SNR_THRESHOLD, "kl_threshold": KL_THRESHOLD, "bins": BINS,
         "dataset": "synthetic-fingerprints", "test_fraction": 0.25},
    )  # fmt: skip
    return report


def _figures(run: Run, res: dict[int, dict[str, dict[str, Any]]], cfg: dict[str, Any]) -> None:
    steps = cfg["steps"]

    def frac(n: int, T: int) -> np.ndarray:
        return np.arange(1, n + 1) / T

    panels = [
        (f"T = {T}", {k: (frac(T, T), res[T][k]["r"]) for k in CHAINS if k != "vp"}) for T in steps
    ]
    run.save_figure(figures.curve_panels(panels, "t / T", "order parameter r(t)"), "order")
    panels = [(f"T = {T}", {k: (frac(T, T), res[T][k]["snr"]) for k in CHAINS}) for T in steps]
    fig = figures.curve_panels(panels, "t / T", "empirical SNR", logy=True, hline=SNR_THRESHOLD)
    run.save_figure(fig, "snr")
    panels = [
        (f"T = {T}", {k: (frac(T, T), res[T][k]["kl_to_terminal"]) for k in CHAINS}) for T in steps
    ]
    fig = figures.curve_panels(panels, "t / T", "KL(x_t || x_T), pooled histograms", logy=True,
                               hline=KL_THRESHOLD)  # fmt: skip
    run.save_figure(fig, "kl_to_terminal")
    # terminal phases vs eq. 7's von Mises (rows T, columns chains)
    kur = [k for k in CHAINS if k != "vp"]
    fig, axes = plt.subplots(len(steps), len(kur), figsize=(3.3 * len(kur), 2.5 * len(steps)),
                             squeeze=False)  # fmt: skip
    grid = np.linspace(-math.pi, math.pi, 400)
    for i, T in enumerate(steps):
        for j, k in enumerate(kur):
            s, ax = res[T][k], axes[i][j]
            ax.hist(s["terminal"], bins=PHASE_EDGES, density=True, color="lightgray")
            ax.plot(grid, von_mises_density(grid, s["loc_fit"], s["kappa_fit"]), "k-", lw=1,
                    label=f"fitted k={s['kappa_fit']:.2f}")  # fmt: skip
            ax.plot(grid, von_mises_density(grid, 0.0, s["kappa_eq7"]), "r--", lw=1,
                    label=f"eq.7 k={s['kappa_eq7']:.2f}")  # fmt: skip
            ax.set_title(f"{CHAINS[k][0]}, T = {T}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
    fig.tight_layout()
    run.save_figure(fig, "terminal")
    # forward strips at the smallest T (paper A fig. 1)
    T = steps[0]
    rows = []
    for k, (label, _) in CHAINS.items():
        snaps = res[T][k]["snapshots"]
        times = sorted(snaps)
        for e in range(min(2, snaps[0].shape[0])):
            rows.append((f"{label} #{e + 1}", [snaps[t][e] for t in times]))
    fig = figures.image_rows(rows, [f"t={t}" for t in sorted(res[T]["vp"]["snapshots"])])
    run.save_figure(fig, "strip")
