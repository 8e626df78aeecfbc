"""The one Dask task of the precompute stage: simulate a block, then write it and its marker.

Workers keep the opened store, its process and its sources in a small per-process cache, so a task
carries only a few numbers and returns only metadata.

Writes are double-buffered: a task simulates its block, waits for the write of the block before it
(if that is still running), hands its own block to the worker process's writer thread and returns.
So block b+1 is simulated while block b goes to disk, with at most two blocks in memory per worker
thread. The done markers on disk, written after each block's data, stay the only truth about what
is complete: the driver calls :func:`flush` on every worker at the end of a group and then re-runs
any block whose marker is missing (a worker that died with a write in flight).
"""

from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from orient.dynamics import process_from_config
from orient.storage.store import TupleStore, write_block

from .blocks import Plan, block_buffers, simulate_block

_CACHE: dict[tuple[str, str], tuple[TupleStore, Any, np.ndarray]] = {}
_WRITER: ThreadPoolExecutor | None = None
_PENDING: list[Future] = []
_LOCK = threading.Lock()
_LOCAL = threading.local()  # per task thread: two sets of block buffers, used in turn


class DiskFullError(OSError):
    pass


def _opened(url: str, process_hash: str, device: str) -> tuple[TupleStore, Any, np.ndarray]:
    key = (url, process_hash + device)
    with _LOCK:
        if key not in _CACHE:
            store = TupleStore.open(url, mode="r+")
            _CACHE.clear()
            _CACHE[key] = (store, store.process(process_from_config).to(device), store.source())
        return _CACHE[key]


def _write(
    store: TupleStore, group: str, block: int, arrays: dict[str, np.ndarray], threads: int
) -> None:
    try:
        write_block(store.root[group], block, arrays, threads)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(errno.ENOSPC, f"disk full while writing block {block}") from None
        raise


def flush() -> None:
    """Wait for every write this worker process has queued; re-raise the first that failed."""
    with _LOCK:
        pending = list(_PENDING)
        _PENDING.clear()
    errors = []
    for fut in pending:
        try:
            fut.result()
        except BaseException as exc:  # every write is waited for before one error is raised
            errors.append(exc)
    if errors:
        raise errors[0]


def _buffers(plan: Plan) -> dict[str, np.ndarray]:
    """The buffer set not used by this thread's previous block (whose write may be running).

    Pageable memory, also with CUDA: page-locking them (``cudaHostRegister``) made the copy of a
    512 MiB block from an H100 take 10 ms instead of 40 ms, next to ~0.5 s of disk writes per
    block, and the registrations outlived the buffers of in-process workers (docs/benchmarks.md).
    """
    key = (plan.tuples_per_block, plan.state_shape, plan.M, plan.periodic)
    if getattr(_LOCAL, "key", None) != key:
        _LOCAL.key, _LOCAL.sets, _LOCAL.turn = key, [block_buffers(plan), block_buffers(plan)], 0
    _LOCAL.turn ^= 1
    return _LOCAL.sets[_LOCAL.turn]


def block_spec(
    store: TupleStore, group: str, plan: Plan, epoch: int, block: int, device: str, io_threads: int
) -> dict[str, Any]:
    """What :func:`run_block` needs to write block ``block`` of ``group``: a few numbers, no data."""
    return {
        "url": store.url,
        "group": group,
        "plan": plan.to_json(),
        "epoch": epoch,
        "block": block,
        "device": device,
        "process_hash": store.meta["process_hash"],
        "threads": 1,
        "io_threads": io_threads,
    }


def run_block(spec: dict[str, Any]) -> dict[str, Any]:
    """Simulate one block and queue its write; returns {block, tuples, seconds}."""
    global _WRITER
    torch.set_num_threads(int(spec.get("threads", 1)))
    t0 = time.perf_counter()
    store, process, x0 = _opened(spec["url"], spec["process_hash"], spec["device"])
    plan = Plan.from_json(spec["plan"])
    arrays = simulate_block(
        process,
        x0,
        plan,
        spec["epoch"],
        spec["block"],
        spec["device"],
        out=_buffers(plan),
    )
    flush()  # the previous block's write: bounds memory, and surfaces its errors here
    with _LOCK:
        if _WRITER is None:
            _WRITER = ThreadPoolExecutor(1, thread_name_prefix="orient-writer")
        io = int(spec.get("io_threads", 1))
        _PENDING.append(_WRITER.submit(_write, store, spec["group"], spec["block"], arrays, io))
    return {
        "block": spec["block"],
        "tuples": int((arrays["t"] > 0).sum()),
        "seconds": time.perf_counter() - t0,
    }
