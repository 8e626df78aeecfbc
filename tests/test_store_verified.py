"""`orient verify` records its outcome in the store, and `orient info` shows it: never verified,
verified ok, verified with damaged or unfinished blocks, and stale once blocks were written since."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import zarr

from conftest import SMALL, run_cli

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def _copy(small_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(small_store, copy)
    return copy


def _verified(url: Path, capsys) -> str:
    code, out, err = run_cli(["info", str(url)], capsys)
    assert code == 0, err
    return next(line for line in out.splitlines() if line.startswith("verified:"))


def _record(url: Path, capsys) -> dict:
    code, out, err = run_cli(["info", str(url), "--json"], capsys)
    assert code == 0, err
    return json.loads(out)["verified"]


def test_a_store_is_never_verified_until_verify_records_ok(small_store, tmp_path, capsys):
    copy = _copy(small_store, tmp_path)
    assert _verified(copy, capsys).startswith("verified: never")
    assert _record(copy, capsys) is None
    code, _, err = run_cli(["verify", str(copy), "--recompute", "1"], capsys)
    assert code == 0, err
    line = _verified(copy, capsys)
    assert re.match(rf"verified: {STAMP}, ok \(", line) and "STALE" not in line, line
    rec = _record(copy, capsys)
    assert rec["ok"] and rec["result"] == "ok" and not rec["stale"]
    assert rec["damaged_blocks"] == 0 and rec["checked"]["groups"] == ["full"]
    n_blocks = zarr.open_group(str(copy), mode="r")["full"].attrs["layout"]["n_blocks"]
    assert rec["checked"]["blocks"] == n_blocks and rec["checked"]["recomputed"] == 1
    # the record is an attribute of the root beside the metadata, which stay as they were
    attrs = zarr.open_group(str(copy), mode="r").attrs.asdict()
    assert attrs["orient"] == zarr.open_group(str(small_store), mode="r").attrs["orient"]
    assert attrs["orient_verified"]["time"] == rec["time"]


def test_a_corrupted_chunk_is_recorded_as_damage_until_repaired(small_store, tmp_path, capsys):
    """`complete: yes` says every block was written; only `verified:` says they are intact."""
    copy = _copy(small_store, tmp_path)
    shard = next(p for p in sorted((copy / "full" / "x_t" / "c").rglob("*")) if p.is_file())
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    code, out, _ = run_cli(["info", str(copy)], capsys)
    assert "complete: yes" in out and "verified: never" in out
    code, out, _ = run_cli(["verify", str(copy), "--recompute", "0"], capsys)
    assert code == 1 and "corrupted" in out
    line = _verified(copy, capsys)
    assert re.match(rf"verified: {STAMP}, 1 damaged block \(", line), line
    rec = _record(copy, capsys)
    assert not rec["ok"] and rec["damaged_blocks"] == 1 and not rec["stale"]
    code, out, err = run_cli(["verify", str(copy), "--repair", "--recompute", "0"], capsys)
    assert code == 0 and "repaired" in out, out + err
    line = _verified(copy, capsys)
    assert re.match(rf"verified: {STAMP}, ok \(1 block repaired\)", line), line
    assert "STALE" not in line and _record(copy, capsys)["repaired_blocks"] == 1


def test_blocks_written_after_a_verification_make_its_record_stale(small_store, tmp_path, capsys):
    """A store killed before a block's marker: verify records the unfinished block; the resume
    that writes it makes the record stale (info says so), and verifying again freshens it."""
    copy = _copy(small_store, tmp_path)
    zarr.open_array(str(copy / "full" / "done"), mode="r+")[1] = 0
    code, out, _ = run_cli(["verify", str(copy), "--recompute", "0"], capsys)
    assert code == 1 and "INCOMPLETE" in out
    line = _verified(copy, capsys)
    assert re.match(rf"verified: {STAMP}, 1 unfinished block \(", line) and "STALE" not in line
    code, _, err = run_cli(["precompute", *SMALL, "--workers", "1", "--out", str(copy), "--resume"], capsys)  # fmt: skip
    assert code == 0, err
    line = _verified(copy, capsys)
    assert "1 unfinished block" in line and "STALE: blocks were written" in line, line
    assert _record(copy, capsys)["stale"]
    assert run_cli(["verify", str(copy), "--recompute", "0"], capsys)[0] == 0
    line = _verified(copy, capsys)
    assert ", ok (" in line and "STALE" not in line, line


def test_a_block_rewritten_with_other_bytes_makes_the_record_stale(small_store, tmp_path, capsys):
    from orient.dynamics import process_from_config
    from orient.pipeline.blocks import Plan, simulate_block
    from orient.storage.store import TupleStore, write_block

    copy = _copy(small_store, tmp_path)
    assert run_cli(["verify", str(copy), "--recompute", "0"], capsys)[0] == 0
    store = TupleStore.open(str(copy), mode="r+")
    plan = Plan.from_json(store.meta["plan"])
    same = simulate_block(store.process(process_from_config), store.source(), plan, 0, 1)
    write_block(store.group("full"), 1, same)  # the same bytes: the record still holds
    assert not _record(copy, capsys)["stale"]
    other = simulate_block(store.process(process_from_config), store.source(), plan, 7, 1)
    write_block(store.group("full"), 1, other)
    assert _record(copy, capsys)["stale"] and "STALE" in _verified(copy, capsys)
    assert np.asarray(zarr.open_group(str(copy), mode="r")["full/done"][...]).all()
