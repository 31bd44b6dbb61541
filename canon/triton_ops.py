"""The Triton side of :mod:`canon.ops`: allocate outputs, pick the kernel variant, launch.

Plain functions without autograd (the registered ops in :mod:`canon.ops` wire the
forward and backward halves together). Every function reads its inputs through their
strides (no copies) and never synchronises with the host. Forward functions accept a
preallocated ``out`` (tests poison it with NaN).

Determinism: every backward here is deterministic except the adjoint of non-exact
(bilinear/nearest, or padded exact) resampling, which scatters with atomics (see
``kernels.resample.resample_push_kernel`` for why). Under
``torch.use_deterministic_algorithms(True)`` those adjoints run the sort-based
reference adjoint instead (:func:`canon.reference.orbit_backward_ref`).
"""

from __future__ import annotations

import contextlib

import torch

from canon import reference as ref
from canon.kernels import resample, scores

__all__ = ["orbit", "orbit_backward", "transform", "transform_backward", "select", "select_backward", "contrastive_loss", "contrastive_loss_backward"]


def _device(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _pull_adjoint(exact: bool, padding: str) -> bool:
    return bool(exact) and padding == "zeros"


def _deterministic_fallback(exact: bool, padding: str) -> bool:
    return torch.are_deterministic_algorithms_enabled() and not _pull_adjoint(exact, padding)


def orbit_empty(B: int, N: int, C: int, h: int, w: int, dtype: torch.dtype, device, channels_last: bool) -> torch.Tensor:
    """Uninitialised (B, N, C, h, w) views; ``channels_last``: ``flatten(0, 1)`` is channels_last."""
    if channels_last:
        return torch.empty((B, N, h, w, C), dtype=dtype, device=device).permute(0, 1, 4, 2, 3)
    return torch.empty((B, N, C, h, w), dtype=dtype, device=device)


def orbit(x, mats, exact, size, padding, interpolation, out_dtype=None, channels_last=False, out=None) -> torch.Tensor:
    B, C = x.shape[:2]
    h, w = size
    if out is None:
        out = orbit_empty(B, mats.shape[0], C, h, w, out_dtype or x.dtype, x.device, channels_last)
    with _device(x):
        return resample.orbit_forward(x, mats.contiguous(), exact, (h, w), padding, interpolation, out)


def orbit_backward(grad, mats, exact, in_hw, padding, interpolation, x_dtype, out=None) -> torch.Tensor:
    if _deterministic_fallback(exact, padding):
        return ref.orbit_backward_ref(grad, mats, exact, in_hw, padding, interpolation, x_dtype)
    B, N, C = grad.shape[:3]
    if out is None:
        out = torch.empty((B, C, *in_hw), dtype=x_dtype, device=grad.device)
    with _device(grad):
        return resample.orbit_backward(grad, mats.contiguous(), exact, tuple(in_hw), padding, interpolation, out)


def transform(x, weights, index, mats, exact, padding, interpolation, out=None) -> torch.Tensor:
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with _device(x):
        return resample.transform_forward(x, index.contiguous(), mats.contiguous(), exact, padding, interpolation, out)


def transform_backward(grad, x, index, mats, exact, padding, interpolation, need_x=True, need_weights=True):
    """(grad_x in x.dtype or None, grad_weights (B, N) in the accumulation dtype or None)."""
    if need_x and _deterministic_fallback(exact, padding):
        gx, _ = ref.transform_backward_ref(grad, x, index, mats, exact, padding, interpolation, True, False)
        gx = gx.to(x.dtype)
        if not need_weights:
            return gx, None
        need_x = False
    else:
        gx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else None
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    gw = torch.empty((x.shape[0], mats.shape[0]), dtype=acc, device=x.device) if need_weights else None
    with _device(x):
        resample.transform_backward(grad, x, index.contiguous(), mats.contiguous(), exact, padding, interpolation, gx if need_x else None, gw)
    return gx, gw


def select(vectors, reference, beta, score, straight_through, gumbel_noise, tau, out=None) -> ref.Selection:
    """Forward values only; the straight-through one-hot's value is the hard one-hot."""
    with _device(vectors):
        sel, _ = scores.scores_forward(vectors, reference, beta, score == "cosine", gumbel_noise, tau, out=out)
    return ref.Selection(*sel)


def select_backward(grad_scores, grad_probs, grad_onehot, vectors, reference, probs, beta, score, straight_through, gumbel, tau):
    scale = beta / tau if gumbel else beta
    with _device(vectors):
        gv, gr = scores.select_backward(vectors, reference, probs, grad_scores, grad_probs, grad_onehot if straight_through else None, scale, score == "cosine")
    return gv, gr.to(reference.dtype)


def contrastive_loss(vectors, kind) -> torch.Tensor:
    with _device(vectors):
        _, per_sample = scores.scores_forward(vectors, None, contrastive=kind)
    return per_sample.mean()


def contrastive_loss_backward(grad, vectors, kind) -> torch.Tensor:
    with _device(vectors):
        return scores.contrastive_backward(grad.reshape(()), vectors, kind)
