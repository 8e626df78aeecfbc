"""``orient train``: streaming local score matching from a tuple store, with exact resume.

No forward simulation happens per step: every batch is read from the store. Checkpoints are
written atomically; ``resume`` restores model, EMA, optimizer, RNG and reader state, so a run
killed at any point and resumed produces, on CPU, the same parameters bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from orient.storage.reader import TupleReader
from orient.storage.store import TupleStore, describe_process

from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    process_payload,
    save_checkpoint,
)
from .models import build_model, count_parameters, model_config
from .score_model import EMA, ScoreModel, local_score_loss

TRAIN_FORMAT = 1


@dataclass
class TrainConfig:
    """Everything ``orient train`` takes; saved in every checkpoint."""

    store: str = "cache.zarr"
    out: str = "runs/default"
    model: str = "tiny"
    model_overrides: dict[str, Any] | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema: float = 0.995
    grad_clip: float = 1.0
    max_steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50
    loader_workers: int = 0
    device: str = "auto"
    recache: bool = False
    keep_epochs: int = 2
    recache_workers: int = 1
    tensorboard: bool = False
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (all cores)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu or cuda") from None


def ddp_backend(device: torch.device) -> str:
    """The process-group backend for training on ``device``: NCCL for CUDA, Gloo for the CPU
    (also on a machine with a GPU: NCCL has no CPU tensors)."""
    return "nccl" if device.type == "cuda" else "gloo"


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device) under torchrun; (0, 1, device) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(ddp_backend(device))
    return dist.get_rank(), world, device


class RunLog:
    """Console progress and a JSONL log (rank 0 only); optional TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.file = open(run_dir / "log.jsonl", "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                print(
                    "note: tensorboard is not installed; logging to log.jsonl only", file=sys.stderr
                )

    def write(self, record: dict[str, Any], console: str | None = None) -> None:
        if not self.enabled:
            return
        assert self.file is not None
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, int | float) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])
        if console:
            print(console, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) a run; returns the path of the final checkpoint."""
    rank, world, device = _distributed(resolve_device(cfg.device))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    for name in ("batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.max_steps is None and cfg.epochs is None:
        raise ValueError("give a budget: --max-steps or --epochs")
    store = TupleStore.open(cfg.store)
    process = store.process().to(device)
    run_dir = Path(cfg.out)
    existing = list_checkpoints(run_dir)
    resume_from = existing[-1] if existing else None

    torch.manual_seed(cfg.seed)
    layout_shape = tuple(store.meta["plan"]["state_shape"])
    mcfg = model_config(cfg.model, layout_shape, process.periodic, **(cfg.model_overrides or {}))
    net = build_model(mcfg)
    model = ScoreModel(net, process).to(device)
    ema = EMA(model, cfg.ema)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    reader = TupleReader(
        cfg.store, batch_size=cfg.batch_size, seed=cfg.seed, rank=rank, world=world
    )
    step, epoch, batches_done = 0, 0, 0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device)
        _check_resumable(ckpt, cfg, store, mcfg, resume_from)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        epoch, batches_done = int(ckpt["reader"]["epoch"]), int(ckpt["reader"]["batches_done"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir, rank == 0, cfg.tensorboard)
    if rank == 0:
        (run_dir / "config.json").write_text(
            json.dumps(
                {"train": asdict(cfg), "model": mcfg, "process": process.to_config()}, indent=2
            )
        )
        what = f"resuming {resume_from} at step {step}" if resume_from else "starting"
        print(
            f"train: {what}; {describe_process(process.to_config())}, model {cfg.model} "
            f"({count_parameters(net):,} parameters) on {device}, world {world} -> {run_dir}",
            file=sys.stderr,
            flush=True,
        )
    recache = None
    if cfg.recache:
        from .recache import Recacher

        recache = Recacher(store, cfg.keep_epochs, cfg.recache_workers, log)
    total_epochs = cfg.epochs if cfg.epochs is not None else math.inf
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    t_last, n_last, wait_last = time.perf_counter(), 0, 0.0
    final = None

    def save(done: bool = False) -> Path:
        payload = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "reader": {"epoch": epoch, "batches_done": batches_done, "seed": cfg.seed},
            "rng": {
                "torch": torch.get_rng_state(),
                **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            },
            **process_payload(process),
            "process_hash": process.config_hash,
            "store": json.dumps(
                {
                    "url": cfg.store,
                    "process_hash": store.meta["process_hash"],
                    "dataset": store.meta["dataset"],
                }
            ),
            "model_config": json.dumps(mcfg),
            "state_shape": json.dumps(list(layout_shape)),
            "train_config": json.dumps(asdict(cfg)),
            "finished": done,
        }
        return save_checkpoint(checkpoint_path(run_dir, step), payload, keep=cfg.keep_checkpoints)

    try:
        while epoch < total_epochs and (cfg.max_steps is None or step < cfg.max_steps):
            if recache is not None:
                recache.prepare(epoch)
            reader.set_epoch(epoch, batches_done)
            loader = DataLoader(
                reader,
                batch_size=None,
                num_workers=cfg.loader_workers,
                pin_memory=device.type == "cuda",
            )
            it = iter(loader)
            wait = 0.0
            while cfg.max_steps is None or step < cfg.max_steps:
                t0 = time.perf_counter()
                raw = next(it, None)
                if raw is None:
                    break
                batch = reader.decode_batch(raw, device)
                dt = time.perf_counter() - t0
                wait += dt
                wait_last += dt
                with autocast:
                    loss = local_score_loss(ddp_model, batch["x_t"], batch["score"], batch["t"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                ema.update(model)
                step += 1
                batches_done += 1
                n_last += batch["t"].shape[0] * world
                if step % cfg.log_every == 0 and rank == 0:
                    now = time.perf_counter()
                    rate = n_last / (now - t_last)
                    frac = wait_last / (now - t_last)
                    rec = {
                        "step": step,
                        "epoch": epoch,
                        "loss": loss.item(),
                        "grad_norm": gnorm.item(),
                        "examples_per_s": rate,
                        "data_wait": frac,
                    }
                    log.write(
                        rec,
                        f"step {step:>7} epoch {epoch} loss {rec['loss']:.4f} "
                        f"{rate:,.0f} ex/s data-wait {frac:.1%}",
                    )
                    t_last, n_last, wait_last = now, 0, 0.0
                if step % cfg.checkpoint_every == 0 and rank == 0:
                    save()
            else:  # the step budget ran out inside this epoch (no break): finish the run
                if rank == 0:
                    final = save(done=True)
                break
            if rank == 0:
                log.write({"epoch_end": epoch, "step": step, "data_wait_s": wait})
            epoch += 1
            batches_done = 0
        if rank == 0 and final is None:
            final = save(done=True)
    finally:
        if recache is not None:
            recache.close()
        log.close()
    if rank == 0:
        print(f"checkpoint: {final}", flush=True)
    if world > 1:
        dist.barrier()
    return final if final is not None else checkpoint_path(run_dir, step)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _check_resumable(
    ckpt: dict[str, Any], cfg: TrainConfig, store: TupleStore, mcfg: dict, path: Path
) -> None:
    """A run folder continues only with the same store process and model."""
    if ckpt["process_hash"] != store.meta["process_hash"]:
        raise CheckpointError(
            f"{path} was trained on a store of another process ({json.loads(ckpt['process'])['process']}); "
            f"use another --out or the matching --store"
        )
    if json.loads(ckpt["model_config"]) != mcfg:
        raise CheckpointError(
            f"{path} has another model configuration than --model {cfg.model}; use another --out"
        )
    old = json.loads(ckpt["train_config"])
    for key in ("batch_size", "seed"):
        if old[key] != getattr(cfg, key):
            raise CheckpointError(
                f"{path} was trained with --{key.replace('_', '-')} {old[key]}; resume with the same value"
            )
