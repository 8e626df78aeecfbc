"""Precompute benchmark (issue: precompute stage), measured as ratios within one run.

Configurations: full mode and per-epoch mode (10 tuples per chain) at T = 100, and per-epoch mode
at paper A's T = 300.

1. I/O + encoding overhead: the block phase of `run_precompute` (simulate, encode, write, mark)
   vs the same simulation of the same blocks in memory (no encoding, no writes), both with the
   same number of worker processes (1 and 2), with the same allocator settings; target <= 15 %.
   Equal parallelism compares like with like: with 1 worker the writer thread has the second
   core to itself, with 2 it shares the cores with the simulations;
2. 1 -> 2 workers speed-up of `run_precompute`, target >= 1.6x on 2 cores;
3. bytes on disk per tuple vs raw float32 tuples, target <= 55 %.

Each configuration runs ``--repeats`` times, interleaved; the fastest run of each is kept, and the
overhead is also given as a ratio of medians (runs on this VM scatter by +-20 %).

Run: python benchmarks/bench_precompute.py [--examples 1024] [--steps 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import save, timed

from orient.dynamics import process_from_config
from orient.pipeline.blocks import Plan, block_start, run_chains
from orient.pipeline.cluster import WORKER_ENV
from orient.pipeline.precompute import PrecomputeConfig, run_precompute
from orient.storage.store import TupleStore

_W: dict = {}


def simulate_in_memory(process, x0: np.ndarray, plan: Plan, b: int, device: str = "cpu") -> int:
    """The exact simulation of block b (the same draws and the same loop as simulate_block),
    without encoding or writing; returns the tuples it would emit."""
    _, E, _, g, x = block_start(process, x0, plan, 0, b, device)
    return sum(len(emitting) for _, emitting, _, _ in run_chains(process, x, E, plan.M, g))


def _init(url: str) -> None:
    torch.set_num_threads(1)
    _W["url"] = url


def _block(b: int) -> int:
    """Simulate block b; the first block of a process opens the store, as precompute's tasks do."""
    if b < 0:
        return 0
    if "process" not in _W:
        store = TupleStore.open(_W["url"])
        plan = Plan.from_json(store.meta["plan"])
        _W.update(process=store.process(process_from_config), x0=store.source(), plan=plan)
    return simulate_in_memory(_W["process"], _W["x0"], _W["plan"], b)


def in_memory(url: str, workers: int) -> tuple[float, int]:
    """Seconds to simulate every block with ``workers`` processes (started and imported first;
    reading the process and sources from the store is timed, as in precompute's block phase)."""
    plan = Plan.from_json(TupleStore.open(url).meta["plan"])
    n_blocks = plan.n_blocks
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)  # the same allocator settings as precompute's workers
    try:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(url,))
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    with pool:
        pool.map(_block, [-1] * workers, chunksize=1)
        t0 = time.perf_counter()
        n = sum(pool.imap_unordered(_block, range(n_blocks), chunksize=1))
        return time.perf_counter() - t0, n


def measure(tmp: Path, name: str, cfg: dict, workers: tuple[int, ...], repeats: int) -> dict:
    """Fastest of ``repeats`` interleaved runs of precompute and in-memory, per worker count."""
    e2e: dict[int, list[float]] = {w: [] for w in workers}
    blocks: dict[int, list[float]] = {w: [] for w in workers}
    mem: dict[int, list[float]] = {w: [] for w in workers}
    summary = {}
    for rep in range(repeats):
        for w in workers:
            out = tmp / f"{name}-{w}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            t, s = timed(
                run_precompute, PrecomputeConfig(out=str(out), workers=w, **cfg), log=print
            )
            e2e[w].append(t)
            blocks[w].append(s.blocks_seconds)
            summary[w] = s
            t_mem, n_mem = in_memory(str(out), w)
            mem[w].append(t_mem)
            print(
                f"{name} rep {rep} workers {w}: blocks {s.blocks_seconds:.2f} s, in memory {t_mem:.2f} s"
            )
    plan = Plan.from_json(TupleStore.open(str(tmp / f"{name}-{workers[0]}.zarr")).meta["plan"])
    s1 = summary[workers[0]]
    raw = 4 * math.prod(plan.state_shape) * (1 + 2 * plan.M) + 8
    rec: dict = {
        "config": {
            **cfg,
            "chains": plan.n_chains,
            "blocks": plan.n_blocks,
            "chains_per_block": plan.chains_per_block,
            "tuples_per_chain": plan.kept_per_chain,
            "repeats": repeats,
        },
        "tuples": n_mem,
        "runs": {
            str(w): {"end_to_end_s": e2e[w], "blocks_s": blocks[w], "in_memory_s": mem[w]}
            for w in workers
        },
        "bytes_per_tuple": s1.bytes_on_disk / s1.tuples,
        "raw_float32_bytes_per_tuple": raw,
        "bytes_ratio": s1.bytes_on_disk / s1.tuples / raw,
    }
    for w in workers:
        rec[f"in_memory_{w}_workers_s"] = min(mem[w])
        rec[f"blocks_{w}_workers_s"] = min(blocks[w])
        rec[f"end_to_end_{w}_workers_s"] = min(e2e[w])
        rec[f"overhead_{w}_workers"] = min(blocks[w]) / min(mem[w]) - 1
        rec[f"overhead_{w}_workers_median"] = (
            statistics.median(blocks[w]) / statistics.median(mem[w]) - 1
        )
        rec[f"tuples_per_s_{w}_workers"] = n_mem / min(blocks[w])
        rec[f"chain_steps_per_s_{w}_workers"] = plan.n_chains * plan.T / min(blocks[w])
    if len(workers) > 1:
        a, b = workers[0], workers[1]
        rec["speedup_1_to_2_workers"] = min(e2e[a]) / min(e2e[b])
        rec["speedup_1_to_2_workers_blocks_phase"] = min(blocks[a]) / min(blocks[b])
        rec["speedup_1_to_2_workers_in_memory"] = min(mem[a]) / min(mem[b])
        from conftest_free import same_bytes

        rec["identical_bytes_1_vs_2_workers"] = same_bytes(
            tmp / f"{name}-{a}.zarr", tmp / f"{name}-{b}.zarr"
        )
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=1024)
    ap.add_argument("--size", type=int, default=32, help="image side (96: paper A's SOCOFing size)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=("full", "per_epoch", "per_epoch_T300"), action="append")
    ap.add_argument("--no-save", action="store_true", help="print only (exploratory runs)")
    ap.add_argument(
        "--save-as", default="precompute", help="results file name (docs/benchmark-results)"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orient-bench-"))
    base = dict(
        data_options={"n": args.examples, "size": args.size},
        steps=args.steps,
        M=args.samples,
        seed=0,
    )
    configs = {
        "full": base,
        "per_epoch": {**base, "tuples_per_chain": 10, "epochs": 1},
        # paper A's SOCOFing setting (T = 300), 10 tuples per chain per epoch
        "per_epoch_T300": {**base, "steps": 300, "tuples_per_chain": 10, "epochs": 1},
    }
    try:
        rec = {
            name: measure(tmp, name, cfg, (1, 2), args.repeats)
            for name, cfg in configs.items()
            if not args.only or name in args.only
        }
        for mode, r in rec.items():
            for k, v in r.items():
                if k != "runs":
                    print(f"{mode}.{k}: {v}")
        if not args.no_save:
            save(args.save_as, rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
