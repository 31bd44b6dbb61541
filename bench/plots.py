"""Figures drawn from a results.csv (never from in-memory numbers): time, speedup, bandwidth, memory, launches,
throughput. One panel per case and mode (``orbit · backward``); CSVs written before the mode column get one panel
per case."""

from __future__ import annotations

import argparse
import csv
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "ours-triton": "tab:green",
    "ours-reference": "tab:blue",
    "equiadapt": "tab:red",
    "equiadapt-loop": "tab:orange",
    "torch-batched": "tab:gray",
    "torch-compile": "tab:purple",
}


# what the figures read: a results.csv of ``python -m bench`` has these and more
REQUIRED = (
    *("case", "provider", "status", "dtype", "batch", "group", "in_shape", "out_shape", "median_ms", "cuda_graph"),
    *("device_name", "torch", "git_commit"),
)
NUMERIC = (
    *("median_ms", "q25_ms", "q75_ms", "speedup_vs_equiadapt_loop", "speedup_vs_equiadapt", "pct_copy"),
    "speedup_vs_torch_compile",
    *("peak_mem_mb", "launches", "images_per_s"),
)


class ResultsError(ValueError):
    """A results CSV that the figures cannot be drawn from."""


def read_rows(path: str) -> list[dict]:
    """The ``status == ok`` rows of a results CSV, checked.

    Raises:
        ResultsError: the file is empty, lacks a column the figures need, or an ok row holds a
            number that does not parse.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise ResultsError(f"{path} is empty; expected a results.csv written by python -m bench")
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            cols = ", ".join(missing)
            raise ResultsError(f"{path} lacks the column(s) {cols}; expected a results.csv written by python -m bench")
        rows = [r for r in reader if r["status"] == "ok"]
    for i, r in enumerate(rows):
        where = f"{path}: ok row {i + 1} ({r['case']}, {r['provider']})"
        short = [c for c in REQUIRED if r.get(c) is None]
        if short or None in r:  # DictReader fills a truncated row with None (extra cells go under the key None)
            what = f"ends before the column(s) {', '.join(short)}" if short else "has more cells than the header"
            raise ResultsError(f"{where} {what}: the file is truncated or damaged")
        for c in NUMERIC:
            v = r.get(c)
            if v in ("", None):
                continue
            try:
                x = float(v)
            except ValueError:
                raise ResultsError(f"{where} has {c}={v!r}, not a number") from None
            if not math.isfinite(x) or (c.endswith("_ms") and x <= 0):
                raise ResultsError(f"{where} has {c}={v!r}: a time must be a finite number > 0")
    return rows


def _label(r: dict) -> str:
    side = r["out_shape"].split("x")[-1] if r["case"] == "orbit" else ""
    view = f"→{side}" if side and side != r["in_shape"].split("x")[-1] else ""
    return f"{r['group']} B={r['batch']}\n{r['in_shape']}{view}\n{r['dtype']}"


def _panel(r: dict) -> tuple[str, str]:
    """(case, mode) of a row; the mode is "" in CSVs written before the mode column."""
    return r["case"], r.get("mode") or ""


def _series(rows: list[dict], panel: tuple[str, str], metric: str, graph: bool = False):
    """{provider: {config label: value}} of one panel and the config labels in order of appearance."""
    sel = [r for r in rows if _panel(r) == panel and (r["cuda_graph"] == "True") == graph]
    sel = [r for r in sel if r.get(metric, "") not in ("", None)]
    labels = list(dict.fromkeys(_label(r) for r in sel))
    data: dict = {}
    for r in sel:
        spread = (float(r["q25_ms"]), float(r["q75_ms"])) if metric == "median_ms" and r.get("q25_ms") else None
        data.setdefault(r["provider"], {})[_label(r)] = (float(r[metric]), spread)
    return data, labels


def _bars(ax, data, labels, log=False):
    provs = [p for p in COLORS if p in data]
    width = 0.8 / max(1, len(provs))
    for i, p in enumerate(provs):
        xs = [j + i * width for j, lab in enumerate(labels) if lab in data[p]]
        vals = [data[p][lab] for lab in labels if lab in data[p]]
        ys = [v for v, _ in vals]
        yerr = None
        if all(s is not None for _, s in vals):  # interquartile range as the error bar
            yerr = [[v - s[0] for v, s in vals], [s[1] - v for v, s in vals]]
        ax.bar(xs, ys, width, label=p, color=COLORS[p], yerr=yerr, capsize=2)
    ax.set_xticks([j + width * (len(provs) - 1) / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, fontsize=7)
    if log:
        ax.set_yscale("log")
        lo = min(v for p in provs for v, _ in data[p].values())
        ax.set_ylim(bottom=lo / 3)
    ax.legend(fontsize=7)


def _figure(rows, metric: str, ylabel: str, title: str, path: str, log=False, ref_line=None) -> str | None:
    panels = [p for p in dict.fromkeys(_panel(r) for r in rows) if _series(rows, p, metric)[1]]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (case, mode) in zip(axes.flat, panels):
        data, labels = _series(rows, (case, mode), metric)
        _bars(ax, data, labels, log)
        if ref_line is not None:
            ax.axhline(ref_line, color="k", lw=0.8, ls="--")
        ax.set_title(f"{case} · {mode}" if mode else case, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"{title} — {r0['device_name']}, torch {r0['torch']}, commit {r0['git_commit'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_all(csv_path: str, out_dir: str) -> list[str]:
    rows = read_rows(csv_path)
    if not rows:
        return []
    figs = [
        ("median_ms", "median ms (log)", "Time per call (lower is better)", "time.png", True, None),
        (
            "speedup_vs_equiadapt_loop",
            "× faster than equiadapt-loop",
            "Speedup against the equiadapt-loop baseline (>1: ours wins)",
            "speedup_vs_equiadapt_loop.png",
            False,
            1.0,
        ),
        (
            "speedup_vs_equiadapt",
            "× faster than equiadapt",
            "Speedup against equiadapt itself",
            "speedup_vs_equiadapt.png",
            False,
            1.0,
        ),
        (
            "speedup_vs_torch_compile",
            "× faster than torch.compile",
            "Speedup against one batched grid_sample under torch.compile (>1: faster)",
            "speedup_vs_torch_compile.png",
            False,
            1.0,
        ),
        (
            "pct_copy",
            "% of copy bandwidth",
            "Achieved bandwidth (inputs read once, outputs written once) / copy bandwidth of this run",
            "bandwidth.png",
            False,
            100.0,
        ),
        ("peak_mem_mb", "peak MB", "Peak memory of one call", "peak_memory.png", False, None),
        ("launches", "launches (log)", "Kernel launches per call (CPU: leaf aten ops)", "launches.png", True, None),
        ("images_per_s", "images/s", "Images per second", "images_per_s.png", False, None),
    ]
    out = []
    for metric, ylabel, title, name, log, ref in figs:
        p = _figure(rows, metric, ylabel, title, os.path.join(out_dir, name), log, ref)
        if p:
            out.append(p)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench plot", description="redraw the figures from a results.csv")
    ap.add_argument("csv")
    ap.add_argument("--output-dir", default=None, help="default: the folder of the CSV (created when missing)")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.csv):
        ap.error(f"{args.csv}: no such file")
    out = args.output_dir or os.path.dirname(os.path.abspath(args.csv))
    if os.path.exists(out) and not os.path.isdir(out):
        ap.error(f"--output-dir {out} is a file; choose a folder")
    try:
        rows = read_rows(args.csv)
    except (ResultsError, UnicodeDecodeError, csv.Error) as e:
        ap.error(str(e))
    if not rows:
        ap.error(f"{args.csv} has no rows with status 'ok': nothing to plot")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        ap.error(f"--output-dir {out}: cannot create the folder: {e.strerror or e}")
    paths = plot_all(args.csv, out)
    if not paths:
        ap.error(f"{args.csv}: no figure could be drawn from its ok rows")
    for p in paths:
        print(p)
    return 0
