"""``python -m bench``: the benchmark suite, the step profiler and the static kernel report.

Usage::

    python -m bench [--quick] [--output-dir DIR] [--device cpu|cuda] [--cases orbit,step] [--providers ...]
    python -m bench profile [--device cpu|cuda] [--steps 5] [--provider ours-reference] [--output-dir DIR]
    python -m bench kernels [--archs 80,90] [--output-dir DIR]
    python -m bench overhead [--device cpu|cuda] [--calls 2000] [--output-dir DIR]
    python -m bench sweep [--quick] [--output-dir DIR]            (GPU: launch configurations of the resampling kernels)
    python -m bench plot RESULTS_CSV [--output-dir DIR]

The suite prints a table and writes ``results.csv`` (one row per case × provider × size)
and PNG plots drawn from that file into the output directory (default ``bench/results/local``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import sys
import time

import torch

from bench import cases as C  # noqa: E402  (imports canon; triton only lazily)

DEFAULT_OUT = os.path.join("bench", "results", "local")


def _device(name: str | None) -> str:
    if name:
        if name == "cuda" and not torch.cuda.is_available():
            raise SystemExit("bench: --device cuda but CUDA is not available")
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_<baseline>`` = baseline median / provider median, for the same case, size, dtype and timer."""
    key = lambda r: (r["case"], r["device"], r["dtype"], r["batch"], r["group"], r["in_shape"], r["cuda_graph"])  # noqa: E731
    base = {(key(r), r["provider"]): r["median_ms"] for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        for b, col in (("equiadapt-loop", "speedup_vs_equiadapt_loop"), ("equiadapt", "speedup_vs_equiadapt")):
            t = base.get((key(r), b))
            if t is not None and r["provider"] != b:
                r[col] = round(float(t) / float(r["median_ms"]), 3)


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=C.COLUMNS)
        w.writeheader()
        w.writerows(rows)


def _fmt(v, spec: str) -> str:
    if v in ("", None):
        return "-"
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


def format_table(rows: list[dict]) -> str:
    head = f"{'case':16s} {'config':34s} {'provider':15s} {'graph':5s} {'median ms':>10s} {'iqr ms':>8s} {'vs loop':>8s} {'GB/s':>7s} {'%copy':>6s} {'peak MB':>8s} {'launch':>7s} {'img/s':>9s}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        cfg = C.Config(r["case"], int(r["batch"]), int(r["group"][1:]), _shape_key(r["in_shape"]), r["dtype"])
        if r["status"] != "ok":
            lines.append(f"{r['case']:16s} {cfg.label:34s} {r['provider']:15s} {str(r['cuda_graph'])[:5]:5s} {r['status']:>10s}  {r['note']}")
            continue
        lines.append(
            f"{r['case']:16s} {cfg.label:34s} {r['provider']:15s} {str(r['cuda_graph'])[:5]:5s} {_fmt(r['median_ms'], '10.3f')} {_fmt(r['iqr_ms'], '8.3f')} "
            f"{_fmt(r['speedup_vs_equiadapt_loop'], '8.2f')} {_fmt(r['gbps'], '7.2f')} {_fmt(r['pct_copy'], '6.1f')} {_fmt(r['peak_mem_mb'], '8.1f')} "
            f"{_fmt(r['launches'], '7.0f')} {_fmt(r['images_per_s'], '9.0f')}  {r['note']}"
        )
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    """The results as a Markdown table (ok rows with numbers, other rows with their reason)."""
    out = [
        "| case | config | provider | median ms | IQR ms | × vs equiadapt-loop | GB/s | % copy | peak MB | launches | images/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cfg = C.Config(r["case"], int(r["batch"]), int(r["group"][1:]), _shape_key(r["in_shape"]), r["dtype"])
        graph = " (CUDA graph)" if str(r["cuda_graph"]) == "True" else ""
        if r["status"] != "ok":
            out.append(f"| {r['case']} | {cfg.label} | {r['provider']}{graph} | {r['status']}: {r['note']} | | | | | | | |")
            continue
        vals = [
            _fmt(r[k], f)
            for k, f in (
                ("median_ms", ".3f"),
                ("iqr_ms", ".3f"),
                ("speedup_vs_equiadapt_loop", ".2f"),
                ("gbps", ".2f"),
                ("pct_copy", ".1f"),
                ("peak_mem_mb", ".1f"),
                ("launches", ".0f"),
                ("images_per_s", ".0f"),
            )
        ]
        out.append(f"| {r['case']} | {cfg.label} | {r['provider']}{graph} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def _shape_key(in_shape: str) -> str:
    return in_shape if in_shape in C.SHAPES else next(k for k, v in C.SHAPES.items() if "x".join(map(str, v[0])) == in_shape)


def run_suite(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description="canon benchmark suite: every case × provider × size, one CSV row each")
    ap.add_argument("--quick", action="store_true", help="a small set including the target cases (< 3 min on a 2-core CPU)")
    ap.add_argument("--output-dir", default=DEFAULT_OUT)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    ap.add_argument("--cases", default=None, help=f"comma-separated subset of {','.join(C.CASES)}")
    ap.add_argument("--providers", default=None, help=f"comma-separated subset of {','.join(C.PROVIDERS)}")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size of every config (smoke runs)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of timed calls per CPU row (default 1.0, 0.5 with --quick)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice, all cores)")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        ap.error(f"--batch must be >= 1, got {args.batch}")
    if args.min_time is not None and not (math.isfinite(args.min_time) and args.min_time >= 0):
        ap.error(f"--min-time must be a finite number of seconds >= 0, got {args.min_time}")
    cores = os.cpu_count() or 1
    if args.threads is not None and not 1 <= args.threads <= cores:
        ap.error(f"--threads must be in [1, {cores}] (the cores of this machine), got {args.threads}")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        ap.error(f"--output-dir {args.output_dir} is a file; choose a folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    cfgs = C.quick_configs(device) if args.quick else C.full_configs()
    if args.cases:
        wanted = args.cases.split(",")
        bad = set(wanted) - set(C.CASES)
        if bad:
            ap.error(f"unknown cases {sorted(bad)}; choose from {C.CASES}")
        cfgs = [c for c in cfgs if c.case in wanted]
    if args.batch:
        cfgs = list(dict.fromkeys(C.Config(c.case, args.batch, c.n, c.shape, c.dtype) for c in cfgs))
    providers = args.providers.split(",") if args.providers else list(C.PROVIDERS)
    bad = set(providers) - set(C.PROVIDERS)
    if bad:
        ap.error(f"unknown providers {sorted(bad)}; choose from {C.PROVIDERS}")
    min_time = args.min_time if args.min_time is not None else (0.5 if args.quick else 1.0)
    os.makedirs(args.output_dir, exist_ok=True)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in argv)
    env = C.environment(device, command)
    t0 = time.perf_counter()
    copy_gbps = C.copy_bandwidth(device, quick=args.quick)
    print(
        f"# {env['device_name']} ({device}), {env['threads']} threads, torch {env['torch']}, triton {env['triton']}, canon {env['canon']}, commit {env['git_commit']}"
    )
    print(f"# copy bandwidth (read + write) measured now: {copy_gbps:.2f} GB/s", flush=True)
    rows = []
    for cfg in cfgs:
        if device == "cpu":
            for row in C.measure_interleaved(cfg, providers, env, copy_gbps, min_time_s=min_time):
                rows.append(row)
                status = f"{float(row['median_ms']):.3f} ms" if row["status"] == "ok" else row["status"]
                print(f"  {cfg.case:16s} {cfg.label:34s} {row['provider']:15s}: {status}", flush=True)
            continue
        for p in providers:
            graphs = (False, True) if device == "cuda" and not cfg.case.startswith("step") and p in C.GRAPH_PROVIDERS else (False,)
            for g in graphs:
                row = C.measure(cfg, p, device, env, copy_gbps, quick=args.quick, cuda_graph=g, min_time_s=min_time)
                rows.append(row)
                status = f"{float(row['median_ms']):.3f} ms" if row["status"] == "ok" else row["status"]
                print(f"  {cfg.case:16s} {cfg.label:34s} {p:15s}{' graph' if g else ''}: {status}", flush=True)
    add_speedups(rows)
    path = os.path.join(args.output_dir, "results.csv")
    write_csv(rows, path)
    print()
    print(format_table(rows))
    with open(os.path.join(args.output_dir, "table.md"), "w") as f:
        f.write(markdown_table(rows) + "\n")
    print(f"\n# {len(rows)} rows in {time.perf_counter() - t0:.0f} s → {path}")
    if not args.no_plots:
        from bench import plots

        for f in plots.plot_all(path, args.output_dir):
            print(f"# plot {f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "profile":
        from bench import profiler

        return profiler.main(argv[1:])
    if argv and argv[0] == "sweep":
        from bench import sweep

        return sweep.main(argv[1:])
    if argv and argv[0] == "overhead":
        from bench import overhead

        return overhead.main(argv[1:])
    if argv and argv[0] == "kernels":
        from bench import kernel_report

        return kernel_report.main(argv[1:])
    if argv and argv[0] == "plot":
        from bench import plots

        return plots.main(argv[1:])
    return run_suite(argv)


if __name__ == "__main__":
    sys.exit(main())
