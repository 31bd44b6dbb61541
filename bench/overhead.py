"""``python -m bench overhead``: host time per call of every public op on tiny inputs.

On tiny inputs an op's kernels take a few microseconds, so its wall time per call is host
time: validation, plan lookup, autograd bookkeeping, the kernel launch. For each op this
prints

* ``public``: the public call (``canon.orbit(x, "C8")``, ``model(x)``, …);
* ``bare``: the same work called below the API (the backend's implementation with the
  tables already looked up: ``canon.reference.orbit_ref`` on CPU, the Triton launcher
  ``canon.triton_ops.orbit`` on CUDA), i.e. the op's "kernels";
* ``overhead`` = public − bare: the host time the package adds per call;

beside ``torch.add`` on the same tiny tensors (PyTorch's own per-op floor). On CUDA the
calls are queued without synchronising (one sync at the end of each timed batch), so the
figures are host time as long as the GPU keeps up, which tiny kernels do. On CUDA it also
times public and bare calls with every kernel launched through Triton's own
``kernel[grid](...)`` (``canon.kernels.launch.stock_launches``) instead of the package's
cached launch path: the host time that path saves.

Usage::

    python -m bench overhead [--device cpu|cuda] [--calls 2000] [--repeats 7] [--output-dir DIR]
    python -m bench overhead --profile orbit,select   # also cProfile those ops' public calls
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import canon
from bench._cli import check_threads, prepare_output_dir
from canon import reference as ref
from canon.geometry import view_tables
from canon.groups import as_group

TARGET_US = 25.0  # issue target: host time per call beyond the kernels


class _Pool(torch.nn.Module):
    """A near-free encoder (mean pool + linear) so that the module's own overhead shows."""

    out_dim = 8

    def __init__(self, channels: int):
        super().__init__()
        self.lin = torch.nn.Linear(channels, self.out_dim)

    def forward(self, z):
        return self.lin(z.mean((-2, -1)))


def _timer(device: str):
    """``per_call_us(fns, calls)``: median µs per call of each function, their timed batches interleaved
    (a, b, a, b, …) so that drifts of the machine's speed touch every function alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def per_call_us(fns, calls: int, repeats: int = 7) -> list[float]:
        for fn in fns:
            for _ in range(max(10, calls // 20)):
                fn()
        sync()
        runs = [[] for _ in fns]
        for _ in range(repeats):
            for fn, times in zip(fns, runs):
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                sync()
                times.append((time.perf_counter() - t0) / calls * 1e6)
        return [statistics.median(times) for times in runs]

    return per_call_us


def cases(device: str) -> list[tuple[str, object, object]]:
    """(name, public closure, bare closure or None) on tiny inputs."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    B, C, S, D = 2, 1, 8, 8
    x = torch.rand(B, C, S, S, generator=g).to(dev)
    v = torch.randn(B, 8, D, generator=g).to(dev)
    r = torch.randn(D, generator=g).to(dev)
    idx = torch.tensor([1, 3], device=dev)
    G = as_group("C8")
    t_orbit = view_tables(G, (S, S), (S, S), 1.0, dev)
    t_inv = view_tables(G, (S, S), (S, S), 1.0, dev, inverse=True)
    sel = canon.select(v, r)
    triton = dev.type == "cuda"
    if triton:
        from canon import triton_ops as T

        def bare_orbit():
            return T.orbit(x, t_orbit.mats, t_orbit.pull, t_orbit.exact, t_orbit.aligned, (S, S), "zeros", "bilinear")

        def bare_select():
            return T.select(v, r, 1.0, "cosine", None, 1.0)

        def bare_losses():  # the kernel's per-sample losses, then their batch means (a second launch, as in ops)
            sel, losses = T.select(v, r, 1.0, "cosine", None, 1.0, "normalized", "identity")
            return sel, losses.mean(-1)

        def bare_transform():
            return T.transform(x, idx, t_orbit.mats, t_orbit.exact, t_orbit.aligned, "zeros", "bilinear")

        def bare_invert():
            return T.transform(x, idx, t_inv.mats, t_inv.exact, t_inv.aligned, "zeros", "bilinear")

        def bare_contrastive():  # per-sample losses and their mean (two launches, as in ops)
            return T.contrastive_loss(v, "normalized").mean()

        def bare_fused():
            return T.select_transform(
                v, r, x, t_orbit.mats, t_orbit.exact, t_orbit.aligned, 1.0, "cosine", "zeros", "bilinear"
            )

    else:

        def bare_orbit():
            return ref.orbit_ref(x, t_orbit.mats, t_orbit.exact, (S, S), "zeros", "bilinear")

        def bare_select():
            return ref.select_ref(v, r, 1.0, "cosine", False)

        def bare_losses():  # what the op runs on the CPU: the selection, then both losses
            s = ref.select_ref(v, r, 1.0, "cosine", False)
            prior = ref.prior_loss_ref(s.scores, torch.zeros_like(s.index), 1.0)
            return s, ref.contrastive_loss_ref(v, "normalized"), prior

        def bare_transform():
            return ref.transform_values_ref(x, idx, t_orbit.mats, t_orbit.exact)

        def bare_invert():
            return ref.transform_values_ref(x, idx, t_inv.mats, t_inv.exact)

        def bare_contrastive():
            return ref.contrastive_loss_ref(v, "normalized")

        def bare_fused():
            s = ref.select_ref(v, r, 1.0, "cosine", False)
            return ref.transform_values_ref(x, s.index, t_orbit.mats, t_orbit.exact)

    zero_target = torch.zeros(B, dtype=torch.int64, device=dev)
    model = canon.OrbitCanonicalizer(_Pool(C), G).to(dev).eval()
    views = canon.orbit(x, G)

    def bare_model():  # the module's work with no module: orbit, encoder, fused eval canonicalization
        bare_orbit()
        vec = model.encoder(views.flatten(0, 1)).reshape(B, 8, -1)
        bare_fused_with = T.select_transform if triton else None
        if triton:
            return bare_fused_with(
                vec,
                model.reference,
                x,
                t_orbit.mats,
                t_orbit.exact,
                t_orbit.aligned,
                1.0,
                "cosine",
                "zeros",
                "bilinear",
            )
        s = ref.select_ref(vec, model.reference, 1.0, "cosine", False)
        return ref.transform_values_ref(x, s.index, t_orbit.mats, t_orbit.exact)

    return [
        ("orbit", lambda: canon.orbit(x, "C8"), bare_orbit),
        ("select", lambda: canon.select(v, r), bare_select),
        ("select_losses", lambda: canon.select_losses(v, r), bare_losses),
        ("canonicalize (index)", lambda: canon.canonicalize(x, idx, "C8"), bare_transform),
        ("canonicalize (Selection)", lambda: canon.canonicalize(x, sel, "C8"), bare_transform),
        ("select_canonicalize", lambda: canon.select_canonicalize(x, v, r, "C8"), bare_fused),
        ("invert", lambda: canon.invert(x, idx, "C8"), bare_invert),
        ("transform (int element)", lambda: canon.transform(x, 3, "C8"), bare_transform),
        ("losses.contrastive_loss", lambda: canon.losses.contrastive_loss(v), bare_contrastive),
        (
            "losses.prior_loss",
            lambda: canon.losses.prior_loss(sel.scores),
            lambda: ref.prior_loss_ref(sel.scores, zero_target, 1.0),
        ),
        ("OrbitCanonicalizer eval forward", lambda: model(x), bare_model),
    ]


def _through_triton(fn):
    """``fn`` with every kernel launched by Triton's ``kernel[grid](...)`` (the flag costs ~0.1 µs)."""
    from canon.kernels import launch

    def call():
        prev, launch._stock = launch._stock, True
        try:
            return fn()
        finally:
            launch._stock = prev

    return call


def measure(device: str, calls: int, repeats: int = 7) -> list[dict]:
    timer = _timer(device)
    per_call = lambda fns, calls: timer(fns, calls, repeats)  # noqa: E731
    a = torch.rand(2, 1, 8, 8, device=device)
    b = torch.rand(2, 1, 8, 8, device=device)
    (floor,) = per_call([lambda: torch.add(a, b)], calls)
    rows = []
    with torch.no_grad():
        for name, public, bare in cases(device):
            fns = [public] + ([bare] if bare is not None else [])
            if device == "cuda":
                fns += [_through_triton(fn) for fn in fns]
            times = per_call(fns, calls)
            p, q = times[0], times[1] if bare is not None else None
            over = None if q is None else p - q
            row = dict(
                op=name,
                device=device,
                public_us=round(p, 2),
                bare_us=None if q is None else round(q, 2),
                overhead_us=None if over is None else round(over, 2),
                torch_add_us=round(floor, 2),
            )
            if device == "cuda":
                stock = times[len(times) // 2 :]
                row["public_triton_launcher_us"] = round(stock[0], 2)
                row["bare_triton_launcher_us"] = None if bare is None else round(stock[1], 2)
            rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    stock = "public_triton_launcher_us" in rows[0]
    head = f"{'op':34s} {'public µs':>10s} {'bare µs':>9s} {'overhead µs':>12s}  within {TARGET_US:.0f} µs"
    if stock:
        head += f"  {'public µs, Triton launcher':>26s} {'bare µs, Triton launcher':>24s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ok = "-" if r["overhead_us"] is None else ("yes" if r["overhead_us"] <= TARGET_US else "NO")
        bare = "-" if r["bare_us"] is None else f"{r['bare_us']:9.1f}"
        over = "-" if r["overhead_us"] is None else f"{r['overhead_us']:12.1f}"
        line = f"{r['op']:34s} {r['public_us']:10.1f} {bare:>9s} {over:>12s}  {ok:>9s}"
        if stock:
            sb = "-" if r["bare_triton_launcher_us"] is None else f"{r['bare_triton_launcher_us']:.1f}"
            line += f"  {r['public_triton_launcher_us']:26.1f} {sb:>24s}"
        lines.append(line)
    lines.append(f"{'torch.add (floor)':34s} {rows[0]['torch_add_us']:10.1f}")
    return "\n".join(lines)


def profile_ops(device: str, names: list[str], calls: int, top: int = 22) -> str:
    """cProfile of ``calls`` public calls of each named op (and of its bare call): where the host time goes."""
    import cProfile
    import io
    import pstats

    table = {name: (public, bare) for name, public, bare in cases(device)}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"bench overhead --profile: unknown ops {unknown}; choose from {list(table)}")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = io.StringIO()
    with torch.no_grad():
        for name in names:
            for kind, fn in zip(("public", "bare"), table[name]):
                if fn is None:
                    continue
                for _ in range(20):
                    fn()
                sync()
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(calls):
                    fn()
                sync()
                prof.disable()
                out.write(f"\n## {name}: {kind} call, {calls} calls, {device}\n")
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench overhead", description="host time per call of every public op on tiny inputs"
    )
    ap.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available")
    ap.add_argument("--calls", type=int, default=2000, help="calls per timed batch (default 2000)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1: tiny ops gain nothing from more)"
    )
    ap.add_argument("--repeats", type=int, default=7, help="timed batches per call, median taken (default 7)")
    ap.add_argument("--output-dir", default=None, help="also write overhead.json there")
    ap.add_argument("--profile", default=None, help="comma-separated ops to cProfile after the table (their names)")
    args = ap.parse_args(argv)
    if args.calls < 1:
        ap.error(f"--calls must be >= 1, got {args.calls}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    check_threads(ap, args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("bench overhead: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    profile = [n.strip() for n in args.profile.split(",")] if args.profile else []
    if profile:  # names checked before the table is measured
        known = [name for name, _, _ in cases("cpu")]
        unknown = [n for n in profile if n not in known]
        if unknown:
            ap.error(f"--profile: unknown ops {unknown}; choose from {known}")
    prepare_output_dir(ap, args.output_dir)
    torch.set_num_threads(args.threads)
    rows = measure(device, args.calls, args.repeats)
    print(
        f"# host time per call on tiny inputs (2×1×8×8 images, C8, D=8), {device}, "
        f"{args.calls} calls × {args.repeats} batches, "
        f"public and bare batches interleaved, median"
    )
    print(format_rows(rows))
    if args.output_dir:
        path = os.path.join(args.output_dir, "overhead.json")
        with open(path, "w") as f:
            json.dump(
                dict(
                    rows=rows,
                    torch=torch.__version__,
                    canon=canon.__version__,
                    command="python -m bench overhead " + " ".join(argv),
                ),
                f,
                indent=1,
            )
        print(f"# → {path}")
    if profile:
        text = profile_ops(device, profile, min(args.calls, 500))
        print(text)
        if args.output_dir:
            with open(os.path.join(args.output_dir, "profile.txt"), "w") as f:
                f.write(text)
    return 0
