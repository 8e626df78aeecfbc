"""``orient train``, ``orient sample`` and ``orient evaluate``."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .main import Interrupted, UserError, app
from .precompute import parse_pairs

DEFAULT_RUN = "runs/default"


@app.command()
def train(
    store: Annotated[
        str, typer.Option(help="Tuple store written by `orient precompute`.")
    ] = "cache.zarr",
    out: Annotated[str, typer.Option(help="Run folder for checkpoints and logs.")] = DEFAULT_RUN,
    model: Annotated[
        str,
        typer.Option(
            help="Model preset: tiny, small, paper (images); mlp-tiny, mlp-small (vectors)."
        ),
    ] = "auto",
    model_opt: Annotated[
        list[str] | None, typer.Option(help="Model option KEY=VALUE (repeatable), e.g. base=48.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Tuples per batch per rank (each has M draws).")
    ] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    ema: Annotated[float, typer.Option(help="EMA decay.")] = 0.995,
    grad_clip: Annotated[float, typer.Option(help="Gradient-norm clip.")] = 1.0,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many optimizer steps.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Stop after this many epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and data order.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    log_every: Annotated[int, typer.Option(help="Steps between log lines.")] = 50,
    loader_workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its newest checkpoint.")
    ] = False,
    recache: Annotated[
        bool, typer.Option(help="Write epoch e+1 in the background while training on e.")
    ] = False,
    keep_epochs: Annotated[int, typer.Option(help="With --recache: most epochs kept on disk.")] = 2,
    recache_workers: Annotated[
        int, typer.Option(help="With --recache: Dask workers writing epochs.")
    ] = 1,
    tensorboard: Annotated[
        bool, typer.Option(help="Also log to TensorBoard (if installed).")
    ] = False,
    threads: Annotated[int, typer.Option(help="Torch CPU threads (0: all cores).")] = 0,
) -> None:
    """Train a score network on a tuple store: no forward simulation per step."""
    from orient.storage.store import TupleStore
    from orient.trainer.checkpoint import list_checkpoints
    from orient.trainer.train import TrainConfig, TrainingInterrupted, validate_config
    from orient.trainer.train import train as run

    if max_steps is None and epochs is None:
        max_steps = 2000
    cfg = TrainConfig(
        store=store, out=out, model=model, model_overrides=parse_pairs(model_opt, "--model-opt") or None,
        batch_size=batch_size, lr=lr, ema=ema, grad_clip=grad_clip, max_steps=max_steps, epochs=epochs,
        seed=seed, checkpoint_every=checkpoint_every, log_every=log_every, loader_workers=loader_workers,
        device=device, recache=recache, keep_epochs=keep_epochs, recache_workers=recache_workers,
        tensorboard=tensorboard, threads=threads,
    )  # fmt: skip
    validate_config(cfg)  # every option, then the store, then the run folder: nothing written yet
    shape = TupleStore.open(store).meta["plan"]["state_shape"]
    if model == "auto":
        cfg.model = "tiny" if len(shape) == 3 else "mlp-small"
    if list_checkpoints(out) and not resume:
        raise UserError(
            f"{out} already holds checkpoints; pass --resume to continue it or choose another --out"
        )
    if resume and not list_checkpoints(out):
        raise UserError(f"--resume: no checkpoint in {out}")
    writer = None
    if recache:  # the precompute stage's own epoch writing
        from orient.pipeline.precompute import epoch_writer as writer
    try:
        run(cfg, epoch_writer=writer)
    except TrainingInterrupted as exc:
        if int(os.environ.get("RANK", "0")) != 0:  # rank 0 tells the user
            raise SystemExit(exc.exit_code) from None
        if exc.checkpoint is None:
            raise Interrupted(
                f"{exc}; run the same command again to start", exc.exit_code
            ) from None
        again = shlex.join(["orient", *sys.argv[1:]])
        if "--resume" not in sys.argv[1:]:
            again += " --resume"
        raise Interrupted(f"{exc}; continue with: {again}", exc.exit_code) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {out}")


def _output_dir(out: str | None, checkpoint: Path, overwrite: bool) -> Path:
    d = Path(out) if out else Path("samples") / f"{checkpoint.parent.name}-{checkpoint.stem}"
    if d.exists() and any(d.iterdir()) and not overwrite:
        raise UserError(
            f"{d} already holds files; pass --overwrite to replace them or choose another --out"
        )
    return d  # created once there are samples to write: a failed run leaves no empty folder


@app.command()
def sample(
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint file (default: newest in runs/default).")
    ] = None,
    n: Annotated[int, typer.Option(help="Number of samples.")] = 64,
    method: Annotated[
        str, typer.Option(help="sde, ode (probability flow) or pc (predictor-corrector).")
    ] = "sde",
    prior: Annotated[
        str,
        typer.Option(
            help="default, forward, or a process prior: eq7, fitted (von Mises / SPDE), anchors, stationary (GOU), noise (SPDE), gaussian (VP)."
        ),
    ] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the prior and reverse noise.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Samples per reverse-chain batch.")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[
        str | None, typer.Option(help="Output folder (default samples/<run>-<checkpoint>).")
    ] = None,
    trajectory: Annotated[
        bool, typer.Option(help="Also write a strip of snapshots along the reverse chain.")
    ] = False,
    corrector_steps: Annotated[
        int, typer.Option(help="Langevin corrector steps per step (pc).")
    ] = 1,
    corrector_size: Annotated[
        float,
        typer.Option(
            help="Langevin corrector step as a fraction of the step's noise variance, in (0, 2) (pc)."
        ),
    ] = 0.5,
    raw_weights: Annotated[
        bool, typer.Option("--raw-weights", help="Use the raw weights instead of the EMA.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier samples in --out.")] = False,
) -> None:
    """Turn a checkpoint into samples: PNG grid (images) or scatter (vectors), and raw .npy."""
    from orient.sampler import needs_training_store, save_samples
    from orient.sampler import sample as run
    from orient.trainer.checkpoint import (
        load_checkpoint,
        newest_checkpoint,
        process_from_checkpoint,
    )
    from orient.trainer.train import resolve_device

    # every option, then the checkpoint, then --out: a mistake is named before anything is touched
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if method not in ("sde", "ode", "pc"):
        raise UserError(f"--method {method!r}: choose sde, ode (probability flow) or pc")
    if corrector_steps < 0:
        raise UserError(f"--corrector-steps must be >= 0, got {corrector_steps}")
    if not 0 < corrector_size < 2:
        raise UserError(f"--corrector-size must be in (0, 2), got {corrector_size}")
    dev = resolve_device(device)
    path = Path(checkpoint) if checkpoint else newest_checkpoint(DEFAULT_RUN)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    ckpt = load_checkpoint(path)
    process = process_from_checkpoint(ckpt)
    priors = ("default", "forward", *process.prior_names)
    if prior not in priors:
        raise UserError(
            f"--prior: process {process.kind} has no prior {prior!r}; it has {', '.join(priors)}"
        )
    if needs_training_store(process, prior):
        from orient.storage.store import StoreError, TupleStore

        url = json.loads(ckpt["store"])["url"]
        try:
            TupleStore.open(url).check_process(
                ckpt["process_hash"], config=json.loads(ckpt["process"])
            )
        except StoreError as exc:
            raise UserError(f"--prior {prior} reads the training store {url}: {exc}") from None
    del ckpt, process
    out_dir = _output_dir(out, path, overwrite)
    t0 = time.perf_counter()
    res = run(path, n=n, method=method, prior=prior, seed=seed, batch_size=batch_size, device=dev,
              trajectory=9 if trajectory else 0, corrector_steps=corrector_steps,
              corrector_size=corrector_size,
              use_ema=not raw_weights, progress=True)  # fmt: skip
    meta = {"checkpoint": str(path), "n": n, "method": method, "prior": prior, "seed": seed,
            "batch_size": batch_size, "corrector_steps": corrector_steps,
            "corrector_size": corrector_size, "ema": not raw_weights,
            "seconds": time.perf_counter() - t0}  # fmt: skip
    written = save_samples(res, out_dir, meta)
    for p in written:
        print(f"wrote {p}")
    x = res.samples
    if x.ndim == 4:
        print(f"sample grid: {out_dir / 'grid.png'}")


def evaluation_report(
    samples: np.ndarray,
    reference: np.ndarray,
    inception: bool,
    seed: int = 0,
    training: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The metrics of samples vs the reference and, given training data, the data's own scores
    (the same metrics of as many training examples against the same reference)."""
    from orient import evaluation as ev

    if samples.shape[1:] != reference.shape[1:]:
        raise UserError(
            f"samples have shape {samples.shape[1:]}, the reference data {reference.shape[1:]}"
        )
    if training is not None and training.shape[1:] != reference.shape[1:]:
        training = None  # another store's data: no floor rather than a wrong one
    if samples.ndim == 4:
        if inception and not ev.inception_available():
            raise UserError(
                "Inception FID/KID needs the metrics extra: pip install 'orient[metrics]'"
            )

        def report(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
            rep: dict[str, Any] = ev.image_report(a, b, seed=seed)
            if inception:
                rep.update(ev.inception_report(a, b, seed=seed))
            return rep

    else:

        def report(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
            return ev.tabular_report(a, b)

    return ev.report_with_floor(report, samples, reference, training, seed)


def _samples_file(p: Path) -> Path:
    """The .npy array of samples that ``orient evaluate`` was given, or a one-line error that says
    what the path is instead (a checkpoint, a run folder, a store)."""
    if p.is_dir():
        f = p / "samples.npy"
        if f.is_file():
            return f
        ckpts = sorted(p.glob("ckpt-*.pt"))
        if ckpts:
            raise UserError(
                f"{p} is a run folder (it holds checkpoints); evaluate takes samples: "
                f"run `orient sample --checkpoint {ckpts[-1]}` first and evaluate its output folder"
            )
        if (p / "zarr.json").is_file():
            raise UserError(
                f"{p} is a store; evaluate takes samples (its held-out split is the reference "
                f"given with --store)"
            )
        raise UserError(f"no samples at {f} (evaluate takes a samples folder or a .npy file)")
    if not p.is_file():
        raise UserError(f"no samples at {p}")
    with open(p, "rb") as fh:
        head = fh.read(6)
    if p.suffix == ".pt" or head[:4] == b"PK\x03\x04":
        raise UserError(
            f"{p} is a checkpoint; evaluate takes samples (a folder holding samples.npy, or a "
            f".npy file): run `orient sample --checkpoint {p}` first and evaluate its output folder"
        )
    if head != b"\x93NUMPY":
        raise UserError(f"{p} is not a .npy array; evaluate takes a samples folder or a .npy file")
    return p


def _load_array(f: Path | str, what: str) -> np.ndarray:
    try:
        return np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{what}: no file {f}") from None
    except (ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise UserError(f"{what}: {f} is not a readable .npy array ({first})") from None


@app.command()
def evaluate(
    samples: Annotated[
        str, typer.Argument(help="Samples: a .npy file or a folder holding samples.npy.")
    ],
    store: Annotated[
        str | None,
        typer.Option(
            help="Store whose held-out split is the reference (default: the checkpoint's)."
        ),
    ] = None,
    reference: Annotated[str | None, typer.Option(help="Or a .npy reference array.")] = None,
    inception: Annotated[
        bool, typer.Option(help="Also Inception FID/KID (needs orient[metrics]).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of random patches and projections.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare samples with held-out data: weight-free image metrics or paper B's tabular metrics,
    each beside the data's own score (training images against the same held-out images)."""
    from orient.storage.store import TupleStore
    from orient.trainer.checkpoint import load_checkpoint

    p = Path(samples)
    f = _samples_file(p)
    x = _load_array(f, "samples")
    if reference:
        ref = _load_array(reference, "--reference")
        source = reference
    elif store is None:
        meta = p / "sample.json" if p.is_dir() else None
        if meta is None or not meta.is_file():
            raise UserError("give --store or --reference (the samples folder has no sample.json)")
        ckpt = load_checkpoint(json.loads(meta.read_text())["checkpoint"])
        store = json.loads(ckpt["store"])["url"]
    training = None
    if store is not None:
        st = TupleStore.open(store)
        if not reference:
            ref = st.held_out()
            source = f"{store} (held-out split)"
            if len(ref) == 0:
                raise UserError(
                    f"{store} has no held-out split (precompute with --test-fraction > 0)"
                )
        training = st.source().astype(np.float32)
    rep, floor = evaluation_report(
        x.astype(np.float32), ref.astype(np.float32), inception, seed, training
    )
    if as_json:
        out = {"samples": str(f), "reference": source, "n_samples": len(x), "n_reference": len(ref)}
        out.update(rep)
        if floor is not None:
            out["data_floor"] = floor
        print(json.dumps(out, indent=2))
        return
    print_report(f"samples {f} ({len(x)}) vs {source} ({len(ref)})", rep, floor)


def print_report(title: str, rep: dict[str, Any], floor: dict[str, Any] | None) -> None:
    from orient.evaluation import format_report

    print(title)
    if floor is None:
        print("  (no training data given: pass --store to see the data's own scores)")
    for line in format_report(rep, floor):
        print(f"  {line}")
