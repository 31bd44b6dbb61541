"""Plain-PyTorch reference of every op: the CPU path and the oracle for the Triton kernels.

Knows tensors and view matrices (see :mod:`canon.geometry`), not groups. Sampling
follows ``torch.nn.functional.grid_sample(align_corners=False)``: pixel centres at
integer coordinates, ``reflection`` mirrors about the outer pixel edges, ``nearest``
rounds half to even. Coordinates are computed in float32 exactly as the kernels do
(``(m0·j + m1·i) + m2``), values are accumulated in float32 (float64 for float64
input) and cast back to the output dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "sample_coords",
    "orbit_ref",
    "transform_ref",
    "select_ref",
    "contrastive_loss_ref",
    "prior_loss_ref",
    "Selection",
]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def sample_coords(mats: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates ``(u, v)``, each ``(..., h·w)`` float32, for matrices ``(..., 2, 3)``."""
    dev = mats.device
    j = torch.arange(w, device=dev, dtype=torch.float32).repeat(h)
    i = torch.arange(h, device=dev, dtype=torch.float32).repeat_interleave(w)
    m = mats.to(torch.float32)[..., None]  # (..., 2, 3, 1)
    u = (m[..., 0, 0, :] * j + m[..., 0, 1, :] * i) + m[..., 0, 2, :]
    v = (m[..., 1, 0, :] * j + m[..., 1, 1, :] * i) + m[..., 1, 2, :]
    return u, v


def _reflect(x: torch.Tensor, size: int) -> torch.Tensor:
    # Mirror about -0.5 and size-0.5 (grid_sample, align_corners=False), then clip.
    if size == 1:
        return torch.zeros_like(x)
    y = (x + 0.5).abs()
    flips = torch.floor(y / size)
    extra = y - flips * size
    even = torch.remainder(flips, 2) == 0
    y = torch.where(even, extra - 0.5, size - extra - 0.5)
    return y.clamp(0, size - 1)


def _round_half_even(x: torch.Tensor) -> torch.Tensor:
    r = torch.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = torch.remainder(r, 2) != 0
    return torch.where(tie & odd, r - 1, r)


def _taps(u: torch.Tensor, v: torch.Tensor, H: int, W: int, padding: str, interpolation: str, exact: bool):
    """Per tap: flat source index (int64, clamped), weight (float32) and in-range mask.

    Out-of-range taps read nothing (a NaN at the border does not leak outwards).
    """
    if padding == "border":
        u, v = u.clamp(0, W - 1), v.clamp(0, H - 1)
    elif padding == "reflection":
        u, v = _reflect(u, W), _reflect(v, H)
    if exact or interpolation == "nearest":
        ui, vi = (u, v) if exact else (_round_half_even(u), _round_half_even(v))
        ok = (ui >= 0) & (ui <= W - 1) & (vi >= 0) & (vi <= H - 1)
        idx = (vi.clamp(0, H - 1) * W + ui.clamp(0, W - 1)).long()
        return [(idx, torch.ones_like(u), ok)]
    x0, y0 = torch.floor(u), torch.floor(v)
    fx, fy = u - x0, v - y0
    taps = []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xx, yy = x0 + dx, y0 + dy
            ok = (xx >= 0) & (xx <= W - 1) & (yy >= 0) & (yy <= H - 1)
            idx = (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)).long()
            taps.append((idx, wx * wy, ok))
    return taps


def orbit_ref(
    x: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    size: tuple[int, int],
    padding: str = "zeros",
    interpolation: str = "bilinear",
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """All views ``(B, N, C, h, w)`` of ``x`` (B, C, H, W) through matrices ``(N, 2, 3)``.

    One gather per tap over all views at once (no loop over elements). Differentiable
    in ``x`` through autograd.
    """
    B, C, H, W = x.shape
    N = mats.shape[0]
    h, w = size
    cdt = _compute_dtype(x.dtype)
    u, v = sample_coords(mats, h, w)  # (N, h*w)
    taps = _taps(u.reshape(-1), v.reshape(-1), H, W, padding, interpolation, exact)
    src = x.reshape(B, C, H * W).to(cdt)
    out = None
    zero = torch.zeros((), dtype=cdt, device=x.device)
    for idx, wt, ok in taps:
        val = src.index_select(2, idx)
        if len(taps) > 1:
            val = val * wt.to(cdt)
        val = torch.where(ok, val, zero)
        out = val if out is None else out + val
    out = out.reshape(B, C, N, h, w).transpose(1, 2)  # (B, N, C, h, w)
    dt = out_dtype or x.dtype
    if channels_last:
        return out.permute(0, 1, 3, 4, 2).to(dt).contiguous().permute(0, 1, 4, 2, 3)
    return out.to(dt).contiguous()


def _sample_per_sample(x: torch.Tensor, mats: torch.Tensor, exact: bool, padding: str, interpolation: str) -> torch.Tensor:
    """``x`` (B, C, H, W) resampled by one matrix per sample ``mats`` (B, 2, 3), same size."""
    B, C, H, W = x.shape
    u, v = sample_coords(mats, H, W)  # (B, H*W)
    taps = _taps(u, v, H, W, padding, interpolation, exact)
    src = x.reshape(B, C, H * W)
    out = None
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    for idx, wt, ok in taps:
        val = torch.gather(src, 2, idx[:, None, :].expand(B, C, H * W))
        if len(taps) > 1:
            val = val * wt[:, None, :].to(src.dtype)
        val = torch.where(ok[:, None, :], val, zero)
        out = val if out is None else out + val
    return out.reshape(B, C, H, W)


def _sample_per_sample_adjoint(g: torch.Tensor, mats: torch.Tensor, exact: bool, padding: str, interpolation: str) -> torch.Tensor:
    """Adjoint of :func:`_sample_per_sample` (scatter-add of ``g`` to the taps' sources)."""
    B, C, H, W = g.shape
    u, v = sample_coords(mats, H, W)
    taps = _taps(u, v, H, W, padding, interpolation, exact)
    gs = g.reshape(B, C, H * W)
    out = torch.zeros_like(gs)
    for idx, wt, ok in taps:
        contrib = torch.where(ok[:, None, :], gs * wt[:, None, :].to(gs.dtype), torch.zeros((), dtype=gs.dtype, device=gs.device))
        out.scatter_add_(2, idx[:, None, :].expand(B, C, H * W), contrib)
    return out.reshape(B, C, H, W)


class _Transform(torch.autograd.Function):
    """``out[b] = T_{index[b]} x[b]`` with the mixture straight-through gradient (SPEC §3.5)."""

    @staticmethod
    def forward(ctx, x, weights, index, mats, exact, padding, interpolation):
        cdt = _compute_dtype(x.dtype)
        sel = mats[index]
        out = _sample_per_sample(x.to(cdt), sel, exact, padding, interpolation).to(x.dtype)
        ctx.save_for_backward(x, index, mats)
        ctx.cfg = (exact, padding, interpolation)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, index, mats = ctx.saved_tensors
        exact, padding, interpolation = ctx.cfg
        cdt = _compute_dtype(x.dtype)
        g = grad_out.to(cdt)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _sample_per_sample_adjoint(g, mats[index], exact, padding, interpolation).to(x.dtype)
        if ctx.needs_input_grad[1]:
            B, C, H, W = x.shape
            allv = orbit_ref(x.to(cdt), mats, exact, (H, W), padding, interpolation)  # (B, N, C, H, W)
            grad_w = torch.einsum("bnchw,bchw->bn", allv, g)
        return grad_x, grad_w, None, None, None, None, None


def transform_ref(
    x: torch.Tensor,
    weights: torch.Tensor,
    index: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    padding: str = "zeros",
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Resample each sample by its chosen view matrix, gradient to ``weights`` by mixture ST.

    Args:
        x: (B, C, H, W).
        weights: (B, N) the (straight-through) one-hot; only its gradient is used.
        index: (B,) int64 chosen element.
        mats: (N, 2, 3) full-resolution view matrices.
    """
    return _Transform.apply(x, weights, index, mats, exact, padding, interpolation)


class Selection(NamedTuple):
    scores: torch.Tensor
    probs: torch.Tensor
    index: torch.Tensor
    onehot: torch.Tensor


def select_ref(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel_noise: torch.Tensor | None = None,
    tau: float = 1.0,
    eps: float = 1e-8,
) -> Selection:
    """Scores, β-softmax, argmax (ties to lowest index) and (straight-through) one-hot."""
    cdt = _compute_dtype(vectors.dtype)
    v = vectors.to(cdt)
    r = reference.to(cdt)
    if score == "cosine":
        s = F.cosine_similarity(v, r.expand_as(v), dim=-1, eps=eps)
    else:
        s = (v * r).sum(-1)
    logits = beta * s
    if gumbel_noise is not None:
        logits = (logits + gumbel_noise.to(cdt)) / tau
    p = torch.softmax(logits, dim=-1)
    index = torch.argmax(logits.detach(), dim=-1)
    hard = F.one_hot(index, s.shape[-1]).to(cdt)
    onehot = hard + (p - p.detach()) if straight_through else hard
    return Selection(s, p, index, onehot)


def contrastive_loss_ref(vectors: torch.Tensor, kind: str = "normalized", eps: float = 1e-8) -> torch.Tensor:
    """Orbit orthogonality loss of ``vectors`` (B, N, D) (SPEC §4)."""
    v = vectors.to(_compute_dtype(vectors.dtype))
    B, N, _ = v.shape
    if kind == "raw":
        gram = v @ v.transpose(1, 2)
        gram = gram * (1 - torch.eye(N, dtype=v.dtype, device=v.device))
        return gram.abs().mean()
    if N < 2:
        return v.sum() * 0
    vn = v / v.norm(dim=-1, keepdim=True).clamp_min(eps)
    gram = (vn @ vn.transpose(1, 2)).abs()
    off = gram.sum(dim=(1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(-1)
    return (off / (N * (N - 1))).mean()


def prior_loss_ref(scores: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Cross-entropy of ``beta · scores`` (B, N) against element indices ``target`` (B,)."""
    return F.cross_entropy(beta * scores.to(_compute_dtype(scores.dtype)), target)
