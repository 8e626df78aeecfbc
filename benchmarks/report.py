"""Render docs/benchmarks.md from the JSON results in docs/benchmark-results/."""

from __future__ import annotations

import json
import statistics

from common import RESULTS, ROOT


def fmt(v: float, pct: bool = False) -> str:
    return f"{v:.1%}" if pct else (f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}")


def check(ok: bool) -> str:
    return "met" if ok else "**not met**"


def paired(x: dict, w: int) -> str:
    """Each repeat's block phase over the in-memory run that followed it: +a / +b / ... (median)."""
    runs = x["runs"][str(w)]
    ratios = [b / m - 1 for b, m in zip(runs["blocks_s"], runs["in_memory_s"], strict=True)]
    each = " / ".join(f"{v:+.0%}" for v in ratios)
    return f"{each} (median {statistics.median(ratios):+.0%})"


def fixed_seconds(x: dict, w: int) -> float:
    """Median over repeats of a run's end-to-end time minus its block phase."""
    runs = x["runs"][str(w)]
    return statistics.median(
        e - b for e, b in zip(runs["end_to_end_s"], runs["blocks_s"], strict=True)
    )


def precompute_section(
    r: dict, title: str = "## Precompute stage (`benchmarks/bench_precompute.py`)"
) -> list[str]:
    labels = [
        ("full", "full, T = 100"),
        ("per_epoch", "per-epoch, T = 100"),
        ("per_epoch_T300", "per-epoch, T = 300"),
    ]
    modes = [(k, label) for k, label in labels if k in r]
    cols = [r[k] for k, _ in modes]
    m = r["machine"]
    c = cols[0]["config"]
    size = c["data_options"]["size"]

    def row(label: str, key: str, kind: str = "num", target: str = "") -> str:
        vals = []
        for x in cols:
            v = x[key]
            vals.append(
                str(v) if kind == "raw" else fmt(v, True) if kind == "pct" else
                f"{fmt(v)} s" if kind == "s" else f"{v:.3f}x" if kind == "x" else fmt(v)
            )  # fmt: skip
        return f"| {label} | " + " | ".join(vals) + f" | {target} |"

    def per_config(key: str, ok) -> str:  # noqa: ANN001
        good = [lab for (_, lab), x in zip(modes, cols, strict=True) if ok(x[key])]
        if len(good) == len(cols):
            return "met"
        return f"met for {'; '.join(good)} only" if good else "**not met**"

    def worst(key: str, lower: bool) -> float:
        vals = [x[key] for x in cols]
        return max(vals) if lower else min(vals)

    rows = [
        title,
        "",
        f"Machine: {m['cores']} cores, torch {m['torch']}, GPU: {m['cuda']}; {m['date']}. "
        f"Kuramoto local coupling, M = {c['M']}, synthetic fingerprints {size}x{size}, "
        f"{c['chains']} chains in {c['blocks']} blocks of {c['chains_per_block']}; fastest of "
        f"{c['repeats']} interleaved runs. "
        + (
            "Per-epoch mode writes 10 tuples per chain. "
            if any("epoch" in k for k, _ in modes)
            else ""
        )
        + "*Block phase*: "
        "simulating, encoding and writing every block (cluster start and data generation excluded, "
        "listed separately). *In memory*: the same simulation of the same blocks with no encoding "
        "and no writes, in as many processes.",
        "",
        "| measure | " + " | ".join(label for _, label in modes) + " | target |",
        "|---" * (len(modes) + 2) + "|",
    ]
    for w in (1, 2):
        verdict = per_config(f"overhead_{w}_workers", lambda v: v <= 0.15)
        rows += [
            row(f"in memory, {w} process(es)", f"in_memory_{w}_workers_s", "s", "baseline"),
            row(f"`run_precompute` block phase, {w} worker(s)", f"blocks_{w}_workers_s", "s"),
            row(
                f"I/O + encoding overhead, {w} worker(s)",
                f"overhead_{w}_workers",
                "pct",
                f"<= 15 %: {verdict}",
            ),
            *(
                [
                    row(
                        f"... as a ratio of medians, {w} worker(s)",
                        f"overhead_{w}_workers_median",
                        "pct",
                    )
                ]
                if f"overhead_{w}_workers_median" in cols[0]
                else []
            ),
            f"| ... per repeat (precompute run / the in-memory run right after it), {w} worker(s) | "
            + " | ".join(paired(x, w) for x in cols)
            + " | |",
            row(f"`run_precompute` end to end, {w} worker(s)", f"end_to_end_{w}_workers_s", "s"),
            f"| ... of which fixed per run (end to end - block phase: data, cluster start and "
            f"stop; median), {w} worker(s) | "
            + " | ".join(f"{fixed_seconds(x, w):.2f} s" for x in cols)
            + " | |",
            row(f"tuples/s, {w} worker(s) (block phase)", f"tuples_per_s_{w}_workers"),
            row(f"chain-steps/s, {w} worker(s) (block phase)", f"chain_steps_per_s_{w}_workers"),
        ]
    rows += [
        row(
            "1 -> 2 workers speed-up, end to end",
            "speedup_1_to_2_workers",
            "x",
            f">= 1.6x: {per_config('speedup_1_to_2_workers', lambda v: v >= 1.6)}",
        ),
        row(
            "1 -> 2 workers speed-up, block phase",
            "speedup_1_to_2_workers_blocks_phase",
            "x",
            f">= 1.6x: {per_config('speedup_1_to_2_workers_blocks_phase', lambda v: v >= 1.6)}",
        ),
        row("1 -> 2 processes speed-up, in memory", "speedup_1_to_2_workers_in_memory", "x"),
        row(
            "identical bytes with 1 and 2 workers",
            "identical_bytes_1_vs_2_workers",
            "raw",
            "required",
        ),
        row("bytes on disk per tuple", "bytes_per_tuple"),
        row(
            f"... vs raw float32 ({fmt(cols[0]['raw_float32_bytes_per_tuple'])} bytes)",
            "bytes_ratio",
            "pct",
            f"<= 55 %: {check(worst('bytes_ratio', True) <= 0.55)}",
        ),
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
        f"| raw contiguous reads of the shard files, from disk | {r['raw_cold_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| **reader / raw, from disk** | {fmt(r['reader_vs_raw_cold'], True)} | >= 50 %: {check(r['reader_vs_raw_cold'] >= 0.5)} |",
        f"| reader, page cache warm | {r['reader_warm_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| contiguous Zarr chunk reads, warm | {r['contiguous_zarr_warm_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| raw contiguous reads, warm (memory bandwidth) | {r['raw_warm_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        f"| reader / raw, warm | {fmt(r['reader_vs_raw_warm'], True)} | |",
        f"| reader incl. phase decoding on the CPU (warm) | {r['reader_decoded_cpu_bytes_per_s'] / 2**20:,.0f} MiB/s | |",
        "",
    ]
    return rows


def write_floor_section(r: dict) -> list[str]:
    m, c = r["machine"], r["config"]
    labels = {
        "none": "simulate and encode only (no writes)",
        "raw": "+ raw `O_DIRECT` writes of the same bytes (5 per block, one file)",
        "store": "+ `write_block` (the store: one shard file per array, CRC32C, renames, digest, marker)",
    }
    rows = [
        "## Cost of the writes beside two simulations (`benchmarks/bench_write_floor.py`)",
        "",
        f"Machine: {m['cores']} cores; {m['date']}. {c['processes']} processes, one per core, each "
        f"simulating {c['blocks_per_process']} full-mode blocks (144 MB of tuples each) of the "
        f"configuration above; medians of {c['repeats']} alternating repeats.",
        "",
        "| mode | wall | vs no writes (per-repeat median) | user CPU | system CPU | iowait |",
        "|---|---|---|---|---|---|",
    ]
    for mode, label in labels.items():
        if f"{mode}_median_s" not in r:
            continue
        rows.append(
            f"| {label} | {fmt(r[f'{mode}_median_s'])} s | {r[f'{mode}_vs_none_median'] - 1:+.0%} "
            f"| {fmt(r[f'{mode}_user_cpu_s_median'])} s | {fmt(r[f'{mode}_system_cpu_s_median'])} s "
            f"| {fmt(r[f'{mode}_iowait_cpu_s_median'])} s |"
        )
    return rows + [""]


# end-to-end GPU runs (bench_gpu.py --skip-sweep --save-as NAME) and what code each measured
GPU_E2E_RUNS = {
    "gpu_e2e": "A: 995dfe0, 1 writer thread",
    "gpu_e2e2": "B: e72f186, page-locked buffers*",
    "gpu_e2e3": "C: bc6c51c, data made while the worker starts, page-locked buffers*",
}


def gpu_section(sweep: dict, e2e: list[tuple[str, dict]]) -> list[str]:
    """The GPU sweep (bench_gpu.py) and, from a later run of the current code, end to end."""
    m = sweep["machine"]
    rows = [
        "## On a GPU (`benchmarks/bench_gpu.py`, through `benchmarks/gpu_machine.sh`)",
        "",
        f"Device: {sweep['device_name']} ({sweep['device_memory_GiB']:.0f} GiB), {m['cores']} CPU "
        f"cores, torch {m['torch']}; {m['date']}. {sweep['size']}x{sweep['size']} synthetic "
        "fingerprints, M = 5, float32. chain-steps/s: chains x steps per second, timed at a mid "
        "step with the device synchronised (median of 3 loops after 2 warm-up calls). *emit*: M "
        "draws of x_t and their scores (a step that keeps a tuple); *emit + encode to new host "
        "memory*: the same, encoded and copied each step into freshly allocated host arrays (what "
        "precompute's tasks did before this measurement); *step*: one plain transition. The sweep "
        "doubles B until a 60 s budget per process is spent; the CPU baseline is the same code on "
        "the same machine's 16 cores.",
        "",
    ]
    for name, by_dev in sweep["sweep"].items():
        gpu = [r for r in by_dev[sweep["device"]]["rows"] if not r.get("out_of_memory")]
        cpu = {r["B"]: r for r in by_dev.get("cpu", {}).get("rows", []) if "emit" in r}
        T = by_dev[sweep["device"]]["T"]
        rows += [
            f"**{name}** (T = {T})",
            "",
            "| B | emit | emit + encode to new host memory | step | peak GPU memory | CPU emit | CPU step |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in gpu:
            c = cpu.get(r["B"])
            c_emit, c_step = (f"{c['emit']:,.0f}", f"{c['step']:,.0f}") if c else ("", "")
            rows.append(
                f"| {r['B']:,} | {r['emit']:,.0f} | {r['emit+encode']:,.0f} | {r['step']:,.0f} | "
                f"{r['peak_GiB']:.1f} GiB | {c_emit} | {c_step} |"
            )
        best = max(gpu, key=lambda r: r["emit"])
        if cpu:
            cbest = max(cpu.values(), key=lambda r: r["emit"])
            cstep = max(r["step"] for r in cpu.values())
            rows.append(
                f"| **GPU / CPU, best vs best** | **{best['emit'] / cbest['emit']:,.0f}x** | | "
                f"**{max(r['step'] for r in gpu) / cstep:,.0f}x** | | | |"
            )
        rows.append("")
    rows += [
        "Scores on the GPU vs a float64 CPU reference on the same inputs (relative error): "
        + "; ".join(
            f"{n} {a['rel_err_' + sweep['device']]:.1e} (CPU float32 {a['rel_err_cpu']:.1e})"
            for n, a in sweep["agreement"].items()
        )
        + ".",
        "",
    ]
    if e2e:
        labels = {
            "per_epoch_T300": "per-epoch, T = 300, 10 tuples/chain",
            "full_T100_M1": "full, T = 100, M = 1",
        }
        rows += [
            "End to end on the same device kind: `run_precompute` with 1 worker (one per GPU) vs "
            "the same blocks simulated in memory on the GPU (no encoding, no writes); block phase "
            "and in memory are the faster of 2 runs, which gave byte-identical stores every time; "
            "*end to end* includes generating the data set and starting and stopping the worker. "
            "Runs marked * had page-locked block buffers, since removed (pipeline/tasks.py); the "
            "current code was not run end to end on a GPU.",
            "",
            "| run | configuration | --max-batch (chains per block) | writer threads | block memory | block phase | in memory | overhead | tuples/s | written | end to end |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run, rec in e2e:
            for label, runs in rec["end_to_end"].items():
                for r in runs:
                    rows.append(
                        f"| {run} | {labels.get(label, label)}, {r['chains']:,} chains | "
                        f"{r['max_batch']} ({r['chains_per_block']}) | {r.get('io_threads', 1)} | "
                        f"{r.get('block_memory', 2**29) >> 20} MiB | {fmt(min(r['blocks_s']))} s | "
                        f"{fmt(min(r['in_memory_s']))} s | {r['overhead']:+.0%} | "
                        f"{r['tuples_per_s']:,.0f} | {r['MiB_per_s_written']:,.0f} MiB/s | "
                        f"{fmt(min(r['end_to_end_s']))} s |"
                    )
        rows.append("")
        copy = next((rec["copy"] for _, rec in e2e if "copy" in rec), None)
        if copy:
            gbps = copy["GB_per_s"]
            rows += [
                f"Copying a {copy['bytes'] >> 20} MiB block from the GPU into page-aligned host "
                f"memory: {gbps['pageable']:.1f} GB/s pageable, {gbps['pinned']:.1f} GB/s "
                "page-locked (`cudaHostRegister`).",
                "",
            ]
    return rows


def overhead_parts_section(r: dict) -> list[str]:
    """bench_overhead_parts.py: one worker's full-mode blocks in CPU time of the simulating thread."""
    m, c, med = r["machine"], r["config"], r["medians"]
    bare = med["bare"]["cpu_ms"]
    labels = {
        "bare": "simulation loop alone (the in-memory baseline)",
        "simulate_block": "`simulate_block`: + encoding and placing tuples in their stored rows",
        "task": "precompute's task in a plain process: + hand-off to the writer thread",
        "dask": "the same task in a one-worker Dask LocalCluster",
    }
    rows = [
        f"## One worker's blocks, part by part, {c['size']}x{c['size']} "
        "(`benchmarks/bench_overhead_parts.py`)",
        "",
        f"Machine: {m['cores']} cores, torch {m['torch']}; {m['date']}. Full mode, T = {c['T']}, "
        f"M = {c['M']}, {c['examples']:,} synthetic fingerprints {c['size']}x{c['size']} "
        f"({r['blocks']} blocks); medians over {c['repeats']} passes of every block, the first "
        "three alternating block by block in one process. Thread CPU: `time.thread_time` of the "
        "simulating thread.",
        "",
        "| per block | wall | thread CPU | CPU vs the loop alone |",
        "|---|---|---|---|",
    ]
    for k, label in labels.items():
        w, cpu = med[k]["wall_ms"], med[k]["cpu_ms"]
        rows.append(f"| {label} | {w:.0f} ms | {cpu:.0f} ms | {cpu / bare - 1:+.1%} |")
    parts = r["parts_cpu_s_per_block"]
    rows += [
        "",
        "Inside `simulate_block` (thread CPU per block): "
        + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in parts.items())
        + ".",
        "",
    ]
    return rows


def fixed_costs_section(r: dict) -> list[str]:
    """bench_fixed_costs.py: what a run costs besides its blocks, and the disk's write rate."""
    m = r["machine"]
    rows = [
        f"Per-run costs besides the blocks (`benchmarks/bench_fixed_costs.py`, {m['cuda']}, "
        f"{m['cores']} cores, {m['date']}; {r['examples']:,} synthetic fingerprints "
        f"{r['size']}x{r['size']}, {r['workers']} worker(s) on {r['device']}; median of "
        f"{len(next(iter(r['fixed'].values()))['all_s'])}), each timed on its own:",
        "",
        "| part | seconds |",
        "|---|---|",
    ]
    rows += [f"| {k} | {fmt(v['median_s'])} |" for k, v in r["fixed"].items()]
    rates = ", ".join(f"{k} thread(s) {v:,.0f}" for k, v in r["disk_MiB_per_s"].items())
    rows += ["", f"`O_DIRECT` writes to that machine's disk, MiB/s: {rates}.", ""]
    return rows


def main() -> None:
    lines = [
        "# Benchmarks",
        "",
        "Measured on this project's 2-core development machine, as ratios between runs of the same",
        "script (never as timed assertions in tests). Regenerate with (from the repository root,",
        "with the project installed; raw numbers go to `docs/benchmark-results/*.json`):",
        "",
        "```",
        "python benchmarks/bench_precompute.py",
        "python benchmarks/bench_precompute.py --examples 4096 --only full --repeats 3 --save-as precompute_large",
        "python benchmarks/bench_precompute.py --size 96 --examples 512 --only per_epoch_T300 --repeats 3 --save-as precompute_96",
        "python benchmarks/bench_precompute.py --size 96 --examples 256 --only full --repeats 3 --save-as precompute_96_full",
        "python benchmarks/bench_overhead_parts.py",
        "python benchmarks/bench_overhead_parts.py --size 96 --examples 256 --save-as overhead_parts_96",
        "python benchmarks/bench_write_floor.py",
        "python benchmarks/bench_training.py",
        "python benchmarks/report.py",
        "```",
        "",
        "The GPU section comes from a lent GPU machine:",
        "`bash benchmarks/gpu_machine.sh bench` there (`gpu.json`), `BENCH_ARGS='--skip-sweep",
        "--save-as gpu_e2e3'` for end-to-end runs (`gpu_e2e*.json`) and",
        "`python benchmarks/bench_fixed_costs.py --examples 2048 --size 96 --save-as fixed_costs_gpu`.",
        "",
    ]
    large = (
        "## Precompute stage, 4x the examples (`bench_precompute.py --examples 4096 --only full "
        "--repeats 3 --save-as precompute_large`)"
    )
    paper = (
        "## Precompute stage at paper A's setting, 96x96 (`bench_precompute.py --size 96 "
        "--examples 512 --only per_epoch_T300 --repeats 3 --save-as precompute_96`)"
    )
    paper_full = (
        "## Precompute stage, full mode at 96x96 (`bench_precompute.py --size 96 --examples 256 "
        "--only full --repeats 3 --save-as precompute_96_full`)"
    )
    sections = (
        ("precompute", precompute_section),
        ("precompute_large", lambda r: precompute_section(r, large)),
        ("precompute_96", lambda r: precompute_section(r, paper)),
        ("precompute_96_full", lambda r: precompute_section(r, paper_full)),
        ("overhead_parts", overhead_parts_section),
        ("overhead_parts_96", overhead_parts_section),
        ("write_floor", write_floor_section),
        ("training", training_section),
    )
    for name, section in sections:
        path = RESULTS / f"{name}.json"
        if path.exists():
            lines += section(json.loads(path.read_text()))
    if (RESULTS / "gpu.json").exists():
        e2e = [
            (run, json.loads((RESULTS / f"{name}.json").read_text()))
            for name, run in GPU_E2E_RUNS.items()
            if (RESULTS / f"{name}.json").exists()
        ]
        lines += gpu_section(json.loads((RESULTS / "gpu.json").read_text()), e2e)
        if (RESULTS / "fixed_costs_gpu.json").exists():
            lines += fixed_costs_section(json.loads((RESULTS / "fixed_costs_gpu.json").read_text()))
    notes = ROOT / "benchmarks" / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {ROOT / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
