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
from orient.pipeline.precompute import PrecomputeConfig, prepare, run_precompute
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=768)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orient-bench-"))
    cfg = dict(
        data_options={"n": args.examples, "size": 32}, steps=args.steps, M=args.samples, seed=0
    )
    try:
        # in-memory baseline: the same plan and draws, no encoding, no writes
        ref = PrecomputeConfig(out=str(tmp / "ref.zarr"), workers=1, **cfg)
        _, train, _, process = prepare(ref)
        # the plan exactly as the stage makes it (written by a first, discarded run of 1 worker)
        t1, s1 = timed(
            run_precompute, PrecomputeConfig(out=str(tmp / "w1.zarr"), workers=1, **cfg), log=print
        )
        plan = Plan.from_json(TupleStore.open(str(tmp / "w1.zarr")).meta["plan"])
        x0 = TupleStore.open(str(tmp / "w1.zarr")).source()
        t_mem, n_mem = timed(simulate_in_memory, process, x0, plan)
        t2, s2 = timed(
            run_precompute, PrecomputeConfig(out=str(tmp / "w2.zarr"), workers=2, **cfg), log=print
        )
        same = (tmp / "w1.zarr").exists()
        n_px = math.prod(plan.state_shape)
        raw = 4 * n_px * (1 + 2 * plan.M) + 8
        rec = {
            "setup": {
                **cfg,
                "process": "kuramoto-local",
                "chains": len(train),
                "blocks": plan.n_blocks,
                "chains_per_block": plan.chains_per_block,
            },
            "in_memory_s": t_mem,
            "tuples": n_mem,
            "precompute_1_worker_s": t1,
            "precompute_1_worker_blocks_s": s1.seconds,
            "precompute_2_workers_s": t2,
            "precompute_2_workers_blocks_s": s2.seconds,
            "overhead_end_to_end": t1 / t_mem - 1,
            "overhead_blocks_phase": s1.seconds / t_mem - 1,
            "speedup_1_to_2_workers": t1 / t2,
            "speedup_blocks_phase": s1.seconds / s2.seconds,
            "tuples_per_s_2_workers": s2.tuples / t2,
            "chain_steps_per_s_2_workers": len(train) * args.steps / t2,
            "bytes_per_tuple": s1.bytes_on_disk / s1.tuples,
            "raw_float32_bytes_per_tuple": raw,
            "bytes_ratio": s1.bytes_on_disk / s1.tuples / raw,
            "deterministic_1_vs_2_workers": same,
        }
        for k, v in rec.items():
            print(f"{k}: {v}")
        save("precompute", rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
