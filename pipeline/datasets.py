"""Data sets: each loader returns a :class:`DataSet` with its data, identity and metadata.

Images come as float32 (N, C, H, W) in [-1, 1]; tabular data as float32 (N, d). Nothing is
downloaded: real data sets come from local folders, the rest is generated from a recorded seed.
"""

from __future__ import annotations

import hashlib
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"}


class DataError(ValueError):
    """Missing, empty or malformed input data (reported as one line)."""


@dataclass
class DataSet:
    """Loaded data plus what identifies it (recorded in every store)."""

    name: str
    data: np.ndarray
    identity: dict[str, Any]
    kind: str  # "image" or "vector"
    metadata: Any = None  # a pyarrow.Table with one row per example, when the data set has one
    labels: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not np.isfinite(self.data).all():
            raise DataError(f"data set {self.name!r} contains NaN or Inf values")


@dataclass(frozen=True)
class DataShape:
    """What a data set declares before it is loaded or generated: its number of examples ``n``
    (an upper bound where unreadable files will be skipped) and one example's ``shape``."""

    n: int
    shape: tuple[int, ...]
    kind: str  # "image" or "vector"


def _digest(items: list[str]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(it.encode())
        h.update(b"\0")
    return h.hexdigest()


def _to_unit_range(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def _find_data_dir(data_dir: str | None, what: str, hint: str) -> Path:
    root = data_dir or os.environ.get("ORIENT_DATA")
    if not root:
        raise DataError(
            f"{what}: no data folder given; pass --data-dir or set $ORIENT_DATA ({hint})"
        )
    p = Path(root).expanduser()
    if p.is_file():
        raise DataError(
            f"{what}: {p} is a file, not a folder; --data-dir takes the folder ({hint})"
        )
    if not p.is_dir():
        raise DataError(f"{what}: data folder {p} does not exist ({hint})")
    return p


def _image_header(files: list[Path], channels: int, base: Path) -> tuple[int, int, int]:
    """(C, H, W) from the header of the first of ``files`` that has a readable one (nothing is
    decoded; the loader skips unreadable files too)."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
        except (UnidentifiedImageError, OSError, ValueError):
            continue
        return channels, h, w
    raise DataError(f"no readable images under {base} ({len(files)} files could not be read)")


def _load_images(
    files: list[Path], size: int | None, channels: int, base: Path
) -> tuple[np.ndarray, list[Path], int]:
    """Read image files (skipping unreadable ones); returns (uint8 array, kept files, skipped)."""
    from PIL import Image, UnidentifiedImageError

    arrays, kept, skipped = [], [], 0
    mode = "L" if channels == 1 else "RGB"
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if size is not None:
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError):
            skipped += 1
            continue
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        kept.append(f)
    if not arrays:
        raise DataError(f"no readable images under {base} ({skipped} files could not be read)")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"images under {base} have mixed sizes {sorted(shapes)[:3]}...; pass --image-size to resize them"
        )
    return np.stack(arrays), kept, skipped


# -- synthetic fingerprints ---------------------------------------------------------------------


def synthetic_fingerprints(n: int = 1024, size: int = 32, seed: int = 0) -> DataSet:
    """Procedural SFinGe-style fingerprints (pipeline/fingerprints.py); image i depends on (seed, i)."""
    from .fingerprints import generate_fingerprints_with_labels

    describe_synthetic_fingerprints(n, size, seed)

    batch = generate_fingerprints_with_labels(n, size=size, seed=seed)
    identity = {"name": "synthetic-fingerprints", "params": {"n": n, "size": size, "seed": seed}}
    return DataSet(
        "synthetic-fingerprints", batch.images, identity, "image", labels=np.asarray(batch.labels)
    )


def describe_synthetic_fingerprints(n: int = 1024, size: int = 32, seed: int = 0) -> DataShape:
    from .fingerprints import DEFAULT_CLASSES, check_arguments

    try:
        check_arguments(n, size, 0, DEFAULT_CLASSES)
    except ValueError as exc:
        raise DataError(f"synthetic-fingerprints: {exc}") from None
    return DataShape(n, (1, size, size), "image")


# -- SOCOFing ---------------------------------------------------------------------------------

SOCOFING_RE = re.compile(
    r"^(?P<subject>\d+)__(?P<gender>[MF])_(?P<hand>Left|Right)_(?P<finger>thumb|index|middle|ring|little)_finger"
    r"(?:_(?P<alteration>CR|Obl|Zcut))?$",
    re.IGNORECASE,
)
SOCOFING_HINT = (
    "SOCOFing is at https://www.kaggle.com/datasets/ruizgara/socofing (research licence)"
)


def parse_socofing_name(path: Path) -> dict[str, Any] | None:
    m = SOCOFING_RE.match(path.stem)
    if not m:
        return None
    d = m.groupdict()
    return {
        "subject": int(d["subject"]),
        "gender": d["gender"].upper(),
        "hand": d["hand"].capitalize(),
        "finger": d["finger"].lower(),
        "alteration": d["alteration"] or "none",
    }


def _socofing_set(path: Path, base: Path) -> str:
    parts = [p.lower() for p in path.relative_to(base).parts[:-1]]
    for p in reversed(parts):
        if p.startswith("altered-"):
            return "Altered-" + p.split("-", 1)[1].capitalize()
        if p == "real":
            return "Real"
    return "Real"


def socofing(
    data_dir: str | None = None,
    size: int = 96,
    sets: tuple[str, ...] = ("Real",),
    select: dict[str, str] | None = None,
) -> DataSet:
    """A local SOCOFing copy, searched recursively (.BMP any case); metadata parsed from file names."""
    import pyarrow as pa

    base, rows, files = _socofing_files(data_dir, sets, select)
    arrays, kept, skipped = _load_images(files, size, 1, base)
    kept_set = set(kept)
    rows = [r for r, f in zip(rows, files, strict=True) if f in kept_set]
    table = pa.Table.from_pylist(rows)
    identity = {
        "name": "socofing",
        "params": {"size": size, "sets": list(sets), "select": select or {}},
        "files_digest": _digest(
            [r["file"] + f":{(base / r['file']).stat().st_size}" for r in rows]
        ),
        "n_files": len(rows),
    }
    notes = [f"skipped {skipped} unreadable files"] if skipped else []
    return DataSet(
        "socofing", _to_unit_range(arrays), identity, "image", metadata=table, notes=notes
    )


def describe_socofing(
    data_dir: str | None = None,
    size: int = 96,
    sets: tuple[str, ...] = ("Real",),
    select: dict[str, str] | None = None,
) -> DataShape:
    if size < 1:
        raise DataError(f"SOCOFing: the image size must be >= 1, got {size}")
    _, _, files = _socofing_files(data_dir, sets, select)
    return DataShape(len(files), (1, size, size), "image")


def _socofing_files(
    data_dir: str | None, sets: tuple[str, ...], select: dict[str, str] | None
) -> tuple[Path, list[dict[str, Any]], list[Path]]:
    """The folder, and the parsed names and paths of the selected .BMP files."""
    base = _find_data_dir(data_dir, "SOCOFing", SOCOFING_HINT)
    wanted = {s.lower() for s in sets}
    rows, files = [], []
    for f in sorted(base.rglob("*")):
        if f.suffix.lower() != ".bmp" or not f.is_file():
            continue
        info = parse_socofing_name(f)
        subset = _socofing_set(f, base)
        if info is None or subset.lower() not in wanted:
            continue
        info["set"] = subset
        info["file"] = str(f.relative_to(base))
        rows.append(info)
        files.append(f)
    if not files:
        raise DataError(
            f"SOCOFing: no .BMP files of set(s) {', '.join(sets)} found under {base} ({SOCOFING_HINT})"
        )
    for key, value in (select or {}).items():
        if key not in rows[0]:
            raise DataError(f"SOCOFing: cannot select on {key!r}; columns are {', '.join(rows[0])}")
        keep = [i for i, r in enumerate(rows) if str(r[key]).lower() == str(value).lower()]
        rows, files = [rows[i] for i in keep], [files[i] for i in keep]
        if not rows:
            raise DataError(f"SOCOFing: no image has {key}={value}")
    return base, rows, files


# -- image folders and textures -------------------------------------------------------------------


def _patches(imgs: np.ndarray, patch: int) -> np.ndarray:
    n, c, h, w = imgs.shape
    ph, pw = h // patch, w // patch
    if ph == 0 or pw == 0:
        raise DataError(f"images of {h}x{w} are smaller than the {patch}x{patch} patch size")
    x = imgs[:, :, : ph * patch, : pw * patch].reshape(n, c, ph, patch, pw, patch)
    return x.transpose(0, 2, 4, 1, 3, 5).reshape(n * ph * pw, c, patch, patch)


def image_folder(
    data_dir: str | None = None,
    size: int | None = None,
    patch: int | None = None,
    channels: int = 1,
) -> DataSet:
    """Every image under a folder (recursive): resized to ``size`` and/or cut into ``patch`` patches."""
    base, files = _image_folder_files(data_dir, size, patch, channels)
    arrays, kept, skipped = _load_images(files, size, channels, base)
    if patch:
        arrays = _patches(arrays, patch)
    identity = {
        "name": "image-folder",
        "params": {"size": size, "patch": patch, "channels": channels},
        "files_digest": _digest([f"{f.relative_to(base)}:{f.stat().st_size}" for f in kept]),
        "n_files": len(kept),
    }
    notes = [f"skipped {skipped} unreadable files"] if skipped else []
    return DataSet("image-folder", _to_unit_range(arrays), identity, "image", notes=notes)


def describe_image_folder(
    data_dir: str | None = None,
    size: int | None = None,
    patch: int | None = None,
    channels: int = 1,
) -> DataShape:
    """Files counted, the first one's header read (the others are assumed to be of its size)."""
    base, files = _image_folder_files(data_dir, size, patch, channels)
    _, h, w = _image_header(files, channels, base)
    h, w = (size, size) if size is not None else (h, w)
    if not patch:
        return DataShape(len(files), (channels, h, w), "image")
    if h < patch or w < patch:
        raise DataError(f"images of {h}x{w} are smaller than the {patch}x{patch} patch size")
    return DataShape(len(files) * (h // patch) * (w // patch), (channels, patch, patch), "image")


def _image_folder_files(
    data_dir: str | None, size: int | None, patch: int | None, channels: int
) -> tuple[Path, list[Path]]:
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    for name, v in (("size", size), ("patch", patch)):
        if v is not None and v < 1:
            raise DataError(f"image-folder: {name} must be >= 1, got {v}")
    base = _find_data_dir(data_dir, "image-folder", "any folder of images")
    files = sorted(f for f in base.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"image-folder: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {base}"
        )
    return base, files


TEXTURES = ("brick.png", "grass.png", "gravel.png")


def textures(patch: int = 32) -> DataSet:
    """The three CC0 512x512 textures shipped in scikit-image's wheel, cut into patches."""
    files = _texture_files(patch)
    import skimage
    from PIL import Image

    imgs, digests = [], []
    for f in files:
        digests.append(hashlib.sha256(f.read_bytes()).hexdigest())
        with Image.open(f) as im:
            imgs.append(np.asarray(im.convert("L"), dtype=np.uint8)[None, None])
    patches = np.concatenate([_patches(i, patch) for i in imgs])
    labels = np.repeat(np.arange(len(TEXTURES)), len(patches) // len(TEXTURES))
    identity = {
        "name": "textures",
        "params": {"patch": patch, "files": list(TEXTURES)},
        "skimage": skimage.__version__,
        "files_digest": _digest(digests),
    }
    return DataSet("textures", _to_unit_range(patches), identity, "image", labels=labels)


def describe_textures(patch: int = 32) -> DataShape:
    n = 0
    for f in _texture_files(patch):
        _, h, w = _image_header([f], 1, f.parent)
        if h < patch or w < patch:
            raise DataError(f"images of {h}x{w} are smaller than the {patch}x{patch} patch size")
        n += (h // patch) * (w // patch)
    return DataShape(n, (1, patch, patch), "image")


def _texture_files(patch: int) -> list[Path]:
    if patch < 1:
        raise DataError(f"textures: patch must be >= 1, got {patch}")
    try:
        import skimage
    except ImportError:
        raise DataError(
            "the textures data set needs scikit-image: pip install 'orient[textures]'"
        ) from None
    folder = Path(skimage.__file__).parent / "data"
    for name in TEXTURES:
        if not (folder / name).exists():
            raise DataError(
                f"textures: {folder / name} is missing from the scikit-image installation"
            )
    return [folder / name for name in TEXTURES]


CIFAR10_HINT = (
    "the binary version, cifar-10-batches-bin, from https://www.cs.toronto.edu/~kriz/cifar.html; "
    "nothing is downloaded"
)
MNIST_HINT = (
    "the four IDX files (or .gz) of http://yann.lecun.com/exdb/mnist; nothing is downloaded"
)


def _first_folder_with(base: Path, name: str, below: tuple[str, ...]) -> Path | None:
    """``base`` or one of the usual sub-folders ``below`` that holds file ``name`` (or name.gz)."""
    for d in (base, *(base / b for b in below)):
        if (d / name).is_file() or (d / f"{name}.gz").is_file():
            return d
    return None


def _read(folder: Path, name: str) -> bytes:
    """File ``name`` of ``folder``, or its .gz decompressed; a damaged .gz is a DataError."""
    import gzip
    import zlib

    f = folder / name
    if f.is_file():
        return f.read_bytes()
    try:
        return gzip.decompress((folder / f"{name}.gz").read_bytes())
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{folder / name}.gz is truncated or not gzip ({exc})") from None


def cifar10(data_dir: str | None = None, train: bool = True) -> DataSet:
    """CIFAR-10 from its binary version (records of 1 label byte + 3 x 32 x 32 pixel bytes).

    The python version (cifar-10-batches-py, what torchvision reads) is pickled; orient never
    unpickles anything from a data folder, so it is refused with a pointer to the binary one."""
    folder, names = _cifar10_files(data_dir, train)
    raw = [_read(folder, n) for n in names]
    for n, r in zip(names, raw, strict=True):
        if not r or len(r) % 3073:
            raise DataError(f"cifar10: {folder / n} is not whole 3,073-byte records")
    data = b"".join(raw)
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3073)
    x = rec[:, 1:].reshape(-1, 3, 32, 32)
    identity = {"name": "cifar10", "params": {"train": train}, "n": int(len(x)),
                "files_digest": _digest([hashlib.sha256(r).hexdigest() for r in raw])}  # fmt: skip
    return DataSet("cifar10", _to_unit_range(x), identity, "image", labels=rec[:, 0].copy())


def describe_cifar10(data_dir: str | None = None, train: bool = True) -> DataShape:
    """Records counted from the file sizes (a .gz's from its trailer, its size modulo 2^32)."""
    import struct

    folder, names = _cifar10_files(data_dir, train)
    n = 0
    for name in names:
        f = folder / name
        if f.is_file():
            size = f.stat().st_size
        else:
            with open(folder / f"{name}.gz", "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                size = struct.unpack("<I", fh.read(4))[0]
        if not size or size % 3073:
            raise DataError(f"cifar10: {f} is not whole 3,073-byte records")
        n += size // 3073
    return DataShape(n, (3, 32, 32), "image")


def _cifar10_files(data_dir: str | None, train: bool) -> tuple[Path, list[str]]:
    base = _find_data_dir(data_dir, "cifar10", CIFAR10_HINT)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    folder = _first_folder_with(base, names[0], ("cifar-10-batches-bin",))
    if folder is None:
        pickled = (base / "cifar-10-batches-py").is_dir() or (base / "data_batch_1").is_file()
        why = "only the pickled python version, which is never unpickled" if pickled else "none"
        raise DataError(f"cifar10: no {names[0]} under {base} ({why}; {CIFAR10_HINT})")
    missing = [n for n in names if _first_folder_with(folder, n, ()) is None]
    if missing:
        raise DataError(f"cifar10: {folder} lacks {', '.join(missing)}")
    return folder, names


def _idx(data: bytes, what: str) -> np.ndarray:
    """An IDX array of unsigned bytes (magic 0x00 0x00 0x08 ndim, big-endian int32 sizes)."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or len(data) < 4 + 4 * data[3]:
        raise DataError(f"mnist: {what} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">i4"))
    body = data[4 + 4 * ndim :]
    if len(shape) != ndim or len(body) != int(np.prod(shape)):
        raise DataError(f"mnist: {what} is truncated or its sizes are wrong")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def mnist(data_dir: str | None = None, train: bool = True) -> DataSet:
    """MNIST from its IDX files (plain or .gz; torchvision keeps them in MNIST/raw)."""
    folder, images, labels = _mnist_files(data_dir, train)
    raw_x, raw_y = _read(folder, images), _read(folder, labels)
    x, y = _idx(raw_x, images), _idx(raw_y, labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"mnist: {images} and {labels} in {folder} do not match")
    identity = {"name": "mnist", "params": {"train": train}, "n": int(len(x)),
                "files_digest": _digest([hashlib.sha256(r).hexdigest() for r in (raw_x, raw_y)])}  # fmt: skip
    return DataSet("mnist", _to_unit_range(x[:, None]), identity, "image", labels=y.copy())


def describe_mnist(data_dir: str | None = None, train: bool = True) -> DataShape:
    """Sizes from the images file's IDX header (16 bytes)."""
    import gzip

    folder, images, _ = _mnist_files(data_dir, train)
    f = folder / images
    try:
        with f.open("rb") if f.is_file() else gzip.open(folder / f"{images}.gz", "rb") as fh:
            head = fh.read(16)
    except (EOFError, OSError) as exc:
        raise DataError(f"{folder / images}.gz is truncated or not gzip ({exc})") from None
    if len(head) < 16 or head[:4] != b"\x00\x00\x08\x03":
        raise DataError(f"mnist: {images} is not an IDX file of unsigned bytes (N, H, W)")
    n, h, w = (int(v) for v in np.frombuffer(head[4:], dtype=">i4"))
    return DataShape(n, (1, h, w), "image")


def _mnist_files(data_dir: str | None, train: bool) -> tuple[Path, str, str]:
    base = _find_data_dir(data_dir, "mnist", MNIST_HINT)
    prefix = "train" if train else "t10k"
    images, labels = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    folder = _first_folder_with(base, images, ("MNIST/raw", "raw", "MNIST"))
    if folder is None or _first_folder_with(folder, labels, ()) is None:
        raise DataError(f"mnist: no {images} and {labels} under {base} ({MNIST_HINT})")
    return folder, images, labels


# -- tabular generators (paper B section 7) -----------------------------------------------------


def gmm2d(
    n: int = 2000, separation: float = 4.0, std: float = 0.5, weight: float = 0.5, seed: int = 0
) -> DataSet:
    """Two Gaussians at (+-separation/2, 0) with isotropic ``std`` and mixing ``weight`` (B sec. 7.1)."""
    describe_gmm2d(n, separation, std, weight, seed)
    rng = np.random.default_rng(seed)
    comp = rng.random(n) < weight
    centres = np.where(comp[:, None], [-separation / 2, 0.0], [separation / 2, 0.0])
    x = centres + std * rng.standard_normal((n, 2))
    identity = {
        "name": "gmm2d",
        "params": {"n": n, "separation": separation, "std": std, "weight": weight, "seed": seed},
    }
    return DataSet("gmm2d", x.astype(np.float32), identity, "vector", labels=comp.astype(np.int64))


def describe_gmm2d(
    n: int = 2000, separation: float = 4.0, std: float = 0.5, weight: float = 0.5, seed: int = 0
) -> DataShape:
    if n < 2 or std <= 0 or not 0 < weight < 1:
        raise DataError("gmm2d needs n >= 2, std > 0 and 0 < weight < 1")
    return DataShape(n, (2,), "vector")


def snp(
    n: int = 500,
    d: int = 1000,
    block: int = 50,
    rho: float = 0.9,
    maf_low: float = 0.05,
    maf_high: float = 0.5,
    seed: int = 0,
) -> DataSet:
    """Simulated genotypes (B sec. 7.2): within each block a latent Gaussian with corr rho^|i-j|,
    thresholded at the allele frequency p_j twice (two haplotypes) to genotypes in {0, 1, 2}."""
    describe_snp(n, d, block, rho, maf_low, maf_high, seed)
    from statistics import NormalDist

    rng = np.random.default_rng(seed)
    p = rng.uniform(maf_low, maf_high, size=d)
    thresh = np.array([NormalDist().inv_cdf(1 - q) for q in p])
    geno = np.zeros((n, d), dtype=np.float32)
    for start in range(0, d, block):
        k = min(block, d - start)
        idx = np.arange(k)
        L = np.linalg.cholesky(rho ** np.abs(idx[:, None] - idx[None, :]) + 1e-12 * np.eye(k))
        for _ in range(2):  # two haplotypes
            z = rng.standard_normal((n, k)) @ L.T
            geno[:, start : start + k] += (z > thresh[start : start + k]).astype(np.float32)
    identity = {
        "name": "snp",
        "params": {
            "n": n,
            "d": d,
            "block": block,
            "rho": rho,
            "maf_low": maf_low,
            "maf_high": maf_high,
            "seed": seed,
        },
    }
    return DataSet("snp", geno, identity, "vector")


def describe_snp(
    n: int = 500,
    d: int = 1000,
    block: int = 50,
    rho: float = 0.9,
    maf_low: float = 0.05,
    maf_high: float = 0.5,
    seed: int = 0,
) -> DataShape:
    if n < 2 or d < 1 or block < 1 or not 0 <= rho < 1 or not 0 < maf_low <= maf_high <= 0.5:
        raise DataError(
            "snp needs n >= 2, d >= 1, block >= 1, 0 <= rho < 1, 0 < maf_low <= maf_high <= 0.5"
        )
    return DataShape(n, (d,), "vector")


def array_file(path: str | None = None) -> DataSet:
    """A user's .npy array (N, d) or (N, C, H, W); loaded without pickle."""
    p = _array_path(path)
    try:
        x = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"array: {p} is not a plain .npy array ({exc})") from None
    _check_array_shape(x.shape)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"array: {p} contains NaN or Inf values")
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    identity = {"name": "array", "params": {"file": p.name}, "sha256": h}
    return DataSet("array", x, identity, "image" if x.ndim == 4 else "vector")


def describe_array_file(path: str | None = None) -> DataShape:
    """The shape from the .npy header (the array is mapped, not read)."""
    p = _array_path(path)
    try:
        x = np.load(p, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise DataError(f"array: {p} is not a plain .npy array ({exc})") from None
    _check_array_shape(x.shape)
    return DataShape(
        int(x.shape[0]), tuple(int(v) for v in x.shape[1:]), "image" if x.ndim == 4 else "vector"
    )


def _array_path(path: str | None) -> Path:
    if not path:
        raise DataError("the array data set needs --data-dir pointing to a .npy file")
    p = Path(path).expanduser()
    if p.is_dir():
        raise DataError(f"array: {p} is a folder; --data-dir takes a .npy file for this data set")
    if not p.is_file():
        raise DataError(f"array: {p} does not exist")
    return p


def _check_array_shape(shape: tuple[int, ...]) -> None:
    if len(shape) not in (2, 4):
        raise DataError(f"array: expected shape (N, d) or (N, C, H, W), got {shape}")


DATASETS: dict[str, Callable[..., DataSet]] = {
    "synthetic-fingerprints": synthetic_fingerprints,
    "socofing": socofing,
    "image-folder": image_folder,
    "textures": textures,
    "cifar10": cifar10,
    "mnist": mnist,
    "gmm2d": gmm2d,
    "snp": snp,
    "array": array_file,
}


# Each loader's description: the same options, N and the example shape without loading the data
DESCRIPTIONS: dict[str, Callable[..., DataShape]] = {
    "synthetic-fingerprints": describe_synthetic_fingerprints,
    "socofing": describe_socofing,
    "image-folder": describe_image_folder,
    "textures": describe_textures,
    "cifar10": describe_cifar10,
    "mnist": describe_mnist,
    "gmm2d": describe_gmm2d,
    "snp": describe_snp,
    "array": describe_array_file,
}


def _declared_options(name: str) -> dict[str, Any]:
    """Option name -> type of data set ``name``, read once from its loader's signature; its
    description must take the same options."""
    import inspect

    loader, describe = DATASETS[name], DESCRIPTIONS[name]
    hints = typing.get_type_hints(loader)
    options = {k: hints[k] for k in inspect.signature(loader).parameters}
    if list(inspect.signature(describe).parameters) != list(options):
        raise TypeError(f"data set {name}: its loader and its description take different options")
    return options


# Each data set's options (``--data-opt``) and their types, declared by its loader's signature
DATASET_OPTIONS: dict[str, dict[str, Any]] = {name: _declared_options(name) for name in DATASETS}


def load_dataset(name: str, **options: Any) -> DataSet:
    """Load the data set ``name`` with loader-specific ``options`` (unknown options are an error)."""
    options = _options(name, options)
    return DATASETS[name](**options)


def describe_dataset(name: str, **options: Any) -> DataShape:
    """What :func:`load_dataset` (same arguments) would give, without loading or generating it:
    N and the example shape, from the options, file counts and one file's header. The options
    and the data folder are checked as the loader checks them."""
    options = _options(name, options)
    return DESCRIPTIONS[name](**options)


def _options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against :data:`DATASET_OPTIONS` (the one place an unknown data set
    option is rejected) and converted to their declared types."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    accepted = DATASET_OPTIONS[name]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise DataError(
            f"data set {name} has no option{s} {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    return {k: _as_option(name, k, v, accepted[k]) for k, v in options.items()}


def _as_option(dataset: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the type a loader declares for option ``key`` (1e3 is an integer, a single
    name is a one-element tuple), or a one-line DataError that names the option."""
    kinds = (
        set(typing.get_args(hint))
        if typing.get_origin(hint) in (Union, types.UnionType)
        else {hint}
    )
    if value is None and type(None) in kinds:
        return None
    kinds.discard(type(None))
    (kind,) = kinds
    origin = typing.get_origin(kind) or kind
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and number and float(value).is_integer():
        return int(value)
    if kind is float and number:
        return float(value)
    if kind in (bool, str) and isinstance(value, kind):
        return value
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a name the command line read as a number, e.g. data_dir=2024
    if origin is tuple and isinstance(value, str):
        return (value,)
    if origin is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if (
        origin is dict
        and isinstance(value, dict)
        and all(isinstance(v, str) for v in value.values())
    ):
        return value
    wanted = {int: "an integer", float: "a number", bool: "true or false", str: "a text"}.get(
        kind,
        "a name or a list of names"
        if origin is tuple
        else "names mapped to names"
        if origin is dict
        else str(kind),
    )
    raise DataError(f"data set {dataset!r}: option {key} must be {wanted}, got {value!r}")


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split of range(n): (train indices, test indices), both sorted."""
    if not 0 <= test_fraction < 1:
        raise DataError(f"test fraction must be in [0, 1), got {test_fraction}")
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    n_test = int(round(n * test_fraction))
    if n - n_test < 1:
        raise DataError("the split leaves no training example")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
