"""``python -m bench requests``: the memory requests each kernel variant issues per output element,
counted under the Triton interpreter (no GPU), next to the minimum the op needs.

A proxy for designing kernels before a GPU is lent: :func:`count_requests` wraps the interpreter's
load, store and atomic operations and tallies, per launch, the lanes each one issues (masked lanes
included: the instructions run anyway), the lanes its mask lets through and their bytes. Loads of
one element (the matrices and tables a program reads once: one request per warp on a GPU) are
counted apart. Per variant the report divides by the op's output elements (views for a forward,
the input gradient for a backward) and gives the minimum bytes per output element (every input
read once, every output written once): ``amplification`` = requested bytes / minimum. On a GPU the
excess is served by L1/L2 when the same lines are reused (the four taps of a bilinear pixel), so the
figure bounds the cache traffic, not the DRAM traffic; atomics are counted separately because they
are what serialises.

    python -m bench requests [--output-dir DIR]

The scenarios are small (the interpreter runs every program in Python) and fixed; the tests
(``tests/test_requests.py``) hold budgets for the variants a redesign would touch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from bench._cli import write_csv_rows

__all__ = ["count_requests", "Scenario", "scenarios", "measure", "main"]


@contextlib.contextmanager
def count_requests():
    """Tally the interpreter's memory operations inside the block: ``{(kind, bits): [issued, active]}`` with
    kind ``load`` / ``store`` / ``atomic`` (tensors) or ``scalar_load`` (one-element loads)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("count_requests needs TRITON_INTERPRET=1 set before the kernels are imported")
    import numpy as np
    from triton.runtime.interpreter import InterpreterBuilder as IB

    tally: dict = defaultdict(lambda: [0, 0])

    def add(kind, ptrs, mask):
        bits = ptrs.get_element_ty().primitive_bitwidth
        issued = int(np.size(ptrs.data))
        active = int(np.broadcast_to(mask.data, np.shape(ptrs.data)).sum()) if mask is not None else issued
        if kind == "load" and issued == 1:
            kind = "scalar_load"
        tally[(kind, bits)][0] += issued
        tally[(kind, bits)][1] += active

    load, store, rmw = IB.create_masked_load, IB.create_masked_store, IB.create_atomic_rmw

    def counted_load(self, ptrs, mask, *args, **kwargs):
        add("load", ptrs, mask)
        return load(self, ptrs, mask, *args, **kwargs)

    def counted_store(self, ptrs, value, mask, *args, **kwargs):
        add("store", ptrs, mask)
        return store(self, ptrs, value, mask, *args, **kwargs)

    def counted_rmw(self, op, ptr, val, mask, *args, **kwargs):
        add("atomic", ptr, mask)
        return rmw(self, op, ptr, val, mask, *args, **kwargs)

    IB.create_masked_load, IB.create_masked_store, IB.create_atomic_rmw = counted_load, counted_store, counted_rmw
    try:
        yield tally
    finally:
        IB.create_masked_load, IB.create_masked_store, IB.create_atomic_rmw = load, store, rmw


@dataclass(frozen=True)
class Scenario:
    """One kernel variant at work: ``run()`` launches it; ``outputs`` and ``min_bytes`` describe the op."""

    name: str
    run: Callable[[], object]
    outputs: int  # output elements (views, or the input gradient for a backward)
    min_bytes: int  # every input read once and every output written once


def scenarios(B: int = 1, C: int = 2, side: int = 16, only: set[str] | None = None) -> list[Scenario]:
    """The variants a redesign touches, on B × C × side² images (views of side/2, or 2·side when upsampling);
    ``only``: the names to build (a backward's forward runs when it is built)."""
    import canon

    with canon.use_backend("triton"):  # the backwards run their forward's backend
        return [make() for name, make in _scenarios(B, C, side) if only is None or name in only]


def _scenarios(B: int, C: int, side: int) -> list[tuple[str, Callable[[], Scenario]]]:
    import torch

    import canon

    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, C, side, side, generator=g)
    half, double = side // 2, 2 * side
    plane = B * C * side * side

    def views(n, v):
        return B * n * C * v * v

    def orbit(group, size, crop, padding, antialias=True):
        return lambda: canon.orbit(x, group, size, crop, padding, antialias=antialias)

    def orbit_bwd(group, size, crop, padding, antialias=False):
        n = canon.groups.as_group(group).order
        v = size or side
        xr = x.clone().requires_grad_()
        out = canon.orbit(xr, group, size, crop, padding, antialias=antialias)
        up = torch.randn(out.shape, generator=g)
        return (lambda: torch.autograd.grad(out, xr, up, retain_graph=True)), 4 * (views(n, v) + plane)

    def canon_bwd(group, padding):
        n = canon.groups.as_group(group).order
        xr = x.clone().requires_grad_()
        onehot = torch.nn.functional.one_hot((torch.arange(B) + 1) % n, n).float().requires_grad_()  # 45°
        sel = canon.Selection(onehot.detach(), onehot.detach(), onehot.argmax(1), onehot)
        out = canon.canonicalize(xr, sel, group, padding)
        up = torch.randn(out.shape, generator=g)
        return (lambda: torch.autograd.grad(out, (xr, onehot), up, retain_graph=True)), 4 * 3 * plane

    def fwd(name, group, n, size, crop, padding, antialias=True, families=False):
        v = size or side
        run = orbit(group, size, crop, padding, antialias)
        if families:  # the quarter-turn family path (kernels.resample.ORBIT_FAMILIES), on for this call only
            plain = run

            def run():
                from canon.kernels import resample

                with resample.orbit_families():
                    return plain()

        return name, lambda: Scenario(name, run, views(n, v), 4 * (plane + views(n, v)))

    def bwd(name, build):
        def make():
            fn, need = build()
            return Scenario(name, fn, plane, need)

        return name, make

    def canon_fwd():
        index = (torch.arange(B) + 1) % 8  # 45°
        return Scenario("canonicalize C8 45° (transform)", lambda: canon.canonicalize(x, index, "C8"), plane, 8 * plane)

    return [
        fwd("orbit exact C4 (tile copy)", "C4", 4, None, 1.0, "zeros"),
        fwd("orbit bilinear C8 (taps)", "C8", 8, None, 1.0, "zeros"),
        fwd("orbit bilinear C8, quarter-turn families", "C8", 8, None, 1.0, "zeros", families=True),
        fwd("orbit bilinear C8 shrink, one tap", "C8", 8, half, 0.8, "border", antialias=False),
        fwd("orbit antialiased C8 shrink", "C8", 8, half, 0.8, "border"),
        ("canonicalize C8 45° (transform)", canon_fwd),
        bwd("orbit backward C8 shrink, zeros (pull)", lambda: orbit_bwd("C8", half, 0.8, "zeros")),
        bwd(
            "orbit backward C8 shrink, border (in-range pull + folded scatter)",
            lambda: orbit_bwd("C8", half, 0.8, "border"),
        ),
        bwd(
            "orbit backward C8 upsampling, border (pull + folded scatter)",
            lambda: orbit_bwd("C8", double, 0.8, "border"),
        ),
        bwd(
            "orbit backward C8 shrink, antialiased (pull)",
            lambda: orbit_bwd("C8", half, 0.8, "zeros", antialias=True),
        ),
        bwd(
            "canonicalize backward C8 border (pull + inner products + folded scatter)",
            lambda: canon_bwd("C8", "border"),
        ),
    ]


def measure(s: Scenario) -> dict:
    """One row: requests per output element of ``s`` (one call, Triton backend, interpreter)."""
    import canon

    with canon.use_backend("triton"), count_requests() as tally:
        s.run()
    per = lambda n: n / s.outputs  # noqa: E731
    row = dict(variant=s.name, outputs=s.outputs, min_bytes_per_out=round(per(s.min_bytes), 3))
    moved = 0
    for kind in ("load", "store", "atomic", "scalar_load"):
        entries = {bits: v for (k, bits), v in tally.items() if k == kind}
        row[f"{kind}_lanes_per_out"] = round(per(sum(v[0] for v in entries.values())), 3)
        active_bytes = sum(v[1] * bits // 8 for bits, v in entries.items())
        row[f"{kind}_bytes_per_out"] = round(per(active_bytes), 3)
        row[f"{kind}_bits"] = ",".join(str(b) for b in sorted(entries))
        if kind != "scalar_load":
            moved += active_bytes
    row["amplification"] = round(moved / s.min_bytes, 3)
    return row


COLUMNS = (
    ("variant", "variant", "s"),
    ("min B/out", "min_bytes_per_out", ".2f"),
    ("ld lanes/out", "load_lanes_per_out", ".2f"),
    ("ld B/out", "load_bytes_per_out", ".2f"),
    ("st B/out", "store_bytes_per_out", ".2f"),
    ("atomic lanes", "atomic_lanes_per_out", ".2f"),
    ("atomic B/out", "atomic_bytes_per_out", ".2f"),
    ("scalar ld/out", "scalar_load_lanes_per_out", ".3f"),
    ("× min", "amplification", ".2f"),
)


def format_rows(rows: list[dict]) -> str:
    width = max(len(r["variant"]) for r in rows)
    head = f"{'variant':{width}s} " + " ".join(f"{h:>13s}" for h, _, _ in COLUMNS[1:])
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['variant']:{width}s} " + " ".join(f"{r[k]:>13{f}}" for _, k, f in COLUMNS[1:]))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench requests", description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default=None, help="also write requests.csv there")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":  # the interpreter must replace the kernels at import
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        return subprocess.call([sys.executable, "-m", "bench", "requests", *argv], env=env)
    from bench._cli import prepare_output_dir

    prepare_output_dir(ap, args.output_dir)
    rows = [measure(s) for s in scenarios()]
    print("# requests per output element under the Triton interpreter (B=1, C=2, 16×16 images, float32)")
    print(format_rows(rows))
    if args.output_dir:
        path = os.path.join(args.output_dir, "requests.csv")
        write_csv_rows(path, rows)
        print(f"# {len(rows)} variants → {path}")
    return 0
