"""Paper B: GOU vs isotropic DDPM on the two-Gaussian mixture (7.1) and on simulated SNPs (7.2).

Both arms share the data split, the network (``mlp-small``; widened to 1024 for the 1000 SNPs), the
training budget and the number of steps T; they differ only in the forward process: ``gou`` (fitted to the training split) against
``vp`` (paper A's linear-beta VP chain for T, started from N(0, I)). Data are used as generated (no
standardisation) for both arms, as B describes its baseline.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from orient import evaluation as ev

from . import figures, paper
from .common import ArmResult, ArmSpec, Budget, Options, Report, Run, run_arm, write_outputs
from .measures import coordinate_errors, outside_fraction
from .tables import Table

# B leaves these open; chosen before any run, never tuned (docs/results.md).
GOU_OPTIONS: dict[str, Any] = {
    "a": 0.2,
    "b": 2.0,
    "gamma": 0.8,
    "beta": 2.0,
    "horizon": 2.0,
    "n_anchors": 8,
    "anchor_mode": "kmeans",
}
MOG_DATA = {"n": 2000, "separation": 6.0, "std": 1.0, "weight": 0.5}
SNP_DATA = {"n": 500, "d": 1000, "block": 50, "rho": 0.9, "maf_low": 0.05, "maf_high": 0.5}
STEPS = 100


def arms(steps: int) -> list[ArmSpec]:
    return [
        ArmSpec("iso", "isotropic DDPM", "vp", steps),
        ArmSpec("gou", "GOU", "gou", steps, None, dict(GOU_OPTIONS)),
    ]


def mog_budget(quick: bool, seed: int) -> Budget:
    if quick:
        return Budget(
            dataset="gmm2d",
            data_options={**MOG_DATA, "n": 200, "seed": seed},
            test_fraction=0.5,
            M=2,
            every=10,
            model="mlp-tiny",
            batch_size=16,
            max_steps=15,
            n_samples=100,
            sample_batch=100,
        )
    return Budget(
        dataset="gmm2d",
        data_options={**MOG_DATA, "seed": seed},
        test_fraction=0.5,
        M=5,
        every=1,
        model="mlp-small",
        batch_size=64,
        lr=1e-3,
        max_steps=3000,
        n_samples=1000,
        sample_batch=1000,
    )


def snp_budget(quick: bool, seed: int) -> Budget:
    if quick:
        return Budget(
            dataset="snp",
            data_options={**SNP_DATA, "n": 60, "d": 40, "block": 10, "seed": seed},
            test_fraction=0.2,
            M=2,
            tuples_per_chain=5,
            epochs=1,
            model="mlp-tiny",
            batch_size=16,
            max_steps=15,
            n_samples=60,
            sample_batch=60,
        )
    # hidden >= d: a narrower ResMLP cannot even represent the score's linear part in d = 1000
    # dimensions, and both arms' reverse chains then diverge (docs/results.md, first attempt)
    return Budget(
        dataset="snp",
        data_options={**SNP_DATA, "seed": seed},
        test_fraction=0.2,
        M=1,
        tuples_per_chain=25,
        epochs=2,
        model="mlp-small",
        model_overrides={"hidden": 1024, "depth": 2},
        batch_size=64,
        lr=1e-3,
        max_steps=1500,
        n_samples=500,
        sample_batch=500,
    )


def _run_arms(run: Run, budget: Budget) -> dict[str, ArmResult]:
    out = {}
    try:
        for spec in arms(STEPS):
            out[spec.key] = run_arm(run, spec, budget)
    finally:
        run.close()
    return out


def _paper_pair(ref: dict[str, tuple[float | None, float | None]], key: str) -> list[Any]:
    iso, gou = ref.get(key, (None, None))
    return [iso, gou]


def _forward_snapshots(run: Run, results: dict[str, ArmResult], n: int = 1000) -> Any:
    """Paper B fig. 1: forward states of both processes from training data at 5 times."""
    from orient.trainer.checkpoint import load_checkpoint, process_from_checkpoint

    rows = []
    for key in ("iso", "gou"):
        res = results[key]
        proc = process_from_checkpoint(load_checkpoint(res.checkpoint))
        x0 = torch.from_numpy(res.train_data[:n]).float()
        g = torch.Generator().manual_seed(run.opts.seed)
        xs = proc.simulate(proc.data_to_state(x0), g)
        times = np.linspace(0, proc.T, 5).round().astype(int)
        panels = [(f"t = {t}", proc.state_to_data(xs[t]).numpy()) for t in times]
        rows.append((res.spec.label, panels))
    return figures.scatter_grid(rows)


def run_mog(opts: Options) -> Report:
    """``orient reproduce gou-mog``: B section 7.1 / table 1 / fig. 1."""
    t0 = time.perf_counter()
    run = Run("gou-mog", opts)
    budget = mog_budget(opts.quick, opts.seed)
    results = _run_arms(run, budget)
    ref = results["gou"].held_out
    floor = results["gou"].train_data[: len(ref)]
    rows: dict[str, dict[str, float]] = {}
    for key, x in (
        ("iso", results["iso"].samples),
        ("gou", results["gou"].samples),
        ("floor", floor),
    ):
        m, s = coordinate_errors(x, ref)
        rep = ev.tabular_report(x, ref, w2_dims=2)
        rows[key] = {
            "mean_err_x1": float(m[0]),
            "mean_err_x2": float(m[1]),
            "std_err_x1": float(s[0]),
            "std_err_x2": float(s[1]),
            "cov_frobenius": rep["cov_frobenius"],
            "corr_frobenius": rep["corr_frobenius"],
            "w2_x1": rep["w2_dim0"],
            "w2_x2": rep["w2_dim1"],
            "kl_hist": rep["kl_joint2d"],
            "outside": outside_fraction(x, ref),
        }
    names = {
        "mean_err_x1": "mean abs. error x1",
        "mean_err_x2": "mean abs. error x2",
        "std_err_x1": "std error x1",
        "std_err_x2": "std error x2",
        "cov_frobenius": "covariance Frobenius error",
        "corr_frobenius": "correlation Frobenius error",
        "w2_x1": "W2 x1",
        "w2_x2": "W2 x2",
        "kl_hist": "KL (joint 2-D histogram, 30x30)",
        "outside": "share of samples > 5 ranges outside the data",
    }
    table = Table(
        f"gou-mog: two-Gaussian mixture, generated vs held-out ({len(ref)} points)",
        ["metric", "paper iso", "paper GOU", "ours iso", "ours GOU", "ours iso/GOU", "data floor"],
    )
    for key, label in names.items():
        iso, gou = rows["iso"][key], rows["gou"][key]
        table.add(
            label, *_paper_pair(paper.GOU_MOG, key), iso, gou, _ratio(iso, gou), rows["floor"][key]
        )
    table.notes = [
        f"paper: {paper.GOU_MOG_SOURCE}; data floor: {len(floor)} training points vs the held-out set",
        f"T = {STEPS} for both; {budget.model}, {budget.max_steps} steps of {budget.batch_size} "
        f"tuples x M = {budget.M}; {budget.n_samples} samples (reverse SDE)",
    ]
    data_panel = ("held-out data", ref)
    fig = figures.scatter_panels(
        [data_panel]
        + [(f"{results[k].spec.label} samples", results[k].samples) for k in ("iso", "gou")]
    )
    run.save_figure(fig, "scatter")
    run.save_figure(_forward_snapshots(run, results), "forward")
    record = {"metrics": rows, "arms": _arm_records(results)}
    report = Report("gou-mog", [table], run.figures, record, time.perf_counter() - t0)
    write_outputs(run, report, _settings(budget))
    return report


def to_genotypes(x: np.ndarray) -> np.ndarray:
    """Continuous samples -> genotypes {0, 1, 2} (clip to [0, 2], round)."""
    return np.clip(np.rint(x), 0.0, 2.0)


def snp_metrics(x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    rep = ev.tabular_report(x, ref, w2_dims=5)
    return {
        "mean_err": rep["mean_mae"],
        "std_err": rep["std_mae"],
        "cov_frobenius": rep["cov_frobenius"],
        "corr_frobenius": rep["corr_frobenius"],
        "w2_first5": rep["w2_mean"],
        "kl_hist": rep["kl_marginal"],
        "outside": outside_fraction(x, ref),
    }


def run_snp(opts: Options) -> Report:
    """``orient reproduce gou-snp``: B section 7.2 / table 2 / fig. 2."""
    t0 = time.perf_counter()
    run = Run("gou-snp", opts)
    budget = snp_budget(opts.quick, opts.seed)
    results = _run_arms(run, budget)
    ref = results["gou"].held_out
    floor = results["gou"].train_data[: len(ref)]
    metrics: dict[str, dict[str, dict[str, float]]] = {"genotypes": {}, "raw": {}}
    for key in ("iso", "gou"):
        s = results[key].samples
        metrics["genotypes"][key] = snp_metrics(to_genotypes(s), ref)
        metrics["raw"][key] = snp_metrics(s, ref)
    metrics["genotypes"]["floor"] = metrics["raw"]["floor"] = snp_metrics(floor, ref)
    names = {
        "mean_err": "mean error",
        "std_err": "std error",
        "cov_frobenius": "covariance Frobenius",
        "corr_frobenius": "correlation Frobenius",
        "w2_first5": "W2 (first 5 SNPs)",
        "kl_hist": "KL (marginal histograms)",
        "outside": "share of samples > 5 ranges outside the data",
    }
    d = ref.shape[1]
    tables = []
    for kind, title in (
        ("genotypes", "samples rounded to genotypes {0, 1, 2}"),
        ("raw", "raw continuous samples"),
    ):
        table = Table(
            f"gou-snp: {d} SNPs, {title}, vs held-out ({len(ref)} individuals)",
            [
                "metric",
                "paper iso",
                "paper GOU",
                "ours iso",
                "ours GOU",
                "ours iso/GOU",
                "data floor",
            ],
        )
        for key, label in names.items():
            iso, gou = metrics[kind]["iso"][key], metrics[kind]["gou"][key]
            table.add(
                label,
                *_paper_pair(paper.GOU_SNP, key),
                iso,
                gou,
                _ratio(iso, gou),
                metrics[kind]["floor"][key],
            )
        table.notes = [
            f"paper: {paper.GOU_SNP_SOURCE}; data floor: {len(floor)} training individuals vs held-out",
            f"T = {STEPS}; {budget.model} {budget.model_overrides or ''}, {budget.max_steps} steps "
            f"of {budget.batch_size} tuples x M = {budget.M}; {budget.n_samples} samples",
        ]
        tables.append(table)
    k = min(100, d)  # two LD blocks; each entry several pixels wide
    data = results["gou"].train_data
    fig = figures.heatmaps(
        [
            (f"data (training split, n={len(data)})", ev.covariance(data[:, :k])),
            ("isotropic DDPM samples", ev.covariance(to_genotypes(results["iso"].samples)[:, :k])),
            ("GOU samples", ev.covariance(to_genotypes(results["gou"].samples)[:, :k])),
        ],
        vmax=float(np.abs(ev.covariance(data[:, :k])).max()),
    )
    fig.suptitle(f"covariance of the first {k} SNPs (samples rounded to genotypes)", fontsize=10)
    run.save_figure(fig, "covariance")
    record = {"metrics": metrics, "arms": _arm_records(results)}
    report = Report("gou-snp", tables, run.figures, record, time.perf_counter() - t0)
    write_outputs(run, report, _settings(budget))
    return report


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _arm_records(results: dict[str, ArmResult]) -> dict[str, Any]:
    return {
        k: {
            "label": r.spec.label,
            "process": r.spec.process,
            "steps": r.spec.steps,
            "process_options": r.spec.process_options,
            "process_config": {kk: v for kk, v in r.process_config.items() if kk != "buffers"},
            "seconds": r.seconds,
            "n_train": len(r.train_data),
            "n_held_out": len(r.held_out),
        }
        for k, r in results.items()
    }


def _settings(budget: Budget) -> dict[str, Any]:
    from dataclasses import asdict

    return {"budget": asdict(budget), "steps": STEPS, "gou_options": GOU_OPTIONS}
