"""The store's size is planned and printed before any data are prepared, and a store that would not
fit the disk (or --max-size) is refused with settings that fit; a resumed run's progress counts
the blocks already on disk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr
from test_precompute_errors import one_line_error

from conftest import SMALL, SMALL_CONFIG, run_cli

ONE_WORKER = [*SMALL, "--workers", "1"]


def _files_bytes(folder: Path, skip_metadata: bool = False) -> int:
    return sum(
        f.stat().st_size
        for f in folder.rglob("*")
        if f.is_file() and not (skip_metadata and f.name == "zarr.json")
    )


def _planned(tmp_path: Path, **changes):
    from orient.pipeline.datasets import describe_dataset, split_indices
    from orient.pipeline.precompute import (
        DEFAULT_BLOCK_MEMORY,
        PrecomputeConfig,
        make_run_plan,
        probe_process,
    )
    from orient.pipeline.sizing import planned_size

    cfg = PrecomputeConfig(
        out=str(tmp_path / "s.zarr"), **{**SMALL_CONFIG, "block_memory": DEFAULT_BLOCK_MEMORY,
                                         **changes}
    )  # fmt: skip
    shape = describe_dataset(cfg.dataset, **cfg.data_options)
    n_train = len(split_indices(shape.n, cfg.test_fraction, cfg.seed)[0])
    process = probe_process(cfg, shape, n_train)
    plan, _ = make_run_plan(cfg, n_train, shape.shape, process)
    return planned_size(plan, cfg.epochs or 1, shape.n, process)


@pytest.mark.parametrize("mode", [[], ["--tuples-per-chain", "3", "--epochs", "2"]])
def test_the_planned_size_comes_first_and_is_the_stores(mode, tmp_path, capsys):
    """Printed before the data are prepared; the tuples to the byte (the accounting of
    --disk-budget), the whole store from above within its metadata allowance."""
    out = tmp_path / "s.zarr"
    code, _, err = run_cli(["precompute", *ONE_WORKER, *mode, "--out", str(out)], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("precompute: planned store "), lines[0]
    assert any("preparing" in ln for ln in lines[1:])
    changes = {"tuples_per_chain": 3, "epochs": 2} if mode else {}
    size = _planned(tmp_path, **changes)
    groups = [out / "full"] if not mode else [out / "epochs" / f"{e:05d}" for e in (0, 1)]
    assert size.tuples == sum(_files_bytes(g, skip_metadata=True) for g in groups)
    total = _files_bytes(out)
    assert total <= size.total <= total + 96 * 1024, (size, total)


def test_a_store_over_max_size_is_refused_naming_settings_that_fit(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    size = _planned(tmp_path)
    limit = size.total * 2 // 3
    code, _, err = run_cli(
        ["precompute", *ONE_WORKER, "--max-size", str(limit), "--out", str(out)], capsys
    )
    one_line_error(code, err, "the store would take", f"--max-size {limit / 1024:,.1f} KiB")
    assert code == 2 and not out.exists()
    line = err.strip().splitlines()[-1]
    fits = dict(re.findall(r"(--tuples-per-chain|--every|--disk-budget) (\S+)", line))
    assert set(fits) == {"--tuples-per-chain", "--every", "--disk-budget"}, line
    for option in ("--every", "--tuples-per-chain"):  # each fits as the line says
        ok = tmp_path / f"{option[2:]}.zarr"
        code, _, err = run_cli(
            ["precompute", *ONE_WORKER, option, fits[option], "--max-size", str(limit),
             "--out", str(ok)], capsys)  # fmt: skip
        assert code == 0, err
        assert _files_bytes(ok) <= limit
    # the largest K that fits: one more does not
    k = int(fits["--tuples-per-chain"])
    assert _planned(tmp_path, tuples_per_chain=k + 1).total > limit


def test_the_readme_socofing_example_is_sized_from_file_names_alone(tmp_path, capsys):
    """SOCOFing's 6,000 Real images, never read (here they are empty files): full mode at T = 300
    plans 5,400 chains x 300 tuples of 96 x 96 phases, about 312 GiB (335 GB)."""
    real = tmp_path / "SOCOFing" / "Real"
    real.mkdir(parents=True)
    for subject in range(1, 601):
        for hand in ("Left", "Right"):
            for finger in ("thumb", "index", "middle", "ring", "little"):
                (real / f"{subject}__M_{hand}_{finger}_finger.BMP").touch()
    out = tmp_path / "cache.zarr"
    code, _, err = run_cli(
        ["precompute", "--dataset", "socofing", "--data-dir", str(tmp_path / "SOCOFing"),
         "--steps", "300", "--max-size", "20G", "--out", str(out)], capsys)  # fmt: skip
    assert "planned store 311.6 GiB: 5,400 chains x 300 tuples" in err.splitlines()[0], err
    one_line_error(code, err, "would take 311.6 GiB", "--tuples-per-chain", "--every")
    assert not out.exists()


UNSHARE = shutil.which("unshare")


@pytest.mark.skipif(UNSHARE is None, reason="needs util-linux unshare to mount a small tmpfs")
def test_a_store_larger_than_the_free_space_is_refused_before_any_work(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    orient = f"{sys.executable} -c 'from orient.cli import main; main()'"
    args = (
        "precompute --num-examples 40 --image-size 16 --steps 30 --schedule "
        "two_D=1e-4:0.1,K=5e-5:0.05 --samples 2 --max-batch 2 --workers 1"
    )
    script = (
        f"mount -t tmpfs -o size=700k tmpfs {mnt} || exit 77; "
        f"{orient} {args} --out {mnt}/s.zarr; echo RC=$?; ls -A {mnt} | wc -l"
    )
    r = subprocess.run(
        [UNSHARE, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )
    if r.returncode == 77:
        pytest.skip("cannot mount a tmpfs here")
    assert "RC=2" in r.stdout and r.stdout.split()[-1] == "0", r.stdout + r.stderr  # nothing
    one_line_error(2, r.stderr, f"but {mnt} has 700.0 KiB free", "--tuples-per-chain")


def test_a_resumed_runs_progress_starts_from_the_blocks_on_disk(small_store, tmp_path, capsys):
    """After an interruption `orient info` and the resumed run's progress agree: both count the
    blocks whose done markers are on disk (here 1 of 3: the others' markers are cleared, as a
    run stopped after its first block leaves them), and the progress ends at 3/3."""
    copy = tmp_path / "cut.zarr"
    shutil.copytree(small_store, copy)
    done = zarr.open_group(str(copy), mode="r+")["full/done"]
    n = done.shape[0]
    assert n == 3
    done[1:] = 0
    code, out, _ = run_cli(["info", str(copy)], capsys)
    assert code == 0 and f"1/{n} blocks done" in out
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(copy), "--resume"], capsys)
    assert code == 0, err
    counts = re.findall(rf"^full \[#*\s*\] (\d+)/{n} blocks", err, re.M)
    assert counts[0] == "1" and counts[-1] == str(n), err
    assert [int(c) for c in counts] == sorted(int(c) for c in counts)


def test_progress_counts_prior_blocks_but_rates_only_this_runs(capsys):
    import io

    from orient.pipeline.progress import Progress

    stream = io.StringIO()
    bar = Progress(43, "full", unit="blocks", stream=stream, done=4)
    bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("full [##") and " 4/43 blocks" in lines[0]
    assert " 5/43 blocks" in lines[-1]


@pytest.mark.skipif(os.name != "posix", reason="POSIX paths")
def test_free_space_is_that_of_the_nearest_existing_folder(tmp_path):
    from orient.pipeline.sizing import free_space

    free, where = free_space(str(tmp_path / "a" / "b" / "s.zarr"))
    assert where == str(tmp_path) and free > 0
    assert free_space("s3://bucket/s.zarr") is None
