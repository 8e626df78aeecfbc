"""Streaming reader of training tuples: whole-chunk reads, deterministic shuffles, exact resume.

The order of an epoch is a pure function of (seed, epoch, store layout, batch size, streams):

1. the chunks of the tuple group are permuted with a seed derived from (seed, epoch);
2. consecutive chunks form *windows* of ``window_chunks`` chunks (the in-memory shuffle buffer);
   window j's valid tuples are permuted (seed, epoch, j) and cut into global batches of
   ``batch_size * world`` tuples (a remainder smaller than one batch is dropped);
3. window j belongs to stream j mod P; the streams are interleaved (global batch b is batch
   b // P of stream b mod P while every stream still has batches), and every rank computes the
   same batch count;
4. rank r takes slice r of each global batch; DataLoader worker w of N yields the batches
   b = w (mod N), which the DataLoader's round-robin returns in order. With N dividing P, workers
   read disjoint windows.

Neither the number of workers nor of ranks changes which tuples form global batch b.
``state_dict()`` is {epoch, batches_done}; resuming recomputes the order and skips ahead.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .chunkio import read_chunk
from .codecs import ENCODINGS, decode
from .store import TRAINING_ARRAYS, Layout, StoreError, TupleStore, filesystem

WINDOW_BYTES = 64 * 2**20
READ_THREADS = 4  # chunk reads in flight (file reads and CRC32C checks release the GIL)
PREFETCH_WINDOWS = 3


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([0x0A1E47, *keys])


@dataclass(frozen=True)
class EpochOrder:
    """The batches of one epoch: global batch b = (window, positions) pairs, as pure data."""

    windows: list[np.ndarray]  # chunk indices of each window
    batches: list[tuple[int, np.ndarray]]  # (window index, tuple positions within the window)


def epoch_order(
    valid: np.ndarray, chunk_tuples: int, global_batch: int, seed: int, epoch: int,
    window_chunks: int, streams: int,
) -> EpochOrder:  # fmt: skip
    """Compute the batch order of an epoch (see the module docstring); ``valid`` is t > 0 per tuple."""
    n_chunks = math.ceil(len(valid) / chunk_tuples)
    perm = _rng(seed, epoch).permutation(n_chunks)
    windows = [perm[i : i + window_chunks] for i in range(0, n_chunks, window_chunks)]
    per_stream: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(streams)]
    for j, chunks in enumerate(windows):
        pos = np.concatenate(
            [np.arange(c * chunk_tuples, min((c + 1) * chunk_tuples, len(valid))) for c in chunks]
        )
        local = np.flatnonzero(valid[pos])  # positions within the window's concatenated rows
        local = local[_rng(seed, epoch, j + 1).permutation(len(local))]
        for k in range(len(local) // global_batch):
            per_stream[j % streams].append((j, local[k * global_batch : (k + 1) * global_batch]))
    # interleave the streams: batch b comes from stream b mod P while all streams last
    longest = max((len(s) for s in per_stream), default=0)
    batches = [s[k] for k in range(longest) for s in per_stream if k < len(s)]
    return EpochOrder(windows, batches)


class TupleReader(IterableDataset):
    """Iterable over batches {x_t, score, t} of a store's tuple group (raw encoded numpy views).

    Use with ``DataLoader(reader, batch_size=None, num_workers=N)`` and decode on the training
    device with :meth:`decode_batch`. ``group_for_epoch`` maps an epoch to the group it reads.
    """

    def __init__(
        self,
        url: str,
        batch_size: int,
        seed: int = 0,
        group: str | None = None,
        rank: int = 0,
        world: int = 1,
        streams: int = 8,
        window_chunks: int | None = None,
        arrays: tuple[str, ...] = TRAINING_ARRAYS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.url = url
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.streams = streams
        self.arrays = arrays
        self.epoch = 0
        self.batches_done = 0
        self.fixed_group = group
        store = TupleStore.open(url)
        self.meta = store.meta
        self.process_hash = store.meta["process_hash"]
        self._window_chunks = window_chunks
        self._cache: dict[str, tuple[Layout, np.ndarray]] = {}
        self._order_key: tuple | None = None
        self._order: EpochOrder | None = None

    # -- epochs and groups ------------------------------------------------------------------
    def group_for_epoch(self, epoch: int) -> str:
        """full mode: 'full' every epoch; per-epoch mode: the epoch's own group (cycling)."""
        if self.fixed_group:
            return self.fixed_group
        store = TupleStore.open(self.url)
        if store.meta["mode"] == "full":
            return "full"
        epochs = store.epochs()
        if not epochs:
            raise StoreError(f"{self.url} has no complete epoch yet")
        return (
            f"epochs/{epoch:05d}"
            if epoch in epochs
            else f"epochs/{epochs[epoch % len(epochs)]:05d}"
        )

    def set_epoch(self, epoch: int, batches_done: int = 0) -> None:
        self.epoch, self.batches_done = epoch, batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError("reader state was saved with another seed")
        self.set_epoch(int(state["epoch"]), int(state["batches_done"]))

    def _group_info(self, group: str) -> tuple[Layout, np.ndarray]:
        if group not in self._cache:
            store = TupleStore.open(self.url)
            g = store.group(group)
            if group.startswith("epochs/") and group not in store.tuple_groups():
                raise StoreError(
                    f"{self.url}: epoch group {group} is not in place (being written, or its "
                    "completion marker is absent); finish it with `orient precompute --resume`"
                )
            if not store.is_complete(group):
                raise StoreError(
                    f"{self.url}: tuple group {group} is incomplete; finish it with `orient precompute --resume`"
                )
            layout = Layout.from_json(g.attrs["layout"])
            if not store.renames:
                _check_shard_objects(store, group, self.arrays, layout.n_blocks)
            valid = np.asarray(g["t"][...]) > 0
            self._cache = {group: (layout, valid)}
        return self._cache[group]

    def window_chunks(self, layout: Layout) -> int:
        if self._window_chunks:
            return self._window_chunks
        state_bytes = np.dtype(ENCODINGS[layout.state_encoding]).itemsize
        per_chunk = (
            layout.chunk_tuples * layout.M * math.prod(layout.state_shape) * (state_bytes + 2)
        )
        n_chunks = math.ceil(layout.n_tuples / layout.chunk_tuples)
        by_bytes = max(2, min(64, WINDOW_BYTES // max(1, per_chunk)))
        return max(1, min(by_bytes, math.ceil(n_chunks / self.streams)))  # every stream gets data

    def order(self) -> tuple[str, Layout, EpochOrder]:
        group = self.group_for_epoch(self.epoch)
        layout, valid = self._group_info(group)
        key = (group, self.epoch)
        if self._order_key != key:
            self._order = epoch_order(
                valid, layout.chunk_tuples, self.batch_size * self.world, self.seed, self.epoch,
                self.window_chunks(layout), self.streams,
            )  # fmt: skip
            self._order_key = key
        assert self._order is not None
        return group, layout, self._order

    def __len__(self) -> int:
        return len(self.order()[2].batches)

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        group, layout, order = self.order()
        store = TupleStore.open(self.url)
        g = store.group(group)
        ct = layout.chunk_tuples
        todo = [b for b in range(self.batches_done, len(order.batches)) if b % nw == wid]
        pool = ThreadPoolExecutor(max_workers=READ_THREADS)
        arrays = {k: g[k] for k in self.arrays}  # opened once: each lookup re-reads metadata
        loaded: dict[int, dict[str, list[Future]]] = {}

        def submit_window(j: int) -> dict[str, list[Future]]:
            """Start reading window j: one read per chunk and array, all in flight at once."""
            return {
                k: [pool.submit(read_chunk, a, int(c)) for c in order.windows[j]]
                for k, a in arrays.items()
            }

        # windows in the order this worker needs them, prefetched a few ahead
        needed = list(dict.fromkeys(order.batches[b][0] for b in todo))
        last_use = {order.batches[b][0]: i for i, b in enumerate(todo)}
        ahead = 0
        try:
            for i, b in enumerate(todo):
                while ahead < len(needed) and len(loaded) < PREFETCH_WINDOWS:
                    loaded[needed[ahead]] = submit_window(needed[ahead])
                    ahead += 1
                j, pos = order.batches[b]
                if j not in loaded:
                    loaded[j] = submit_window(j)
                window = {k: [f.result() for f in fs] for k, fs in loaded[j].items()}
                sl = pos[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
                yield {
                    k: torch.from_numpy(_torchable(_gather(window[k], sl, ct))) for k in self.arrays
                } | {"batch": b}
                if last_use[j] == i:
                    del loaded[j]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def decode_batch(
        self, batch: dict[str, Any], device: torch.device | str
    ) -> dict[str, torch.Tensor]:
        """Raw batch -> {x_t (B, M, *S), score (B, M, *S) (scaled by sqrt(w)), t (B,)} on ``device``."""
        enc = _state_encoding(self.meta)
        out = {}
        if "x_t" in batch:
            out["x_t"] = decode(batch["x_t"].to(device, non_blocking=True), enc, device)
        if "x_prev" in batch:
            out["x_prev"] = decode(batch["x_prev"].to(device, non_blocking=True), enc, device)
        if "score" in batch:
            out["score"] = batch["score"].to(device, non_blocking=True).float()
        out["t"] = batch["t"].to(device).long()
        return out


def _check_shard_objects(store: TupleStore, group: str, keys: tuple[str, ...], n: int) -> None:
    """On an object store Zarr reads a missing shard as zeros (fill values), which training would
    take for data; every shard is written (``write_empty_chunks``), so one listing per array and
    group finds any that is missing before the group is read."""
    fs, path = filesystem(store.url)
    for key in (*keys, "t"):
        have = len(fs.find(f"{path}/{group}/{key}/c"))
        if have != n:
            raise StoreError(
                f"{store.url}: {group}/{key} has {have} shard objects, not {n}; "
                f"run `orient verify {store.url} --repair`"
            )


def _gather(chunks: list[np.ndarray], pos: np.ndarray, ct: int) -> np.ndarray:
    """Rows ``pos`` of the concatenation of equal-sized ``chunks``, without concatenating them."""
    ci, off = np.divmod(pos, ct)
    out = np.empty((len(pos), *chunks[0].shape[1:]), chunks[0].dtype)
    for c in np.unique(ci):
        m = ci == c
        out[m] = chunks[c][off[m]]
    return out


def _state_encoding(meta: dict[str, Any]) -> str:
    from .codecs import state_encoding

    return state_encoding(bool(meta["plan"]["periodic"]))


def _torchable(a: np.ndarray) -> np.ndarray:
    """uint16 phases travel as int16 (same bits); the decoder reinterprets them."""
    return a.view(np.int16) if a.dtype == np.uint16 else a
