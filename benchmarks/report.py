"""Render docs/benchmarks.md from the JSON results in docs/benchmark-results/."""

from __future__ import annotations

import json

from common import RESULTS, ROOT


def fmt(v: float, pct: bool = False) -> str:
    return f"{v:.1%}" if pct else (f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}")


def check(ok: bool) -> str:
    return "met" if ok else "**not met**"


def precompute_section(r: dict) -> list[str]:
    f, e = r["full"], r["per_epoch"]
    m = r["machine"]
    return [
        "## Precompute stage (`benchmarks/bench_precompute.py`)",
        "",
        f"Machine: {m['cores']} cores, torch {m['torch']}, GPU: {m['cuda']}; {m['date']}. "
        f"Kuramoto local coupling, T = {f['config']['steps']}, M = {f['config']['M']}, synthetic fingerprints 32x32, "
        f"{f['config']['chains']} chains in blocks of {f['config']['chains_per_block']}.",
        "",
        "| measure | full mode (every step) | per-epoch mode (10 steps/chain) | target |",
        "|---|---|---|---|",
        f"| in-memory simulation, no encoding or writes | {fmt(f['in_memory_s'])} s | {fmt(e['in_memory_s'])} s | baseline |",
        f"| `run_precompute`, 1 worker, end to end | {fmt(f['precompute_1_workers_s'])} s | {fmt(e['precompute_1_workers_s'])} s | |",
        f"| overhead, end to end (incl. cluster start, data generation) | {fmt(f['overhead_end_to_end_1_worker'], True)} | {fmt(e['overhead_end_to_end_1_worker'], True)} | <= 15 %: {check(max(f['overhead_end_to_end_1_worker'], e['overhead_end_to_end_1_worker']) <= 0.15)} |",
        f"| overhead, block phase only | {fmt(f['overhead_blocks_phase_1_worker'], True)} | {fmt(e['overhead_blocks_phase_1_worker'], True)} | |",
        f"| tuples/s, 1 worker | {fmt(f['tuples_per_s_1_worker'])} | {fmt(e['tuples_per_s_1_worker'])} | |",
        f"| chain-steps/s, 1 worker | {fmt(f['chain_steps_per_s_1_worker'])} | {fmt(e['chain_steps_per_s_1_worker'])} | |",
        f"| tuples/s, 2 workers | {fmt(f['tuples_per_s_2_workers'])} | | |",
        f"| 1 -> 2 workers speed-up, end to end | {fmt(f['speedup_1_to_2_workers'])}x | | >= 1.6x: {check(f['speedup_1_to_2_workers'] >= 1.6)} |",
        f"| 1 -> 2 workers speed-up, block phase | {fmt(f['speedup_1_to_2_workers_blocks_phase'])}x | | |",
        f"| identical bytes with 1 and 2 workers | {f['identical_bytes_1_vs_2_workers']} | | required |",
        f"| bytes on disk per tuple | {fmt(f['bytes_per_tuple'])} | {fmt(e['bytes_per_tuple'])} | |",
        f"| ... vs raw float32 ({fmt(f['raw_float32_bytes_per_tuple'])} bytes) | {fmt(f['bytes_ratio'], True)} | {fmt(e['bytes_ratio'], True)} | <= 55 %: {check(f['bytes_ratio'] <= 0.55)} |",
        "",
    ]


def training_section(r: dict) -> list[str]:
    m = r["machine"]
    rows = [
        "## Training data (`benchmarks/bench_training.py`)",
        "",
        f"Machine: {m['cores']} cores, torch {m['torch']}, GPU: {m['cuda']}; {m['date']}. "
        "Kuramoto local coupling at 96x96, M = 5, batches of 64 tuples.",
        "",
        "| T | reference method (s/batch) | cached reader (s/batch) | speed-up | target |",
        "|---|---|---|---|---|",
    ]
    for T, ref in r["reference_s_per_batch"].items():
        sp = r["speedup_cached_vs_reference"][T]
        target = f">= 100x: {check(sp >= 100)}" if str(T) == "300" else ""
        rows.append(f"| {T} | {fmt(ref)} | {r['cached_s_per_batch']:.4f} | {fmt(sp)}x | {target} |")
    ts = r["train_step"]
    rows += [
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| one training step, tiny U-Net, batch 32, T = 300: naive (simulate + step) | {fmt(ts['naive_s'])} s | |",
        f"| ... cached (read + step) | {fmt(ts['cached_s'])} s | |",
        f"| ... speed-up | {fmt(ts['speedup'])}x | |",
        f"| data-wait fraction of `orient train` at default settings | {fmt(r['train_data_wait_fraction'], True)} | < 5 %: {check(r['train_data_wait_fraction'] < 0.05)} |",
        f"| reader throughput (raw tuple bytes, shuffled batches) | {r['reader_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        *(
            [
                f"| ... including phase decoding on the CPU | {r['reader_decoded_cpu_bytes_per_s'] / 2**20:,.0f} MiB/s | |"
            ]
            if "reader_decoded_cpu_bytes_per_s" in r
            else []
        ),
        *(
            [
                f"| contiguous Zarr chunk reads of the same arrays | {r['contiguous_zarr_bytes_per_s'] / 2**20:,.0f} MiB/s | |"
            ]
            if "contiguous_zarr_bytes_per_s" in r
            else []
        ),
        f"| plain reads of the chunk files (page cache) | {r['raw_read_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| reader / contiguous reads | {fmt(r['reader_vs_raw'], True)} | >= 50 %: {check(r['reader_vs_raw'] >= 0.5)} |",
        "",
    ]
    return rows


def main() -> None:
    lines = [
        "# Benchmarks",
        "",
        "Measured on this project's 2-core development machine, as ratios between runs of the same",
        "script (never as timed assertions in tests). Regenerate with",
        "`python benchmarks/bench_precompute.py && python benchmarks/bench_training.py && python benchmarks/report.py`",
        "(run from the repository root with the project installed); raw numbers are in",
        "`docs/benchmark-results/*.json`.",
        "",
    ]
    for name, section in (("precompute", precompute_section), ("training", training_section)):
        path = RESULTS / f"{name}.json"
        if path.exists():
            lines += section(json.loads(path.read_text()))
    notes = ROOT / "benchmarks" / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {ROOT / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
