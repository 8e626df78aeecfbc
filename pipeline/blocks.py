"""Block plan and block simulation: the pure functions behind the precompute stage.

A *block* is a fixed set of chains (source examples) simulated together on one device. Its tuples
occupy one chunk-aligned region of every array, so no two writer tasks ever touch the same chunk.
Everything random in a block comes from streams keyed by (seed, epoch, block): the bytes of a block
do not depend on the number of workers or the order in which blocks finish.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from orient.dynamics import Process, Transitions
from orient.storage.chunkio import page_aligned, whole_page_rows
from orient.storage.codecs import ENCODINGS, carrier_view, encode_tensor, state_encoding
from orient.storage.store import Layout

DEFAULT_BLOCK_MEMORY = 512 * 2**20  # encoded tuples a task may hold before writing
CHUNK_BYTES = 4 * 2**20  # target bytes of one x_t chunk
MAX_CHUNK_TUPLES = 256


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of keys (stable across platforms and Python versions)."""
    h = hashlib.sha256("/".join(str(k) for k in keys).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class Plan:
    """Which chains form which block, and which steps each chain emits as tuples."""

    mode: str  # "full" or "epoch"
    n_chains: int
    T: int
    M: int
    seed: int
    state_shape: tuple[int, ...]
    periodic: bool
    every: int = 1  # full mode: keep steps 1, 1 + every, ...
    tuples_per_chain: int = 0  # epoch mode: K distinct random steps per chain
    chains_per_block: int = 1
    chunk_tuples: int = 1
    tuples_per_block: int = 1  # padded to a multiple of chunk_tuples

    @property
    def kept_per_chain(self) -> int:
        return (
            len(range(1, self.T + 1, self.every)) if self.mode == "full" else self.tuples_per_chain
        )

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n_chains / self.chains_per_block)

    def layout(self) -> Layout:
        return Layout(
            n_tuples=self.n_blocks * self.tuples_per_block,
            n_blocks=self.n_blocks,
            tuples_per_block=self.tuples_per_block,
            chunk_tuples=self.chunk_tuples,
            state_shape=self.state_shape,
            M=self.M,
            state_encoding=state_encoding(self.periodic),
        )

    def block_chains(self, b: int) -> np.ndarray:
        """Source rows of block b: a seeded permutation cut into consecutive pieces."""
        perm = np.random.default_rng(derive_seed(self.seed, "chains")).permutation(self.n_chains)
        return np.sort(perm[b * self.chains_per_block : (b + 1) * self.chains_per_block])

    def to_json(self) -> dict:
        return {**asdict(self), "state_shape": list(self.state_shape)}

    @classmethod
    def from_json(cls, d: dict) -> Plan:
        return cls(**{**d, "state_shape": tuple(d["state_shape"])})


def bytes_per_tuple(state_shape: tuple[int, ...], M: int, periodic: bool) -> int:
    """Encoded bytes of one tuple: x_prev, M x_t, M scores, t and src."""
    n = math.prod(state_shape)
    s = np.dtype(ENCODINGS[state_encoding(periodic)]).itemsize
    return n * s * (1 + M) + n * 2 * M + 8


def group_bytes(plan: Plan) -> int:
    """Bytes on disk of one tuple group of ``plan`` (full, or one epoch): every block's shard of
    every array, padding rows and pages and CRCs included, and its digest and done marker
    (~20 bytes a block; the group's few KB of zarr.json come on top)."""
    return plan.layout().file_bytes()


def make_plan(
    *,
    mode: str,
    n_chains: int,
    T: int,
    M: int,
    seed: int,
    state_shape: tuple[int, ...],
    periodic: bool,
    every: int = 1,
    tuples_per_chain: int = 0,
    max_batch: int = 64,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
) -> Plan:
    """Choose chains per block (at most ``max_batch`` and ``block_memory``) and the chunk size.

    Chains are spread evenly over the fewest blocks, and each block's tuples over the fewest
    chunks, so padding is less than one chain per block plus a few rows per chunk (chunks are
    rounded up to whole pages of x_prev rows: two rows for 32 x 32 phases).
    """
    if mode not in ("full", "epoch"):
        raise ValueError(f"unknown cache mode {mode!r} (full, epoch)")
    if M < 1:
        raise ValueError(f"the number of draws M must be >= 1, got {M}")
    if mode == "full" and not 1 <= every <= T:
        raise ValueError(f"--every must be in 1..T={T}, got {every}")
    if mode == "epoch" and not 1 <= tuples_per_chain <= T:
        raise ValueError(f"tuples per chain must be in 1..T={T}, got {tuples_per_chain}")
    probe = Plan(mode, n_chains, T, M, seed, tuple(state_shape), periodic, every, tuples_per_chain)
    kept = probe.kept_per_chain
    bpt = bytes_per_tuple(tuple(state_shape), M, periodic)
    most = max(1, min(max_batch, n_chains, block_memory // max(1, kept * bpt)))
    cpb = math.ceil(n_chains / math.ceil(n_chains / most))  # chains spread evenly over blocks
    raw = cpb * kept
    x_t_bytes = bpt * M // (1 + 2 * M) + 1
    target = max(1, min(MAX_CHUNK_TUPLES, CHUNK_BYTES // x_t_bytes, raw))
    # the fewest chunks, then the fewest padding rows, in whole pages of x_prev when that takes
    # only a few rows (chunks of whole pages are written with direct I/O straight from the block)
    row = math.prod(state_shape) * np.dtype(ENCODINGS[state_encoding(periodic)]).itemsize
    q = whole_page_rows(row)
    q = q if q <= max(1, target // 8) else 1
    chunk = -(-math.ceil(raw / math.ceil(raw / target)) // q) * q
    tpb = math.ceil(raw / chunk) * chunk
    return Plan(
        mode,
        n_chains,
        T,
        M,
        seed,
        tuple(state_shape),
        periodic,
        every,
        tuples_per_chain,
        chains_per_block=cpb,
        chunk_tuples=chunk,
        tuples_per_block=tpb,
    )


def emit_matrix(plan: Plan, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, T) booleans: does chain i emit a tuple at step t (column t - 1)?"""
    E = np.zeros((n, plan.T), dtype=bool)
    if plan.mode == "full":
        E[:, 0 :: plan.every] = True
    else:
        for i in range(n):
            E[i, rng.choice(plan.T, plan.tuples_per_chain, replace=False)] = True
    return E


def block_buffers(plan: Plan) -> dict[str, np.ndarray]:
    """Arrays for one block's encoded tuples (see :func:`simulate_block`).

    Page-aligned, so the whole pages of every chunk that starts on a page boundary are written
    with direct I/O straight from them (storage/chunkio.py), without a copy.
    """
    S, M, n = plan.state_shape, plan.M, plan.tuples_per_block
    sdt = ENCODINGS[state_encoding(plan.periodic)]
    return {
        "x_prev": page_aligned((n, *S), sdt),
        "x_t": page_aligned((n, M, *S), sdt),
        "score": page_aligned((n, M, *S), np.float16),
        "t": page_aligned((n,), np.int32),
        "src": page_aligned((n,), np.int32),
    }


def block_start(
    process: Process, x0: np.ndarray, plan: Plan, epoch: int, block: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.random.Generator, torch.Generator, Tensor]:
    """Block ``block``'s chains, emission matrix E, order stream (next draw: the stored order),
    noise generator and initial states: every random stream keyed by (seed, epoch, block)."""
    chains = plan.block_chains(block)
    rng = np.random.default_rng(derive_seed(plan.seed, epoch, block, "order"))
    g = torch.Generator(device=device).manual_seed(derive_seed(plan.seed, epoch, block, "noise"))
    x = process.data_to_state(torch.from_numpy(np.ascontiguousarray(x0[chains])).to(device))
    return chains, emit_matrix(plan, len(chains), rng), rng, g, x


@torch.no_grad()
def run_chains(
    process: Process, x: Tensor, E: np.ndarray, M: int, g: torch.Generator
) -> Iterator[tuple[int, np.ndarray, Tensor, Transitions]]:
    """Run chains x through T = E.shape[1] steps. At each step where some chains emit (E[:, t - 1]),
    yield (t, their rows, their x_{t-1}, their M transitions) before the chains move on; the first
    draw becomes their x_t, the other chains take one plain step. The emitting rows come from the
    host-side E, so no step waits for the device."""
    n = x.shape[0]
    for t in range(1, E.shape[1] + 1):
        emitting = np.flatnonzero(E[:, t - 1])
        m = len(emitting)
        x_next = x if m in (0, n) else torch.empty_like(x)
        if m:
            idx = torch.from_numpy(emitting).to(x.device, non_blocking=True)
            xe = x if m == n else x.index_select(0, idx)
            tr = process.sample_transitions(xe, t, M, g)
            yield t, emitting, xe, tr
            if m == n:
                x_next = tr.x[0]
            else:
                x_next.index_copy_(0, idx, tr.x[0])
        if m < n:
            if m == 0:
                x_next = process.step(x, t, g)
            else:
                rest = torch.from_numpy(np.flatnonzero(~E[:, t - 1])).to(x.device)
                x_next.index_copy_(0, rest, process.step(x.index_select(0, rest), t, g))
        x = x_next


def simulate_block(
    process: Process,
    x0: np.ndarray,
    plan: Plan,
    epoch: int,
    block: int,
    device: str = "cpu",
    out: dict[str, np.ndarray] | None = None,
    staged: bool | None = None,
) -> dict[str, np.ndarray]:
    """Simulate block ``block``'s chains and return its encoded tuples in their stored order.

    Arrays: x_prev (n, *S), x_t (n, M, *S), score (n, M, *S) (scaled by sqrt(w(t))), t (n,) and
    src (n,) (source rows), padded with all-zero rows (t = 0) to ``plan.tuples_per_block``.
    ``out`` (from :func:`block_buffers`) is filled in place instead of allocating: a worker that
    reuses its buffers skips faulting in fresh pages for every block.

    Each step's encoded tuples go straight to their stored rows: on the CPU into ``out`` itself (by
    numpy assignment, ~8x faster there than ``index_copy_``), on a GPU into a block-sized buffer
    there (``staged``; None: on any device but the CPU), copied to ``out`` once at the end.
    """
    chains, E, rng, g, x = block_start(process, x0, plan, epoch, block, device)
    enc = {"x_prev": state_encoding(plan.periodic), "x_t": state_encoding(plan.periodic)}
    enc["score"] = "scaled-f16"
    # the stored order is drawn up front, so each step's tuples go straight to their final rows
    rows = np.empty(int(E.sum()), dtype=np.int64)
    rows[rng.permutation(len(rows))] = np.arange(len(rows))
    out = out if out is not None else block_buffers(plan)
    for a in out.values():
        a[len(rows) :] = 0  # padding rows; every other row is written below
    host = {k: carrier_view(out[k], e) for k, e in enc.items()}
    if staged is None:
        staged = torch.device(device).type != "cpu"
    elif not staged and torch.device(device).type != "cpu":
        raise ValueError("simulate_block: rows are placed in place only on the CPU")
    # sqrt(w(t)) of every step, read from the device once (a read per step would wait for it)
    scales = [w**0.5 for w in process.loss_weight(torch.arange(1, plan.T + 1)).tolist()]
    dev = {k: torch.empty_like(v, device=device) for k, v in host.items()} if staged else {}

    def put(key: str, r: np.ndarray, r_dev: Tensor | None, value: Tensor) -> None:
        """Encode ``value`` and place its rows at stored rows ``r`` (``r_dev`` on the device)."""
        e = encode_tensor(value, enc[key])
        if r_dev is not None:
            dev[key].index_copy_(0, r_dev, e)
        else:
            host[key].numpy()[r] = e.contiguous().numpy()

    k = 0
    for t, emitting, xe, tr in run_chains(process, x, E, plan.M, g):
        r = rows[k : k + len(emitting)]
        k += len(emitting)
        r_dev = torch.from_numpy(r).to(device, non_blocking=True) if staged else None
        put("x_prev", r, r_dev, xe)
        put("x_t", r, r_dev, tr.x.transpose(0, 1))
        put("score", r, r_dev, tr.score.transpose(0, 1).mul_(scales[t - 1]))
        out["t"][r] = t
        out["src"][r] = chains[emitting]
    if staged:
        for key, v in host.items():
            v[: len(rows)].copy_(dev[key][: len(rows)])
    return out
