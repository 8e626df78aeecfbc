"""``orient reproduce EXPERIMENT``: the papers' experiments at laptop scale, tables and figures."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .main import UserError, app

reproduce_app = typer.Typer(
    help="Reproduce the papers' claims at laptop scale: tables (paper beside ours) and figures.",
    no_args_is_help=True,
)
app.add_typer(reproduce_app, name="reproduce")

HELP = {
    "gou-mog": "Paper B 7.1: GOU vs isotropic DDPM on a two-Gaussian mixture (table 1, fig. 1).",
    "gou-snp": "Paper B 7.2: GOU vs isotropic DDPM on simulated SNPs (table 2, fig. 2).",
    "kuramoto-forward": "Paper A: forward chains (order parameter, SNR, terminal von Mises, fig. 1/6).",
    "kuramoto-vs-sgm": "Paper A tables 1, 2, 6: local, global, reference-only Kuramoto vs SGM.",
    "spde-forward": "Paper C: edge preservation of anisotropic vs heat vs VE forward chains (fig. 1).",
    "spde-generate": "Paper C: small-scale generation with the anisotropic, heat and VE instances.",
}


def run_experiment(
    name: str,
    quick: bool,
    out: str | None,
    seed: int,
    workers: int,
    threads: int,
    inception: bool,
    keep_stores: bool,
    overwrite: bool,
) -> None:
    import torch

    from orient.reproduce import EXPERIMENTS, Options

    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    folder = Path(out) if out else Path("reproduce-out") / (f"{name}-quick" if quick else name)
    command = "orient " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    opts = Options(out=folder, quick=quick, seed=seed, workers=workers, threads=threads,
                   inception=inception, keep_stores=keep_stores, overwrite=overwrite,
                   command=command)  # fmt: skip
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        report = EXPERIMENTS[name](opts)
    finally:
        torch.set_num_threads(old)
    for table in report.tables:
        print(table.text())
        print()
    for p in [folder / "results.json", folder / "results.md", *report.figures]:
        print(f"wrote {p}")
    print(f"{name}: done in {time.perf_counter() - t0:.0f} s; results in {folder}")


def _register(name: str) -> None:
    def command(
        quick: Annotated[
            bool, typer.Option(help="Toy sizes: checks the pipeline in seconds, not the claims.")
        ] = False,
        out: Annotated[
            str | None,
            typer.Option(help="Output folder (default reproduce-out/EXPERIMENT[-quick])."),
        ] = None,
        seed: Annotated[
            int, typer.Option(help="Seed of data, split, chains, training, sampling.")
        ] = 0,
        workers: Annotated[int, typer.Option(help="Dask worker processes for precompute.")] = 2,
        threads: Annotated[
            int, typer.Option(help="Torch threads for training, sampling and metrics.")
        ] = 1,
        inception: Annotated[
            bool, typer.Option(help="Image experiments: also Inception FID/KID (offline weights).")
        ] = True,
        keep_stores: Annotated[
            bool, typer.Option(help="Keep the tuple stores under OUT/work (deleted by default).")
        ] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace earlier results in --out.")] = False,
    ) -> None:
        run_experiment(name, quick, out, seed, workers, threads, inception, keep_stores, overwrite)

    command.__doc__ = HELP[name]
    reproduce_app.command(name)(command)


for _name in HELP:
    _register(_name)
