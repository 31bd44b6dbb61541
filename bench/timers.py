"""How one closure is measured: wall and CPU time on a CPU, CUDA events and CUDA-graph replays on a GPU,
the copy roofline of the run, and one profiled call for peak memory and launches.

Everything here takes a plain callable; nothing knows about cases, providers or rows.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    """Wait for the GPU (nothing to wait for on a CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, device: str, reps: int) -> list[float]:
    """Milliseconds of each of ``reps`` calls, the device synchronized before and after each (no warm-up)."""
    ts = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def _timed_call(fn) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def _quantiles(ts_ms: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of the times."""
    if len(ts_ms) == 1:
        return ts_ms[0], ts_ms[0], ts_ms[0]
    q = statistics.quantiles(ts_ms, n=4, method="inclusive")
    return q[0], statistics.median(ts_ms), q[2]


def time_cpu(fn, min_time_s: float = 1.0, min_reps: int = 5, max_reps: int = 100, warmup: int = 1) -> dict:
    """Wall-clock per call (perf_counter), after ``warmup`` calls, until both limits are met.

    Also the median process CPU time per call (all threads, ``cpu_ms``): on a machine that
    other processes load, wall time grows with preemption while CPU time mostly does not.
    """
    for _ in range(warmup):
        fn()
    ts, cpu = [], []
    t_start = time.perf_counter()
    while len(ts) < max_reps and (len(ts) < min_reps or time.perf_counter() - t_start < min_time_s):
        wall_ms, cpu_ms = _timed_call(fn)
        ts.append(wall_ms)
        cpu.append(cpu_ms)
    q25, med, q75 = _quantiles(ts)
    cpu_ms = statistics.median(cpu)
    return dict(median_ms=med, q25_ms=q25, q75_ms=q75, reps=len(ts), timer="perf_counter", cpu_ms=cpu_ms)


def time_interleaved(
    fns: dict[str, Callable], min_reps: int, min_time_s: float, max_reps: int
) -> tuple[dict[str, dict], dict[str, Exception]]:
    """Rounds of one call per function (A B A B ...), until each has ``min_reps`` calls and ``min_time_s``
    seconds of them, or ``max_reps`` calls; ({name: timing as :func:`time_cpu`'s}, {name: exception}).

    On a shared machine the speed drifts with the load of other processes; alternating the calls gives
    every function the same conditions, so their ratio stays fair. A function whose call raises leaves
    the rounds; its exception is returned instead of a timing.
    """
    running = dict(fns)
    wall = {p: [] for p in fns}
    cpu = {p: [] for p in fns}
    errors = {}

    def more(p: str) -> bool:
        return len(wall[p]) < max_reps and (len(wall[p]) < min_reps or sum(wall[p]) < min_time_s * 1e3)

    while running and any(more(p) for p in running):
        for p, fn in list(running.items()):
            try:
                wall_ms, cpu_ms = _timed_call(fn)
                wall[p].append(wall_ms)
                cpu[p].append(cpu_ms)
            except Exception as e:
                errors[p] = e
                del running[p]
    timings = {}
    for p in running:
        q25, med, q75 = _quantiles(wall[p])
        t = dict(median_ms=med, q25_ms=q25, q75_ms=q75, reps=len(wall[p]), timer="perf_counter-interleaved")
        t["cpu_ms"] = statistics.median(cpu[p])
        timings[p] = t
    return timings, errors


def time_cuda(fn, cuda_graph: bool = False, quick: bool = True) -> dict:
    """triton.testing.do_bench (CUDA events around each call, L2 flushed), or its CUDA-graph variant."""
    import triton.testing as tt

    rep = 100 if quick else 500
    if cuda_graph:  # captures rep/estimate unrolled calls on a side stream, replays them
        q = tt.do_bench_cudagraph(fn, rep=rep, quantiles=[0.25, 0.5, 0.75])
        timer = "do_bench_cudagraph"
    else:
        q = tt.do_bench(fn, warmup=25, rep=rep, quantiles=[0.25, 0.5, 0.75])
        timer = "do_bench"
    return dict(median_ms=q[1], q25_ms=q[0], q75_ms=q[2], reps="", timer=timer)


def copy_bandwidth(device: str, quick: bool = True) -> float:
    """GB/s of ``dst.copy_(src)`` (bytes read + bytes written), the roofline of this run."""
    n = (64 if device == "cpu" else 512) * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    fn = lambda: dst.copy_(src)  # noqa: E731
    t = time_cuda(fn, quick=quick) if device == "cuda" else time_cpu(fn, min_time_s=0.5, min_reps=10)
    return 2 * n * 4 / (t["median_ms"] * 1e-3) / 1e9


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ code writes to file descriptor 2 inside the block: the profiler's Kineto prints
    ``USDT: … profiler_start/stop`` and a CPUAllocator note on every profiled row, which no option turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_call(fn, device: str) -> dict:
    """Peak memory and launches of one call (after the timing, so everything is warm)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with quiet_native_stderr(), profile(activities=acts, profile_memory=device == "cpu") as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        launches = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        return dict(
            peak_mem_mb=peak,
            mem_method="cuda.max_memory_allocated",
            launches=launches,
            launch_kind="cuda-kernels",
        )
    return dict(
        peak_mem_mb=cpu_peak_mb(events),
        mem_method="profiler-alloc-timeline",
        launches=count_leaf_ops(events),
        launch_kind="cpu-leaf-aten-ops",
    )


def cpu_peak_mb(events) -> float:
    """Peak of live CPU tensor memory in a profile: op-level allocations and frees in time order."""
    timeline = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in events if e.self_cpu_memory_usage)
    peak = cur = 0
    for _, d in timeline:
        cur += d
        peak = max(peak, cur)
    return peak / 2**20


def count_leaf_ops(events) -> int:
    """aten ops that call no other aten op, and calls of torch.compile'd graphs (whose generated C++ kernels
    the CPU profiler does not list): on CPU, the closest thing to a kernel launch."""
    aten = [e for e in events if e.name.startswith("aten::")]
    compiled = sum(1 for e in events if e.name.startswith("## Call CompiledFxGraph"))
    return compiled + sum(1 for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children))
