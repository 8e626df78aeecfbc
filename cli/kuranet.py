"""``orient kuranet train`` and ``orient kuranet eval`` (paper D: learned Kuramoto couplings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .main import UserError, app
from .precompute import parse_pairs

kuranet_app = typer.Typer(
    help="KuraNet (paper D): learn coupling functions K_mu(x_i, x_j) for Kuramoto synchrony.",
    no_args_is_help=True,
)
app.add_typer(kuranet_app, name="kuranet")


@kuranet_app.command("train")
def train_cmd(
    case: Annotated[
        str,
        typer.Option(help="I, II, III (disorder), moons, circles, spirals, gmm2..gmm10, image."),
    ] = "I",
    out: Annotated[
        str | None, typer.Option(help="Checkpoint path (default runs/kuranet-CASE-sSEED.pt).")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of every random draw (data, init, order, phases).")
    ] = 0,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training set.")] = None,
    n: Annotated[int | None, typer.Option(help="Oscillators per training network.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam or sgd.")] = None,
    dt: Annotated[float | None, typer.Option(help="Euler step.")] = None,
    burn_in: Annotated[
        int | None, typer.Option(help="Euler steps before the loss window (t0 = burn_in dt).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Euler steps in the loss window.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden units per layer of K_mu.")] = None,
    image: Annotated[str | None, typer.Option(help="Image case: the RGB image.")] = None,
    mask: Annotated[
        str | None, typer.Option(help="Image case: label mask (image or .npy), same size.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda only if available).")] = "cpu",
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Any other configuration field KEY=VALUE (repeatable), e.g. init=uniform."
        ),
    ] = None,
    data_opt: Annotated[
        list[str] | None, typer.Option(help="Data option KEY=VALUE, e.g. noise=0.1 (repeatable).")
    ] = None,
) -> None:
    """Train a coupling function on one case and save a checkpoint."""
    from orient.kuranet.checkpoint import save_checkpoint
    from orient.kuranet.config import resolve_config
    from orient.kuranet.train import train
    from orient.pipeline.progress import Progress

    given = dict(
        seed=seed, epochs=epochs, n=n, lr=lr, optimizer=optimizer, dt=dt, burn_in=burn_in,
        steps=steps, hidden=hidden, image=image, mask=mask, device=device,
    )  # fmt: skip
    extra = parse_pairs(option, "--set")
    clash = set(extra) & {k for k, v in given.items() if v is not None and k != "device"}
    if clash:
        raise UserError(f"--set repeats options given directly: {', '.join(sorted(clash))}")
    given.update(extra)
    if data_opt:
        given["data_options"] = parse_pairs(data_opt, "--data-opt")
    cfg = resolve_config(case, **given)
    path = Path(out or f"runs/kuranet-{case}-s{seed}.pt")
    print(f"kuranet: case {case}, configuration {json.dumps(cfg.to_json())}")
    per_epoch = cfg.train_size // cfg.n
    bar = Progress(cfg.epochs * per_epoch, "kuranet train", unit="step")
    ckpt = train(cfg, progress=lambda step, loss: bar.update(1, loss=f"{loss:.4f}"))
    bar.close()
    save_checkpoint(path, ckpt)
    print(f"wrote checkpoint {path}")


@kuranet_app.command("eval")
def eval_cmd(
    checkpoint: Annotated[
        str, typer.Argument(help="A checkpoint written by `orient kuranet train`.")
    ],
    size_n: Annotated[
        int, typer.Option(help="Oscillators in the size regimes (paper: 10,000).")
    ] = 10_000,
    data_networks: Annotated[
        int | None,
        typer.Option(help="Test networks of n averaged in the data regime (default: all)."),
    ] = None,
    figures: Annotated[
        str | None,
        typer.Option(help="Folder for the PNG figures (default: next to the checkpoint)."),
    ] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="Results file (default CHECKPOINT.eval.json).")
    ] = None,
    matrix_n: Annotated[
        int, typer.Option(help="Training oscillators in the coupling-matrix figure.")
    ] = 1000,
    max_dense_gb: Annotated[
        float,
        typer.Option(
            help="Largest dense coupling matrix to hold; above it couplings are recomputed in blocks."
        ),
    ] = 2.0,
    regimes: Annotated[
        str, typer.Option(help="Comma-separated subset of data, size, data+size.")
    ] = "data,size,data+size",
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda only if available).")] = "cpu",
) -> None:
    """Score a checkpoint in the data / size / data+size regimes next to its controls and the paper."""
    from orient.kuranet.checkpoint import load_checkpoint
    from orient.kuranet.evaluate import evaluate, markdown_table, to_json
    from orient.kuranet.plots import write_figures
    from orient.kuranet.train import load_case
    from orient.pipeline.progress import Progress

    if size_n < 2:
        raise UserError(f"--size-n must be >= 2, got {size_n}")
    if data_networks is not None and data_networks < 1:
        raise UserError(f"--data-networks must be >= 1, got {data_networks}")
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt.config
    print(
        f"kuranet eval: {checkpoint} (case {cfg.case}, seed {cfg.seed}, {ckpt.history.numel()} training steps)"
    )
    data = load_case(cfg)
    bars: dict[str, Progress] = {}

    def progress(what: str, done: int, total: int) -> None:
        bar = bars.setdefault(what, Progress(total, f"kuranet eval: {what}"))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            bars.pop(what)

    result = evaluate(
        ckpt,
        size_n,
        data_networks,
        device,
        int(max_dense_gb * 2**30),
        data=data,
        progress=progress,
        regimes=tuple(r.strip() for r in regimes.split(",") if r.strip()),
    )
    print(markdown_table(result))
    base = Path(checkpoint)
    out = Path(json_out) if json_out else base.with_name(base.name + ".eval.json")
    out.write_text(json.dumps(to_json(result, ckpt), indent=2))
    print(f"wrote results {out}")
    fig_dir = Path(figures) if figures else base.with_name(base.stem + "-figures")
    paths = write_figures(ckpt, result, data, fig_dir, matrix_n)
    for p in paths:
        print(f"wrote figure {p}")
