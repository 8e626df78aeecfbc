"""Per-epoch re-caching: while the trainer reads epoch e, the precompute stage writes epoch e+1.

The writing is the precompute stage's own (``orient.pipeline.precompute.epoch_writer``: its
``write_epoch`` on a Dask cluster, not a copy), handed in by the caller and run from a background
thread. At most ``keep_epochs`` epochs (counting the one being written) exist on disk; an epoch
is deleted only once the trainer has moved past it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from orient.storage.store import StoreError, TupleStore, writer_lock

EpochWrite = Callable[[TupleStore, int], Any]
"""``write(store, epoch)``: write ``epoch`` of ``store`` and put it in place (skips one in place)."""

EpochWriter = Callable[[TupleStore, int], contextlib.AbstractContextManager[EpochWrite]]
"""``epoch_writer(store, workers)``: a context manager that sets up ``workers`` writers for the
store (opened for writing) and yields its :data:`EpochWrite`; leaving it stops them, ending an
epoch write in flight (it stays resumable)."""


class Recacher:
    def __init__(
        self,
        store: TupleStore,
        keep_epochs: int,
        workers: int,
        log: Any,
        epoch_writer: EpochWriter,
    ) -> None:
        if store.meta["plan"].get("mode") != "epoch":
            raise StoreError(
                f"--recache needs a per-epoch store; {store.url} is a full cache "
                "(precompute it with --tuples-per-chain or --disk-budget)"
            )
        if keep_epochs < 2:
            raise ValueError(
                "--keep-epochs must be >= 2 (the epoch being read and the one being written)"
            )
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(writer_lock(store.url))
        self.store = TupleStore.open(store.url, mode="r+")
        self.keep = keep_epochs
        self.log = log
        self.write = self._stack.enter_context(epoch_writer(self.store, workers))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recache")
        self.pending: dict[int, Future] = {}

    def _submit(self, epoch: int) -> None:
        if epoch not in self.pending and epoch not in self.store.epochs():
            self.pending[epoch] = self.pool.submit(self.write, self.store, epoch)

    def prepare(self, epoch: int) -> None:
        """Before reading ``epoch``: make sure it is in place, drop old epochs, start the next."""
        t0 = time.perf_counter()
        self._submit(epoch)
        if epoch in self.pending:
            self.pending.pop(epoch).result()
        waited = time.perf_counter() - t0
        self.store = TupleStore.open(self.store.url, mode="r+")
        for old in self.store.epochs():
            if old < epoch - (self.keep - 2):
                self.store.retire_epoch(old)
        on_disk = len(self.store.epochs()) + 1  # + the epoch about to be written
        self.log.write(
            {"recache_epoch": epoch, "recache_wait_s": waited, "epochs_on_disk": on_disk},
            f"recache: epoch {epoch} ready (waited {waited:.1f} s), writing epoch {epoch + 1}",
        )
        self._submit(epoch + 1)

    def close(self) -> None:
        """Stop: closing the writers first ends an in-flight epoch write (it stays resumable)."""
        with contextlib.suppress(Exception):
            self._stack.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.pending:
            print("recache: stopped; the epoch being written stays resumable", file=sys.stderr)
