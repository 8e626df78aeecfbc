"""The shard writer writes files that Zarr reads as its own shards; read_chunk reads any shard."""

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
from orient.storage.chunkio import read_chunk, write_rows


def _array(
    path: Path, shape: tuple[int, ...], chunk_rows: int, shard_rows: int | None, dtype: str
) -> zarr.Array:
    """An array chunked (and sharded) along axis 0 only, as the store's tuple arrays are."""
    rest = tuple(shape[1:])
    return zarr.create_array(
        str(path),
        shape=shape,
        chunks=(chunk_rows, *rest),
        shards=(shard_rows, *rest) if shard_rows else None,
        dtype=dtype,
        compressors=[zc.Crc32cCodec()],
        fill_value=0,
        overwrite=True,
        config={"write_empty_chunks": True},
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _check_round_trip(arr: zarr.Array, start: int, data: np.ndarray) -> None:
    """Zarr decodes the rows (checking every inner chunk's CRC32C and each index's), and
    read_chunk returns every chunk of them."""
    np.testing.assert_array_equal(np.asarray(arr[start : start + len(data)]), data)
    c0 = arr.chunks[0]
    for i in range(start // c0, (start + len(data)) // c0):
        np.testing.assert_array_equal(
            read_chunk(arr, i), data[i * c0 - start : (i + 1) * c0 - start]
        )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dtype=st.sampled_from(["uint16", "float16", "float32", "int32", "uint8"]),
    c0=st.integers(1, 9),
    per_shard=st.integers(1, 4),
    n_shards=st.integers(1, 3),
    first=st.integers(0, 2),
    tail=st.lists(st.integers(1, 7), min_size=0, max_size=3),
    aligned=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_written_shards_read_back_through_zarr(
    tmp_path, dtype, c0, per_shard, n_shards, first, tail, aligned, seed
):
    rows = c0 * per_shard
    shape = ((first + n_shards + 1) * rows, *tail)
    values = (np.random.default_rng(seed).random((n_shards * rows, *tail)) * 200).astype(dtype)
    data = chunkio.page_aligned(values.shape, dtype) if aligned else np.empty_like(values)
    data[...] = values
    path = tmp_path / f"a{seed}.zarr"
    arr = _array(path, shape, c0, rows, dtype)
    crcs = write_rows(arr, first * rows, data)
    _check_round_trip(arr, first * rows, values)
    assert crcs == chunkio.chunk_checksums(values, c0)  # the CRCs the block digest chains
    again = _array(tmp_path / f"b{seed}.zarr", shape, c0, rows, dtype)
    write_rows(again, first * rows, values)  # another buffer (aligned or not), the same files
    for f in _files(path):
        assert (path / f).read_bytes() == (tmp_path / f"b{seed}.zarr" / f).read_bytes(), f
    key = "/".join(["0"] * len(tail))
    written = [f"c/{first + k}/{key}".rstrip("/") for k in range(n_shards)]
    assert _files(path) == sorted(["zarr.json", *written])  # one file per shard, no leftovers


@pytest.mark.parametrize("threads", [2, 3, 8])
@pytest.mark.parametrize("row_bytes", [4096, 100], ids=["page", "100"])
def test_writer_threads_write_the_same_bytes(tmp_path, threads, row_bytes):
    """Runs of a shard's chunks checksummed and written by several threads (fewer chunks than
    threads included) give the files and CRCs of one thread."""
    values = np.random.default_rng(threads).integers(0, 2**16, (2 * 7 * 2, row_bytes // 2))
    data = chunkio.page_aligned(values.shape, "uint16")
    data[...] = values
    shape = (4 * 14, row_bytes // 2)
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    crcs1 = write_rows(_array(one, shape, 2, 14, "uint16"), 14, data)
    arr = _array(many, shape, 2, 14, "uint16")
    assert write_rows(arr, 14, data, threads=threads) == crcs1
    _check_round_trip(arr, 14, data)
    assert _files(one) == _files(many)
    for f in _files(one):
        assert (one / f).read_bytes() == (many / f).read_bytes(), f


@pytest.mark.parametrize("row_bytes", [4096, 100], ids=["page", "100"])
def test_shard_padding_is_checked(tmp_path, row_bytes):
    """Every byte outside the chunks and the index is zero as written; a change to one of them
    is found though every CRC still matches, and Zarr's own shards (no padding) pass."""
    values = np.random.default_rng(5).integers(0, 2**16, (14, row_bytes // 2))
    arr = _array(tmp_path / "a.zarr", (28, row_bytes // 2), 2, 14, "uint16")
    write_rows(arr, 14, values.astype("uint16"))
    assert chunkio.shard_padding_is_clean(arr, 1)
    path = tmp_path / "a.zarr" / "c" / "1" / "0"
    raw = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(raw[-(7 * 16 + 4) : -4]), "<u8").reshape(-1, 2)
    gaps = [
        int(o + n) for (o, n), (nxt, _) in zip(index[:-1], index[1:], strict=True) if o + n < nxt
    ]
    assert gaps  # chunks start on page boundaries
    raw[gaps[3]] = 1
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(arr[14:28], values)  # the data still read back
    assert not chunkio.shard_padding_is_clean(arr, 1)
    assert chunkio.shard_padding_is_clean(arr, 0)  # no file: not judged here
    zarr_written = _array(tmp_path / "z.zarr", (28, row_bytes // 2), 2, 14, "uint16")
    zarr_written[14:28] = values
    assert chunkio.shard_padding_is_clean(zarr_written, 1)


@pytest.mark.parametrize(
    "row_bytes", [4096, 4096 + 100, 100, 3 * 4096 - 2], ids=["page", "page+100", "100", "3pages-2"]
)
def test_page_aligned_buffers(tmp_path, row_bytes):
    """Chunks of whole pages in an aligned buffer go to disk straight from it, any other chunk is
    staged: both give shards that Zarr reads, and the same bytes from either kind of buffer."""
    data = chunkio.page_aligned((6, row_bytes // 2), "uint16")
    data[...] = np.random.default_rng(row_bytes).integers(0, 2**16, data.shape, dtype=np.uint16)
    arr = _array(tmp_path / "a.zarr", (12, row_bytes // 2), 2, 6, "uint16")
    write_rows(arr, 6, data)
    _check_round_trip(arr, 6, data)
    copy = np.empty(data.size + 1, np.uint16)[1:].reshape(data.shape)  # off a page boundary
    copy[...] = data
    other = _array(tmp_path / "b.zarr", (12, row_bytes // 2), 2, 6, "uint16")
    write_rows(other, 6, copy)  # staged whatever the row size
    shard = Path("c") / "1" / "0"
    assert (tmp_path / "a.zarr" / shard).read_bytes() == (tmp_path / "b.zarr" / shard).read_bytes()


def test_buffered_path_when_direct_io_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(chunkio, "_O_DIRECT", 0)
    data = np.arange(4 * 3 * 5, dtype=np.uint16).reshape(4, 3, 5)
    arr = _array(tmp_path / "a.zarr", (8, 3, 5), 2, 4, "uint16")
    write_rows(arr, 4, data)
    _check_round_trip(arr, 4, data)


def test_read_chunk_reads_shards_that_zarr_wrote(tmp_path):
    """Zarr packs a shard's chunks without gaps; the index says where each is."""
    data = np.random.default_rng(1).random((12, 3, 5)).astype(np.float32)
    arr = _array(tmp_path / "z.zarr", (12, 3, 5), 2, 6, "float32")
    arr[...] = data
    for i in range(6):
        np.testing.assert_array_equal(read_chunk(arr, i), data[2 * i : 2 * i + 2])


@pytest.mark.parametrize(
    "start, rows, shard_rows",
    [(2, 4, 4), (0, 2, 4), (0, 4, None)],
    ids=["unaligned start", "partial shard", "not sharded"],
)
def test_anything_but_whole_shards_goes_through_zarr(tmp_path, start, rows, shard_rows):
    arr = _array(tmp_path / "c.zarr", (8, 3), 2, shard_rows, "int32")
    data = np.arange(rows * 3, dtype=np.int32).reshape(rows, 3)
    assert write_rows(arr, start, data) == chunkio.chunk_checksums(data, 2)
    _check_round_trip(arr, start, data)


def test_damaged_shards_are_detected(tmp_path):
    arr = _array(tmp_path / "d.zarr", (8, 6), 2, 4, "float32")
    write_rows(arr, 0, np.ones((8, 6), np.float32))
    shard = tmp_path / "d.zarr" / "c" / "1" / "0"
    good = shard.read_bytes()
    raw = bytearray(good)
    raw[3] ^= 0xFF  # inside the shard's first chunk (rows 4-5)
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        np.asarray(arr[4:6])
    with pytest.raises(ValueError, match="checksum mismatch in chunk 0"):
        read_chunk(arr, 2)
    np.testing.assert_array_equal(read_chunk(arr, 3), np.ones((2, 6)))  # its neighbour is intact
    raw = bytearray(good)
    raw[-6] ^= 0xFF  # inside the shard index
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="index of shard file .* is damaged"):
        read_chunk(arr, 3)
    shard.unlink()
    with pytest.raises(ValueError, match="is missing"):
        read_chunk(arr, 3)
    assert not [p for p in os.listdir(shard.parent) if p.endswith(".partial")]


def test_a_file_system_that_refuses_direct_writes_falls_back(tmp_path, monkeypatch):
    """Some file systems accept O_DIRECT at open and refuse the writes (EINVAL): buffered then."""
    import errno
    import fcntl

    if not chunkio._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    real = os.pwritev

    def refuse_direct(fd, buffers, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & chunkio._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, buffers, offset)

    monkeypatch.setattr(chunkio.os, "pwritev", refuse_direct)
    data = chunkio.page_aligned((4, 1024), "float32")
    data[...] = np.arange(data.size, dtype=np.float32).reshape(data.shape)
    arr = _array(tmp_path / "b.zarr", (4, 1024), 2, 4, "float32")
    write_rows(arr, 0, data)
    _check_round_trip(arr, 0, data)
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
