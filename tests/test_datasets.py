"""The data sets of `orient precompute`: generators' statistics, local copies read from their own
file formats (never unpickled), patches and channels, and the messages for missing data."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from orient.pipeline.datasets import DataError, load_dataset

from conftest import run_cli


def test_gmm2d_is_the_two_component_mixture_it_records():
    ds = load_dataset("gmm2d", n=4000, separation=4.0, std=0.5, weight=0.3, seed=1)
    x = ds.data
    assert x.shape == (4000, 2) and x.dtype == np.float32
    left = x[:, 0] < 0  # components at (-2, 0) and (2, 0), 8 std apart: no overlap in practice
    # fraction of the first component: weight 0.3, binomial std sqrt(0.3 * 0.7 / 4000) = 0.0072
    assert abs(left.mean() - 0.3) < 4 * 0.0072
    for side, centre in ((left, -2.0), (~left, 2.0)):
        m = side.sum()
        assert np.allclose(x[side].mean(0), [centre, 0.0], atol=4 * 0.5 / np.sqrt(m))
        assert np.allclose(x[side].std(0), 0.5, rtol=0.1)
    assert ds.identity["params"] == {"n": 4000, "separation": 4.0, "std": 0.5, "weight": 0.3,
                                     "seed": 1}  # fmt: skip
    again = load_dataset("gmm2d", n=4000, separation=4.0, std=0.5, weight=0.3, seed=1)
    assert again.data.tobytes() == x.tobytes()
    assert load_dataset("gmm2d", n=4000, seed=2).data.tobytes() != x.tobytes()


def test_snp_genotypes_are_correlated_within_blocks_and_not_across():
    n, d, block = 1000, 200, 10
    ds = load_dataset("snp", n=n, d=d, block=block, rho=0.9, maf_low=0.1, maf_high=0.4, seed=0)
    g = ds.data
    assert g.shape == (n, d) and set(np.unique(g)) <= {0.0, 1.0, 2.0}
    freq = g.mean(0) / 2  # allele frequencies, drawn in [0.1, 0.4]; sampling std <= 0.016
    assert freq.min() > 0.1 - 0.06 and freq.max() < 0.4 + 0.06
    c = np.corrcoef(g.T)
    within = [c[j, j + 1] for j in range(d - 1) if (j + 1) % block]
    across = [c[j, j + 1] for j in range(d - 1) if (j + 1) % block == 0]
    assert np.mean(within) > 0.4  # latent correlation 0.9 between neighbours
    # independent blocks: each sample correlation has std ~ 1/sqrt(n) = 0.032, 19 of them
    assert abs(np.mean(across)) < 4 * 0.032 / np.sqrt(len(across))


def test_textures_are_the_three_skimage_images_in_patches():
    pytest.importorskip("skimage")
    ds = load_dataset("textures", patch=32)
    assert ds.data.shape == (3 * 16 * 16, 1, 32, 32)
    assert np.bincount(ds.labels).tolist() == [256, 256, 256]
    assert ds.data.min() >= -1 and ds.data.max() <= 1
    assert len(ds.identity["files_digest"]) == 64


def _cifar_records(labels: list[int], seed: int) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    rec = np.concatenate([np.asarray(labels, np.uint8)[:, None], pixels], axis=1)
    return rec.tobytes(), pixels.reshape(-1, 3, 32, 32)


def test_cifar10_is_read_from_its_binary_version(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = []
    for i in range(1, 6):
        raw, px = _cifar_records([i, 9 - i], seed=i)
        (folder / f"data_batch_{i}.bin").write_bytes(raw)
        expected.append(px)
    raw, test_px = _cifar_records([3], seed=9)
    (folder / "test_batch.bin").write_bytes(raw)
    ds = load_dataset("cifar10", data_dir=str(tmp_path))
    assert ds.data.shape == (10, 3, 32, 32)
    assert ds.labels.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    # channel planes R, G, B of 32 x 32 rows, mapped to [-1, 1]
    assert np.array_equal(ds.data, np.concatenate(expected).astype(np.float32) / 127.5 - 1)
    test = load_dataset("cifar10", data_dir=str(folder), train=False)
    assert test.data.shape == (1, 3, 32, 32) and test.labels.tolist() == [3]
    assert test.identity["files_digest"] != ds.identity["files_digest"]
    (folder / "data_batch_3.bin").write_bytes(raw[:-1])
    with pytest.raises(DataError, match="data_batch_3.bin is not whole 3,073-byte records"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_cifar10_python_version_is_refused_not_unpickled(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    # a pickle that would run code if it were loaded
    (folder / "data_batch_1").write_bytes(
        b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
    )
    code, _, err = run_cli(["precompute", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                            "--out", str(tmp_path / "c.zarr")], capsys)  # fmt: skip
    assert code != 0 and "never unpickled" in err and "cifar-10-batches-bin" in err, err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "c.zarr").exists()


def _idx(a: np.ndarray) -> bytes:
    return b"\x00\x00\x08" + bytes([a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape) + a.tobytes()


def test_mnist_is_read_from_its_idx_files(tmp_path, capsys):
    raw = tmp_path / "MNIST" / "raw"  # torchvision's layout; .gz or not
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 4, 5], np.uint8)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(x)))
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(y))
    ds = load_dataset("mnist", data_dir=str(tmp_path))
    assert ds.data.shape == (6, 1, 28, 28) and ds.labels.tolist() == y.tolist()
    assert np.array_equal(ds.data[:, 0], x.astype(np.float32) / 127.5 - 1)
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=str(tmp_path), train=False)
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(y)[:-2])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", data_dir=str(tmp_path))
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")  # header cut short
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("mnist", data_dir=str(tmp_path))
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(y))
    gz = (raw / "train-images-idx3-ubyte.gz").read_bytes()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated or not gzip"):
        load_dataset("mnist", data_dir=str(tmp_path))
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gz)
    out = tmp_path / "m.zarr"  # and through the whole stage
    code, _, err = run_cli(["precompute", "--dataset", "mnist", "--data-dir", str(tmp_path),
                            "--steps", "3", "--schedule", "two_D=1e-4:0.1,K=5e-5:0.05",
                            "--samples", "1", "--test-fraction", "0",
                            "--workers", "1", "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err


def test_image_folder_rgb_patches_keep_their_pixels(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8) for _ in range(2)]
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    ds = load_dataset("image-folder", data_dir=str(tmp_path), patch=8, channels=3)
    assert ds.data.shape == (2 * 3 * 5, 3, 8, 8)  # 24 x 40 -> 3 x 5 patches of 8 x 8 per image
    # patch (row 1, column 2) of the second image
    want = imgs[1][8:16, 16:24].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
    assert np.array_equal(ds.data[15 + 1 * 5 + 2], want)
    gray = load_dataset("image-folder", data_dir=str(tmp_path), size=16)
    assert gray.data.shape == (2, 1, 16, 16)


@pytest.mark.parametrize("name", ["socofing", "image-folder", "cifar10", "mnist"])
def test_no_data_folder_says_where_to_give_one(name, monkeypatch):
    monkeypatch.delenv("ORIENT_DATA", raising=False)
    with pytest.raises(
        DataError, match=r"no data folder given; pass --data-dir or set \$ORIENT_DATA"
    ):
        load_dataset(name)
