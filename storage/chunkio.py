"""Whole-chunk writes to local stores: exactly the bytes Zarr writes, at a fraction of the cost.

A chunk of an array whose codecs are ``[bytes(little), crc32c]`` is, on disk, the chunk's C-order
little-endian bytes followed by the CRC32C of those bytes (4 bytes, little-endian). For rows that
cover whole chunks of such an array in a local store, :func:`write_rows` writes those bytes itself:
through a temporary file renamed into place (as Zarr's LocalStore does, so no reader ever sees half
a chunk), and with ``O_DIRECT`` where the file system allows it, straight from page-aligned block
buffers. On this project's reference machine the kernel's page-cache path cost ~3 ns of CPU per byte
written (more than the chain simulation itself); this path costs ~0.1 s of CPU per 144 MB block
(125 chunk files): about 12 ms of checksums, the rest per-file system calls and Python. That is
what the writes cost when every core simulates (docs/benchmarks.md). Everything else (remote stores,
other codecs, rows that do not cover whole chunks) goes through Zarr. A test checks that both paths
give byte-identical chunk files.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import sys
import threading
import uuid
from pathlib import Path

import crc32c
import numpy as np
import zarr
import zarr.codecs as zc
from zarr.storage import LocalStore

_ALIGN = 4096  # O_DIRECT needs block-aligned buffers, offsets and lengths; a page is always enough
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_direct: dict[Path, bool] = {}  # array folder -> does its file system accept O_DIRECT?
_staging = threading.local()


def checksum(data: np.ndarray | memoryview | bytes, crc: int = 0) -> int:
    """CRC32C of ``data`` continuing from ``crc``; releases the GIL for large buffers, so writer and
    reader threads checksum beside the simulating or training thread (docs/benchmarks.md)."""
    return crc32c.crc32c(data, crc)


def _local_folder(arr: zarr.Array) -> Path | None:
    """The array's folder if its chunks are plain little-endian bytes + CRC32C in a local store."""
    store = arr.store_path.store
    if not isinstance(store, LocalStore) or sys.byteorder != "little":
        return None
    codecs = tuple(arr.metadata.codecs) if hasattr(arr.metadata, "codecs") else ()
    if len(codecs) != 2 or not isinstance(codecs[1], zc.Crc32cCodec):
        return None
    if not isinstance(codecs[0], zc.BytesCodec) or codecs[0].endian not in (None, zc.Endian.little):
        return None
    return Path(store.root) / arr.path


def page_aligned(shape: tuple[int, ...], dtype: str | type) -> np.ndarray:
    """A zeroed array in its own anonymous memory mapping, so it starts on a page boundary:
    whole pages of its chunks are written with direct I/O straight from it, without a copy."""
    dt, count = np.dtype(dtype), math.prod(shape)
    return np.frombuffer(mmap.mmap(-1, max(1, count * dt.itemsize)), dt, count).reshape(shape)


def _aligned_buffer(nbytes: int) -> memoryview:
    """A page-aligned scratch buffer of at least ``nbytes`` (one per thread, grown on demand)."""
    buf = getattr(_staging, "buf", None)
    if buf is None or len(buf) < nbytes:
        buf = mmap.mmap(-1, -(-nbytes // _ALIGN) * _ALIGN)
        _staging.buf = buf
    return memoryview(buf)


def _write_all(fd: int, view: memoryview, name: Path) -> None:
    """os.write until done; a short write (a nearly full disk) continues where it stopped."""
    while len(view):
        k = os.write(fd, view)
        if k <= 0:
            raise OSError(errno.ENOSPC, f"no space left on device writing {name}")
        view = view[k:]


def _write_file(path: Path, payload: np.ndarray, crc: bytes, direct: bool) -> None:
    """Write ``payload + crc`` to ``path`` via a temporary file in the same folder.

    Direct I/O: the whole pages of a page-aligned payload go to disk straight from it; the rest
    (the last partial page and the CRC, or everything when the payload is not aligned) goes through
    an aligned staging buffer, padded to a page, and the file is truncated to its true size.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    raw = payload.reshape(-1).view(np.uint8)
    n = raw.nbytes + len(crc)
    try:
        if direct:
            body = raw.nbytes // _ALIGN * _ALIGN if raw.ctypes.data % _ALIGN == 0 else 0
            rest = raw[body:]
            padded = -(-(rest.nbytes + len(crc)) // _ALIGN) * _ALIGN
            stage = _aligned_buffer(padded)
            np.copyto(np.frombuffer(stage, np.uint8, rest.nbytes), rest)
            stage[rest.nbytes : rest.nbytes + len(crc)] = crc
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT, 0o644)
            try:
                if body:
                    _write_all(fd, memoryview(raw[:body]), tmp)
                _write_all(fd, stage[:padded], tmp)
                os.ftruncate(fd, n)
            finally:
                os.close(fd)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, memoryview(raw), tmp)
                _write_all(fd, memoryview(crc), tmp)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def write_rows(arr: zarr.Array, start: int, data: np.ndarray) -> None:
    """``arr[start:start + len(data)] = data``, as whole chunk files where possible."""
    folder = _local_folder(arr)
    c0 = arr.chunks[0]
    whole = (
        folder is not None
        and start % c0 == 0
        and len(data) % c0 == 0
        and start + len(data) <= arr.shape[0]
        and tuple(data.shape[1:]) == tuple(arr.shape[1:]) == tuple(arr.chunks[1:])
        and np.dtype(data.dtype) == arr.dtype
    )
    if not whole:
        arr[start : start + len(data)] = data
        return
    data = np.ascontiguousarray(data)
    direct = _direct_ok(folder)
    for k in range(len(data) // c0):
        chunk = data[k * c0 : (k + 1) * c0]
        key = arr.metadata.encode_chunk_key((start // c0 + k,) + (0,) * (data.ndim - 1))
        crc = checksum(chunk.reshape(-1).view(np.uint8)).to_bytes(4, "little")
        try:
            _write_file(folder / key, chunk, crc, direct)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            _direct[folder] = direct = False  # opened with O_DIRECT but refused its writes
            _write_file(folder / key, chunk, crc, direct)


def read_chunk(arr: zarr.Array, index: int) -> np.ndarray:
    """Rows of chunk ``index`` (along axis 0) of ``arr``, checksum verified.

    Local ``[bytes, crc32c]`` arrays are read straight from the chunk file into one buffer and
    viewed in place (one copy, one CRC pass); anything else is read through Zarr. A missing chunk
    file is an error here, not the fill value: every chunk of a tuple array is written.
    """
    folder = _local_folder(arr)
    c0 = arr.chunks[0]
    if folder is None or (index + 1) * c0 > arr.shape[0] or arr.shape[1:] != arr.chunks[1:]:
        return np.asarray(arr[index * c0 : (index + 1) * c0])
    path = folder / arr.metadata.encode_chunk_key((index,) + (0,) * (arr.ndim - 1))
    n = c0 * int(np.prod(arr.chunks[1:], dtype=np.int64)) * arr.dtype.itemsize
    buf = np.empty(n + 4, np.uint8)
    try:
        with open(path, "rb", buffering=0) as f:
            got = f.readinto(memoryview(buf))
            extra = f.read(1)
    except FileNotFoundError:
        raise ValueError(f"chunk file {path} is missing (run `orient verify --repair`)") from None
    if got != n + 4 or extra:
        raise ValueError(f"chunk file {path} has the wrong size (run `orient verify --repair`)")
    crc = checksum(buf[:n]).to_bytes(4, "little")
    if crc != buf[n:].tobytes():
        raise ValueError(f"checksum mismatch in chunk file {path} (run `orient verify --repair`)")
    return buf[:n].view(arr.dtype).reshape(arr.chunks)
