"""Shared helpers: run the real CLI entry point in-process, and small store fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

SMALL = [
    "--num-examples", "12", "--image-size", "16", "--steps", "10",
    "--schedule", "two_D=1e-4:0.1,K=5e-5:0.05", "--samples", "2", "--max-batch", "4",
]  # fmt: skip


# the PrecomputeConfig of `small_store` (and of tests that must reproduce its bytes)
SMALL_CONFIG = dict(
    data_options={"n": 12, "size": 16},
    steps=10,
    schedule="two_D=1e-4:0.1,K=5e-5:0.05",
    M=2,
    max_batch=4,
)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``orient ARGS`` through the console-script entry point; returns (exit code, out, err)."""
    from orient.cli import main

    old = sys.argv
    sys.argv = ["orient", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def store_arrays(url: str | Path) -> dict[str, np.ndarray]:
    """Every array of a store, by path (for byte-for-byte comparisons)."""
    root = zarr.open_group(str(url), mode="r")
    out: dict[str, np.ndarray] = {}

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, arr in g.arrays():
            out[prefix + name] = np.asarray(arr[...])
        for name, sub in g.groups():
            walk(sub, prefix + name + "/")

    walk(root, "")
    return out


def assert_same_bytes(a: str | Path, b: str | Path) -> None:
    A, B = store_arrays(a), store_arrays(b)
    assert sorted(A) == sorted(B)
    for k in A:
        assert A[k].dtype == B[k].dtype and A[k].shape == B[k].shape, k
        assert A[k].tobytes() == B[k].tobytes(), f"array {k} differs"


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete full-mode Kuramoto store on 16x16 synthetic fingerprints, written once (2 workers)."""
    from orient.pipeline.precompute import PrecomputeConfig, run_precompute

    out = tmp_path_factory.mktemp("stores") / "small.zarr"
    run_precompute(PrecomputeConfig(out=str(out), workers=2, **SMALL_CONFIG), log=lambda _: None)
    return out
