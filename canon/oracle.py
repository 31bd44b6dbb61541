"""The oracle: every op of ``canon`` written as plainly as PyTorch allows, one function per op.

Every backend (the Triton kernels, :mod:`canon.triton_ops`; the tuned CPU backend,
:mod:`canon.reference`) is tested against these functions, and exported graphs hold them
(:mod:`canon.decompositions`). They are slow on purpose: no caches, no plans, no memory reuse,
no thread tuning, nothing that a speed-up could get wrong. Gradients are autograd's of these
formulas; the two rules that are not plain calculus are written as such (the straight-through
one-hot ``hard + p − stopgrad(p)``, and the transform's mixture straight-through gradient of
docs/spec.md §3.5).

Sampling follows ``torch.nn.functional.grid_sample(align_corners=False)``: pixel centres at
integer coordinates; output pixel (i, j) of a view with matrix ``m`` (2, 3) reads input
coordinates ``u = (m00·j + m01·i) + m02``, ``v = (m10·j + m11·i) + m12`` in float32 (as the
kernels compute them); ``border`` padding clamps them, ``reflection`` mirrors them about the outer
pixel edges; then a pixel outside the input reads 0. ``nearest`` rounds half to even; views that
permute pixels (quarter turns and flips at unchanged scale, in an ``exact`` table or among the
bilinear views of C8) read one pixel per output pixel, other bilinear views four. Values
accumulate in :func:`canon.numerics.acc_dtype` and are cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from canon.geometry import antialias_window
from canon.numerics import acc_dtype, sample_coords
from canon.types import Selection

__all__ = [
    "sample_coords",
    "permutes_pixels",
    "orbit",
    "orbit_antialias",
    "transform",
    "permute_channels",
    "scores",
    "select",
    "contrastive_loss",
    "prior_loss",
    "select_losses",
    "select_transform",
]

EPS = 1e-8  # clamp of the norms in the cosine score and the normalized contrastive loss


# ============================================================================= sampling
def _mirror(x: torch.Tensor, size: int) -> torch.Tensor:
    """Reflection padding: mirror about -0.5 and size - 0.5 until inside, then clip."""
    if size == 1:
        return torch.zeros_like(x)
    y = (x + 0.5).abs()
    flips = torch.floor(y / size)
    extra = y - flips * size
    y = torch.where(torch.remainder(flips, 2) == 0, extra - 0.5, size - extra - 0.5)
    return y.clamp(0, size - 1)


def _pad(u: torch.Tensor, v: torch.Tensor, H: int, W: int, padding: str):
    if padding == "border":
        return u.clamp(0, W - 1), v.clamp(0, H - 1)
    if padding == "reflection":
        return _mirror(u, W), _mirror(v, H)
    return u, v


def _round_half_even(x: torch.Tensor) -> torch.Tensor:
    r = torch.floor(x + 0.5)
    tie = (r - x) == 0.5
    return torch.where(tie & (torch.remainder(r, 2) != 0), r - 1, r)


def _pixels(flat: torch.Tensor, qu: torch.Tensor, qv: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``flat`` (B, C, H·W) at integer coordinates ``qu``, ``qv`` ((P,) shared or (B, P) per image) →
    (B, C, P); 0 outside the input (a NaN outside does not leak in)."""
    B, C, _ = flat.shape
    inside = (qu >= 0) & (qu <= W - 1) & (qv >= 0) & (qv <= H - 1)
    index = (qv.clamp(0, H - 1) * W + qu.clamp(0, W - 1)).long()
    if index.dim() == 1:
        index, inside = index.expand(B, -1), inside.expand(B, -1)
    values = torch.gather(flat, 2, index[:, None, :].expand(B, C, index.shape[-1]))
    return torch.where(inside[:, None, :], values, torch.zeros((), dtype=flat.dtype, device=flat.device))


def permutes_pixels(mats: torch.Tensor) -> torch.Tensor:
    """(…,) bool: which matrices (…, 2, 3) map pixel centres onto pixel centres (entries of the linear part
    in {0, ±1}, an integer translation): views that are permutations of pixels and read one pixel each."""
    lin, shift = mats[..., :2], mats[..., 2]
    return ((lin == 0) | (lin.abs() == 1)).all(-1).all(-1) & (shift == shift.round()).all(-1)


def _sample(flat, u, v, H: int, W: int, exact, padding: str, interpolation: str) -> torch.Tensor:
    """``flat`` (B, C, H·W) sampled at coordinates ``u``, ``v`` ((P,) or (B, P)) → (B, C, P). ``exact``: True
    (every point reads one pixel), or a bool tensor broadcasting against ``u`` (the points that do)."""
    u, v = _pad(u, v, H, W, padding)
    if exact is True:
        return _pixels(flat, u, v, H, W)
    if interpolation == "nearest":
        return _pixels(flat, _round_half_even(u), _round_half_even(v), H, W)
    one_pixel = _pixels(flat, u, v, H, W)  # right where the coordinates are integers
    x0, y0 = torch.floor(u), torch.floor(v)
    fx, fy = u - x0, v - y0
    out = None
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            term = _pixels(flat, x0 + dx, y0 + dy, H, W) * (wx * wy).to(flat.dtype)[..., None, :]
            out = term if out is None else out + term
    # a view that permutes pixels reads one pixel, bilinear or not (adding empty taps would turn -0.0 into +0.0)
    return torch.where(exact[..., None, :], one_pixel, out)


# ============================================================================= resampling ops
def orbit(
    x: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    size: tuple[int, int],
    padding: str = "zeros",
    interpolation: str = "bilinear",
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """All views ``(B, N, C, h, w)`` of ``x`` (B, C, H, W) through matrices ``mats`` (N, 2, 3)."""
    B, C, H, W = x.shape
    h, w = size
    u, v = sample_coords(mats, h, w)  # (N, h·w)
    flat = x.to(acc_dtype(x.dtype)).reshape(B, C, H * W)
    one_pixel = True if exact else permutes_pixels(mats)[:, None].expand(-1, h * w).reshape(-1)
    views = _sample(flat, u.reshape(-1), v.reshape(-1), H, W, one_pixel, padding, interpolation)
    views = views.reshape(B, C, -1, h, w).transpose(1, 2).to(out_dtype or x.dtype)
    return _layout(views, channels_last)


def _layout(views: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last:
        return views.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return views.contiguous()


def orbit_antialias(
    x: torch.Tensor,
    mats: torch.Tensor,
    pull: torch.Tensor,
    norm: torch.Tensor,
    taps: int,
    size: tuple[int, int],
    padding: str = "zeros",
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Antialiased views ``(B, N, C, h, w)``: every output pixel is the sum over the window of input pixels
    (:func:`canon.geometry.antialias_window`) of pixel × filter weight, divided by ``norm`` (N, h, w), the
    weights' sum over the pixel lattice; pixels outside the input take the padding's value."""
    B, C, H, W = x.shape
    h, w = size
    N = mats.shape[0]
    cdt = acc_dtype(x.dtype)
    flat = x.to(cdt).reshape(B, C, H * W)
    acc = None
    for qu, qv, weight in antialias_window(mats.to(torch.float32), pull.to(torch.float32), h, w, taps):
        qu, qv = _pad(qu, qv, H, W, padding)
        term = _pixels(flat, qu.reshape(-1), qv.reshape(-1), H, W) * weight.reshape(-1).to(cdt)
        acc = term if acc is None else acc + term
    views = acc.reshape(B, C, N, h * w) / norm.reshape(1, 1, N, h * w).to(cdt)
    return _layout(views.reshape(B, C, N, h, w).transpose(1, 2).to(out_dtype or x.dtype), channels_last)


def permute_channels(y: torch.Tensor, index: torch.Tensor, chan_perm: torch.Tensor) -> torch.Tensor:
    """Channels grouped (K, N'): output channel ``k·N' + h`` is input channel ``k·N' + chan_perm[index[b], h]``."""
    B, C, H, W = y.shape
    n = chan_perm.shape[1]
    perm = chan_perm[index][:, None, :, None, None].expand(B, C // n, n, H, W)
    return torch.gather(y.reshape(B, C // n, n, H, W), 2, perm).reshape(B, C, H, W)


def transform(
    x: torch.Tensor,
    weights: torch.Tensor | None,
    index: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    padding: str = "zeros",
    interpolation: str = "bilinear",
    chan_perm: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T_{index[b]} x[b]`` at the input's size (matrices ``mats`` (N, 2, 3)), after the channel permutation
    ``chan_perm`` (N, N') by the chosen element when given (the regular representation).

    Mixture straight-through (docs/spec.md §3.5): the value is the chosen transform; ``weights`` (B, N)
    get ``⟨∂L/∂out[b], T_g x[b]⟩`` for every g and ``x`` only the adjoint of the chosen transform.
    """
    if chan_perm is not None:
        x = permute_channels(x, index, chan_perm)
    B, C, H, W = x.shape
    cdt = acc_dtype(x.dtype)
    u, v = sample_coords(mats[index], H, W)  # (B, H·W)
    one_pixel = True if exact else permutes_pixels(mats[index])[:, None].expand(-1, H * W)
    out = _sample(x.to(cdt).reshape(B, C, H * W), u, v, H, W, one_pixel, padding, interpolation).reshape(B, C, H, W)
    if weights is not None and weights.requires_grad:
        views = orbit(x.detach(), mats, exact, (H, W), padding, interpolation, cdt)  # every T_g x, no gradient to x
        mix = torch.einsum("bn,bnchw->bchw", weights.to(cdt), views)
        out = out + (mix - mix.detach())
    return out.to(x.dtype)


# ============================================================================= selection and losses
def scores(vectors: torch.Tensor, reference: torch.Tensor, score: str = "cosine") -> torch.Tensor:
    """(B, N) score of every vector (B, N, D) against the reference (D,): cosine (norms clamped at
    :data:`EPS`) or dot product, in the accumulation dtype."""
    cdt = acc_dtype(vectors.dtype)
    v, r = vectors.to(cdt), reference.to(cdt)
    if score == "cosine":
        return F.cosine_similarity(v, r.expand_as(v), dim=-1, eps=EPS)
    return (v * r).sum(-1)


def select(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel_noise: torch.Tensor | None = None,
    tau: float = 1.0,
) -> Selection:
    """Scores, β-softmax (of ``(β·s + noise) / τ`` with Gumbel noise), argmax (ties to the lowest index)
    and the one-hot (straight-through: ``hard + p − stopgrad(p)``)."""
    s = scores(vectors, reference, score)
    logits = beta * s
    if gumbel_noise is not None:
        logits = (logits + gumbel_noise.to(s.dtype)) / tau
    p = torch.softmax(logits, dim=-1)
    index = torch.argmax(logits.detach(), dim=-1)
    hard = F.one_hot(index, s.shape[-1]).to(s.dtype)
    return Selection(s, p, index, hard + (p - p.detach()) if straight_through else hard)


def contrastive_loss(vectors: torch.Tensor, kind: str = "normalized") -> torch.Tensor:
    """Orbit orthogonality loss of ``vectors`` (B, N, D) (docs/spec.md §4): the mean over the batch of the
    mean |⟨v_g, v_h⟩| over pairs g ≠ h, of unit vectors (``normalized``; 0 when N < 2) or raw ones
    (``raw``, averaged over all N² entries)."""
    v = vectors.to(acc_dtype(vectors.dtype))
    B, N, _ = v.shape
    off_diagonal = 1 - torch.eye(N, dtype=v.dtype, device=v.device)
    if kind == "raw":
        return ((v @ v.transpose(1, 2)) * off_diagonal).abs().mean()
    if N < 2:
        return v.sum() * 0
    vn = v / v.norm(dim=-1, keepdim=True).clamp_min(EPS)
    gram = (vn @ vn.transpose(1, 2)).abs() * off_diagonal
    return (gram.sum((1, 2)) / (N * (N - 1))).mean()


def prior_loss(scores: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Cross-entropy of ``beta · scores`` (B, N) against element indices ``target`` (B,)."""
    return F.cross_entropy(beta * scores.to(acc_dtype(scores.dtype)), target)


def select_losses(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel_noise: torch.Tensor | None = None,
    tau: float = 1.0,
    contrastive: str = "normalized",
    target: torch.Tensor | None = None,
    prior_beta: float = 1.0,
) -> tuple[Selection, torch.Tensor, torch.Tensor]:
    """:func:`select` and both losses of the same vectors: (selection, contrastive, prior);
    ``target`` None means the identity (element 0) for every sample."""
    sel = select(vectors, reference, beta, score, straight_through, gumbel_noise, tau)
    if target is None:
        target = torch.zeros(vectors.shape[0], dtype=torch.int64, device=vectors.device)
    return sel, contrastive_loss(vectors, contrastive), prior_loss(sel.scores, target, prior_beta)


def select_transform(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    x: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    beta: float = 1.0,
    score: str = "cosine",
    padding: str = "zeros",
    interpolation: str = "bilinear",
) -> tuple[torch.Tensor, Selection]:
    """Eval canonicalization: the hard selection and the chosen transform of ``x`` (gradient to ``x`` only)."""
    sel = select(vectors, reference, beta, score, straight_through=False)
    sel = Selection(sel.scores.detach(), sel.probs.detach(), sel.index, sel.onehot)
    return transform(x, None, sel.index, mats, exact, padding, interpolation), sel
