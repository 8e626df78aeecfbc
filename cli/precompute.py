"""``orient precompute``, ``orient info`` and ``orient verify``."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any

import typer

from .main import Interrupted, UserError, app

SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str, option: str) -> int:
    """'500M', '2G', '1.5GiB', '123456' -> bytes (K/M/G/T are powers of 1024)."""
    m = SIZE_RE.match(text)
    if not m:
        raise UserError(
            f"{option}: cannot read size {text!r}; use e.g. 500M, 2G or a number of bytes"
        )
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024**power)


def parse_pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; values read as JSON literals when they parse (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {item!r} is not KEY=VALUE")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


@app.command()
def precompute(
    dataset: Annotated[
        str,
        typer.Option(
            help="Data set: synthetic-fingerprints, socofing, image-folder, textures, cifar10, mnist, gmm2d, snp, array."
        ),
    ] = "synthetic-fingerprints",
    steps: Annotated[
        int | None,
        typer.Option(
            help="Number of forward steps T (default: 100; spde-*: enough for the explicit scheme's stability limit)."
        ),
    ] = None,
    process: Annotated[
        str,
        typer.Option(
            help="kuramoto-local, kuramoto-global, kuramoto-ref, vp, gou, spde-aniso, spde-heat, spde-ve."
        ),
    ] = "kuramoto-local",
    schedule: Annotated[
        str | None,
        typer.Option(help="Named schedule (e.g. local-300, vp-100) or custom 'key=start:end,...'."),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", "-M", help="Transition draws M per tuple.")
    ] = 5,
    every: Annotated[int, typer.Option(help="Full mode: keep every k-th step of each chain.")] = 1,
    tuples_per_chain: Annotated[
        int | None, typer.Option(help="Per-epoch mode: tuples per chain per epoch (random steps).")
    ] = None,
    disk_budget: Annotated[
        str | None,
        typer.Option(
            help="Per-epoch mode: bytes of the tuple files of all epochs (e.g. 2G; as written, padding and checksums included; the sources and file-system blocks come on top); picks tuples per chain."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Per-epoch mode: number of epochs to write.")
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            help="Refuse to start a store planned larger than this (e.g. 50G); the planned size is "
            "printed first, and a store larger than the free space is always refused."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of every random draw (split, chains, noise, order).")
    ] = 0,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Dask worker processes of the local cluster (default: one per core; with CUDA one per GPU, each on its own)."
        ),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing Dask scheduler (tcp://host:port).")
    ] = None,
    device: Annotated[
        str, typer.Option(help="auto (cuda when available, else cpu), cpu or cuda.")
    ] = "auto",
    out: Annotated[str, typer.Option(help="Store path or fsspec URL.")] = "cache.zarr",
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted store, skipping completed blocks.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store at --out.")] = False,
    data_dir: Annotated[
        str | None,
        typer.Option(
            help="Local data folder (socofing, image-folder, cifar10, mnist) or .npy file (array)."
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Resize images to this size (socofing default 96, fingerprints 32)."),
    ] = None,
    num_examples: Annotated[
        int | None, typer.Option(help="Examples to generate (synthetic data sets).")
    ] = None,
    select: Annotated[
        list[str] | None, typer.Option(help="SOCOFing subset, e.g. finger=index (repeatable).")
    ] = None,
    data_opt: Annotated[
        list[str] | None, typer.Option(help="Other data set option KEY=VALUE (repeatable).")
    ] = None,
    process_opt: Annotated[
        list[str] | None, typer.Option(help="Process option KEY=VALUE, e.g. window=7 (repeatable).")
    ] = None,
    test_fraction: Annotated[
        float, typer.Option(help="Held-out fraction of the seeded split.")
    ] = 0.1,
    max_batch: Annotated[
        int | None,
        typer.Option(
            help="Most chains simulated together in one task (default: 64 on the CPU, 1024 on CUDA)."
        ),
    ] = None,
    block_memory: Annotated[
        str | None,
        typer.Option(
            help="Most encoded tuple bytes in one block, e.g. 2GiB; each worker holds two "
            "(default: 512MiB)."
        ),
    ] = None,
    io_threads: Annotated[
        int | None,
        typer.Option(
            help="Threads per worker checksumming and writing blocks; the bytes do not depend on "
            "it (default: 1 on the CPU, 4 with CUDA)."
        ),
    ] = None,
) -> None:
    """Simulate the forward chains over a data set and write training tuples to a Zarr store."""
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    data_options = parse_pairs(data_opt, "--data-opt")
    if data_dir is not None:
        data_options["path" if dataset == "array" else "data_dir"] = data_dir
    if image_size is not None:
        data_options["size"] = image_size
    if num_examples is not None:
        if num_examples < 1:
            raise UserError(f"--num-examples must be >= 1, got {num_examples}")
        data_options["n"] = num_examples
    if select:
        data_options["select"] = {k: str(v) for k, v in parse_pairs(select, "--select").items()}
    cfg = PrecomputeConfig(
        out=out,
        dataset=dataset,
        data_options=data_options,
        process=process,
        steps=steps,
        schedule=schedule,
        process_options=parse_pairs(process_opt, "--process-opt"),
        M=samples,
        every=every,
        tuples_per_chain=tuples_per_chain,
        disk_budget=parse_size(disk_budget, "--disk-budget") if disk_budget else None,
        epochs=epochs,
        seed=seed,
        test_fraction=test_fraction,
        workers=workers,
        scheduler=scheduler,
        device=device,
        max_batch=max_batch,
        block_memory=parse_size(block_memory, "--block-memory") if block_memory else None,
        io_threads=io_threads,
        resume=resume,
        overwrite=overwrite,
        max_size=parse_size(max_size, "--max-size") if max_size else None,
    )
    if tuples_per_chain is not None and disk_budget is not None:
        raise UserError("give --tuples-per-chain or --disk-budget, not both")
    try:
        summary = run_precompute(cfg)
    except KeyboardInterrupt:
        from orient.storage.store import exists

        if not resume and not exists(out):
            raise Interrupted(f"nothing was written to {out}") from None
        raise Interrupted(
            f"the completed blocks of {out} are kept; add --resume to continue"
        ) from None
    for line in summary.lines():
        print(line)


def store_info(url: str) -> dict[str, Any]:
    from orient.storage.store import TupleStore, describe_process

    store = TupleStore.open(url)
    m = store.meta
    groups = {}
    for name in store.tuple_groups() + list(store.temporary_groups()):
        done = store.done_blocks(name)
        groups[name] = {
            "blocks": int(done.size),
            "done": int(done.sum()),
            "tuples": store.tuple_count(name),
        }
    return {
        "store": url,
        "process": describe_process(m["process"]),
        "process_hash": m["process_hash"],
        "process_config": m["process"],
        "dataset": m["dataset"],
        "split": m["split"],
        "mode": m["mode"],
        "seed": m["seed"],
        "M": m["M"],
        "tuples_per_chain": _kept_per_chain(m["plan"]),
        "every": m["plan"].get("every", 1) if m["mode"] == "full" else None,
        "epochs": store.epochs(),
        "epochs_planned": m.get("epochs_planned", 0),
        "groups": groups,
        "tuples": sum(g["tuples"] for g in groups.values()),
        "complete": all(g["done"] == g["blocks"] for g in groups.values())
        and bool(groups)
        and not store.missing_epochs(),
        "bytes_on_disk": store.nbytes_on_disk(),
        "format_version": m["format_version"],
        "software": m["software"],
        "created": m["created"],
        "verified": store.verification(),
    }


def verified_line(rec: dict[str, Any] | None, url: str) -> str:
    """The recorded `orient verify`: "never", or "<time>, <result>", and whether it is stale."""
    if rec is None:
        return "never (`orient verify` checks every block)"
    checked = rec.get("checked", {})
    line = f"{rec['time']}, {rec['result']}"
    if checked:
        line += (
            f" ({checked['blocks']:,} blocks in {len(checked['groups'])} groups checked, "
            f"{checked['recomputed']} recomputed from seeds)"
        )
    if rec.get("stale"):
        line += f"; STALE: blocks were written or removed since; run `orient verify {url}` again"
    return line


def _kept_per_chain(plan: dict[str, Any]) -> int:
    from orient.pipeline.blocks import Plan

    return Plan.from_json(plan).kept_per_chain


@app.command()
def info(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe a store: process, schedule, data set, mode, epochs, tuples, size, completeness,
    and the last verification (when, its result, and whether blocks were written since)."""
    d = store_info(store)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    ds = d["dataset"]
    print(
        f"store:    {d['store']} (format {d['format_version']}, orient {d['software']['orient']})"
    )
    print(f"process:  {d['process']}  hash {d['process_hash'][:16]}")
    if ends := d["process_config"].get("endpoints"):
        print("schedule: " + ", ".join(f"{k} {a:g} -> {b:g}" for k, (a, b) in ends.items()))
    print(
        f"data set: {ds['name']} {json.dumps(ds.get('params', {}))}  split {d['split']['n_train']} train / {d['split']['n_test']} test"
    )
    every = f" (every {d['every']} steps)" if (d["every"] or 1) > 1 else ""
    print(
        f"mode:     {d['mode']}, M={d['M']}, {d['tuples_per_chain']} tuples/chain{every}, "
        f"seed {d['seed']}"
    )
    if d["epochs_planned"]:
        print(f"epochs:   {len(d['epochs'])} of {d['epochs_planned']} planned written")
    for name, g in d["groups"].items():
        print(f"  {name}: {g['tuples']:,} tuples, {g['done']}/{g['blocks']} blocks done")
    print(
        f"tuples:   {d['tuples']:,}  size {d['bytes_on_disk'] / 2**20:,.1f} MiB  complete: {'yes' if d['complete'] else 'NO'}"
    )
    print(f"verified: {verified_line(d['verified'], d['store'])}")


@app.command()
def verify(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    repair: Annotated[bool, typer.Option(help="Regenerate damaged or unfinished blocks.")] = False,
    recompute: Annotated[
        int, typer.Option(help="Blocks per group to recompute from the recorded seeds.")
    ] = 2,
) -> None:
    """Check every checksum, marker and block digest; recompute a sample of blocks from seeds.
    The outcome is recorded in the store, and `orient info` shows it."""
    from orient.pipeline.verify import Unrepairable, verify_store

    if recompute < 0:
        raise UserError(f"--recompute must be >= 0, got {recompute}")
    try:
        reports = verify_store(store, repair=repair, recompute=recompute)
    except Unrepairable as exc:
        print(f"orient: error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    for r in reports:
        print(r.line())
    bad = [r for r in reports if not (r.ok or (repair and r.mended))]
    if any(not r.unwritten for r in bad):
        print(
            f"orient: error: {store} has damaged or unfinished blocks; run `orient verify {store} --repair`",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    if bad:
        print(
            f"orient: error: {store}: {len(bad)} planned epoch(s) not written yet; finish them "
            "with the `orient precompute` command that made the store, adding --resume",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    print(f"verified {store}" + (" (repaired)" if any(r.repaired for r in reports) else ""))
