"""``python -m bench``: the benchmark suite, the step profiler and the static kernel report.

Usage::

    python -m bench [--quick] [--output-dir DIR] [--device cpu|cuda] [--cases orbit,step] [--providers ...]
                    [--modes forward,backward,full]
    python -m bench profile [--device cpu|cuda] [--steps 5] [--provider ours-reference] [--output-dir DIR]
    python -m bench kernels [--archs 80,90] [--output-dir DIR]
    python -m bench wavefronts [--configs 8x16x1x2,...] [--sweep-log FILE]
    python -m bench accuracy [--providers ours,equiadapt-loop,equiadapt] [--epochs 3] [--seeds 0] [-- JOB OPTIONS]
    python -m bench overhead [--device cpu|cuda] [--calls 2000] [--output-dir DIR]
    python -m bench sweep [--quick] [--output-dir DIR]            (GPU: launch configurations of the resampling kernels)
    python -m bench plot RESULTS_CSV [--output-dir DIR]

The suite prints a table and writes ``results.csv`` (one row per case × provider × mode × size)
and PNG plots drawn from that file into the output directory (default ``bench/results/local``).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time

import torch

from bench._cli import check_output_dir, check_threads, prepare_output_dir, resolve_device
from bench.cases import CASES, full_configs, peer_configs, quick_configs, with_modes  # imports canon; triton lazily
from bench.registry import GRAPH_PROVIDERS, MODES, PROVIDERS, SHAPES, Config, graphable
from bench.rows import add_speedups, environment, measure, measure_interleaved, write_csv
from bench.timers import copy_bandwidth

DEFAULT_OUT = os.path.join("bench", "results", "local")


def _fmt(v, spec: str) -> str:
    if v in ("", None):
        return "-"
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


def _label(r: dict) -> str:
    return Config(r["case"], int(r["batch"]), int(r["group"][1:]), _shape_key(r["in_shape"]), r["dtype"]).label


# (column, format) of the numbers in both tables
NUMBERS = (
    ("median_ms", ".3f"),
    ("iqr_ms", ".3f"),
    ("speedup_vs_equiadapt_loop", ".2f"),
    ("speedup_vs_torch_compile", ".2f"),
    ("gbps", ".2f"),
    ("pct_copy", ".1f"),
    ("peak_mem_mb", ".1f"),
    ("launches", ".0f"),
    ("images_per_s", ".0f"),
)
WIDTHS = (10, 8, 8, 8, 7, 6, 8, 7, 9)


def format_table(rows: list[dict]) -> str:
    heads = ("median ms", "iqr ms", "vs loop", "vs comp", "GB/s", "%copy", "peak MB", "launch", "img/s")
    numbers = " ".join(f"{h:>{w}s}" for h, w in zip(heads, WIDTHS))
    head = f"{'case':16s} {'mode':8s} {'config':34s} {'provider':15s} {'graph':5s} {numbers}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        start = f"{r['case']:16s} {r['mode']:8s} {_label(r):34s} {r['provider']:15s} {str(r['cuda_graph'])[:5]:5s}"
        if r["status"] != "ok":
            lines.append(f"{start} {r['status']:>10s}  {r['note']}")
            continue
        vals = " ".join(_fmt(r[k], f"{w}{f}") for (k, f), w in zip(NUMBERS, WIDTHS))
        lines.append(f"{start} {vals}  {r['note']}")
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    """The results as a Markdown table (ok rows with numbers, other rows with their reason)."""
    heads = ("median ms", "IQR ms", "× vs equiadapt-loop", "× vs torch-compile", "GB/s", "% copy", "peak MB")
    heads += ("launches", "images/s")
    out = ["| case | mode | config | provider | " + " | ".join(heads) + " |"]
    out.append("|---|---|---|---|" + "---:|" * len(heads))
    for r in rows:
        graph = " (CUDA graph)" if str(r["cuda_graph"]) == "True" else ""
        start = f"| {r['case']} | {r['mode']} | {_label(r)} | {r['provider']}{graph} |"
        if r["status"] != "ok":
            out.append(f"{start} {r['status']}: {r['note']} |" + " |" * (len(heads) - 1))
            continue
        out.append(f"{start} " + " | ".join(_fmt(r[k], f) for k, f in NUMBERS) + " |")
    return "\n".join(out)


def _shape_key(in_shape: str) -> str:
    if in_shape in SHAPES:
        return in_shape
    return next(k for k, v in SHAPES.items() if "x".join(map(str, v[0])) == in_shape)


SUBCOMMANDS = """subcommands (python -m bench SUBCOMMAND --help for their options):
  profile    one case under torch.profiler: time per step, kernels, share outside the encoder
  sweep      resampling kernel time over launch configurations (CUDA)
  overhead   host time per call of every public op on tiny inputs
  kernels    registers, spills and memory widths of every kernel, compiled for sm_80/sm_90 without a GPU
  requests   memory requests per output element of each kernel variant, under the Triton interpreter
  accuracy   the default training job with canon's canonicalizer and with equiadapt's: accuracy, images/s
  wavefronts warp requests and cache lines of the bilinear orbit's gathers per launch configuration (no GPU)
  plot       redraw the figures from a results.csv
"""


def _parser() -> argparse.ArgumentParser:
    what = "canon benchmark suite: every case × provider × mode × size, one CSV row each"
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=what,
        epilog=SUBCOMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quick = "a small set including the target cases (< 3 min on a 2-core CPU)"
    sets = ap.add_mutually_exclusive_group()
    sets.add_argument("--quick", action="store_true", help=quick)
    peers = "the cases with a plain-PyTorch peer (torch-batched, torch-compile) at the GPU target sizes"
    sets.add_argument("--peers", action="store_true", help=peers)
    ap.add_argument("--output-dir", default=DEFAULT_OUT)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    ap.add_argument("--cases", default=None, help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--providers", default=None, help=f"comma-separated subset of {','.join(PROVIDERS)}")
    ap.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated subset of {','.join(MODES)}: every size point in each mode "
        "(default: each point's own mode; op cases forward, steps full, and a few backward points with --quick)",
    )
    ap.add_argument("--batch", type=int, default=None, help="override the batch size of every config (smoke runs)")
    min_time = "seconds of timed calls per CPU row (default 1.0, 0.5 with --quick)"
    ap.add_argument("--min-time", type=float, default=None, help=min_time)
    threads = "torch.set_num_threads (default: torch's choice, all cores)"
    ap.add_argument("--threads", type=int, default=None, help=threads)
    ap.add_argument("--no-plots", action="store_true")
    return ap


def _subset(ap: argparse.ArgumentParser, value: str | None, choices: tuple, what: str) -> list[str] | None:
    """The comma-separated ``value`` as a list (None when not given); an error naming unknown entries."""
    if value is None:
        return None
    wanted = value.split(",")
    bad = set(wanted) - set(choices)
    if bad:
        ap.error(f"unknown {what} {sorted(bad)}; choose from {choices}")
    return wanted


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.batch is not None and args.batch < 1:
        ap.error(f"--batch must be >= 1, got {args.batch}")
    if args.min_time is not None and not (math.isfinite(args.min_time) and args.min_time >= 0):
        ap.error(f"--min-time must be a finite number of seconds >= 0, got {args.min_time}")
    check_threads(ap, args.threads)
    check_output_dir(ap, args.output_dir)


def _configs(ap: argparse.ArgumentParser, args: argparse.Namespace, device: str) -> list[Config]:
    """The size points to run: quick or full, filtered by --cases, in --modes, with --batch."""
    cases = _subset(ap, args.cases, CASES, "cases")
    modes = _subset(ap, args.modes, MODES, "modes")
    if args.peers:
        cfgs = peer_configs(device)
    else:
        cfgs = quick_configs(device) if args.quick else full_configs()
    if cases:
        cfgs = [c for c in cfgs if c.case in cases]
    if modes:
        cfgs = with_modes(cfgs, modes)
    if args.batch:
        cfgs = list(dict.fromkeys(Config(c.case, args.batch, c.n, c.shape, c.dtype, c.mode) for c in cfgs))
    return cfgs


def _print_row(cfg: Config, row: dict, graph: bool = False) -> None:
    status = f"{float(row['median_ms']):.3f} ms" if row["status"] == "ok" else row["status"]
    name = row["provider"] + (" graph" if graph else "")
    print(f"  {cfg.case:16s} {cfg.mode:8s} {cfg.label:34s} {name:15s}: {status}", flush=True)


def _measure_all(cfgs, providers, device, env, copy_gbps, quick: bool, min_time: float) -> list[dict]:
    """One row per config × provider (× CUDA graph on/off for the forward of op cases on a GPU)."""
    rows = []
    for cfg in cfgs:
        if device == "cpu":  # providers of one size point in alternating rounds
            for row in measure_interleaved(cfg, providers, env, copy_gbps, min_time_s=min_time):
                rows.append(row)
                _print_row(cfg, row)
            continue
        for p in providers:
            graphs = (False, True) if graphable(cfg) and p in GRAPH_PROVIDERS else (False,)
            for g in graphs:
                row = measure(cfg, p, device, env, copy_gbps, quick=quick, cuda_graph=g, min_time_s=min_time)
                rows.append(row)
                _print_row(cfg, row, g)
    return rows


def not_timed_summary(rows: list[dict]) -> list[str]:
    """One line per provider and reason for the rows that were not timed (their notes say why)."""
    seen: dict = {}
    for r in rows:
        if r["status"] in ("unavailable", "error"):
            key = (r["provider"], r["status"], r.get("note") or "no reason recorded")
            seen[key] = seen.get(key, 0) + 1
    return [f"# {n} row(s) {status}, {provider}: {note}" for (provider, status, note), n in seen.items()]


def _write_outputs(rows: list[dict], out_dir: str, plots: bool) -> str:
    path = os.path.join(out_dir, "results.csv")
    write_csv(rows, path)
    print()
    print(format_table(rows))
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(markdown_table(rows) + "\n")
    if plots:
        from bench import plots as P

        for f in P.plot_all(path, out_dir):
            print(f"# plot {f}")
    return path


def run_suite(argv: list[str]) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    _check_args(ap, args)
    device = resolve_device(args.device, "bench")
    cfgs = _configs(ap, args, device)
    providers = _subset(ap, args.providers, PROVIDERS, "providers") or list(PROVIDERS)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick or args.peers  # short timings
    min_time = args.min_time if args.min_time is not None else (0.5 if quick else 1.0)
    prepare_output_dir(ap, args.output_dir)
    env = environment(device, "python -m bench " + " ".join(shlex.quote(a) for a in argv))
    t0 = time.perf_counter()
    copy_gbps = copy_bandwidth(device, quick=quick)
    print(
        f"# {env['device_name']} ({device}), {env['threads']} threads, torch {env['torch']}, triton {env['triton']}, "
        f"canon {env['canon']}, commit {env['git_commit']}"
    )
    print(f"# copy bandwidth (read + write) measured now: {copy_gbps:.2f} GB/s", flush=True)
    rows = _measure_all(cfgs, providers, device, env, copy_gbps, quick, min_time)
    add_speedups(rows)
    path = _write_outputs(rows, args.output_dir, not args.no_plots)
    for line in not_timed_summary(rows):
        print(line)
    print(f"\n# {len(rows)} rows in {time.perf_counter() - t0:.0f} s → {path}")
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
    if argv and argv[0] == "requests":
        from bench import requests

        return requests.main(argv[1:])
    if argv and argv[0] == "accuracy":
        from bench import accuracy

        return accuracy.main(argv[1:])
    if argv and argv[0] == "wavefronts":
        from bench import wavefronts

        return wavefronts.main(argv[1:])
    if argv and argv[0] == "kernels":
        from bench import kernel_report

        return kernel_report.main(argv[1:])
    if argv and argv[0] == "plot":
        from bench import plots

        return plots.main(argv[1:])
    return run_suite(argv)


if __name__ == "__main__":
    sys.exit(main())
