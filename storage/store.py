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
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
import zarr
import zarr.codecs as zc

from .chunkio import checksum, chunk_checksums, shard_file_bytes, write_rows
from .codecs import ENCODINGS
from .errors import StoreError, damage  # defined in errors.py; importable from here as before

FORMAT_VERSION = 3  # 2: block digests are CRC32C (were CRC-32); 3: one shard per block and array
CREATING = "orient_creating"  # root attribute of a store whose creation has not finished
VERIFIED = "orient_verified"  # root attribute: the outcome of the last `orient verify`
COMPLETE = "complete"  # attribute of an epoch group, written when all its blocks are in place
TUPLE_ARRAYS = ("x_prev", "x_t", "score", "t", "src")
TRAINING_ARRAYS = ("x_t", "score", "t")

# Zarr warns when a listed name has no metadata by the time it is opened: a group deleted between
# the listing and the read (a publication's temporary epoch, re-caching's oldest epoch). Readers
# skip it, as they should; the warning would only alarm the user.
warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component of a Zarr")


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


class ProcessRecord(Protocol):
    """What a store records of the process it is written for (``orient.dynamics.Process`` is
    one): its JSON configuration, the hash of it and its fitted buffers. The store never builds
    a process: :meth:`TupleStore.process` hands the recorded configuration and buffers to the
    caller's ``rebuild`` (``orient.dynamics.process_from_config``)."""

    @property
    def config_hash(self) -> str: ...

    def to_config(self) -> dict[str, Any]: ...

    def buffers(self) -> Mapping[str, torch.Tensor]: ...


P = TypeVar("P", bound=ProcessRecord)


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

    def rows(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Each tuple array's row shape and dtype."""
        S, M, sdt = self.state_shape, self.M, ENCODINGS[self.state_encoding]
        rows = {"x_prev": ((*S,), sdt), "x_t": ((M, *S), sdt), "score": ((M, *S), "float16")}
        return rows | {"t": ((), "int32"), "src": ((), "int32")}

    def file_bytes(self) -> int:
        """Bytes on disk of one tuple group of this layout, as :func:`write_block` writes it:
        every block's shard of every array, padding rows and pages and CRCs included, and its
        digest and done marker (each chunk with its CRC32C: ~20 bytes a block); the group's few
        KB of zarr.json come on top."""
        per_block = sum(
            shard_file_bytes(
                self.tuples_per_block,
                self.chunk_tuples,
                math.prod(row) * np.dtype(dtype).itemsize,
            )
            for row, dtype in self.rows().values()
        )
        return self.n_blocks * (per_block + (4 + 4) + (1 + 4))

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
        process: ProcessRecord,
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
        root = open_root(url, mode="w-", attributes=marker)  # one write: group and marker
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
            root = open_root(url, mode=mode)
        except zarr.errors.GroupNotFoundError:
            raise StoreError(f"{url} is not a Zarr store (it holds no group metadata)") from None
        except Exception as exc:  # damaged metadata, or something else that is not a store
            raise StoreError(f"{url} is not a readable Zarr store ({damage(exc)})") from None
        return cls(url, root)

    # -- metadata ------------------------------------------------------------------------------
    def process_config(self) -> dict[str, Any]:
        """The recorded configuration of the process that wrote this store (a copy)."""
        return json.loads(json.dumps(self.meta["process"]))

    def process_buffers(self) -> dict[str, torch.Tensor]:
        """The process's fitted buffers, by the names its configuration lists (float64)."""
        return {
            name: torch.from_numpy(self.read_array(f"process/{name}"))
            for name in self.meta["process"].get("buffers", {})
        }

    def process(self, rebuild: Callable[[dict[str, Any], dict[str, torch.Tensor]], P]) -> P:
        """Rebuild exactly the process that wrote this store: ``rebuild(config, buffers)``
        (``orient.dynamics.process_from_config``) of :meth:`process_config` and
        :meth:`process_buffers`, checked against the recorded hash."""
        proc = rebuild(self.process_config(), self.process_buffers())
        if proc.config_hash != self.meta["process_hash"]:
            raise StoreError(
                f"{self.url}: the process configuration does not match its recorded hash"
            )
        return proc

    def check_process(
        self, config_hash: str, what: str = "the checkpoint", config: dict[str, Any] | None = None
    ) -> None:
        """Refuse a process other than this store's. Given ``config`` (the other process's
        ``to_config()``), the message names the fields that differ, e.g. "T: checkpoint 100, store
        300"; without it, both processes in brief and their hashes."""
        if config_hash == self.meta["process_hash"]:
            return
        mine = self.meta["process"]
        if config is not None:
            _ABSENT = object()

            def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
                out: dict[str, Any] = {}
                for k, v in d.items():
                    if isinstance(v, Mapping):
                        out.update(flat(v, f"{prefix}{k}."))
                    else:
                        out[prefix + k] = v
                return out

            def show(v: Any) -> str:
                text = "(absent)" if v is _ABSENT else json.dumps(v)
                return text if len(text) <= 40 else text[:37] + "..."

            theirs, ours = flat(config), flat(mine)
            label = what.removeprefix("the ").removeprefix("this ")
            diffs = [
                f"{k}: {label} {show(theirs.get(k, _ABSENT))}, store {show(ours.get(k, _ABSENT))}"
                for k in sorted(
                    set(theirs) | set(ours), key=lambda k: (k != "process", k != "T", k)
                )
                if theirs.get(k, _ABSENT) != ours.get(k, _ABSENT)
            ]
            if diffs:
                more = f"; and {len(diffs) - 4} more" if len(diffs) > 4 else ""
                raise StoreError(
                    f"{self.url} was written for another process than {what} "
                    f"({'; '.join(diffs[:4])}{more})"
                )
        raise StoreError(
            f"{self.url} was written for process {describe_process(mine)} "
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
        n, ct, tpb, specs = (
            layout.n_tuples,
            layout.chunk_tuples,
            layout.tuples_per_block,
            layout.rows(),
        )
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

    @property
    def renames(self) -> bool:
        """Does this store publish an epoch by an atomic rename (a local file system)? Object
        stores (s3://, gs://, memory://, ...) have no rename; there the epoch group's completion
        marker decides (:meth:`rename_group`)."""
        return is_local(self.url)

    def _epoch_groups(self) -> dict[str, dict[str, Any]]:
        """Every group under ``epochs/``: name -> its attributes."""
        return {key: dict(g.attrs) for key, g in self.root["epochs"].groups()}

    def epochs(self) -> list[int]:
        """Epoch numbers whose groups are in place: renamed into place on a local file system;
        on an object store, carrying their completion marker (:data:`COMPLETE`), which the
        publication writes last. An epoch without it is never read, whatever its blocks say."""
        if self.renames:
            keys = self.root["epochs"].group_keys()
        else:
            keys = [k for k, attrs in self._epoch_groups().items() if attrs.get(COMPLETE)]
        return sorted(int(k) for k in keys if k.isdigit())

    def temporary_groups(self) -> dict[str, int]:
        """Groups of epochs begun and not in place, each with its epoch number:
        ``epochs/.tmp-NNNNN`` (being written, or written and never published) and, on an object
        store, ``epochs/NNNNN`` without its completion marker (a publication cut short, unless the
        ``.tmp-`` group it copies from is still there: then that group is the epoch, and
        publishing it again replaces this one). A group whose name is not
        :func:`epoch_name` of its epoch is one that publishing renames."""
        groups = self._epoch_groups()
        tmp = sorted(k for k in groups if k.startswith(".tmp-"))
        out = {f"epochs/{k}": int(k.removeprefix(".tmp-")) for k in tmp}
        if not self.renames:
            for k in sorted(groups):
                if k.isdigit() and not groups[k].get(COMPLETE) and f".tmp-{k}" not in groups:
                    out[f"epochs/{k}"] = int(k)
        return out

    def unfinished_epochs(self) -> list[str]:
        """The names of :meth:`temporary_groups`."""
        return list(self.temporary_groups())

    def missing_epochs(self) -> list[int]:
        """Planned epochs (``epochs_planned``, raised by a resume that adds epochs) not in place:
        a store with any is not complete, whatever its groups say."""
        have = set(self.epochs()) | set(self.meta.get("epochs_retired", []))
        return [e for e in range(self.meta.get("epochs_planned", 0)) if e not in have]

    def retire_epoch(self, epoch: int) -> None:
        """Delete an epoch the trainer has read (``train --recache``), recording first that it
        was retired, so that the store still counts as complete without it."""
        retired = sorted({*self.meta.get("epochs_retired", []), epoch})
        self.update_meta(epochs_retired=retired)
        self.delete_group(epoch_name(epoch))

    def tuple_groups(self) -> list[str]:
        """The complete-or-not tuple groups that training could read: full, then epochs."""
        names = ["full"] if "full" in self.root.group_keys() else []
        return names + [epoch_name(e) for e in self.epochs()]

    def rename_group(self, src: str, dst: str) -> None:
        """Publish the written epoch group ``src`` as ``dst`` (``src`` may be ``dst``): call it
        only once every block of ``src`` is done.

        Its completion marker goes into ``src``'s metadata, then on a local file system the
        folder is renamed (``os.replace``: atomic, the name is what readers go by). An object
        store has no rename: ``dst`` is created without the marker (an older copy cut short is
        removed first), every object of ``src`` is copied into it (server-side on S3), then
        ``dst``'s group metadata is rewritten with the marker, in one PUT, so that readers see
        the epoch only whole; then ``src`` goes, its group metadata last. Cut short before the
        marker, it is simply done again."""
        marked = {**dict(self.root[src].attrs), COMPLETE: True}
        if self.renames:
            self.root[src].attrs.put(marked)
            base = local_path(self.url)
            os.replace(os.path.join(base, src), os.path.join(base, dst))
        elif src == dst:
            self.root[src].attrs.put(marked)
        else:
            fs, path = filesystem(self.url)
            s, d, meta = f"{path}/{src}", f"{path}/{dst}", "/zarr.json"
            if fs.exists(d):
                fs.rm(d, recursive=True)
            unmarked = {k: v for k, v in marked.items() if k != COMPLETE}
            self.root.create_group(dst, attributes=unmarked)  # a group, not yet an epoch
            files = [f for f in fs.find(s) if f != s + meta]
            fs.copy(files, [d + f[len(s) :] for f in files])
            self.root[dst].attrs.put(marked)  # the marker: one object, written last
            fs.rm(files)  # the temporary group's metadata last: no nameless leftovers
            fs.rm(s + meta)
        self.root = open_root(self.url, mode="r+")

    def delete_group(self, name: str) -> None:
        """Delete a tuple group; on an object store an epoch first loses its completion marker,
        so that readers never see one partly deleted."""
        if is_local(self.url):
            shutil.rmtree(os.path.join(local_path(self.url), name), ignore_errors=True)
        else:
            with contextlib.suppress(KeyError):
                attrs = dict(self.root[name].attrs)
                if attrs.pop(COMPLETE, None) is not None:
                    self.root[name].attrs.put(attrs)
            fs, path = filesystem(self.url)
            fs.rm(f"{path}/{name}", recursive=True)
        self.root = open_root(self.url, mode="r+")

    # -- verification record ---------------------------------------------------------------------
    def state_digest(self) -> str:
        """SHA-256 of what the store holds as written: its tuple groups (in place or not), every
        done marker and block digest, and the planned epochs. Any block written, rewritten with
        other bytes, or removed after a verification changes it (a block rewritten with the same
        bytes does not); it is cheap (two small arrays per group), so ``orient info`` recomputes
        it to tell whether the recorded verification still describes the store."""
        h = hashlib.sha256()
        names = self.tuple_groups() + self.unfinished_epochs()
        h.update(json.dumps([self.meta.get("epochs_planned", 0), names]).encode())
        for name in names:
            for key in ("done", "digest"):
                try:
                    h.update(f"{name}/{key}:".encode() + self.read_array(f"{name}/{key}").tobytes())
                except (StoreError, KeyError):  # damaged: as it was when verified, or not
                    h.update(f"{name}/{key}:damaged".encode())
        return h.hexdigest()

    def record_verification(self, record: dict[str, Any], state: str | None = None) -> None:
        """Keep the outcome of a verification in the root attribute :data:`VERIFIED`, with the
        :meth:`state_digest` it was made on (``state``; default: now). One write of the root
        metadata (atomic: a temporary file renamed locally, one PUT on an object store),
        re-read first so that nothing another command changed in it is lost."""
        state = state or self.state_digest()
        root = open_root(self.url, mode="r+")
        attrs = root.attrs.asdict()
        attrs[VERIFIED] = json.loads(json.dumps({**record, "state": state}))
        root.attrs.put(attrs)

    def verification(self) -> dict[str, Any] | None:
        """The recorded outcome of the last ``orient verify`` (None: never verified), with
        ``stale`` set when blocks were written or removed since."""
        rec = self.root.attrs.asdict().get(VERIFIED)
        if rec is None:
            return None
        return {**rec, "stale": rec.get("state") != self.state_digest()}

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
        return fsspec.core.url_to_fs(url, **(storage_options(url) or {}))
    except ImportError as exc:  # fsspec's message names the package, e.g. "Install s3fs to ..."
        raise StoreError(f"cannot open {url}: {exc}") from None
    except ValueError as exc:  # "Protocol not known: ..."
        raise StoreError(f"cannot open {url}: {exc}") from None


def storage_options(url: str) -> dict[str, Any] | None:
    """fsspec options for a store URL (None for a local path).

    Directory listings are never cached: other processes (the precompute workers, a trainer's
    re-caching, another machine) write the store, and a cached listing would hide their epochs.
    Everything else comes from the back end's own configuration, e.g. for s3:// the standard
    AWS variables (``AWS_ENDPOINT_URL`` for an S3-compatible server such as MinIO or Ceph,
    ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...), or fsspec's ``FSSPEC_S3_*`` variables."""
    return None if is_local(url) else {"use_listings_cache": False}


def open_root(url: str, mode: str = "r", **kwargs: Any) -> zarr.Group:
    """The root group at ``url``, opened with :func:`storage_options`."""
    if is_local(url):
        return zarr.open_group(local_path(url), mode=mode, **kwargs)
    return zarr.open_group(url, mode=mode, storage_options=storage_options(url), **kwargs)


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
        attrs = open_root(url, mode="r").attrs.asdict()
    except Exception:  # not a Zarr group, or unreadable metadata
        return "other"
    if "orient" in attrs:
        return "store"
    return "interrupted" if CREATING in attrs else "other"


def exists(url: str) -> bool:
    """Is there anything at ``url``? An object store that cannot be reached or refuses us is a
    one-line StoreError (what the back end said, e.g. that it could not connect)."""
    if is_local(url):
        return os.path.exists(local_path(url))
    fs, path = filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:  # botocore's EndpointConnectionError, NoCredentialsError, ...
        said = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise StoreError(f"cannot reach {url}: {said}") from None


def clear(url: str) -> None:
    """Empty ``url`` for a new store, so that a kill at any moment leaves something replaceable.

    An orient store is first turned into an interrupted creation (its metadata replaced by the
    ``CREATING`` marker), then everything but that root metadata goes, then the metadata: a local
    folder itself stays, and so does the writer lock held on it (:func:`writer_lock`)."""
    if store_state(url) == "store":
        open_root(url, mode="r+").attrs.put({CREATING: {"replacing": True}})
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
    """A process configuration in one line, whatever the process: its kind and the values of
    its string fields joined by "/", then T and every other number or flag as ``key=value``
    (nested fields, lists and unset ones left out), e.g. "kuramoto/local/inside T=100 window=5"."""
    scalars = {
        k: v
        for k, v in config.items()
        if k not in ("format", "process", "T") and isinstance(v, str | int | float | bool)
    }
    names = [str(config["process"]), *(v for v in scalars.values() if isinstance(v, str) and v)]
    numbers = [f"{k}={v}" for k, v in scalars.items() if not isinstance(v, str)]
    return " ".join([f"{'/'.join(names)} T={config['T']}", *numbers])
