"""The tuple store on a real S3-compatible object store: moto's server on 127.0.0.1, s3fs as
fsspec's back end, found through the standard AWS_ENDPOINT_URL variable as a user would set it.

Two Dask worker processes write one store there (the bytes of a local store), a run killed with
SIGKILL resumes to the bytes of an uninterrupted one, verify and the trainer read it, re-caching
writes its epochs there, and an epoch whose completion marker is absent is never read."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import SMALL, SMALL_CONFIG, assert_same_bytes, run_cli

ORIENT = [sys.executable, "-c", "from orient.cli import main; main()"]
TINY = ["--model-opt", "base=8", "--batch-size", "4", "--log-every", "1", "--device", "cpu"]
BUCKET = "orient-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3():
    """s3://orient-test on a moto server of this session; the environment (inherited by the Dask
    workers and subprocesses) names its endpoint and dummy credentials."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
                mp.delenv(key, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            mp.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
            s3fs.S3FileSystem(use_listings_cache=False).mkdir(BUCKET)
            yield f"s3://{BUCKET}"
    finally:
        server.stop()


def _objects(url: str) -> list[str]:
    from orient.storage.store import filesystem

    fs, path = filesystem(url)
    return [p[len(path) + 1 :] for p in fs.find(path)]


@pytest.fixture(scope="module")
def cluster(s3):
    """A Dask cluster of two worker processes (started after the environment names the
    endpoint, as a cluster's workers would be), shared by this module's precompute runs."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def s3_full(s3, cluster):
    """The `small_store` configuration written to s3:// by the two worker processes."""
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    url = f"{s3}/full.zarr"
    run_precompute(PrecomputeConfig(out=url, scheduler=cluster, **SMALL_CONFIG), log=lambda _: None)
    return url


def test_two_workers_write_the_bytes_of_a_local_store(s3_full, small_store):
    from orient.storage.store import TupleStore

    keys = _objects(s3_full)
    assert "zarr.json" in keys and any(k.startswith("full/x_t/c/") for k in keys)
    assert_same_bytes(small_store, s3_full)  # every array, byte for byte
    remote, local = TupleStore.open(s3_full), TupleStore.open(str(small_store))
    assert np.array_equal(remote.read_array("full/digest"), local.read_array("full/digest"))
    assert remote.done_blocks("full").all() and remote.meta["plan"] == local.meta["plan"]


def test_verify_info_and_training_read_the_object_store(s3_full, tmp_path, capsys):
    code, out, err = run_cli(["info", s3_full], capsys)
    assert code == 0 and "complete: yes" in out and "verified: never" in out, out + err
    code, out, err = run_cli(["verify", s3_full, "--recompute", "1"], capsys)
    assert code == 0 and f"verified {s3_full}" in out, out + err
    code, out, _ = run_cli(["info", s3_full], capsys)
    assert ", ok (" in out and "STALE" not in out, out
    run = tmp_path / "run"
    code, out, err = run_cli(
        ["train", "--store", s3_full, "--out", str(run), *TINY, "--max-steps", "3"], capsys
    )
    assert code == 0, err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert (run / "ckpt-00000003.pt").is_file()


def test_a_missing_shard_object_is_refused_not_read_as_zeros(s3_full, capsys):
    """Zarr reads a missing object as fill values; the reader counts the shards first."""
    from orient.storage.reader import TupleReader
    from orient.storage.store import StoreError, filesystem

    fs, path = filesystem(s3_full)
    url = s3_full.replace("full.zarr", "holed.zarr")
    fs.copy(path, path.replace("full.zarr", "holed.zarr"), recursive=True)
    shard = next(k for k in _objects(url) if k.startswith("full/score/c/"))
    fs.rm(f"{path.replace('full.zarr', 'holed.zarr')}/{shard}")
    with pytest.raises(StoreError, match="full/score has 2 shard objects, not 3"):
        next(iter(TupleReader(url, batch_size=4)))
    code, out, _ = run_cli(["verify", url, "--recompute", "0"], capsys)
    assert code == 1 and "corrupted" in out, out


def _done_count(url: str) -> int:
    from orient.storage.store import open_root  # no cached listings: another process writes

    try:
        return int(np.asarray(open_root(url)["full"]["done"][...]).sum())
    except Exception:
        return 0


# 36 training chains, one per block: long enough to be killed part-way
KILLED_RUN = [
    "precompute", "--num-examples", "40", "--image-size", "16", "--steps", "10",
    "--schedule", "two_D=1e-4:0.1,K=5e-5:0.05", "--samples", "2", "--max-batch", "1",
]  # fmt: skip


def test_kill_then_resume_on_the_object_store_gives_uninterrupted_bytes(
    s3, cluster, tmp_path, capsys
):
    """The killed run has its own two worker processes (killed with it)."""
    url = f"{s3}/killed.zarr"
    proc = subprocess.Popen(
        [*ORIENT, *KILLED_RUN, "--workers", "2", "--out", url],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while _done_count(url) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    n_done = _done_count(url)
    assert 0 < n_done < 36, n_done  # stopped mid-run
    code, out, _ = run_cli(["info", url], capsys)
    assert code == 0 and "complete: NO" in out
    code, _, err = run_cli([*KILLED_RUN, "--scheduler", cluster, "--out", url, "--resume"], capsys)
    assert code == 0, err
    ref = tmp_path / "ref.zarr"
    code, _, err = run_cli([*KILLED_RUN, "--scheduler", cluster, "--out", str(ref)], capsys)
    assert code == 0, err
    assert_same_bytes(ref, url)


def test_recache_writes_its_epochs_on_the_object_store(s3, cluster, tmp_path, capsys):
    """train --recache: epochs written by Dask workers into s3://, published with their marker,
    the oldest deleted; every block then equals its recomputation from the recorded seeds."""
    from orient.pipeline.verify import verify_store
    from orient.storage.store import COMPLETE, TupleStore

    url = f"{s3}/recache.zarr"
    args = ["precompute", *SMALL, "--tuples-per-chain", "3", "--epochs", "1"]
    code, _, err = run_cli([*args, "--scheduler", cluster, "--out", url], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--store", url, "--out", str(run), *TINY, "--epochs", "3", "--recache"]
        + ["--keep-epochs", "2", "--recache-workers", "1"],
        capsys,
    )
    assert code == 0, err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["recache_epoch"] for r in log if "recache_epoch" in r] == [0, 1, 2]
    assert [r["epoch_end"] for r in log if "epoch_end" in r] == [0, 1, 2]
    store = TupleStore.open(url)
    placed = store.epochs()
    assert 2 in placed and len(placed) <= 2, placed
    assert all(store.group(f"epochs/{e:05d}").attrs[COMPLETE] for e in placed)
    # the epoch after the last may have been in flight when training ended: it stays unfinished
    assert store.unfinished_epochs() in ([], ["epochs/.tmp-00003"])
    assert sorted(store.root["epochs"].group_keys()) == sorted(
        [f"{e:05d}" for e in placed] + [g.split("/")[1] for g in store.unfinished_epochs()]
    )
    # epochs that re-caching deleted count as planned and unwritten: only the groups are checked
    reports = {r.name: r for r in verify_store(url, recompute=99)}
    for e in placed:
        r = reports[f"epochs/{e:05d}"]
        assert r.ok and len(r.recomputed) == r.blocks, r.line()


def test_an_epoch_without_its_completion_marker_is_never_read(s3, cluster, tmp_path, capsys):
    """A publication cut short: the temporary group is whole, the copy under the epoch's name has
    no marker and lacks a shard. Nothing reads the copy; --resume publishes the epoch again."""
    from orient.storage.reader import TupleReader
    from orient.storage.store import COMPLETE, StoreError, TupleStore, filesystem

    url = f"{s3}/marker.zarr"
    args = [
        "precompute",
        *SMALL,
        "--tuples-per-chain",
        "2",
        "--epochs",
        "2",
        "--scheduler",
        cluster,
    ]
    code, _, err = run_cli([*args, "--out", url], capsys)
    assert code == 0, err
    store = TupleStore.open(url, mode="r+")
    assert store.epochs() == [0, 1]
    fs, path = filesystem(url)
    fs.copy(f"{path}/epochs/00001", f"{path}/epochs/.tmp-00001", recursive=True)
    tmp = store.root["epochs/.tmp-00001"]
    tmp.attrs.put({k: v for k, v in tmp.attrs.asdict().items() if k != COMPLETE})
    g = store.root["epochs/00001"]
    g.attrs.put({k: v for k, v in g.attrs.asdict().items() if k != COMPLETE})
    shard = next(k for k in _objects(url) if k.startswith("epochs/00001/x_t/c/"))
    fs.rm(f"{path}/{shard}")

    store = TupleStore.open(url)
    assert store.epochs() == [0] and store.missing_epochs() == [1]
    assert store.tuple_groups() == ["epochs/00000"]
    assert store.unfinished_epochs() == ["epochs/.tmp-00001"]  # the copy is not an epoch
    reader = TupleReader(url, batch_size=4)
    assert reader.group_for_epoch(1) == "epochs/00000"  # cycles over the epochs in place
    for group in ("epochs/00001", "epochs/.tmp-00001"):
        with pytest.raises(StoreError, match="not in place"):
            next(iter(TupleReader(url, batch_size=4, group=group)))
    code, out, _ = run_cli(["info", url], capsys)
    assert "1 of 2 planned written" in out and "complete: NO" in out, out
    code, out, _ = run_cli(["verify", url, "--recompute", "0"], capsys)
    assert code == 1 and "epochs/.tmp-00001: NOT IN PLACE" in out, out

    code, _, err = run_cli([*args, "--out", url, "--resume"], capsys)
    assert code == 0, err
    store = TupleStore.open(url)
    assert store.epochs() == [0, 1] and store.unfinished_epochs() == []
    assert not any("/.tmp-" in k for k in _objects(url))
    code, out, err = run_cli(["verify", url, "--recompute", "99"], capsys)
    assert code == 0, out + err
    ref = tmp_path / "ref.zarr"
    assert run_cli([*args, "--out", str(ref)], capsys)[0] == 0
    assert_same_bytes(ref, url)

    # a real publication watched from another thread: epoch 1 appears only with all its objects
    whole = sorted(k for k in _objects(url) if k.startswith("epochs/00001/"))
    fs.copy(f"{path}/epochs/00001", f"{path}/epochs/.tmp-00001", recursive=True)
    fs.rm(f"{path}/epochs/00001", recursive=True)
    tmp = TupleStore.open(url, mode="r+").root["epochs/.tmp-00001"]
    tmp.attrs.put({k: v for k, v in tmp.attrs.asdict().items() if k != COMPLETE})
    seen = []
    publishing = threading.Thread(
        target=TupleStore.open(url, mode="r+").rename_group,
        args=("epochs/.tmp-00001", "epochs/00001"),
    )
    publishing.start()
    while publishing.is_alive():
        placed = 1 in TupleStore.open(url).epochs()
        objects = sorted(k for k in _objects(url) if k.startswith("epochs/00001/"))
        seen.append(placed)
        assert not placed or objects == whole, "an epoch in place without all its objects"
    publishing.join()
    assert False in seen and TupleStore.open(url).epochs() == [0, 1]
    assert_same_bytes(ref, url)


def test_a_store_url_that_holds_nothing_is_one_line(s3, capsys):
    code, _, err = run_cli(["info", f"{s3}/absent.zarr"], capsys)
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "no store at" in err
    # an endpoint where nothing listens (a fresh process: s3fs keeps its clients per process)
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
    env["AWS_MAX_ATTEMPTS"] = "1"
    r = subprocess.run([*ORIENT, "info", f"{s3}/x.zarr"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        f"orient: error: cannot reach {s3}/x.zarr: Could not connect to the endpoint URL: "
        f'"{env["AWS_ENDPOINT_URL"]}/{BUCKET}/x.zarr"'
    ], r.stderr
