"""``python -m canon.train.report RUN_DIR ...``: Markdown tables from finished runs.

Read from each run folder's metrics.json and config.json.

The comparison tables of docs/training.md are printed by this module from the run folders,
so every number there can be traced back to a run:

* default: one row per run and method: accuracy (upright, group average, average every
  ``--angle-step`` degrees), invariance rate, and for methods with a canonicalizer its
  parameters and step time (``canonicalizer_cost`` in metrics.json);
* ``--collapse``: one row per run for the canonicalized method (or ``--method``): the options
  that differ between the runs, accuracy, identity metric and the collapse statistics.

Example::

    python -m canon.train.report runs/mnist_c8_s0 runs/mnist_c8_s1
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["load_run", "comparison_table", "collapse_table", "main"]

ORDER = ("canonicalized", "equivariant", "plain", "augmented")
LABELS = {
    "canonicalized": "ours (optimized)",
    "equivariant": "equivariant (e2cnn)",
    "plain": "plain",
    "augmented": "augmented",
}
VARIED = (
    "lambda_prior",
    "lambda_contrastive",
    "beta",
    "prior_beta",
    "encoder_width",
    "encoder_dim",
    "augment_prob",
    "epochs",
    "seed",
)


def load_run(path: str) -> dict:
    """``{"metrics": ..., "config": ...}`` of a finished run folder.

    Raises:
        FileNotFoundError: the folder has no metrics.json (the run did not finish).
    """
    m = os.path.join(path, "metrics.json")
    if not os.path.isfile(m):
        raise FileNotFoundError(f"{path}: no metrics.json (not a finished canon.train run)")
    with open(m) as f:
        metrics = json.load(f)
    cfg = {}
    c = os.path.join(path, "config.json")
    if os.path.isfile(c):
        with open(c) as f:
            cfg = json.load(f).get("config", {})
    return {"metrics": metrics, "config": cfg, "path": path}


def _pct(m: dict, key: str) -> str:
    return f"{100 * m[key]:.1f}%" if key in m else "–"


def comparison_table(runs: list[dict]) -> str:
    """Rows: run × method, in the order ours, equivariant, plain, augmented."""
    lines = [
        "| dataset, group | seed | method | upright acc | group-average acc | 15°-step average acc | invariance rate "
        "| canonicalizer params | canonicalizer step |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        res, cfg = run["metrics"], run["config"]
        cost = res.get("canonicalizer_cost", {})
        for name in sorted(res["methods"], key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER)):
            m = res["methods"][name]
            c = cost.get(name, {})
            params = f"{c['canonicalizer_params']:,}" if c else "–"
            step = f"{c['canonicalizer_step_ms']:.1f} ms" if c else "–"
            lines.append(
                f"| {res['dataset']}, {res['group']} | {cfg.get('seed', '?')} | {LABELS.get(name, name)} | "
                f"{_pct(m, 'upright_acc')} | "
                f"{_pct(m, 'group_avg_acc')} | {_pct(m, 'angle_avg_acc')} | {_pct(m, 'invariance_rate')} | {params} | "
                f"{step} |"
            )
    return "\n".join(lines)


def collapse_table(runs: list[dict], method: str = "canonicalized") -> str:
    """Rows: one run each, its varied options, accuracy and collapse statistics of ``method``."""
    varied = [k for k in VARIED if len({json.dumps(r["config"].get(k)) for r in runs}) > 1]
    head = "| " + " | ".join(varied) + (" | " if varied else "")
    lines = [
        head
        + "group-average acc | identity metric | score ties (< 1e-3) | parallel orbits (cos ≥ 0.99) | "
        + "mean pair cos | median score gap |",
        "|" + "---:|" * (len(varied) + 6),
    ]
    for run in runs:
        m = run["metrics"]["methods"].get(method)
        if m is None:
            continue
        opts = "".join(f"{run['config'].get(k)} | " for k in varied)
        lines.append(
            f"| {opts}{_pct(m, 'group_avg_acc')} | {_pct(m, 'identity_metric')} | {_pct(m, 'score_tie_rate')} | "
            f"{_pct(m, 'parallel_orbit_rate')} | {m.get('mean_pair_cos', float('nan')):.3f} | "
            f"{m.get('median_score_gap', float('nan')):.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m canon.train.report", description="Markdown tables from finished canon.train runs."
    )
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.json)")
    p.add_argument("--collapse", action="store_true", help="collapse statistics of one method per run")
    p.add_argument("--method", default="canonicalized", help="method of the --collapse table")
    args = p.parse_args(argv)
    try:
        runs = [load_run(r) for r in args.runs]
    except (FileNotFoundError, json.JSONDecodeError) as e:
        p.error(str(e))
    print(collapse_table(runs, args.method) if args.collapse else comparison_table(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
