"""The direct chunk writer writes exactly the files Zarr writes, and reads back through Zarr."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.codecs as zc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orient.storage import chunkio
from orient.storage.chunkio import write_rows


def _array(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str) -> zarr.Array:
    return zarr.create_array(
        str(path),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        compressors=[zc.Crc32cCodec()],
        fill_value=0,
        overwrite=True,
        config={"write_empty_chunks": True},
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dtype=st.sampled_from(["uint16", "float16", "float32", "int32", "uint8"]),
    c0=st.integers(1, 9),
    n_chunks=st.integers(1, 4),
    first=st.integers(0, 2),
    tail=st.lists(st.integers(1, 7), min_size=0, max_size=3),
    seed=st.integers(0, 2**31),
)
def test_direct_writes_equal_zarr_writes_byte_for_byte(
    tmp_path, dtype, c0, n_chunks, first, tail, seed
):
    shape = ((first + n_chunks + 1) * c0, *tail)
    rng = np.random.default_rng(seed)
    data = (rng.random((n_chunks * c0, *tail)) * 200).astype(dtype)
    a = _array(tmp_path / f"a{seed}.zarr", shape, (c0, *tail), dtype)
    b = _array(tmp_path / f"b{seed}.zarr", shape, (c0, *tail), dtype)
    a[first * c0 : (first + n_chunks) * c0] = data
    write_rows(b, first * c0, data)
    fa, fb = _files(tmp_path / f"a{seed}.zarr"), _files(tmp_path / f"b{seed}.zarr")
    assert fa == fb  # same keys, same bytes: payload + CRC32C, no temporary files left
    np.testing.assert_array_equal(np.asarray(b[first * c0 : (first + n_chunks) * c0]), data)


@pytest.mark.parametrize(
    "row_bytes", [4096, 4096 + 100, 100, 3 * 4096 - 2], ids=["page", "page+100", "100", "3pages-2"]
)
def test_page_aligned_buffers_write_the_same_bytes(tmp_path, row_bytes):
    """Chunks of a page-aligned buffer: whole pages straight from it, the rest staged; one chunk
    of 2 rows per file, so later chunks start off a page boundary unless a row is whole pages."""
    data = chunkio.page_aligned((6, row_bytes // 2), "uint16")
    data[...] = np.random.default_rng(row_bytes).integers(0, 2**16, data.shape, dtype=np.uint16)
    assert data.ctypes.data % 4096 == 0
    a = _array(tmp_path / "a.zarr", (8, row_bytes // 2), (2, row_bytes // 2), "uint16")
    b = _array(tmp_path / "b.zarr", (8, row_bytes // 2), (2, row_bytes // 2), "uint16")
    a[2:8] = data
    write_rows(b, 2, data)
    assert _files(tmp_path / "a.zarr") == _files(tmp_path / "b.zarr")


def test_buffered_path_when_direct_io_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(chunkio, "_O_DIRECT", 0)
    data = np.arange(4 * 3 * 5, dtype=np.uint16).reshape(4, 3, 5)
    a = _array(tmp_path / "a.zarr", (8, 3, 5), (2, 3, 5), "uint16")
    b = _array(tmp_path / "b.zarr", (8, 3, 5), (2, 3, 5), "uint16")
    a[2:6] = data
    write_rows(b, 2, data)
    assert _files(tmp_path / "a.zarr") == _files(tmp_path / "b.zarr")


@pytest.mark.parametrize(
    "start, rows, shape_tail",
    [(1, 4, (3,)), (0, 3, (3,)), (0, 4, (2,))],
    ids=["unaligned start", "partial chunk", "chunk narrower than the array"],
)
def test_anything_but_whole_chunks_goes_through_zarr(tmp_path, start, rows, shape_tail):
    arr = zarr.create_array(
        str(tmp_path / "c.zarr"),
        shape=(8, 3),
        chunks=(2, shape_tail[0]),
        dtype="int32",
        compressors=[zc.Crc32cCodec()],
        fill_value=0,
    )
    data = np.arange(rows * 3, dtype=np.int32).reshape(rows, 3)
    write_rows(arr, start, data)
    np.testing.assert_array_equal(np.asarray(arr[start : start + rows]), data)


def test_a_corrupted_direct_chunk_fails_zarrs_checksum(tmp_path):
    arr = _array(tmp_path / "d.zarr", (4, 6), (2, 6), "float32")
    write_rows(arr, 0, np.ones((4, 6), np.float32))
    chunk = tmp_path / "d.zarr" / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[3] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        np.asarray(arr[2:4])
    assert not [p for p in os.listdir(chunk.parent) if p.endswith(".partial")]


def test_a_file_system_that_refuses_direct_writes_falls_back(tmp_path, monkeypatch):
    """Some file systems accept O_DIRECT at open and refuse the writes (EINVAL): buffered then."""
    import errno
    import fcntl

    if not chunkio._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    real_write = os.write

    def refuse_direct(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & chunkio._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(chunkio.os, "write", refuse_direct)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    a = _array(tmp_path / "a.zarr", (4, 6), (2, 6), "float32")
    b = _array(tmp_path / "b.zarr", (4, 6), (2, 6), "float32")
    a[...] = data
    write_rows(b, 0, data)
    assert _files(tmp_path / "a.zarr") == _files(tmp_path / "b.zarr")
    assert chunkio._direct[tmp_path / "b.zarr"] is False


def test_checksum_is_crc32c_and_chains() -> None:
    """Known CRC32C check value (RFC 3720: "123456789" -> 0xE3069283) and incremental chaining."""
    assert chunkio.checksum(b"123456789") == 0xE3069283
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8)
    assert chunkio.checksum(data[3000:], chunkio.checksum(data[:3000])) == chunkio.checksum(data)


def _longest_pause_during_checksum(big: np.ndarray) -> tuple[float, float]:
    """(longest pause of a Python loop in this thread while another checksums, the call alone)."""
    t0 = time.perf_counter()
    chunkio.checksum(big)
    alone = time.perf_counter() - t0
    t = threading.Thread(target=chunkio.checksum, args=(big,))
    last = time.perf_counter()
    t.start()
    longest = 0.0
    while t.is_alive():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    t.join()
    return longest, alone


def test_checksum_releases_the_gil() -> None:
    """While one thread checksums a large buffer, another keeps running Python code.

    Writer and reader threads checksum beside the simulating or training thread; a checksum that
    held the GIL stalled the simulation (a 0.8 s block took ~100 s, docs/benchmarks.md). Holding
    the GIL, the loop's longest pause is the whole call, in every attempt; releasing it, the pause
    is a small fraction (up to three attempts absorb a stall of this noisy machine).
    """
    big = np.ones(512 * 2**20, dtype=np.uint8)
    tries = []
    for _ in range(3):
        longest, alone = _longest_pause_during_checksum(big)
        tries.append(f"{longest:.3f} of {alone:.3f} s")
        if longest < alone / 2:
            return
    pytest.fail(f"the main thread paused for most of the checksum: {', '.join(tries)}")
