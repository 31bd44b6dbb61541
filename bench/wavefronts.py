"""``python -m bench wavefronts``: the warp requests of the bilinear orbit's gathers, and the cache lines
they touch, per launch configuration, without a GPU.

The forward of bilinear views is bound by its loads (Nsight Compute, H200: 86% of L1 throughput at
34% of copy bandwidth). How many load instructions a warp issues, and how many 128-byte lines each one
touches, depends on which output pixels the 32 lanes of a warp hold: the thread layout that the
compiler gives the loads. This command reads that layout from the compiled kernel (sm_90 TTGIR,
``#ttg.blocked``) for each configuration ``TILE_HxTILE_WxCHANNELSxWARPS``, runs the same launch under
the Triton interpreter on a small image, and maps every lane of every warp onto the addresses the
interpreter computed. Per output element it reports:

* ``requests``: warp load instructions with at least one active lane (a layout larger than the tile
  holds it in several warps: every copy counts, as it is issued);
* ``lines`` / ``sectors``: distinct 128-byte lines / 32-byte sectors among each request's active lanes;
* ``lanes``: active lanes (the element loads of ``python -m bench requests``).

With ``--sweep-log`` (the log of ``python -m bench sweep`` on a GPU, lines ``case kind config … ms``)
it ranks the configurations it timed against each figure (Spearman correlation).

    python -m bench wavefronts [--configs 8x16x1x2,16x8x1x2] [--group C8] [--side 64] [--dtype float32]
                               [--sweep-log FILE] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile

from bench._cli import write_csv_rows

__all__ = ["layout_slots", "load_layouts", "count", "spearman", "main"]

DEFAULT_CONFIGS = "8x16x1x2,16x8x1x2,16x16x1x2,8x8x1x2,8x8x1x4,32x8x1x2,8x32x1x2"
SWEEP_CASE = "orbit C8 B=256 224 bilinear"


def parse_config(text: str) -> tuple[int, int, int, int]:
    """``TILE_HxTILE_WxCHANNELSxWARPS`` → four ints (ValueError naming the text otherwise)."""
    parts = text.split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"a configuration is TILE_HxTILE_WxCHANNELSxWARPS (positive integers), got {text!r}")
    return tuple(int(p) for p in parts)


def layout_slots(shape: tuple[int, ...], layout: dict):
    """Flat element indices ``[warps, registers, 32]`` of a ``#ttg.blocked`` layout over a tensor of ``shape``.

    ``layout``: ``sizePerThread``, ``threadsPerWarp``, ``warpsPerCTA``, ``order`` (fastest dimension first),
    as in the TTGIR. Lane ``l`` of warp ``w`` holds, in register ``k``, element ``out[w, k, l]``. Where the
    layout's footprint exceeds the shape the coordinates wrap: the element is held by several threads.
    """
    import numpy as np

    spt, tpw, wpc, order = (layout[k] for k in ("sizePerThread", "threadsPerWarp", "warpsPerCTA", "order"))
    nd = len(shape)
    if not (len(spt) == len(tpw) == len(wpc) == len(order) == nd):
        raise ValueError(f"layout_slots: a {nd}-D shape needs {nd}-D layout fields, got {layout}")
    lanes = int(np.prod(tpw))
    if lanes != 32:
        raise ValueError(f"layout_slots: threadsPerWarp must hold 32 lanes, got {tpw}")
    foot = [spt[d] * tpw[d] * wpc[d] for d in range(nd)]
    reps = [max(1, shape[d] // foot[d]) for d in range(nd)]
    regs = list(itertools.product(*[[(r, e) for r in range(reps[d]) for e in range(spt[d])] for d in range(nd)]))

    def split(i: int, sizes) -> list[int]:  # linear id → coordinates, order[0] varying fastest
        c = [0] * nd
        for d in order:
            c[d], i = i % sizes[d], i // sizes[d]
        return c

    warps = int(np.prod(wpc))
    out = np.zeros((warps, len(regs), lanes), dtype=np.int64)
    for w in range(warps):
        wc = split(w, wpc)
        for lane in range(lanes):
            lc = split(lane, tpw)
            for k, reg in enumerate(regs):
                flat = 0
                for d in range(nd):
                    r, e = reg[d]
                    x = r * foot[d] + wc[d] * spt[d] * tpw[d] + lc[d] * spt[d] + e
                    flat = flat * shape[d] + x % shape[d]
                out[w, k, lane] = flat
    return out


def _patched_config(config: tuple[int, int, int, int]):
    """A ``resample_config`` that gives ``kind == "taps"`` this configuration."""
    from canon.kernels import resample

    orig = resample.resample_config
    th, tw, ch, warps = config

    def patched(h, w, C, dtype, kind):
        cfg = orig(h, w, C, dtype, kind)
        if kind == "taps":
            cfg = dict(cfg, TILE_H=th, TILE_W=tw, CHANNELS=min(ch, 4), num_warps=warps)
        return cfg

    return orig, patched


def _orbit_case(group: str, side: int, dtype_name: str, device):
    """(x, tables, out) of the counted launch: one image of 3 channels, views of its own size."""
    import torch

    from canon.geometry import view_tables
    from canon.groups import as_group

    dtype = getattr(torch, dtype_name)
    t = view_tables(as_group(group), (side, side), (side, side), 1.0, device)
    n = 3 * side * side
    if device.type == "meta":
        x = torch.empty(1, 3, side, side, dtype=dtype, device=device)
    else:  # 256-byte aligned, as CUDA allocations are: the lines touched depend on the base address
        buf = torch.empty(n + 256, dtype=dtype)
        start = (-buf.data_ptr() % 256) // buf.element_size()
        x = buf[start : start + n].view(1, 3, side, side)
        x.copy_(torch.rand(1, 3, side, side))
    out = torch.empty(1, t.mats.shape[0], 3, side, side, dtype=dtype, device=device)
    return x, t, out


def load_layouts(
    configs: list[tuple], group: str = "C8", side: int = 64, dtype: str = "float32", families: bool = False
) -> dict:
    """``{config: {shape: layout}}`` of the tensor loads of the orbit kernel compiled for sm_90 (no interpreter)."""
    import torch

    from canon.kernels import compile as kc
    from canon.kernels import resample
    from canon.kernels.launch import recording

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("load_layouts compiles the kernels: unset TRITON_INTERPRET")
    out = {}
    for config in configs:
        orig, patched = _patched_config(config)
        x, t, o = _orbit_case(group, side, dtype, torch.device("meta"))
        sink: list = []
        resample.resample_config = patched
        try:
            with recording(sink), resample.orbit_families(families):
                resample.orbit_forward(x, t.mats, t.exact, t.aligned, (side, side), "zeros", "bilinear", o, fam=t.fam)
        finally:
            resample.resample_config = orig
        (la,) = sink
        sig, cx, attrs = kc._specialize(la)
        v = dict(module=la.kernel.fn.__module__, kernel=la.name, signature=sig, constexprs=cx, attrs=attrs)
        ttgir = kc._compile(dict(v, options=dict(la.options)), 90).asm["ttgir"]
        defs = dict(re.findall(r"(#blocked\d*) = #ttg\.blocked<\{([^}]*)\}>", ttgir))
        shapes = {}
        for m in re.finditer(r"tt\.load [^\n]*: tensor<([0-9x]+)x!tt\.ptr<\w+>, (#blocked\d*)>", ttgir):
            fields = re.findall(r"(\w+) = \[([0-9, ]+)\]", defs[m.group(2)])
            layout = {k: [int(n) for n in v.split(",")] for k, v in fields}
            if shapes.setdefault(m.group(1), layout) != layout:
                raise RuntimeError(f"load_layouts: loads of shape {m.group(1)} with two layouts in {config}")
        out["x".join(map(str, config))] = shapes
    return out


def _distinct(addr, act, unit: int):
    """Distinct ``unit``-byte blocks among each request's active lanes (``addr``, ``act``: [..., 32]), summed."""
    import numpy as np

    u = np.sort(np.where(act, addr // unit, -1), axis=-1)
    return int((((np.diff(u, axis=-1) != 0) & (u[..., 1:] >= 0)).sum(-1) + (u[..., 0] >= 0)).sum())


def _count_config(name: str, shapes: dict, x, t, out, side: int, families: bool = False) -> dict:
    """The tallies of one configuration's launch (its loads mapped through ``shapes``' layouts)."""
    import numpy as np
    from triton.runtime.interpreter import InterpreterBuilder as IB

    from canon.kernels import resample

    slots = {tuple(int(s) for s in k.split("x")): layout_slots(tuple(int(s) for s in k.split("x")), v)
             for k, v in shapes.items()}  # fmt: skip
    tally = dict(requests=0, lines=0, sectors=0, lanes=0)
    load = IB.create_masked_load

    def counted(self, ptrs, mask, *args, **kwargs):
        p = np.asarray(ptrs.data)
        ix = slots.get(tuple(p.shape))
        if ix is not None:
            addr = p.reshape(-1)[ix].astype(np.int64)
            if mask is None:
                act = np.ones(ix.shape, bool)
            else:
                act = np.broadcast_to(np.asarray(mask.data), p.shape).reshape(-1)[ix]
            tally["lines"] += _distinct(addr, act, 128)
            tally["sectors"] += _distinct(addr, act, 32)
            tally["requests"] += int(act.any(-1).sum())
            tally["lanes"] += int(act.sum())
        return load(self, ptrs, mask, *args, **kwargs)

    orig, patched = _patched_config(parse_config(name))
    IB.create_masked_load, resample.resample_config = counted, patched
    try:
        with resample.orbit_families(families):
            resample.orbit_forward(x, t.mats, t.exact, t.aligned, (side, side), "zeros", "bilinear", out, fam=t.fam)
    finally:
        IB.create_masked_load, resample.resample_config = load, orig
    return {k: v / out.numel() for k, v in tally.items()}


def count(layouts: dict, group: str = "C8", side: int = 64, dtype: str = "float32", families: bool = False) -> dict:
    """``{config: {requests, lines, sectors, lanes}}`` per output element, under the interpreter."""
    import torch

    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("count needs TRITON_INTERPRET=1 set before the kernels are imported")
    torch.manual_seed(0)
    x, t, out = _orbit_case(group, side, dtype, torch.device("cpu"))
    return {name: _count_config(name, shapes, x, t, out, side, families) for name, shapes in layouts.items()}


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation of two equally long lists (ties get their mean rank)."""
    import numpy as np

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for x in np.unique(v):  # ties: mean rank
            r[v == x] = r[v == x].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def read_sweep(path: str, case: str = SWEEP_CASE) -> dict[str, float]:
    """``{config: ms}`` of one case in a ``python -m bench sweep`` log."""
    found = {}
    with open(path) as f:
        for line in f:
            m = re.match(rf"{re.escape(case)}\s+\w+\s+(\d+x\d+x\d+x\d+)\s+([\d.]+) ms", line)
            if m:
                found[m.group(1)] = float(m.group(2))
    return found


FIELDS = ("requests", "lines", "sectors", "lanes")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench wavefronts", description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated TILE_HxTILE_WxCHANNELSxWARPS")
    ap.add_argument("--group", default="C8", help="the views' group (default C8)")
    ap.add_argument("--side", type=int, default=64, help="image side of the counted launch (default 64)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--families", action="store_true", help="the quarter-turn family path (ORBIT_FAMILIES)")
    ap.add_argument("--sweep-log", default=None, help=f"rank against the times of '{SWEEP_CASE}' in this log")
    ap.add_argument("--output-dir", default=None, help="also write wavefronts.csv there")
    ap.add_argument("--layouts", default=None, help=argparse.SUPPRESS)  # (the interpreter half of the run)
    args = ap.parse_args(argv)
    try:
        configs = [parse_config(c.strip()) for c in args.configs.split(",") if c.strip()]
    except ValueError as e:
        ap.error(f"--configs: {e}")
    if not configs:
        ap.error("--configs is empty")
    if args.side < 8:
        ap.error(f"--side must be >= 8, got {args.side}")
    from canon.groups import as_group

    try:
        as_group(args.group)
    except ValueError as e:
        ap.error(f"--group: {e}")
    if args.sweep_log and not os.path.isfile(args.sweep_log):
        ap.error(f"--sweep-log {args.sweep_log}: no such file")
    if args.layouts is None:  # compile here, then count in a process with the interpreter
        from bench._cli import prepare_output_dir

        prepare_output_dir(ap, args.output_dir)
        layouts = load_layouts(configs, args.group, args.side, args.dtype, args.families)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(layouts, f)
        try:
            env = {**os.environ, "TRITON_INTERPRET": "1"}
            return subprocess.call([sys.executable, "-m", "bench", "wavefronts", *argv, "--layouts", f.name], env=env)
        finally:
            os.unlink(f.name)
    with open(args.layouts) as f:
        layouts = json.load(f)
    rows = count(layouts, args.group, args.side, args.dtype, args.families)
    timed = read_sweep(args.sweep_log) if args.sweep_log else {}
    fams = ", quarter-turn families" if args.families else ""
    print(f"# per output element: orbit {args.group}, 1×3×{args.side}² → {args.side}², bilinear, {args.dtype}{fams}")
    head = f"{'config':12s} " + " ".join(f"{k:>9s}" for k in FIELDS) + "  lines/request  layout of the taps"
    print(head + ("   timed ms" if timed else ""))
    table = []
    for name, r in rows.items():
        shapes = layouts[name]
        lay = "; ".join(
            f"{s}: tpw {v['threadsPerWarp']} wpc {v['warpsPerCTA']} order {v['order']}" for s, v in shapes.items()
        )
        per = r["lines"] / r["requests"] if r["requests"] else 0.0
        line = f"{name:12s} " + " ".join(f"{r[k]:9.3f}" for k in FIELDS) + f"  {per:13.2f}  {lay}"
        if timed:
            line += f"   {timed[name]:.4f}" if name in timed else "   -"
        print(line)
        table.append({"config": name, **{k: round(r[k], 4) for k in FIELDS}, "ms": timed.get(name, "")})
    both = [n for n in rows if n in timed]
    if len(both) >= 3:
        for k in FIELDS:
            rho = spearman([rows[n][k] for n in both], [timed[n] for n in both])
            print(f"# Spearman({k}, timed ms) over {len(both)} configurations: {rho:.3f}")
    if args.output_dir:
        path = os.path.join(args.output_dir, "wavefronts.csv")
        write_csv_rows(path, table)
        print(f"# {len(table)} configurations → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
