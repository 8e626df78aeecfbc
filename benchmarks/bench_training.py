"""Training-data benchmark (issue: streaming trainer), measured as ratios within one run.

1. batch production at 96x96, M = 5, batch 64, T = 100/300/1000: the reference implementation's
   method (simulate every chain of the batch to the batch's largest t, masking finished ones, then
   the M draws) vs the cached reader; target >= 100x at T = 300;
2. one end-to-end training step with the default model (tiny U-Net, batch 32): naive vs cached,
   and the reader's data-wait fraction in `orient train` at default settings (target < 5 %);
3. reader throughput vs reading the same bytes as raw contiguous files (the physical limit);
   target >= 50 %. Measured with the store's files evicted from the page cache (read from disk,
   as a store larger than memory is; the headline) and warm (memory-bound), each the best of
   three passes. Stores are written with direct I/O, so they start out of the page cache.

Run: python benchmarks/bench_training.py [--chains 64] [--skip-1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import save, timed

from orient.dynamics import Process, create_process
from orient.pipeline.fingerprints import generate_fingerprints
from orient.pipeline.precompute import PrecomputeConfig, run_precompute
from orient.storage.reader import TupleReader
from orient.trainer.models import build_model, model_config
from orient.trainer.score_model import ScoreModel, local_score_loss
from orient.trainer.train import TrainConfig, train


def reference_batch(
    process: Process, x0: torch.Tensor, t: torch.Tensor, M: int, g: torch.Generator
):
    """The reference implementation's batch: simulate to max(t) with masking, then M draws."""
    x = process.data_to_state(x0)
    for s in range(1, int(t.max())):
        active = s < t  # chain i needs x_{t_i - 1}: keep stepping while s < t_i
        if not bool(active.any()):  # host sync every step, as in the reference
            break
        x = torch.where(active.view(-1, 1, 1, 1), process.step(x, s, g), x)
    tr = process.sample_transitions(x, t, M, g)
    return tr.x.transpose(0, 1), tr.score.transpose(0, 1), t


def raw_read_bytes(group_dir: Path, keys=("x_t", "score", "t")) -> tuple[int, float]:
    """Read every shard file of ``keys`` whole, as plain bytes (no decoding): (bytes, seconds)."""
    files = [p for k in keys for p in sorted((group_dir / k / "c").rglob("*")) if p.is_file()]
    buf = bytearray(max(p.stat().st_size for p in files))  # one buffer, faulted in before timing
    buf[:] = bytes(len(buf))
    view = memoryview(buf)
    t0 = time.perf_counter()
    n = 0
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while k := f.readinto(view[: len(buf)]):
                n += k
                if k < len(buf):
                    break
    return n, time.perf_counter() - t0


def evict(root: Path) -> None:
    """Drop a store's files from the page cache (clean pages; no privileges needed)."""
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def best_rate(fn, root: Path, cold: bool, repeats: int = 3) -> float:
    """Best bytes/s of ``repeats`` calls of fn() -> (bytes, seconds), cold or warm cache."""
    rates = []
    if not cold:
        fn()
    for _ in range(repeats):
        if cold:
            evict(root)
        n, dt = fn()
        rates.append(n / dt)
    return max(rates)


def contiguous_zarr_read(url: str, group: str, keys=("x_t", "score", "t")) -> tuple[int, float]:
    """Read the same arrays through Zarr chunk by chunk in storage order: (bytes, seconds)."""
    import zarr

    g = zarr.open_group(url, mode="r")[group]
    t0 = time.perf_counter()
    n = 0
    for k in keys:
        a = g[k]
        for lo in range(0, a.shape[0], a.chunks[0]):
            n += np.asarray(a[lo : lo + a.chunks[0]]).nbytes
    return n, time.perf_counter() - t0


def reader_pass(url: str, batch: int, device: str | None = None) -> tuple[int, int, float]:
    """One epoch through the reader: (batches, bytes of the raw arrays, seconds); decoded on
    ``device`` if given (on a GPU decoding happens there, not in the reader)."""
    r = TupleReader(url, batch_size=batch, seed=0)
    t0 = time.perf_counter()
    n = nbytes = 0
    for raw in r:
        nbytes += sum(v.numel() * v.element_size() for k, v in raw.items() if k != "batch")
        if device:
            r.decode_batch(raw, device)
        n += 1
    return n, nbytes, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=256)
    ap.add_argument(
        "--skip-1000", action="store_true", help="skip the slow T = 1000 reference batch"
    )
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="orient-bench-"))
    rec: dict = {"batch": 64, "M": 5, "size": 96}
    try:
        x0 = torch.from_numpy(generate_fingerprints(64, size=96, seed=1))
        # 1. reference batch production for T = 100, 300, 1000
        rec["reference_s_per_batch"] = {}
        for T in (100, 300) + (() if args.skip_1000 else (1000,)):
            p = create_process("kuramoto-local", steps=T, example=x0)
            g = torch.Generator().manual_seed(0)
            t = torch.randint(1, T + 1, (64,), generator=g)
            dt, _ = timed(reference_batch, p, x0, t, 5, g)
            rec["reference_s_per_batch"][T] = dt
            print(f"reference method, T={T}: {dt:.2f} s per batch of 64")
        # the cached store: per-epoch mode, 16 random steps per chain, T = 300, 96x96
        url = str(tmp / "c96.zarr")
        run_precompute(PrecomputeConfig(out=url, data_options={"n": args.chains + 8, "size": 96, "seed": 1},
                                        steps=300, M=5, tuples_per_chain=16, epochs=1, test_fraction=0.1,
                                        workers=2), log=print)  # fmt: skip
        root, gdir = tmp / "c96.zarr", tmp / "c96.zarr" / "epochs" / "00000"
        n, nbytes, dt = reader_pass(url, 64)
        n2, nbytes2, dt2 = reader_pass(url, 64)  # warm page cache
        rec["cached_s_per_batch"] = dt2 / n2
        for T, ref in rec["reference_s_per_batch"].items():
            rec.setdefault("speedup_cached_vs_reference", {})[T] = ref / rec["cached_s_per_batch"]
        ways = {
            "reader": lambda: reader_pass(url, 64)[1:],
            "contiguous_zarr": lambda: contiguous_zarr_read(url, "epochs/00000"),
            "raw": lambda: raw_read_bytes(gdir),
        }
        for cache in ("cold", "warm"):
            for name, fn in ways.items():
                rec[f"{name}_{cache}_bytes_per_s"] = best_rate(fn, root, cache == "cold")
            rec[f"reader_vs_raw_{cache}"] = (
                rec[f"reader_{cache}_bytes_per_s"] / rec[f"raw_{cache}_bytes_per_s"]
            )
        _, nbytes3, dt3 = reader_pass(url, 64, "cpu")
        rec["reader_decoded_cpu_bytes_per_s"] = nbytes3 / dt3
        rec["store_bytes_read_per_epoch"] = nbytes
        # 2. one training step with the default model (tiny, batch 32): naive vs cached
        p300 = create_process("kuramoto-local", steps=300, example=x0)
        net = build_model(model_config("tiny", (1, 96, 96), True))
        model = ScoreModel(net, p300)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(x_t, target, t):
            loss = local_score_loss(model, x_t, target, t)
            opt.zero_grad()
            loss.backward()
            opt.step()

        g = torch.Generator().manual_seed(1)
        t = torch.randint(1, 301, (32,), generator=g)
        t_naive, (xb, sb, tb) = timed(reference_batch, p300, x0[:32], t, 5, g)
        sqrt_w = p300.loss_weight(tb).sqrt().view(-1, 1, 1, 1, 1).float()
        t_model, _ = timed(step, xb, sb * sqrt_w, tb)
        t_model, _ = timed(step, xb, sb * sqrt_w, tb)
        reader = TupleReader(url, batch_size=32, seed=0)
        it = iter(reader)
        t_read, raw = timed(next, it)
        t_read, raw = timed(next, it)
        dec = reader.decode_batch(raw, "cpu")
        rec["train_step"] = {
            "naive_s": t_naive + t_model, "cached_s": t_read + t_model, "model_s": t_model,
            "speedup": (t_naive + t_model) / (t_read + t_model),
        }  # fmt: skip
        step(dec["x_t"], dec["score"], dec["t"])
        # data-wait fraction of `orient train` at default settings (batch 32, no loader workers)
        run = tmp / "run"
        train(
            TrainConfig(
                store=url,
                out=str(run),
                max_steps=40,
                log_every=10,
                checkpoint_every=1000,
                device="cpu",
            )
        )
        waits = [
            json.loads(ln)["data_wait"]
            for ln in (run / "log.jsonl").read_text().splitlines()
            if '"data_wait"' in ln
        ]
        rec["train_data_wait_fraction"] = float(np.mean(waits[1:])) if len(waits) > 1 else waits[0]
        for k, v in rec.items():
            print(f"{k}: {v}")
        save("training", rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
