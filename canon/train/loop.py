"""Models, one training epoch, checkpoints. The methods share every batch:

* ``canonicalized``: ``f(canon(T_a x))`` with ``a`` a random group element (probability
  ``augment_prob``, else the identity); ``L = CE + λ_p L_p(target=a⁻¹) + λ_c L_c (+ λ_a L_a)``;
  the model is a :class:`canon.Canonicalized` (``predictor``, ``canonicalizer``);
* ``equivariant``: the same with an equivariant canonicalizer
  (:class:`canon.equivariant.EquivariantCanonicalizer`, e2cnn) on the same inputs,
  ``L = CE + λ_p L_p(target=a⁻¹)`` (Kaba et al. 2023 train no contrastive term);
* ``plain``: ``f(x)`` on upright inputs, cross-entropy only;
* ``augmented``: ``f(T_a' x)`` with ``a'`` a random group element, cross-entropy only.

Data order and augmentation come from generators seeded by (seed, epoch, rank), so an
epoch's batches do not depend on what ran before; model, optimizer and the global RNG
states travel in the checkpoint. Hence a resumed run repeats the uninterrupted one bit
for bit (on the same device and thread count).
"""

from __future__ import annotations

import math
import random
import warnings
from collections import defaultdict
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from canon.functional import transform
from canon.groups import as_group
from canon.losses import prior_target
from canon.modules import OrbitCanonicalizer
from canon.predictors import build_encoder, build_predictor
from canon.train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, save_checkpoint
from canon.train.checkpoint import read_checkpoint as _read_checked
from canon.train.config import AMP, CANONICALIZING, RunError
from canon.wrappers import Canonicalized

__all__ = [
    "CanonicalizedClassifier",
    "build_models",
    "TrainedModels",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "CheckpointError",
    "NonFiniteError",
    "Trainer",
]


class TrainedCanonicalized(Canonicalized):
    """:class:`canon.Canonicalized` that keeps the unweighted loss terms of its last :meth:`loss` for logging.

    The total comes from ``Canonicalized.loss`` (one rule for the weighted sum); the terms are
    recorded rather than computed again, because the artifact loss draws random rotations.
    """

    last_losses: dict[str, torch.Tensor] = {}

    def losses(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        terms = super().losses(*args, **kwargs)
        self.last_losses = {k: v.detach() for k, v in terms.items()}
        return terms


def CanonicalizedClassifier(canonicalizer: OrbitCanonicalizer, predictor: nn.Module) -> Canonicalized:  # noqa: N802 - the former class
    """``predictor(canonicalizer(x))`` as a :class:`canon.Canonicalized`.

    Kept for code written against the former class of this name.
    """
    return Canonicalized(predictor, canonicalizer)


def view_size(cfg: dict, image_size: tuple[int, int]) -> int:
    return cfg["view_size"] or min(min(image_size), 16)


def equivariant_view_size(cfg: dict, image_size: tuple[int, int]) -> int:
    """The view size of the equivariant canonicalizer: :func:`view_size` made odd (next size up).

    With odd sizes the stride-2 layers keep the pixel grid symmetric about the centre, so the
    network is C4/D4-equivariant up to float rounding (even sizes shift the grid by a pixel).
    """
    return view_size(cfg, image_size) | 1


def build_canonicalizer(cfg: dict, method: str, in_channels: int, image_size: tuple[int, int]) -> OrbitCanonicalizer:
    """The canonicalizer of ``method`` (``"canonicalized"`` or ``"equivariant"``).

    For images of shape (in_channels, *image_size).
    """
    if method == "equivariant":
        from canon.equivariant import EquivariantCanonicalizer, EquivariantEncoder

        enc = EquivariantEncoder(
            in_channels,
            cfg["group"],
            hidden=cfg["eq_hidden"],
            out_fields=cfg["eq_fields"],
            kernel_size=cfg["encoder_kernel"],
        )
        return EquivariantCanonicalizer(
            enc,
            size=equivariant_view_size(cfg, image_size),
            crop_ratio=cfg["crop_ratio"],
            beta=cfg["beta"],
            padding=cfg["padding"],
            prior_beta=cfg["prior_beta"],
        )
    size = view_size(cfg, image_size)
    enc = build_encoder(
        cfg["encoder"], in_channels, cfg["encoder_dim"], cfg["encoder_width"], cfg["encoder_kernel"], input_size=size
    )
    return OrbitCanonicalizer(
        enc,
        cfg["group"],
        size=size,
        crop_ratio=cfg["crop_ratio"],
        beta=cfg["beta"],
        dim=cfg["encoder_dim"],
        learn_reference=cfg["learn_reference"],
        padding=cfg["padding"],
        prior_beta=cfg["prior_beta"],
        seed=cfg["seed"],
    )


def build_models(cfg: dict, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> dict[str, nn.Module]:
    """The models of ``cfg["methods"]``, initialised from ``cfg["seed"]`` (identical on every rank)."""
    torch.manual_seed(cfg["seed"])
    models: dict[str, nn.Module] = {}
    for m in cfg["methods"]:
        pred = build_predictor(cfg["predictor"], in_channels, num_classes, image_size, cfg["predictor_width"])
        if m in CANONICALIZING:
            can = build_canonicalizer(cfg, m, in_channels, image_size)
            ours = m == "canonicalized"
            models[m] = TrainedCanonicalized(
                pred,
                can,
                prior_weight=cfg["lambda_prior"],
                contrastive_weight=cfg["lambda_contrastive"] if ours else 0.0,
                artifact_weight=cfg["lambda_artifact"] if ours else 0.0,
            )
        else:
            models[m] = pred
    return models


def build_optimizer(cfg: dict, name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name in CANONICALIZING:
        groups = [
            {"params": list(model.predictor.parameters()), "lr": cfg["lr"]},
            {"params": list(model.canonicalizer.parameters()), "lr": cfg["canon_lr"]},
        ]
    else:
        groups = [{"params": list(model.parameters()), "lr": cfg["lr"]}]
    return torch.optim.Adam(groups, weight_decay=cfg["weight_decay"])


def cosine(step: int, total: int, floor: float = 0.02) -> float:
    """Learning-rate factor: cosine decay from 1 to ``floor`` over ``total`` steps (the ``lr_lambda`` of the
    run's ``torch.optim.lr_scheduler.LambdaLR``; torch's ``CosineAnnealingLR`` has no floor factor and updates
    recursively, which a resumed run would not reproduce bit for bit)."""
    t = min(step / max(total, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# -- checkpoints ------------------------------------------------------------------
def rng_states() -> dict:
    """The global RNG states as tensors and plain values (a checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_states(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


_CHECKPOINT_KEYS = (
    "config",
    "data",
    "epoch",
    "step",
    "models",
    "optimizers",
    "scalers",
    "rng",
    "history",
    "train_time",
)


def read_checkpoint(path: str) -> dict:
    """A checked training checkpoint (see :mod:`canon.train.checkpoint` for what is refused).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a sound canon.train checkpoint.
    """
    ck = _read_checked(path)
    missing = [k for k in _CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: not a canon.train checkpoint (missing {', '.join(missing)})")
    problem = _schema_problem(ck)
    if problem:
        raise CheckpointError(f"{path}: not a sound canon.train checkpoint: {problem}; refused")
    return ck


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _schema_problem(ck: dict) -> str | None:
    """What is wrong with the payload's entries (types, ranges, agreement), or None.

    The checksum proves the bytes are those written, not that a canon.train run wrote them: a payload
    crafted with a valid checksum must not reach the trainer with an epoch of -5 or a config that is a list.
    """
    for key, kind in (("config", dict), ("data", dict), ("models", dict), ("optimizers", dict), ("scalers", dict),
                      ("rng", dict), ("history", list)):  # fmt: skip
        if not isinstance(ck[key], kind):
            return f"'{key}' must be a {kind.__name__}, got {type(ck[key]).__name__}"
    cfg = ck["config"]
    epochs = cfg.get("epochs")
    if not _is_int(epochs) or epochs < 1:
        return f"config['epochs'] must be an int >= 1, got {epochs!r}"
    epoch, step = ck["epoch"], ck["step"]
    if not _is_int(epoch) or not 0 <= epoch <= epochs:
        return f"'epoch' must be an int in [0, {epochs}] (the run's --epochs), got {epoch!r}"
    if not _is_int(step) or step < epoch or (epoch == 0 and step != 0):
        return f"'step' must be an int >= epoch ({epoch}) (0 before the first epoch), got {step!r}"
    if len(ck["history"]) != epoch or not all(isinstance(r, dict) for r in ck["history"]):
        return f"'history' must hold one row (a dict) per finished epoch ({epoch}), got {len(ck['history'])} entries"
    t = ck["train_time"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t >= 0):
        return f"'train_time' must be a finite number >= 0, got {t!r}"
    for key in ("models", "optimizers", "scalers"):
        bad = [k for k, v in ck[key].items() if not (isinstance(k, str) and isinstance(v, dict))]
        if bad:
            return f"'{key}' must map method names to state dicts, got {bad[0]!r}"
    bad = [k for m in ck["models"].values() for k, v in m.items() if not isinstance(v, torch.Tensor)]
    if bad:
        return f"model state entries must be tensors, got {bad[0]!r}"
    rng = ck["rng"]
    if not isinstance(rng.get("torch"), torch.Tensor) or not isinstance(rng.get("numpy"), dict):
        return "'rng' must hold the torch generator state (a tensor) and numpy's state (a dict)"
    return None


class TrainedModels(NamedTuple):
    """What :func:`load_checkpoint` returns; absent methods are None. All modules in eval mode."""

    canonicalizer: OrbitCanonicalizer | None
    predictor: nn.Module | None  # the canonicalized method's predictor: predictor(canonicalizer(x))
    plain: nn.Module | None
    augmented: nn.Module | None
    config: dict
    epoch: int
    equivariant: Canonicalized | None = None  # the equivariant baseline, when trained: equivariant(x)


def load_checkpoint(path: str, map_location="cpu") -> TrainedModels:
    """Rebuild the trained models from a checkpoint written by ``python -m canon.train``.

    Example (after a run)::

        m = load_checkpoint("runs/default/checkpoint.pt")
        logits = m.predictor(m.canonicalizer(images))  # invariant to the group
    """
    ck = read_checkpoint(path)
    d = ck["data"]
    try:
        models = build_models(ck["config"], d["in_channels"], d["num_classes"], tuple(d["image_size"]))
        for name, model in models.items():
            model.load_state_dict(ck["models"][name])
            model.to(map_location).eval()
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: the saved weights do not fit the models of its configuration ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]})"
        ) from None
    ours = models.get("canonicalized")
    return TrainedModels(
        ours.canonicalizer if ours is not None else None,
        ours.predictor if ours is not None else None,
        models.get("plain"),
        models.get("augmented"),
        ck["config"],
        ck["epoch"],
        models.get("equivariant"),
    )


# -- training ---------------------------------------------------------------------
class NonFiniteError(RunError):
    """The loss or the weights became NaN/Inf: training stops (the last checkpoint stays as it was)."""


_HINT = "lower --lr/--canon-lr, --weight-decay or the --lambda-* weights, or check the data"
CHECK_EVERY = 64  # GPU: steps × methods between two host syncs of the loss check


def _gpu_layout(models: dict[str, nn.Module], cfg: dict) -> None:
    """--channels-last (every model's 4-D weights NHWC, the canonicalizer's views written NHWC) and
    --compile-encoder (the OrbitCanonicalizer's encoder under torch.compile, in place: same state_dict keys)."""
    ours = [getattr(m, "canonicalizer", None) for m in models.values()]
    ours = [c for c in ours if isinstance(c, OrbitCanonicalizer)]
    if cfg.get("channels_last"):
        for m in models.values():
            m.to(memory_format=torch.channels_last)
        for c in ours:
            c.channels_last = True
    if cfg.get("compile_encoder"):
        for c in ours:
            c.encoder.compile()


class Trainer:
    """One object holding the models, optimizers and counters of a run."""

    def __init__(self, cfg: dict, train, device: torch.device, rank: int = 0, world: int = 0, ddp: bool = False):
        self.cfg, self.train, self.device, self.rank, self.world = cfg, train, device, rank, max(world, 1)
        self.group = as_group(cfg["group"])
        C, H, W = train.x.shape[1:]
        self.data_info = {"in_channels": C, "num_classes": train.num_classes, "image_size": [H, W]}
        self.raw = build_models(cfg, C, train.num_classes, (H, W))
        for m in self.raw.values():
            m.to(device)
        _gpu_layout(self.raw, cfg)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.models = {k: DDP(m, device_ids=ids) for k, m in self.raw.items()}
        else:
            self.models = dict(self.raw)
        self.optimizers = {k: build_optimizer(cfg, k, m) for k, m in self.raw.items()}
        amp = AMP[cfg["amp"]]
        self.amp_dtype = getattr(torch, amp) if amp else None
        self.scalers = {k: torch.amp.GradScaler(device.type, enabled=cfg["amp"] == "fp16") for k in self.raw}
        from torch.utils.data import DistributedSampler

        # one code path for 1 and K processes: the sampler shards a seeded permutation by rank
        self.sampler = DistributedSampler(
            range(len(train)), num_replicas=self.world, rank=rank, shuffle=True, seed=cfg["seed"]
        )
        n_local = len(self.sampler)
        steps = math.ceil(n_local / cfg["batch_size"])
        self.steps_per_epoch = min(steps, cfg["max_steps"]) if cfg["max_steps"] else steps
        self.total_steps = self.steps_per_epoch * cfg["epochs"]
        # lr = initial lr × cosine(step / total steps), stepped after every update (total read at each step:
        # a resume with more --epochs stretches the schedule)
        self.schedulers = {
            k: torch.optim.lr_scheduler.LambdaLR(o, lambda step: cosine(step, self.total_steps))
            for k, o in self.optimizers.items()
        }
        self.epoch, self.step, self.history, self.train_time = 0, 0, [], 0.0
        self._pending: list = []  # losses not yet checked for NaN/Inf (see _check_loss)
        self.graphed = None  # canon.GraphedCanonicalizer of the canonicalized method (--cuda-graph), at first use
        if cfg["cuda_graph"]:
            if device.type != "cuda":
                raise ValueError(f"--cuda-graph needs a CUDA device; this run's device is {device}")
            if ddp:
                raise ValueError(
                    "--cuda-graph runs in one process only (DDP's gradient hooks would not be in the graph); "
                    "drop --cuda-graph or run without torchrun"
                )

    def probe(self) -> None:
        """Run every model once on two training images (eval mode, no gradient, RNG and buffers as
        before), so that images a model cannot take (smaller than an encoder accepts, say) are refused
        before the run writes anything.

        Raises:
            ValueError: naming the method, the image shape and what the model said.
        """
        x = self.train.x[:2].to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        for name, model in self.raw.items():
            was_training = model.training
            try:
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    model.eval()
                    model(x)
            except (ValueError, RuntimeError, TypeError, IndexError) as e:
                raise ValueError(
                    f"the {name!r} model cannot run on this data's images {tuple(x.shape[1:])} (C, H, W): "
                    f"{str(e).splitlines()[0][:300]}; use larger images (--image-size) or another --encoder/--predictor"
                ) from None
            finally:
                model.train(was_training)

    def _canonicalize_graphed(self, model: Canonicalized, x: torch.Tensor) -> torch.Tensor | None:
        """Canonical images of ``x`` from the captured graph (capturing it at the first full batch), or None
        when ``x`` is not a full batch (a smaller last batch runs eagerly)."""
        if x.shape[0] != self.cfg["batch_size"]:
            return None
        if self.graphed is None:
            from canon.graphs import GraphedCanonicalizer

            can = model.canonicalizer
            # the warm-up iterations of the capture run the canonicalizer's forward: put back its buffers
            # (batch-norm statistics) and the CUDA RNG, so a --cuda-graph run follows the eager one
            saved = {k: v.detach().clone() for k, v in can.state_dict().items()}
            rng = torch.cuda.get_rng_state(self.device)
            self.graphed = GraphedCanonicalizer(can, x.detach().clone())
            with torch.no_grad():
                can.load_state_dict(saved)  # copies in place: the graph keeps reading the same tensors
            torch.cuda.set_rng_state(rng, self.device)
        return self.graphed(x)

    # state of the whole run, for checkpoints
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg,
            "data": self.data_info,
            "epoch": self.epoch,
            "step": self.step,
            "models": {k: m.state_dict() for k, m in self.raw.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "rng": rng_states(),
            "history": self.history,
            "train_time": self.train_time,
        }

    def load_state_dict(self, ck: dict) -> None:
        """Restore a checkpoint's payload (checked by :func:`read_checkpoint`).

        Raises CheckpointError when it does not fit.
        """
        try:
            for k, m in self.raw.items():
                m.load_state_dict(ck["models"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(ck["optimizers"][k])
                self._resume_schedule(self.schedulers[k], o, ck["step"])
            for k, s in self.scalers.items():
                s.load_state_dict(ck["scalers"][k])
            set_rng_states(ck["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"the checkpoint does not fit this run's models ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None
        self.epoch, self.step, self.history, self.train_time = ck["epoch"], ck["step"], ck["history"], ck["train_time"]

    def encoder_time(self, reps: int = 5) -> float | None:
        """Seconds of one forward + backward of the canonicalized method's encoder on one batch of views
        (median of ``reps`` after a warm-up), on a copy (the run's weights, statistics and gradients stay
        as they are), with the run's autocast and memory format; None without that method or encoder."""
        import copy
        import time

        model = self.raw.get("canonicalized")
        can = getattr(model, "canonicalizer", None)
        if not isinstance(can, OrbitCanonicalizer):
            return None
        enc = copy.deepcopy(can.encoder).train()
        params = [p for p in enc.parameters() if p.requires_grad]
        C = self.train.x.shape[1]
        h, w = can._plans(self.train.x[:1].to(self.device))[0][1]
        n = self.cfg["batch_size"] * self.group.order
        fmt = torch.channels_last if getattr(can, "channels_last", False) else torch.contiguous_format
        views = torch.randn(n, C, h, w, device=self.device).contiguous(memory_format=fmt)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def once():
            with self._autocast():
                out = enc(views).float()
            torch.autograd.grad(out.square().sum(), params)

        once()
        times = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            once()
            sync()
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]

    @staticmethod
    def _resume_schedule(sched, opt, step: int) -> None:
        """Put the schedule at ``step``: its initial lrs from the restored groups (``base_lr`` in checkpoints
        written before the scheduler), and each group's lr = initial × cosine(step), as the uninterrupted run."""
        for g in opt.param_groups:
            g.setdefault("initial_lr", g.pop("base_lr", g["lr"]))
        sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
        sched.last_epoch = step
        for g, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
            g["lr"] = base * factor(step)  # LambdaLR's own formula

    def nonfinite_weights(self) -> list[str]:
        """Names (``plain.0.weight``) of parameters and buffers holding NaN/Inf."""
        return [
            f"{name}.{k}"
            for name, m in self.raw.items()
            for k, v in m.state_dict().items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())
        ]

    def check_finite(self, sums: dict | None = None) -> None:
        """Raise :class:`NonFiniteError` when a weight or a summed statistic of the epoch is NaN/Inf."""
        bad = self.nonfinite_weights()
        if bad:
            raise NonFiniteError(
                f"training stopped after epoch {self.epoch + 1}: NaN/Inf in the weights "
                f"({', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}); {_HINT}"
            )
        bad = [k for k, v in (sums or {}).items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteError(
                f"training stopped after epoch {self.epoch + 1}: NaN/Inf in {', '.join(sorted(bad))}; {_HINT}"
            )

    def _check_loss(self, name: str, loss: torch.Tensor, parts: dict) -> None:
        """Queue this step's loss for the finiteness check; on the CPU it runs at once. On a GPU the queue is
        checked every CHECK_EVERY steps and at the end of the epoch: one host sync per CHECK_EVERY steps
        instead of one per step and method, and the error still names the first bad step (the steps
        after it ran on NaN weights, but nothing of the epoch is written before the check). Under DDP the
        ranks would disagree on stopping mid-epoch, so there the reduced epoch sums are checked."""
        if self.world > 1:
            return
        detached = {k: v.detach() for k, v in parts.items()}
        self._pending.append((self.step, name, loss.detach(), detached))
        if self.device.type == "cpu" or len(self._pending) >= CHECK_EVERY:
            self._check_pending()

    def _check_pending(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        finite = torch.isfinite(torch.stack([loss.float() for _, _, loss, _ in pending])).tolist()
        if all(finite):
            return
        step, name, loss, parts = pending[finite.index(False)]
        detail = ", ".join(f"{k} {float(v):.4g}" for k, v in parts.items())
        raise NonFiniteError(
            f"training stopped at epoch {self.epoch + 1}, step {step + 1}: the loss of {name!r} is "
            f"{float(loss)} ({detail}); {_HINT}"
        )

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _update(self, name: str, loss: torch.Tensor) -> None:
        opt, scaler = self.optimizers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def train_epoch(self, progress=None) -> dict:
        """One epoch over this rank's shard; returns summed statistics (to reduce across ranks)."""
        cfg, G, dev = self.cfg, self.group, self.device
        N, bs = G.order, cfg["batch_size"]
        for m in self.models.values():
            m.train()
        self.sampler.set_epoch(self.epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.int64)
        gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + self.epoch * 10_007 + self.rank)
        # statistics summed on the device (float64, the same operations as Python floats): no host sync per step
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64, device=dev))
        samples = 0
        for i in range(self.steps_per_epoch):
            idx = order[i * bs : (i + 1) * bs]
            x, y = self.train.x[idx].to(dev), self.train.y[idx].to(dev)
            b = idx.numel()
            # drawn whatever the methods, so every method sees the same stream
            a_aug = torch.randint(0, N, (b,), generator=gen)
            a_can = torch.randint(0, N, (b,), generator=gen)
            a_can = torch.where(torch.rand(b, generator=gen) < cfg["augment_prob"], a_can, torch.zeros_like(a_can))
            samples += b
            for name, model in self.models.items():
                if name in CANONICALIZING:
                    xa = transform(x, a_can.to(dev), G, cfg["padding"])
                    xc = (
                        self._canonicalize_graphed(model, xa) if cfg["cuda_graph"] and name == "canonicalized" else None
                    )
                    with self._autocast():
                        logits = model(xa) if xc is None else model.predictor(xc)
                    task = F.cross_entropy(logits.float(), y)
                    wrapped = unwrap(model)
                    # task + λ_p·L_prior(target a⁻¹) + λ_c·L_contrastive (+ λ_a·L_artifact),
                    # terms with weight 0 left out
                    loss = wrapped.loss(task, applied=a_can.to(dev), generator=gen)
                    parts = {"task": task, **wrapped.last_losses}
                    self._check_loss(name, loss, parts)
                    for k, v in wrapped.last_losses.items():
                        sums[f"{name}/{k}"] += v.detach().double() * b
                    target = prior_target(G, a_can.to(dev), b, dev)
                    sums[f"{name}/orient_acc"] += (wrapped.canonicalizer.element == target).sum()
                else:
                    xin = transform(x, a_aug.to(dev), G, cfg["padding"]) if name == "augmented" else x
                    with self._autocast():
                        logits = model(xin)
                    task = loss = F.cross_entropy(logits.float(), y)
                    self._check_loss(name, loss, {"task": task})
                self._update(name, loss)
                sums[f"{name}/loss"] += task.detach().double() * b
                sums[f"{name}/acc"] += (logits.argmax(1) == y).sum()
            self.step += 1
            with warnings.catch_warnings():  # fp16: GradScaler skips the first updates (inf gradients) by design
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                for sched in self.schedulers.values():  # the next step's lr
                    sched.step()
            if progress is not None:
                progress.update(1)
                if self.device.type == "cpu" or (i + 1) % CHECK_EVERY == 0:  # reading the sums syncs a GPU
                    short = {"canonicalized": "ours", "plain": "plain", "augmented": "aug", "equivariant": "equi"}
                    progress.set_postfix(
                        {short[m]: f"{float(sums[m + '/loss']) / samples:.3f}/{float(sums[m + '/acc']) / samples:.3f}"
                         for m in self.models},
                        refresh=False,
                    )  # fmt: skip
        self._check_pending()
        keys = list(sums)
        values = torch.stack([sums[k] for k in keys]).tolist() if keys else []
        return {"samples": samples, **dict(zip(keys, values))}
