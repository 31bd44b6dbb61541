"""Tensor-level ops with backend dispatch: the seam between ``canon`` and ``kernels``.

Each op takes tensors, view matrices and plain settings (no groups) and runs either
the plain-PyTorch reference (:mod:`canon.reference`) or the Triton kernels, as
chosen by :func:`canon.backend.resolve_backend`. Inputs are validated one layer up,
in :mod:`canon.functional`.
"""

from __future__ import annotations

import torch

from canon import reference as ref
from canon.backend import resolve_backend

__all__ = ["orbit", "transform", "select", "contrastive_loss"]


def _triton():
    from canon import triton_ops  # imported lazily: triton is optional on the CPU path

    return triton_ops


def orbit(x, mats, exact, size, padding, interpolation, out_dtype=None, channels_last=False) -> torch.Tensor:
    if resolve_backend(x) == "triton":
        return _triton().orbit(x, mats, exact, size, padding, interpolation, out_dtype, channels_last)
    return ref.orbit_ref(x, mats, exact, size, padding, interpolation, out_dtype, channels_last)


def transform(x, weights, index, mats, exact, padding, interpolation) -> torch.Tensor:
    if resolve_backend(x) == "triton":
        return _triton().transform(x, weights, index, mats, exact, padding, interpolation)
    return ref.transform_ref(x, weights, index, mats, exact, padding, interpolation)


def select(vectors, reference, beta, score, straight_through, gumbel_noise, tau) -> ref.Selection:
    if resolve_backend(vectors) == "triton":
        return _triton().select(vectors, reference, beta, score, straight_through, gumbel_noise, tau)
    return ref.select_ref(vectors, reference, beta, score, straight_through, gumbel_noise, tau)


def contrastive_loss(vectors, kind) -> torch.Tensor:
    if resolve_backend(vectors) == "triton":
        return _triton().contrastive_loss(vectors, kind)
    return ref.contrastive_loss_ref(vectors, kind)
