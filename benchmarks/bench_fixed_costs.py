"""What one precompute run costs besides its blocks, and how fast this machine's disk takes writes.

Each part of ``run_precompute`` that does not scale with the chains, timed on its own (median of
``--repeats``):

* ``prepare``: generating (or loading) the data set, splitting it, building the process;
* ``cluster start``: a LocalCluster of ``--workers`` worker processes importing torch and orient
  (precompute's ``dask_client``), then a first task that touches the device (CUDA's context);
* ``store create``: creating the store and writing its sources, split and process buffers;
* ``cluster stop``.

Then the disk: ``O_DIRECT`` writes of ``--disk-mib`` MiB from one page-aligned buffer, as the
store's shard writer does, by 1 and by several threads (separate files), which bounds what any
writer setting can reach.

Run: python benchmarks/bench_fixed_costs.py [--device cuda] [--examples 2048] [--size 96]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from common import save

from orient.pipeline.blocks import make_plan
from orient.pipeline.cluster import dask_client
from orient.pipeline.precompute import (
    PrecomputeConfig,
    _meta,
    check_device,
    prepare,
)
from orient.storage.chunkio import page_aligned
from orient.storage.store import TupleStore


def _touch_device(device: str) -> float:
    t0 = time.perf_counter()
    torch.zeros(1, device=device).sum().item()
    return time.perf_counter() - t0


def fixed_costs(cfg: PrecomputeConfig, workers: int, repeats: int, tmp: Path) -> dict:
    rows: dict[str, list[float]] = {}

    def add(key: str, seconds: float) -> None:
        rows.setdefault(key, []).append(seconds)

    for rep in range(repeats):
        t0 = time.perf_counter()
        ds, train, test, process = prepare(cfg)
        add("prepare", time.perf_counter() - t0)
        x0 = ds.data[train]
        plan = make_plan(
            mode="full",
            n_chains=len(train),
            T=process.T,
            M=cfg.M,
            seed=cfg.seed,
            state_shape=tuple(x0.shape[1:]),
            periodic=process.periodic,
        )
        t0 = time.perf_counter()
        with dask_client(workers, None, cfg.device) as client:
            add("cluster start", time.perf_counter() - t0)
            t1 = time.perf_counter()
            client.run(_touch_device, cfg.device)
            add("first device call in the workers", time.perf_counter() - t1)
            out = tmp / f"s{rep}.zarr"
            t1 = time.perf_counter()
            TupleStore.create(
                str(out), _meta(cfg, ds, train, test, plan), process, x0, train, test, ds.data[test]
            )
            add("store create", time.perf_counter() - t1)
            t2 = time.perf_counter()
        add("cluster stop", time.perf_counter() - t2)
        shutil.rmtree(out, ignore_errors=True)
    out = {k: {"median_s": statistics.median(v), "all_s": v} for k, v in rows.items()}
    for k, v in out.items():
        print(f"{k:34s} {v['median_s']:7.2f} s  ({', '.join(f'{x:.2f}' for x in v['all_s'])})")
    return out


def disk_rates(tmp: Path, mib: int, threads: tuple[int, ...]) -> dict:
    """MiB/s of O_DIRECT writes of ``mib`` MiB in all, split over ``k`` threads and files."""
    buf = page_aligned((16 * 2**20,), "u1")
    buf[:] = 7
    rates = {}

    def write(path: Path, nbytes: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0))
        try:
            off = 0
            while off < nbytes:
                off += os.pwritev(fd, [memoryview(buf)[: min(buf.nbytes, nbytes - off)]], off)
        finally:
            os.close(fd)

    for k in threads:
        per = mib * 2**20 // k // buf.nbytes * buf.nbytes
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(k) as pool:
                list(pool.map(write, [tmp / f"d{i}" for i in range(k)], [per] * k))
            times.append(time.perf_counter() - t0)
            for i in range(k):
                (tmp / f"d{i}").unlink()
        rates[k] = per * k / 2**20 / statistics.median(times)
        print(f"O_DIRECT writes, {k} thread(s): {rates[k]:,.0f} MiB/s", flush=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--examples", type=int, default=1024)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="default: 1 with CUDA, else 2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--disk-mib", type=int, default=2048)
    ap.add_argument("--save-as", default="fixed_costs")
    args = ap.parse_args()
    device = check_device(args.device)
    workers = args.workers or (1 if device.startswith("cuda") else 2)
    cfg = PrecomputeConfig(
        device=device, data_options={"n": args.examples, "size": args.size}, steps=100
    )
    tmp = Path(tempfile.mkdtemp(prefix="orient-bench-fixed-", dir=os.environ.get("BENCH_TMP")))
    try:
        rec = {
            "device": device,
            "workers": workers,
            "examples": args.examples,
            "size": args.size,
            "fixed": fixed_costs(cfg, workers, args.repeats, tmp),
            "disk_MiB_per_s": disk_rates(tmp, args.disk_mib, (1, 2, 4, 8)),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save(args.save_as, rec)


if __name__ == "__main__":
    main()
