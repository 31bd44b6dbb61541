"""Every ``canon::*`` op written with aten ops only: what exported and traced graphs contain.

``torch.export`` (and so ``torch.onnx.export``, Lightning's ``to_onnx``, AOTInductor, ExecuTorch)
and ``torch.jit.trace`` cannot read the registered custom ops, so while one of them traces,
:mod:`canon.ops` emits these functions instead; :func:`canon.export.decompositions` maps the
registered ops to them for programs that were exported with the ops inside.

What the graph computes: views and canonical images sample with the reference's tap formula
(:func:`canon.reference.sample_coords` and its gathers): quarter turns and flips are exact pixel
gathers, other angles bilinear (or nearest) taps with ``zeros``, ``border`` or ``reflection``
padding, all as ONNX ``Gather``/``Where`` nodes (no ``GridSample``); the eager reference samples
non-exact views with ``grid_sample``, and the two agree to float32 rounding (about 1e-6).
Selection is the reference's cosine/dot score and ``argmax`` (ties to the lowest index, as ONNX
``ArgMax`` with ``select_last_index=0``), so for exact groups the exported model keeps
``canon(T_g x) == canon(x)`` bit for bit. No branch depends on tensor values, so the functions
trace with symbolic (batch) sizes.

Gradients are autograd's of these formulas, and they are the ops' own: the straight-through
one-hot (``hard + p − stopgrad(p)``) and the mixture straight-through rule of the transform
(docs/spec.md §3.5: the weights get ``⟨∂L/∂out, T_g x⟩``, ``x`` the adjoint of the chosen
transform only), so a graph exported for training trains as the eager ops do. The ``*_backward``
functions (graphs that hold a backward pass) are the reference's backward formulas.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from canon import reference as ref

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


def _resample(src, mats, exact: bool, out_hw: tuple[int, int], padding: str, interpolation: str, per_sample: bool):
    """``src`` (B, C, H, W) sampled through matrices by the reference's tap formula.

    All N matrices for every image → (B, C, N, h·w), or one matrix per image (``per_sample``,
    mats (B, 2, 3)) → (B, C, h·w).
    """
    B, C, H, W = src.shape
    h, w = out_hw
    u, v = ref.sample_coords(mats, h, w)
    flat = src.reshape(B, C, H * W)
    if per_sample:
        return ref._gather_taps(flat, u, v, H, W, padding, interpolation, exact)
    return ref._gather_taps(flat, u.reshape(-1), v.reshape(-1), H, W, padding, interpolation, exact).reshape(
        B, C, -1, h * w
    )


def orbit(
    x, mats, pull, exact, aligned, h, w, padding, interpolation, out_dtype, channels_last,
    aa_norm=None, aa_taps=0, aa_back_taps=0,
):  # fmt: skip
    if aa_norm is not None:  # antialiased views: the reference's formula is aten ops already
        return ref.orbit_antialias_ref(x, mats, pull, aa_norm, aa_taps, (h, w), padding, out_dtype, channels_last)
    B, C = x.shape[:2]
    views = _resample(x.to(ref.acc_dtype(x.dtype)), mats, exact, (h, w), padding, interpolation, per_sample=False)
    views = views.reshape(B, C, -1, h, w).transpose(1, 2).to(out_dtype or x.dtype)  # (B, N, C, h, w)
    if channels_last:
        return views.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return views.contiguous()


# The backward ops' last argument, ``backend`` (the forward's), is ignored here: a decomposition is
# the plain-PyTorch reference whatever backend traced it.
def orbit_backward(
    grad, mats, pull, exact, aligned, H, W, padding, interpolation, x_dtype,
    aa_norm=None, aa_taps=0, aa_back_taps=0, backend=None,
):  # fmt: skip
    if aa_norm is not None:
        return ref.orbit_antialias_backward_ref(grad, mats, pull, aa_norm, aa_taps, (H, W), padding, x_dtype)
    return ref.orbit_backward_ref(grad, mats, exact, (H, W), padding, interpolation, x_dtype)


def transform(x, weights, index, mats, pull, exact, aligned, padding, interpolation, chan_perm, chan_inv):
    if chan_perm is not None:
        x = ref.permute_channels_ref(x, index, chan_perm)
    cdt = ref.acc_dtype(x.dtype)
    hw = (x.shape[-2], x.shape[-1])
    out = _resample(x.to(cdt), mats[index], exact, hw, padding, interpolation, per_sample=True).reshape(x.shape)
    if weights is not None and weights.requires_grad:
        # mixture straight-through: the value stays T_{index} x; the weights get <∂L/∂out, T_g x> and x
        # nothing more than the chosen transform's adjoint (every view of a detached x)
        views = orbit(x.detach(), mats, None, exact, False, *hw, padding, interpolation, cdt, False)
        mix = torch.einsum("bn,bnchw->bchw", weights.to(cdt), views)
        out = out + (mix - mix.detach())
    return out.to(x.dtype)


def transform_backward(
    grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_weights, chan_perm, chan_inv,
    backend=None,
):  # fmt: skip
    gx, gw = ref.transform_backward_ref(
        grad, x, index, mats, exact, padding, interpolation, need_x, need_weights, chan_perm
    )
    gx = gx.to(x.dtype) if gx is not None else x.new_empty((0,))
    gw = gw if gw is not None else x.new_empty((0,), dtype=ref.acc_dtype(x.dtype))
    return gx, gw


def select(
    vectors, reference, beta, score, straight_through, gumbel_noise, tau, contrastive, prior, target, prior_beta
):
    sel = ref.select_ref(vectors, reference, beta, score, straight_through, gumbel_noise, tau)
    if contrastive == "none" and prior == "none":
        return (*sel, vectors.new_empty((0,), dtype=ref.acc_dtype(vectors.dtype)))
    zero = sel.scores.new_zeros(())
    cl = ref.contrastive_loss_ref(vectors, contrastive).to(zero.dtype) if contrastive != "none" else zero
    tgt = target if target is not None else torch.zeros_like(sel.index)
    pl = ref.prior_loss_ref(sel.scores, tgt, prior_beta).to(zero.dtype) if prior != "none" else zero
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
        gumbel_noise, tau,
        None if contrastive == "none" else contrastive, prior != "none", target, prior_beta,
    )  # fmt: skip


def contrastive_loss(vectors, kind):
    return ref.contrastive_loss_ref(vectors, kind)


def contrastive_loss_backward(grad, vectors, kind, backend=None):
    return ref.contrastive_loss_backward_ref(grad, vectors, kind)


def select_transform(vectors, reference, x, mats, pull, exact, aligned, beta, score, padding, interpolation):
    sel = ref.select_ref(vectors, reference, beta, score, False)
    index = sel.index.detach()  # a hard choice: only x receives a gradient
    xc = transform(x, None, index, mats, pull, exact, aligned, padding, interpolation, None, None)
    return (xc, sel.scores.detach(), sel.probs.detach(), index, sel.onehot)


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
