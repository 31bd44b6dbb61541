"""Registered tensor-level ops with backend dispatch: the seam between ``canon`` and ``kernels``.

Each op is a ``torch.library.custom_op`` (namespace ``canon``) with a fake (meta)
implementation and an autograd formula whose backward is itself a registered op, so
``torch.compile(fullgraph=True)`` sees every op as one opaque node, forward and
backward. The implementation runs the Triton kernels (:mod:`canon.triton_ops`) or the
plain-PyTorch reference (:mod:`canon.reference`), as chosen at run time by
:func:`canon.backend.resolve_backend` (CUDA → Triton, elsewhere → reference, unless
forced). The ops take tensors, view matrices and plain settings (no groups); inputs are
validated one layer up, in :mod:`canon.functional`.

Public functions (signatures unchanged): :func:`orbit`, :func:`transform`,
:func:`select`, :func:`contrastive_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from canon import reference as ref
from canon.backend import resolve_backend

__all__ = ["orbit", "transform", "select", "contrastive_loss"]


def _triton():
    from canon import triton_ops  # imported lazily: triton is optional on the CPU path

    return triton_ops


def _use_triton(t: Tensor) -> bool:
    return resolve_backend(t) == "triton"


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- orbit
@torch.library.custom_op("canon::orbit", mutates_args=())
def _orbit(
    x: Tensor, mats: Tensor, exact: bool, h: int, w: int, padding: str, interpolation: str, out_dtype: torch.dtype | None, channels_last: bool
) -> Tensor:
    if _use_triton(x):
        return _triton().orbit(x, mats, exact, (h, w), padding, interpolation, out_dtype, channels_last)
    return ref.orbit_ref(x, mats, exact, (h, w), padding, interpolation, out_dtype, channels_last)


def _orbit_empty(B, N, C, h, w, dtype, device, channels_last):
    if channels_last:
        return torch.empty((B, N, h, w, C), dtype=dtype, device=device).permute(0, 1, 4, 2, 3)
    return torch.empty((B, N, C, h, w), dtype=dtype, device=device)


@_orbit.register_fake
def _(x, mats, exact, h, w, padding, interpolation, out_dtype, channels_last):
    return _orbit_empty(x.shape[0], mats.shape[0], x.shape[1], h, w, out_dtype or x.dtype, x.device, channels_last)


@torch.library.custom_op("canon::orbit_backward", mutates_args=())
def _orbit_backward(grad: Tensor, mats: Tensor, exact: bool, H: int, W: int, padding: str, interpolation: str, x_dtype: torch.dtype) -> Tensor:
    if _use_triton(grad):
        return _triton().orbit_backward(grad, mats, exact, (H, W), padding, interpolation, x_dtype)
    return ref.orbit_backward_ref(grad, mats, exact, (H, W), padding, interpolation, x_dtype)


@_orbit_backward.register_fake
def _(grad, mats, exact, H, W, padding, interpolation, x_dtype):
    return grad.new_empty((grad.shape[0], grad.shape[2], H, W), dtype=x_dtype)


def _orbit_setup(ctx, inputs, output):
    x, mats, exact, h, w, padding, interpolation, out_dtype, channels_last = inputs
    ctx.save_for_backward(mats)
    ctx.cfg = (exact, x.shape[-2], x.shape[-1], padding, interpolation, x.dtype)


def _orbit_grad(ctx, grad):
    (mats,) = ctx.saved_tensors
    exact, H, W, padding, interpolation, x_dtype = ctx.cfg
    gx = torch.ops.canon.orbit_backward(grad, mats, exact, H, W, padding, interpolation, x_dtype) if ctx.needs_input_grad[0] else None
    return gx, None, None, None, None, None, None, None, None


_orbit.register_autograd(_orbit_grad, setup_context=_orbit_setup)


def orbit(x, mats, exact, size, padding, interpolation, out_dtype=None, channels_last=False) -> Tensor:
    """All views (B, N, C, h, w) of ``x`` (B, C, H, W) through ``mats`` (N, 2, 3); see :func:`canon.orbit`."""
    h, w = size
    return torch.ops.canon.orbit(x, mats, bool(exact), int(h), int(w), padding, interpolation, out_dtype, bool(channels_last))


# ----------------------------------------------------------------------------- transform
@torch.library.custom_op("canon::transform", mutates_args=())
def _transform(x: Tensor, weights: Tensor, index: Tensor, mats: Tensor, exact: bool, padding: str, interpolation: str) -> Tensor:
    if _use_triton(x):
        return _triton().transform(x, weights, index, mats, exact, padding, interpolation)
    with torch.no_grad():
        return ref.transform_ref(x, weights, index, mats, exact, padding, interpolation)


@_transform.register_fake
def _(x, weights, index, mats, exact, padding, interpolation):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@torch.library.custom_op("canon::transform_backward", mutates_args=())
def _transform_backward(
    grad: Tensor, x: Tensor, index: Tensor, mats: Tensor, exact: bool, padding: str, interpolation: str, need_x: bool, need_weights: bool
) -> tuple[Tensor, Tensor]:
    if _use_triton(grad):
        gx, gw = _triton().transform_backward(grad, x, index, mats, exact, padding, interpolation, need_x, need_weights)
    else:
        gx, gw = ref.transform_backward_ref(grad, x, index, mats, exact, padding, interpolation, need_x, need_weights)
    # Outputs that were not asked for are empty (a custom op returns tensors, never None).
    gx = gx.to(x.dtype) if gx is not None else x.new_empty((0,))
    gw = gw if gw is not None else x.new_empty((0,), dtype=_acc_dtype(x.dtype))
    return gx, gw


@_transform_backward.register_fake
def _(grad, x, index, mats, exact, padding, interpolation, need_x, need_weights):
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else x.new_empty((0,))
    acc = _acc_dtype(x.dtype)
    gw = x.new_empty((x.shape[0], mats.shape[0]), dtype=acc) if need_weights else x.new_empty((0,), dtype=acc)
    return gx, gw


def _transform_setup(ctx, inputs, output):
    x, weights, index, mats, exact, padding, interpolation = inputs
    ctx.save_for_backward(x, index, mats)
    ctx.cfg = (exact, padding, interpolation, weights.dtype)


def _transform_grad(ctx, grad):
    x, index, mats = ctx.saved_tensors
    exact, padding, interpolation, w_dtype = ctx.cfg
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_x or need_w):
        return None, None, None, None, None, None, None
    gx, gw = torch.ops.canon.transform_backward(grad, x, index, mats, exact, padding, interpolation, need_x, need_w)
    return (gx if need_x else None), (gw.to(w_dtype) if need_w else None), None, None, None, None, None


_transform.register_autograd(_transform_grad, setup_context=_transform_setup)


def transform(x, weights, index, mats, exact, padding, interpolation) -> Tensor:
    """``T_{index[b]} x[b]`` with the mixture straight-through gradient to ``weights`` (SPEC §3.5)."""
    return torch.ops.canon.transform(x, weights, index, mats, bool(exact), padding, interpolation)


# ----------------------------------------------------------------------------- select
@torch.library.custom_op("canon::select", mutates_args=())
def _select(
    vectors: Tensor, reference: Tensor, beta: float, score: str, straight_through: bool, gumbel_noise: Tensor | None, tau: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if _use_triton(vectors):
        sel = _triton().select(vectors, reference, beta, score, straight_through, gumbel_noise, tau)
    else:
        # Forward values only: the straight-through one-hot's value is the hard one-hot.
        sel = ref.select_ref(vectors, reference, beta, score, False, gumbel_noise, tau)
    return sel.scores, sel.probs, sel.index, sel.onehot


@_select.register_fake
def _(vectors, reference, beta, score, straight_through, gumbel_noise, tau):
    B, N, _ = vectors.shape
    acc = _acc_dtype(vectors.dtype)
    return (
        vectors.new_empty((B, N), dtype=acc),
        vectors.new_empty((B, N), dtype=acc),
        vectors.new_empty((B,), dtype=torch.int64),
        vectors.new_empty((B, N), dtype=acc),
    )


@torch.library.custom_op("canon::select_backward", mutates_args=())
def _select_backward(
    grad_scores: Tensor | None,
    grad_probs: Tensor | None,
    grad_onehot: Tensor | None,
    vectors: Tensor,
    reference: Tensor,
    probs: Tensor,
    beta: float,
    score: str,
    straight_through: bool,
    gumbel_noise: Tensor | None,
    tau: float,
) -> tuple[Tensor, Tensor]:
    if _use_triton(vectors):
        return _triton().select_backward(
            grad_scores, grad_probs, grad_onehot, vectors, reference, probs, beta, score, straight_through, gumbel_noise is not None, tau
        )
    return ref.select_backward_ref(
        grad_scores, grad_probs, grad_onehot if straight_through else None, vectors, reference, beta, score, straight_through, gumbel_noise, tau
    )


@_select_backward.register_fake
def _(grad_scores, grad_probs, grad_onehot, vectors, reference, probs, beta, score, straight_through, gumbel_noise, tau):
    return torch.empty_like(vectors, memory_format=torch.contiguous_format), torch.empty_like(reference, memory_format=torch.contiguous_format)


def _select_setup(ctx, inputs, output):
    vectors, reference, beta, score, straight_through, gumbel_noise, tau = inputs
    ctx.save_for_backward(vectors, reference, output[1], gumbel_noise)
    ctx.cfg = (beta, score, straight_through, tau)
    ctx.mark_non_differentiable(output[2])
    if not straight_through:  # eval: the one-hot is a constant
        ctx.mark_non_differentiable(output[3])


def _select_grad(ctx, g_scores, g_probs, g_index, g_onehot):
    vectors, reference, probs, noise = ctx.saved_tensors
    beta, score, straight_through, tau = ctx.cfg
    if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        return None, None, None, None, None, None, None
    gv, gr = torch.ops.canon.select_backward(g_scores, g_probs, g_onehot, vectors, reference, probs, beta, score, straight_through, noise, tau)
    return (gv if ctx.needs_input_grad[0] else None), (gr if ctx.needs_input_grad[1] else None), None, None, None, None, None


_select.register_autograd(_select_grad, setup_context=_select_setup)


def select(vectors, reference, beta, score, straight_through, gumbel_noise, tau) -> ref.Selection:
    """Scores, β-softmax, argmax and (straight-through) one-hot of ``vectors`` (B, N, D); see :func:`canon.select`."""
    return ref.Selection(*torch.ops.canon.select(vectors, reference, float(beta), score, bool(straight_through), gumbel_noise, float(tau)))


# ----------------------------------------------------------------------------- contrastive loss
@torch.library.custom_op("canon::contrastive_loss", mutates_args=())
def _contrastive_loss(vectors: Tensor, kind: str) -> Tensor:
    if _use_triton(vectors):
        return _triton().contrastive_loss(vectors, kind)
    return ref.contrastive_loss_ref(vectors, kind)


@_contrastive_loss.register_fake
def _(vectors, kind):
    return vectors.new_empty((), dtype=_acc_dtype(vectors.dtype))


@torch.library.custom_op("canon::contrastive_loss_backward", mutates_args=())
def _contrastive_loss_backward(grad: Tensor, vectors: Tensor, kind: str) -> Tensor:
    if _use_triton(vectors):
        return _triton().contrastive_loss_backward(grad, vectors, kind)
    return ref.contrastive_loss_backward_ref(grad, vectors, kind)


@_contrastive_loss_backward.register_fake
def _(grad, vectors, kind):
    return torch.empty_like(vectors, memory_format=torch.contiguous_format)


def _contrastive_setup(ctx, inputs, output):
    vectors, kind = inputs
    ctx.save_for_backward(vectors)
    ctx.kind = kind


def _contrastive_grad(ctx, grad):
    (vectors,) = ctx.saved_tensors
    return torch.ops.canon.contrastive_loss_backward(grad, vectors, ctx.kind), None


_contrastive_loss.register_autograd(_contrastive_grad, setup_context=_contrastive_setup)


def contrastive_loss(vectors, kind) -> Tensor:
    """Orbit orthogonality loss of ``vectors`` (B, N, D) (SPEC §4)."""
    return torch.ops.canon.contrastive_loss(vectors, kind)
