"""One result row per measurement: the CSV schema (:data:`COLUMNS`), the machine and versions recorded in
every row, the speedup columns, and the measuring of one (case, provider, size) into a row.

A row always comes back: ``status`` is ``ok``, ``unavailable`` (the provider cannot run this here) or
``error`` (a failing provider is a published result, not a crash of the suite), and ``note`` says why.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch

import canon
from bench._cli import write_csv_rows
from bench.registry import REGISTRY, Bench, Config, Unavailable, build
from bench.timers import profile_call, time_cpu, time_cuda, time_interleaved

COLUMNS = [
    "case",
    "provider",
    "mode",
    "status",
    "device",
    "dtype",
    "batch",
    "group",
    "in_shape",
    "out_shape",
    "median_ms",
    "iqr_ms",
    "q25_ms",
    "q75_ms",
    "reps",
    "timer",
    "cpu_ms",
    "load_avg",
    "cuda_graph",
    "bytes",
    "gbps",
    "copy_gbps",
    "pct_copy",
    "peak_mem_mb",
    "mem_method",
    "launches",
    "launch_kind",
    "images_per_s",
    "speedup_vs_equiadapt_loop",
    "speedup_vs_equiadapt",
    "speedup_vs_torch_batched",
    "speedup_vs_torch_compile",
    "note",
    "machine",
    "device_name",
    "threads",
    "torch",
    "triton",
    "canon",
    "git_commit",
    "date",
    "command",
]


# -- environment -----------------------------------------------------------------------------


def environment(device: str, command: str) -> dict:
    """Machine, versions, commit and date, recorded in every row."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "unavailable"
    if device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        device_name = _cpu_name()
    return dict(
        machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        device_name=device_name,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        triton=triton_version,
        canon=canon.__version__,
        git_commit=git_commit(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        git = ["git", "-C", root]
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        status = [*git, "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


# -- the table -------------------------------------------------------------------------------


def _point(r: dict) -> tuple:
    """What makes two rows comparable: the same case, mode, size, dtype and timer."""
    return (r["case"], r["mode"], r["device"], r["dtype"], r["batch"], r["group"], r["in_shape"], r["cuda_graph"])


def add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_<baseline>`` = baseline median / provider median, for the same case, mode, size, dtype and timer."""
    base = {(_point(r), r["provider"]): r["median_ms"] for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        for b in ("equiadapt-loop", "equiadapt", "torch-batched", "torch-compile"):
            col = "speedup_vs_" + b.replace("-", "_")
            t = base.get((_point(r), b))
            if t is not None and r["provider"] != b:
                r[col] = round(float(t) / float(r["median_ms"]), 3)


def write_csv(rows: list[dict], path: str) -> None:
    """``rows`` as a CSV file with :data:`COLUMNS` in order."""
    write_csv_rows(path, rows, COLUMNS)


# -- one row -------------------------------------------------------------------------------


def _base_row(cfg: Config, provider: str, device: str, env: dict, copy_gbps: float, cuda_graph: bool) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(env)
    row.update(
        case=cfg.case,
        provider=provider,
        mode=cfg.mode,
        device=device,
        dtype=cfg.dtype,
        batch=cfg.batch,
        group=cfg.group,
        in_shape="x".join(map(str, cfg.in_shape)),
        cuda_graph=cuda_graph,
        copy_gbps=round(copy_gbps, 2),
        load_avg=round(os.getloadavg()[0], 2),  # 1-minute load average when the row started
    )
    return row


def _failed(row: dict, e: Exception) -> dict:
    if isinstance(e, Unavailable):
        row.update(status="unavailable", note=str(e))
    else:  # a failing provider is a published result, not a crash of the suite
        row.update(status="error", note=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
    return row


def _finish(row: dict, cfg: Config, b: Bench, t: dict, device: str, copy_gbps: float, cuda_graph: bool) -> dict:
    """Fill the timing-derived columns, then profile one more call for memory and launches."""
    row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items()})
    row["iqr_ms"] = round(t["q75_ms"] - t["q25_ms"], 4)
    row["images_per_s"] = round(cfg.batch / (t["median_ms"] * 1e-3), 1)
    if b.bytes:
        gbps = b.bytes / (t["median_ms"] * 1e-3) / 1e9
        row.update(gbps=round(gbps, 3), pct_copy=round(100 * gbps / copy_gbps, 2))
    if not cuda_graph:
        p = profile_call(b.fn, device)
        row.update(
            peak_mem_mb=round(p["peak_mem_mb"], 2),
            mem_method=p["mem_method"],
            launches=p["launches"],
            launch_kind=p["launch_kind"],
        )
    row["status"] = "ok"
    return row


def measure(
    cfg: Config,
    provider: str,
    device: str,
    env: dict,
    copy_gbps: float,
    quick: bool = True,
    cuda_graph: bool = False,
    min_time_s: float = 1.0,
) -> dict:
    """Build, time and profile one (case, provider, size); always returns a row (status ok/unavailable/error)."""
    row = _base_row(cfg, provider, device, env, copy_gbps, cuda_graph)
    try:
        b = build(cfg, provider, device)
        row.update(out_shape=b.out_shape, note=b.note, bytes=b.bytes or "")
        if device == "cuda":
            t = time_cuda(b.fn, cuda_graph=cuda_graph, quick=quick)
        else:
            t = time_cpu(b.fn, min_time_s=min_time_s, min_reps=REGISTRY[cfg.case].min_reps)
        return _finish(row, cfg, b, t, device, copy_gbps, cuda_graph)
    except Exception as e:
        return _failed(row, e)


def measure_interleaved(
    cfg: Config,
    providers: list[str],
    env: dict,
    copy_gbps: float,
    min_time_s: float = 1.0,
    max_reps: int = 100,
) -> list[dict]:
    """CPU: time every provider of one size point in alternating rounds (A B A B ...,
    :func:`bench.timers.time_interleaved`), so that a drift of the machine's load hits them alike.

    Each provider gets one warm-up call, then rounds run until every provider has the case's
    ``min_reps`` calls (3 for steps, 5 otherwise) and its calls took ``min_time_s`` in total.
    """
    rows = {p: _base_row(cfg, p, "cpu", env, copy_gbps, False) for p in providers}
    benches = {}
    for p in providers:
        try:
            b = build(cfg, p, "cpu")
            rows[p].update(out_shape=b.out_shape, note=b.note, bytes=b.bytes or "")
            b.fn()  # warm-up
            benches[p] = b
        except Exception as e:
            _failed(rows[p], e)
    fns = {p: b.fn for p, b in benches.items()}
    timings, errors = time_interleaved(fns, REGISTRY[cfg.case].min_reps, min_time_s, max_reps)
    for p, e in errors.items():
        _failed(rows[p], e)
    for p, t in timings.items():
        try:
            _finish(rows[p], cfg, benches[p], t, "cpu", copy_gbps, False)
        except Exception as e:
            _failed(rows[p], e)
    return [rows[p] for p in providers]
