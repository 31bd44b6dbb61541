"""The Triton side of :mod:`canon.ops`: allocate outputs, pick the kernel variant, launch.

Plain functions without autograd (:mod:`canon.ops` wires forward and backward together).
Every function reads its inputs through their strides (no copies) and never synchronises
with the host. Forward functions accept preallocated outputs (tests poison them with NaN).

Determinism: every backward here is deterministic except the adjoint of border/reflection
padded resampling, which scatters with atomics (see
``canon.kernels.resample.orbit_backward_scatter_kernel`` for why); :mod:`canon.ops` sends
that case to the reference under ``torch.use_deterministic_algorithms(True)``.
"""

from __future__ import annotations

import contextlib

import torch

from canon.kernels import resample
from canon.kernels import select as select_k
from canon.numerics import acc_dtype, orbit_empty
from canon.types import Selection

__all__ = [
    "orbit",
    "orbit_backward",
    "transform",
    "transform_backward",
    "select",
    "select_backward",
    "contrastive_loss",
    "contrastive_loss_backward",
    "select_transform",
]

PRIOR_CODES = {"none": select_k.PRIOR_NONE, "identity": select_k.PRIOR_IDENTITY, "target": select_k.PRIOR_TARGET}


def _device(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def orbit(
    x, mats, pull, exact, aligned, size, padding, interpolation, out_dtype=None, channels_last=False, out=None,
    aa_norm=None, aa_taps=0, fam=None,
) -> torch.Tensor:  # fmt: skip
    """Views; antialiased (``aa_norm``, ``aa_taps`` from ``canon.geometry.antialias_tables``) when given;
    ``fam``: the views' quarter-turn families (``ViewTables.fam``), used where the kernels' switch allows."""
    B, C = x.shape[:2]
    h, w = size
    if out is None:
        out = orbit_empty(B, mats.shape[0], C, h, w, out_dtype or x.dtype, x.device, channels_last)
    with _device(x):
        if aa_norm is not None:
            return resample.orbit_antialias_forward(x, mats, pull, aa_norm, aa_taps, (h, w), padding, out)
        return resample.orbit_forward(x, mats, exact, aligned, (h, w), padding, interpolation, out, fam=fam)


def orbit_backward(
    grad, mats, pull, exact, aligned, in_hw, padding, interpolation, x_dtype, out=None, aa_norm=None, aa_back_taps=0
) -> torch.Tensor:
    """Adjoint of :func:`orbit`; antialiased views only with zero padding (the others are a scatter: the
    reference's)."""
    B, N, C = grad.shape[:3]
    if out is None:
        out = torch.empty((B, C, *in_hw), dtype=x_dtype, device=grad.device)
    with _device(grad):
        if aa_norm is not None:
            return resample.orbit_antialias_backward(grad, mats, pull, aa_norm, aa_back_taps, tuple(in_hw), out)
        return resample.orbit_backward(grad, mats, pull, exact, aligned, tuple(in_hw), padding, interpolation, out)


def transform(x, index, mats, exact, aligned, padding, interpolation, chan_perm=None, out=None) -> torch.Tensor:
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with _device(x):
        return resample.transform_forward(x, index, mats, exact, aligned, padding, interpolation, out, chan_perm)


def transform_backward(
    grad,
    x,
    index,
    mats,
    pull,
    exact,
    aligned,
    padding,
    interpolation,
    need_x=True,
    need_weights=True,
    chan_perm=None,
    chan_inv=None,
    fam=None,
):
    """(grad_x in x.dtype or None, grad_weights (B, N) in the accumulation dtype or None); ``fam``: the
    tables' quarter-turn families, used for the inner products where the kernels' switch allows."""
    gx = gw = None
    if need_x:
        gx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if need_weights:
        gw = torch.empty((x.shape[0], mats.shape[0]), dtype=acc_dtype(x.dtype), device=x.device)
    if need_x or need_weights:
        with _device(x):
            resample.transform_backward(
                grad,
                x,
                index,
                mats,
                pull,
                exact,
                aligned,
                padding,
                interpolation,
                gx if need_x else None,
                gw,
                chan_perm,
                chan_inv,
                fam,
            )
    return gx, gw


def select(
    vectors,
    reference,
    beta,
    score,
    gumbel_noise,
    tau,
    contrastive="none",
    prior="none",
    target=None,
    prior_beta=1.0,
    out=None,
):
    """Forward values (the straight-through one-hot's value is the hard one-hot) and, when asked,
    the per-sample losses (2, B): row 0 contrastive, row 1 prior."""
    with _device(vectors):
        sel, losses = select_k.select_forward(
            vectors, reference, beta, score == "cosine", gumbel_noise, tau,
            contrastive=contrastive, prior=PRIOR_CODES[prior], target=target,
            prior_beta=prior_beta, out=out,
        )  # fmt: skip
    return Selection(*sel), losses


def select_backward(
    grad_scores, grad_probs, grad_onehot, grad_losses, vectors, reference, probs, beta, score, straight_through,
    gumbel_noise, tau,
    contrastive="none", prior="none", target=None, prior_beta=1.0,
):  # fmt: skip
    scale = beta / tau if gumbel_noise is not None else beta  # d logits / d scores
    with _device(vectors):
        gv, gr = select_k.select_backward(
            grad_scores, grad_probs, grad_onehot if straight_through else None, grad_losses, vectors, reference, probs,
            scale, score == "cosine",
            contrastive=contrastive, prior=PRIOR_CODES[prior], target=target,
            prior_beta=prior_beta,
        )  # fmt: skip
    return gv, gr.to(reference.dtype)


def contrastive_loss(vectors, kind) -> torch.Tensor:
    """Per-sample losses (B,)."""
    with _device(vectors):
        _, losses = select_k.select_forward(vectors, None, contrastive=kind)
    return losses[0]


def contrastive_loss_backward(grad, vectors, kind) -> torch.Tensor:
    """Gradient (B, N, D) of the batch mean, given its 0-d gradient ``grad`` (read on the device)."""
    grad_losses = grad.reshape(1).expand(2)
    with _device(vectors):
        gv, _ = select_k.select_backward(None, None, None, grad_losses, vectors, None, None, contrastive=kind)
    return gv


def select_transform(
    vectors, reference, x, mats, exact, aligned, beta, score, padding, interpolation, out=None, sel_out=None
):
    """Eval canonicalization in one launch: (canonical images, Selection)."""
    B, N, _ = vectors.shape
    acc = acc_dtype(vectors.dtype)
    dev = vectors.device
    if sel_out is None:
        sel_out = (
            torch.empty((B, N), dtype=acc, device=dev), torch.empty((B, N), dtype=acc, device=dev),
            torch.empty((B,), dtype=torch.int64, device=dev), torch.empty((B, N), dtype=acc, device=dev),
        )  # fmt: skip
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with _device(x):
        resample.select_transform_forward(
            vectors, reference, x, mats, exact, aligned, beta, score == "cosine", padding, interpolation, out, sel_out
        )
    return out, Selection(*sel_out)
