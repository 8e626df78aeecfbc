"""A user's first hour: errors in the right order and precise, help that fits 80 columns, the
version, and metrics printed beside the data's own score."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMALL_CONFIG, run_cli

TINY = ["--model-opt", "base=8", "--batch-size", "4", "--device", "cpu"]


def one_line_error(code: int, err: str, *fragments: str, absent: tuple[str, ...] = ()) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("orient: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    for f in absent:
        assert f not in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-step run on the small store (its checkpoint is what sample and evaluate get)."""
    from orient.trainer.train import TrainConfig, train

    out = tmp_path_factory.mktemp("msg") / "run"
    train(TrainConfig(store=str(small_store), out=str(out), model="tiny", model_overrides={"base": 8},
                      batch_size=4, max_steps=2, device="cpu", threads=1))  # fmt: skip
    return out


# -- help and version -----------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"orient {version('orient')}"


def test_help_at_80_columns_shows_whole_defaults_and_plain_usage(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(["precompute", "--help"], capsys)
    assert code == 0
    assert "[default: synthetic-fingerprints]" in out
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines())
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert code == 0 and "orient[metrics]" in " ".join(out.split())  # not eaten as markup
    assert out.splitlines()[0].strip().endswith(" evaluate [OPTIONS] SAMPLES")
    code, out, _ = run_cli(["info", "--help"], capsys)
    assert out.splitlines()[0].strip().endswith(" info [OPTIONS] STORE")


# -- orient train: options, then the store, then the run folder ----------------------------------


def test_train_names_a_missing_store_before_the_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("runs/default").mkdir(parents=True)
    Path("runs/default/ckpt-00000010.pt").write_bytes(b"an earlier run")
    one_line_error(*run_cli(["train", "--store", "cach.zarr"], capsys)[::2], "no store at cach.zarr",
                   absent=("--resume",))  # fmt: skip
    # a bad option is named before the store is looked at
    one_line_error(*run_cli(["train", "--store", "cach.zarr", "--batch-size", "0"], capsys)[::2],
                   "--batch-size must be >= 1", absent=("cach.zarr",))  # fmt: skip
    for args, says in ((["--lr", "-1"], "--lr"), (["--max-steps", "0"], "--max-steps"),
                       (["--ema", "1.5"], "--ema"), (["--log-every", "0"], "--log-every"),
                       (["--model", "tiyn"], "unknown --model 'tiyn'")):  # fmt: skip
        one_line_error(*run_cli(["train", "--store", "cach.zarr", *args], capsys)[::2], says)
    assert Path("runs/default/ckpt-00000010.pt").read_bytes() == b"an earlier run"
    assert sorted(p.name for p in Path("runs/default").iterdir()) == ["ckpt-00000010.pt"]


def test_recache_on_a_full_store_is_refused_before_the_run_folder(small_store, tmp_path, capsys):
    out = tmp_path / "run"
    one_line_error(*run_cli(["train", "--store", str(small_store), "--out", str(out), *TINY,
                             "--recache", "--max-steps", "2"], capsys)[::2],
                   "--recache needs a per-epoch store")  # fmt: skip
    assert not out.exists()


def test_resuming_on_a_store_of_another_T_names_the_field(run, small_store, tmp_path, capsys):
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    other = tmp_path / "t12.zarr"
    run_precompute(PrecomputeConfig(out=str(other), workers=1, **{**SMALL_CONFIG, "steps": 12}),
                   log=lambda _: None)  # fmt: skip
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = sorted(p.name for p in copy.iterdir())
    log_before = (copy / "log.jsonl").read_bytes()
    line = one_line_error(
        *run_cli(
            [
                "train",
                "--store",
                str(other),
                "--out",
                str(copy),
                *TINY,
                "--max-steps",
                "4",
                "--resume",
            ],
            capsys,
        )[::2],  # fmt: skip
        "T: checkpoint 10, store 12",
        "another process",
    )
    assert "(kuramoto)" not in line and "--store" in line
    assert sorted(p.name for p in copy.iterdir()) == before  # nothing written
    assert (copy / "log.jsonl").read_bytes() == log_before

    # the sampler's and precompute's call (a hash only) still says which processes differ
    from orient.storage.store import StoreError, TupleStore

    with pytest.raises(StoreError, match="T=12.*not the process of the checkpoint"):
        TupleStore.open(str(other)).check_process(
            TupleStore.open(str(small_store)).meta["process_hash"]
        )
    # another batch size or model is named with both values
    line = one_line_error(
        *run_cli(["train", "--store", str(small_store), "--out", str(copy), "--model-opt", "base=16",
                  "--batch-size", "4", "--device", "cpu", "--max-steps", "4", "--resume"], capsys)[::2],
        "base: checkpoint 8, now 16",
    )  # fmt: skip
    one_line_error(
        *run_cli(["train", "--store", str(small_store), "--out", str(copy), "--model-opt", "base=8",
                  "--batch-size", "3", "--device", "cpu", "--max-steps", "4", "--resume"], capsys)[::2],
        "--batch-size 4, not 3",
    )  # fmt: skip


# -- orient sample: options, then the checkpoint and prior, then --out ---------------------------


def test_sample_names_the_bad_option_before_the_output_folder(run, tmp_path, capsys):
    ck = str(run / "ckpt-00000002.pt")
    used = tmp_path / "used"
    used.mkdir()
    (used / "samples.npy").write_bytes(b"earlier work")
    cases = [
        (["--method", "sdee"], "--method 'sdee'"),
        (["--prior", "anchors"], "no prior 'anchors'"),
        (["--n", "0"], "--n must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--corrector-size", "2"], "--corrector-size must be in (0, 2)"),
        (["--corrector-steps", "-1"], "--corrector-steps"),
    ]
    for args, says in cases:
        one_line_error(
            *run_cli(
                ["sample", "--checkpoint", ck, "--out", str(used), "--device", "cpu", *args], capsys
            )[::2],  # fmt: skip
            says,
            absent=("already holds files",),
        )
    broken = tmp_path / "broken.pt"
    broken.write_bytes((run / "ckpt-00000002.pt").read_bytes()[:500])
    one_line_error(*run_cli(["sample", "--checkpoint", str(broken), "--out", str(used)], capsys)[::2],
                   "corrupted", absent=("already holds files",))  # fmt: skip
    # --prior fitted reads the training store: a missing one is named before --out
    gone = tmp_path / "gone"
    shutil.copytree(run, gone)
    ckpt = torch.load(gone / "ckpt-00000002.pt", weights_only=True)
    ckpt["store"] = json.dumps({**json.loads(ckpt["store"]), "url": str(tmp_path / "moved.zarr")})
    torch.save(ckpt, gone / "ckpt-00000002.pt")
    one_line_error(
        *run_cli(
            [
                "sample",
                "--checkpoint",
                str(gone / "ckpt-00000002.pt"),
                "--prior",
                "fitted",
                "--out",
                str(used),
            ],
            capsys,
        )[::2],  # fmt: skip
        "--prior fitted reads the training store",
        "moved.zarr",
    )
    # only now, with every option right, the occupied folder is the problem
    one_line_error(*run_cli(["sample", "--checkpoint", ck, "--out", str(used)], capsys)[::2],
                   "already holds files")  # fmt: skip
    assert (used / "samples.npy").read_bytes() == b"earlier work"


def test_unreadable_checkpoints_say_what_is_wrong_not_the_exception_class(tmp_path):
    from orient.trainer.checkpoint import _unreadable

    f = tmp_path / "c.pt"
    f.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    why = _unreadable(f, RuntimeError(""))
    assert "RuntimeError" not in why and "without saying why" in why


# -- orient evaluate ------------------------------------------------------------------------------


def test_evaluate_says_what_it_was_given_instead_of_samples(run, small_store, tmp_path, capsys):
    ck = run / "ckpt-00000002.pt"
    line = one_line_error(*run_cli(["evaluate", str(ck)], capsys)[::2], "is a checkpoint",
                          f"orient sample --checkpoint {ck}", absent=("sample.json",))  # fmt: skip
    assert "samples" in line
    one_line_error(*run_cli(["evaluate", str(run)], capsys)[::2], "is a run folder",
                   f"orient sample --checkpoint {ck}")  # fmt: skip
    one_line_error(*run_cli(["evaluate", str(small_store)], capsys)[::2], "is a store")
    text = tmp_path / "notes.npy"
    text.write_text("not an array")
    one_line_error(*run_cli(["evaluate", str(text)], capsys)[::2], "is not a .npy array")
    one_line_error(*run_cli(["evaluate", str(tmp_path / "nothing")], capsys)[::2], "no samples at")


def test_evaluate_prints_each_metric_beside_the_data_floor(run, small_store, tmp_path, capsys):
    from orient import evaluation as ev
    from orient.storage.store import TupleStore

    d = tmp_path / "s"
    code, _, err = run_cli(["sample", "--checkpoint", str(run / "ckpt-00000002.pt"), "--n", "6",
                            "--out", str(d), "--device", "cpu"], capsys)  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(["evaluate", str(d)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    swd = next(ln for ln in lines if ln.strip().startswith("SWD on patches"))
    assert "(data's own: " in swd and "lower is better" in swd
    assert sum("data's own" in ln for ln in lines) == 5  # every metric but the held-out coherence
    code, out, err = run_cli(["evaluate", str(d), "--json"], capsys)
    rep = json.loads(out)
    # the floor is the same metrics of as many training images against the same held-out images
    store = TupleStore.open(str(small_store))
    train_x = store.source().astype(np.float32)
    expect = ev.image_report(ev.floor_subset(train_x, 6, 0), store.held_out(), seed=0)
    assert rep["data_floor"] == pytest.approx(expect)
    # samples that are the training data score exactly the data's own score
    own = tmp_path / "own.npy"
    np.save(own, train_x)
    code, out, err = run_cli(["evaluate", str(own), "--store", str(small_store), "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    for k in ("swd_patches", "power_spectrum_l1_log10", "orientation_distance"):
        assert rep[k] == pytest.approx(rep["data_floor"][k])


def test_format_report_reads_each_metric():
    from orient.evaluation import format_report

    rep = {
        "swd_patches": 0.0379,
        "coherence_samples": 0.3,
        "coherence_reference": 0.45,
        "fid": 12.0,
    }
    floor = {"swd_patches": 0.0156, "coherence_samples": 0.44, "fid": 3.0}
    lines = format_report(rep, floor)
    assert lines[0] == "SWD on patches 0.0379 (data's own: 0.0156; lower is better)"
    assert lines[1] == (
        "mean coherence 0.3 (data's own: 0.44; held-out: 0.45; closer to it is better)"
    )
    assert lines[2] == "Inception FID 12 (data's own: 3; lower is better)"
    assert len(lines) == 3
    assert format_report({"swd_patches": 0.5}, None) == ["SWD on patches 0.5 (lower is better)"]


def test_quickstart_checks_its_options_and_prints_the_data_floor(tmp_path, capsys):
    out = tmp_path / "qs"
    one_line_error(*run_cli(["quickstart", "--out-dir", str(out), "--train-steps", "0"], capsys)[::2],
                   "--train-steps must be >= 1")  # fmt: skip
    assert not out.exists()
    code, stdout, err = run_cli(
        ["quickstart", "--out-dir", str(out), "--examples", "24", "--train-steps", "2", "--samples", "4",
         "--batch-size", "4", "--workers", "1"], capsys)  # fmt: skip
    assert code == 0, err
    swd = next(ln for ln in stdout.splitlines() if ln.strip().startswith("SWD on patches"))
    assert "(data's own: " in swd and "lower is better" in swd
    rep = json.loads((out / "evaluation.json").read_text())
    floor = rep.pop("data_floor")
    assert set(floor) == set(rep) and floor["swd_patches"] > 0
