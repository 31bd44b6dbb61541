"""``python -m bench profile``: a few canonicalizer training steps under torch.profiler.

Reports launches per step (CUDA kernels on a GPU; leaf aten ops on a CPU), time per
kernel/op, the share of the step spent outside the encoder, images/s, and writes a
Chrome trace (open it in chrome://tracing or https://ui.perfetto.dev).

The encoder share is measured, not guessed: the encoder's forward + backward on the
same number of views, timed alone with the same timer, against the full step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

from bench._cli import check_output_dir, check_threads, prepare_output_dir, resolve_device
from bench.cases import make_encoder, step_work
from bench.registry import DTYPES, PROVIDERS, SHAPES, Config, Unavailable
from bench.rows import environment
from bench.timers import count_leaf_ops, sync, time_calls


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench profile", description="profile canonicalizer training steps")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    provider = "default ours-reference (ours-triton on CUDA)"
    ap.add_argument("--provider", default="ours-reference", choices=PROVIDERS, help=provider)
    ap.add_argument("--case", default="step", choices=("step", "step-no-encoder"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--shape", default="3x32x32", choices=list(SHAPES))
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up steps)")
    ap.add_argument("--top", type=int, default=15, help="rows of the per-kernel table")
    ap.add_argument("--output-dir", default=os.path.join("bench", "results", "local", "profile"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    graph = (
        "CUDA, ours-triton, fp32: the canonicalizer replays from canon.GraphedCanonicalizer, and the encoder "
        "timed alone replays from a CUDA graph too"
    )
    ap.add_argument("--cuda-graph", action="store_true", help=graph)
    return ap


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("batch", "n", "steps", "top"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    check_threads(ap, args.threads)
    check_output_dir(ap, args.output_dir)


def _encoder_ms(cfg: Config, device: str, reps: int, cuda_graph: bool = False) -> list[float]:
    """The encoder alone, forward + backward, on as many views as the step scores."""
    enc = make_encoder(cfg).to(device)
    views = torch.rand(cfg.batch * cfg.n, cfg.in_shape[0], cfg.view, cfg.view, device=device)
    if cuda_graph:
        enc = torch.cuda.make_graphed_callables(enc, (views,))

    def enc_step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=cfg.dtype == "bf16"):
            out = enc(views)
        out.float().square().mean().backward()

    enc_step()
    return time_calls(enc_step, device, reps)


def _profile(fn, device: str, steps: int, out_dir: str, top: int) -> tuple[str, float, str, str]:
    """(Chrome trace path, launches per step, their kind, the per-kernel table) of ``steps`` calls."""
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts, record_shapes=False) as prof:
        for i in range(steps):
            with record_function(f"step{i}"):
                fn()
            sync(device)
    trace = os.path.join(out_dir, "trace.json")
    prof.export_chrome_trace(trace)
    events = prof.events()
    if device == "cuda":
        launches = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / steps
        kind, sort_key = "CUDA kernels", "self_cuda_time_total"
    else:
        launches = count_leaf_ops(events) / steps
        kind, sort_key = "leaf aten ops (CPU: no kernels)", "self_cpu_time_total"
    return trace, launches, kind, prof.key_averages().table(sort_by=sort_key, row_limit=top)


def _report(summary: dict, step_ms: list[float], table: str, out_dir: str) -> None:
    """Write profile.json and ops.txt, print the table and the summary."""
    with open(os.path.join(out_dir, "profile.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out_dir, "ops.txt"), "w") as f:
        f.write(table)
    s = summary
    print(table)
    graph = " (canonicalizer and encoder-alone CUDA-graphed)" if s["cuda_graph"] else ""
    print(f"# {s['case']} {s['config']} provider={s['provider']}{graph} device={s['device']} ({s['device_name']})")
    steps = ", ".join(f"{t:.1f}" for t in step_ms)
    print(f"# step median {s['step_ms_median']:.2f} ms (all: {steps}), images/s {s['images_per_s']}")
    enc, outside = s["encoder_fwd_bwd_ms_median"], 100 * s["share_outside_encoder"]
    print(f"# encoder fwd+bwd alone {enc:.2f} ms → share of the step outside the encoder {outside:.1f}%")
    print(f"# launches per step: {s['launches_per_step']:.0f} {s['launch_kind']}")
    print(f"# Chrome trace: {s['trace']}; summary: {os.path.join(out_dir, 'profile.json')}")


def main(argv: list[str]) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    _check_args(ap, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, "bench profile")
    provider = args.provider
    if device == "cuda" and provider == "ours-reference" and "--provider" not in argv:
        provider = "ours-triton"
    if args.cuda_graph and (device != "cuda" or provider != "ours-triton" or args.dtype != "fp32"):
        got = f"{device}, {provider}, {args.dtype}"
        ap.error(f"--cuda-graph needs --device cuda, provider ours-triton and fp32; got {got}")
    cfg = Config(args.case, args.batch, args.n, args.shape, args.dtype)
    prepare_output_dir(ap, args.output_dir)
    try:
        fn = step_work(cfg, provider, device, cuda_graph=args.cuda_graph).step
    except Unavailable as e:
        ap.error(f"--provider {provider} on {device}: {e}")
    for _ in range(2):
        fn()
    step_ms = time_calls(fn, device, max(3, args.steps))
    enc_ms = _encoder_ms(cfg, device, max(3, args.steps), args.cuda_graph)
    trace, launches, kind, table = _profile(fn, device, args.steps, args.output_dir, args.top)
    med, med_enc = statistics.median_high(step_ms), statistics.median_high(enc_ms)
    summary = dict(
        case=cfg.case,
        provider=provider,
        cuda_graph=args.cuda_graph,
        device=device,
        config=cfg.label,
        step_ms_median=round(med, 3),
        step_ms_all=[round(t, 3) for t in step_ms],
        encoder_fwd_bwd_ms_median=round(med_enc, 3),
        share_outside_encoder=round(max(0.0, 1.0 - med_enc / med), 4),
        launches_per_step=launches,
        launch_kind=kind,
        images_per_s=round(cfg.batch / (med * 1e-3), 1),
        trace=trace,
        **environment(device, "python -m bench profile " + " ".join(argv)),
    )
    _report(summary, step_ms, table, args.output_dir)
    return 0
