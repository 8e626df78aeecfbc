"""Paper C: the anisotropic, isotropic-heat and VE instances of the stochastic Perona-Malik SPDE.

``spde-forward`` measures edge preservation along each forward chain: with R replicate chains per
image, the gradient energy of E[x_t | x_0] (replicate mean, unbiased for the replicate noise) at
each image's strongest 10 % of pixels ("edges", by |grad x_0|) and at the other 90 %, both relative
to x_0's; their ratio (selectivity) and the edge energy over the noise's gradient energy (edge SNR).
``spde-generate`` trains the three instances with the same network and budget and compares samples.

Steps: paper C uses horizon 2 with h = 0.001 (T = 2000). The explicit scheme is stable for
max alpha1 * h <= 1/4, i.e. T >= 4 * (2 * image size) * horizon (512 at 32 x 32), so both
experiments use that T with C's parameters otherwise unchanged (quick mode: horizon 0.5).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from orient.dynamics import create_process
from orient.dynamics.spde import DEFAULT_HORIZON
from orient.pipeline.blocks import derive_seed
from orient.pipeline.datasets import load_dataset, split_indices

from . import figures, paper
from .common import ArmSpec, Budget, Options, Report, Run, write_outputs
from .image_compare import (
    ImageCell,
    cell_figures,
    check_inception,
    results_table,
    run_cells,
    scores_record,
)
from .measures import edge_mask, edge_statistics
from .tables import Table

INSTANCES = (  # key, label, registry name
    ("anisotropic", "anisotropic", "spde-aniso"),
    ("heat", "isotropic heat", "spde-heat"),
    ("ve", "VE", "spde-ve"),
)
EDGE_FRACTION = 0.1
REPORT_AT = (0.25, 0.5, 0.75)


def stable_steps(size: int, horizon: float) -> int:
    """T = 4 * alpha1_max * horizon with alpha1_max = 2 * size (C's instances)."""
    return math.ceil(8 * size * horizon)


def horizon(quick: bool) -> float:
    """C's horizon 2; quick mode shortens it to 0.5 (4x fewer steps, same code path)."""
    return 0.5 if quick else DEFAULT_HORIZON


def forward_settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"datasets": ["synthetic-fingerprints"], "sources": 4, "replicates": 2, "size": 16,
                "snapshots": 5}  # fmt: skip
    return {"datasets": ["synthetic-fingerprints", "textures"], "sources": 32, "replicates": 4,
            "size": 32, "snapshots": 9}  # fmt: skip


def source_images(dataset: str, n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` images from the seeded training split (test fraction 0.25) of a data set."""
    if dataset == "textures":
        ds = load_dataset("textures", patch=size)
    else:
        ds = load_dataset(dataset, n=max(2 * n, 8), size=size, seed=seed)
    train, _ = split_indices(len(ds.data), 0.25, seed)
    return torch.from_numpy(ds.data[train[:n]])


def simulate_edges(
    name: str, x0: torch.Tensor, T: int, R: int, seed: int, n_snap: int, span: float
) -> dict[str, Any]:
    """Edge statistics at every step of R replicate chains from each image of x0."""
    proc = create_process(name, steps=T, example=x0, prior="noise", horizon=span)
    g = torch.Generator().manual_seed(derive_seed(seed, "spde-forward", name, T))
    mask = edge_mask(x0, EDGE_FRACTION)
    x = proc.data_to_state(x0).repeat(R, 1, 1, 1)
    snap_t = set(np.linspace(0, T, n_snap).round().astype(int).tolist())
    snaps = {0: x[:2].numpy()}
    series: dict[str, list[float]] = {"edge_kept": [], "flat_kept": [], "selectivity": [],
                                      "edge_snr": []}  # fmt: skip
    for t in range(1, T + 1):
        x = proc.step(x, t, g)
        for k, v in edge_statistics(x, x0, mask, R).items():
            series[k].append(v)
        if t in snap_t:
            snaps[t] = x[:2].numpy()
    return {"series": series, "snapshots": snaps}


def run_forward(opts: Options) -> Report:
    """``orient reproduce spde-forward``."""
    t0 = time.perf_counter()
    run = Run("spde-forward", opts)
    cfg = forward_settings(opts.quick)
    span = horizon(opts.quick)
    T, R = stable_steps(cfg["size"], span), cfg["replicates"]
    res: dict[str, dict[str, Any]] = {}
    for ds in cfg["datasets"]:
        x0 = source_images(ds, cfg["sources"], cfg["size"], opts.seed)
        res[ds] = {}
        for key, _, name in INSTANCES:
            run.say(f"{ds}: {name} T={T}, {len(x0)} images x {R} replicates")
            with run.timed(f"{ds}/{key}"):
                res[ds][key] = simulate_edges(name, x0, T, R, opts.seed, cfg["snapshots"], span)
    table = Table(
        f"spde-forward: share of x_0's gradient kept by E[x_t | x_0] at the strongest "
        f"{EDGE_FRACTION:.0%} of pixels (edges) and elsewhere, T = {T}",
        ["data set", "instance", "t/T", "edges kept", "elsewhere kept", "selectivity",
         "edge SNR"],
    )  # fmt: skip
    for ds in cfg["datasets"]:
        for key, label, _ in INSTANCES:
            s = res[ds][key]["series"]
            for f in REPORT_AT:
                i = max(0, round(f * T) - 1)
                table.add(ds, label, f, s["edge_kept"][i], s["flat_kept"][i], s["selectivity"][i],
                          s["edge_snr"][i])  # fmt: skip
    table.notes = [
        "paper C shows this only as pictures (fig. 1): no numbers to put beside ours; claim: "
        "the anisotropic drift keeps edges longer than isotropic smoothing (selectivity > 1)",
        "kept = sum grad x_t . grad x_0 / sum |grad x_0|^2 over the pixel set (replicates "
        "averaged); selectivity = edges kept / elsewhere kept; edge SNR = kept edge energy / "
        "gradient energy of the noise x_t - E[x_t|x_0]",
        f"T = {T} = the explicit stability limit at {cfg['size']}x{cfg['size']} for horizon "
        f"{span} (C: horizon 2, T = 2000, h = 0.001); C's alpha and lambda otherwise",
    ]
    _forward_figures(run, res, cfg, T)
    record = {ds: {k: v["series"] for k, v in by.items()} for ds, by in res.items()}
    report = Report("spde-forward", [table], run.figures, record, time.perf_counter() - t0)
    write_outputs(run, report, {**cfg, "steps": T, "horizon": span, "edge_fraction": EDGE_FRACTION,
                                "report_at": REPORT_AT, "test_fraction": 0.25})  # fmt: skip
    return report


def _forward_figures(run: Run, res: dict[str, Any], cfg: dict[str, Any], T: int) -> None:
    x = np.arange(1, T + 1) / T
    for ds, by in res.items():
        panels = [
            (title, {key: (x, by[key]["series"][metric]) for key, _, _ in INSTANCES})
            for metric, title in (
                ("edge_kept", "edges kept"),
                ("flat_kept", "elsewhere kept"),
                ("selectivity", "selectivity (edges / elsewhere)"),
                ("edge_snr", "edge SNR"),
            )
        ]
        fig = figures.curve_panels(panels, "t / T", "", logy=True)
        fig.suptitle(f"{ds}: share of x_0's gradient kept by E[x_t | x_0]", fontsize=10, y=1.02)
        run.save_figure(fig, f"edges_{ds}")
        rows = []
        for key, label, _ in INSTANCES:
            snaps = by[key]["snapshots"]
            for e in range(min(2, snaps[0].shape[0])):
                rows.append((f"{label} #{e + 1}", [snaps[t][e] for t in sorted(snaps)]))
        times = sorted(by[INSTANCES[0][0]]["snapshots"])
        run.save_figure(figures.image_rows(rows, [f"t={t}" for t in times]), f"strip_{ds}")


# -- generation ---------------------------------------------------------------------------------
def generate_cells(quick: bool, seed: int) -> list[ImageCell]:
    if quick:
        sets = [("synthetic-fingerprints", {"n": 24, "size": 16, "seed": seed}, 16)]
    else:
        sets = [
            ("synthetic-fingerprints", {"n": 768, "size": 32, "seed": seed}, 32),
            ("textures", {"patch": 32}, 32),
        ]
    cells = []
    span = horizon(quick)
    for ds, data_options, size in sets:
        T = stable_steps(size, span)
        common = {"dataset": ds, "data_options": data_options, "test_fraction": 0.25, "M": 1,
                  "model": "tiny", "lr": 1e-3}  # fmt: skip
        if quick:
            b = Budget(**common, tuples_per_chain=5, epochs=1, model_overrides={"base": 8},
                       batch_size=4, max_steps=5, n_samples=8, sample_batch=8, trajectory=4)  # fmt: skip
        else:
            b = Budget(**common, tuples_per_chain=25, epochs=2, model_overrides={"base": 16},
                       batch_size=32, max_steps=1000, n_samples=128, sample_batch=128,
                       trajectory=8)  # fmt: skip
        arms = [
            ArmSpec(key, label, name, T, None, {"horizon": span}) for key, label, name in INSTANCES
        ]
        cells.append(ImageCell(ds, data_options, T, arms, b))
    return cells


def _paper_fid(dataset: str, key: str, steps: int) -> float | None:
    return paper.SPDE_CIFAR10.get(key, {}).get("fid")


def run_generate(opts: Options) -> Report:
    """``orient reproduce spde-generate``."""
    check_inception(opts.inception)
    t0 = time.perf_counter()
    run = Run("spde-generate", opts)
    cs = generate_cells(opts.quick, opts.seed)
    scores, results = run_cells(run, cs)
    b = cs[0].budget
    table = results_table(
        "spde-generate: generated vs held-out images (lower is better everywhere)",
        cs,
        scores,
        _paper_fid,
        "paper FID (CIFAR-10)",
    )
    table.notes = [
        f"paper: {paper.SPDE_SOURCE}, 200k training steps; ours: other data, a {b.model} "
        f"{b.model_overrides} U-Net, {b.max_steps} steps of {b.batch_size} tuples (M = {b.M}), "
        f"{b.n_samples} samples: compare orderings, not values",
        "claim under test (C table 1): anisotropic better than the isotropic heat equation; "
        "C's anisotropic model (2.0) also beats the VE-SDE (7.1)",
        f"T = {cs[0].steps} (explicit stability limit at horizon "
        f"{cs[0].arms[0].process_options['horizon']}; C: horizon 2, T = 2000); sampling: reverse "
        "SDE from each instance's fitted DCT-Gaussian prior",
    ]
    cell_figures(run, cs, results)
    record = scores_record(scores, results)
    report = Report("spde-generate", [table], run.figures, record, time.perf_counter() - t0)
    write_outputs(run, report, {"cells": [asdict(c) for c in cs]})
    return report
