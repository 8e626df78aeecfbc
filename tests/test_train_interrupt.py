"""Progress and interruption: `orient train` says what it does at once, logs the first and last
step, and on SIGINT / SIGTERM writes a checkpoint, exits 130 / 143 and prints how to resume; the
resumed run continues exactly and its log.jsonl holds each step once."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import run_cli

ORIENT = [sys.executable, "-m", "orient.cli"]
TINY = ["--model-opt", "base=8", "--batch-size", "4", "--device", "cpu", "--threads", "1"]


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def step_losses(run: Path) -> dict[int, float]:
    steps = [r["step"] for r in log_records(run) if "loss" in r]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {r["step"]: r["loss"] for r in log_records(run) if "loss" in r}


def same_state(a: Path, b: Path) -> None:
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["step"] == cb["step"]
    for part in ("model", "ema"):
        assert ca[part].keys() == cb[part].keys()
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)


def start_and_wait_for_a_step(cmd: list[str], run: Path) -> subprocess.Popen:
    """Start training in its own process group; return once it has logged its first step."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    log = run / "log.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and '"loss"' in log.read_text():
            return proc
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    raise AssertionError(f"training logged no step (exit {proc.returncode}): {err[-2000:]}")


def test_first_lines_and_first_and_last_steps_are_logged(small_store, tmp_path, capsys):
    """A run shorter than --log-every logs its first and its last step (a 30-step run with the
    default --log-every 50 used to print nothing and leave log.jsonl empty)."""
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--store", str(small_store), "--out", str(run), *TINY,
                              "--max-steps", "3"], capsys)  # fmt: skip
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == f"train: reading store {small_store}"
    assert "building model tiny on cpu" in lines[1] and "kuramoto" in lines[1]
    assert lines[2].startswith("train: starting; model tiny")
    assert [ln.split()[:2] for ln in lines[3:5]] == [["step", "1/3"], ["step", "3/3"]]
    assert list(step_losses(run)) == [1, 3]


def test_sigint_writes_a_checkpoint_and_the_printed_command_resumes_exactly(small_store, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, DataLoader worker included) long before the
    first scheduled checkpoint: a checkpoint of the last finished step, exit 130, the command to
    resume; resumed for three more steps, the run equals one that was never interrupted."""
    run = tmp_path / "run"
    cmd = [*ORIENT, "train", "--store", str(small_store), "--out", str(run), *TINY,
           "--max-steps", "100000", "--checkpoint-every", "100000", "--log-every", "5",
           "--loader-workers", "1"]  # fmt: skip
    proc = start_and_wait_for_a_step(cmd, run)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    ckpts = sorted(run.glob("ckpt-*.pt"))
    assert len(ckpts) == 1, err
    ck = torch.load(ckpts[0], weights_only=True)
    k = ck["step"]
    assert k >= 1 and not ck["finished"]
    last = err.strip().splitlines()[-1]
    assert last.startswith("orient: interrupted: SIGINT") and f"wrote {ckpts[0]}" in last, err
    again = shlex.split(last.split("continue with: ", 1)[1])
    assert again[:2] == ["orient", "train"] and again[-1] == "--resume"
    assert step_losses(run).keys() == {1, *range(5, k + 1, 5), k}  # the stopped step is logged

    again[again.index("--max-steps") + 1] = str(k + 3)
    r = subprocess.run([*ORIENT, *again[1:]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming {ckpts[0]} at step {k}" in r.stderr
    ref = tmp_path / "ref"
    r = subprocess.run([*ORIENT, "train", "--store", str(small_store), "--out", str(ref), *TINY,
                        "--max-steps", str(k + 3), "--checkpoint-every", "100000", "--log-every", "5",
                        "--loader-workers", "1"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    name = f"ckpt-{k + 3:08d}.pt"
    same_state(run / name, ref / name)
    resumed, reference = step_losses(run), step_losses(ref)
    assert resumed.keys() == reference.keys() | {k}
    assert all(resumed[s] == reference[s] for s in reference)  # the same losses, bit for bit


def test_sigterm_writes_a_checkpoint_and_exits_143(small_store, tmp_path):
    """SIGTERM to the trainer alone (a batch scheduler's stop): the same, with exit code 143."""
    run = tmp_path / "run"
    cmd = [*ORIENT, "train", "--store", str(small_store), "--out", str(run), *TINY,
           "--max-steps", "100000", "--checkpoint-every", "100000"]  # fmt: skip
    proc = start_and_wait_for_a_step(cmd, run)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err
    (ckpt,) = run.glob("ckpt-*.pt")
    assert "orient: interrupted: SIGTERM at step" in err and f"wrote {ckpt}" in err
    assert "--resume" in err.strip().splitlines()[-1]
    assert torch.load(ckpt, weights_only=True)["step"] >= 1


def test_resume_from_an_earlier_checkpoint_drops_the_later_log_lines(small_store, tmp_path, capsys):
    """A run killed after logging steps past its newest checkpoint: the resumed run logs those
    steps again, so the lines after the checkpoint are dropped; each step appears once and the
    run ends as the uninterrupted one did."""
    run = tmp_path / "run"
    args = ["train", "--store", str(small_store), "--out", str(run), *TINY, "--max-steps", "12",
            "--checkpoint-every", "5", "--log-every", "2"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    whole = step_losses(run)
    assert list(whole) == [1, 2, 4, 6, 8, 10, 12]
    final = tmp_path / "final.pt"
    shutil.copy(run / "ckpt-00000012.pt", final)
    for name in ("ckpt-00000012.pt", "ckpt-00000010.pt"):  # as if killed just after step 12's log
        (run / name).unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert step_losses(run) == whole
    resumes = [r for r in log_records(run) if "resumed_from" in r]
    assert resumes == [{"resumed_from": str(run / "ckpt-00000005.pt"), "step": 5}]
    same_state(run / "ckpt-00000012.pt", final)


def test_trim_log_without_a_recorded_offset_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    """Checkpoints written before the log offset was recorded: lines are kept by step, and a line
    cut short by a kill is dropped."""
    from orient.trainer.train import trim_log

    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 5, 10, 15)]
    lines.insert(2, json.dumps({"recache_epoch": 0}))
    log.write_text("\n".join(lines) + '\n{"step": 20, "lo')
    trim_log(log, None, 10)
    kept = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r.get("step") for r in kept] == [1, 5, None, 10]
    size = log.stat().st_size
    log.write_text(log.read_text() + json.dumps({"step": 11}) + "\n")
    assert trim_log(log, size, 10) > 0 and log.stat().st_size == size
