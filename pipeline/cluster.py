"""The Dask cluster of a precompute run: a LocalCluster of worker processes (one per core, or one
per GPU, each GPU worker seeing only its own device), or a client of an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch

from orient.storage.errors import damage

from .machine import available_cores

# Environment of the LocalCluster's worker processes (set before they start; glibc reads it once).
# Each chain step allocates and frees tensors of a few MB; with glibc's defaults (and more so with
# the MALLOC_TRIM_THRESHOLD_=65536 that Dask sets in its workers) that memory goes back to the OS
# and is faulted in again: 34,000-75,000 minor page faults per 64-chain block at 32 x 32, ~100
# with these settings. (The wall-time gain was within this machine's noise; docs/benchmarks.md.)
# Dask's statistical profiler is switched off as well: 100 times a second it walks every thread's
# stack while holding the GIL, which the simulating thread needs after every torch op.
WORKER_ENV = {
    "MALLOC_TRIM_THRESHOLD_": str(2**29),
    "MALLOC_MMAP_THRESHOLD_": str(2**26),
    "MALLOC_TOP_PAD_": str(2**26),
}

SCHEDULER_WORKER_WAIT_S = 60.0  # how long --scheduler may be without workers (e.g. scaling up)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (or their indices)."""
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def local_workers(workers: int | None, device: str) -> int:
    """Worker processes of a LocalCluster: as asked (default one per core), but with CUDA one per
    GPU at most (default one per GPU)."""
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if device.startswith("cuda") and torch.cuda.is_available():
        gpus = len(visible_gpus())
        return gpus if workers is None else min(workers, gpus)
    return available_cores() if workers is None else workers


def gpu_worker_envs(workers: int) -> list[dict[str, str]]:
    """Worker i's environment: CUDA_VISIBLE_DEVICES set to the i-th visible GPU, so that "cuda" in
    that worker is its own device and no two workers share one."""
    gpus = visible_gpus()
    if workers > len(gpus):
        raise ValueError(f"{workers} GPU workers asked for, but {len(gpus)} GPU(s) are visible")
    return [{"CUDA_VISIBLE_DEVICES": gpus[i]} for i in range(workers)]


def _pinned_cluster(envs: list[dict[str, str]], silence_logs: int) -> Any:
    """A local cluster like LocalCluster's (one thread per worker process, the machine's memory
    shared out), whose worker i starts with the extra environment ``envs[i]``. Its workers are
    started before it returns, and a worker that fails to start is an error, not a hang."""
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.worker_memory import parse_memory_limit

    memory = parse_memory_limit("auto", 1, len(envs), logger=logging.getLogger(__name__))
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard": True, "dashboard_address": ":0"},
    }
    workers = {
        i: {
            "cls": Nanny,
            "options": {
                "host": "127.0.0.1",
                "nthreads": 1,
                "memory_limit": memory,
                "env": env,
                "dashboard": False,
                "silence_logs": silence_logs,
            },  # fmt: skip
        }
        for i, env in enumerate(envs)
    }
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=silence_logs)


@contextlib.contextmanager
def dask_client(
    workers: int | None,
    scheduler: str | None,
    device: str,
    envs: list[dict[str, str]] | None = None,
) -> Iterator[Any]:
    """A distributed Client: to ``scheduler`` if given, else a LocalCluster of worker processes.

    With CUDA each local worker is given its own GPU; ``envs`` (one per worker) sets the workers'
    extra environments directly."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="5s")
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"the Dask scheduler at {scheduler} does not answer ({damage(exc)})"
            ) from None
        try:
            try:  # tasks given to a scheduler without workers would wait for ever
                client.wait_for_workers(1, timeout=SCHEDULER_WORKER_WAIT_S)
            except TimeoutError:
                raise ValueError(
                    f"the Dask scheduler at {scheduler} has no workers (waited "
                    f"{SCHEDULER_WORKER_WAIT_S:g} s); start some with `dask worker {scheduler}`"
                ) from None
            yield client
        finally:
            client.close()
        return
    if device.startswith("cuda:"):
        raise ValueError(
            f"--device {device}: local workers take one GPU each; choose the GPUs with "
            "CUDA_VISIBLE_DEVICES (e.g. CUDA_VISIBLE_DEVICES=1) and --device cuda"
        )
    n = local_workers(workers, device)
    if envs is None and device.startswith("cuda") and torch.cuda.is_available():
        envs = gpu_worker_envs(n)
    settings = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()}
    settings["distributed.worker.profile.enabled"] = False  # see WORKER_ENV
    options = dict(
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # a free port: never collide with another cluster's 8787
        silence_logs=logging.CRITICAL,  # task errors are reported once, by us
        worker_class="distributed.Nanny",
    )
    with dask.config.set(settings):
        with _workers_ignore_ctrl_c():
            if envs is None:
                cluster = LocalCluster(n_workers=n, **options)
            else:
                cluster = _pinned_cluster(envs, logging.CRITICAL)
        with cluster, Client(cluster) as client:
            client.run(_warm_up)  # import torch and orient in the workers before a task's clock
            yield client


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Spawn the workers with SIGINT ignored (a disposition that survives exec; Python and asyncio
    then install no handler of their own). Ctrl-C reaches the whole process group: this process
    stops the cluster and exits with one line, instead of every worker printing a traceback.
    Entered and left around the cluster's start; a Ctrl-C during those ~2 s is ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _warm_up() -> None:
    import orient.pipeline.tasks  # noqa: F401
