"""The two adjoints of border/reflection-padded views on a GPU: same gradients, and their times.

``canon.kernels.resample.BORDER_ADJOINT`` chooses how the backward of a bilinear view with
border or reflection padding runs on the Triton backend: ``"scatter"`` (atomics for every output
pixel, as aten's ``grid_sample`` backward) or ``"pull"`` (the deterministic gather of the output
pixels whose coordinate lies inside the input, then atomics for the few that the padding folds onto
the edge). This script times both on the bench's padded cases (orbit and canonicalize backward,
the views' and the canonical image's gradient) and checks that they agree::

    PYTHONPATH=. TRITON_INTERPRET=0 python bench/adjoint_check.py [--output FILE.csv]

Times are medians of ``triton.testing.do_bench`` (CUDA events, L2 flushed) of one
``torch.autograd.grad`` call; "% of copy" counts the gradient read and the input gradient written
once (plus the input read, for canonicalize's inner products), against a device copy measured in
the same run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch

import canon
from bench._cli import write_csv_rows

__all__ = ["Case", "CASES", "gradients", "main"]


@dataclass(frozen=True)
class Case:
    op: str  # "orbit" or "canonicalize"
    group: str
    batch: int
    side: int  # input H = W (3 channels)
    view: int | None  # orbit view size (None: full size)
    crop: float
    padding: str

    @property
    def label(self) -> str:
        view = f"→{self.view} crop {self.crop}" if self.view else ""
        return f"{self.op} backward {self.group} B={self.batch} 3×{self.side}²{view} {self.padding}"

    def nbytes(self) -> int:
        image = self.batch * 3 * self.side**2 * 4
        if self.op == "orbit":
            n = int(self.group[1:]) * (2 if self.group[0] == "D" else 1)
            return image + self.batch * n * 3 * self.view**2 * 4
        return 3 * image  # gradient read, input read (inner products), input gradient written


CASES = (
    Case("orbit", "C8", 64, 224, 96, 0.8, "border"),
    Case("orbit", "C16", 512, 224, 96, 0.8, "border"),
    Case("orbit", "C8", 64, 32, 96, 0.8, "border"),
    Case("orbit", "C8", 64, 224, 96, 0.8, "reflection"),
    Case("canonicalize", "C8", 256, 224, None, 1.0, "border"),
    # zero padding pulls in either mode: the pull's own cost beside the padded rows
    Case("orbit", "C8", 64, 224, 96, 0.8, "zeros"),
    Case("orbit", "C8", 64, 32, 96, 0.8, "zeros"),
)


def gradients(case: Case, device: str, mode: str, seed: int = 0):
    """(the timed closure, its gradients) of ``case`` with the adjoint ``mode``."""
    from canon.kernels import resample

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(case.batch, 3, case.side, case.side, generator=g).to(device).requires_grad_()
    n = canon.groups.as_group(case.group).order
    if case.op == "orbit":
        out = canon.orbit(x, case.group, case.view, case.crop, case.padding, antialias=False)
        leaves = (x,)
    else:
        onehot = torch.nn.functional.one_hot(torch.randint(0, n, (case.batch,), generator=g), n).float()
        onehot = onehot.to(device).requires_grad_()
        sel = canon.Selection(onehot.detach(), onehot.detach(), onehot.argmax(1), onehot)
        out = canon.canonicalize(x, sel, case.group, case.padding)
        leaves = (x, onehot)
    up = torch.randn(out.shape, generator=g).to(device)

    def run():
        old = resample.BORDER_ADJOINT
        resample.BORDER_ADJOINT = mode
        try:
            return torch.autograd.grad(out, leaves, up, retain_graph=True)
        finally:
            resample.BORDER_ADJOINT = old

    return run, run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/adjoint_check.py", description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=None, help="CSV file of the rows")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/adjoint_check.py times compiled kernels: it needs a CUDA device", file=sys.stderr)
        return 2
    import triton.testing as tt

    from bench.timers import copy_bandwidth

    copy_gbps = copy_bandwidth("cuda")  # the bench's own roofline: 512 MiB copy, bytes read + written
    rows = []
    with canon.use_backend("triton"):
        for case in CASES:
            got = {}
            for mode in ("scatter", "pull"):
                run, grads = gradients(case, "cuda", mode)
                ms = tt.do_bench(run, warmup=25, rep=200, quantiles=[0.5])
                ms = ms[0] if isinstance(ms, (list, tuple)) else ms
                got[mode] = grads
                gbps = case.nbytes() / (ms * 1e-3) / 1e9
                pct = round(100 * gbps / copy_gbps, 1)
                rows.append(dict(case=case.label, adjoint=mode, median_ms=round(ms, 4), pct_copy=pct))
            diff = max(
                float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(got["pull"], got["scatter"])
            )
            for r in rows[-2:]:
                r["max_rel_diff_pull_vs_scatter"] = f"{diff:.2e}"
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; copy {copy_gbps:.0f} GB/s (read + write)")
    print(f"{'case':58s} {'adjoint':8s} {'median ms':>10s} {'% copy':>7s}  max rel diff")
    for r in rows:
        diff = r["max_rel_diff_pull_vs_scatter"]
        print(f"{r['case']:58s} {r['adjoint']:8s} {r['median_ms']:10.4f} {r['pct_copy']:7.1f}  {diff}")
    if args.output:
        write_csv_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
