"""The README's main command at toy size: every stage runs and says where its outputs went."""

from __future__ import annotations

import json

from conftest import run_cli


def test_quickstart_runs_all_stages(tmp_path, capsys):
    out = tmp_path / "qs"
    code, stdout, err = run_cli(
        ["quickstart", "--out-dir", str(out), "--examples", "24", "--train-steps", "4", "--samples", "4",
         "--batch-size", "4", "--workers", "1"], capsys)  # fmt: skip
    assert code == 0, err
    assert f"sample grid: {out / 'samples' / 'grid.png'}" in stdout
    for f in (
        "samples/grid.png",
        "samples/trajectory.png",
        "samples/samples.npy",
        "evaluation.json",
    ):
        assert (out / f).is_file(), f
    rep = json.loads((out / "evaluation.json").read_text())
    assert {"swd_patches", "power_spectrum_l1_log10", "orientation_distance"} <= set(rep)
    code, _, err = run_cli(["quickstart", "--out-dir", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
