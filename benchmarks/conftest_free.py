"""Byte-for-byte comparison of two stores' arrays (as the tests do), for the benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr


def same_bytes(a: Path, b: Path) -> bool:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")

    def arrays(g: zarr.Group, prefix: str = "") -> dict[str, np.ndarray]:
        out = {prefix + n: np.asarray(x[...]) for n, x in g.arrays()}
        for n, sub in g.groups():
            out.update(arrays(sub, prefix + n + "/"))
        return out

    A, B = arrays(ga), arrays(gb)
    return A.keys() == B.keys() and all(A[k].tobytes() == B[k].tobytes() for k in A)
