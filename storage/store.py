"""The tuple store: a Zarr 3 group on disk (or any fsspec URL) holding training tuples.

Layout (docs/store-format.md is the reference):

    STORE/                      root attrs["orient"]: format version, process config + hash, data set
                                identity, split, seed, M, mode, plan, software versions
      process/<buffer>          fitted process arrays (GOU's eigenbasis, anchors), float64
      source/x0                 the training split's data (data space, float32), one row per chain
      source/index, split/test  original data set indices of the train and test splits
      split/x0                  the held-out split's data (for evaluation), float32
      full/                     full mode: every (k-th) step of every chain
      epochs/00000/ ...         per-epoch mode: one group per epoch, renamed into place when done
        x_prev (N, *S), x_t (N, M, *S), score (N, M, *S), t (N,), src (N,), done (n_blocks,)

Every chunk carries a CRC32C checksum; ``done[b] = 1`` is written after all of block b's data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
import zarr.codecs as zc

from orient.dynamics import Process, process_from_config

from .chunkio import checksum, chunk_checksums, write_rows
from .codecs import ENCODINGS

FORMAT_VERSION = 3  # 2: block digests are CRC32C (were CRC-32); 3: one shard per block and array
CREATING = "orient_creating"  # root attribute of a store whose creation has not finished
TUPLE_ARRAYS = ("x_prev", "x_t", "score", "t", "src")
TRAINING_ARRAYS = ("x_t", "score", "t")


def damage(exc: Exception) -> str:
    """What a read error says about a store's bytes, in a few words."""
    if isinstance(exc, json.JSONDecodeError):
        return f"unreadable metadata: {exc.msg}"
    if "checksum" in str(exc).lower():
        return "checksum mismatch"
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


class StoreError(ValueError):
    """A store that is missing, incomplete, corrupted or incompatible (one-line message)."""


def software_versions() -> dict[str, str]:
    return {
        "orient": version("orient"),
        "torch": torch.__version__,
        "zarr": zarr.__version__,
        "numpy": np.__version__,
    }


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def epoch_name(epoch: int) -> str:
    return f"epochs/{epoch:05d}"


def tmp_epoch_name(epoch: int) -> str:
    return f"epochs/.tmp-{epoch:05d}"


def _checked() -> list:
    return [zc.Crc32cCodec()]


@dataclass
class Layout:
    """Shape of one tuple group: n_blocks blocks of ``tuples_per_block`` tuples (last may be short)."""

    n_tuples: int
    n_blocks: int
    tuples_per_block: int
    chunk_tuples: int
    state_shape: tuple[int, ...]
    M: int
    state_encoding: str

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "state_shape": list(self.state_shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Layout:
        return cls(**{**d, "state_shape": tuple(d["state_shape"])})


class TupleStore:
    """An opened store: metadata, the process it was written for, and its tuple groups."""

    def __init__(self, url: str, root: zarr.Group) -> None:
        self.url = url
        self.root = root
        attrs = root.attrs.asdict()
        if "orient" not in attrs and CREATING in attrs:
            raise StoreError(
                f"the creation of {url} was interrupted before any tuple was written; re-run "
                "its `orient precompute` command with --resume (or --overwrite) to create it afresh"
            )
        if "orient" not in attrs:
            raise StoreError(f"{url} is a Zarr group but not an orient store")
        self.meta: dict[str, Any] = attrs["orient"]
        fmt = self.meta.get("format_version")
        if fmt != FORMAT_VERSION:
            raise StoreError(
                f"{url} has store format {fmt}, this orient reads format {FORMAT_VERSION}; "
                "re-create it with this version (`orient precompute ... --overwrite`)"
            )

    # -- creation / opening ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        url: str,
        meta: dict[str, Any],
        process: Process,
        x0: np.ndarray,
        source_index: np.ndarray,
        test_index: np.ndarray,
        test_x0: np.ndarray,
        overwrite: bool = False,
        tables: dict[str, Any] | None = None,
    ) -> TupleStore:
        """Write a new, empty store (metadata, process buffers, sources, pyarrow ``tables``);
        refuses to overwrite. Its metadata come last, replacing the ``CREATING`` marker written
        first: a creation cut short is recognised as such (:func:`store_state`), never mistaken
        for a store, and may be created afresh without --overwrite's consent to lose data."""
        if exists(url):
            if not overwrite:
                raise StoreError(
                    f"{url} already exists; pass --resume to continue it or --overwrite to replace it"
                )
            clear(url)
        marker = {CREATING: {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        root = zarr.open_group(url, mode="w-", attributes=marker)  # one write: group and marker
        meta = {
            **meta,
            "format_version": FORMAT_VERSION,
            "software": software_versions(),
            "process": process.to_config(),
            "process_hash": process.config_hash,
        }
        proc = root.create_group("process")
        for name, buf in process.buffers().items():
            a = proc.create_array(name, shape=buf.shape, dtype="float64", compressors=_checked())
            a[...] = buf.detach().cpu().double().numpy()
        src = root.create_group("source")
        _write_whole(src, "x0", np.ascontiguousarray(x0, dtype=np.float32))
        _write_whole(src, "index", np.asarray(source_index, dtype=np.int64))
        split = root.create_group("split")
        _write_whole(split, "test", np.asarray(test_index, dtype=np.int64))
        _write_whole(split, "x0", np.ascontiguousarray(test_x0, dtype=np.float32))
        root.create_group("epochs")
        for name, table in (tables or {}).items():
            _write_table(root, name, table)
        # metadata last, in one write that also drops the marker: a store without them is not an
        # orient store and is never mistaken for one
        root.attrs.put({"orient": json.loads(json.dumps(meta))})
        return cls(url, root)

    @classmethod
    def open(cls, url: str, mode: str = "r") -> TupleStore:
        if not exists(url):
            raise StoreError(f"no store at {url}")
        try:
            root = zarr.open_group(url, mode=mode)
        except zarr.errors.GroupNotFoundError:
            raise StoreError(f"{url} is not a Zarr store (it holds no group metadata)") from None
        except Exception as exc:  # damaged metadata, or something else that is not a store
            raise StoreError(f"{url} is not a readable Zarr store ({damage(exc)})") from None
        return cls(url, root)

    # -- metadata ------------------------------------------------------------------------------
    def process(self) -> Process:
        """Rebuild exactly the process that wrote this store."""
        bufs = {
            name: torch.from_numpy(self.read_array(f"process/{name}"))
            for name in self.meta["process"].get("buffers", {})
        }
        proc = process_from_config(self.meta["process"], bufs)
        if proc.config_hash != self.meta["process_hash"]:
            raise StoreError(
                f"{self.url}: the process configuration does not match its recorded hash"
            )
        return proc

    def check_process(self, config_hash: str, what: str = "the checkpoint") -> None:
        if config_hash != self.meta["process_hash"]:
            raise StoreError(
                f"{self.url} was written for process {describe_process(self.meta['process'])} "
                f"(hash {self.meta['process_hash'][:12]}), which is not the process of {what} "
                f"(hash {config_hash[:12]})"
            )

    def write_table(self, name: str, table: Any) -> None:
        """Keep a pyarrow Table in the store as Parquet bytes (array ``tables/<name>``, checksummed)."""
        _write_table(self.root, name, table)

    def read_table(self, name: str) -> Any:
        """The pyarrow Table stored under ``name`` (None if absent)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if "tables" not in self.root.group_keys() or name not in self.root["tables"].array_keys():
            return None
        raw = self.read_array(f"tables/{name}").tobytes()
        return pq.read_table(pa.BufferReader(raw))

    SOURCE = "source/x0"

    def source(self) -> np.ndarray:
        """The training split's data, one row per chain (data space)."""
        return self.read_array(self.SOURCE)

    def read_array(self, path: str) -> np.ndarray:
        """The whole array at ``path``. Damage (a chunk whose CRC32C does not match, unreadable
        metadata) is a one-line StoreError that names the array."""
        try:
            return np.asarray(self.root[path][...])
        except KeyError:
            raise StoreError(f"{self.url} has no array {path}") from None
        except ValueError as exc:  # zarr's checksum mismatch; json.JSONDecodeError
            raise StoreError(f"{self.url}: {path} is damaged ({damage(exc)})") from None

    def own_arrays(self) -> list[str]:
        """Paths of the arrays outside the tuple groups: process buffers, sources, split, tables."""
        out = []
        for name in sorted(self.root.group_keys()):
            if name in ("full", "epochs"):
                continue
            try:
                out += [f"{name}/{key}" for key in sorted(self.root[name].array_keys())]
            except ValueError as exc:  # an array's or the group's zarr.json
                raise StoreError(f"{self.url}: {name} is damaged ({damage(exc)})") from None
        return out

    def held_out(self) -> np.ndarray:
        """The held-out split's data (data space), never used for training."""
        if "split/x0" not in self.own_arrays():
            raise StoreError(f"{self.url} holds no held-out data (written by an older orient)")
        return self.read_array("split/x0")

    # -- tuple groups ------------------------------------------------------------------------------
    def create_tuple_group(self, name: str, layout: Layout) -> zarr.Group:
        """Create the arrays of a tuple group (no data; chunks aligned to blocks)."""
        g = self.root.create_group(name, overwrite=True)
        n, ct, S, M = layout.n_tuples, layout.chunk_tuples, layout.state_shape, layout.M
        tpb, sdt = layout.tuples_per_block, ENCODINGS[layout.state_encoding]
        specs = {"x_prev": ((*S,), sdt), "x_t": ((M, *S), sdt), "score": ((M, *S), "float16")}
        specs |= {"t": ((), "int32"), "src": ((), "int32")}
        # one shard (file) per block; inner chunks of ct rows are what readers read, each with its
        # CRC32C. write_empty_chunks: every chunk is written (a missing one is damage, not "all
        # zero"), and zarr skips its per-chunk fill-value scan, which cost more than the write
        for key, (row, dtype) in specs.items():
            g.create_array(
                key,
                shape=(n, *row),
                chunks=(ct, *row),
                shards=(tpb, *row),
                dtype=dtype,
                compressors=_checked(),
                fill_value=0,
                config={"write_empty_chunks": True},
            )
        g.create_array(
            "digest",
            shape=(layout.n_blocks, 4),
            chunks=(1, 4),
            dtype="uint8",
            compressors=_checked(),
            fill_value=0,
        )
        g.create_array(
            "done",
            shape=(layout.n_blocks,),
            chunks=(1,),
            dtype="uint8",
            compressors=_checked(),
            fill_value=0,
        )
        g.attrs["layout"] = layout.to_json()
        return g

    def has_group(self, name: str) -> bool:
        """Is tuple group ``name`` created whole? (:meth:`create_tuple_group` writes its layout
        last; a group without one was cut short and is created again.)"""
        try:
            return "layout" in self.root[name].attrs
        except KeyError:
            return False

    def group(self, name: str) -> zarr.Group:
        try:
            return self.root[name]
        except KeyError:
            raise StoreError(f"{self.url} has no tuple group {name!r}") from None

    def layout(self, name: str) -> Layout:
        return Layout.from_json(self.group(name).attrs["layout"])

    def done_blocks(self, name: str) -> np.ndarray:
        return self.read_array(f"{name}/done").astype(bool)

    def tuple_count(self, name: str) -> int:
        """Tuples in group ``name`` (rows with t > 0; padding rows and unwritten blocks have 0)."""
        return int((self.read_array(f"{name}/t") > 0).sum())

    def update_meta(self, **changes: Any) -> None:
        """Change recorded metadata fields (e.g. ``epochs_planned`` when a resume adds epochs)."""
        self.meta = {**self.meta, **changes}
        self.root.attrs["orient"] = json.loads(json.dumps(self.meta))

    def is_complete(self, name: str) -> bool:
        try:
            return bool(self.done_blocks(name).all())
        except StoreError:
            return False

    def epochs(self) -> list[int]:
        """Epoch numbers whose groups were renamed into place (complete by construction)."""
        out = []
        for key in self.root["epochs"].group_keys():
            if key.isdigit():
                out.append(int(key))
        return sorted(out)

    def missing_epochs(self) -> list[int]:
        """Planned epochs (``epochs_planned``, raised by a resume that adds epochs) not in place:
        a store with any is not complete, whatever its groups say."""
        have = set(self.epochs())
        return [e for e in range(self.meta.get("epochs_planned", 0)) if e not in have]

    def tuple_groups(self) -> list[str]:
        """The complete-or-not tuple groups that training could read: full, then epochs."""
        names = ["full"] if "full" in self.root.group_keys() else []
        return names + [epoch_name(e) for e in self.epochs()]

    def rename_group(self, src: str, dst: str) -> None:
        """Move a tuple group into place (atomic directory rename on local file systems)."""
        if is_local(self.url):
            base = local_path(self.url)
            os.replace(os.path.join(base, src), os.path.join(base, dst))
        else:  # object stores have no atomic rename; readers also require every done marker
            fs, path = filesystem(self.url)
            fs.mv(f"{path}/{src}", f"{path}/{dst}", recursive=True)
        self.root = zarr.open_group(self.url, mode="r+")

    def delete_group(self, name: str) -> None:
        if is_local(self.url):
            shutil.rmtree(os.path.join(local_path(self.url), name), ignore_errors=True)
        else:
            fs, path = filesystem(self.url)
            fs.rm(f"{path}/{name}", recursive=True)
        self.root = zarr.open_group(self.url, mode="r+")

    def remove_partial_files(self) -> int:
        """Delete the temporary ``*.partial`` files that killed writers left (shard writes and
        Zarr's own local writes go through them); returns how many. Run only while nothing
        writes."""
        if not is_local(self.url):
            return 0
        n = 0
        for p in Path(local_path(self.url)).rglob("*.partial"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    def nbytes_on_disk(self) -> int:
        if is_local(self.url):
            total = 0
            for dirpath, _, files in os.walk(local_path(self.url)):
                total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
            return total
        fs, path = filesystem(self.url)
        return int(fs.du(path))


def block_digest(arrays: dict[str, np.ndarray], chunk_rows: int) -> np.ndarray:
    """CRC32C over the CRC32C of every chunk of a block (``chunk_rows`` rows; arrays in
    TUPLE_ARRAYS order, chunks in row order; each CRC as 4 little-endian bytes), as 4 uint8.

    It catches what per-chunk checksums cannot: a shard or chunk that is missing (read as zeros) or
    swapped with another valid one. (Integrity, not security: stores are not signed.)
    """
    crcs = [c for key in TUPLE_ARRAYS for c in chunk_checksums(arrays[key], chunk_rows)]
    return _digest_of(crcs)


def _digest_of(crcs: list[int]) -> np.ndarray:
    crc = checksum(np.asarray(crcs, dtype="<u4").tobytes())
    return np.frombuffer(crc.to_bytes(4, "little"), dtype=np.uint8)


def write_block(
    group: zarr.Group, block: int, arrays: dict[str, np.ndarray], threads: int = 1
) -> None:
    """Write a block's arrays into its own shards, then its digest (from the CRCs computed while
    writing: no second pass over the data), then its done marker. ``threads`` writer threads
    share each shard (the same bytes whatever their number)."""
    layout = Layout.from_json(group.attrs["layout"])
    start = block * layout.tuples_per_block
    crcs = [c for key in TUPLE_ARRAYS for c in write_rows(group[key], start, arrays[key], threads)]
    group["digest"][block] = _digest_of(crcs)
    group["done"][block] = 1


def read_block(
    group: zarr.Group,
    block: int,
    keys: tuple[str, ...] = TUPLE_ARRAYS,
    opened: Mapping[str, zarr.Array] | None = None,
) -> dict[str, np.ndarray]:
    """Read a block's region of ``keys`` (raises ValueError on a checksum mismatch).

    ``opened``: the group's arrays, opened once by a caller that reads many blocks (opening one
    parses its metadata: a file read, or a request on a remote store)."""
    layout = Layout.from_json(group.attrs["layout"])
    start, stop = block * layout.tuples_per_block, (block + 1) * layout.tuples_per_block
    arrays = opened if opened is not None else {key: group[key] for key in keys}
    return {key: np.asarray(arrays[key][start:stop]) for key in keys}


def _write_table(root: zarr.Group, name: str, table: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    raw = np.frombuffer(sink.getvalue().to_pybytes(), dtype=np.uint8)
    _write_whole(root.require_group("tables"), name, raw)


def _write_whole(g: zarr.Group, name: str, a: np.ndarray) -> None:
    arr = g.create_array(name, shape=a.shape, dtype=a.dtype, compressors=_checked(), fill_value=0)
    arr[...] = a


@contextlib.contextmanager
def writer_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock on a local store while one command writes it (precompute, verify
    --repair, re-caching); a second gets a one-line error instead of racing the first (a resume
    deletes the temporary files of interrupted writes, which would be the other's live ones).

    ``flock`` on the store's directory: released when the process ends, however it ends. Stores
    on other file systems are not locked (give each one writer).
    """
    if not is_local(url) or not os.path.isdir(local_path(url)):
        yield
        return
    fd = os.open(local_path(url), os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{url} is being written by another orient command (precompute, verify --repair "
                "or train --recache); run this one after it ends"
            ) from None
        yield
    finally:
        os.close(fd)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system and path of a URL; a protocol that fsspec does not know, or whose
    package is not installed (s3fs for ``s3://``, ...), is a one-line StoreError."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # fsspec's message names the package, e.g. "Install s3fs to ..."
        raise StoreError(f"cannot open {url}: {exc}") from None
    except ValueError as exc:  # "Protocol not known: ..."
        raise StoreError(f"cannot open {url}: {exc}") from None


def shared_between_processes(url: str) -> bool:
    """Can separate worker processes open this store? Not an in-memory file system (memory://),
    which lives inside one Python process."""
    if is_local(url):
        return True
    fs, _ = filesystem(url)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "memory" not in protocols


def store_state(url: str) -> str:
    """What is at ``url``: "store" (an orient store, of any format version), "interrupted" (a
    creation cut short before its metadata: nothing in it but what the command re-creates) or
    "other" (not a Zarr group, or one that orient did not create)."""
    try:
        attrs = zarr.open_group(url, mode="r").attrs.asdict()
    except Exception:  # not a Zarr group, or unreadable metadata
        return "other"
    if "orient" in attrs:
        return "store"
    return "interrupted" if CREATING in attrs else "other"


def exists(url: str) -> bool:
    if is_local(url):
        return os.path.exists(local_path(url))
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def clear(url: str) -> None:
    """Empty ``url`` for a new store, so that a kill at any moment leaves something replaceable.

    An orient store is first turned into an interrupted creation (its metadata replaced by the
    ``CREATING`` marker), then everything but that root metadata goes, then the metadata: a local
    folder itself stays, and so does the writer lock held on it (:func:`writer_lock`)."""
    if store_state(url) == "store":
        zarr.open_group(url, mode="r+").attrs.put({CREATING: {"replacing": True}})
    if not is_local(url):
        fs, path = filesystem(url)
        fs.rm(path, recursive=True)
        return
    root = Path(local_path(url))
    if not root.is_dir():
        root.unlink()
        return
    for entry in root.iterdir():
        if entry.name != "zarr.json":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (root / "zarr.json").unlink(missing_ok=True)


def describe_process(config: dict[str, Any]) -> str:
    parts = [config["process"]]
    for key in ("variant", "instance", "schedule"):
        if config.get(key):
            parts.append(str(config[key]))
    return f"{'/'.join(parts)} T={config['T']}"
