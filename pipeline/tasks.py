"""The one Dask task of the precompute stage: simulate a block, write it, then mark it done.

Workers keep the opened store, its process and its sources in a small per-process cache, so a task
carries only a few numbers and returns only metadata.
"""

from __future__ import annotations

import errno
import time
from typing import Any

import numpy as np
import torch

from orient.storage.store import TupleStore, write_block

from .blocks import Plan, simulate_block

_CACHE: dict[tuple[str, str], tuple[TupleStore, Any, np.ndarray]] = {}


class DiskFullError(OSError):
    pass


def _opened(url: str, process_hash: str, device: str) -> tuple[TupleStore, Any, np.ndarray]:
    key = (url, process_hash + device)
    if key not in _CACHE:
        store = TupleStore.open(url, mode="r+")
        _CACHE.clear()
        _CACHE[key] = (store, store.process().to(device), store.source())
    return _CACHE[key]


def run_block(spec: dict[str, Any]) -> dict[str, Any]:
    """Simulate and write one block; returns {block, tuples, seconds}."""
    torch.set_num_threads(int(spec.get("threads", 1)))
    t0 = time.perf_counter()
    store, process, x0 = _opened(spec["url"], spec["process_hash"], spec["device"])
    plan = Plan.from_json(spec["plan"])
    arrays = simulate_block(process, x0, plan, spec["epoch"], spec["block"], spec["device"])
    try:
        write_block(store.root[spec["group"]], spec["block"], arrays)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC, f"disk full while writing block {spec['block']}"
            ) from None
        raise
    return {
        "block": spec["block"],
        "tuples": int((arrays["t"] > 0).sum()),
        "seconds": time.perf_counter() - t0,
    }
