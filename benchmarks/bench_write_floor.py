"""What the writes cost when every core simulates, against the least any store could write.

Two processes (one per core) each simulate 7 blocks of the precompute benchmark's full-mode
configuration (Kuramoto local, 32 x 32, T = 100, M = 5; 144 MB of encoded tuples per block) with
`simulate_block`, double-buffered as precompute's tasks are, and hand each block to a writer thread:

* ``none``: no writer (the blocks are simulated and encoded, then dropped);
* ``raw``: the block's five arrays written with five ``O_DIRECT`` writes into one preallocated file
  per process, straight from the page-aligned block buffers: no checksums, no chunk files, no
  renames. No store format can write less;
* ``store``: `write_block`, the store's own write (format 3: one shard file per array, with a
  CRC32C per chunk and the shard index, through a temporary file and a rename; then the block
  digest and the done marker). Format 2 wrote one file per chunk (125 per block): +24 % and
  +28 % in two runs of this benchmark, against +6 % and +3 % for ``raw`` (docs/benchmarks.md).

Modes alternate within each repeat; the report gives the median over repeats of each mode's wall
time and of its ratio to ``none`` in the same repeat, and the guest's CPU accounting from
/proc/stat. Run: python benchmarks/bench_write_floor.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import save

from orient.pipeline.cluster import WORKER_ENV
from orient.pipeline.precompute import PrecomputeConfig, run_precompute

BLOCKS_PER_PROCESS = 7
MODES = ("none", "raw", "store")
_ALIGN = 4096


def raw_write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The block's bytes, whole pages only, one ``O_DIRECT`` write per array into one file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o644)
    try:
        offset = 0
        for a in arrays.values():
            raw = a.reshape(-1).view(np.uint8)
            n = raw.nbytes // _ALIGN * _ALIGN
            if n:
                os.pwrite(fd, memoryview(raw[:n]), offset)
                offset += n
    finally:
        os.close(fd)


def worker(mode: str, index: int, url: str, scratch: str, queue: mp.Queue) -> None:
    import torch

    from orient.dynamics import process_from_config
    from orient.pipeline.blocks import Plan, block_buffers, simulate_block
    from orient.storage.store import TupleStore, write_block

    torch.set_num_threads(1)
    store = TupleStore.open(url, mode="r+")
    plan = Plan.from_json(store.meta["plan"])
    group, process, x0 = store.root["full"], store.process(process_from_config), store.source()
    buffers = [block_buffers(plan), block_buffers(plan)]
    raw_path = Path(scratch) / f"raw-{index}.bin"
    write = {
        "none": None,
        "raw": lambda b, arrays: raw_write(raw_path, arrays),
        "store": lambda b, arrays: write_block(group, b, arrays),
    }[mode]
    writer, pending = ThreadPoolExecutor(1), None
    t0 = time.perf_counter()
    for i in range(BLOCKS_PER_PROCESS):
        b = (index + 2 * i) % plan.n_blocks
        arrays = simulate_block(process, x0, plan, 0, b, out=buffers[i % 2])
        if write is not None:
            if pending is not None:
                pending.result()  # as precompute's tasks: at most one write in flight
            pending = writer.submit(write, b, arrays)
    if pending is not None:
        pending.result()
    queue.put(time.perf_counter() - t0)


def cpu_seconds() -> dict[str, float]:
    """Guest-wide CPU seconds by kind, from /proc/stat (USER_HZ = 100)."""
    fields = [int(x) / 100 for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return {
        "user": fields[0] + fields[1],
        "system": fields[2],
        "idle": fields[3],
        "iowait": fields[4],
        "softirq": fields[6],
        "steal": fields[7],
    }


def run_mode(mode: str, url: str, scratch: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(mode, i, url, scratch, queue)) for i in range(2)]
    before = cpu_seconds()
    for p in procs:
        p.start()
    seconds = max(queue.get() for _ in procs)
    for p in procs:
        p.join()
    after = cpu_seconds()
    return {"seconds": seconds, "cpu": {k: after[k] - before[k] for k in before}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orient-bench-"))
    try:
        url = str(tmp / "full.zarr")
        cfg = PrecomputeConfig(
            out=url, workers=1, data_options={"n": 1024, "size": 32}, steps=100, M=5, seed=0
        )
        run_precompute(cfg, log=lambda _: None)
        os.environ.update(WORKER_ENV)  # the allocator settings of precompute's workers
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for rep in range(args.repeats):
            for mode in MODES:
                r = run_mode(mode, url, str(tmp))
                runs[mode].append(r)
                print(f"rep {rep} {mode:5s}: {r['seconds']:.2f} s  cpu {r['cpu']}", flush=True)
        rec: dict = {
            "config": {
                "processes": 2,
                "blocks_per_process": BLOCKS_PER_PROCESS,
                "block_bytes": 144 * 2**20,
                "repeats": args.repeats,
            },
            "runs": runs,
        }
        for mode in MODES:
            secs = [r["seconds"] for r in runs[mode]]
            rec[f"{mode}_median_s"] = statistics.median(secs)
            rec[f"{mode}_vs_none_median"] = statistics.median(
                r["seconds"] / n["seconds"] for r, n in zip(runs[mode], runs["none"], strict=True)
            )
            for kind in ("user", "system", "iowait", "softirq"):
                rec[f"{mode}_{kind}_cpu_s_median"] = statistics.median(
                    r["cpu"][kind] for r in runs[mode]
                )
        for k, v in rec.items():
            if k not in ("runs", "config"):
                print(f"{k}: {v:.3f}")
        if not args.no_save:
            save("write_floor", rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
