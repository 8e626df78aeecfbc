"""Where the full-mode overhead of one precompute worker goes, in CPU time of the simulating thread.

The precompute benchmark compares wall times of whole runs; this one times each block with
``time.thread_time`` (CPU seconds of the thread itself, which another tenant of the machine does not
inflate) and wall time, per block, on the blocks of a full-mode store:

* ``bare``: the simulation loop alone (``run_chains``, what the in-memory baseline runs);
* ``simulate_block``: the same plus encoding and placing each step's tuples in their stored rows;
* ``task``: precompute's Dask task body (``run_block``) in a plain process, so also the hand-off
  to the writer thread, which writes every block to the store;
* ``dask``: the same task in a one-worker LocalCluster, as ``orient precompute --workers 1`` runs it.

The first three alternate block by block in one process; then each part of ``simulate_block``'s
own work is timed inside the loop (encode / place, per array).

Run: python benchmarks/bench_overhead_parts.py [--examples 1024] [--size 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import save

from orient.pipeline.cluster import WORKER_ENV

HERE = Path(__file__).resolve().parent


def in_process(url: str, repeats: int) -> dict:
    """bare / simulate_block / task, alternating per block; then simulate_block's parts."""
    import torch

    from orient.dynamics import process_from_config
    from orient.pipeline import tasks
    from orient.pipeline.blocks import Plan, block_buffers, block_start, run_chains, simulate_block
    from orient.storage.codecs import carrier_view, encode_tensor, state_encoding
    from orient.storage.store import TupleStore

    torch.set_num_threads(1)
    store = TupleStore.open(url, mode="r+")
    plan = Plan.from_json(store.meta["plan"])
    process, x0, out = store.process(process_from_config), store.source(), block_buffers(plan)

    def bare(b: int) -> None:
        _, E, _, g, x = block_start(process, x0, plan, 0, b)
        for _ in run_chains(process, x, E, plan.M, g):
            pass

    modes = {
        "bare": bare,
        "simulate_block": lambda b: simulate_block(process, x0, plan, 0, b, out=out),
        "task": lambda b: tasks.run_block(tasks.block_spec(store, "full", plan, 0, b, "cpu", 1)),
    }
    for f in modes.values():
        f(0)  # first touches and first calls
    tasks.flush()
    times: dict = {m: {"wall": [], "cpu": []} for m in modes}
    for r in range(repeats):
        for b in range(plan.n_blocks):
            order = list(modes.items())
            for name, f in order if (b + r) % 2 == 0 else order[::-1]:
                w0, c0 = time.perf_counter(), time.thread_time()
                f(b)
                times[name]["wall"].append(time.perf_counter() - w0)
                times[name]["cpu"].append(time.thread_time() - c0)
        tasks.flush()
    # simulate_block's own work, part by part (the same calls it makes)
    enc = {"x_prev": state_encoding(plan.periodic), "x_t": state_encoding(plan.periodic),
           "score": "scaled-f16"}  # fmt: skip
    host = {k: carrier_view(out[k], e) for k, e in enc.items()}
    parts = dict.fromkeys(("simulation", "encode", "place", "t and src"), 0.0)
    clock = time.thread_time
    for b in range(plan.n_blocks):
        _, E, rng, g, x = block_start(process, x0, plan, 0, b)
        rows = np.empty(int(E.sum()), dtype=np.int64)
        rows[rng.permutation(len(rows))] = np.arange(len(rows))
        k, c, steps = 0, clock(), run_chains(process, x, E, plan.M, g)
        for _t, emitting, xe, tr in steps:
            c1 = clock()
            parts["simulation"] += c1 - c
            r = rows[k : k + len(emitting)]
            k += len(emitting)
            for key, value in (("x_prev", xe), ("x_t", tr.x.transpose(0, 1)),
                               ("score", tr.score.transpose(0, 1).mul_(0.5))):  # fmt: skip
                c2 = clock()
                e = encode_tensor(value, enc[key])
                c3 = clock()
                host[key].numpy()[r] = e.contiguous().numpy()
                c4 = clock()
                parts["encode"] += c3 - c2
                parts["place"] += c4 - c3
            c5 = clock()
            out["t"][r] = _t
            out["src"][r] = emitting
            c = clock()
            parts["t and src"] += c - c5
        parts["simulation"] += clock() - c
    per_block = {k: v / plan.n_blocks for k, v in parts.items()}
    return {"modes": times, "parts_cpu_s_per_block": per_block, "blocks": plan.n_blocks}


def _timed_task(spec: dict) -> tuple[float, float]:
    from orient.pipeline import tasks

    w0, c0 = time.perf_counter(), time.thread_time()
    tasks.run_block(spec)
    return time.perf_counter() - w0, time.thread_time() - c0


def in_dask(url: str, repeats: int) -> dict:
    """The task in a one-worker LocalCluster: per-task wall and CPU time of the worker's thread."""
    from orient.pipeline import tasks
    from orient.pipeline.blocks import Plan
    from orient.pipeline.cluster import dask_client
    from orient.storage.store import TupleStore

    store = TupleStore.open(url)
    plan = Plan.from_json(store.meta["plan"])
    wall, cpu = [], []
    with dask_client(1, None, "cpu") as client:
        for _ in range(repeats + 1):  # the first pass warms the worker up
            specs = [
                tasks.block_spec(store, "full", plan, 0, b, "cpu", 1) for b in range(plan.n_blocks)
            ]
            res = client.gather(client.map(_timed_task, specs, pure=False))
            client.run(tasks.flush)
            wall.append([r[0] for r in res])
            cpu.append([r[1] for r in res])
    return {"wall": sum(wall[1:], []), "cpu": sum(cpu[1:], [])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=1024)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--save-as", default="overhead_parts")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # the in-process part, in a process with the workers' allocator settings
        import json

        print(json.dumps(in_process(args.child, args.repeats)))
        return
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    tmp = Path(tempfile.mkdtemp(prefix="orient-parts-"))
    try:
        url = str(tmp / "full.zarr")
        run_precompute(PrecomputeConfig(out=url, workers=1, data_options={"n": args.examples,
                       "size": args.size}, steps=100, M=5, seed=0), log=print)  # fmt: skip
        import json

        env = {**os.environ, **WORKER_ENV}
        child = subprocess.run(
            [sys.executable, __file__, "--child", url, "--repeats", str(args.repeats)],
            env=env, capture_output=True, text=True, check=True, cwd=HERE,
        )  # fmt: skip
        rec = json.loads(child.stdout.strip().splitlines()[-1])
        rec["modes"]["dask"] = in_dask(url, args.repeats)
        summary = {}
        for name, t in rec["modes"].items():
            summary[name] = {
                "wall_ms": 1000 * statistics.median(t["wall"]),
                "cpu_ms": 1000 * statistics.median(t["cpu"]),
            }
            print(f"{name:15s} wall {summary[name]['wall_ms']:7.1f} ms  "
                  f"thread CPU {summary[name]['cpu_ms']:7.1f} ms per block (median)")  # fmt: skip
        for k, v in rec["parts_cpu_s_per_block"].items():
            print(f"  {k:12s} {1000 * v:7.1f} ms per block")
        rec["medians"] = summary
        rec["config"] = {"examples": args.examples, "size": args.size, "T": 100, "M": 5,
                         "mode": "full", "repeats": args.repeats}  # fmt: skip
        save(args.save_as, rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
