"""Training, exact resume after SIGKILL, DDP with gloo, re-caching, sampling and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from conftest import SMALL, run_cli

TINY = ["--model-opt", "base=8", "--batch-size", "4", "--log-every", "5"]
ORIENT = [sys.executable, "-m", "orient.cli"]


def params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_params(a: Path, b: Path) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


@pytest.fixture(scope="module")
def trained(small_store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    code = subprocess.run([*ORIENT, "train", "--store", str(small_store), "--out", str(run), *TINY,
                           "--max-steps", "30", "--checkpoint-every", "10", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert code.returncode == 0, code.stderr
    return run


def test_training_writes_logs_and_checkpoints(trained):
    ckpts = sorted(trained.glob("ckpt-*.pt"))
    assert [p.name for p in ckpts] == ["ckpt-00000010.pt", "ckpt-00000020.pt", "ckpt-00000030.pt"]
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 5, 10, 15, 20, 25, 30]  # the first step too
    assert all(np.isfinite(r["loss"]) and 0 <= r["data_wait"] <= 1 for r in steps)
    ck = torch.load(ckpts[-1], weights_only=True)
    assert ck["step"] == 30 and ck["finished"]
    assert json.loads(ck["process"])["process"] == "kuramoto"
    assert set(ck) >= {
        "model",
        "ema",
        "optimizer",
        "reader",
        "rng",
        "process_hash",
        "store",
        "model_config",
    }


def test_sigkill_then_resume_matches_uninterrupted_run(trained, small_store, tmp_path):
    run = tmp_path / "killed"
    cmd = [*ORIENT, "train", "--store", str(small_store), "--out", str(run), *TINY, "--max-steps", "30",
           "--checkpoint-every", "10", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 200
    while (
        not (run / "ckpt-00000010.pt").exists() and time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(run.glob("ckpt-*.pt"))
    assert done and done[-1].name != "ckpt-00000030.pt"  # killed before the end
    r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    same_params(run / "ckpt-00000030.pt", trained / "ckpt-00000030.pt")
    # steps logged after the checkpoint it resumed from are logged once, by the resumed run
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 5, 10, 15, 20, 25, 30]


def test_ddp_backend_follows_the_training_device_not_the_machine():
    """CPU training uses Gloo also where a GPU exists (NCCL has no CPU tensors: a torchrun run with
    --device cpu failed on a GPU machine when the backend followed torch.cuda.is_available())."""
    from orient.trainer.train import ddp_backend

    assert ddp_backend(torch.device("cpu")) == "gloo"
    assert ddp_backend(torch.device("cuda", 0)) == "nccl"


def test_torchrun_two_ranks_with_gloo_matches_one_process_with_double_batch(small_store, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    base = ["--store", str(small_store), "--model-opt", "base=8", "--max-steps", "6", "--device", "cpu",
            "--log-every", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "orient.cli", "train",
                             *base, "--batch-size", "2", "--out", str(ddp)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=300)
    finally:  # never leave ranks behind, whatever happened
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    r = subprocess.run([*ORIENT, "train", *base, "--batch-size", "4", "--out", str(single)],
                       capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    pa, pb = params(ddp / "ckpt-00000006.pt"), params(single / "ckpt-00000006.pt")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-6)


def test_recache_keeps_at_most_keep_epochs_on_disk(tmp_path, capsys):
    store = tmp_path / "ep.zarr"
    code, _, err = run_cli(
        ["precompute", *SMALL, "--tuples-per-chain", "4", "--epochs", "1", "--out", str(store)],
        capsys,
    )
    assert code == 0, err
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--store", str(store), "--out", str(run), *TINY, "--epochs", "3",
                              "--recache", "--keep-epochs", "2", "--device", "cpu"], capsys)  # fmt: skip
    assert code == 0, err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    ready = [r for r in log if "recache_epoch" in r]
    assert [r["recache_epoch"] for r in ready] == [0, 1, 2]
    assert all(r["epochs_on_disk"] <= 2 for r in ready)
    on_disk = sorted(zarr.open_group(str(store), mode="r")["epochs"].group_keys())
    assert len(on_disk) <= 2 and "00002" in on_disk
    ends = [r["epoch_end"] for r in log if "epoch_end" in r]
    assert ends == [0, 1, 2]
    # the epochs read and deleted are recorded as retired: the store stays complete and verifies
    code, out, err = run_cli(["info", str(store)], capsys)
    assert code == 0 and "complete: yes" in out, out + err
    code, out, err = run_cli(["verify", str(store)], capsys)
    assert code == 0, out + err


def test_sampling_is_deterministic_and_writes_outputs(trained, tmp_path, capsys):
    ck = trained / "ckpt-00000030.pt"
    outs = []
    for i in range(2):
        d = tmp_path / f"s{i}"
        code, out, err = run_cli(["sample", "--checkpoint", str(ck), "--n", "5", "--batch-size", "3",
                                  "--out", str(d), "--trajectory", "--device", "cpu"], capsys)  # fmt: skip
        assert code == 0, err
        assert f"sample grid: {d / 'grid.png'}" in out
        assert (d / "trajectory.png").is_file()
        # a progress line over the reverse steps of both batches, then the rate
        assert "sample [" in err and "steps" in err and "samples/s" in err, err
        outs.append(np.load(d / "samples.npy"))
    assert outs[0].shape == (5, 1, 16, 16) and np.array_equal(outs[0], outs[1])
    assert outs[0].min() >= -1 and outs[0].max() <= 1
    code, out, err = run_cli(["evaluate", str(tmp_path / "s0"), "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["n_samples"] == 5 and "swd" in json.dumps(rep).lower()


@pytest.mark.parametrize("method", ["ode", "pc"])
def test_other_samplers_run(trained, tmp_path, method, capsys):
    code, _, err = run_cli(["sample", "--checkpoint", str(trained / "ckpt-00000030.pt"), "--n", "2",
                            "--method", method, "--out", str(tmp_path / method), "--device", "cpu"], capsys)  # fmt: skip
    assert code == 0, err


def one_line_error(code, err, *fragments):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("orient: error:")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_bad_input_to_sample_and_train(trained, small_store, tmp_path, capsys):
    ck = trained / "ckpt-00000030.pt"
    one_line_error(
        *run_cli(["sample", "--checkpoint", str(tmp_path / "nope.pt")], capsys)[::2],
        "does not exist",
    )
    broken = tmp_path / "broken.pt"
    broken.write_bytes(ck.read_bytes()[:1000])
    one_line_error(
        *run_cli(["sample", "--checkpoint", str(broken), "--out", str(tmp_path / "b")], capsys)[
            ::2
        ],
        "corrupted",
    )
    one_line_error(
        *run_cli(["sample", "--checkpoint", str(ck), "--n", "0"], capsys)[::2], "--n must be >= 1"
    )
    if not torch.cuda.is_available():
        one_line_error(
            *run_cli(["sample", "--checkpoint", str(ck), "--device", "cuda"], capsys)[::2],
            "use --device cpu",
        )
    used = tmp_path / "used"
    used.mkdir()
    (used / "samples.npy").write_bytes(b"earlier work")
    one_line_error(
        *run_cli(["sample", "--checkpoint", str(ck), "--out", str(used)], capsys)[::2],
        "--overwrite",
    )
    assert (used / "samples.npy").read_bytes() == b"earlier work"
    one_line_error(
        *run_cli(
            ["sample", "--checkpoint", str(ck), "--prior", "anchors", "--out", str(tmp_path / "p")],
            capsys,
        )[::2],
        "no prior 'anchors'",
    )
    # a run folder continued on a store of another process
    other = tmp_path / "other.zarr"
    args = [a if a != "two_D=1e-4:0.1,K=5e-5:0.05" else "two_D=1e-4:0.1,K=5e-5:0.02" for a in SMALL]
    assert run_cli(["precompute", *args, "--out", str(other)], capsys)[0] == 0
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    one_line_error(
        *run_cli(
            [
                "train",
                "--store",
                str(other),
                "--out",
                str(copy),
                *TINY,
                "--resume",
                "--max-steps",
                "40",
            ],
            capsys,
        )[::2],
        "another process",
    )
    one_line_error(
        *run_cli(
            ["train", "--store", str(small_store), "--out", str(copy), *TINY, "--max-steps", "40"],
            capsys,
        )[::2],
        "--resume",
    )


class _NotData:
    """A Python object: a weights-only load must refuse a checkpoint that holds one."""


def test_damaged_checkpoints_say_what_is_wrong(trained, tmp_path, capsys):
    ck = trained / "ckpt-00000030.pt"
    good = torch.load(ck, weights_only=True)

    def says(path: Path, message: str) -> None:
        code, _, err = run_cli(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "o")],
                               capsys)  # fmt: skip
        one_line_error(code, err, message)
        assert not (tmp_path / "o").exists()

    junk, empty, cut = tmp_path / "junk.pt", tmp_path / "empty.pt", tmp_path / "cut.pt"
    junk.write_bytes(b"not a checkpoint")
    empty.write_bytes(b"")
    cut.write_bytes(ck.read_bytes()[:-100])
    says(junk, "not a torch checkpoint")
    says(empty, "is empty")
    says(cut, "truncated or damaged")
    pickled = tmp_path / "pickled.pt"
    torch.save({**good, "extra": _NotData()}, pickled)
    says(pickled, "refuses to unpickle")
    # weights of another architecture: the message names the keys that do not fit
    name = next(k for k, v in good["ema"].items() if v.ndim == 4)
    reshaped = tmp_path / "reshaped.pt"
    torch.save({**good, "ema": {**good["ema"], name: good["ema"][name][:1]}}, reshaped)
    says(reshaped, f"shape: {name}")
    dropped = tmp_path / "dropped.pt"
    torch.save({**good, "ema": {k: v for k, v in good["ema"].items() if k != name}}, dropped)
    says(dropped, f"missing: {name}")
    not_tensor = tmp_path / "not_tensor.pt"
    torch.save({**good, "ema": {**good["ema"], name: "weights"}}, not_tensor)
    says(not_tensor, "the ema weights cannot be loaded")
    if not torch.cuda.is_available():  # not damage: tensors of a device this machine lacks
        from orient.trainer.checkpoint import CheckpointError, load_checkpoint

        with pytest.raises(CheckpointError, match="cannot be loaded: .*CUDA") as info:
            load_checkpoint(ck, map_location="cuda:3")
        assert "corrupted" not in str(info.value)
    bad_config = tmp_path / "config.pt"
    torch.save({**good, "model_config": json.dumps({"arch": "nope"})}, bad_config)
    says(bad_config, "model_config cannot be built")


def test_incomplete_store_is_refused(small_store, tmp_path, capsys):
    copy = tmp_path / "partial.zarr"
    shutil.copytree(small_store, copy)
    zarr.open_group(str(copy), mode="r+")["full"]["done"][0] = 0
    one_line_error(
        *run_cli(
            [
                "train",
                "--store",
                str(copy),
                "--out",
                str(tmp_path / "r"),
                *TINY,
                "--max-steps",
                "2",
            ],
            capsys,
        )[::2],
        "incomplete",
    )
