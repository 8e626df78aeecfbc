"""What a store will take on disk, known before any data are prepared (``orient precompute`` prints
it and refuses a store that would not fit), and where it goes: the free space of a local store's
file system."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass

from orient.dynamics import Process
from orient.storage.store import exists, is_local, local_path

from .blocks import Plan, group_bytes

# zarr.json files, attributes and tables: a few KB, and about 100 bytes an example for a table
METADATA_BYTES, TABLE_ROW_BYTES = 64 * 1024, 100


@dataclass(frozen=True)
class SizePlan:
    """The bytes a store will take: ``tuples`` as written (:func:`blocks.group_bytes`, every
    planned epoch; exact) and ``other`` (sources, split and fitted process buffers as raw bytes,
    and an allowance for metadata: an upper bound)."""

    tuples: int
    other: int

    @property
    def total(self) -> int:
        return self.tuples + self.other


def planned_size(plan: Plan, groups: int, n_examples: int, process: Process) -> SizePlan:
    """The store of ``groups`` tuple groups (full: 1; per-epoch: the epochs) of ``plan``, with the
    sources of ``n_examples`` and ``process``'s fitted buffers."""
    row = math.prod(plan.state_shape) * 4 + 8 + TABLE_ROW_BYTES  # float32 example, int64 index
    buffers = sum(b.numel() * 8 for b in process.buffers().values())  # stored as float64
    return SizePlan(groups * group_bytes(plan), n_examples * row + buffers + METADATA_BYTES)


def size_text(n: float) -> str:
    """Bytes for people: 370.2 GiB, 3.1 MiB, 812 bytes."""
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n >= 1024**power:
            return f"{n / 1024**power:,.1f} {unit}"
    return f"{int(n):,} bytes"


def size_option(n: int) -> str:
    """A size that ``--disk-budget`` reads back as at most ``n`` bytes (rounded down), e.g. 40.5G."""
    for suffix, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        if n >= 10 * 1024**power:
            return f"{math.floor(n / 1024**power * 10) / 10:g}{suffix}"
    return str(n)


def free_space(url: str) -> tuple[int, str] | None:
    """(free bytes, folder) of the file system a local store goes to (its nearest existing folder),
    plus what an existing store there holds (resumed or replaced); None for remote URLs."""
    if not is_local(url):
        return None
    path = os.path.abspath(local_path(url))
    where = path
    while not os.path.exists(where):
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free
    if os.path.isdir(path) and exists(url):
        for dirpath, _, files in os.walk(path):
            free += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return free, where
