"""``python -m bench kernels``: static report of every Triton kernel compiled for sm_80/sm_90, no GPU needed.

A thin formatter over ``canon.kernels.compile.compile_report(archs=(80, 90)) -> list[dict]``
(one dict per kernel × variant × arch: ``name``, ``variant``, ``arch``, warps, ``registers``,
occupancy, spills/local/stack, shared memory, global load/store/atomic widths read from the
SASS, and the launch scenarios that produce the variant).
Keys it does not know are kept: the table shows the known columns, the CSV every key.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench._cli import prepare_output_dir, write_csv_rows

# preferred column order; synonyms the report may use for the same quantity
KNOWN = [
    ("name", ("name", "kernel")),
    ("variant", ("variant",)),
    ("arch", ("arch",)),
    ("warps", ("num_warps",)),
    ("registers", ("registers", "regs", "n_regs")),
    ("occupancy", ("occupancy",)),
    ("spills", ("spills", "spill_bytes", "n_spills")),
    ("spill_st", ("spill_stores",)),
    ("spill_ld", ("spill_loads",)),
    ("local", ("local", "local_bytes", "lmem")),
    ("stack", ("stack", "stack_bytes")),
    ("shared", ("shared", "shared_bytes", "smem", "shared_memory")),
    ("ld_bits", ("global_load_bits", "loads", "load_widths", "global_loads", "ld_widths")),
    ("st_bits", ("global_store_bits", "stores", "store_widths", "global_stores", "st_widths")),
    ("atomic_bits", ("global_atomic_bits",)),
    ("cases", ("cases",)),
    ("error", ("error",)),
]


def _get(row: dict, names) -> object:
    for n in names:
        if n in row:
            return row[n]
    return ""


def _cell(v, short: bool = False) -> str:
    """A printable cell; ``short`` keeps only the first line of long text (compile errors in the table)."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v.splitlines()[0][:100] if short and v else v
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, dict):
        return " ".join(f"{k}:{v[k]}" for k in v)
    if isinstance(v, (list, tuple, set)):
        return ",".join(str(x) for x in v)
    return str(v)


def format_report(rows: list[dict]) -> str:
    cols = [(label, names) for label, names in KNOWN if any(_get(r, names) != "" for r in rows)] or [
        ("name", ("name",))
    ]
    cells = [[_cell(_get(r, names), short=label == "error") for label, names in cols] for r in rows]
    widths = [max([len(label)] + [len(c[i]) for c in cells]) for i, (label, _) in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [line([label for label, _ in cols]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench kernels",
        description="registers, spills, shared memory and load/store widths of every kernel",
    )
    ap.add_argument("--archs", default="80,90", help="comma-separated SM versions (default 80,90)")
    ap.add_argument("--output-dir", default=None, help="also write kernels.csv there")
    args = ap.parse_args(argv)
    try:
        archs = tuple(int(a) for a in args.archs.split(","))
    except ValueError:
        ap.error(f"--archs must be comma-separated SM versions such as 80,90, got {args.archs!r}")
    bad = [a for a in archs if not 70 <= a < 200]
    if bad:
        ap.error(f"--archs: {bad} are not CUDA SM versions Triton compiles for (e.g. 80 for A100, 90 for H100)")
    prepare_output_dir(ap, args.output_dir)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print(
            "bench kernels: unset TRITON_INTERPRET (the interpreter replaces the kernels it would compile)",
            file=sys.stderr,
        )
        return 2
    try:
        from canon.kernels.compile import compile_report
    except ImportError as e:
        print(
            f"bench kernels: kernels/compile.py with compile_report(archs) is not available ({e}); nothing to report",
            file=sys.stderr,
        )
        return 2
    rows = list(compile_report(archs=archs))
    if not rows:
        print("bench kernels: compile_report returned no kernels", file=sys.stderr)
        return 1
    print(format_report(rows))
    if args.output_dir:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        path = os.path.join(args.output_dir, "kernels.csv")
        write_csv_rows(path, [{k: _cell(r.get(k, "")) for k in keys} for r in rows], keys)
        n_archs = len({r.get("arch") for r in rows}) or 1
        print(f"# {len(rows) // n_archs} kernel variants × {n_archs} archs ({len(rows)} compilations) → {path}")
    return 0
