"""Image-generation comparisons (paper A's Kuramoto vs SGM, paper C's SPDE instances).

Every arm of a (data set, T) cell is trained with the same network, budget and data split, sampled
with the reverse SDE from its own prior, and judged against the store's held-out split with the
weight-free metrics of ``orient.evaluation`` and, when asked, Inception FID/KID (offline weights).
A "data" row scores training images against the same held-out images: the floor of every metric
at this sample size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from orient import evaluation as ev
from orient.evaluation.image_metrics import orientation_stats_distance

from . import figures
from .common import ArmResult, ArmSpec, Budget, Run, run_arm
from .tables import Table

METRICS = ("fid", "kid", "swd", "spectrum", "orientation")
METRIC_COLUMNS = ["FID", "KID", "SWD patches", "spectrum L1 log10", "orientation dist."]


@dataclass
class ImageCell:
    """One (data set, T) cell: its arms and budget."""

    dataset: str
    data_options: dict[str, Any]
    steps: int
    arms: list[ArmSpec]
    budget: Budget


def check_inception(wanted: bool) -> None:
    if wanted and not ev.inception_available():
        raise ValueError(
            "Inception FID/KID needs the metrics extra (pip install 'orient[metrics]'); "
            "or pass --no-inception"
        )


class Scorer:
    """Metrics of image sets against one held-out set, with its Inception features cached."""

    def __init__(self, reference: np.ndarray, inception: bool, seed: int, quick: bool) -> None:
        self.reference = reference
        self.inception = inception
        self.seed = seed
        # quick mode checks structure only: fewer random patches and projections for the SWD
        self.swd = {"n_patches": 1024, "n_projections": 64} if quick else {}
        self._ref_stats = ev.orientation_statistics(reference)
        self._ref_features: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> dict[str, float | None]:
        stats = ev.orientation_statistics(x)
        out: dict[str, float | None] = {
            "swd": ev.sliced_wasserstein_patches(x, self.reference, seed=self.seed, **self.swd),
            "spectrum": ev.power_spectrum_distance(x, self.reference),
            "orientation": orientation_stats_distance(stats, self._ref_stats),
            "coherence": stats.mean_coherence,
            "fid": None,
            "kid": None,
        }
        if self.inception:
            if self._ref_features is None:
                self._ref_features = ev.inception_features(self.reference)
            f = ev.inception_features(x)
            out["fid"] = ev.fid_from_features(f, self._ref_features)
            out["kid"] = ev.kid_from_features(f, self._ref_features, seed=self.seed)[0]
        return out


def run_cells(
    run: Run, cells: list[ImageCell]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, ArmResult]]]:
    """Train, sample and score every arm of every cell; one Scorer per data set."""
    scores: dict[str, dict[str, Any]] = {}
    results: dict[str, dict[str, ArmResult]] = {}
    scorers: dict[str, Scorer] = {}
    try:
        for cell in cells:
            cid = cell_id(cell)
            scores[cid], results[cid] = {}, {}
            for spec in cell.arms:
                res = run_arm(run, spec, cell.budget, tag=f"{cid}-")
                results[cid][spec.key] = res
                if cell.dataset not in scorers:
                    scorers[cell.dataset] = Scorer(
                        res.held_out, run.opts.inception, run.opts.seed, run.opts.quick
                    )
                    with run.timed(f"{cell.dataset}/score-data"):
                        n = len(res.samples)
                        scores.setdefault("data", {})[cell.dataset] = scorers[cell.dataset](
                            res.train_data[:n]
                        )
                run.say(f"{spec.label}: scoring {len(res.samples)} samples")
                with run.timed(f"{cid}-{spec.key}/score"):
                    scores[cid][spec.key] = scorers[cell.dataset](res.samples)
    finally:
        run.close()
    return scores, results


def cell_id(cell: ImageCell) -> str:
    return f"{cell.dataset}-T{cell.steps}"


def results_table(
    title: str,
    cells: list[ImageCell],
    scores: dict[str, dict[str, Any]],
    paper_fid: Callable[[str, str, int], float | None],
    paper_label: str,
) -> Table:
    """Rows (data set, T, model) with the paper's FID beside our metrics; a data row per data set."""
    table = Table(title, ["data set", "T", "model", paper_label, *METRIC_COLUMNS])
    seen: set[str] = set()
    for cell in cells:
        if cell.dataset not in seen:
            seen.add(cell.dataset)
            d = scores["data"][cell.dataset]
            table.add(cell.dataset, None, "data (train split)", None, *(d[m] for m in METRICS))
        for spec in cell.arms:
            s = scores[cell_id(cell)][spec.key]
            table.add(cell.dataset, cell.steps, spec.label, paper_fid(cell.dataset, spec.key, cell.steps),
                      *(s[m] for m in METRICS))  # fmt: skip
    return table


def cell_figures(
    run: Run, cells: list[ImageCell], results: dict[str, dict[str, ArmResult]]
) -> None:
    """Per cell: a sample grid (data row first) and the reverse trajectory of one sample per arm."""
    for cell in cells:
        cid = cell_id(cell)
        res = results[cid]
        first = next(iter(res.values()))
        k = min(12, len(first.samples))
        spread = np.linspace(0, len(first.held_out) - 1, k).round().astype(int)  # all classes
        rows = [("data (held-out)", first.held_out[spread])]
        rows += [(r.spec.label, r.samples[:k]) for r in res.values()]
        run.save_figure(figures.image_rows(rows), f"samples_{cid}")
        traj_rows = [
            (r.spec.label, [s[0] for s in r.trajectory]) for r in res.values() if r.trajectory
        ]
        if traj_rows:
            steps = first.trajectory_steps
            fig = figures.image_rows(traj_rows, [f"t={t}" for t in steps])
            run.save_figure(fig, f"reverse_{cid}")


def scores_record(
    scores: dict[str, dict[str, Any]], results: dict[str, dict[str, ArmResult]]
) -> dict[str, Any]:
    arms = {
        cid: {
            k: {
                "label": r.spec.label,
                "process": r.spec.process,
                "steps": r.spec.steps,
                "schedule": r.spec.schedule,
                "process_options": r.spec.process_options,
                "process_config": {kk: v for kk, v in r.process_config.items() if kk != "buffers"},
                "seconds": r.seconds,
                "n_train": len(r.train_data),
                "n_held_out": len(r.held_out),
                "n_samples": len(r.samples),
            }
            for k, r in by.items()
        }
        for cid, by in results.items()
    }
    return {"scores": scores, "arms": arms}
