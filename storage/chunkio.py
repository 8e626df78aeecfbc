"""Whole-shard writes and chunk reads for local stores: files Zarr reads as its own.

Tuple arrays hold one Zarr shard per block (codec ``sharding_indexed``: inner chunks of
``chunk_tuples`` rows encoded ``[bytes(little), crc32c]``, the shard index ``[bytes, crc32c]`` at the
end of the file). For rows that cover whole shards of such an array in a local store,
:func:`write_rows` writes each shard file itself, through a temporary file renamed into place (so no
reader ever sees half a shard): every inner chunk starts on a page boundary (the index gives each
chunk's offset and size, so gaps are allowed), its bytes go to disk with ``O_DIRECT`` straight from
the page-aligned block buffer, followed by a page that starts with its CRC32C; the index comes last.
One file and one rename per array and block, and one ``pwritev`` when the chunks are whole pages
(other chunks are staged one at a time). The page-cache path cost ~3 ns of CPU per byte written on
this project's machine; beside two simulating workers, one file per chunk cost +24-28 % and one
file per shard +11 %, against +3-8 % for raw writes of the same bytes (docs/benchmarks.md).
Everything else (remote stores, other codecs, rows that do not cover whole shards) goes through
Zarr. Tests check that Zarr reads these shards.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import crc32c
import numpy as np
import zarr
import zarr.codecs as zc
from zarr.storage import LocalStore

PAGE = 4096  # O_DIRECT needs block-aligned buffers, offsets and lengths; a page is always enough
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_IOV_MAX = 512  # buffers per pwritev call (Linux allows 1024)
_direct: dict[Path, bool] = {}  # array folder -> does its file system accept O_DIRECT?
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def checksum(data: np.ndarray | memoryview | bytes, crc: int = 0) -> int:
    """CRC32C of ``data`` continuing from ``crc``; releases the GIL for large buffers, so writer and
    reader threads checksum beside the simulating or training thread (docs/benchmarks.md)."""
    return crc32c.crc32c(data, crc)


@dataclass(frozen=True)
class _Shards:
    """A local array of shards along axis 0 whose inner chunks are little-endian bytes + CRC32C."""

    folder: Path
    shard_rows: int
    chunk_rows: int

    @property
    def per_shard(self) -> int:
        return self.shard_rows // self.chunk_rows


def _bytes_and_crc(codecs: tuple) -> bool:
    """Codecs ``[bytes(little), crc32c]``: the encoded chunk is its bytes, then their CRC32C."""
    c = tuple(codecs)
    return (
        len(c) == 2
        and isinstance(c[0], zc.BytesCodec)
        and c[0].endian in (None, zc.Endian.little)
        and isinstance(c[1], zc.Crc32cCodec)
    )


def _shards(arr: zarr.Array) -> _Shards | None:
    """The array's shard layout, if :func:`write_rows` and :func:`read_chunk` handle its files."""
    store = arr.store_path.store
    if not isinstance(store, LocalStore) or sys.byteorder != "little":
        return None
    codecs = tuple(getattr(arr.metadata, "codecs", ()))
    if len(codecs) != 1 or not isinstance(codecs[0], zc.ShardingCodec):
        return None
    sc = codecs[0]
    shard, chunk = tuple(arr.shards), tuple(arr.chunks)
    at_end = getattr(sc.index_location, "value", sc.index_location) == "end"
    if not (_bytes_and_crc(sc.codecs) and _bytes_and_crc(sc.index_codecs) and at_end):
        return None
    if shard[1:] != tuple(arr.shape[1:]) or chunk[1:] != shard[1:]:
        return None  # shards and chunks must split axis 0 only
    return _Shards(Path(store.root) / arr.path, shard[0], chunk[0])


def page_aligned(shape: tuple[int, ...], dtype: str | type) -> np.ndarray:
    """A zeroed array in its own anonymous memory mapping, so it starts on a page boundary:
    whole pages of its chunks are written with direct I/O straight from it, without a copy."""
    dt, count = np.dtype(dtype), math.prod(shape)
    return np.frombuffer(mmap.mmap(-1, max(1, count * dt.itemsize)), dt, count).reshape(shape)


def _pages(nbytes: int) -> int:
    return -(-nbytes // PAGE) * PAGE


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` writer threads (one per size asked for, kept)."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="orient-io")
        return _POOLS[threads]


def _write_chunks(
    fd: int, raw: np.ndarray, n: int, name: Path, threads: int = 1
) -> tuple[int, list[int]]:
    """Write the ``n`` inner chunks of the shard ``raw`` and its index; returns (size, CRCs).

    Chunk i occupies ``[offset_i, offset_i + len + 4)``: its bytes, then their CRC32C; offsets are
    page-aligned. Chunks of whole pages in an aligned buffer go out straight from it, each
    followed by a page that starts with its CRC, in one ``pwritev`` per run of chunks (``threads``
    runs, checksummed and written side by side), then the index. Any other chunk is copied with
    its CRC into one reused page-padded slot and written on its own (so staging holds one chunk,
    never a shard). Padding bytes are zeros, so files are reproducible whatever ``threads`` is.
    """
    step = raw.nbytes // n
    in_place = step % PAGE == 0 and raw.ctypes.data % PAGE == 0
    slot = _slot(step, in_place)
    pages = page_aligned((n * PAGE if in_place else slot,), "u1")

    def run(lo: int, hi: int) -> list[int]:
        """Checksum chunks lo..hi-1 and write them, each with its CRC page, in one pwritev."""
        crcs, buffers = [], []
        for i in range(lo, hi):
            data = raw[i * step : (i + 1) * step]
            crcs.append(checksum(data))
            pages[i * PAGE : i * PAGE + 4] = np.frombuffer(crcs[-1].to_bytes(4, "little"), "u1")
            buffers += [data, pages[i * PAGE : (i + 1) * PAGE]]
        _pwritev_all(fd, buffers, lo * slot, name)
        return crcs

    crcs: list[int] = []
    if in_place:
        k = max(1, min(threads, n))
        cuts = [n * j // k for j in range(k + 1)]
        if k == 1:
            crcs = run(0, n)
        else:
            for part in _pool(threads).map(run, cuts[:-1], cuts[1:]):
                crcs += part
    for i in range(0 if in_place else n):
        data = raw[i * step : (i + 1) * step]
        crcs.append(checksum(data))
        pages[:step] = data
        pages[step : step + 4] = np.frombuffer(crcs[-1].to_bytes(4, "little"), np.uint8)
        _pwritev_all(fd, [pages], i * slot, name)
    index = np.zeros((n, 2), "<u8")
    index[:, 0] = np.arange(n, dtype=np.uint64) * slot
    index[:, 1] = step + 4
    ib = index.tobytes()
    ib += checksum(ib).to_bytes(4, "little")
    tail = page_aligned((_pages(len(ib)),), "u1")
    tail[: len(ib)] = np.frombuffer(ib, np.uint8)
    _pwritev_all(fd, [tail], n * slot, name)
    return n * slot + len(ib), crcs


def _slot(step: int, in_place: bool) -> int:
    """File bytes of an inner chunk of ``step`` bytes and its CRC, to the next chunk's offset."""
    return step + PAGE if in_place else _pages(step + 4)


def whole_page_rows(row_bytes: int) -> int:
    """The fewest rows of ``row_bytes`` bytes that fill whole pages: chunks of a multiple of it
    are written with direct I/O straight from a block buffer (:func:`page_aligned`)."""
    return PAGE // math.gcd(PAGE, row_bytes)


def shard_file_bytes(rows: int, chunk_rows: int, row_bytes: int) -> int:
    """Size of a shard file of ``rows`` rows in chunks of ``chunk_rows`` as :func:`write_rows`
    writes it from a block buffer (an upper bound for Zarr's own, unpadded shards)."""
    n, step = rows // chunk_rows, chunk_rows * row_bytes
    return n * _slot(step, step % PAGE == 0) + 16 * n + 4


def _pwritev_all(fd: int, buffers: list[np.ndarray], offset: int, name: Path) -> None:
    """Write ``buffers`` back to back from ``offset``; a short write (a nearly full disk)
    continues where it stopped, and a write that makes no progress is ENOSPC."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        k = os.pwritev(fd, views[:_IOV_MAX], offset)
        if k <= 0:
            raise OSError(errno.ENOSPC, f"no space left on device writing {name}")
        offset += k
        while views and k >= len(views[0]):
            k -= len(views[0])
            views.pop(0)
        if k:
            views[0] = views[0][k:]


def _write_shard(
    path: Path, shard: np.ndarray, n_chunks: int, direct: bool, threads: int = 1
) -> list[int]:
    """Write one shard file (``n_chunks`` inner chunks of ``shard``) via a temporary file;
    returns the chunks' CRC32Cs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (_O_DIRECT if direct else 0)
    try:
        fd = os.open(tmp, flags, 0o644)
        try:
            raw = shard.reshape(-1).view(np.uint8)
            size, crcs = _write_chunks(fd, raw, n_chunks, tmp, threads)
            os.ftruncate(fd, size)  # the index page's padding
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return crcs


def _direct_ok(folder: Path) -> bool:
    if not _O_DIRECT:
        return False
    if folder not in _direct:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".direct-probe-{uuid.uuid4().hex}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT, 0o644))
            _direct[folder] = True
        except OSError:  # EINVAL on tmpfs and some network file systems
            _direct[folder] = False
        finally:
            probe.unlink(missing_ok=True)
    return _direct[folder]


def chunk_checksums(data: np.ndarray, chunk_rows: int) -> list[int]:
    """CRC32C of every ``chunk_rows``-row chunk of ``data`` (C order), in row order."""
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    n = len(data) // chunk_rows
    step = raw.nbytes // max(1, n)
    return [checksum(raw[i * step : (i + 1) * step]) for i in range(n)]


def write_rows(arr: zarr.Array, start: int, data: np.ndarray, threads: int = 1) -> list[int]:
    """``arr[start:start + len(data)] = data``, as whole shard files where possible; returns the
    CRC32C of every chunk written (rows that are whole chunks of the array), in row order.
    ``threads`` > 1 checksums and writes runs of a shard's chunks side by side (the same bytes)."""
    spec = _shards(arr)
    rows = spec.shard_rows if spec else 0
    whole = (
        spec is not None
        and start % rows == 0
        and len(data) % rows == 0
        and start + len(data) <= arr.shape[0]
        and tuple(data.shape[1:]) == tuple(arr.shape[1:])
        and np.dtype(data.dtype) == arr.dtype
    )
    if not whole:
        arr[start : start + len(data)] = data
        c0 = arr.chunks[0]
        aligned = start % c0 == 0 and len(data) % c0 == 0
        return chunk_checksums(np.asarray(data, arr.dtype), c0) if aligned else []
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    direct = _direct_ok(spec.folder)
    crcs: list[int] = []
    for k in range(len(data) // rows):
        shard = data[k * rows : (k + 1) * rows]
        key = arr.metadata.encode_chunk_key((start // rows + k,) + (0,) * (data.ndim - 1))
        try:
            crcs += _write_shard(spec.folder / key, shard, spec.per_shard, direct, threads)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            _direct[spec.folder] = direct = False  # opened with O_DIRECT but refused its writes
            crcs += _write_shard(spec.folder / key, shard, spec.per_shard, direct, threads)
    return crcs


def _shard_index(fd: int, spec: _Shards) -> tuple[np.ndarray | None, int]:
    """A shard file's index, (per_shard, 2) of (offset, nbytes) after its CRC32C is checked, and
    where the index starts; None for an index that is missing or damaged."""
    index_bytes = spec.per_shard * 16 + 4
    size = os.fstat(fd).st_size
    tail = os.pread(fd, index_bytes, size - index_bytes) if size >= index_bytes else b""
    if len(tail) != index_bytes or checksum(tail[:-4]).to_bytes(4, "little") != tail[-4:]:
        return None, size
    return np.frombuffer(tail, "<u8", 2 * spec.per_shard).reshape(-1, 2), size - index_bytes


def read_chunk(arr: zarr.Array, index: int) -> np.ndarray:
    """Rows of inner chunk ``index`` (along axis 0) of ``arr``, checksum verified.

    In a local store the chunk is read straight from its shard file (the shard's index, checked
    against its CRC32C, gives the chunk's place) into one buffer and viewed in place: one copy,
    one CRC pass. Anything else is read through Zarr. A missing shard or chunk is an error here,
    not the fill value: every chunk of a tuple array is written.
    """
    spec = _shards(arr)
    c0 = arr.chunks[0]
    if spec is None or (index + 1) * c0 > arr.shape[0]:
        return np.asarray(arr[index * c0 : (index + 1) * c0])
    shard, inner = divmod(index, spec.per_shard)
    path = spec.folder / arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))
    n = c0 * math.prod(arr.chunks[1:]) * arr.dtype.itemsize
    repair = "(run `orient verify --repair`)"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ValueError(f"shard file {path} is missing {repair}") from None
    try:
        index, index_at = _shard_index(fd, spec)
        if index is None:
            raise ValueError(f"the index of shard file {path} is damaged {repair}")
        offset, nbytes = index[inner]
        if nbytes != n + 4 or offset + nbytes > index_at:
            raise ValueError(f"chunk {inner} of shard file {path} is missing {repair}")
        buf = np.empty(n + 4, np.uint8)
        got = os.preadv(fd, [memoryview(buf)], int(offset))
    finally:
        os.close(fd)
    if got != n + 4:
        raise ValueError(f"shard file {path} is truncated {repair}")
    if checksum(buf[:n]).to_bytes(4, "little") != buf[n:].tobytes():
        raise ValueError(f"checksum mismatch in chunk {inner} of shard file {path} {repair}")
    return buf[:n].view(arr.dtype).reshape(arr.chunks)


def shard_padding_is_clean(arr: zarr.Array, shard: int) -> bool:
    """Is every byte of shard file ``shard`` outside its chunks and index zero, as written?

    The chunks' CRCs and the index's cover everything else; this covers the page padding between
    chunks (and anything after the index), so a shard that verifies is the file that was written.
    A missing file, or an index that does not read, is not judged here (reading the chunks is).
    True for arrays whose files this module does not handle.
    """
    spec = _shards(arr)
    if spec is None:
        return True
    path = spec.folder / arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        index, index_at = _shard_index(fd, spec)
        if index is None:
            return True
        used = sorted((int(o), int(o + n)) for o, n in index if o != np.iinfo(np.uint64).max)
        end, gaps = 0, []
        for start, stop in [*used, (index_at, os.fstat(fd).st_size)]:
            if start > end:
                gaps.append((end, start))
            end = max(end, stop)
        return all(
            os.pread(fd, stop - start, start).count(0) == stop - start for start, stop in gaps
        )
    finally:
        os.close(fd)
