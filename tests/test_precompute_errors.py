"""Bad input to `orient precompute`: one-line errors, non-zero exits, nothing written or lost."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from conftest import SMALL, assert_same_bytes, run_cli

FAST = [
    "--steps",
    "3",
    "--schedule",
    "two_D=1e-4:0.1,K=5e-5:0.05",
    "--samples",
    "1",
    "--workers",
    "1",
]


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("orient: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for f in fragments:
        assert f in errors[0], (f, errors[0])


def write_png(path: Path, size: tuple[int, int], seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, size=size[::-1], dtype=np.uint8)
    Image.fromarray(a).save(path)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--steps", "0"], ["--steps must be >= 1"]),
        (["--process", "brownian"], ["unknown process 'brownian'"]),
        (["--schedule", "local-77"], ["unknown Kuramoto schedule 'local-77'"]),
        (
            ["--schedule", "two_D=1e-5:0.1,K=5e-5:0.05"],
            ["smallest transition noise std (0.00316 at t=1)", "more than 1 % of the noise"],
        ),
        (["--samples", "0"], ["M) must be >= 1"]),
        (["--disk-budget", "1K"], ["too small for one tuple per chain"]),
        (["--dataset", "nope"], ["unknown data set 'nope'"]),
        (["--process-opt", "window=4"], ["odd integer"]),
        (
            ["--device", "cuda"]
            if not __import__("torch").cuda.is_available()
            else ["--device", "tpu"],
            ["device"],
        ),
        (["--tuples-per-chain", "500"], ["tuples per chain must be in 1..T"]),
        (["--max-batch", "0"], ["--max-batch must be >= 1"]),
        (["--seed", "-1"], ["--seed must be >= 0"]),
        (["--num-examples", "0"], ["--num-examples must be >= 1"]),
        (["--every", "11"], ["--every must be in 1..T=10"]),
        (["--block-memory", "0"], ["--block-memory must be positive"]),
        (["--block-memory", "lots"], ["--block-memory: cannot read size 'lots'"]),
        (["--io-threads", "0"], ["--io-threads must be >= 1"]),
        (["--data-opt", "seed=1.5"], ["option seed must be an integer, got 1.5"]),
        (["--data-opt", "seed=abc"], ["option seed must be an integer, got 'abc'"]),
        (
            ["--process-opt", "windw=3"],
            [
                "process kuramoto-local has no option 'windw'; it takes: boundary, channels, "
                "n_terms, prior_kappa, prior_r, psi_ref, window"
            ],
        ),
        (
            ["--data-opt", "sizee=3"],
            ["data set synthetic-fingerprints has no option 'sizee'; it takes: n, seed, size"],
        ),
    ],
)
def test_bad_options(args, fragments, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    base = [a for a in SMALL if a not in ("--steps", "10")] if "--steps" in args else SMALL
    code, _, err = run_cli(["precompute", *base, *args, "--out", str(out)], capsys)
    one_line_error(code, err, *fragments)
    assert not out.exists()  # nothing half-written


def test_data_options_take_the_types_their_loader_declares(tmp_path):
    from orient.pipeline.datasets import DataError, load_dataset

    ds = load_dataset("snp", n=20, d=1e2, block=10)  # 1e2 reads as a float: an integer here
    assert ds.data.shape == (20, 100) and ds.identity["params"]["d"] == 100
    assert load_dataset("gmm2d", n=10, separation=3).identity["params"]["separation"] == 3.0
    with pytest.raises(DataError, match="option std must be a number, got 'abc'"):
        load_dataset("gmm2d", std="abc")
    with pytest.raises(DataError, match="option channels must be an integer, got True"):
        load_dataset("image-folder", data_dir=str(tmp_path), channels=True)
    with pytest.raises(DataError, match="2024 does not exist"):  # a folder named like a number
        load_dataset("image-folder", data_dir=2024)
    with pytest.raises(DataError, match="option select must be names mapped to names"):
        load_dataset("socofing", data_dir=str(tmp_path), select={"hand": 1})
    # one set name is a one-element tuple, not a tuple of its letters
    with pytest.raises(DataError, match=r"set\(s\) Altered-Easy found"):
        load_dataset("socofing", data_dir=str(tmp_path), sets="Altered-Easy")


def test_missing_and_empty_data_folders(tmp_path, capsys):
    code, _, err = run_cli(
        ["precompute", "--dataset", "socofing", "--data-dir", str(tmp_path / "nope")], capsys
    )
    one_line_error(code, err, "does not exist", "kaggle")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(
        ["precompute", "--dataset", "socofing", "--data-dir", str(empty)], capsys
    )
    one_line_error(code, err, "no .BMP files", str(empty))
    code, _, err = run_cli(
        ["precompute", "--dataset", "image-folder", "--data-dir", str(empty)], capsys
    )
    one_line_error(code, err, "no image files")


def test_unreadable_images_are_skipped_or_fatal(tmp_path, capsys):
    folder = tmp_path / "imgs"
    for i in range(6):
        write_png(folder / f"ok{i}.png", (20, 20), seed=i)
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "s.zarr"
    code, stdout, err = run_cli(
        [
            "precompute",
            "--dataset",
            "image-folder",
            "--data-dir",
            str(folder),
            *FAST,
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "skipped 1 unreadable files" in err and f"store: {out}" in stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"junk")
    code, _, err = run_cli(
        ["precompute", "--dataset", "image-folder", "--data-dir", str(bad)], capsys
    )
    one_line_error(code, err, "no readable images", "1 files could not be read")


def test_mixed_image_sizes(tmp_path, capsys):
    folder = tmp_path / "imgs"
    write_png(folder / "a.png", (20, 20))
    write_png(folder / "b.png", (24, 20))
    code, _, err = run_cli(
        ["precompute", "--dataset", "image-folder", "--data-dir", str(folder)], capsys
    )
    one_line_error(code, err, "mixed sizes", "--image-size")
    out = tmp_path / "ok.zarr"
    code, _, err = run_cli(
        ["precompute", "--dataset", "image-folder", "--data-dir", str(folder), "--image-size", "16",
         "--test-fraction", "0", *FAST, "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_array_data(bad, tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    x[4, 1] = bad
    f = tmp_path / "x.npy"
    np.save(f, x)
    code, _, err = run_cli(["precompute", "--dataset", "array", "--data-dir", str(f), "--process", "vp",
                            "--schedule", "beta=1e-3:0.1", "--steps", "5"], capsys)  # fmt: skip
    one_line_error(code, err, "NaN or Inf")


def test_existing_output_is_never_silently_replaced(small_store, tmp_path, capsys):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(["precompute", *SMALL, "--out", str(target), *extra], capsys)
        one_line_error(code, err, "not an orient store")
    assert (target / "thesis.tex").read_text() == "years of work"
    copy = tmp_path / "store.zarr"
    shutil.copytree(small_store, copy)
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(copy)], capsys)
    one_line_error(code, err, "--resume", "--overwrite")
    # refused before the data are read: here they are missing, and the store is what is named
    missing = ["--dataset", "image-folder", "--data-dir", str(tmp_path / "nowhere")]
    code, _, err = run_cli(["precompute", *missing, "--out", str(copy)], capsys)
    one_line_error(code, err, "existing store")
    empty = tmp_path / "empty"  # an empty folder holds nothing to lose: the store goes there
    empty.mkdir()
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(empty)], capsys)
    assert code == 0, err


def test_a_creation_cut_short_is_recognised_and_created_afresh(
    small_store, tmp_path, capsys, monkeypatch
):
    """A store whose creation stopped before its metadata (a kill, a full disk) is neither
    mistaken for a store nor left for ever: it is named as such, and --resume (or --overwrite)
    creates it afresh, to the bytes of an uninterrupted run."""
    import orient.storage.store as st

    out = tmp_path / "cut.zarr"
    real, calls = st._write_whole, []

    def disk_fills(g, name, a):  # the third whole array of the creation finds the disk full
        calls.append(name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(g, name, a)

    monkeypatch.setattr(st, "_write_whole", disk_fills)
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(out)], capsys)
    assert code != 0 and "Traceback" not in err, err
    monkeypatch.undo()
    assert st.store_state(str(out)) == "interrupted"
    for cmd in (["info", str(out)], ["precompute", *SMALL, "--out", str(out)]):
        one_line_error(*run_cli(cmd, capsys)[::2], "interrupted", "--resume")
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert_same_bytes(small_store, out)


def test_an_overwrite_cut_short_leaves_a_replaceable_folder(small_store, tmp_path, monkeypatch):
    """--overwrite first turns the old store into an interrupted creation, then empties the
    folder (which stays, with the writer lock on it): stopped half-way, what is left is still
    recognised and replaced by the next --overwrite or --resume, never refused as foreign."""
    import orient.storage.store as st

    old = tmp_path / "old.zarr"
    shutil.copytree(small_store, old)
    real, calls = shutil.rmtree, []

    def stops(path, *a, **k):  # the second folder removed finds the disk gone
        calls.append(path)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(path, *a, **k)

    monkeypatch.setattr(st.shutil, "rmtree", stops)
    with pytest.raises(OSError):
        st.clear(str(old))
    monkeypatch.undo()
    assert st.store_state(str(old)) == "interrupted" and (old / "zarr.json").is_file()
    st.clear(str(old))
    assert old.is_dir() and not any(old.iterdir())


def test_a_store_of_another_format_version_is_replaced_only_with_overwrite(
    small_store, tmp_path, capsys
):
    old = tmp_path / "old.zarr"
    shutil.copytree(small_store, old)
    root = zarr.open_group(str(old), mode="r+")
    root.attrs["orient"] = {**root.attrs["orient"], "format_version": 2}
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(old), "--resume"], capsys)
    one_line_error(code, err, "store format 2", "--overwrite")
    one_line_error(
        *run_cli(["precompute", *SMALL, "--out", str(old)], capsys)[::2], "existing store"
    )
    code, _, err = run_cli(["precompute", *SMALL, "--out", str(old), "--overwrite"], capsys)
    assert code == 0, err
    assert_same_bytes(small_store, old)


def test_resume_with_another_process_is_refused(small_store, tmp_path, capsys):
    copy = tmp_path / "store.zarr"
    shutil.copytree(small_store, copy)
    args = [a if a != "two_D=1e-4:0.1,K=5e-5:0.05" else "two_D=1e-4:0.1,K=5e-5:0.02" for a in SMALL]
    code, _, err = run_cli(
        ["precompute", *args, "--process", "kuramoto-global", "--out", str(copy), "--resume"],
        capsys,
    )
    one_line_error(code, err, "was written for process kuramoto/local")
    code, _, err = run_cli(
        ["precompute", *SMALL, "--out", str(tmp_path / "none.zarr"), "--resume"], capsys
    )
    one_line_error(code, err, "no store")


def test_resume_on_another_device_is_refused(small_store, tmp_path, capsys):
    """The random draws depend on the device: a store is resumed only on the device it records
    (``auto`` picks it), and a store written on CUDA is not continued on the CPU."""
    import torch
    import zarr

    from orient.pipeline.precompute import check_device
    from orient.storage.store import TupleStore

    recorded = TupleStore.open(str(small_store)).meta["device"]
    assert recorded == check_device("auto") != "auto"  # auto, resolved, recorded
    copy = tmp_path / "store.zarr"
    shutil.copytree(small_store, copy)
    root = zarr.open_group(str(copy), mode="r+")
    meta = root.attrs["orient"]
    root.attrs["orient"] = {**meta, "device": "cuda"}
    resume = ["precompute", *SMALL, "--out", str(copy), "--resume"]
    code, _, err = run_cli([*resume, "--device", "cpu"], capsys)
    one_line_error(code, err, "was written on cuda, not cpu", "--device cuda")
    if not torch.cuda.is_available():
        code, _, err = run_cli(resume, capsys)  # --device auto
        one_line_error(code, err, "was written on cuda", "machine with CUDA")


def test_scheduler_that_does_not_answer(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    code, _, err = run_cli(
        ["precompute", *SMALL, "--scheduler", "tcp://127.0.0.1:9", "--out", str(out)], capsys
    )
    one_line_error(code, err, "does not answer")
    assert not out.exists()


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("nosuchfs://bucket/s.zarr", "Protocol not known: nosuchfs"),
        ("memory://s.zarr", "in-memory file system lives inside one process"),
    ],
)
def test_output_url_that_cannot_be_shared_or_opened(url, fragment, capsys):
    code, _, err = run_cli(["precompute", *SMALL, "--out", url], capsys)
    one_line_error(code, err, fragment)


def test_output_url_whose_filesystem_package_is_missing(capsys):
    """s3:// without s3fs installed: fsspec's ImportError becomes one line naming the package."""
    import importlib.util

    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed here")
    code, _, err = run_cli(["precompute", *SMALL, "--out", "s3://bucket/s.zarr"], capsys)
    one_line_error(code, err, "s3fs")


def test_socofing_folder_names_parsed_and_selected(tmp_path, capsys):
    root = tmp_path / "downloads" / "SOCOFing"
    for subj in (1, 2):
        for finger in ("index", "thumb"):
            write_png_bmp = root / "Real" / f"{subj}__M_Left_{finger}_finger.BMP"
            write_png(write_png_bmp.with_suffix(".png"), (96, 103), seed=subj)
            Image.open(write_png_bmp.with_suffix(".png")).save(write_png_bmp, format="BMP")
            write_png_bmp.with_suffix(".png").unlink()
        alt = root / "Altered" / "Altered-Easy" / f"{subj}__F_Right_index_finger_CR.bmp"
        alt.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (96, 103)).save(alt, format="BMP")
    out = tmp_path / "s.zarr"
    code, stdout, err = run_cli(
        ["precompute", "--dataset", "socofing", "--data-dir", str(tmp_path / "downloads"), "--select", "finger=index",
         "--image-size", "16", "--test-fraction", "0.5", *FAST, "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    from orient.storage.store import TupleStore

    table = TupleStore.open(str(out)).read_table("metadata").to_pylist()
    assert sorted((r["subject"], r["finger"], r["set"]) for r in table) == [
        (1, "index", "Real"),
        (2, "index", "Real"),
    ]
    assert sum(r["train"] for r in table) == 1
    from orient.pipeline.datasets import socofing

    ds = socofing(str(tmp_path / "downloads"), size=16, sets=("Real", "Altered-Easy"))
    assert ds.data.shape == (6, 1, 16, 16)
    assert socofing(str(tmp_path / "downloads")).data.shape == (4, 1, 96, 96)  # paper A's size
    assert {r["alteration"] for r in ds.metadata.to_pylist()} == {"none", "CR"}


UNSHARE = shutil.which("unshare")


@pytest.mark.skipif(UNSHARE is None, reason="needs util-linux unshare to mount a small tmpfs")
def test_disk_full_stops_cleanly_and_the_store_stays_resumable(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    orient = f"{sys.executable} -c 'from orient.cli import main; main()'"
    args = (
        "precompute --num-examples 40 --image-size 16 --steps 30 --schedule two_D=1e-4:0.1,K=5e-5:0.05 "
        f"--samples 2 --max-batch 2 --workers 1 --out {mnt}/s.zarr"
    )
    # the store fits the disk when it starts (a store that would not is refused before any work:
    # tests/test_precompute_plan_size.py); another file fills the disk once blocks are written
    filler = (
        f"(while [ ! -d {mnt}/s.zarr/full/x_t/c ]; do sleep 0.01; done; "
        f"cat /dev/zero > {mnt}/filler 2> /dev/null) & "
    )
    script = (
        f"mount -t tmpfs -o size=20m tmpfs {mnt} || exit 77; {filler}"
        f"{orient} {args}; echo RC1=$?; wait; "
        f"{orient} info {mnt}/s.zarr | grep -c 'complete: NO'; "
        f"rm {mnt}/filler; "
        f"{orient} {args} --resume > /dev/null; echo RC2=$?; "
        f"{orient} verify {mnt}/s.zarr --recompute 1 > /dev/null; echo RC3=$?"
    )
    r = subprocess.run(
        [UNSHARE, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300
    )
    if r.returncode == 77:
        pytest.skip("cannot mount a tmpfs here")
    assert "RC1=1" in r.stdout or "RC1=2" in r.stdout, r.stdout + r.stderr
    err_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("orient: error:")]
    assert err_lines and "disk full" in err_lines[0] and "--resume" in err_lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert "RC2=0" in r.stdout and "RC3=0" in r.stdout, r.stdout + r.stderr


def test_an_output_path_under_a_file_is_an_input_error(tmp_path, capsys):
    """--out below an existing file: one line naming the path, exit 2 like other bad input."""
    (tmp_path / "afile").write_text("not a folder")
    code, _, err = run_cli(
        ["precompute", *SMALL, "--out", str(tmp_path / "afile" / "s.zarr")], capsys
    )
    one_line_error(code, err, "Not a directory", "afile")
    assert code == 2
    assert (tmp_path / "afile").read_text() == "not a folder"


def _undecodable_images(folder: Path) -> Path:
    """Images whose headers read but whose pixels do not: preparing them fails, describing not."""
    for i in range(3):
        write_png(folder / f"a{i}.png", (64, 64), seed=i)
        data = (folder / f"a{i}.png").read_bytes()
        (folder / f"a{i}.png").write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--process", "brownian"], "unknown process 'brownian'"),
        (["--process-opt", "window=4"], "odd integer"),
        (["--process-opt", "colour=1"], "has no option"),
        (["--schedule", "local-77"], "unknown Kuramoto schedule 'local-77'"),
        (["--schedule", "two_D=1e-5:0.1,K=5e-5:0.05"], "smallest transition noise std"),
        (["--process", "vp", "--schedule", "beta=0:2"], "beta must lie in (0, 1)"),
        (["--process", "spde-heat", "--process-opt", "horizon=-1"], "horizon"),
        (["--data-opt", "channels=2"], "channels must be 1 (grayscale) or 3 (RGB), got 2"),
        (["--data-opt", "patch=200"], "smaller than the 200x200 patch size"),
        (["--every", "200"], "--every must be in 1..T=100"),
        (["--tuples-per-chain", "101"], "tuples per chain must be in 1..T=100"),
        (["--test-fraction", "1"], "test fraction must be in [0, 1)"),
        (["--max-size", "1K"], "--max-size 1.0 KiB"),
    ],
)
def test_every_setting_is_checked_before_the_data_are_prepared(args, fragment, tmp_path, capsys):
    """Each bad setting is named, not the data: preparing these images would fail (they cannot
    be decoded), so an error about them would mean the data came first. Nothing is written."""
    folder = _undecodable_images(tmp_path / "imgs")
    out = tmp_path / "s.zarr"
    data = ["--dataset", "image-folder", "--data-dir", str(folder), "--workers", "1"]
    code, _, err = run_cli(["precompute", *data, *args, "--out", str(out)], capsys)
    one_line_error(code, err, fragment)
    assert code == 2 and "preparing" not in err and not out.exists()
    # the same command with good settings reaches the data, and fails there
    code, _, err = run_cli(["precompute", *data, "--out", str(out)], capsys)
    one_line_error(code, err, "no readable images")


def test_a_file_given_as_data_folder_is_named_a_file(tmp_path, capsys):
    f = tmp_path / "SOCOFing.zip"
    f.write_bytes(b"PK")
    for dataset in ("socofing", "image-folder", "mnist", "cifar10"):
        code, _, err = run_cli(["precompute", "--dataset", dataset, "--data-dir", str(f)], capsys)
        one_line_error(code, err, f"{f} is a file, not a folder")
    d = tmp_path / "folder"
    d.mkdir()
    code, _, err = run_cli(["precompute", "--dataset", "array", "--data-dir", str(d)], capsys)
    one_line_error(code, err, "is a folder", ".npy file")


def test_a_resume_with_another_process_is_refused_before_the_data(small_store, tmp_path, capsys):
    """A process that is not fitted to data has its configuration before any data are prepared:
    resuming a store with another one is refused first (the images here cannot be decoded)."""
    copy = tmp_path / "store.zarr"
    shutil.copytree(small_store, copy)
    folder = _undecodable_images(tmp_path / "imgs")
    args = [a for a in SMALL if a not in ("--num-examples", "12")]
    code, _, err = run_cli(
        ["precompute", *args, "--dataset", "image-folder", "--data-dir", str(folder),
         "--process", "kuramoto-global", "--out", str(copy), "--resume"], capsys)  # fmt: skip
    one_line_error(code, err, "was written for process kuramoto/local")
    assert "preparing" not in err
    assert_same_bytes(small_store, copy)
