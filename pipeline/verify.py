"""``orient verify``: checksums, completion markers, block digests and recomputation from seeds."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from orient.storage.chunkio import shard_padding_is_clean
from orient.storage.store import (
    TUPLE_ARRAYS,
    StoreError,
    TupleStore,
    block_digest,
    damage,
    epoch_name,
    read_block,
    write_block,
    writer_lock,
)

from .blocks import Plan, simulate_block
from .progress import Progress


@dataclass
class GroupReport:
    name: str
    blocks: int
    incomplete: list[int] = field(default_factory=list)
    corrupted: list[int] = field(default_factory=list)  # checksum or digest mismatch
    recomputed: list[int] = field(default_factory=list)
    mismatched: list[int] = field(default_factory=list)  # differs from a fresh simulation
    repaired: list[int] = field(default_factory=list)
    unwritten: bool = False  # a planned epoch that was never begun (precompute --resume writes it)
    temporary: bool = False  # an epoch still under its temporary name: training does not see it
    renamed: str | None = None  # where --repair moved a finished temporary epoch
    conflict: str | None = None  # a temporary epoch whose final name is taken by another group

    @property
    def damaged(self) -> list[int]:
        return sorted(set(self.corrupted) | set(self.mismatched))

    @property
    def ok(self) -> bool:
        unfinished = self.temporary and self.renamed is None
        return not (self.incomplete or self.damaged or self.unwritten or unfinished)

    @property
    def mended(self) -> bool:
        """Did --repair leave this group whole and in place?"""
        covered = set(self.repaired) >= set(self.damaged) | set(self.incomplete)
        return not self.unwritten and covered and (not self.temporary or self.renamed is not None)

    def line(self) -> str:
        if self.unwritten:
            return f"{self.name}: NOT WRITTEN (planned; `orient precompute --resume` writes it)"
        status = "ok" if self.ok else "DAMAGED" if self.damaged else "INCOMPLETE"
        if status == "INCOMPLETE" and not self.incomplete:
            status = (
                "NOT IN PLACE (all blocks written, never renamed: --repair or --resume does it)"
            )
        if self.conflict:
            status = f"NOT IN PLACE ({self.conflict} exists as well: delete one of the two)"
        parts = [f"{self.name}: {status}", f"{self.blocks} blocks"]
        if self.incomplete:
            parts.append(f"{len(self.incomplete)} not done")
        if self.corrupted:
            parts.append(f"corrupted {self.corrupted[:8]}")
        if self.mismatched:
            parts.append(f"differ from recomputation {self.mismatched[:8]}")
        parts.append(f"recomputed {len(self.recomputed)}")
        if self.repaired:
            parts.append(f"repaired {len(self.repaired)}")
        if self.renamed:
            parts.append(f"renamed into place as {self.renamed}")
        return ", ".join(parts)


def simulate(process, x0, plan, epoch, block, device) -> dict[str, np.ndarray]:
    """simulate_block with one torch thread, exactly as the precompute workers run it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return simulate_block(process, x0, plan, epoch, block, device)
    finally:
        torch.set_num_threads(threads)


def _markers(arrays: dict, n: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Each block's done marker and digest, read one chunk at a time so that one damaged chunk
    marks only its own block (as not done, and corrupted)."""
    done, digests, bad = np.zeros(n, dtype=bool), np.zeros((n, 4), dtype=np.uint8), []
    for b in range(n):
        try:
            done[b], digests[b] = bool(arrays["done"][b]), arrays["digest"][b]
        except ValueError:  # checksum mismatch
            bad.append(b)
    return done, digests, bad


def verify_store(
    url: str, repair: bool = False, recompute: int = 2, seed: int = 0
) -> list[GroupReport]:
    """Check every block of every tuple group; recompute ``recompute`` blocks per group from seeds.

    With ``repair``, damaged (and not-done) blocks are simulated again and rewritten, under the
    store's writer lock.
    """
    with writer_lock(url) if repair else contextlib.nullcontext():
        return _verify_store(url, repair, recompute, seed)


class Unrepairable(StoreError):
    """Damage that the store cannot mend from itself (its sources, process, metadata)."""


def _verify_store(url: str, repair: bool, recompute: int, seed: int) -> list[GroupReport]:
    store = TupleStore.open(url, mode="r+" if repair else "r")
    device = store.meta.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"{url} was written on {device}; verify and repair it on a machine with CUDA"
        )
    rebuild = (
        "; the store cannot be repaired from itself: rebuild it (`orient precompute --overwrite`)"
    )
    x0 = None
    try:  # what every block is recomputed from: read whole, every chunk's CRC checked
        for path in store.own_arrays():
            a = store.read_array(path)
            x0 = a if path == store.SOURCE else x0  # kept (SOCOFing-size: ~200 MB read once)
        process = store.process().to(device)
        x0 = store.source() if x0 is None else x0
    except StoreError as exc:
        raise Unrepairable(f"{exc}{rebuild}") from None
    plan = Plan.from_json(store.meta["plan"])
    names = store.tuple_groups() + [
        f"epochs/{k}" for k in store.root["epochs"].group_keys() if k.startswith(".tmp-")
    ]
    reports = []
    for name in names:
        epoch = int(name.split("/")[1].replace(".tmp-", "")) if name.startswith("epochs/") else 0
        if not store.has_group(name):  # cut short while it was created: no block in it counts
            if not repair:
                every = list(range(plan.n_blocks))
                reports.append(GroupReport(name, plan.n_blocks, incomplete=every,
                                           temporary=".tmp-" in name))  # fmt: skip
                continue
            store.create_tuple_group(name, plan.layout())  # what precompute --resume does
        try:  # opening an array parses its zarr.json: once per group
            g = store.group(name)
            opened = {}
            for key in (*TUPLE_ARRAYS, "done", "digest"):
                opened[key] = g[key]
        except (ValueError, KeyError) as exc:
            raise Unrepairable(f"{url}: {name}/{key} is damaged ({damage(exc)}){rebuild}") from None
        done, digests, bad_markers = _markers(opened, plan.n_blocks)
        rep = GroupReport(name, plan.n_blocks, incomplete=[int(b) for b in np.flatnonzero(~done)])
        rep.corrupted += bad_markers  # a damaged done marker or digest: the block is rewritten
        bar = Progress(plan.n_blocks, f"verify {name}", unit="blocks")
        for b in np.flatnonzero(done):  # a block with a damaged marker reads as not done
            try:
                arrays = read_block(g, int(b), opened=opened)
                if not np.array_equal(block_digest(arrays, plan.chunk_tuples), digests[b]):
                    rep.corrupted.append(int(b))
                elif not all(shard_padding_is_clean(opened[k], int(b)) for k in TUPLE_ARRAYS):
                    rep.corrupted.append(int(b))  # the data are intact, the file is not as written
            except ValueError:  # "Stored and computed checksum do not match"
                rep.corrupted.append(int(b))
            bar.update(1)
        bar.close()
        healthy = [int(b) for b in np.flatnonzero(done) if int(b) not in rep.corrupted]
        rng = np.random.default_rng(seed)
        for b in rng.permutation(healthy)[:recompute]:
            fresh = simulate(process, x0, plan, epoch, int(b), device)
            rep.recomputed.append(int(b))
            if not np.array_equal(block_digest(fresh, plan.chunk_tuples), digests[b]):
                rep.mismatched.append(int(b))
        rep.temporary = ".tmp-" in name
        if repair:
            for b in sorted(set(rep.damaged) | set(rep.incomplete)):
                write_block(g, b, simulate(process, x0, plan, epoch, b, device))
                rep.repaired.append(b)
            final = epoch_name(epoch)
            if rep.temporary and store.has_group(final):
                rep.conflict = final  # both written: which one training should read is not ours
            elif rep.temporary:  # every block is now written and checked: what precompute does
                store.rename_group(name, final)
                rep.renamed = final
        reports.append(rep)
    # planned epochs never begun (a begun one is a group above, complete or not)
    begun = {int(n.split("/")[1].replace(".tmp-", "")) for n in names if n.startswith("epochs/")}
    for e in store.missing_epochs():
        if e not in begun:
            reports.append(GroupReport(epoch_name(e), plan.n_blocks, unwritten=True))
    return reports
