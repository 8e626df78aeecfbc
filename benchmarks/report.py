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
    c = f["config"]
    rows = [
        "## Precompute stage (`benchmarks/bench_precompute.py`)",
        "",
        f"Machine: {m['cores']} cores, torch {m['torch']}, GPU: {m['cuda']}; {m['date']}. "
        f"Kuramoto local coupling, T = {c['steps']}, M = {c['M']}, synthetic fingerprints 32x32, "
        f"{c['chains']} chains in {c['blocks']} blocks of {c['chains_per_block']}; fastest of "
        f"{c['repeats']} interleaved runs. *Block phase*: simulating, encoding and writing every block "
        "(cluster start and data generation excluded, listed separately). *In memory*: the same "
        "simulation of the same blocks with no encoding and no writes, in as many processes.",
        "",
        "| measure | full mode (every step) | per-epoch mode (10 steps/chain) | target |",
        "|---|---|---|---|",
    ]
    for w in (1, 2):
        rows += [
            f"| in memory, {w} process(es) | {fmt(f[f'in_memory_{w}_workers_s'])} s | {fmt(e[f'in_memory_{w}_workers_s'])} s | baseline |",
            f"| `run_precompute` block phase, {w} worker(s) | {fmt(f[f'blocks_{w}_workers_s'])} s | {fmt(e[f'blocks_{w}_workers_s'])} s | |",
            f"| I/O + encoding overhead, {w} worker(s) | {fmt(f[f'overhead_{w}_workers'], True)} | {fmt(e[f'overhead_{w}_workers'], True)} | <= 15 %: {check(max(f[f'overhead_{w}_workers'], e[f'overhead_{w}_workers']) <= 0.15)} |",
            f"| `run_precompute` end to end, {w} worker(s) | {fmt(f[f'end_to_end_{w}_workers_s'])} s | {fmt(e[f'end_to_end_{w}_workers_s'])} s | |",
            f"| tuples/s, {w} worker(s) (block phase) | {fmt(f[f'tuples_per_s_{w}_workers'])} | {fmt(e[f'tuples_per_s_{w}_workers'])} | |",
            f"| chain-steps/s, {w} worker(s) (block phase) | {fmt(f[f'chain_steps_per_s_{w}_workers'])} | {fmt(e[f'chain_steps_per_s_{w}_workers'])} | |",
        ]
    rows += [
        f"| 1 -> 2 workers speed-up, end to end | {fmt(f['speedup_1_to_2_workers'])}x | {fmt(e['speedup_1_to_2_workers'])}x | >= 1.6x: {check(max(f['speedup_1_to_2_workers'], e['speedup_1_to_2_workers']) >= 1.6)} |",
        f"| 1 -> 2 workers speed-up, block phase | {fmt(f['speedup_1_to_2_workers_blocks_phase'])}x | {fmt(e['speedup_1_to_2_workers_blocks_phase'])}x | |",
        f"| 1 -> 2 processes speed-up, in memory | {fmt(f['speedup_1_to_2_workers_in_memory'])}x | {fmt(e['speedup_1_to_2_workers_in_memory'])}x | |",
        f"| identical bytes with 1 and 2 workers | {f['identical_bytes_1_vs_2_workers']} | {e['identical_bytes_1_vs_2_workers']} | required |",
        f"| bytes on disk per tuple | {fmt(f['bytes_per_tuple'])} | {fmt(e['bytes_per_tuple'])} | |",
        f"| ... vs raw float32 ({fmt(f['raw_float32_bytes_per_tuple'])} bytes) | {fmt(f['bytes_ratio'], True)} | {fmt(e['bytes_ratio'], True)} | <= 55 %: {check(max(f['bytes_ratio'], e['bytes_ratio']) <= 0.55)} |",
        "",
    ]
    return rows


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
        f"| reader, shuffled batches, store read from disk (page cache dropped) | {r['reader_cold_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| contiguous Zarr chunk reads, from disk | {r['contiguous_zarr_cold_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| raw contiguous reads of the chunk files, from disk | {r['raw_cold_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| **reader / raw, from disk** | {fmt(r['reader_vs_raw_cold'], True)} | >= 50 %: {check(r['reader_vs_raw_cold'] >= 0.5)} |",
        f"| reader, page cache warm | {r['reader_warm_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| contiguous Zarr chunk reads, warm | {r['contiguous_zarr_warm_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| raw contiguous reads, warm (memory bandwidth) | {r['raw_warm_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| reader / raw, warm | {fmt(r['reader_vs_raw_warm'], True)} | |",
        f"| reader incl. phase decoding on the CPU (warm) | {r['reader_decoded_cpu_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
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
