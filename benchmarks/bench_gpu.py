"""GPU benchmark (issue: precompute stage): chain-steps/s at 96x96 for batch sizes up to memory,
and the precompute stage end to end on the GPU, written down with the device name.

1. Sweep: for each image process, batch B = 64, 128, ... doubling until the device runs out of
   memory (or --max-batch). Per B, the chain-steps/s of
   * ``emit``: one kept step, M draws of x_t and their local scores (what precompute computes at
     every step a chain emits a tuple);
   * ``emit+encode``: the same, encoded (uint16 phases, float16 scores) and copied each step into
     newly allocated host arrays, as precompute's tasks did before this benchmark (they now gather
     a block on the device and copy it once, pipeline/blocks.py);
   * ``step``: one plain transition x_{t-1} -> x_t (a step that emits nothing).
   The same sweep on this machine's CPU (all cores, up to --cpu-max-batch) is the baseline of the
   GPU / CPU ratios, at equal B and best against best.
2. Agreement: the drift-dependent scores computed on the GPU equal a float64 CPU reference on the
   same inputs (relative error), as does the CPU's float32 result.
3. End to end: ``run_precompute`` on the GPU (1 worker) against the same blocks simulated in
   memory on the GPU (no encoding, no writes), per-epoch mode at paper A's T = 300 and full mode,
   for several --max-batch, --io-threads and --block-memory values; tuples/s, chain-steps/s, MiB/s written, overhead; and whether
   two runs give byte-identical stores.

Run: python benchmarks/bench_gpu.py [--device cuda] [--size 96] [--quick]
Needs a CUDA device for its saved results (``--device cpu`` runs it small, as a check of the
script).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_precompute import simulate_in_memory
from common import save

from orient.dynamics import create_process, process_from_config
from orient.pipeline.blocks import Plan
from orient.pipeline.fingerprints import generate_fingerprints_with_labels
from orient.pipeline.precompute import PrecomputeConfig, run_precompute
from orient.storage.codecs import encode, state_encoding
from orient.storage.store import TupleStore

PROCESSES = ("kuramoto-local", "spde-aniso", "vp")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_per_call(fn, device: str, min_seconds: float = 0.5) -> float:
    """Median over 3 timed loops of ``fn`` (after 2 warm-up calls), each loop >= min_seconds/3."""
    fn()
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    est = max(time.perf_counter() - t0, 1e-6)
    n = max(1, min(200, math.ceil(min_seconds / 3 / est)))
    per = []
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        per.append((time.perf_counter() - t0) / n)
    return statistics.median(per)


def make_process(name: str, size: int, steps: int | None):
    example = torch.from_numpy(generate_fingerprints_with_labels(8, size=size, seed=1).images)
    return create_process(name, steps=steps, example=example), example


def sweep(
    name: str, device: str, size: int, M: int, steps: int | None, max_batch: int, budget_s: float
) -> dict:
    """chain-steps/s per batch size B (doubling from 64) until out of memory or ``max_batch``."""
    process, example = make_process(name, size, steps)
    process = process.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    enc = state_encoding(process.periodic)
    t = max(1, process.T // 2)
    rows = []
    B, started = 64, time.perf_counter()
    while B <= max_batch and time.perf_counter() - started < budget_s:
        try:
            reps = math.ceil(B / example.shape[0])
            x0 = example.to(device).repeat(reps, *([1] * (example.ndim - 1)))[:B]
            x = process.data_to_state(x0)
            x = process.step(x, 1, g)  # a state off the data grid

            def emit(x=x):
                with torch.no_grad():
                    return process.sample_transitions(x, t, M, g)

            def emit_encode(x=x):
                with torch.no_grad():
                    tr = process.sample_transitions(x, t, M, g)
                    encode(x, enc)
                    encode(tr.x, enc)
                    encode(tr.score, "scaled-f16")

            def step(x=x):
                with torch.no_grad():
                    return process.step(x, t, g)

            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            row = {"B": B}
            for label, fn in (("emit", emit), ("emit+encode", emit_encode), ("step", step)):
                row[label] = B / seconds_per_call(fn, device)
            if device.startswith("cuda"):
                row["peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            rows.append(row)
            print(
                f"{name} {device} B={B}: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in row.items() if k not in ("B", "peak_GiB"))
                + " chain-steps/s"
                + (f", peak {row['peak_GiB']:.1f} GiB" if "peak_GiB" in row else ""),
                flush=True,
            )
        except torch.OutOfMemoryError:
            print(f"{name} {device} B={B}: out of memory", flush=True)
            rows.append({"B": B, "out_of_memory": True})
            break
        finally:
            x = x0 = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        B *= 2
    return {"T": process.T, "M": M, "t_timed": t, "rows": rows}


def agreement(name: str, device: str, size: int, steps: int | None) -> dict:
    """Relative error of the float32 scores on ``device`` and on the CPU vs a float64 CPU result."""
    process, example = make_process(name, size, steps)
    g = torch.Generator().manual_seed(3)
    t = max(1, process.T // 2)
    x_prev = process.step(process.data_to_state(example), 1, g)
    x_t = process.sample_transitions(x_prev, t, 2, g).x

    def score(p, dtype, dev):
        return p.to(dev).transition_score(x_prev.to(dev, dtype), x_t.to(dev, dtype), t).cpu()

    ref = score(process, torch.float64, "cpu")
    out = {}
    for label, dev in (("cpu", "cpu"), (device, device)):
        s = score(process, torch.float32, dev).double()
        out[f"rel_err_{label}"] = float((s - ref).norm() / ref.norm())
    print(f"{name} score agreement vs float64 CPU: {out}", flush=True)
    return out


def copy_rates(device: str, nbytes: int = 512 * 2**20, repeats: int = 5) -> dict:
    """GB/s of one block's copy from the device into page-aligned host memory (precompute's block
    buffers), pageable and page-locked with cudaHostRegister (as pipeline/tasks.py does)."""
    from orient.storage.chunkio import page_aligned

    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=device)
    host = page_aligned((nbytes,), "u1")
    dst = torch.from_numpy(host)
    rates = {}
    for label in ("pageable", "pinned"):
        if label == "pinned":
            torch.cuda.cudart().cudaHostRegister(host.ctypes.data, host.nbytes, 0)
        dst.copy_(src)  # first touch / warm-up
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            dst.copy_(src)
            sync(device)
            times.append(time.perf_counter() - t0)
        rates[label] = nbytes / statistics.median(times) / 1e9
    torch.cuda.cudart().cudaHostUnregister(host.ctypes.data)
    print(
        f"device -> host, {nbytes / 2**20:.0f} MiB: "
        + ", ".join(f"{k} {v:.1f} GB/s" for k, v in rates.items()),
        flush=True,
    )
    return {"bytes": nbytes, "GB_per_s": rates}


def end_to_end(
    tmp: Path, device: str, cfg: dict, max_batch: int, io_threads: int, block_memory: int
) -> dict:
    """run_precompute on ``device`` (1 worker) vs the same blocks simulated in memory there."""
    runs = []
    for rep in range(2):
        out = tmp / f"e2e-{rep}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        s = run_precompute(
            PrecomputeConfig(
                out=str(out),
                device=device,
                workers=1,
                max_batch=max_batch,
                io_threads=io_threads,
                block_memory=block_memory,
                **cfg,
            ),
            log=print,
        )
        runs.append((time.perf_counter() - t0, s))
    store = TupleStore.open(str(tmp / "e2e-0.zarr"))
    plan = Plan.from_json(store.meta["plan"])
    process, x0 = store.process(process_from_config).to(device), store.source()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as precompute's worker does
    mem = []
    try:
        for _ in range(2):
            sync(device)
            t0 = time.perf_counter()
            n = sum(simulate_in_memory(process, x0, plan, b, device) for b in range(plan.n_blocks))
            sync(device)
            mem.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    from conftest_free import same_bytes

    blocks_s = min(s.blocks_seconds for _, s in runs)
    s = runs[0][1]
    rec = {
        "max_batch": max_batch,
        "io_threads": io_threads,
        "block_memory": block_memory,
        "chains": plan.n_chains,
        "blocks": plan.n_blocks,
        "chains_per_block": plan.chains_per_block,
        "T": plan.T,
        "M": plan.M,
        "tuples": s.tuples,
        "bytes_on_disk": s.bytes_on_disk,
        "end_to_end_s": [r[0] for r in runs],
        "blocks_s": [r[1].blocks_seconds for r in runs],
        "in_memory_s": mem,
        "overhead": blocks_s / min(mem) - 1,
        "tuples_per_s": s.tuples / blocks_s,
        "chain_steps_per_s": plan.n_chains * plan.T / blocks_s,
        "chain_steps_per_s_in_memory": plan.n_chains * plan.T / min(mem),
        "MiB_per_s_written": s.bytes_on_disk / 2**20 / blocks_s,
        "identical_bytes_two_runs": same_bytes(tmp / "e2e-0.zarr", tmp / "e2e-1.zarr"),
    }
    assert n == s.tuples, (n, s.tuples)
    print(
        f"e2e max_batch={max_batch} io_threads={io_threads} block_memory={block_memory >> 20} "
        f"MiB: blocks {blocks_s:.2f} s vs in memory {min(mem):.2f} s "
        f"(overhead {rec['overhead']:+.0%}), {rec['tuples_per_s']:,.0f} tuples/s, "
        f"{rec['MiB_per_s_written']:,.0f} MiB/s, identical {rec['identical_bytes_two_runs']}",
        flush=True,
    )
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--samples", type=int, default=5, help="M draws per kept step")
    ap.add_argument("--max-batch", type=int, default=2**17)
    ap.add_argument("--cpu-max-batch", type=int, default=1024)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per sweep")
    ap.add_argument("--examples", type=int, default=2048, help="chains of the end-to-end runs")
    ap.add_argument(
        "--e2e",
        default="1024:1:512,1024:4:512,4096:4:2048",
        help="end-to-end settings, MAX_BATCH:IO_THREADS:BLOCK_MEMORY_MIB[,...]",
    )
    ap.add_argument("--quick", action="store_true", help="small sizes: a check of the script")
    ap.add_argument("--skip-sweep", action="store_true", help="end to end only")
    ap.add_argument("--save-as", default="gpu", help="results file name (docs/benchmark-results)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.size, args.max_batch, args.cpu_max_batch, args.examples = 32, 128, 128, 64
        args.budget = 5.0
    dev = args.device
    torch.set_num_threads(os.cpu_count() or 1)
    rec: dict = {"device": dev, "size": args.size, "sweep": {}, "agreement": {}, "end_to_end": {}}
    if dev.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        rec["device_name"] = p.name
        rec["device_memory_GiB"] = p.total_memory / 2**30
    for name in () if args.skip_sweep else PROCESSES:
        steps = 300 if name.startswith("kuramoto") else None
        rec["agreement"][name] = agreement(name, dev, args.size, steps)
        rec["sweep"][name] = {
            dev: sweep(name, dev, args.size, args.samples, steps, args.max_batch, args.budget)
        }
        if dev != "cpu":
            rec["sweep"][name]["cpu"] = sweep(
                name, "cpu", args.size, args.samples, steps, args.cpu_max_batch, args.budget / 3
            )
        if not args.no_save:
            save(args.save_as, rec)  # each section as it is measured: a run cut short keeps them
    if dev.startswith("cuda"):
        rec["copy"] = copy_rates(dev)
    tmp = Path(tempfile.mkdtemp(prefix="orient-bench-gpu-"))
    base = {"data_options": {"n": args.examples, "size": args.size}, "M": args.samples, "seed": 0}
    configs = {
        "per_epoch_T300": {**base, "steps": 300, "tuples_per_chain": 10, "epochs": 1},
        # full mode keeps every step: 1/4 of the chains and M = 1 keep the store to a few GB
        "full_T100_M1": {
            **base,
            "data_options": {"n": max(8, args.examples // 4), "size": args.size},
            "steps": 100,
            "M": 1,
        },
    }
    try:
        for label, cfg in configs.items():
            rec["end_to_end"][label] = [
                end_to_end(tmp, dev, cfg, int(mb), int(io), int(bm) * 2**20)
                for mb, io, bm in (v.split(":") for v in args.e2e.split(","))
            ]
            if not args.no_save:
                save(args.save_as, rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rec)
    if not args.no_save:
        save(args.save_as, rec)


def print_table(rec: dict) -> None:
    dev = rec["device"]
    print(f"\n{rec.get('device_name', dev)}, {rec['size']}x{rec['size']}")
    for name, by_dev in rec["sweep"].items():
        for d, sw in by_dev.items():
            ok = [r for r in sw["rows"] if not r.get("out_of_memory")]
            if ok:
                best = max(ok, key=lambda r: r["emit"])
                print(
                    f"{name:15s} {d:5s} B up to {ok[-1]['B']:>6}: best emit {best['emit']:>12,.0f} "
                    f"(B={best['B']}), step {max(r['step'] for r in ok):>12,.0f} chain-steps/s"
                )
    for label, runs in rec["end_to_end"].items():
        for r in runs:
            print(
                f"{label:15s} max_batch {r['max_batch']:>5} io {r.get('io_threads', 1)} "
                f"block {r.get('block_memory', 2**29) >> 20} MiB: overhead {r['overhead']:+.0%}, "
                f"{r['tuples_per_s']:,.0f} tuples/s, {r['chain_steps_per_s']:,.0f} chain-steps/s, "
                f"identical {r['identical_bytes_two_runs']}"
            )


if __name__ == "__main__":
    main()
