"""``orient quickstart``: precompute -> train -> sample -> evaluate on built-in data, in minutes."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .main import Interrupted, UserError, app


@app.command()
def quickstart(
    out_dir: Annotated[
        str, typer.Option(help="Folder for the store, the run and the samples.")
    ] = "quickstart",
    steps: Annotated[int, typer.Option(help="Forward steps T (table 5 has 100, 300, 1000).")] = 100,
    examples: Annotated[int, typer.Option(help="Synthetic fingerprints to generate.")] = 512,
    train_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Tuples per batch.")] = 32,
    samples: Annotated[int, typer.Option(help="Samples to draw.")] = 64,
    workers: Annotated[int, typer.Option(help="Dask workers for the precompute stage.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier quickstart in --out-dir.")
    ] = False,
) -> None:
    """Local Kuramoto diffusion on 32x32 synthetic fingerprints with a CPU-sized U-Net."""
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute
    from orient.sampler import sample, save_samples
    from orient.trainer.train import TrainConfig, TrainingInterrupted, resolve_device, train

    from .train import evaluation_report, print_report

    for name, value in (("--steps", steps), ("--examples", examples), ("--train-steps", train_steps),
                        ("--batch-size", batch_size), ("--samples", samples), ("--workers", workers)):  # fmt: skip
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise UserError(
            f"{root} already holds a quickstart; pass --overwrite or choose another --out-dir"
        )
    if overwrite and root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    store = str(root / "cache.zarr")

    def say(msg: str) -> None:
        print(f"[quickstart {time.perf_counter() - t0:5.0f}s] {msg}", file=sys.stderr, flush=True)

    say(f"1/4 precompute: kuramoto-local T={steps} on {examples} synthetic fingerprints (32x32)")
    # one tuple (M = 1) at every step of every chain: the most distinct x_{t-1} per second of training
    summary = run_precompute(
        PrecomputeConfig(out=store, data_options={"n": examples, "size": 32, "seed": seed}, steps=steps,
                         M=1, seed=seed, workers=workers),
        log=say,
    )  # fmt: skip
    for line in summary.lines():
        say(line)
    say(f"2/4 train: tiny U-Net, {train_steps} steps of {batch_size} tuples")
    run_dir = root / "run"
    try:
        ckpt = train(TrainConfig(store=store, out=str(run_dir), model="tiny", batch_size=batch_size, lr=1e-3,
                                 max_steps=train_steps, seed=seed, checkpoint_every=1000, log_every=100,
                                 device="auto", threads=1))  # fmt: skip
    except TrainingInterrupted as exc:
        again = shlex.join(["orient", "train", "--store", store, "--out", str(run_dir), "--model", "tiny",
                            "--batch-size", str(batch_size), "--lr", "0.001", "--max-steps", str(train_steps),
                            "--seed", str(seed), "--checkpoint-every", "1000", "--log-every", "100",
                            "--threads", "1", "--resume"])  # fmt: skip
        if exc.checkpoint is None:
            raise Interrupted(str(exc), exc.exit_code) from None
        raise Interrupted(f"{exc}; continue training with: {again}", exc.exit_code) from None
    say(f"3/4 sample: {samples} samples, reverse SDE, von Mises prior (eq. 7)")
    res = sample(ckpt, n=samples, seed=seed, device=resolve_device("auto"), trajectory=9)
    sdir = root / "samples"
    meta = {"checkpoint": str(ckpt), "n": samples, "method": "sde", "prior": "default",
            "seed": seed, "batch_size": 64, "ema": True}  # fmt: skip
    grid, strip = save_samples(res, sdir, meta)[1:3]
    say("4/4 evaluate against the held-out split")
    from orient.storage.store import TupleStore

    st = TupleStore.open(store)
    ref = st.held_out()
    rep, floor = evaluation_report(
        res.samples.numpy(), ref, inception=False, seed=seed, training=st.source()
    )
    (root / "evaluation.json").write_text(json.dumps({**rep, "data_floor": floor}, indent=2))
    print_report(f"{samples} samples vs {len(ref)} held-out fingerprints", rep, floor)
    print(f"store: {store}")
    print(f"checkpoint: {ckpt}")
    print(f"trajectory: {strip}")
    print(f"sample grid: {grid}")
