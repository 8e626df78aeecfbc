"""The precompute stage: data set -> process -> Dask-parallel chain simulation -> tuple store.

``run_precompute(PrecomputeConfig(...))`` creates (or resumes) a store and fills it block by block
on a Dask cluster: a LocalCluster of worker processes by default, or an existing scheduler.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from orient.dynamics import Process, create_process
from orient.storage.codecs import state_precision_problem
from orient.storage.store import (
    StoreError,
    TupleStore,
    epoch_name,
    exists,
    is_local,
    local_path,
    shared_between_processes,
    store_state,
    tmp_epoch_name,
    writer_lock,
)

from .blocks import DEFAULT_BLOCK_MEMORY, Plan, bytes_per_tuple, group_bytes, make_plan
from .cluster import dask_client, local_workers
from .datasets import DataSet, DataShape, describe_dataset, load_dataset, split_indices
from .machine import available_cores
from .progress import Progress
from .sizing import SizePlan, free_space, planned_size, size_option, size_text
from .tasks import DiskFullError, block_spec, flush, run_block


@dataclass
class PrecomputeConfig:
    """Everything ``orient precompute`` takes; recorded in the store."""

    out: str = "cache.zarr"
    dataset: str = "synthetic-fingerprints"
    data_options: dict[str, Any] = field(default_factory=dict)
    process: str = "kuramoto-local"
    steps: int | None = None  # None: the process's default (100; SPDE: its stability limit)
    schedule: str | None = None
    process_options: dict[str, Any] = field(default_factory=dict)
    M: int = 5
    every: int = 1
    tuples_per_chain: int | None = None
    disk_budget: int | None = None
    epochs: int | None = None
    seed: int = 0
    test_fraction: float = 0.1
    workers: int | None = None  # None: one per core, or one per GPU with CUDA
    scheduler: str | None = None
    device: str = "auto"  # cuda when available, else cpu
    max_batch: int | None = None  # chains per block at most; None: DEFAULT_MAX_BATCH[device type]
    block_memory: int | None = None  # encoded bytes per block at most; None: DEFAULT_BLOCK_MEMORY
    # (pipeline/blocks.py, also for stores written before it was recorded)
    io_threads: int | None = None  # writer threads per worker; None: DEFAULT_IO_THREADS
    resume: bool = False
    overwrite: bool = False
    max_size: int | None = None  # refuse a store planned larger than this many bytes

    @property
    def mode(self) -> str:
        per_epoch = (self.tuples_per_chain, self.disk_budget, self.epochs)
        return "epoch" if any(v is not None for v in per_epoch) else "full"


@dataclass
class Summary:
    """One run: ``tuples``, ``chain_steps`` and ``blocks_run`` count this run's work (a resumed run
    skips completed blocks); ``store_tuples`` and ``bytes_on_disk`` describe the whole store."""

    url: str
    tuples: int
    bytes_on_disk: int
    seconds: float
    chain_steps: int
    blocks_run: int
    blocks_seconds: float = 0.0  # simulating and writing blocks (no cluster start, no data prep)
    store_tuples: int = 0

    def lines(self) -> list[str]:
        total = self.store_tuples or self.tuples
        bpt = self.bytes_on_disk / max(1, total)
        written = "" if total == self.tuples else f" (this run: {self.tuples:,})"

        def rates(seconds: float) -> str:
            if seconds <= 0:
                return "n/a"
            return (
                f"{self.tuples / seconds:,.0f} tuples/s, "
                f"{self.chain_steps / seconds:,.0f} chain-steps/s"
            )

        return [
            f"tuples: {total:,}{written}  on disk: {self.bytes_on_disk / 2**20:,.1f} MiB "
            f"({bpt:,.0f} bytes/tuple)",
            f"time: {self.seconds:,.1f} s end to end ({rates(self.seconds)}); "
            f"{self.blocks_seconds:,.1f} s simulating and writing "
            f"{plural(self.blocks_run, 'block')} ({rates(self.blocks_seconds)})",
            f"store: {self.url}",
        ]


# Chains simulated together. On a GPU a step costs about the same for any batch up to ~512 chains
# (it is bound by kernel launches; docs/benchmarks.md, GPU section), so blocks there are larger; the
# block memory limit (pipeline/blocks.py) still bounds them.
DEFAULT_MAX_BATCH = {"cpu": 64, "cuda": 1024}
# Threads per worker that checksum and write a block's shards. With CUDA the host's cores are
# otherwise idle and one thread did not keep up with the GPU (docs/benchmarks.md, GPU section); on
# the CPU every core simulates.
DEFAULT_IO_THREADS = {"cpu": 1, "cuda": 4}


def check_device(device: str) -> str:
    """The device a run simulates on; ``auto`` is cuda when one is available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r} (auto, cpu, cuda)")
    return device


def prepare(cfg: PrecomputeConfig) -> tuple[DataSet, np.ndarray, np.ndarray, Process]:
    """Load the data, split it, and build the process for the training split."""
    if cfg.M < 1:
        raise ValueError(f"--samples (M) must be >= 1, got {cfg.M}")
    ds = load_dataset(cfg.dataset, **cfg.data_options)
    train, test = split_indices(len(ds.data), cfg.test_fraction, cfg.seed)
    example = torch.from_numpy(ds.data[train])
    process = create_process(
        cfg.process, steps=cfg.steps, schedule=cfg.schedule, example=example, **cfg.process_options
    )
    if problem := state_precision_problem(process):
        raise ValueError(f"--schedule {cfg.schedule or '(default)'}: {problem}")
    return ds, train, test, process


def probe_process(cfg: PrecomputeConfig, shape: DataShape, n_train: int) -> Process:
    """The process of ``cfg`` built for stand-in data of the declared shape (two seeded uniform
    examples), before any data are prepared: its name, options and schedule are checked, and its
    T and state encoding size the store. Its warnings (e.g. a fit to two examples) are not shown:
    the process built for the real data gives them."""
    g = torch.Generator().manual_seed(0)
    example = torch.rand((max(1, min(2, n_train)), *shape.shape), generator=g) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        process = create_process(
            cfg.process, steps=cfg.steps, schedule=cfg.schedule, example=example,
            **cfg.process_options,
        )  # fmt: skip
    if problem := state_precision_problem(process):
        raise ValueError(f"--schedule {cfg.schedule or '(default)'}: {problem}")
    return process


def make_run_plan(
    cfg: PrecomputeConfig, n_chains: int, state_shape: tuple[int, ...], process: Process
) -> tuple[Plan, Callable[..., Plan]]:
    """The block plan of ``cfg`` for ``n_chains`` training chains, and the planner it came from
    (keyword overrides give the plan of other settings, e.g. ``tuples_per_chain=1``)."""
    plan_with = functools.partial(
        make_plan,
        mode=cfg.mode,
        n_chains=n_chains,
        T=process.T,
        M=cfg.M,
        seed=cfg.seed,
        state_shape=tuple(state_shape),
        periodic=process.periodic,
        every=cfg.every,
        max_batch=cfg.max_batch,
        block_memory=cfg.block_memory,
    )
    if cfg.mode == "epoch":
        return plan_with(tuples_per_chain=tuples_per_chain(cfg, process.T, plan_with)), plan_with
    return plan_with(), plan_with


def check_size(
    cfg: PrecomputeConfig, size: SizePlan, plan_with: Callable[..., Plan], T: int
) -> None:
    """Refuse (one ValueError line) a store that would not fit the free space of its file system
    or ``--max-size``, naming settings that would fit."""
    limits = []
    if cfg.max_size is not None:
        limits.append((cfg.max_size, f"--max-size {size_text(cfg.max_size)}"))
    space = free_space(cfg.out)
    if space is not None:
        limits.append((space[0], f"{space[1]} has {size_text(space[0])} free"))
    if not limits:
        return
    limit, why = min(limits)
    if size.total <= limit:
        return
    room = limit - size.other
    fits = []
    per_epoch = functools.partial(plan_with, mode="epoch")
    with contextlib.suppress(ValueError):  # the most tuples per chain whose epochs fit
        unfixed = replace(cfg, tuples_per_chain=None, disk_budget=max(0, room))
        k = tuples_per_chain(unfixed, T, per_epoch)
        each = f" for each of {cfg.epochs} epochs" if (cfg.epochs or 1) > 1 else ""
        fits += [f"--tuples-per-chain {k}{each}", f"--disk-budget {size_option(room)}"]
    if cfg.mode == "full" and fits:  # the smallest --every that fits
        for k in range(cfg.every + 1, T + 1):
            if group_bytes(plan_with(every=k)) <= room:
                fits.append(f"--every {k}")
                break
    if fits:
        fix = "; it fits with " + " or ".join(fits)
    else:
        fix = (
            "; even one tuple per chain would not fit: free space, or use fewer examples or "
            "smaller images"
        )
    raise ValueError(
        f"--out {cfg.out}: the store would take {size_text(size.total)} but {why}{fix}"
    )


def tuples_per_chain(cfg: PrecomputeConfig, T: int, plan_with: Callable[..., Plan]) -> int:
    """K from --tuples-per-chain, or the largest K whose epochs fit --disk-budget as written (every
    shard with its padding rows and pages and its checksums: :func:`group_bytes`)."""
    if cfg.tuples_per_chain is not None:
        return cfg.tuples_per_chain
    if cfg.disk_budget is None:
        return max(1, min(T, 10))
    n_epochs = cfg.epochs or 1
    plan = plan_with(tuples_per_chain=1)
    need = n_epochs * group_bytes(plan)
    if need > cfg.disk_budget:
        raise ValueError(
            f"--disk-budget {cfg.disk_budget:,} bytes is too small for one tuple per chain "
            f"({plan.n_chains} chains x {n_epochs} epochs: {need:,} bytes on disk)"
        )
    # the raw bytes of K tuples per chain bound K from above; padding makes some K above fail
    per = bytes_per_tuple(plan.state_shape, plan.M, plan.periodic)
    k = min(T, max(1, cfg.disk_budget // (n_epochs * plan.n_chains * per)))
    while k > 1 and n_epochs * group_bytes(plan_with(tuples_per_chain=k)) > cfg.disk_budget:
        k -= 1
    return k


def _meta(
    cfg: PrecomputeConfig, ds: DataSet, train: np.ndarray, test: np.ndarray, plan: Plan
) -> dict:
    options = asdict(cfg)
    for transient in (
        "resume", "overwrite", "workers", "scheduler", "out", "io_threads", "max_size"
    ):  # fmt: skip
        options.pop(transient)
    return {
        "dataset": ds.identity,
        "split": {
            "seed": cfg.seed,
            "test_fraction": cfg.test_fraction,
            "n_train": len(train),
            "n_test": len(test),
        },
        "seed": cfg.seed,
        "M": cfg.M,
        "mode": plan.mode,
        "epochs_planned": (cfg.epochs or 1) if plan.mode == "epoch" else 0,
        "plan": plan.to_json(),
        "device": cfg.device,
        "options": options,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def resume_device(store: TupleStore, requested: str) -> str:
    """The device to resume ``store`` on: the one it was written on (the random draws depend on
    the device, so a store continued on another would not be reproducible)."""
    recorded = store.meta.get("device", "cpu")
    if requested not in ("auto", recorded):
        raise StoreError(
            f"{store.url} was written on {recorded}, not {requested}; resume it with "
            f"--device {recorded} (random draws differ between devices)"
        )
    if recorded.startswith("cuda") and not torch.cuda.is_available():
        raise StoreError(f"{store.url} was written on {recorded}; resume it on a machine with CUDA")
    return recorded


# Plan fields that make_plan derives from the block limits, not from the command's settings
_LAYOUT = ("chains_per_block", "chunk_tuples", "tuples_per_block")


def check_resumable(
    store: TupleStore, process: Process, ds: DataSet, plan: Plan, same_limits: bool = True
) -> Plan:
    """A store given to --resume must have been written with the same process, data and plan;
    returns the plan to continue: the recorded one. With the limits it was written with
    (``same_limits``), a layout that an earlier version's planner chose differently is kept."""
    m = store.meta
    store.check_process(process.config_hash, what="this command")
    if m["dataset"] != ds.identity:
        raise StoreError(f"{store.url} was written for data set {m['dataset']}, not {ds.identity}")
    new = plan.to_json()
    diff = sorted(k for k in new if m["plan"].get(k) != new[k])
    if same_limits:
        diff = [k for k in diff if k not in _LAYOUT]
    if diff:
        raise StoreError(
            f"{store.url} was written with other cache settings ({', '.join(diff)} differ)"
        )
    return Plan.from_json(m["plan"])


def _run_group(
    client: Any,
    store: TupleStore,
    group: str,
    plan: Plan,
    epoch: int,
    device: str,
    label: str,
    io_threads: int = 1,
) -> tuple[int, int]:
    """Run the blocks of ``group`` that are not done; returns (tuples written, blocks run).

    Tasks return once their block is simulated and queued for writing (pipeline/tasks.py), so the
    group is finished only when every worker has flushed its writes and every done marker is on
    disk; a block whose marker is missing after that (its worker died mid-write) is run again.
    """
    from distributed import as_completed

    tuples = ran = 0
    per_block: dict[int, int] = {}  # a block run twice counts once
    bar = None
    try:
        for _attempt in range(3):
            done = store.done_blocks(group)
            todo = [b for b in range(plan.n_blocks) if not done[b]]
            if not todo:
                break
            specs = [block_spec(store, group, plan, epoch, b, device, io_threads) for b in todo]
            if bar is None:  # counts from the blocks done on disk, as `orient info` does
                bar = Progress(plan.n_blocks, label, unit="blocks", done=int(done.sum()))
            bar.set(int(done.sum()))
            futures = client.map(run_block, specs, pure=False)
            try:
                for fut in as_completed(futures):
                    info = fut.result()
                    tuples += info["tuples"]
                    per_block[info["block"]] = info["tuples"]
                    rate = tuples / max(1e-9, time.perf_counter() - bar.start)
                    bar.update(1, tuples=f"{tuples:,}", rate=f"{rate:,.0f}/s")
            finally:
                client.run(flush)  # also after a failure: nothing is left half-queued
            ran += len(todo)
        else:
            missing = int((~store.done_blocks(group)).sum())
            if missing:
                raise StoreError(
                    f"{missing} blocks of {store.url} were not written after 3 attempts; "
                    "re-run with --resume"
                )
    except DiskFullError:
        client.cancel(futures)
        raise StoreError(
            f"disk full while writing {store.url}; completed blocks are kept: free space and re-run with --resume"
        ) from None
    finally:
        if bar is not None:
            with contextlib.suppress(Exception):  # the last line says what is on disk
                bar.set(int(store.done_blocks(group).sum()))
            bar.close()
    return sum(per_block.values()), ran


def write_epoch(
    client: Any, store: TupleStore, plan: Plan, epoch: int, device: str, io_threads: int = 1
) -> tuple[int, int]:
    """Write epoch ``epoch`` under a temporary name, then rename it into place (atomic locally).

    Skips an epoch that is already in place; resumes the blocks of a half-written one.
    """
    if epoch in store.epochs():
        return 0, 0
    tmp = tmp_epoch_name(epoch)
    if not store.has_group(tmp):
        store.create_tuple_group(tmp, plan.layout())
    n, b = _run_group(client, store, tmp, plan, epoch, device, f"epoch {epoch}", io_threads)
    store.rename_group(tmp, epoch_name(epoch))
    return n, b


@contextlib.contextmanager
def epoch_writer(store: TupleStore, workers: int) -> Iterator[Callable[[TupleStore, int], Any]]:
    """What ``train --recache`` writes epochs with: a local Dask cluster of ``workers`` on the
    store's recorded device, and ``write(store, epoch)``, :func:`write_epoch` of the store's
    recorded plan on it (with the device's default writer threads). Leaving the context closes
    the cluster, which ends an epoch write in flight (it stays resumable)."""
    plan = Plan.from_json(store.meta["plan"])
    device = store.meta.get("device", "cpu")
    io_threads = DEFAULT_IO_THREADS[device.split(":")[0]]
    with dask_client(workers, None, device) as client:

        def write(store: TupleStore, epoch: int) -> tuple[int, int]:
            return write_epoch(client, store, plan, epoch, device, io_threads)

        yield write


def run_precompute(cfg: PrecomputeConfig, log: Any = None) -> Summary:
    """Create or resume the store described by ``cfg`` and fill it; returns a summary."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    requested = cfg.device
    cfg = replace(cfg, device=check_device(requested))  # the store records the resolved device
    if cfg.steps is not None and (cfg.steps < 1 or isinstance(cfg.steps, bool)):
        raise ValueError(f"--steps must be >= 1, got {cfg.steps}")
    if cfg.seed < 0 or isinstance(cfg.seed, bool):
        raise ValueError(f"--seed must be >= 0, got {cfg.seed}")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.max_batch is not None and cfg.max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {cfg.max_batch}")
    if cfg.M < 1:
        raise ValueError(f"--samples (M) must be >= 1, got {cfg.M}")
    if cfg.max_size is not None and cfg.max_size < 1:
        raise ValueError(f"--max-size must be positive, got {cfg.max_size}")
    private = not shared_between_processes(cfg.out)  # also: an unknown or uninstalled protocol
    if private and not cfg.scheduler:  # our LocalCluster's workers are processes
        raise _private_store_error(cfg.out)
    old = None
    if cfg.resume and exists(cfg.out) and store_state(cfg.out) == "interrupted":
        log(f"precompute: the creation of {cfg.out} was interrupted; creating it afresh")
        cfg = replace(cfg, resume=False, overwrite=True)
    if cfg.resume:
        if not exists(cfg.out):
            raise StoreError(f"--resume: there is no store at {cfg.out}")
        old = TupleStore.open(cfg.out)
        # defaults come from the run being resumed: its device, and its limit on chains per block
        cfg = replace(cfg, device=resume_device(old, requested))
        recorded = old.meta.get("options", {})
        recorded = {
            "max_batch": recorded.get("max_batch"),
            "block_memory": recorded.get("block_memory", DEFAULT_BLOCK_MEMORY),
        }
        same_limits = all(getattr(cfg, k) in (None, v) for k, v in recorded.items())
        cfg = replace(cfg, **{k: v for k, v in recorded.items() if getattr(cfg, k) is None})
        if cfg.epochs is None and old.meta.get("epochs_planned"):
            # every epoch the interrupted run planned (which --disk-budget divided among them)
            cfg = replace(cfg, epochs=old.meta["epochs_planned"])
    kind = cfg.device.split(":")[0]
    if cfg.max_batch is None:  # recorded in the store as resolved
        cfg = replace(cfg, max_batch=DEFAULT_MAX_BATCH[kind])
    if cfg.block_memory is None:
        cfg = replace(cfg, block_memory=DEFAULT_BLOCK_MEMORY)
    if cfg.block_memory < 1:
        raise ValueError(f"--block-memory must be positive, got {cfg.block_memory}")
    if cfg.io_threads is not None and cfg.io_threads < 1:
        raise ValueError(f"--io-threads must be >= 1, got {cfg.io_threads}")
    io_threads = cfg.io_threads or DEFAULT_IO_THREADS[kind]
    if old is None and exists(cfg.out):  # before the data are loaded or generated
        refuse_to_replace(cfg.out, cfg.overwrite)
    # every setting is checked, and the store sized, from what the data set declares
    declared = describe_dataset(cfg.dataset, **cfg.data_options)
    n_train = len(split_indices(declared.n, cfg.test_fraction, cfg.seed)[0])
    probe = probe_process(cfg, declared, n_train)
    if old is not None and not probe.buffers():  # not fitted to data: the real one's config
        old.check_process(probe.config_hash, what="this command")
    plan, plan_with = make_run_plan(cfg, n_train, declared.shape, probe)
    size = planned_size(plan, (cfg.epochs or 1) if plan.mode == "epoch" else 1, declared.n, probe)
    log(
        f"precompute: planned store {size_text(size.total)}: {plural(n_train, 'chain')} x "
        f"{plural(plan.kept_per_chain, 'tuple')}"
        + (f" x {plural(cfg.epochs or 1, 'epoch')}" if plan.mode == "epoch" else "")
        + f" ({size_text(size.tuples / max(1, plan.n_chains * plan.kept_per_chain))} a tuple "
        f"as written) + {size_text(size.other)} of sources"
    )
    check_size(cfg, size, plan_with, probe.T)
    workers = local_workers(cfg.workers, cfg.device)
    # a machine with cores to spare generates the data while the workers start (16-core GPU
    # machine: ~8 s each); on a small one both compete for the same cores and it is slower
    overlap = cfg.scheduler is None and available_cores() >= 2 * (workers + 1)
    tuples = blocks = 0
    if cfg.scheduler:  # asked first: a wrong address is said at once, not after the data
        log(f"precompute: connecting to {cfg.scheduler}, then preparing {cfg.dataset}")
    else:
        log(
            f"precompute: preparing {cfg.dataset} {'while' if overlap else 'then'} starting the workers"
        )
    with contextlib.ExitStack() as held:
        if overlap:
            background = held.enter_context(ThreadPoolExecutor(1, "orient-prepare"))
            preparing = background.submit(prepare, cfg)
        elif not cfg.scheduler:
            preparing = _done(prepare(cfg))
        # connect before writing anything: a scheduler that does not answer leaves no store behind
        client = held.enter_context(dask_client(cfg.workers, cfg.scheduler, cfg.device))
        if cfg.scheduler:
            preparing = _done(prepare(cfg))
        ds, train, test, process = preparing.result()
        for note in ds.notes:
            log(f"note: {note}")
        x0 = ds.data[train]
        plan, _ = make_run_plan(cfg, len(train), tuple(x0.shape[1:]), process)
        if old is not None:
            plan = check_resumable(old, process, ds, plan, same_limits)
        if private and any(pid != os.getpid() for pid in client.run(os.getpid).values()):
            raise _private_store_error(cfg.out)
        if cfg.resume:
            held.enter_context(writer_lock(cfg.out))
            store = TupleStore.open(cfg.out, mode="r+")
            log(f"resuming {cfg.out}")
            if removed := store.remove_partial_files():
                log(f"removed {removed} partial files left by the interrupted run")
            if plan.mode == "epoch" and (cfg.epochs or 1) > store.meta["epochs_planned"]:
                store.update_meta(epochs_planned=cfg.epochs)  # a resume that adds epochs
        else:
            meta = _meta(cfg, ds, train, test, plan)
            if is_local(cfg.out):  # locked from before the creation (or --overwrite) to the end
                os.makedirs(local_path(cfg.out), exist_ok=True)
            held.enter_context(writer_lock(cfg.out))
            tables = {} if ds.metadata is None else {"metadata": metadata_table(ds, train)}
            store = TupleStore.create(
                cfg.out, meta, process, x0, train, test, ds.data[test],
                overwrite=cfg.overwrite or exists(cfg.out),  # refuse_to_replace let it through
                tables=tables,
            )  # fmt: skip
        log(
            f"precompute: {cfg.process} on {ds.name} ({plural(len(train), 'chain')}, T={process.T}, "
            f"M={cfg.M}, {plan.mode} mode, {plan.kept_per_chain} tuples/chain, "
            f"{plural(plan.n_blocks, 'block')} of "
            f"{plural(plan.chains_per_block, 'chain')}) -> {cfg.out}"
        )
        if plan.mode == "full":
            if not store.has_group("full"):
                store.create_tuple_group("full", plan.layout())
            t1 = time.perf_counter()
            tuples, blocks = _run_group(
                client, store, "full", plan, 0, cfg.device, "full", io_threads
            )
            blocks_seconds = time.perf_counter() - t1
        else:
            blocks_seconds = 0.0
            for e in range(cfg.epochs or 1):
                t1 = time.perf_counter()
                n, b = write_epoch(client, store, plan, e, cfg.device, io_threads)
                tuples, blocks = tuples + n, blocks + b
                blocks_seconds += time.perf_counter() - t1
    seconds = time.perf_counter() - t0
    # every chain emits kept_per_chain tuples and runs T steps (the last block may hold fewer chains)
    chain_steps = tuples // plan.kept_per_chain * plan.T
    return Summary(
        cfg.out,
        tuples,
        store.nbytes_on_disk(),
        seconds,
        chain_steps,
        blocks,
        blocks_seconds,
        store_tuples=sum(store.tuple_count(g) for g in store.tuple_groups()),
    )


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _private_store_error(url: str) -> StoreError:
    return StoreError(
        f"--out {url}: an in-memory file system lives inside one process and the precompute "
        "workers are separate processes; give a path or a shared URL (e.g. s3://)"
    )


def refuse_to_replace(url: str, overwrite: bool) -> None:
    """An existing path is replaced only with --overwrite, and only if it is an orient store."""
    state = store_state(url)  # a store of another format version is a store, and replaceable
    if state in ("store", "interrupted") and overwrite:
        return
    if state == "interrupted":
        raise StoreError(
            f"the creation of {url} was interrupted before any tuple was written; pass --resume "
            "or --overwrite to create it afresh"
        )
    if state == "store":
        raise StoreError(
            f"{url} is an existing store; pass --resume to continue it or --overwrite to replace it"
        )
    if is_local(url) and os.path.isdir(local_path(url)) and not os.listdir(local_path(url)):
        return  # an empty folder holds nothing to lose
    raise StoreError(
        f"{url} exists and is not an orient store; choose another --out (it is never replaced)"
    )


def metadata_table(ds: DataSet, train: np.ndarray) -> Any:
    """The data set's per-example table (e.g. SOCOFing's parsed file names), with a train column."""
    import pyarrow as pa

    return ds.metadata.append_column("train", pa.array(np.isin(np.arange(len(ds.data)), train)))


__all__ = ["PrecomputeConfig", "Summary", "run_precompute"]
