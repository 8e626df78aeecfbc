"""``orient train``: streaming local score matching from a tuple store, with exact resume.

No forward simulation happens per step: every batch is read from the store. Checkpoints are
written atomically; ``resume`` restores model, EMA, optimizer, RNG and reader state, so a run
killed at any point and resumed produces, on CPU, the same parameters bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from orient.dynamics import process_from_config
from orient.storage.reader import TupleReader
from orient.storage.store import StoreError, TupleStore, describe_process

from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    process_payload,
    save_checkpoint,
)
from .models import PRESETS, build_model, count_parameters, model_config
from .recache import EpochWriter
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


def validate_config(cfg: TrainConfig) -> None:
    """Every numeric option in range, a budget given, the device available: a one-line ValueError
    before any store is read or file written."""
    for name in ("batch_size", "checkpoint_every", "keep_checkpoints", "log_every", "keep_epochs"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "epochs"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_steps is None and cfg.epochs is None:
        raise ValueError("give a budget: --max-steps or --epochs")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"--lr must be a positive number, got {cfg.lr}")
    if not 0 <= cfg.ema < 1:
        raise ValueError(f"--ema must be in [0, 1), got {cfg.ema}")
    if not (cfg.grad_clip > 0):
        raise ValueError(f"--grad-clip must be > 0, got {cfg.grad_clip}")
    if cfg.weight_decay < 0:
        raise ValueError(f"weight decay must be >= 0, got {cfg.weight_decay}")
    for name in ("loader_workers", "threads", "recache_workers"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.recache and cfg.keep_epochs < 2:
        raise ValueError(
            "--keep-epochs must be >= 2 with --recache (the epoch being read and the one being written)"
        )
    if cfg.model != "auto" and cfg.model not in PRESETS:
        raise ValueError(f"unknown --model {cfg.model!r}; choose from {', '.join(PRESETS)}")
    resolve_device(cfg.device)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a finished step, whose checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        if checkpoint is None:
            what = "before the first step; no checkpoint was written"
        else:
            what = f"at step {step}; wrote {checkpoint}"
        super().__init__(f"{name} {what}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class _StopRequest:
    """SIGINT and SIGTERM set a flag that the training loop reads after every step, so the run
    stops at a step boundary with a checkpoint; a second signal stops at once (KeyboardInterrupt,
    or SIGTERM's default action). Handlers exist only in the main thread, and only inside ``with``."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool) -> None:
        self.signum = 0
        self.announce = announce
        self.pid = os.getpid()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self.pid or self.signum:
            # a DataLoader worker (forked with these handlers) behaves as without them; in
            # the trainer, a second signal stops at once, without a checkpoint of this step
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        if self.announce:  # os.write: print() is not safe inside a signal handler
            name = signal.Signals(signum).name
            os.write(
                2,
                f"\ntrain: {name}: stopping after this step to write a checkpoint "
                f"(send it again to stop at once)\n".encode(),
            )


def trim_log(path: Path, offset: int | None, step: int) -> int:
    """Drop what a run logged after the checkpoint it resumes from, so that the resumed run does
    not log the same steps twice. ``offset`` is the log's size when the checkpoint was written;
    checkpoints without one keep the lines up to ``step``. Returns the number of bytes dropped."""
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if offset is not None:
        if offset >= size:
            return 0
        os.truncate(path, offset)
        return size - offset
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if not isinstance(rec, dict) or rec.get("step", 0) <= step:
            kept.append(line + "\n")
    text = "".join(kept)
    path.write_text(text)
    return size - len(text.encode())


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

    def __init__(
        self, run_dir: Path, enabled: bool, tensorboard: bool, resumed_at: int | None = None
    ) -> None:
        self.enabled = enabled
        self.file = open(run_dir / "log.jsonl", "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # a resumed run rewrites the steps after its checkpoint: drop the old events
                purge = None if resumed_at is None else resumed_at + 1
                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)
            except ImportError:
                print(
                    "note: tensorboard is not installed; logging to log.jsonl only", file=sys.stderr
                )

    def offset(self) -> int | None:
        """The log's size in bytes: what a checkpoint records so a resume can drop later lines."""
        return self.file.tell() if self.file else None

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

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


def train(cfg: TrainConfig, epoch_writer: EpochWriter | None = None) -> Path:
    """Train (or resume) a run; returns the path of the final checkpoint.

    ``epoch_writer`` (needed by ``cfg.recache``): what writes the next epochs
    (:data:`orient.trainer.recache.EpochWriter`; ``orient train`` passes the precompute stage's
    ``orient.pipeline.precompute.epoch_writer``).

    SIGINT or SIGTERM stops the run after the step in progress, writes a checkpoint of it and
    raises TrainingInterrupted (the run continues exactly with ``--resume``).
    """
    validate_config(cfg)
    if cfg.recache and epoch_writer is None:
        raise ValueError("recache: train() needs an epoch_writer (what writes the next epochs)")
    with _StopRequest(announce=int(os.environ.get("RANK", "0")) == 0) as stop:
        return _train(cfg, stop, epoch_writer)


def _train(cfg: TrainConfig, stop: _StopRequest, epoch_writer: EpochWriter | None) -> Path:
    rank, world, device = _distributed(resolve_device(cfg.device))

    def say(message: str) -> None:
        if rank == 0:
            print(message, file=sys.stderr, flush=True)

    say(f"train: reading store {cfg.store}")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    store = TupleStore.open(cfg.store)
    process = store.process(process_from_config).to(device)
    run_dir = Path(cfg.out)
    existing = list_checkpoints(run_dir)
    resume_from = existing[-1] if existing else None

    torch.manual_seed(cfg.seed)
    layout_shape = tuple(store.meta["plan"]["state_shape"])
    data = store.meta.get("dataset") or {}
    say(
        f"train: {describe_process(process.to_config())} on {data.get('name', 'data')} "
        f"{'x'.join(map(str, layout_shape))}; building model {cfg.model} on {device}"
    )
    mcfg = model_config(cfg.model, layout_shape, process.periodic, **(cfg.model_overrides or {}))
    net = build_model(mcfg)
    model = ScoreModel(net, process).to(device)
    ema = EMA(model, cfg.ema)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    reader = TupleReader(
        cfg.store, batch_size=cfg.batch_size, seed=cfg.seed, rank=rank, world=world
    )
    step, epoch, batches_done = 0, 0, 0
    log_offset = None
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
        log_offset = ckpt.get("log_offset")
        del ckpt
    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.recache and store.meta["plan"].get("mode") != "epoch":
        raise StoreError(
            f"--recache needs a per-epoch store; {cfg.store} is a full cache "
            "(precompute it with --tuples-per-chain or --disk-budget)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None and rank == 0:
        # what the interrupted run logged after its checkpoint is logged again from here
        trim_log(run_dir / "log.jsonl", log_offset, step)
    log = RunLog(run_dir, rank == 0, cfg.tensorboard, step if resume_from is not None else None)
    if rank == 0:
        (run_dir / "config.json").write_text(
            json.dumps(
                {"train": asdict(cfg), "model": mcfg, "process": process.to_config()}, indent=2
            )
        )
        what = f"resuming {resume_from} at step {step}" if resume_from else "starting"
        budget = f"{cfg.max_steps} steps" if cfg.max_steps is not None else f"{cfg.epochs} epochs"
        if cfg.max_steps is not None and cfg.epochs is not None:
            budget = f"{cfg.max_steps} steps or {cfg.epochs} epochs"
        say(
            f"train: {what}; model {cfg.model} ({count_parameters(net):,} parameters) on {device}, "
            f"world {world}, {budget} of {cfg.batch_size} tuples -> {run_dir}"
        )
        if resume_from is not None:
            log.write({"resumed_from": str(resume_from), "step": step})
    recache = None
    if cfg.recache:
        from .recache import Recacher

        assert epoch_writer is not None  # train() checks it
        recache = Recacher(store, cfg.keep_epochs, cfg.recache_workers, log, epoch_writer)
    total_epochs = cfg.epochs if cfg.epochs is not None else math.inf
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    )
    t_last, n_last, wait_last = time.perf_counter(), 0, 0.0
    final = None
    last_saved = step if resume_from is not None else None
    last_logged = step

    def save(done: bool = False) -> Path:
        nonlocal last_saved
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
            "log_offset": log.offset(),
        }
        last_saved = step
        return save_checkpoint(checkpoint_path(run_dir, step), payload, keep=cfg.keep_checkpoints)

    def log_step(loss: torch.Tensor, gnorm: torch.Tensor) -> None:
        nonlocal t_last, n_last, wait_last, last_logged
        now = time.perf_counter()
        rate = n_last / max(now - t_last, 1e-9)
        frac = min(wait_last / max(now - t_last, 1e-9), 1.0)
        rec = {
            "step": step,
            "epoch": epoch,
            "loss": loss.item(),
            "grad_norm": gnorm.item(),
            "examples_per_s": rate,
            "data_wait": frac,
        }
        of = f"/{cfg.max_steps}" if cfg.max_steps is not None else ""
        log.write(
            rec,
            f"step {step:>7}{of} epoch {epoch} loss {rec['loss']:.4f} "
            f"{rate:,.0f} ex/s data-wait {frac:.1%}",
        )
        t_last, n_last, wait_last, last_logged = now, 0, 0.0, step

    def stop_requested() -> bool:
        """Whether any rank received SIGINT or SIGTERM (all ranks stop at the same step)."""
        if world == 1:
            return bool(stop.signum)
        flag = torch.tensor([stop.signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not stop.signum:
            stop.signum = int(flag.item())
        return bool(stop.signum)

    stopping = False
    try:
        while epoch < total_epochs and (cfg.max_steps is None or step < cfg.max_steps):
            if stop_requested():
                stopping = True
                break
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
            last = None
            while cfg.max_steps is None or step < cfg.max_steps:
                t0 = time.perf_counter()
                try:
                    raw = next(it, None)
                except Exception:
                    if stop.signum:  # a loader worker ended by the same Ctrl-C: stop here
                        stopping = True
                        break
                    raise
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
                last = (loss.detach(), gnorm.detach())
                budget_left = cfg.max_steps is None or step < cfg.max_steps
                stopping = budget_left and stop_requested()
                if rank == 0 and (
                    step == 1 or step % cfg.log_every == 0 or not budget_left or stopping
                ):
                    log_step(*last)
                if step % cfg.checkpoint_every == 0 and rank == 0:
                    save()
                if stopping:
                    break
            else:  # the step budget ran out inside this epoch (no break): finish the run
                if rank == 0:
                    final = save(done=True)
                break
            if stopping:
                break
            if rank == 0 and last is not None and last_logged != step and epoch + 1 >= total_epochs:
                log_step(*last)  # the last step of the last epoch
            if rank == 0:
                log.write({"epoch_end": epoch, "step": step, "data_wait_s": wait})
            epoch += 1
            batches_done = 0
        if stopping:
            saved = None
            if rank == 0 and step > 0:
                saved = save() if last_saved != step else checkpoint_path(run_dir, step)
            elif step > 0:
                saved = checkpoint_path(run_dir, step)
        elif rank == 0 and final is None:
            final = save(done=True)
    finally:
        if recache is not None:
            recache.close()
        log.close()
    if world > 1:
        dist.barrier()
    if stopping:
        raise TrainingInterrupted(stop.signum, step, saved)
    if rank == 0:
        print(f"checkpoint: {final}", flush=True)
    return final if final is not None else checkpoint_path(run_dir, step)


def _check_resumable(
    ckpt: dict[str, Any], cfg: TrainConfig, store: TupleStore, mcfg: dict, path: Path
) -> None:
    """A run folder continues only with the same store process, model, batch size and seed; the
    message names the fields that differ."""
    if ckpt["process_hash"] != store.meta["process_hash"]:
        try:
            store.check_process(
                ckpt["process_hash"], what="the checkpoint", config=json.loads(ckpt["process"])
            )
        except StoreError as exc:
            raise CheckpointError(
                f"cannot resume {path}: {exc}; use another --out or the matching --store"
            ) from None
    old_model = json.loads(ckpt["model_config"])
    if old_model != mcfg:
        diffs = [
            f"{k}: checkpoint {old_model.get(k)}, now {mcfg.get(k)}"
            for k in sorted(set(old_model) | set(mcfg))
            if old_model.get(k) != mcfg.get(k)
        ]
        raise CheckpointError(
            f"cannot resume {path} with --model {cfg.model}: another model configuration "
            f"({'; '.join(diffs[:4])}); use the same --model and --model-opt, or another --out"
        )
    old = json.loads(ckpt["train_config"])
    for key in ("batch_size", "seed"):
        if old[key] != getattr(cfg, key):
            raise CheckpointError(
                f"{path} was trained with --{key.replace('_', '-')} {old[key]}, not "
                f"{getattr(cfg, key)}; resume with the same value"
            )
