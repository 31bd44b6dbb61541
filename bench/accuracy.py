"""``python -m bench accuracy``: the default training job with canon's canonicalizer and with equiadapt's,
the same number of epochs, evaluated alike: the accuracy each reaches and the images/s each trains at.

A throughput ratio means something only at equal accuracy, so both sides run the whole job:

* ``ours``: ``python -m canon.train --methods canonicalized`` itself (:func:`canon.train.run`), with the
  job's options (``--view-size`` and the rest as given);
* ``equiadapt-loop``: :class:`bench.baselines.EquiadaptLoop`, equiadapt 0.1.2's optimized discrete-group
  canonicalizer operation for operation (it runs wherever canon does);
* ``equiadapt``: equiadapt's own class, where it imports (it needs torchvision, kornia, e2cnn, omegaconf).

What the three share: the data and its split, the predictor and the canonicalizer's encoder
(the same constructors, seeded alike), the batch order (the job's seeded sampler), Adam with the
job's learning rates and cosine schedule, the epochs, and the evaluation on every group-transformed
copy of the test set (:func:`canon.train.evaluate.evaluate`, ``group_avg_acc`` is the
"C8-average accuracy" of the README). What differs is each library's recipe:

* ours: inputs turned by a random element ``a`` (``--augment-prob``), prior toward ``a⁻¹``
  (cross-entropy of the scores at ``--prior-beta``), contrastive loss on cosines, the job's weights;
* equiadapt: upright inputs, its prior toward the identity (``get_prior_regularization_loss``,
  weight 100) and its raw-dot-product loss (``get_optimization_specific_loss``, weight 1e-4), the
  weights of its example configuration; grayscale images are scored at full size (equiadapt crops
  and resizes colour inputs only), colour ones at the job's view size and crop.

Training images/s is the median epoch's images over the seconds of its steps (no evaluation), as
``canon.train`` reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench._cli import check_threads, prepare_output_dir, resolve_device

PROVIDERS = ("ours", "equiadapt-loop", "equiadapt")

__all__ = ["PROVIDERS", "job_config", "train_ours", "train_equiadapt", "main"]


def job_config(argv: list[str] | None = None, **over) -> dict:
    """The checked configuration of ``python -m canon.train`` with ``argv`` (its options), then ``over``."""
    from canon.train.config import build_parser, validate

    cfg = vars(build_parser().parse_args(list(argv or [])))
    cfg.update(over)
    return validate(cfg)


def _summary(metrics: dict, images_per_s: list[float], seconds: float) -> dict:
    return {
        "group_avg_acc": metrics["group_avg_acc"],
        "upright_acc": metrics["upright_acc"],
        "invariance_rate": metrics["invariance_rate"],
        "per_element_acc": metrics["per_element_acc"],
        "train_images_per_s": float(statistics.median(images_per_s)),
        "train_seconds": seconds,
    }


def train_ours(cfg: dict, data) -> dict:
    """``canon.train.run`` of the canonicalized method alone (a throw-away run folder; its printed table
    is left out)."""
    from canon.train import run

    with tempfile.TemporaryDirectory(prefix="canon-accuracy-") as out:
        over = dict(methods=["canonicalized"], output_dir=out, overwrite=True, quiet=True, no_plots=True, angle_step=0)
        with contextlib.redirect_stdout(io.StringIO()):
            result = run(dict(cfg, **over), data)
        with open(os.path.join(out, "epochs.csv"), newline="") as f:
            history = list(csv.DictReader(f))
    rates = [float(r["images_per_s"]) for r in history]
    seconds = sum(float(r["train_seconds"]) for r in history)
    return _summary(result["methods"]["canonicalized"], rates, seconds)


class Predict(nn.Module):
    """``head(layer(x))``: equiadapt's canonicalizer in front of the predictor. The names differ from
    ``canonicalizer``/``predictor`` on purpose: :func:`canon.train.evaluate.evaluate` asks those for canon's
    chosen elements, which equiadapt's layers do not keep in that form."""

    def __init__(self, layer: nn.Module, head: nn.Module):
        super().__init__()
        self.layer, self.head = layer, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x))


def equiadapt_layer(provider: str, cfg: dict, encoder: nn.Module, in_shape: tuple[int, int, int], size: int):
    """equiadapt's canonicalizer (``provider`` ``equiadapt``) or its loop (``equiadapt-loop``) around ``encoder``."""
    from bench.baselines import EquiadaptLoop, equiadapt_canonicalizer
    from canon.groups import as_group

    if provider not in ("equiadapt", "equiadapt-loop"):
        raise ValueError(f"equiadapt_layer: provider must be 'equiadapt' or 'equiadapt-loop', got {provider!r}")
    g = as_group(cfg["group"])
    kind = "roto-reflection" if g.reflections else "rotation"
    n = g.order // 2 if g.reflections else g.order
    make = EquiadaptLoop if provider == "equiadapt-loop" else equiadapt_canonicalizer
    return make(encoder, cfg["encoder_dim"], in_shape, n, kind, cfg["crop_ratio"], size, cfg["beta"])


def train_equiadapt(provider: str, cfg: dict, data, device: str) -> dict:
    """equiadapt's recipe (see the module docstring) in the job's loop; the evaluation of ``canon.train``."""
    from torch.utils.data import DistributedSampler

    from bench.baselines import EQUIADAPT_CONTRAST_WEIGHT, EQUIADAPT_PRIOR_WEIGHT
    from canon.groups import as_group
    from canon.predictors import build_encoder, build_predictor
    from canon.train.evaluate import evaluate
    from canon.train.loop import cosine, view_size

    train, test = data
    C, H, W = train.x.shape[1:]
    size = H if C == 1 else view_size(cfg, (H, W))  # equiadapt scores grayscale images at full size
    torch.manual_seed(cfg["seed"])  # the predictor first, then the encoder: the order of canon.train
    head = build_predictor(cfg["predictor"], C, train.num_classes, (H, W), cfg["predictor_width"])
    enc = build_encoder(
        cfg["encoder"], C, cfg["encoder_dim"], cfg["encoder_width"], cfg["encoder_kernel"], input_size=size
    )
    layer = equiadapt_layer(provider, cfg, enc, (C, H, W), size)
    model = Predict(layer, head).to(device)
    if provider == "equiadapt":
        layer.device = torch.device(device)
    groups = [
        {"params": list(head.parameters()), "lr": cfg["lr"]},
        {"params": [p for p in layer.parameters() if p.requires_grad], "lr": cfg["canon_lr"]},
    ]
    opt = torch.optim.Adam(groups, weight_decay=cfg["weight_decay"])
    sampler = DistributedSampler(range(len(train)), num_replicas=1, rank=0, shuffle=True, seed=cfg["seed"])
    bs = cfg["batch_size"]
    steps = math.ceil(len(sampler) / bs)
    steps = min(steps, cfg["max_steps"]) if cfg["max_steps"] else steps
    total = steps * cfg["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine(step, total))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rates, seconds = [], 0.0
    for epoch in range(cfg["epochs"]):
        model.train()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.int64)
        sync()
        t0, samples = time.perf_counter(), 0
        for i in range(steps):
            idx = order[i * bs : (i + 1) * bs]
            x, y = train.x[idx].to(device), train.y[idx].to(device)
            task = F.cross_entropy(model(x), y)
            prior = layer.get_prior_regularization_loss()
            contrast = layer.get_optimization_specific_loss()
            loss = task + EQUIADAPT_PRIOR_WEIGHT * prior + EQUIADAPT_CONTRAST_WEIGHT * contrast
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            samples += idx.numel()
        sync()
        dt = time.perf_counter() - t0
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"{provider}: the loss is {float(loss.detach())} after epoch {epoch + 1}")
        rates.append(samples / max(dt, 1e-9))
        seconds += dt
    metrics = evaluate({provider: model}, test, as_group(cfg["group"]), device, cfg["eval_batch_size"], cfg["padding"])
    return _summary(metrics[provider], rates, seconds)


def markdown(rows: list[dict], group: str) -> str:
    lines = [
        f"| provider | seed | {group}-average acc | upright acc | invariant | training images/s | training s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['provider']} | {r['seed']} | {100 * r['group_avg_acc']:.2f}% | {100 * r['upright_acc']:.2f}% | "
            f"{100 * r['invariance_rate']:.1f}% | {r['train_images_per_s']:.0f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench accuracy",
        description="the default training job with canon's canonicalizer and with equiadapt's: accuracy and images/s",
        epilog="options after -- go to the job (python -m canon.train's options), e.g. -- --view-size 28",
    )
    ap.add_argument(
        "--providers", default="ours,equiadapt-loop", help=f"comma-separated subset of {','.join(PROVIDERS)}"
    )
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of every run (default 3)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, one run per provider and seed (default 0)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    ap.add_argument("--output-dir", default=None, help="also write accuracy.json and accuracy.md there")
    own, job = _split(argv)
    args = ap.parse_args(own)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    bad = [p for p in providers if p not in PROVIDERS]
    if bad or not providers:
        ap.error(f"--providers: unknown {bad} (choose from {', '.join(PROVIDERS)})" if bad else "--providers is empty")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds:
        ap.error("--seeds is empty")
    if args.epochs < 1:
        ap.error(f"--epochs must be >= 1, got {args.epochs}")
    check_threads(ap, args.threads)
    device = resolve_device(args.device, "python -m bench accuracy")
    if "equiadapt" in providers:
        from bench.baselines import equiadapt_status

        ok, why = equiadapt_status()
        if not ok:
            ap.error(f"--providers equiadapt: {why} (equiadapt-loop runs its operations without it)")
    from canon.train.config import ConfigError

    threads = args.threads or os.cpu_count() or 1
    try:
        cfg = job_config(job, epochs=args.epochs, device=device, threads=threads)
    except (ConfigError, SystemExit) as e:
        ap.error(f"the job's options {job}: {e}")
    prepare_output_dir(ap, args.output_dir)
    from canon.train.cli import load_data

    data = load_data(cfg)
    torch.set_num_threads(threads)
    rows = []
    for seed in seeds:
        for p in providers:
            c = dict(cfg, seed=seed)
            t0 = time.perf_counter()
            r = train_ours(c, data) if p == "ours" else train_equiadapt(p, c, data, device)
            rows.append({"provider": p, "seed": seed, **r})
            print(
                f"{p:15s} seed {seed}: {cfg['group']}-average {100 * r['group_avg_acc']:.2f}%, upright "
                f"{100 * r['upright_acc']:.2f}%, {r['train_images_per_s']:.0f} training images/s "
                f"({time.perf_counter() - t0:.0f} s with the evaluation)",
                flush=True,
            )
    table = markdown(rows, cfg["group"])
    print(table)
    if args.output_dir:
        job_line = " ".join(["--epochs", str(args.epochs), *job])
        info = dict(rows=rows, job=job_line, device=device, threads=threads, torch=torch.__version__, argv=argv)
        with open(os.path.join(args.output_dir, "accuracy.json"), "w") as f:
            json.dump(info, f, indent=1)
        with open(os.path.join(args.output_dir, "accuracy.md"), "w") as f:
            f.write(f"`python -m bench accuracy {' '.join(argv)}` ({device}, {threads} threads)\n\n{table}\n")
    return 0


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this command's options, the job's options after ``--``)."""
    if "--" in argv:
        k = argv.index("--")
        return argv[:k], argv[k + 1 :]
    return list(argv), []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
