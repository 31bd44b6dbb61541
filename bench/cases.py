"""Benchmark cases × providers × modes × sizes, the timers, and one result row per measurement.

Cases live in a registry (:data:`REGISTRY`): one small builder per case, registered by name
with :func:`register`. A builder returns, for one provider, a :class:`Work`: the forward (the
outputs that a backward differentiates), the inputs that receive gradients and the upstream
gradient of each output. :func:`build` turns a Work into the closure of one mode:

* ``forward``: the forward alone (op cases under ``torch.no_grad()``, as inference runs them;
  steps record the graph, as a training step does);
* ``backward``: the backward alone: the graph is built once, outside the timed region, and each
  timed call is ``torch.autograd.grad(outputs, inputs, upstream, retain_graph=True)``;
* ``full``: forward (recording the graph) + backward per call; for steps the whole training
  step (forward, losses, backward, SGD update).

Cases (one name stem per op, as in ``canon``): ``orbit``, ``select`` (scores, choice and
both losses), ``canonicalize``, ``invert`` (both ``canon::transform``), ``step`` (canonicalizer
training step with :class:`canon.networks.ConvEncoder`) and ``step-no-encoder`` (the same step
with a cheap fixed-cost map instead of the encoder, so the canonicalization overhead shows).

Providers get the same inputs, parameters and upstream gradients:

* ``ours-triton``: canon with the Triton backend (CUDA only);
* ``ours-reference``: canon with the plain-PyTorch reference backend (any device);
* ``equiadapt``: equiadapt 0.1.2 itself, where it imports;
* ``equiadapt-loop``: :class:`bench.baselines.EquiadaptLoop`, its operations in torch;
* ``torch-batched``: what a PyTorch user writes instead (:mod:`bench.peers`): one batched
  ``F.grid_sample`` per op over all views, same outputs and gradients (orbit without antialiasing,
  canonicalize, invert; no peer for the other cases);
* ``torch-compile``: the same functions under ``torch.compile`` (inductor, default mode, whole graph,
  static shapes; ``BENCH_COMPILE_MODE`` / ``BENCH_COMPILE_BACKEND`` choose others), compiled and
  warmed outside the timed calls.

Parameters shared by every provider: colour inputs are scored on a centre crop of ratio
0.8 (``ceil(0.8·H)`` pixels, equiadapt's example config) resized to 96×96 with edge
padding; grayscale inputs (1×28×28) are scored at full size with zero padding, as
equiadapt does. Canonical images and inverses are at full input resolution.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import canon
from bench import peers
from bench.baselines import EquiadaptLoop, equiadapt_status, load_equiadapt
from canon.networks import ConvEncoder

PROVIDERS = ("ours-triton", "ours-reference", "equiadapt", "equiadapt-loop", "torch-batched", "torch-compile")
PEERS = ("torch-batched", "torch-compile")  # plain PyTorch: one batched grid_sample per op (bench.peers)
MODES = ("forward", "backward", "full")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SHAPES = {"1x28x28": ((1, 28, 28), None), "3x32x32": ((3, 32, 32), 96), "3x224x224": ((3, 224, 224), 96)}
CROP_RATIO = 0.8  # equiadapt's example config (input_crop_ratio)
DIM = 128  # vector size D (equiadapt's example out_vector_size)
# equiadapt's example prior_weight, and the group_contrast_weight its config comment suggests
PRIOR_WEIGHT, CONTRAST_WEIGHT = 100.0, 1e-4

COLUMNS = [
    "case",
    "provider",
    "mode",
    "status",
    "device",
    "dtype",
    "batch",
    "group",
    "in_shape",
    "out_shape",
    "median_ms",
    "iqr_ms",
    "q25_ms",
    "q75_ms",
    "reps",
    "timer",
    "cpu_ms",
    "load_avg",
    "cuda_graph",
    "bytes",
    "gbps",
    "copy_gbps",
    "pct_copy",
    "peak_mem_mb",
    "mem_method",
    "launches",
    "launch_kind",
    "images_per_s",
    "speedup_vs_equiadapt_loop",
    "speedup_vs_equiadapt",
    "speedup_vs_torch_batched",
    "speedup_vs_torch_compile",
    "note",
    "machine",
    "device_name",
    "threads",
    "torch",
    "triton",
    "canon",
    "git_commit",
    "date",
    "command",
]


class Unavailable(Exception):
    """This provider cannot run this case or mode here (the reason goes into the row's note)."""


@dataclass(frozen=True)
class Config:
    """One size point of one case in one mode (``mode=None``: the case's default mode)."""

    case: str
    batch: int
    n: int
    shape: str  # key of SHAPES
    dtype: str = "fp32"
    mode: str | None = None

    def __post_init__(self):
        if self.mode is None and self.case in REGISTRY:
            object.__setattr__(self, "mode", REGISTRY[self.case].default_mode)

    @property
    def group(self) -> str:
        return f"C{self.n}"

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return SHAPES[self.shape][0]

    @property
    def view(self) -> int:
        """Side of the views the encoder scores."""
        size = SHAPES[self.shape][1]
        return size if size is not None else self.in_shape[1]

    @property
    def label(self) -> str:
        v = self.view
        tail = "" if v == self.in_shape[1] else f"→{v}"
        return f"{self.group} B={self.batch} {self.shape}{tail} {self.dtype}"


@dataclass
class Bench:
    """A ready-to-time closure and what it moves."""

    fn: Callable[[], object]
    bytes: int | None  # inputs read once + outputs written once (None: not a bandwidth case)
    out_shape: str
    note: str = ""


# -- the registry ----------------------------------------------------------------------------


@dataclass
class Work:
    """What one provider computes for one case; :func:`build` makes the closure of a mode from it.

    ``forward`` returns the outputs that the backward differentiates, ``leaves`` are the inputs
    that receive gradients and ``upstream`` the gradient of each output (cast to its dtype).
    """

    forward: Callable[[], tuple[torch.Tensor, ...]]
    leaves: tuple[torch.Tensor, ...]
    upstream: tuple[torch.Tensor, ...]
    out_shape: str | None = None  # default: the shape of the first output
    note: str = ""
    step: Callable[[], object] | None = None  # steps: the whole training step, timed as ``full``
    no_grad_forward: bool = True  # forward mode under torch.no_grad (steps record, as a step does)


@dataclass(frozen=True)
class Case:
    """A registered case: its builder, its default mode and the bytes one call moves."""

    name: str
    build: Callable[[Config, str, Inputs], Work]
    default_mode: str
    nbytes: Callable[[Config, str], int | None]
    min_reps: int  # timed calls per CPU row at least
    summary: str


REGISTRY: dict[str, Case] = {}


def register(name: str, default_mode: str = "forward", nbytes: Callable | None = None, min_reps: int = 5):
    """Decorator: register ``builder(cfg, provider, inputs) -> Work`` as case ``name``."""

    def wrap(builder):
        summary = (builder.__doc__ or "").strip().splitlines()[0]
        REGISTRY[name] = Case(name, builder, default_mode, nbytes or (lambda cfg, mode: None), min_reps, summary)
        return builder

    return wrap


def graphable(cfg: Config) -> bool:
    """Timed also under a CUDA graph: the forward mode of an op case (no autograd, no step)."""
    return cfg.mode == "forward" and REGISTRY[cfg.case].default_mode == "forward"


# -- inputs shared by every provider ----------------------------------------------------------


@dataclass
class Inputs:
    """The tensors of one size point, identical for every provider.

    With ``grad`` (backward and full modes) the images, vectors, reference and the one-hot of
    the choice are leaves that require gradients.
    """

    cfg: Config
    device: str
    grad: bool
    x: torch.Tensor  # (B, C, H, W)
    index: torch.Tensor  # (B,) chosen elements
    onehot: torch.Tensor  # (B, N) one-hot of index, float32
    vectors: torch.Tensor  # (B, N, D)
    vectors_gm: torch.Tensor  # (N·B, D), equiadapt's group-major layout of the same vectors
    reference: torch.Tensor  # (D,) float32

    @classmethod
    def make(cls, cfg: Config, device: str, grad: bool) -> Inputs:
        g = torch.Generator().manual_seed(0)
        dt = DTYPES[cfg.dtype]
        B, N = cfg.batch, cfg.n
        x = torch.rand(B, *cfg.in_shape, generator=g)
        index = torch.randint(0, N, (B,), generator=g)
        vectors = torch.randn(B, N, DIM, generator=g)
        reference = torch.randn(DIM, generator=g)
        vectors_gm = vectors.transpose(0, 1).reshape(N * B, DIM)

        def leaf(t: torch.Tensor, dtype=None) -> torch.Tensor:
            return t.to(device, dtype).contiguous().requires_grad_(grad)

        onehot = F.one_hot(index, N).float()
        index = index.to(device)
        return cls(
            cfg,
            device,
            grad,
            leaf(x, dt),
            index,
            leaf(onehot),
            leaf(vectors, dt),
            leaf(vectors_gm, dt),
            leaf(reference),
        )

    def normal(self, *shape: int) -> torch.Tensor:
        """A seeded standard-normal tensor: the upstream gradient of an output of this shape."""
        return torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(self.device)

    def selection(self) -> canon.Selection | torch.Tensor:
        """canon's choice: the index (forward), or a Selection whose one-hot receives a gradient."""
        if not self.grad:
            return self.index
        return canon.Selection(self.onehot.detach(), self.onehot.detach(), self.index, self.onehot)

    def group_element(self) -> dict:
        """equiadapt's choice: ``{"rotation": degrees (B,)}`` (call it inside the forward).

        With ``grad`` the angle is computed from the one-hot, as equiadapt's straight-through
        path does, so the gradient reaches the one-hot. equiadapt rotates by −angle: for the
        same element as canon's index k (counter-clockwise 360·k/N) it gets −360·k/N: the same
        work, the sign does not change the cost.
        """
        N = self.cfg.n
        table = torch.arange(N, device=self.device, dtype=torch.float32) * (360.0 / N)
        if not self.grad:
            return {"rotation": -table[self.index]}
        return {"rotation": -(self.onehot * table).sum(-1)}


def _esize(dt: torch.dtype) -> int:
    return torch.tensor([], dtype=dt).element_size()


def _shape(t) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, torch.Tensor) else ""


def _ours(provider: str) -> bool:
    return provider.startswith("ours")


def _with_backend(provider: str, fn):
    backend = "triton" if provider == "ours-triton" else "reference"

    def run():
        with canon.use_backend(backend):
            return fn()

    return run


def _canon_view_params(cfg: Config) -> dict:
    """canon's single-resampling equivalent of equiadapt's scoring view."""
    C, H, W = cfg.in_shape
    if C == 1:
        return dict(size=None, crop_ratio=1.0, padding="zeros")
    m = min(math.ceil(H * CROP_RATIO), math.ceil(W * CROP_RATIO))
    return dict(size=cfg.view, crop_ratio=(m / H, m / W), padding="border")


def _loop_module(cfg: Config, encoder: nn.Module, device: str) -> EquiadaptLoop:
    return EquiadaptLoop(encoder, DIM, cfg.in_shape, cfg.n, "rotation", CROP_RATIO, cfg.view).to(device)


def _equiadapt_module(cfg: Config, encoder: nn.Module, device: str):
    cls, OmegaConf = load_equiadapt()
    encoder.out_vector_size = DIM
    hp = dict(beta=1.0, input_crop_ratio=CROP_RATIO, resize_shape=cfg.view, group_type="rotation")
    hp.update(num_rotations=cfg.n, artifact_err_wt=0, learn_ref_vec=False)
    model = cls(encoder, OmegaConf.create(hp), cfg.in_shape).to(device)
    model.device = torch.device(device)
    return model


def _no_peer(provider: str) -> None:
    if provider in PEERS:
        raise Unavailable("no plain-PyTorch peer for this case (peers: orbit, orbit-one-tap, canonicalize, invert)")


def _baseline(cfg: Config, provider: str, encoder: nn.Module, device: str):
    """equiadapt-loop or equiadapt itself, around ``encoder``."""
    if provider == "equiadapt-loop":
        return _loop_module(cfg, encoder, device)
    return _equiadapt_module(cfg, encoder, device)


# -- the cases -----------------------------------------------------------------------------


def _view_hw(cfg: Config) -> tuple[int, int]:
    size = _canon_view_params(cfg)["size"]
    return tuple(cfg.in_shape[1:]) if size is None else (size, size)


def _shrinks(cfg: Config) -> bool:
    """Whether canon antialiases this case's views (more than one input pixel per view pixel)."""
    p = _canon_view_params(cfg)
    return max(canon.geometry.view_scales(tuple(cfg.in_shape[1:]), _view_hw(cfg), p["crop_ratio"])) > 1


def _peer_orbit(cfg: Config, inp: Inputs, dviews: torch.Tensor) -> Work:
    """torch-batched / torch-compile: every view in one grid_sample (grid built once, outside the timed call)."""
    p, g = _canon_view_params(cfg), canon.groups.as_group(cfg.group)
    grid = peers.orbit_grid(g, tuple(cfg.in_shape[1:]), _view_hw(cfg), p["crop_ratio"], inp.device)
    x = inp.x
    return Work(lambda: (peers.orbit(x, grid, g.order, p["padding"]),), (x,), (dviews,))


def _peer_transform(cfg: Config, inp: Inputs, inverse: bool, padding: str) -> Work:
    """torch-batched / torch-compile canonicalize or invert: the chosen views (forward), or all N mixed by the
    one-hot (backward and full: the one-hot receives canon's straight-through gradient)."""
    g, hw = canon.groups.as_group(cfg.group), tuple(cfg.in_shape[1:])
    theta = peers.thetas(g, hw, hw, inverse=inverse).to(inp.device, torch.float32)
    x, choice = inp.x, (inp.onehot if inp.grad else inp.index)
    note = "all N views at full resolution (the mixture gradient)" if inp.grad else ""
    fn = lambda: (peers.transform(x, choice, theta, padding),)  # noqa: E731
    return Work(fn, (x, inp.onehot), (inp.normal(*x.shape),), note=note)


def _orbit_bytes(cfg: Config, mode: str) -> int:
    """x read + views written (forward); the views' gradient read + x's gradient written (backward)."""
    C, H, W = cfg.in_shape
    one = (cfg.batch * C * H * W + cfg.batch * cfg.n * C * cfg.view**2) * _esize(DTYPES[cfg.dtype])
    return 2 * one if mode == "full" else one


@register("orbit", nbytes=_orbit_bytes)
def orbit_case(cfg: Config, provider: str, inp: Inputs) -> Work:
    """Every view: ``canon.orbit`` (antialiased where it shrinks) against crop → resize → loop(pad → rotate → crop)."""
    B, N, C, v = cfg.batch, cfg.n, cfg.in_shape[0], cfg.view
    x, dviews = inp.x, inp.normal(B, N, C, v, v)  # the views' gradient in canon's layout
    if _ours(provider):
        p = _canon_view_params(cfg)
        fn = _with_backend(provider, lambda: (canon.orbit(x, cfg.group, p["size"], p["crop_ratio"], p["padding"]),))
        return Work(fn, (x,), (dviews,))
    if provider in PEERS:
        if _shrinks(cfg):
            raise Unavailable("one grid_sample tap per pixel does not antialias shrinking views: see orbit-one-tap")
        return _peer_orbit(cfg, inp, dviews)
    model = _baseline(cfg, provider, nn.Identity(), inp.device)
    if provider == "equiadapt-loop":
        fn = lambda: (model.group_augment(model.scoring_view(x)),)  # noqa: E731
    else:
        fn = lambda: (model.group_augment(model.resize_canonization(model.crop_canonization(x))),)  # noqa: E731
    # the same gradient per view in equiadapt's layout: row g·B + b, its element g is canon's (−g) mod N
    group_major = dviews[:, [(-g) % N for g in range(N)]].transpose(0, 1).reshape(N * B, C, v, v)
    return Work(fn, (x,), (group_major,))


@register("orbit-one-tap", nbytes=_orbit_bytes)
def orbit_one_tap_case(cfg: Config, provider: str, inp: Inputs) -> Work:
    """Every view, one bilinear tap per pixel (``antialias=False``): what antialiasing shrinking views costs."""
    B, N, C, v = cfg.batch, cfg.n, cfg.in_shape[0], cfg.view
    x, dviews = inp.x, inp.normal(B, N, C, v, v)
    if provider in PEERS:
        return _peer_orbit(cfg, inp, dviews)
    if not _ours(provider):
        raise Unavailable("equiadapt's resize always antialiases: its views are timed in the orbit case")
    p = _canon_view_params(cfg)
    fn = _with_backend(
        provider, lambda: (canon.orbit(x, cfg.group, p["size"], p["crop_ratio"], p["padding"], antialias=False),)
    )
    return Work(fn, (x,), (dviews,))


def _select_bytes(cfg: Config, mode: str) -> int:
    """Forward: vectors + reference read; scores, probs, one-hot (fp32), index (int64) and 2 losses written.
    Backward: the one-hot's gradient + 2 loss gradients + vectors + reference read; their gradients written."""
    B, N, es = cfg.batch, cfg.n, _esize(DTYPES[cfg.dtype])
    forward = B * N * DIM * es + DIM * 4 + 3 * B * N * 4 + B * 8 + 8
    backward = 2 * (B * N * DIM * es + DIM * 4) + B * N * 4 + 8
    return {"forward": forward, "backward": backward, "full": forward + backward}[mode]


@register("select", nbytes=_select_bytes)
def select_case(cfg: Config, provider: str, inp: Inputs) -> Work:
    """Scores, choice and both losses: ``canon.select_losses`` (selection, raw contrastive and prior loss
    from one pass over the vectors) against equiadapt's."""
    B, N = cfg.batch, cfg.n
    losses_grad = (torch.ones((), device=inp.device),) * 2
    if _ours(provider):
        vec, ref = inp.vectors, inp.reference

        def fn():
            sel, l_c, l_p = canon.select_losses(
                vec, ref, beta=1.0, straight_through=True, contrastive="raw", prior_beta=1.0
            )
            return sel.onehot, l_c, l_p

        return Work(_with_backend(provider, fn), (vec, ref), (inp.normal(B, N), *losses_grad), f"{B}x{N}")
    _no_peer(provider)
    model = _baseline(cfg, provider, nn.Identity(), inp.device).train()
    model.reference_vector.data.copy_(inp.reference[None])
    model.reference_vector.requires_grad_(inp.grad)
    vgm = inp.vectors_gm

    def fn():
        scalar_out = F.cosine_similarity(model.reference_vector.to(vgm.dtype).repeat(vgm.shape[0], 1), vgm)
        acts = scalar_out.reshape(N, -1).T
        if provider == "equiadapt-loop":
            model.info = {"vector_out": vgm}
            ged = model.group_element(acts)
        else:
            model.canonicalization_info_dict = {"vector_out": vgm}
            ged = model.groupactivations_to_groupelement(acts)
            model.canonicalization_info_dict.update(group_element=ged, group_activations=acts)
        return ged["rotation"], model.get_optimization_specific_loss(), model.get_prior_regularization_loss()

    # equiadapt's choice reaches the rest of a step as an angle made from the one-hot: its gradient
    # flows into the one-hot through that angle
    return Work(fn, (vgm, model.reference_vector), (inp.normal(B), *losses_grad), f"{B}x{N}")


def _transform_bytes(cfg: Config, mode: str) -> int:
    """Forward: x read + image written + index; backward: the image's gradient and x read, x's gradient
    and the one-hot's gradient written, index read."""
    C, H, W = cfg.in_shape
    image = cfg.batch * C * H * W * _esize(DTYPES[cfg.dtype])
    forward = 2 * image + cfg.batch * 8
    backward = 3 * image + cfg.batch * cfg.n * 4 + cfg.batch * 8
    return {"forward": forward, "backward": backward, "full": forward + backward}[mode]


@register("canonicalize", nbytes=_transform_bytes)
def canonicalize_case(cfg: Config, provider: str, inp: Inputs) -> Work:
    """The canonical image: ``canon.canonicalize`` at full resolution against pad → rotate(−angle) → crop."""
    x, leaves, up = inp.x, (inp.x, inp.onehot), (inp.normal(*inp.x.shape),)
    if _ours(provider):
        sel, padding = inp.selection(), _canon_view_params(cfg)["padding"]
        return Work(_with_backend(provider, lambda: (canon.canonicalize(x, sel, cfg.group, padding),)), leaves, up)
    if provider in PEERS:
        return _peer_transform(cfg, inp, False, _canon_view_params(cfg)["padding"])
    model = _baseline(cfg, provider, nn.Identity(), inp.device)
    if provider == "equiadapt-loop":
        return Work(lambda: (model.apply_group_element(x, inp.group_element()),), leaves, up)
    model.get_groupelement = lambda _x: inp.group_element()  # their canonicalize, our fixed choice
    return Work(lambda: (model.canonicalize(x),), leaves, up)


@register("invert", nbytes=_transform_bytes)
def invert_case(cfg: Config, provider: str, inp: Inputs) -> Work:
    """Undo the choice on dense outputs: ``canon.invert(y, index, ..., "scalar")`` against rotate(+angle)."""
    y, leaves, up = inp.x, (inp.x, inp.onehot), (inp.normal(*inp.x.shape),)
    if _ours(provider):
        sel = inp.selection()
        return Work(_with_backend(provider, lambda: (canon.invert(y, sel, cfg.group, "scalar", "zeros"),)), leaves, up)
    if provider in PEERS:
        return _peer_transform(cfg, inp, True, "zeros")
    model = _baseline(cfg, provider, nn.Identity(), inp.device)
    if provider == "equiadapt-loop":
        return Work(lambda: (model.invert_scalar(y, inp.group_element()),), leaves, up)

    def fn():
        model.canonicalization_info_dict = {"group_element": inp.group_element()}
        return (model.invert_canonicalization(y, induced_rep_type="scalar"),)

    return Work(fn, leaves, up)


class PoolLinear(nn.Module):
    """The cheap fixed-cost map of ``step-no-encoder``: global mean pool and a linear layer."""

    def __init__(self, in_channels: int, out_dim: int):
        super().__init__()
        self.head = nn.Linear(in_channels, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(-2, -1)))


def make_encoder(cfg: Config) -> nn.Module:
    """The same encoder for every provider (fresh seeded weights per call)."""
    torch.manual_seed(0)
    C = cfg.in_shape[0]
    if cfg.case == "step-no-encoder":
        return PoolLinear(C, DIM)
    return ConvEncoder(C, out_dim=DIM, hidden=16, num_layers=3, kernel_size=5)


def _step_forward(
    cfg: Config, provider: str, device: str, x: torch.Tensor, cuda_graph: bool = False
) -> tuple[nn.Module, Callable]:
    """(model, forward → (canonical images, prior loss, contrastive loss)) of one provider.

    ``cuda_graph``: ours only, on CUDA, fp32: the canonicalizer's forward and backward replay
    from :class:`canon.GraphedCanonicalizer` (captured here, for ``x``'s shape).
    """
    _no_peer(provider)
    encoder = make_encoder(cfg).to(device)  # identical initial weights for every provider
    if _ours(provider):
        p = _canon_view_params(cfg)
        model = canon.OrbitCanonicalizer(
            encoder,
            cfg.group,
            p["size"],
            p["crop_ratio"],
            padding=p["padding"],
            contrastive="raw",
            dim=DIM,
        )
        model = model.to(device).train()
        run = model
        if cuda_graph:
            if provider != "ours-triton" or device != "cuda" or cfg.dtype != "fp32":
                got = f"{provider} {device} {cfg.dtype}"
                raise Unavailable(f"a CUDA-graphed step needs ours-triton on CUDA in fp32, got {got}")
            with canon.use_backend("triton"):
                run = canon.GraphedCanonicalizer(model, x)
        return model, _with_backend(provider, lambda: (run(x), model.prior_loss(), model.contrastive_loss()))
    model = _baseline(cfg, provider, encoder, device).train()
    run = model.canonicalize if provider == "equiadapt-loop" else model
    return model, lambda: (run(x), model.get_prior_regularization_loss(), model.get_optimization_specific_loss())


@register("step", "full", min_reps=3)
def step_case(cfg: Config, provider: str, inp: Inputs) -> Work:
    """A training step: ``OrbitCanonicalizer`` (ConvEncoder) forward + losses + backward + SGD update."""
    return _step(cfg, provider, inp)


@register("step-no-encoder", "full", min_reps=3)
def step_no_encoder_case(cfg: Config, provider: str, inp: Inputs) -> Work:
    """``step`` with a mean-pool + linear map instead of the encoder, so the canonicalization cost shows."""
    return _step(cfg, provider, inp)


def step_work(cfg: Config, provider: str, device: str, cuda_graph: bool = False) -> Work:
    """The ``Work`` of a step case (its ``step`` is the whole training step), optionally CUDA-graphed."""
    if cfg.case not in ("step", "step-no-encoder"):
        raise ValueError(f"step_work: {cfg.case!r} is not a step case")
    _check_provider(provider, device)
    return _step(cfg, provider, Inputs.make(cfg, device, grad=True), cuda_graph)


def _step(cfg: Config, provider: str, inp: Inputs, cuda_graph: bool = False) -> Work:
    """A training step: forward (orbit → encoder → choice → canonical image) + losses + backward + SGD.

    fp32 runs in fp32; bf16 runs the whole step under ``torch.autocast(bf16)`` with fp32
    inputs and parameters (the usual mixed-precision set-up), for every provider alike.
    Modes: ``forward`` is the training forward with the losses (recording the graph),
    ``backward`` the gradients of the loss to the parameters, ``full`` the whole step.
    """
    x, device = inp.x.detach().float(), inp.device
    model, forward_losses = _step_forward(cfg, provider, device, x, cuda_graph)
    autocast = cfg.dtype == "bf16"

    def forward():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            xc, prior, contrast = forward_losses()
            task = xc.float().square().mean()  # a stand-in task loss: its gradient reaches the choice via xc
            return (task + PRIOR_WEIGHT * prior + CONTRAST_WEIGHT * contrast,)

    params = tuple(p for p in model.parameters() if p.requires_grad)
    opt = torch.optim.SGD(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        (loss,) = forward()
        loss.backward()
        opt.step()
        return loss

    note = "autocast bf16" if autocast else ""
    one = torch.ones((), device=device)
    return Work(forward, params, (one,), f"{cfg.batch}x{cfg.n}x{DIM}", note, step=step, no_grad_forward=False)


CASES = tuple(REGISTRY)


# -- the configurations ------------------------------------------------------------------


# providers timed also with CUDA graphs (the launch-bound ones, and ours-triton beside them);
# the reference backend reads view matrices on the host (a sync), which graphs cannot capture
GRAPH_PROVIDERS = ("ours-triton", "equiadapt", "equiadapt-loop", "torch-batched", "torch-compile")

TARGETS = (
    Config("orbit", 64, 8, "3x32x32"),
    Config("step", 64, 8, "3x32x32"),
)


def quick_configs(device: str) -> list[Config]:
    """A small set with the target cases first, then one backward point per op; larger on a GPU."""
    cfgs = list(TARGETS)
    cfgs += [
        Config("step-no-encoder", 64, 8, "3x32x32"),
        Config("select", 64, 8, "3x32x32"),
        Config("canonicalize", 64, 8, "3x32x32"),
        Config("invert", 64, 8, "3x32x32"),
        Config("orbit", 64, 4, "1x28x28"),
        Config("orbit", 64, 8, "3x32x32", "bf16"),
        Config("orbit", 16, 8, "3x224x224"),  # 224 → 96: antialiased views
        Config("orbit-one-tap", 16, 8, "3x224x224"),
        Config("step", 64, 4, "1x28x28"),
    ]
    cfgs += [Config(c, 64, 8, "3x32x32", mode="backward") for c in ("orbit", "select", "canonicalize", "invert")]
    if device == "cuda":
        cfgs += [
            Config("orbit", 512, 16, "3x224x224"),
            Config("step", 256, 8, "3x32x32", "bf16"),
            Config("step-no-encoder", 512, 16, "3x32x32"),
        ]
        cfgs += [Config(c, 256, 8, "3x224x224") for c in ("canonicalize", "invert")]
        cfgs += [Config("orbit", 512, 16, "3x224x224", mode="backward")]
        cfgs += [
            Config("orbit-one-tap", 512, 16, "3x224x224"),
            Config("orbit-one-tap", 512, 16, "3x224x224", mode="backward"),
        ]
        cfgs += [Config("canonicalize", 256, 8, "3x224x224", mode="backward")]
    return cfgs


def peer_configs(device: str) -> list[Config]:
    """The cases that have a plain-PyTorch peer (``torch-batched``, ``torch-compile``) at the sizes of the GPU
    targets (docs/benchmarks.md): forward and backward, fp32, and the bf16 orbit beside its fp32 twin.

    ``orbit-one-tap`` is the peers' single bilinear tap per pixel on the 224² → 96 views (``orbit``
    antialiases them); ``orbit`` on 3×32² → 96 upsamples, so no antialiasing applies and the peers run it.
    """
    big = device == "cuda"
    b224, b224s, bsmall = (256, 64, 64) if big else (8, 4, 16)
    cfgs = [
        Config("orbit-one-tap", b224, 8, "3x224x224"),
        Config("orbit-one-tap", b224, 8, "3x224x224", "bf16"),
        Config("orbit-one-tap", 512 if big else 8, 16, "3x224x224"),
        Config("orbit", bsmall, 8, "3x32x32"),
        Config("canonicalize", b224, 8, "3x224x224"),
        Config("invert", b224, 8, "3x224x224"),
    ]
    cfgs += [
        Config("orbit-one-tap", b224s, 8, "3x224x224", mode="backward"),
        Config("orbit-one-tap", 512 if big else 8, 16, "3x224x224", mode="backward"),
        Config("orbit", bsmall, 8, "3x32x32", mode="backward"),
        Config("canonicalize", b224, 8, "3x224x224", mode="backward"),
        Config("invert", b224, 8, "3x224x224", mode="backward"),
    ]
    return cfgs


def full_configs() -> list[Config]:
    """The full sweep (meant for a GPU): every case × B ∈ {16, 64, 256, 512} × N ∈ {4, 8, 16} × shape × dtype,
    each case in its default mode."""
    points = itertools.product(REGISTRY, SHAPES, (4, 8, 16), (16, 64, 256, 512), DTYPES)
    return [Config(c, b, n, s, d) for c, s, n, b, d in points]


def with_modes(cfgs: list[Config], modes: list[str]) -> list[Config]:
    """Every size point of ``cfgs`` in each of ``modes`` (duplicates dropped, order kept)."""
    out = (Config(c.case, c.batch, c.n, c.shape, c.dtype, m) for c in cfgs for m in modes)
    return list(dict.fromkeys(out))


# -- from a Work to the closure of one mode ----------------------------------------------------


def _check_provider(provider: str, device: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; choose from {PROVIDERS}")
    if provider == "ours-triton":
        if device != "cuda":
            raise Unavailable("no CUDA device here (the Triton interpreter is a test tool, not a performance path)")
        try:
            from canon import triton_ops  # noqa: F401
        except Exception as e:
            raise Unavailable(f"canon's Triton ops do not import: {type(e).__name__}: {e}") from e
    if provider == "equiadapt":
        ok, why = equiadapt_status()
        if not ok:
            raise Unavailable(why)


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _closure(work: Work, mode: str) -> tuple[Callable[[], object], tuple]:
    """(the timed closure of ``mode``, the outputs of one untimed forward)."""
    if mode == "forward":
        fn = _no_grad(work.forward) if work.no_grad_forward else work.forward
        return fn, fn()
    outs = work.forward()  # backward: the graph that every timed call differentiates again
    if len(outs) != len(work.upstream) or any(o.shape != u.shape for o, u in zip(outs, work.upstream)):
        raise ValueError(f"upstream gradients {[tuple(u.shape) for u in work.upstream]} do not match the outputs")
    up = tuple(u.to(o.dtype) for o, u in zip(outs, work.upstream))
    leaves = work.leaves
    if mode == "backward":
        return (lambda: torch.autograd.grad(outs, leaves, up, retain_graph=True)), outs
    if work.step is not None:
        return work.step, outs
    return (lambda: torch.autograd.grad(work.forward(), leaves, up)), outs


def build(cfg: Config, provider: str, device: str, check_provider: bool = True) -> Bench:
    """The closure timing ``cfg.case`` in ``cfg.mode`` for ``provider`` on ``device``; raises :class:`Unavailable`.

    ``check_provider=False`` skips the availability check: the tests run ours-triton's closures
    on CPU tensors under the Triton interpreter, which is no performance path.
    """
    if cfg.case not in REGISTRY:
        raise ValueError(f"unknown case {cfg.case!r}; choose from {CASES}")
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose from {MODES}")
    if check_provider:
        _check_provider(provider, device)
    case = REGISTRY[cfg.case]
    work = case.build(cfg, provider, Inputs.make(cfg, device, grad=cfg.mode != "forward"))
    if provider == "torch-compile":
        work.forward, how = _compile(work.forward)
        work.note = "; ".join(filter(None, (how, work.note)))
    fn, outs = _closure(work, cfg.mode)
    if provider == "torch-compile":
        fn()  # the backward compiles on its first call: not in the timed calls
    return Bench(fn, case.nbytes(cfg, cfg.mode), work.out_shape or _shape(outs[0]), work.note)


def _compile(forward: Callable) -> tuple[Callable, str]:
    """``forward`` under ``torch.compile`` (backend and mode from ``BENCH_COMPILE_BACKEND`` / ``BENCH_COMPILE_MODE``).

    Dynamo's caches are reset first: every size point is its own specialised compile, and a
    recompile limit reached across points would silently fall back to eager.
    """
    backend = os.environ.get("BENCH_COMPILE_BACKEND", "inductor")
    mode = os.environ.get("BENCH_COMPILE_MODE") or None
    torch._dynamo.reset()
    return peers.compiled(forward, backend, mode), f"torch.compile(backend={backend}, mode={mode or 'default'})"


# -- timers ---------------------------------------------------------------------------------


def _quantiles(ts_ms: list[float]) -> tuple[float, float, float]:
    if len(ts_ms) == 1:
        return ts_ms[0], ts_ms[0], ts_ms[0]
    q = statistics.quantiles(ts_ms, n=4, method="inclusive")
    return q[0], statistics.median(ts_ms), q[2]


def time_cpu(fn, min_time_s: float = 1.0, min_reps: int = 5, max_reps: int = 100, warmup: int = 1) -> dict:
    """Wall-clock per call (perf_counter), after ``warmup`` calls, until both limits are met.

    Also the median process CPU time per call (all threads, ``cpu_ms``): on a machine that
    other processes load, wall time grows with preemption while CPU time mostly does not.
    """
    for _ in range(warmup):
        fn()
    ts, cpu = [], []
    t_start = time.perf_counter()
    while len(ts) < max_reps and (len(ts) < min_reps or time.perf_counter() - t_start < min_time_s):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    q25, med, q75 = _quantiles(ts)
    cpu_ms = statistics.median(cpu)
    return dict(median_ms=med, q25_ms=q25, q75_ms=q75, reps=len(ts), timer="perf_counter", cpu_ms=cpu_ms)


def time_cuda(fn, cuda_graph: bool = False, quick: bool = True) -> dict:
    """triton.testing.do_bench (CUDA events around each call, L2 flushed), or its CUDA-graph variant."""
    import triton.testing as tt

    rep = 100 if quick else 500
    if cuda_graph:  # captures rep/estimate unrolled calls on a side stream, replays them
        q = tt.do_bench_cudagraph(fn, rep=rep, quantiles=[0.25, 0.5, 0.75])
        timer = "do_bench_cudagraph"
    else:
        q = tt.do_bench(fn, warmup=25, rep=rep, quantiles=[0.25, 0.5, 0.75])
        timer = "do_bench"
    return dict(median_ms=q[1], q25_ms=q[0], q75_ms=q[2], reps="", timer=timer)


def copy_bandwidth(device: str, quick: bool = True) -> float:
    """GB/s of ``dst.copy_(src)`` (bytes read + bytes written), the roofline of this run."""
    n = (64 if device == "cpu" else 512) * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    fn = lambda: dst.copy_(src)  # noqa: E731
    t = time_cuda(fn, quick=quick) if device == "cuda" else time_cpu(fn, min_time_s=0.5, min_reps=10)
    return 2 * n * 4 / (t["median_ms"] * 1e-3) / 1e9


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ code writes to file descriptor 2 inside the block: the profiler's Kineto prints
    ``USDT: … profiler_start/stop`` and a CPUAllocator note on every profiled row, which no option turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_call(fn, device: str) -> dict:
    """Peak memory and launches of one call (after the timing, so everything is warm)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with quiet_native_stderr(), profile(activities=acts, profile_memory=device == "cpu") as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        launches = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        return dict(
            peak_mem_mb=peak,
            mem_method="cuda.max_memory_allocated",
            launches=launches,
            launch_kind="cuda-kernels",
        )
    return dict(
        peak_mem_mb=cpu_peak_mb(events),
        mem_method="profiler-alloc-timeline",
        launches=count_leaf_ops(events),
        launch_kind="cpu-leaf-aten-ops",
    )


def cpu_peak_mb(events) -> float:
    """Peak of live CPU tensor memory in a profile: op-level allocations and frees in time order."""
    timeline = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in events if e.self_cpu_memory_usage)
    peak = cur = 0
    for _, d in timeline:
        cur += d
        peak = max(peak, cur)
    return peak / 2**20


def count_leaf_ops(events) -> int:
    """aten ops that call no other aten op, and calls of torch.compile'd graphs (whose generated C++ kernels
    the CPU profiler does not list): on CPU, the closest thing to a kernel launch."""
    aten = [e for e in events if e.name.startswith("aten::")]
    compiled = sum(1 for e in events if e.name.startswith("## Call CompiledFxGraph"))
    return compiled + sum(1 for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children))


# -- environment -----------------------------------------------------------------------------


def environment(device: str, command: str) -> dict:
    """Machine, versions, commit and date, recorded in every row."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "unavailable"
    if device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        device_name = _cpu_name()
    return dict(
        machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        device_name=device_name,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        triton=triton_version,
        canon=canon.__version__,
        git_commit=git_commit(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        git = ["git", "-C", root]
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        status = [*git, "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


# -- one row -------------------------------------------------------------------------------


def _base_row(cfg: Config, provider: str, device: str, env: dict, copy_gbps: float, cuda_graph: bool) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(env)
    row.update(
        case=cfg.case,
        provider=provider,
        mode=cfg.mode,
        device=device,
        dtype=cfg.dtype,
        batch=cfg.batch,
        group=cfg.group,
        in_shape="x".join(map(str, cfg.in_shape)),
        cuda_graph=cuda_graph,
        copy_gbps=round(copy_gbps, 2),
        load_avg=round(os.getloadavg()[0], 2),  # 1-minute load average when the row started
    )
    return row


def _failed(row: dict, e: Exception) -> dict:
    if isinstance(e, Unavailable):
        row.update(status="unavailable", note=str(e))
    else:  # a failing provider is a published result, not a crash of the suite
        row.update(status="error", note=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
    return row


def _finish(row: dict, cfg: Config, b: Bench, t: dict, device: str, copy_gbps: float, cuda_graph: bool) -> dict:
    """Fill the timing-derived columns, then profile one more call for memory and launches."""
    row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items()})
    row["iqr_ms"] = round(t["q75_ms"] - t["q25_ms"], 4)
    row["images_per_s"] = round(cfg.batch / (t["median_ms"] * 1e-3), 1)
    if b.bytes:
        gbps = b.bytes / (t["median_ms"] * 1e-3) / 1e9
        row.update(gbps=round(gbps, 3), pct_copy=round(100 * gbps / copy_gbps, 2))
    if not cuda_graph:
        p = profile_call(b.fn, device)
        row.update(
            peak_mem_mb=round(p["peak_mem_mb"], 2),
            mem_method=p["mem_method"],
            launches=p["launches"],
            launch_kind=p["launch_kind"],
        )
    row["status"] = "ok"
    return row


def measure(
    cfg: Config,
    provider: str,
    device: str,
    env: dict,
    copy_gbps: float,
    quick: bool = True,
    cuda_graph: bool = False,
    min_time_s: float = 1.0,
) -> dict:
    """Build, time and profile one (case, provider, size); always returns a row (status ok/unavailable/error)."""
    row = _base_row(cfg, provider, device, env, copy_gbps, cuda_graph)
    try:
        b = build(cfg, provider, device)
        row.update(out_shape=b.out_shape, note=b.note, bytes=b.bytes or "")
        if device == "cuda":
            t = time_cuda(b.fn, cuda_graph=cuda_graph, quick=quick)
        else:
            t = time_cpu(b.fn, min_time_s=min_time_s, min_reps=REGISTRY[cfg.case].min_reps)
        return _finish(row, cfg, b, t, device, copy_gbps, cuda_graph)
    except Exception as e:
        return _failed(row, e)


def measure_interleaved(
    cfg: Config,
    providers: list[str],
    env: dict,
    copy_gbps: float,
    min_time_s: float = 1.0,
    max_reps: int = 100,
) -> list[dict]:
    """CPU: time every provider of one size point in alternating rounds (A B A B ...).

    On a shared machine the speed drifts with the load of other processes; alternating
    the calls gives every provider the same conditions, so their ratio stays fair. Each
    provider gets one warm-up call, then rounds run until every provider has the case's
    ``min_reps`` calls (3 for steps, 5 otherwise) and its calls took ``min_time_s`` in total.
    """
    rows = {p: _base_row(cfg, p, "cpu", env, copy_gbps, False) for p in providers}
    benches = {}
    for p in providers:
        try:
            b = build(cfg, p, "cpu")
            rows[p].update(out_shape=b.out_shape, note=b.note, bytes=b.bytes or "")
            b.fn()  # warm-up
            benches[p] = b
        except Exception as e:
            _failed(rows[p], e)
    wall, cpu = _alternate(benches, rows, REGISTRY[cfg.case].min_reps, min_time_s, max_reps)
    for p, b in benches.items():
        q25, med, q75 = _quantiles(wall[p])
        t = dict(median_ms=med, q25_ms=q25, q75_ms=q75, reps=len(wall[p]), timer="perf_counter-interleaved")
        t["cpu_ms"] = statistics.median(cpu[p])
        try:
            _finish(rows[p], cfg, b, t, "cpu", copy_gbps, False)
        except Exception as e:
            _failed(rows[p], e)
    return [rows[p] for p in providers]


def _alternate(benches: dict, rows: dict, min_reps: int, min_time_s: float, max_reps: int) -> tuple[dict, dict]:
    """Rounds of one call per provider; ({provider: wall ms per call}, {provider: CPU ms per call}).

    A provider whose call raises gets an error row and leaves the rounds (``benches`` shrinks).
    """
    wall = {p: [] for p in benches}
    cpu = {p: [] for p in benches}

    def more(p: str) -> bool:
        return len(wall[p]) < max_reps and (len(wall[p]) < min_reps or sum(wall[p]) < min_time_s * 1e3)

    while benches and any(more(p) for p in benches):
        for p, b in list(benches.items()):
            try:
                c0, t0 = time.process_time(), time.perf_counter()
                b.fn()
                wall[p].append((time.perf_counter() - t0) * 1e3)
                cpu[p].append((time.process_time() - c0) * 1e3)
            except Exception as e:
                _failed(rows[p], e)
                del benches[p]
    return wall, cpu
