"""Every ``canon::*`` op written with aten ops only: what exported and traced graphs contain.

``torch.export`` (and so ``torch.onnx.export``, Lightning's ``to_onnx``, AOTInductor, ExecuTorch)
and ``torch.jit.trace`` cannot read the registered custom ops, so while one of them traces,
:mod:`canon.ops` emits these functions instead; :func:`canon.export.decompositions` maps the
registered ops to them for programs that were exported with the ops inside.

What the graph computes is the oracle's definition of each op (:mod:`canon.oracle`): views and
canonical images sample with its tap formula: quarter turns and flips are exact pixel gathers,
other angles bilinear (or nearest) taps with ``zeros``, ``border`` or ``reflection`` padding, all
as ONNX ``Gather``/``Where`` nodes (no ``GridSample``); the eager CPU backend samples non-exact
views with ``grid_sample``, and the two agree to float32 rounding (about 1e-6). Selection is the
cosine/dot score and ``argmax`` (ties to the lowest index, as ONNX ``ArgMax`` with
``select_last_index=0``), so for exact groups the exported model keeps ``canon(T_g x) == canon(x)``
bit for bit. No branch depends on tensor values, so the functions trace with symbolic (batch) sizes.

Gradients are autograd's of these formulas, and they are the ops' own: the straight-through
one-hot (``hard + p − stopgrad(p)``) and the mixture straight-through rule of the transform
(docs/spec.md §3.5: the weights get ``⟨∂L/∂out, T_g x⟩``, ``x`` the adjoint of the chosen
transform only), so a graph exported for training trains as the eager ops do. The ``*_backward``
functions (graphs that hold a backward pass) are the CPU backend's explicit backward formulas
(:mod:`canon.reference`), which are aten ops too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from canon import oracle
from canon import reference as ref
from canon.numerics import acc_dtype

__all__ = [
    "DECOMPOSITIONS",
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

# Each function takes its registered op's arguments (canon.ops: Orbit.Args, Orbit.Backward, ...) in
# schema order. The backward ops' last argument, ``backend`` (the forward's), is ignored here: a
# decomposition is plain PyTorch whatever backend traced it.


def orbit(
    x, mats, pull, exact, aligned, h, w, padding, interpolation, out_dtype, channels_last,
    aa_norm=None, aa_taps=0, aa_back_taps=0, fam=None,
):  # fmt: skip
    if aa_norm is not None:
        return oracle.orbit_antialias(x, mats, pull, aa_norm, aa_taps, (h, w), padding, out_dtype, channels_last)
    return oracle.orbit(x, mats, exact, (h, w), padding, interpolation, out_dtype, channels_last)


def orbit_backward(
    grad, mats, pull, exact, aligned, H, W, padding, interpolation, x_dtype,
    aa_norm=None, aa_taps=0, aa_back_taps=0, backend=None,
):  # fmt: skip
    if aa_norm is not None:
        return ref.orbit_antialias_backward_ref(grad, mats, pull, aa_norm, aa_taps, (H, W), padding, x_dtype)
    return ref.orbit_backward_ref(grad, mats, exact, (H, W), padding, interpolation, x_dtype)


def transform(x, weights, index, mats, pull, exact, aligned, padding, interpolation, chan_perm, chan_inv, fam=None):
    return oracle.transform(x, weights, index, mats, exact, padding, interpolation, chan_perm)


def transform_backward(
    grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_weights, chan_perm, chan_inv,
    fam=None, backend=None,
):  # fmt: skip
    gx, gw = ref.transform_backward_ref(
        grad, x, index, mats, exact, padding, interpolation, need_x, need_weights, chan_perm
    )
    gx = gx.to(x.dtype) if gx is not None else x.new_empty((0,))
    gw = gw if gw is not None else x.new_empty((0,), dtype=acc_dtype(x.dtype))
    return gx, gw


def select(
    vectors, reference, beta, score, straight_through, gumbel_noise, tau, contrastive, prior, target, prior_beta
):
    sel = oracle.select(vectors, reference, beta, score, straight_through, gumbel_noise, tau)
    if contrastive == "none" and prior == "none":
        return (*sel, vectors.new_empty((0,), dtype=acc_dtype(vectors.dtype)))
    zero = sel.scores.new_zeros(())
    cl = oracle.contrastive_loss(vectors, contrastive).to(zero.dtype) if contrastive != "none" else zero
    tgt = target if target is not None else torch.zeros_like(sel.index)
    pl = oracle.prior_loss(sel.scores, tgt, prior_beta).to(zero.dtype) if prior != "none" else zero
    return (*sel, torch.stack([cl, pl]))


def select_backward(
    grad_scores, grad_probs, grad_onehot, grad_losses, vectors, reference, probs, beta, score, straight_through,
    gumbel_noise, tau,
    contrastive, prior, target, prior_beta, backend=None,
):  # fmt: skip
    grad_onehot = grad_onehot if straight_through else None
    if grad_losses is None or (contrastive == "none" and prior == "none"):
        return ref.select_backward_ref(
            grad_scores, grad_probs, grad_onehot, vectors, reference, beta, score, straight_through, gumbel_noise, tau
        )
    return ref.select_losses_backward_ref(
        grad_scores, grad_probs, grad_onehot, grad_losses, vectors, reference, beta, score, straight_through,
        gumbel_noise, tau, contrastive, prior, target, prior_beta,
    )  # fmt: skip


def contrastive_loss(vectors, kind):
    return oracle.contrastive_loss(vectors, kind)


def contrastive_loss_backward(grad, vectors, kind, backend=None):
    return ref.contrastive_loss_backward_ref(grad, vectors, kind)


def select_transform(vectors, reference, x, mats, pull, exact, aligned, beta, score, padding, interpolation):
    xc, sel = oracle.select_transform(vectors, reference, x, mats, exact, beta, score, padding, interpolation)
    return (xc, *sel)


DECOMPOSITIONS: dict[str, Callable] = {
    "orbit": orbit,
    "orbit_backward": orbit_backward,
    "transform": transform,
    "transform_backward": transform_backward,
    "select": select,
    "select_backward": select_backward,
    "contrastive_loss": contrastive_loss,
    "contrastive_loss_backward": contrastive_loss_backward,
    "select_transform": select_transform,
}
