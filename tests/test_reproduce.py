"""``orient reproduce``: every --quick experiment end to end (structure, not numbers), and the
pure measurements behind the tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from orient.reproduce import EXPERIMENTS
from orient.reproduce.measures import (
    edge_mask,
    edge_statistics,
    empirical_snr,
    first_below,
    histogram_kl,
    normal_bin_probs,
    von_mises_bin_probs,
    von_mises_kl,
)
from orient.reproduce.tables import DASH, Table, format_cell

from conftest import run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def inception_flag() -> list[str]:
    from orient.evaluation import inception_available

    return [] if inception_available() else ["--no-inception"]


# experiment -> (extra CLI args, expected table columns, expected number of rows per table)
QUICK = {
    "gou-mog": ([], ["metric", "paper iso", "paper GOU", "ours iso", "ours GOU"], [10]),
    "gou-snp": ([], ["metric", "paper iso", "paper GOU", "ours iso", "ours GOU"], [7, 7]),
    "kuramoto-forward": ([], ["chain", "T", "r(T)", "kappa fitted", "kappa eq.7 (r(T))"], [4]),
    "kuramoto-vs-sgm": (["--no-inception"], ["data set", "T", "model", "paper FID", "FID"], [5]),
    "spde-forward": ([], ["data set", "instance", "t/T", "edges kept", "elsewhere kept"], [9]),
    "spde-generate": (None, ["data set", "T", "model", "paper FID (CIFAR-10)", "FID"], [4]),
}
# cells that may legitimately be empty in quick mode
OPTIONAL = {"paper iso", "paper GOU", "paper FID", "paper FID (CIFAR-10)", "T", "r(T)",
            "kappa fitted", "kappa eq.7 (r(T))", "kappa prior (r=0.5)", "KL(vM fit||eq.7)",
            "KL(x_T||eq.7)", "t: SNR<=0.01", "t: KL(x_t||x_T)<=0.01", "FID", "KID",
            "ours iso/GOU"}  # fmt: skip


def test_every_experiment_has_a_quick_test():
    assert set(QUICK) == set(EXPERIMENTS)


@pytest.mark.parametrize("name", list(QUICK))
def test_quick_experiment_runs_end_to_end(name, tmp_path, capsys):
    extra, columns, rows = QUICK[name]
    extra = inception_flag() if extra is None else extra
    out = tmp_path / name
    code, stdout, err = run_cli(
        ["reproduce", name, "--quick", "--workers", "1", "--out", str(out), *extra], capsys
    )
    assert code == 0, err
    rec = json.loads((out / "results.json").read_text())
    assert rec["experiment"] == name and rec["mode"] == "quick" and rec["seed"] == 0
    assert rec["command"].startswith(f"orient reproduce {name} --quick")
    assert [len(t["rows"]) for t in rec["tables"]] == rows
    for t in rec["tables"]:
        assert t["columns"][: len(columns)] == columns
        assert t["title"] in stdout  # printed as text
        for row in t["rows"]:
            assert len(row) == len(t["columns"])
            for col, cell in zip(t["columns"], row, strict=True):
                if isinstance(cell, float):
                    assert math.isfinite(cell), (col, row)
                elif cell is None:
                    assert col in OPTIONAL or row[2] == "data (train split)", (col, row)
    assert rec["figures"], "no figures written"
    for fname in rec["figures"]:
        f = out / fname
        assert f.name.startswith(f"{name}_") and f.read_bytes()[:8] == PNG
        assert f"wrote {f}" in stdout
    md = (out / "results.md").read_text()
    assert md.startswith(f"# `{name}`")
    assert any(f"| {c} |" in md for c in ("metric", "data set", "chain"))
    assert not list((out / "work").glob("*.zarr")), "stores are deleted unless --keep-stores"


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(["reproduce", "spde-forward", "--quick", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err
    code, _, err = run_cli(
        ["reproduce", "spde-forward", "--quick", "--out", str(out), "--overwrite"], capsys
    )
    assert code == 2 and "never replaced" in err
    assert (out / "keep.txt").read_text() == "mine"


def test_bad_threads_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(
        ["reproduce", "gou-mog", "--quick", "--threads", "0", "--out", str(tmp_path / "y")], capsys
    )
    assert code == 2 and "--threads" in err and err.count("\n") == 1


# -- pure measurements ---------------------------------------------------------------------------
def test_snr_is_zero_for_pure_noise_and_matches_a_known_ratio():
    g = torch.Generator().manual_seed(0)
    R, N, F = 4, 400, 50
    noise = torch.randn(R * N, F, generator=g)
    assert empirical_snr(noise, R) < 0.01
    signal = 2.0 * torch.randn(1, N, F, generator=g).expand(R, N, F).reshape(R * N, F)
    assert empirical_snr(signal + noise, R) == pytest.approx(4.0, rel=0.1)
    with pytest.raises(ValueError):
        empirical_snr(noise, 3)


def test_first_below():
    assert first_below([3.0, 2.0, 0.5, 0.1], 0.5) == 3
    assert first_below([3.0, 2.0], 0.5) is None


@pytest.mark.parametrize("k1,k2,d", [(1.0, 1.0, 0.0), (0.5, 2.0, 0.3), (3.0, 1.2, -1.0)])
def test_von_mises_kl_matches_numerical_integration(k1, k2, d):
    edges = np.linspace(-math.pi, math.pi, 4001)
    p = von_mises_bin_probs(edges, 0.0, k1, fine=4)
    q = von_mises_bin_probs(edges, d, k2, fine=4)
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    assert von_mises_kl(0.0, k1, d, k2) == pytest.approx(float(np.sum(p * np.log(p / q))), abs=1e-5)


def test_histogram_kl_is_zero_for_identical_and_positive_otherwise():
    counts = np.array([10, 20, 30, 40])
    assert histogram_kl(counts, counts / counts.sum()) == pytest.approx(0.0, abs=1e-9)
    assert histogram_kl(counts, np.full(4, 0.25)) > 0
    edges = np.linspace(-3, 3, 7)
    assert normal_bin_probs(edges).sum() == pytest.approx(1.0)


def test_edge_statistics_keep_everything_for_the_data_and_nothing_for_zeros():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 12, 12, generator=g)
    mask = edge_mask(x0, 0.1)
    assert mask.shape == (3, 12, 12) and int(mask.sum()) >= 3 * 14
    x = x0.repeat(2, 1, 1, 1) + 0.01 * torch.randn(6, 1, 12, 12, generator=g)
    s = edge_statistics(x, x0, mask, 2)
    assert s["edge_kept"] == pytest.approx(1.0, abs=0.02)
    assert s["flat_kept"] == pytest.approx(1.0, abs=0.02)
    assert s["edge_snr"] > 100
    s = edge_statistics(0.5 * x, x0, mask, 2)
    assert s["edge_kept"] == pytest.approx(0.5, abs=0.02)


def test_tables_format_as_text_and_markdown():
    t = Table("demo", ["name", "value", "paper"])
    t.add("a", 0.123456, None)
    t.add("b", 12345678.0, 3)
    with pytest.raises(ValueError):
        t.add("c", 1.0)
    text = t.text()
    assert text.splitlines()[0] == "demo" and DASH in text and "0.1235" in text
    assert "| name | value | paper |" in t.markdown()
    assert format_cell(float("nan")) == "nan" and format_cell(0.0001234) == "0.000123"
    assert t.to_json()["rows"][0] == ["a", 0.123456, None]


def test_figures_are_written_without_a_display(tmp_path):
    from orient.reproduce import figures

    fig = figures.image_rows([("row", np.zeros((3, 1, 8, 8)))], ["a", "b", "c"])
    fig.savefig(Path(tmp_path) / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG
