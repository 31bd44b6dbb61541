"""``python -m bench sweep``: kernel time of the resampling kernels over launch configurations (GPU).

The launch configuration of every resampling kernel comes from one helper,
``canon.kernels.resample.resample_config`` (tile, channel block, warps per kind of work).
Its defaults were chosen without a GPU, from the compile report (registers, occupancy,
vector widths). This command times the table's cases under a grid of alternatives, by
CUDA-graph replay of the launch alone, so that the next session with a GPU can set the
defaults from measurements:

    python -m bench sweep [--output-dir DIR] [--quick]

Each row: case, kind, TILE_H, TILE_W, CHANNELS, warps, kernel ms, % of copy bandwidth
(input + output bytes over the device-to-device copy bandwidth of the same run), and
``default`` for the shipped configuration. A configuration that fails to compile or to
run is reported as an error row.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

import canon
from bench._cli import prepare_output_dir, write_csv_rows
from canon.geometry import view_tables
from canon.groups import as_group

COPY_GRID = [
    (th, tw, ch, w) for th, tw in ((32, 32), (16, 32), (32, 64), (64, 32), (16, 64)) for ch in (1, 2) for w in (4, 8)
]
TAPS_GRID = [
    (th, tw, ch, w)
    # the H100 run of 2026-11-28 found the shipped 16×8 (one pixel per thread) slower than the old
    # 1-D kernel on bilinear views: the larger tiles (2–8 pixels per thread) are there to test that
    for th, tw in ((16, 8), (8, 16), (16, 16), (8, 8), (32, 8), (8, 32), (32, 16), (16, 32), (32, 32))
    for ch in (1, 2, 4)
    for w in (2, 4, 8)
]


@contextlib.contextmanager
def _config(kind: str, override: tuple[int, int, int, int] | None):
    import triton

    from canon.kernels import resample

    orig = resample.resample_config
    if override is None:
        yield
        return

    def patched(h, w, C, dtype, k):
        cfg = orig(h, w, C, dtype, k)
        if k == kind:
            th, tw, ch, warps = override
            channels = min(ch, triton.next_power_of_2(max(int(C), 1)))
            cfg = dict(cfg, TILE_H=th, TILE_W=tw, CHANNELS=channels, num_warps=warps)  # keeps the kind's maxnreg
        return cfg

    resample.resample_config = patched
    try:
        yield
    finally:
        resample.resample_config = orig


def cases(quick: bool) -> list[tuple[str, str, object, int]]:
    """(name, kind, closure, bytes moved)."""
    from canon import triton_ops as T

    dev = torch.device("cuda")
    B = 64 if quick else 256
    x224 = torch.rand(B, 3, 224, 224, device=dev)
    x32 = torch.rand(64, 3, 32, 32, device=dev)
    idx = torch.randint(0, 8, (B,), device=dev)
    out = []

    def orbit_case(name, x, group, size, crop, padding):
        t = view_tables(as_group(group), tuple(x.shape[-2:]), (size, size), crop, dev)
        kind = "copy" if (t.exact and t.aligned and padding == "zeros") else "taps"
        o = torch.empty(x.shape[0], t.mats.shape[0], x.shape[1], size, size, device=dev)
        fn = lambda: T.orbit(x, t.mats, t.pull, t.exact, t.aligned, (size, size), padding, "bilinear", out=o, fam=t.fam)  # noqa: E731
        out.append((name, kind, fn, x.numel() * 4 + o.numel() * 4))

    # bilinear ("taps") cases first: the H100 run of 2026-11-28 found them the furthest from copy
    orbit_case(f"orbit C8 B={B} 224 bilinear", x224, "C8", 224, 1.0, "zeros")
    orbit_case(f"orbit C16 B={B} 224->96 crop 0.8", x224, "C16", 96, 0.8, "border")
    orbit_case("orbit C8 B=64 32->96 crop 0.8", x32, "C8", 96, 0.8, "border")
    for group, exact_name in (("C8", "bilinear"), ("C4", "exact")):
        t = view_tables(as_group(group), (224, 224), (224, 224), 1.0, dev)
        i = idx % t.mats.shape[0]
        o = torch.empty_like(x224)
        kind = "copy" if (t.exact and t.aligned) else "taps"
        out.append(
            (
                f"canonicalize {group} B={B} 224 {exact_name}",
                kind,
                lambda t=t, i=i, o=o: T.transform(x224, i, t.mats, t.exact, t.aligned, "zeros", "bilinear", out=o),
                2 * x224.numel() * 4,
            )
        )
    orbit_case(f"orbit C4 B={B} 224 exact", x224, "C4", 224, 1.0, "zeros")
    orbit_case(f"orbit D4 B={B} 224 exact", x224, "D4", 224, 1.0, "zeros")
    t = view_tables(as_group("C8"), (224, 224), (96, 96), 0.8, dev)
    g = torch.randn(64, 8, 3, 96, 96, device=dev)
    gx = torch.empty(64, 3, 224, 224, device=dev)
    out.append(
        (
            "orbit backward C8 B=64 224->96 (pull)",
            "pull",
            lambda: T.orbit_backward(
                g, t.mats, t.pull, t.exact, t.aligned, (224, 224), "zeros", "bilinear", torch.float32, out=gx
            ),
            g.numel() * 4 + gx.numel() * 4,
        )
    )
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench sweep", description="resampling kernel time over launch configurations (GPU)"
    )
    ap.add_argument("--output-dir", default=None, help="write sweep.csv there")
    ap.add_argument("--quick", action="store_true", help="B=64 instead of 256 and a smaller grid")
    ap.add_argument("--only", default=None, help="run only the cases whose name contains this text (e.g. bilinear)")
    ap.add_argument("--defaults-only", action="store_true", help="time only the shipped configuration of each case")
    ap.add_argument(
        "--configs",
        default=None,
        help="time these configurations instead of the grid, e.g. 16x8x2x4,8x16x1x2 (TILE_HxTILE_WxCHANNELSxwarps)",
    )
    args = ap.parse_args(argv)
    configs = None
    if args.configs:
        try:
            configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",")]
        except ValueError:
            configs = []
        if not configs or any(len(c) != 4 or min(c) < 1 for c in configs):
            ap.error(
                f"--configs: expected TILE_HxTILE_WxCHANNELSxWARPS[,...] of positive integers, got {args.configs!r}"
            )
    if not torch.cuda.is_available():
        print("bench sweep: needs a CUDA device (the interpreter's timings mean nothing)", file=sys.stderr)
        return 2
    prepare_output_dir(ap, args.output_dir)
    import triton.testing as tt

    from bench.timers import copy_bandwidth

    copy_gbps = copy_bandwidth("cuda")
    rows = []
    with canon.use_backend("triton"):
        for name, kind, fn, nbytes in cases(args.quick):
            if args.only and args.only not in name:
                continue
            grid = {"copy": COPY_GRID, "taps": TAPS_GRID, "pull": TAPS_GRID}[kind]
            if args.quick:
                grid = grid[:: max(1, len(grid) // 8)]
            if configs is not None:
                grid = configs
            if args.defaults_only:
                grid = []
            for override in [None, *grid]:
                label = "default" if override is None else ""
                try:
                    with _config(kind, override):
                        fn()
                        torch.cuda.synchronize()
                        ms = tt.do_bench_cudagraph(fn, rep=50)
                    pct = nbytes / (ms * 1e-3) / 1e9 / copy_gbps * 100
                    row = dict(
                        case=name,
                        kind=kind,
                        config=label or "x".join(map(str, override)),
                        ms=round(ms, 4),
                        pct_copy=round(pct, 1),
                        error="",
                    )
                except Exception as e:  # a configuration that does not compile or run
                    row = dict(
                        case=name,
                        kind=kind,
                        config=label or "x".join(map(str, override)),
                        ms="",
                        pct_copy="",
                        error=f"{type(e).__name__}: {e}"[:200],
                    )
                rows.append(row)
                print(
                    f"{row['case']:42s} {row['kind']:5s} {row['config']:12s} {row['ms']!s:>9s} ms "
                    f"{row['pct_copy']!s:>6s}% {row['error']}",
                    flush=True,
                )
    best = {}
    for r in rows:
        if r["ms"] != "" and (r["case"] not in best or r["ms"] < best[r["case"]]["ms"]):
            best[r["case"]] = r
    print("# best per case (TILE_HxTILE_WxCHANNELSxwarps):")
    for case, r in best.items():
        d = next(x for x in rows if x["case"] == case and x["config"] == "default")
        print(
            f"#   {case:42s} {r['config']:12s} {r['ms']} ms ({r['pct_copy']}% copy) vs default {d['ms']} ms "
            f"({d['pct_copy']}%)"
        )
    print(f"# copy bandwidth {copy_gbps:.0f} GB/s")
    if args.output_dir:
        write_csv_rows(os.path.join(args.output_dir, "sweep.csv"), rows)
    return 0
