"""The benchmark cases and the size points the suite runs: adding a case is one builder here.

Each case is one small builder, ``builder(cfg, provider, inputs) -> Work``, registered by name with
:func:`bench.registry.register` (its default mode, the bytes one call moves, its CPU repetitions);
:mod:`bench.registry` holds what a case is and turns a Work into the closure of one mode,
:mod:`bench.timers` times it and :mod:`bench.rows` writes one result row per measurement.

Cases (one name stem per op, as in ``canon``): ``orbit``, ``orbit-one-tap`` (the orbit without
antialiasing), ``select`` (scores, choice and both losses), ``canonicalize``, ``invert`` (both
``canon::transform``), ``step`` (canonicalizer training step with :class:`canon.networks.ConvEncoder`)
and ``step-no-encoder`` (the same step with a cheap fixed-cost map instead of the encoder, so the
canonicalization overhead shows). :data:`CASES` lists them in registration order.

Parameters shared by every provider: colour inputs are scored on a centre crop of ratio
0.8 (``ceil(0.8·H)`` pixels, equiadapt's example config) resized to 96×96 with edge
padding; grayscale inputs (1×28×28) are scored at full size with zero padding, as
equiadapt does. Canonical images and inverses are at full input resolution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import canon
from bench import peers
from bench.baselines import EQUIADAPT_CONTRAST_WEIGHT, EQUIADAPT_PRIOR_WEIGHT, EquiadaptLoop, equiadapt_canonicalizer
from bench.registry import (
    DIM,
    DTYPES,
    PEERS,
    REGISTRY,
    SHAPES,
    Config,
    Inputs,
    Unavailable,
    Work,
    check_available,
    register,
)
from canon.networks import ConvEncoder

CROP_RATIO = 0.8  # equiadapt's example config (input_crop_ratio)
# equiadapt's example prior_weight, and the group_contrast_weight its config comment suggests
PRIOR_WEIGHT, CONTRAST_WEIGHT = EQUIADAPT_PRIOR_WEIGHT, EQUIADAPT_CONTRAST_WEIGHT


# -- what the providers share ----------------------------------------------------------------


def _esize(dt: torch.dtype) -> int:
    return torch.tensor([], dtype=dt).element_size()


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
    model = equiadapt_canonicalizer(encoder, DIM, cfg.in_shape, cfg.n, "rotation", CROP_RATIO, cfg.view).to(device)
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
    check_available(provider, device)
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
