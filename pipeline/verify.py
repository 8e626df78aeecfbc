"""``orient verify``: checksums, completion markers, block digests and recomputation from seeds."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from orient.dynamics import process_from_config
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
    tmp_name: bool = False  # temporary under a name of its own: publishing it renames it
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
            never = "renamed" if self.tmp_name else "given its completion marker"
            status = (
                f"NOT IN PLACE (all blocks written, never {never}: --repair or --resume does it)"
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
        if self.renamed == self.name:
            parts.append("put in place (completion marker written)")
        elif self.renamed:
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

    The outcome is recorded in the store (:func:`verification_record`, ``orient info`` shows it),
    with the state it describes: the state before the check, or after it when --repair changed
    anything. A verify stopped by damage to what blocks are recomputed from (:class:`Unrepairable`)
    records nothing: it changes nothing in a store that it cannot repair.
    """
    with writer_lock(url) if repair else contextlib.nullcontext():
        reports, before = _verify_store(url, repair, recompute, seed)
        changed = any(r.repaired or r.renamed for r in reports)
        try:
            TupleStore.open(url).record_verification(
                verification_record(reports, recompute), None if changed else before
            )
        except Exception as exc:  # a store we may read but not write (read-only bucket, ...)
            print(f"orient: note: the outcome was not recorded in {url} ({exc})", file=sys.stderr)
        return reports


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def verification_record(reports: list[GroupReport], recompute: int) -> dict[str, Any]:
    """What a verification found, as recorded in the store: its time, ``ok``, a one-line
    ``result`` ("ok", "3 damaged blocks", ...), the counts behind it, and what was checked."""
    damaged = unfinished = repaired = blocks = recomputed = 0
    unwritten = not_in_place = 0
    for r in reports:
        fixed = set(r.repaired)
        damaged += len(set(r.damaged) - fixed)
        unfinished += len(set(r.incomplete) - set(r.damaged) - fixed)
        repaired += len(fixed)
        unwritten += r.unwritten
        not_in_place += r.temporary and r.renamed is None and not r.incomplete and not r.damaged
        blocks += 0 if r.unwritten else r.blocks
        recomputed += len(r.recomputed)
    problems = [
        _count(damaged, "damaged block") if damaged else "",
        _count(unfinished, "unfinished block") if unfinished else "",
        _count(unwritten, "planned epoch") + " not written" if unwritten else "",
        _count(not_in_place, "epoch") + " not in place" if not_in_place else "",
    ]
    problems = [p for p in problems if p]
    ok = not problems
    result = (
        ("ok" + (f" ({_count(repaired, 'block')} repaired)" if repaired else ""))
        if ok
        else ", ".join(problems)
    )
    groups = [r.name for r in reports if not r.unwritten]
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ok": ok,
        "result": result,
        "damaged_blocks": damaged,
        "unfinished_blocks": unfinished,
        "unwritten_epochs": unwritten,
        "repaired_blocks": repaired,
        "checked": {
            "groups": groups,
            "blocks": blocks,
            "recomputed": recomputed,
            "what": "chunk and shard-index checksums, block digests, done markers and shard "
            f"padding of every block; up to {recompute} blocks per group recomputed from seeds",
        },
    }


class Unrepairable(StoreError):
    """Damage that the store cannot mend from itself (its sources, process, metadata)."""


def _verify_store(
    url: str, repair: bool, recompute: int, seed: int
) -> tuple[list[GroupReport], str]:
    """The reports, and the store's state digest (:meth:`TupleStore.state_digest`) before them."""
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
        process = store.process(process_from_config).to(device)
        x0 = store.source() if x0 is None else x0
    except StoreError as exc:
        raise Unrepairable(f"{exc}{rebuild}") from None
    plan = Plan.from_json(store.meta["plan"])
    before = store.state_digest()
    unfinished = store.temporary_groups()  # name -> epoch
    epochs = {**{epoch_name(e): e for e in store.epochs()}, **unfinished}
    names = store.tuple_groups() + list(unfinished)
    reports = []
    for name in names:
        epoch = epochs.get(name, 0)  # the full group: 0
        if not store.has_group(name):  # cut short while it was created: no block in it counts
            if not repair:
                every = list(range(plan.n_blocks))
                reports.append(GroupReport(name, plan.n_blocks, incomplete=every,
                                           temporary=name in unfinished))  # fmt: skip
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
        rep.temporary = name in unfinished
        rep.tmp_name = rep.temporary and name != epoch_name(epoch)
        if repair:
            for b in sorted(set(rep.damaged) | set(rep.incomplete)):
                write_block(g, b, simulate(process, x0, plan, epoch, b, device))
                rep.repaired.append(b)
            final = epoch_name(epoch)
            if rep.temporary and final != name and epoch in store.epochs():
                rep.conflict = final  # both written: which one training should read is not ours
            elif rep.temporary:  # every block is now written and checked: what precompute does
                store.rename_group(name, final)
                rep.renamed = final
        reports.append(rep)
    # planned epochs never begun (a begun one is a group above, complete or not)
    begun = {epochs[n] for n in names if n in epochs}
    for e in store.missing_epochs():
        if e not in begun:
            reports.append(GroupReport(epoch_name(e), plan.n_blocks, unwritten=True))
    return reports, before
