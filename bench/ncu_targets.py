"""The issue-20 cases run twice each (compile + one launch to profile), for Nsight Compute::

    PYTHONPATH=. TRITON_INTERPRET=0 ncu --clock-control none -k regex:'kernel' --launch-skip-before-match 0 \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \\
        --section LaunchStats --section WarpStateStats python bench/ncu_targets.py

Each case is run once to compile (and once more under ``ncu``); the NVTX-free ordering is the
one printed on stderr, so the profiled kernels can be matched to cases by their order.
"""

from __future__ import annotations

import sys

import torch

import canon


def cases():
    g = torch.Generator().manual_seed(0)

    def img(b, s):
        return torch.rand(b, 3, s, s, generator=g).cuda()

    x224 = img(256, 224)
    yield "orbit bilinear C8 B=256 224 full", lambda: canon.orbit(x224, "C8", None, 1.0, "zeros", antialias=False)
    x512 = img(512, 224)
    yield (
        "orbit one-tap C16 B=512 224->96 crop .8 border",
        lambda: canon.orbit(x512, "C16", 96, 0.8, "border", antialias=False),
    )
    idx = torch.randint(0, 8, (256,), generator=g).cuda()
    yield "canonicalize C8 B=256 224 border (index)", lambda: canon.canonicalize(x224, idx, "C8", "border")
    xg = img(64, 224).requires_grad_()
    out = canon.orbit(xg, "C8", 96, 0.8, "border", antialias=False)
    up = torch.randn_like(out)
    yield "orbit backward C8 B=64 224->96 border", lambda: torch.autograd.grad(out, xg, up, retain_graph=True)
    xs = img(64, 32).requires_grad_()
    outs = canon.orbit(xs, "C8", 96, 0.8, "border", antialias=False)
    ups = torch.randn_like(outs)
    yield "orbit backward C8 B=64 32->96 border", lambda: torch.autograd.grad(outs, xs, ups, retain_graph=True)
    xc = x224.clone().requires_grad_()
    onehot = torch.nn.functional.one_hot(idx, 8).float().requires_grad_()
    sel = canon.Selection(onehot.detach(), onehot.detach(), idx, onehot)
    outc = canon.canonicalize(xc, sel, "C8", "border")
    upc = torch.randn_like(outc)
    yield (
        "canonicalize backward C8 B=256 224 border",
        lambda: torch.autograd.grad(outc, (xc, onehot), upc, retain_graph=True),
    )


def main() -> int:
    with canon.use_backend("triton"):
        for label, fn in cases():
            fn()
            torch.cuda.synchronize()
            print(f"== {label}", file=sys.stderr, flush=True)
            fn()
            torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
