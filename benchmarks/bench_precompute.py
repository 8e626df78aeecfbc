"""Precompute benchmark (issue: precompute stage), measured as ratios within one run.

1. end-to-end throughput (`run_precompute`, 1 worker) vs the same simulation in memory with no
   encoding and no writes (one process, one thread): I/O + encoding overhead, target <= 15 %;
2. 1 -> 2 workers speed-up, target >= 1.6x on 2 cores;
3. bytes on disk per tuple vs raw float32 tuples, target <= 55 %.

Run: python benchmarks/bench_precompute.py [--examples 768] [--steps 100]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import save, timed

from orient.pipeline.blocks import Plan, derive_seed, emit_matrix
from orient.pipeline.precompute import PrecomputeConfig, run_precompute
from orient.storage.store import TupleStore


def simulate_in_memory(process, x0: np.ndarray, plan: Plan) -> int:
    """The exact simulation of every block (same draws), without encoding or writing."""
    torch.set_num_threads(1)
    n = 0
    for b in range(plan.n_blocks):
        chains = plan.block_chains(b)
        rng = np.random.default_rng(derive_seed(plan.seed, 0, b, "order"))
        g = torch.Generator().manual_seed(derive_seed(plan.seed, 0, b, "noise"))
        x = process.data_to_state(torch.from_numpy(x0[chains]))
        E = emit_matrix(plan, len(chains), rng)
        with torch.no_grad():
            for t in range(1, plan.T + 1):
                emit = torch.from_numpy(E[:, t - 1])
                x_next = torch.empty_like(x)
                if bool(emit.any()):
                    tr = process.sample_transitions(x[emit], t, plan.M, g)
                    n += int(emit.sum())
                    x_next[emit] = tr.x[0]
                if not bool(emit.all()):
                    x_next[~emit] = process.step(x[~emit], t, g)
                x = x_next
    return n


def measure(tmp: Path, name: str, cfg: dict, workers: tuple[int, ...]) -> dict:
    """In-memory simulation vs `run_precompute` with each worker count, for one configuration."""
    runs = {}
    for w in workers:
        t, s = timed(
            run_precompute,
            PrecomputeConfig(out=str(tmp / f"{name}-{w}.zarr"), workers=w, **cfg),
            log=print,
        )
        runs[w] = (t, s)
    store = TupleStore.open(str(tmp / f"{name}-{workers[0]}.zarr"))
    plan = Plan.from_json(store.meta["plan"])
    process = store.process()
    t_mem, n_mem = timed(simulate_in_memory, process, store.source(), plan)
    t1, s1 = runs[workers[0]]
    raw = 4 * math.prod(plan.state_shape) * (1 + 2 * plan.M) + 8
    rec = {
        "config": {
            **cfg,
            "chains": plan.n_chains,
            "blocks": plan.n_blocks,
            "chains_per_block": plan.chains_per_block,
            "tuples_per_chain": plan.kept_per_chain,
        },
        "tuples": n_mem,
        "in_memory_s": t_mem,
        "in_memory_chain_steps_per_s": plan.n_chains * plan.T / t_mem,
        **{f"precompute_{w}_workers_s": runs[w][0] for w in workers},
        **{f"precompute_{w}_workers_blocks_phase_s": runs[w][1].seconds for w in workers},
        "tuples_per_s_1_worker": n_mem / t1,
        "chain_steps_per_s_1_worker": plan.n_chains * plan.T / t1,
        "overhead_end_to_end_1_worker": t1 / t_mem - 1,
        "overhead_blocks_phase_1_worker": s1.seconds / t_mem - 1,
        "bytes_per_tuple": s1.bytes_on_disk / s1.tuples,
        "raw_float32_bytes_per_tuple": raw,
        "bytes_ratio": s1.bytes_on_disk / s1.tuples / raw,
    }
    if len(workers) > 1:
        t2, s2 = runs[workers[1]]
        rec["speedup_1_to_2_workers"] = t1 / t2
        rec["speedup_1_to_2_workers_blocks_phase"] = s1.seconds / s2.seconds
        rec["tuples_per_s_2_workers"] = n_mem / t2
        rec["chain_steps_per_s_2_workers"] = plan.n_chains * plan.T / t2
        from conftest_free import same_bytes

        rec["identical_bytes_1_vs_2_workers"] = same_bytes(
            tmp / f"{name}-1.zarr", tmp / f"{name}-2.zarr"
        )
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=768)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orient-bench-"))
    base = dict(
        data_options={"n": args.examples, "size": 32}, steps=args.steps, M=args.samples, seed=0
    )
    try:
        rec = {
            "full": measure(tmp, "full", base, (1, 2)),
            "per_epoch": measure(tmp, "epoch", {**base, "tuples_per_chain": 10, "epochs": 1}, (1,)),
        }
        for mode, r in rec.items():
            for k, v in r.items():
                print(f"{mode}.{k}: {v}")
        save("precompute", rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
