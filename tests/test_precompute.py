"""Precompute stage end to end: real Dask, real Zarr on disk, the real CLI entry point."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import SMALL, SMALL_CONFIG, assert_same_bytes, run_cli

ORIENT = [sys.executable, "-c", "from orient.cli import main; main()"]


def test_store_contents_and_info(small_store, capsys):
    code, out, _ = run_cli(["info", str(small_store), "--json"], capsys)
    assert code == 0
    import json

    d = json.loads(out)
    assert d["complete"] and d["mode"] == "full" and d["M"] == 2
    assert d["process_config"]["process"] == "kuramoto" and d["process_config"]["T"] == 10
    assert d["dataset"]["name"] == "synthetic-fingerprints"
    n_train = d["split"]["n_train"]
    assert d["tuples"] == n_train * 10  # every step of every chain
    g = zarr.open_group(str(small_store), mode="r")["full"]
    t = np.asarray(g["t"][...])
    src = np.asarray(g["src"][...])
    # every (chain, step) pair exactly once; padding rows have t = 0
    pairs = {(int(s), int(tt)) for s, tt in zip(src[t > 0], t[t > 0], strict=True)}
    assert pairs == {(s, tt) for s in range(n_train) for tt in range(1, 11)}
    assert g["x_t"].dtype == np.uint16 and g["score"].dtype == np.float16
    # tuples are stored in a shuffled order, not step by step
    first = t[t > 0][:20]
    assert len(set(first.tolist())) > 3


def test_store_carries_its_full_configuration(small_store):
    """Process (config, buffers and hash), data identity, split, seed, M, plan, layout, format and
    software versions: everything needed to rebuild, check or reproduce the store."""
    from importlib.metadata import version

    from orient.dynamics import process_from_config
    from orient.pipeline.blocks import Plan
    from orient.storage.store import FORMAT_VERSION, Layout, TupleStore

    store = TupleStore.open(str(small_store))
    m = store.meta
    assert m["format_version"] == FORMAT_VERSION and m["software"]["orient"] == version("orient")
    assert set(m["software"]) >= {"torch", "zarr", "numpy"}
    process = store.process(
        process_from_config
    )  # rebuilt from the config and buffers, checked against the hash
    assert process.config_hash == m["process_hash"] == process_from_config(m["process"]).config_hash
    assert m["dataset"] == {
        "name": "synthetic-fingerprints",
        "params": {"n": 12, "size": 16, "seed": 0},
    }
    assert m["split"] == {"seed": 0, "test_fraction": 0.1, "n_train": 11, "n_test": 1}
    assert m["seed"] == 0 and m["M"] == 2 and m["mode"] == "full"
    plan = Plan.from_json(m["plan"])
    assert (plan.seed, plan.M, plan.T, plan.mode) == (0, 2, 10, "full")
    assert store.layout("full") == plan.layout()
    assert Layout.from_json(store.group("full").attrs["layout"]).n_blocks == plan.n_blocks
    assert (
        m["options"]["schedule"] == "two_D=1e-4:0.1,K=5e-5:0.05" and m["options"]["max_batch"] == 4
    )


def test_one_and_two_workers_give_identical_bytes(small_store, tmp_path, capsys):
    """... and so do writer threads: 3 per worker here, 1 in ``small_store``."""
    out = tmp_path / "one.zarr"
    args = ["precompute", *SMALL, "--workers", "1", "--io-threads", "3", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert_same_bytes(small_store, out)


def test_corrupted_chunk_is_detected_and_repaired(small_store, tmp_path, capsys):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    chunk = next(p for p in sorted((copy / "full" / "x_t" / "c").rglob("*")) if p.is_file())
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    code, out, err = run_cli(["verify", str(copy)], capsys)
    assert code == 1 and "corrupted" in out and "--repair" in err
    code, out, _ = run_cli(["verify", str(copy), "--repair"], capsys)
    assert code == 0 and "repaired" in out
    code, _, _ = run_cli(["verify", str(copy)], capsys)
    assert code == 0
    assert_same_bytes(small_store, copy)


def test_damaged_page_padding_is_detected_and_repaired(small_store, tmp_path, capsys):
    """A flipped byte in the zero padding after a shard's chunk leaves every CRC intact;
    verify still finds the file changed, and --repair restores the file byte for byte."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    shard = next(p for p in sorted((copy / "full" / "x_t" / "c").rglob("*")) if p.is_file())
    per_shard = (
        zarr.open_array(str(copy / "full" / "x_t")).shards[0]
        // zarr.open_array(str(copy / "full" / "x_t")).chunks[0]
    )
    raw = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(raw[-(per_shard * 16 + 4) : -4]), "<u8").reshape(-1, 2)
    gap = int(index[0, 0] + index[0, 1])  # the first byte after chunk 0 and its CRC
    after = int(index[1, 0]) if per_shard > 1 else len(raw) - (per_shard * 16 + 4)
    assert gap < after and raw[gap] == 0  # padding up to the next chunk (or the index)
    raw[gap] ^= 0x5A
    shard.write_bytes(bytes(raw))
    code, out, _ = run_cli(["verify", str(copy)], capsys)
    assert code == 1 and "corrupted" in out, out
    code, out, _ = run_cli(["verify", str(copy), "--repair"], capsys)
    assert code == 0 and "repaired" in out
    assert shard.read_bytes() == (small_store / shard.relative_to(copy)).read_bytes()


def _flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_damaged_marker_is_its_blocks_damage_and_is_repaired(small_store, tmp_path, capsys):
    """A done marker or a digest with a bad CRC marks its own block for rewriting (it used to stop
    verify with zarr's unnamed checksum error)."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    _flip_a_byte(copy / "full" / "done" / "c" / "1")
    _flip_a_byte(copy / "full" / "digest" / "c" / "0" / "0")
    code, out, err = run_cli(["verify", str(copy)], capsys)
    assert code == 1 and "corrupted [0, 1]" in out and "--repair" in err, out + err
    code, out, err = run_cli(["verify", str(copy), "--repair"], capsys)
    assert code == 0 and "repaired 2" in out, out + err
    assert_same_bytes(small_store, copy)


@pytest.mark.parametrize(
    "damaged", ["source/x0/c/0/0/0/0", "split/x0/c/0/0/0/0", "full/x_t/zarr.json"]
)
def test_damage_that_cannot_be_repaired_is_named_in_one_line(
    small_store, tmp_path, capsys, damaged
):
    """Sources, held-out data and array metadata are what blocks are recomputed from: verify (and
    --repair) names the damaged array, says the store must be rebuilt, and changes nothing."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    if damaged.endswith(".json"):  # cut short: not JSON any more
        text = (copy / damaged).read_text()
        (copy / damaged).write_text(text[: len(text) // 2])
    else:
        _flip_a_byte(copy / damaged)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    for args in ([], ["--repair"]):
        code, out, err = run_cli(["verify", str(copy), *args], capsys)
        line = err.strip().splitlines()[-1]  # after verify's progress lines, if any
        assert code == 1 and "Traceback" not in err and line.startswith("orient: error:"), err
        assert damaged.rsplit("/", 1)[0].removesuffix("/c/0/0/0") in line and "rebuild" in line
    assert before == {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}


def test_planned_epochs_not_yet_written_make_a_store_incomplete(tmp_path, capsys):
    """A run killed between epochs leaves whole epochs and no partial one: info and verify count
    the epochs it planned, and the resume writes the rest."""
    out = tmp_path / "ep.zarr"
    args = ["precompute", *SMALL, "--tuples-per-chain", "2", "--out", str(out)]
    code, _, err = run_cli([*args, "--epochs", "1"], capsys)
    assert code == 0, err
    from orient.storage.store import TupleStore

    TupleStore.open(str(out), mode="r+").update_meta(epochs_planned=3)  # as if killed after one
    code, info, _ = run_cli(["info", str(out)], capsys)
    assert code == 0 and "1 of 3 planned written" in info and "complete: NO" in info
    code, rep, err = run_cli(["verify", str(out), "--recompute", "0"], capsys)
    assert code == 1 and rep.count("NOT WRITTEN") == 2 and "--resume" in err, rep + err
    code, _, err = run_cli([*args, "--epochs", "3", "--resume"], capsys)
    assert code == 0, err
    code, info, _ = run_cli(["info", str(out)], capsys)
    assert "3 of 3 planned written" in info and "complete: yes" in info


def test_deleted_chunk_is_detected_by_block_digest(small_store, tmp_path, capsys):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    chunk = next(p for p in sorted((copy / "full" / "score" / "c").rglob("*")) if p.is_file())
    chunk.unlink()
    code, out, _ = run_cli(["verify", str(copy), "--recompute", "0"], capsys)
    assert code == 1 and "corrupted" in out


def test_swapped_shards_are_detected_by_block_digest(small_store, tmp_path, capsys):
    """Two valid shards swapped between blocks pass every chunk and index checksum; the block
    digests, chained from the chunk CRCs in order, catch them."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    key = "0/0/0/0"  # x_t has 4 dimensions after the row axis
    a, b = copy / "full" / "x_t" / "c" / "0" / key, copy / "full" / "x_t" / "c" / "1" / key
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    code, out, _ = run_cli(["verify", str(copy), "--recompute", "0"], capsys)
    assert code == 1 and "corrupted [0, 1]" in out, out


def _done_count(path: Path, group: str = "full") -> int:
    try:
        return int(np.asarray(zarr.open_group(str(path), mode="r")[group]["done"][...]).sum())
    except Exception:
        return 0


# a run long enough (72 training chains, one per block) to be killed part-way, even on a loaded
# machine where the signal reaches the workers a second or two after it is sent
KILLED_CHAINS = 72
KILLED_RUN = [
    "precompute", "--num-examples", "80", "--image-size", "16", "--steps", "30",
    "--schedule", "two_D=1e-4:0.1,K=5e-5:0.05", "--samples", "2",
]  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_kill_then_resume_gives_uninterrupted_bytes(sig, tmp_path, capsys):
    """SIGKILL at any moment, or Ctrl-C (SIGINT to the whole process group, as a terminal sends
    it), mid-run; --resume (without repeating --max-batch) then gives the bytes of an
    uninterrupted run. Ctrl-C exits with 130 and one line, without a traceback from any worker."""
    args = [*KILLED_RUN, "--max-batch", "1"]
    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [*ORIENT, *args, "--workers", "2", "--out", str(killed)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if we ignore it
    )
    deadline = time.time() + 120
    while _done_count(killed) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err, err
        last = err.replace("\r", "\n").strip().splitlines()[-1]
        assert last.startswith("orient: interrupted: ") and "--resume" in last, err
    n_done = _done_count(killed)
    assert 0 < n_done < KILLED_CHAINS, n_done  # stopped mid-run
    code, out, _ = run_cli(["info", str(killed)], capsys)
    assert code == 0 and "complete: NO" in out
    leftover = killed / "full" / "x_t" / "c" / "0" / "0" / "0" / "0" / ".0.deadbeef.partial"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a shard")  # as a write killed between open and rename leaves
    # --max-batch left out: a resume takes the limit (and the device) of the run it continues
    resume = [a for a in args if a not in ("--max-batch", "1")]
    assert len(resume) == len(args) - 2
    code, _, err = run_cli([*resume, "--workers", "1", "--out", str(killed), "--resume"], capsys)
    assert code == 0, err
    assert not list(killed.rglob("*.partial"))  # resume removes what killed writers left
    ref = tmp_path / "ref.zarr"
    code, _, err = run_cli([*args, "--workers", "2", "--out", str(ref)], capsys)
    assert code == 0, err
    assert_same_bytes(ref, killed)


def _tmp_epoch_done(path: Path) -> int:
    """Done blocks of the store's temporary epoch after the first (0 if there is none)."""
    try:
        keys = zarr.open_group(str(path), mode="r")["epochs"].group_keys()
        tmp = [k for k in keys if k.startswith(".tmp-") and k != ".tmp-00000"]
    except Exception:
        return 0
    return _done_count(path, f"epochs/{tmp[0]}") if tmp else 0


def test_kill_in_per_epoch_mode_then_resume_without_epochs(tmp_path, capsys):
    """SIGKILL while an epoch after the first is being written: the epochs before it are in place
    and complete, it is visible only under its temporary name (epochs appear atomically), and a
    --resume that does not repeat --epochs writes every planned epoch, to the uninterrupted
    bytes. Six epochs give five chances to catch one half-written."""
    args = [*KILLED_RUN, "--tuples-per-chain", "3"]
    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [*ORIENT, *args, "--epochs", "6", "--max-batch", "1", "--workers", "2"]
        + ["--out", str(killed)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while _tmp_epoch_done(killed) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    keys = sorted(zarr.open_group(str(killed), mode="r")["epochs"].group_keys())
    placed = [k for k in keys if k.isdigit()]
    assert [k for k in keys if not k.isdigit()] == [f".tmp-{len(placed):05d}"], keys
    assert 1 <= len(placed) < 6 and placed == [f"{e:05d}" for e in range(len(placed))]
    assert all(_done_count(killed, f"epochs/{k}") == KILLED_CHAINS for k in placed)
    assert 0 < _done_count(killed, f"epochs/.tmp-{len(placed):05d}") <= KILLED_CHAINS
    code, out, _ = run_cli(["info", str(killed)], capsys)
    assert code == 0 and f"{len(placed)} of 6 planned written" in out
    code, _, err = run_cli([*args, "--workers", "1", "--out", str(killed), "--resume"], capsys)
    assert code == 0, err
    ref = tmp_path / "ref.zarr"
    code, _, err = run_cli([*args, "--epochs", "6", "--max-batch", "1", "--out", str(ref)], capsys)
    assert code == 0, err
    assert_same_bytes(ref, killed)


def test_a_tuple_group_cut_short_is_created_again(small_store, tmp_path, capsys):
    """A kill inside create_tuple_group leaves the group without its layout (written last):
    --resume creates it again instead of failing on its missing arrays."""
    copy, other = tmp_path / "store.zarr", tmp_path / "other.zarr"
    shutil.copytree(small_store, copy)
    zarr.open_group(str(copy), mode="r+").create_group("full", overwrite=True)
    shutil.copytree(copy, other)
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(copy), "--resume"], capsys)
    assert code == 0, err
    assert_same_bytes(small_store, copy)
    # verify reports it as unfinished (not as a store to rebuild), and --repair finishes it
    code, stdout, err = run_cli(["verify", str(other)], capsys)
    assert code == 1 and "full: INCOMPLETE" in stdout and "--overwrite" not in err, stdout + err
    assert run_cli(["verify", str(other), "--repair"], capsys)[0] == 0
    assert_same_bytes(small_store, other)


def test_verify_does_not_pass_an_epoch_left_under_its_temporary_name(tmp_path, capsys):
    """Killed after an epoch's last marker but before its rename: every block is sound, yet
    training cannot see the epoch, so verify fails; --repair renames it into place."""
    ref, out = tmp_path / "ref.zarr", tmp_path / "ep.zarr"
    args = ["precompute", *SMALL, "--tuples-per-chain", "3", "--epochs", "2"]
    assert run_cli([*args, "--out", str(ref)], capsys)[0] == 0
    shutil.copytree(ref, out)
    (out / "epochs" / "00001").rename(out / "epochs" / ".tmp-00001")
    code, stdout, err = run_cli(["verify", str(out)], capsys)
    assert code == 1 and "epochs/.tmp-00001: NOT IN PLACE" in stdout and "verified" not in stdout
    code, stdout, err = run_cli(["verify", str(out), "--repair"], capsys)
    assert code == 0 and "renamed into place as epochs/00001" in stdout, stdout + err
    assert run_cli(["verify", str(out)], capsys)[0] == 0
    assert_same_bytes(ref, out)
    # both names written: verify says so and renames nothing
    shutil.copytree(out / "epochs" / "00001", out / "epochs" / ".tmp-00001")
    code, stdout, _ = run_cli(["verify", str(out), "--repair"], capsys)
    assert code == 1 and "epochs/00001 exists as well" in stdout, stdout
    assert (out / "epochs" / ".tmp-00001").is_dir() and (out / "epochs" / "00001").is_dir()


def test_verify_recomputes_blocks_and_finds_one_written_from_other_draws(
    small_store, tmp_path, capsys
):
    """A block whose chunks, CRCs and digest are all consistent, but which was simulated from other
    draws than the recorded seeds give (here: another epoch's), is caught only by recomputation."""
    from orient.dynamics import process_from_config
    from orient.pipeline.blocks import Plan, simulate_block
    from orient.storage.store import TupleStore, write_block

    copy = tmp_path / "store.zarr"
    shutil.copytree(small_store, copy)
    store = TupleStore.open(str(copy), mode="r+")
    plan = Plan.from_json(store.meta["plan"])
    other = simulate_block(store.process(process_from_config), store.source(), plan, 7, 1)
    write_block(store.group("full"), 1, other)
    code, stdout, _ = run_cli(["verify", str(copy), "--recompute", "0"], capsys)
    assert code == 0  # every checksum and digest holds
    code, stdout, _ = run_cli(["verify", str(copy), "--recompute", str(plan.n_blocks)], capsys)
    assert code == 1 and "differ from recomputation [1]" in stdout, stdout
    code, stdout, _ = run_cli(["verify", str(copy), "--repair", "--recompute", "99"], capsys)
    assert code == 0, stdout
    assert_same_bytes(small_store, copy)


def test_per_epoch_mode_writes_complete_epochs(tmp_path, capsys):
    out = tmp_path / "ep.zarr"
    code, stdout, err = run_cli(
        ["precompute", *SMALL, "--tuples-per-chain", "3", "--epochs", "2", "--out", str(out)],
        capsys,
    )
    assert code == 0, err
    assert f"store: {out}" in stdout
    # progress of each epoch, ending at all its blocks, and one summary of the run
    for e in (0, 1):
        assert re.search(rf"^epoch {e} \[#{{24}}\] (\d+)/\1 blocks 100\.0%", err, re.M), err
    n_train = zarr.open_group(str(out), mode="r").attrs["orient"]["split"]["n_train"]
    assert re.search(rf"^tuples: {2 * 3 * n_train}  on disk: ", stdout, re.M), stdout
    g = zarr.open_group(str(out), mode="r")
    assert sorted(g["epochs"].group_keys()) == ["00000", "00001"]
    t0 = np.asarray(g["epochs/00000/t"][...])
    t1 = np.asarray(g["epochs/00001/t"][...])
    n_train = g.attrs["orient"]["split"]["n_train"]
    assert (t0 > 0).sum() == 3 * n_train and (t1 > 0).sum() == 3 * n_train
    # each chain emits 3 distinct steps, and the epochs draw different steps
    src0 = np.asarray(g["epochs/00000/src"][...])[t0 > 0]
    assert all(len(set(t0[t0 > 0][src0 == s].tolist())) == 3 for s in range(n_train))
    assert not np.array_equal(np.sort(t0), np.sort(t1)) or not np.array_equal(
        np.asarray(g["epochs/00000/x_t"][...]), np.asarray(g["epochs/00001/x_t"][...])
    )


def _data_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` other than Zarr's metadata (zarr.json)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name != "zarr.json")


@pytest.mark.parametrize("budget", ["200K", "1M"])
def test_disk_budget_picks_tuples_per_chain(budget, tmp_path, capsys):
    """The largest K whose epochs, as written (padding rows and pages, checksums, markers), fit
    the budget: 16 x 16 tuples are small, so the pages of their chunks count (raw bytes alone
    would allow more tuples than fit)."""
    from orient.cli.precompute import parse_size
    from orient.pipeline.blocks import Plan, group_bytes, make_plan

    out = tmp_path / "b.zarr"
    code, _, err = run_cli(
        ["precompute", *SMALL, "--disk-budget", budget, "--epochs", "2", "--out", str(out)], capsys
    )
    assert code == 0, err
    plan = Plan.from_json(zarr.open_group(str(out), mode="r").attrs["orient"]["plan"])
    written = [_data_bytes(out / "epochs" / e) for e in ("00000", "00001")]
    assert written == [group_bytes(plan)] * 2  # the accounting is exact
    limit = parse_size(budget, "--disk-budget")
    assert sum(written) <= limit
    if plan.tuples_per_chain < plan.T:  # one more tuple per chain would not have fitted
        bigger = make_plan(mode="epoch", n_chains=plan.n_chains, T=plan.T, M=plan.M, seed=0,
                           state_shape=plan.state_shape, periodic=plan.periodic,
                           tuples_per_chain=plan.tuples_per_chain + 1, max_batch=4)  # fmt: skip
        assert 2 * group_bytes(bigger) > limit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until a server listens on ``port`` (a scheduler started in a fresh venv first compiles
    distributed's bytecode, which took more than the client's 5 s connect timeout in CI)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the scheduler exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"no scheduler listening on port {port} after {timeout} s")


def test_run_on_an_existing_distributed_scheduler(small_store, tmp_path, capsys):
    port = _free_port()
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    sched = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            f"tcp://127.0.0.1:{port}",
            "--nworkers",
            "2",
            "--nthreads",
            "1",
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        _wait_for_port(port, sched)  # the worker keeps retrying until the scheduler is up
        out = tmp_path / "remote.zarr"
        code, _, err = run_cli(
            ["precompute", *SMALL, "--scheduler", f"tcp://127.0.0.1:{port}", "--out", str(out)],
            capsys,
        )
        assert code == 0, err
        assert_same_bytes(small_store, out)
        # the workers are other processes: an in-memory store would be invisible to them
        mem = ["--out", "memory://orient-private.zarr"]
        code, _, err = run_cli(
            ["precompute", *SMALL, "--scheduler", f"tcp://127.0.0.1:{port}", *mem], capsys
        )
        assert code != 0 and "in-memory file system" in err.strip().splitlines()[-1], err
    finally:
        for p in (worker, sched):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_a_scheduler_without_workers_is_an_error_not_a_hang(tmp_path, capsys, monkeypatch):
    import orient.pipeline.cluster as cluster

    monkeypatch.setattr(cluster, "SCHEDULER_WORKER_WAIT_S", 1.0)
    port = _free_port()
    sched = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_port(port, sched)
        out = tmp_path / "s.zarr"
        address = f"tcp://127.0.0.1:{port}"
        code, _, err = run_cli(["precompute", *SMALL, "--scheduler", address, "--out", str(out)],
                               capsys)  # fmt: skip
        lines = [ln for ln in err.splitlines() if ln.startswith("orient: error:")]
        assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
        assert "has no workers (waited 1 s)" in lines[0] and f"dask worker {address}" in lines[0]
        assert not out.exists()
    finally:
        os.killpg(sched.pid, signal.SIGKILL)
        sched.wait()


def _worker_env() -> tuple[str | None, str | None]:
    return os.environ.get("ORIENT_TEST_GPU"), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_each_local_worker_gets_its_own_environment(monkeypatch):
    """The mechanism that gives each CUDA worker its own GPU (CUDA_VISIBLE_DEVICES, one device
    per worker), run here with a stand-in variable: two real worker processes, two values, and
    the allocator settings of every worker kept."""
    from orient.pipeline.cluster import WORKER_ENV, dask_client, gpu_worker_envs

    envs = [{"ORIENT_TEST_GPU": "3"}, {"ORIENT_TEST_GPU": "5"}]
    with dask_client(2, None, "cpu", envs=envs) as client:
        seen = sorted(client.run(_worker_env).values())
        limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    # the machine's memory shared out, as LocalCluster does (not all of it to each worker)
    total = __import__("psutil").virtual_memory().total
    assert all(0.4 * total < m <= 0.5 * total for m in limits), (limits, total)
    assert seen == [
        ("3", WORKER_ENV["MALLOC_TRIM_THRESHOLD_"]),
        ("5", WORKER_ENV["MALLOC_TRIM_THRESHOLD_"]),
    ]
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # this machine may have none
    assert gpu_worker_envs(2) == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    with pytest.raises(ValueError, match="2 GPU\\(s\\) are visible"):
        gpu_worker_envs(3)


def test_an_fsspec_url_store_works_end_to_end(small_store):
    """--out as an fsspec URL: writes go through Zarr's FsspecStore (no local fast path), per-epoch
    groups are moved into place with fsspec, and verify and the reader work on the result. The
    URL is memory://, shared by workers that run as threads of this process."""
    import uuid

    from distributed import LocalCluster

    from orient.pipeline.precompute import PrecomputeConfig, run_precompute
    from orient.pipeline.verify import verify_store
    from orient.storage.reader import TupleReader
    from orient.storage.store import TupleStore

    base = f"memory://orient-test-{uuid.uuid4().hex}"
    cfg = SMALL_CONFIG
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        addr = cluster.scheduler_address
        full = f"{base}/full.zarr"
        s = run_precompute(PrecomputeConfig(out=full, scheduler=addr, **cfg), log=lambda _: None)
        assert s.bytes_on_disk > 0 and s.url == full
        assert_same_bytes(small_store, full)  # the same bytes as the local store of this config
        assert all(r.ok for r in verify_store(full, recompute=1))
        ep = f"{base}/epochs.zarr"
        run_precompute(
            PrecomputeConfig(out=ep, scheduler=addr, tuples_per_chain=3, epochs=2, **cfg),
            log=lambda _: None,
        )
    store = TupleStore.open(ep)
    assert store.epochs() == [0, 1] and all(store.is_complete(g) for g in store.tuple_groups())
    batch = next(iter(TupleReader(ep, batch_size=4)))
    assert batch["x_t"].shape == (4, 2, 1, 16, 16) and bool((batch["t"] > 0).all())


def test_a_block_whose_write_was_lost_is_run_again(small_store, tmp_path, monkeypatch):
    """Tasks return before their block is on disk (double-buffered writes). If a write is lost
    (a worker dying mid-write), the driver finds the missing done marker after flushing and runs
    the block again: the store ends complete, with the bytes of an undisturbed run."""
    from distributed import LocalCluster

    from orient.pipeline import tasks
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    real_write, lost = tasks._write, []

    def lose_block_1_once(store, group, block, arrays, threads):
        if block == 1 and not lost:
            lost.append(block)  # nothing reaches the disk, as if the worker died here
            return
        real_write(store, group, block, arrays, threads)

    monkeypatch.setattr(tasks, "_write", lose_block_1_once)
    out = tmp_path / "lost.zarr"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        summary = run_precompute(
            PrecomputeConfig(out=str(out), scheduler=cluster.scheduler_address, **SMALL_CONFIG),
            log=lambda _: None,
        )
    assert lost == [1]
    n_blocks = zarr.open_group(str(out), mode="r")["full/done"].shape[0]
    assert summary.blocks_run == n_blocks + 1  # block 1 ran twice, its tuples count once
    assert summary.tuples == int((np.asarray(zarr.open_group(str(out))["full/t"][...]) > 0).sum())
    assert_same_bytes(small_store, out)


def test_a_process_warning_reaches_the_user_once_on_one_line(tmp_path):
    """An SPDE chain beyond the explicit stability limit: one `orient: warning:` line (not a
    Python warning with its source line, and not again from every worker that rebuilds it)."""
    res = subprocess.run(
        [*ORIENT, "precompute", "--process", "spde-aniso", "--num-examples", "8",
         "--image-size", "16", "--steps", "10", "--workers", "1", "--out", str(tmp_path / "s.zarr")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "stability limit" in ln]
    assert len(lines) == 1 and lines[0].startswith("orient: warning: SPDE steps beyond"), lines
    assert "RuntimeWarning" not in res.stderr


def test_a_resume_that_adds_epochs_reports_the_whole_store(tmp_path):
    """--resume with more --epochs writes only the new epochs; the summary counts this run's
    tuples and the store's bytes per tuple over all of its tuples, and the store records the
    epochs now planned."""
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute
    from orient.storage.store import TupleStore

    out = str(tmp_path / "ep.zarr")
    cfg = dict(out=out, workers=1, tuples_per_chain=2, **SMALL_CONFIG)
    first = run_precompute(PrecomputeConfig(epochs=1, **cfg), log=lambda _: None)
    more = run_precompute(PrecomputeConfig(epochs=2, resume=True, **cfg), log=lambda _: None)
    store = TupleStore.open(out)
    assert store.epochs() == [0, 1] and store.meta["epochs_planned"] == 2
    assert more.tuples == first.tuples == store.tuple_count("epochs/00001") > 0
    assert more.store_tuples == 2 * first.tuples
    line = more.lines()[0]
    assert f"(this run: {first.tuples:,})" in line
    assert f"({store.nbytes_on_disk() / more.store_tuples:,.0f} bytes/tuple)" in line


def test_a_resume_continues_the_recorded_plan_of_an_earlier_planner(tmp_path, monkeypatch):
    """A store whose blocks an earlier version laid out differently (here: 3 chains per block
    where the current planner spreads 4-4-3) is resumed in its own layout, to the bytes of an
    uninterrupted run; asking for other limits on resume is still an error."""
    from orient.pipeline import precompute
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute
    from orient.storage.store import StoreError

    real = precompute.make_plan
    monkeypatch.setattr(precompute, "make_plan", lambda **kw: real(**{**kw, "max_batch": 3}))
    whole, cut = tmp_path / "whole.zarr", tmp_path / "cut.zarr"
    for out in (whole, cut):
        run_precompute(PrecomputeConfig(out=str(out), workers=1, **SMALL_CONFIG), log=print)
    monkeypatch.setattr(precompute, "make_plan", real)
    done = zarr.open_group(str(cut), mode="r+")["full/done"]
    assert done.shape[0] == 4  # 3 chains per block; the current planner makes 3 blocks
    done[2:] = 0  # as if the run had stopped after two blocks
    again = run_precompute(
        PrecomputeConfig(out=str(cut), workers=1, resume=True, **SMALL_CONFIG), log=print
    )
    assert again.blocks_run == 2
    assert_same_bytes(whole, cut)
    other = {**SMALL_CONFIG, "max_batch": 2}
    with pytest.raises(StoreError, match="other cache settings"):
        run_precompute(PrecomputeConfig(out=str(cut), workers=1, resume=True, **other))


def test_summary_counts_the_chains_simulated_not_block_slots(tmp_path):
    """chain-steps = chains x T per epoch; the last block holds fewer chains than a full one."""
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    s = run_precompute(
        PrecomputeConfig(out=str(tmp_path / "s.zarr"), workers=1, **SMALL_CONFIG),
        log=lambda _: None,
    )
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    n_train = g.attrs["orient"]["split"]["n_train"]
    assert n_train % SMALL_CONFIG["max_batch"] != 0  # a partly filled last block
    assert s.chain_steps == n_train * SMALL_CONFIG["steps"]
    assert s.tuples == n_train * SMALL_CONFIG["steps"]


def test_a_store_being_written_is_not_written_by_a_second_command(small_store, tmp_path, capsys):
    """While one command holds a store's writer lock, --resume, --overwrite and verify --repair
    stop with one line and touch nothing (a resume would delete the other's temporary files)."""
    from orient.storage.store import writer_lock

    store = tmp_path / "busy.zarr"
    shutil.copytree(small_store, store)
    live = store / "full" / "x_t" / "c" / "0" / "0" / "0" / "0" / ".0.cafe.partial"
    live.parent.mkdir(parents=True, exist_ok=True)
    live.write_bytes(b"a write in flight")
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    with writer_lock(str(store)):
        for args in (
            ["precompute", *SMALL, "--out", str(store), "--resume"],
            ["precompute", *SMALL, "--out", str(store), "--overwrite"],
            ["verify", str(store), "--repair"],
        ):
            code, _, err = run_cli(args, capsys)
            last = err.strip().splitlines()[-1]
            assert code != 0 and "being written by another orient command" in last, err
            assert "Traceback" not in err
        assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before
        code, _, err = run_cli(["verify", str(store)], capsys)  # reading needs no lock
        assert code == 0, err
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(store), "--resume"], capsys)
    assert code == 0, err
    assert not live.exists()
    # a store another command is creating looks like an interrupted creation: not to this one
    creating = tmp_path / "creating.zarr"
    zarr.open_group(str(creating), mode="w-", attributes={"orient_creating": {"started": "now"}})
    (creating / "source").mkdir()
    with writer_lock(str(creating)):
        for extra in (["--resume"], ["--overwrite"]):
            code, _, err = run_cli(["precompute", *SMALL, "--out", str(creating), *extra], capsys)
            assert code != 0 and "being written by another orient command" in err, err
        assert (creating / "source").is_dir() and (creating / "zarr.json").is_file()


def test_data_made_while_the_workers_start_give_the_same_store(
    small_store, tmp_path, monkeypatch, capsys
):
    """On a machine with cores to spare the data set is generated in a thread beside the cluster's
    start: the bytes are those of the one-after-the-other run, and bad data is still one line
    with nothing written (this 2-core machine takes the other path unless told it has more)."""
    import threading

    from orient.pipeline import precompute
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    in_main: list[bool] = []
    real_prepare = precompute.prepare

    def watched_prepare(cfg):
        in_main.append(threading.current_thread() is threading.main_thread())
        return real_prepare(cfg)

    monkeypatch.setattr(precompute, "available_cores", lambda: 64)
    monkeypatch.setattr(precompute, "prepare", watched_prepare)
    out = tmp_path / "overlap.zarr"
    run_precompute(PrecomputeConfig(out=str(out), workers=2, **SMALL_CONFIG), log=lambda _: None)
    assert in_main == [False]
    assert_same_bytes(small_store, out)
    bad = tmp_path / "bad.zarr"
    from test_precompute_errors import _undecodable_images  # found only once they are read

    imgs = _undecodable_images(tmp_path / "imgs")
    args = ["precompute", "--dataset", "image-folder", "--data-dir", str(imgs)]
    code, _, err = run_cli([*args, "--out", str(bad)], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and lines[-1].startswith("orient: error:"), err
    assert "no readable images" in lines[-1], err
    assert "Traceback" not in err and not bad.exists()
    assert in_main == [False, False]
