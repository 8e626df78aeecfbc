"""``orient train``, ``orient sample`` and ``orient evaluate``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .main import UserError, app
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
    from orient.trainer.checkpoint import list_checkpoints
    from orient.trainer.train import TrainConfig
    from orient.trainer.train import train as run

    if list_checkpoints(out) and not resume:
        raise UserError(
            f"{out} already holds checkpoints; pass --resume to continue it or choose another --out"
        )
    if resume and not list_checkpoints(out):
        raise UserError(f"--resume: no checkpoint in {out}")
    if max_steps is None and epochs is None:
        max_steps = 2000
    preset = model
    if model == "auto":
        from orient.storage.store import TupleStore

        shape = TupleStore.open(store).meta["plan"]["state_shape"]
        preset = "tiny" if len(shape) == 3 else "mlp-small"
    cfg = TrainConfig(
        store=store, out=out, model=preset, model_overrides=parse_pairs(model_opt, "--model-opt") or None,
        batch_size=batch_size, lr=lr, ema=ema, grad_clip=grad_clip, max_steps=max_steps, epochs=epochs,
        seed=seed, checkpoint_every=checkpoint_every, log_every=log_every, loader_workers=loader_workers,
        device=device, recache=recache, keep_epochs=keep_epochs, recache_workers=recache_workers,
        tensorboard=tensorboard, threads=threads,
    )  # fmt: skip
    run(cfg)
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
    snr: Annotated[
        float, typer.Option(help="Langevin corrector signal-to-noise ratio (pc).")
    ] = 0.16,
    raw_weights: Annotated[
        bool, typer.Option("--raw-weights", help="Use the raw weights instead of the EMA.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier samples in --out.")] = False,
) -> None:
    """Turn a checkpoint into samples: PNG grid (images) or scatter (vectors), and raw .npy."""
    from orient.trainer import images
    from orient.trainer.checkpoint import newest_checkpoint
    from orient.trainer.sampler import sample as run
    from orient.trainer.train import resolve_device

    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    dev = resolve_device(device)
    path = Path(checkpoint) if checkpoint else newest_checkpoint(DEFAULT_RUN)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    out_dir = _output_dir(out, path, overwrite)
    t0 = time.perf_counter()
    res = run(path, n=n, method=method, prior=prior, seed=seed, batch_size=batch_size, device=dev,
              trajectory=9 if trajectory else 0, corrector_steps=corrector_steps, snr=snr,
              use_ema=not raw_weights)  # fmt: skip
    x = res.samples
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "samples.npy", x.numpy())
    written = [out_dir / "samples.npy"]
    if x.ndim == 4:
        written.append(
            images.save_png(
                images.grid(x[:64], scale=4 if x.shape[-1] <= 48 else 2), out_dir / "grid.png"
            )
        )
        if res.trajectory:
            written.append(
                images.save_png(images.strip(res.trajectory), out_dir / "trajectory.png")
            )
    elif x.ndim == 2 and x.shape[1] >= 2:
        written.append(images.save_png(images.scatter(x.numpy()), out_dir / "scatter.png"))
    meta = {"checkpoint": str(path), "n": n, "method": method, "prior": prior, "seed": seed,
            "batch_size": batch_size, "ema": not raw_weights, "seconds": time.perf_counter() - t0}  # fmt: skip
    (out_dir / "sample.json").write_text(json.dumps(meta, indent=2))
    for p in written:
        print(f"wrote {p}")
    if x.ndim == 4:
        print(f"sample grid: {out_dir / 'grid.png'}")


def evaluation_report(
    samples: np.ndarray, reference: np.ndarray, inception: bool, seed: int = 0
) -> dict[str, Any]:
    from orient import evaluation as ev

    if samples.shape[1:] != reference.shape[1:]:
        raise UserError(
            f"samples have shape {samples.shape[1:]}, the reference data {reference.shape[1:]}"
        )
    if samples.ndim == 4:
        rep: dict[str, Any] = ev.image_report(samples, reference, seed=seed)
        if inception:
            if not ev.inception_available():
                raise UserError(
                    "Inception FID/KID needs the metrics extra: pip install 'orient[metrics]'"
                )
            rep.update(ev.inception_report(samples, reference, seed=seed))
        return rep
    return ev.tabular_report(samples, reference)


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
    """Compare samples with held-out data: weight-free image metrics or paper B's tabular metrics."""
    from orient.storage.store import TupleStore
    from orient.trainer.checkpoint import load_checkpoint

    p = Path(samples)
    f = p / "samples.npy" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"no samples at {f}")
    x = np.load(f, allow_pickle=False)
    if reference:
        ref = np.load(reference, allow_pickle=False)
        source = reference
    else:
        if store is None:
            meta = p / "sample.json" if p.is_dir() else None
            if meta is None or not meta.is_file():
                raise UserError(
                    "give --store or --reference (the samples folder has no sample.json)"
                )
            ckpt = load_checkpoint(json.loads(meta.read_text())["checkpoint"])
            store = json.loads(ckpt["store"])["url"]
        ref = TupleStore.open(store).held_out()
        source = f"{store} (held-out split)"
        if len(ref) == 0:
            raise UserError(f"{store} has no held-out split (precompute with --test-fraction > 0)")
    rep = evaluation_report(x.astype(np.float32), ref.astype(np.float32), inception, seed)
    if as_json:
        print(
            json.dumps(
                {
                    "samples": str(f),
                    "reference": source,
                    "n_samples": len(x),
                    "n_reference": len(ref),
                    **rep,
                },
                indent=2,
            )
        )
        return
    print(f"samples {f} ({len(x)}) vs {source} ({len(ref)})")
    for k, v in rep.items():
        print(f"  {k:<28} {v:.6g}")
