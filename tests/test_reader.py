"""The streaming reader: deterministic order, sharding invariance, exact resume (pure functions first)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from orient.storage.reader import TupleReader, epoch_order


@settings(max_examples=80, deadline=None)
@given(
    n_chunks=st.integers(1, 40),
    chunk=st.integers(1, 16),
    batch=st.integers(1, 20),
    window=st.integers(1, 8),
    streams=st.integers(1, 8),
    seed=st.integers(0, 5),
    epoch=st.integers(0, 3),
    pad=st.floats(0, 0.5),
)
def test_epoch_order_uses_each_valid_tuple_at_most_once(
    n_chunks, chunk, batch, window, streams, seed, epoch, pad
):
    n = n_chunks * chunk
    valid = np.random.default_rng(seed).random(n) >= pad
    order = epoch_order(valid, chunk, batch, seed, epoch, window, streams)
    rows = []
    for j, pos in order.batches:
        assert len(pos) == batch
        win_rows = np.concatenate([np.arange(c * chunk, (c + 1) * chunk) for c in order.windows[j]])
        rows.extend(win_rows[pos].tolist())
    assert len(rows) == len(set(rows))  # no tuple twice
    assert all(valid[r] for r in rows)  # never a padding row
    dropped = valid.sum() - len(rows)
    assert dropped < len(order.windows) * batch  # at most one partial batch per window
    again = epoch_order(valid, chunk, batch, seed, epoch, window, streams)
    assert [(j, p.tolist()) for j, p in again.batches] == [
        (j, p.tolist()) for j, p in order.batches
    ]


def test_epochs_reshuffle():
    valid = np.ones(640, bool)
    a = epoch_order(valid, 64, 32, 0, 0, 2, 4)
    b = epoch_order(valid, 64, 32, 0, 1, 2, 4)
    assert [w.tolist() for w in a.windows] != [w.tolist() for w in b.windows]


def _batches(reader, workers=0):
    dl = DataLoader(reader, batch_size=None, num_workers=workers)
    return [
        {k: v.clone() for k, v in b.items() if k != "batch"} | {"batch": b["batch"]} for b in dl
    ]


def test_order_is_independent_of_loader_workers(small_store):
    one = _batches(TupleReader(str(small_store), batch_size=4, seed=3, streams=4))
    two = _batches(TupleReader(str(small_store), batch_size=4, seed=3, streams=4), workers=2)
    assert len(one) == len(two) > 5
    for a, b in zip(one, two, strict=True):
        assert a["batch"] == b["batch"]
        for k in ("x_t", "score", "t"):
            assert torch.equal(a[k], b[k])


def test_ranks_split_each_global_batch_disjointly(small_store):
    whole = _batches(TupleReader(str(small_store), batch_size=4, seed=5, streams=4))
    parts = [
        _batches(TupleReader(str(small_store), batch_size=2, seed=5, rank=r, world=2, streams=4))
        for r in (0, 1)
    ]
    assert len(parts[0]) == len(parts[1]) == len(whole)  # same batch count on every rank
    for b, (p0, p1) in enumerate(zip(*parts, strict=True)):
        for k in ("x_t", "score", "t"):
            assert torch.equal(torch.cat([p0[k], p1[k]]), whole[b][k])


def test_mid_epoch_resume_is_exact(small_store):
    full = _batches(TupleReader(str(small_store), batch_size=4, seed=1, streams=2))
    r = TupleReader(str(small_store), batch_size=4, seed=1, streams=2)
    r.set_epoch(0, 0)
    state = {"epoch": 0, "batches_done": 3, "seed": 1}
    fresh = TupleReader(str(small_store), batch_size=4, seed=1, streams=2)
    fresh.load_state_dict(state)
    tail = _batches(fresh)
    assert [b["batch"] for b in tail] == [b["batch"] for b in full[3:]]
    for a, b in zip(tail, full[3:], strict=True):
        assert torch.equal(a["x_t"], b["x_t"])


def test_decoded_batches_match_the_store(small_store):
    import zarr

    from orient.storage.codecs import decode

    r = TupleReader(str(small_store), batch_size=4, seed=0)
    raw = next(iter(r))
    dec = r.decode_batch(raw, "cpu")
    g = zarr.open_group(str(small_store), mode="r")["full"]
    t_all = np.asarray(g["t"][...])
    assert dec["x_t"].shape[:2] == (4, 2) and dec["t"].shape == (4,)
    assert set(dec["t"].tolist()) <= set(t_all[t_all > 0].tolist())
    assert float(dec["x_t"].abs().max()) <= np.pi + 1e-6
    ref = decode(np.asarray(g["x_t"][0:1]), "phase-u16")
    assert ref.shape[1:] == dec["x_t"].shape[1:]
