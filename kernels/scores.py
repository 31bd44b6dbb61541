"""Score kernels over orbit vectors (B, N, D): selection (cosine/dot scores, β-softmax, argmax,
one-hot) and the orbit contrastive loss, forward and backward.

One program per sample b reads its (N, D) vectors once in D-blocks. ``SELECT`` and
``GRAM`` switch the two products on independently, so one launch can produce both
(:func:`scores_forward` with both outputs); ``canon.ops`` asks for one at a time
because the public API computes them at different moments. Accumulation is in
``ACC`` (float32, float64 for float64 vectors); norms are clamped at ``eps`` as
``torch.nn.functional.cosine_similarity`` does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "scores_config",
    "scores_forward",
    "select_backward",
    "contrastive_backward",
    "scores_kernel",
    "select_backward_kernel",
    "contrastive_backward_kernel",
]


@triton.jit
def scores_kernel(
    v_ptr,
    r_ptr,
    noise_ptr,  # (B, N) Gumbel noise (HAS_NOISE) else unused
    scores_ptr,  # (B, N) contiguous, ACC
    probs_ptr,
    index_ptr,  # (B,) int64
    onehot_ptr,
    loss_ptr,  # (B,) per-sample contrastive loss, ACC
    sv_b,
    sv_n,
    sv_d,
    sr_d,
    sn_b,
    sn_n,
    N,
    D,
    beta,
    tau,
    eps,
    pair_scale,  # 1 / number of averaged pairs: N(N-1) normalized, N² raw, 0 when N < 2
    COSINE: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    SELECT: tl.constexpr,
    GRAM: tl.constexpr,
    NORMALIZED: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    v_b = v_ptr + b.to(tl.int64) * sv_b
    dot = tl.zeros([BLOCK_N], dtype=ACC)
    vv = tl.zeros([BLOCK_N], dtype=ACC)
    rr = tl.zeros([BLOCK_D], dtype=ACC)
    gram = tl.zeros([BLOCK_N, BLOCK_N], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < D
        vt = tl.load(v_b + n[:, None] * sv_n + d[None, :] * sv_d, mask=nmask[:, None] & dmask[None, :], other=0.0).to(ACC)
        vv += tl.sum(vt * vt, axis=1)
        if SELECT:
            r = tl.load(r_ptr + d * sr_d, mask=dmask, other=0.0).to(ACC)
            dot += tl.sum(vt * r[None, :], axis=1)
            rr += r * r
        if GRAM:
            gram += tl.sum(vt[:, None, :] * vt[None, :, :], axis=2)
    if SELECT:
        if COSINE:
            nv = tl.maximum(tl.sqrt(vv), eps)
            nr = tl.maximum(tl.sqrt(tl.sum(rr, axis=0)), eps)
            s = dot / (nv * nr)
        else:
            s = dot
        logits = beta * s
        if HAS_NOISE:
            noise = tl.load(noise_ptr + b.to(tl.int64) * sn_b + n * sn_n, mask=nmask, other=0.0).to(ACC)
            logits = (logits + noise) / tau
        logits = tl.where(nmask, logits, -float("inf"))
        e = tl.exp(logits - tl.max(logits, axis=0))
        e = tl.where(nmask, e, 0.0)
        p = e / tl.sum(e, axis=0)
        idx = tl.argmax(logits, axis=0, tie_break_left=True)
        row = b.to(tl.int64) * N + n
        tl.store(scores_ptr + row, s, mask=nmask)
        tl.store(probs_ptr + row, p, mask=nmask)
        tl.store(onehot_ptr + row, tl.where(n == idx, 1.0, 0.0).to(onehot_ptr.dtype.element_ty), mask=nmask)
        tl.store(index_ptr + b, idx.to(tl.int64))
    if GRAM:
        if NORMALIZED:
            inv = 1.0 / tl.maximum(tl.sqrt(vv), eps)
            gram = gram * inv[:, None] * inv[None, :]
        off = (n[:, None] != n[None, :]) & nmask[:, None] & nmask[None, :]
        total = tl.sum(tl.sum(tl.where(off, tl.abs(gram), 0.0), axis=1), axis=0)
        tl.store(loss_ptr + b, total * pair_scale)


@triton.jit
def select_backward_kernel(
    v_ptr,
    r_ptr,
    probs_ptr,  # (B, N) contiguous, saved from forward
    gs_ptr,  # grad of scores (B, N) contiguous (HAS_GS)
    gp_ptr,  # grad of probs (HAS_GP)
    gh_ptr,  # grad of the one-hot (HAS_GH; used only when straight-through)
    gv_ptr,  # (B, N, D) contiguous, output in the vectors' dtype
    gr_ptr,  # (B, D) contiguous ACC partial gradients of the reference (summed over b by the launcher)
    sv_b,
    sv_n,
    sv_d,
    sr_d,
    N,
    D,
    logit_scale,  # beta (or beta / tau with Gumbel noise): d logits / d scores
    eps,
    COSINE: tl.constexpr,
    HAS_GS: tl.constexpr,
    HAS_GP: tl.constexpr,
    HAS_GH: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    v_b = v_ptr + b.to(tl.int64) * sv_b
    row = b.to(tl.int64) * N + n
    # d loss / d logits through the softmax (probs and the straight-through one-hot)
    gl = tl.zeros([BLOCK_N], dtype=ACC)
    if HAS_GP:
        gl += tl.load(gp_ptr + row, mask=nmask, other=0.0).to(ACC)
    if HAS_GH:
        gl += tl.load(gh_ptr + row, mask=nmask, other=0.0).to(ACC)
    p = tl.load(probs_ptr + row, mask=nmask, other=0.0).to(ACC)
    gsc = p * (gl - tl.sum(p * gl, axis=0)) * logit_scale
    if HAS_GS:
        gsc += tl.load(gs_ptr + row, mask=nmask, other=0.0).to(ACC)
    if COSINE:
        dot = tl.zeros([BLOCK_N], dtype=ACC)
        vv = tl.zeros([BLOCK_N], dtype=ACC)
        rr = tl.zeros([BLOCK_D], dtype=ACC)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            dmask = d < D
            vt = tl.load(v_b + n[:, None] * sv_n + d[None, :] * sv_d, mask=nmask[:, None] & dmask[None, :], other=0.0).to(ACC)
            r = tl.load(r_ptr + d * sr_d, mask=dmask, other=0.0).to(ACC)
            dot += tl.sum(vt * r[None, :], axis=1)
            vv += tl.sum(vt * vt, axis=1)
            rr += r * r
        nv = tl.maximum(tl.sqrt(vv), eps)
        nr = tl.maximum(tl.sqrt(tl.sum(rr, axis=0)), eps)
        s = dot / (nv * nr)
        # cos = <v, r> / (|v||r|):  d/dv = r/(|v||r|) - cos·v/|v|²,  d/dr = v/(|v||r|) - cos·r/|r|²
        a = gsc / (nv * nr)
        cv = gsc * s / (nv * nv)
        cr = tl.sum(gsc * s, axis=0) / (nr * nr)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < D
        m2 = nmask[:, None] & dmask[None, :]
        vt = tl.load(v_b + n[:, None] * sv_n + d[None, :] * sv_d, mask=m2, other=0.0).to(ACC)
        r = tl.load(r_ptr + d * sr_d, mask=dmask, other=0.0).to(ACC)
        if COSINE:
            gv = a[:, None] * r[None, :] - cv[:, None] * vt
            gr = tl.sum(a[:, None] * vt, axis=0) - cr * r
        else:
            gv = gsc[:, None] * r[None, :]
            gr = tl.sum(gsc[:, None] * vt, axis=0)
        tl.store(gv_ptr + row[:, None] * D + d[None, :], gv.to(gv_ptr.dtype.element_ty), mask=m2)
        tl.store(gr_ptr + b.to(tl.int64) * D + d, gr, mask=dmask)


@triton.jit
def contrastive_backward_kernel(
    v_ptr,
    gloss_ptr,  # 0-d gradient of the (mean) loss, read on the device
    gv_ptr,  # (B, N, D) contiguous, output in the vectors' dtype
    sv_b,
    sv_n,
    sv_d,
    N,
    D,
    eps,
    pair_scale,  # as in scores_kernel, already divided by B (the loss is a mean over b)
    NORMALIZED: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    v_b = v_ptr + b.to(tl.int64) * sv_b
    vv = tl.zeros([BLOCK_N], dtype=ACC)
    gram = tl.zeros([BLOCK_N, BLOCK_N], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        vt = tl.load(v_b + n[:, None] * sv_n + d[None, :] * sv_d, mask=nmask[:, None] & (d < D)[None, :], other=0.0).to(ACC)
        vv += tl.sum(vt * vt, axis=1)
        gram += tl.sum(vt[:, None, :] * vt[None, :, :], axis=2)
    inv = 1.0 / tl.maximum(tl.sqrt(vv), eps)
    if NORMALIZED:
        gram = gram * inv[:, None] * inv[None, :]
    off = (n[:, None] != n[None, :]) & nmask[:, None] & nmask[None, :]
    scale = tl.load(gloss_ptr).to(ACC) * pair_scale
    sgn = tl.where(gram > 0, 1.0, tl.where(gram < 0, -1.0, 0.0))
    # d/dG of sum |G| is sign(G); G symmetric, so d/dV of G = V Vᵀ gives (S + Sᵀ) V = 2 S V.
    S = tl.where(off, sgn, 0.0) * (2.0 * scale)
    if NORMALIZED:
        q = tl.sum(S * gram, axis=1)  # <vn, dVn> per row, from G without another pass over D
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        m2 = nmask[:, None] & (d < D)[None, :]
        vt = tl.load(v_b + n[:, None] * sv_n + d[None, :] * sv_d, mask=m2, other=0.0).to(ACC)
        if NORMALIZED:
            vn = vt * inv[:, None]
            dvn = tl.sum(S[:, :, None] * vn[None, :, :], axis=1)
            gv = (dvn - vn * q[:, None]) * inv[:, None]
        else:
            gv = tl.sum(S[:, :, None] * vt[None, :, :], axis=1)
        tl.store(gv_ptr + (b.to(tl.int64) * N + n)[:, None] * D + d[None, :], gv.to(gv_ptr.dtype.element_ty), mask=m2)


# ----------------------------------------------------------------------------- launchers
def scores_config(N: int, D: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps) for the score kernels, forward and backward.

    The Gram product holds BLOCK_N² · BLOCK_D values; it is kept at 4096 (32 per
    thread at 4 warps) so that no variant spills.
    """
    bn = triton.next_power_of_2(max(int(N), 2))
    bd = max(1, min(triton.next_power_of_2(int(D)), 64, 4096 // (bn * bn)))
    return bn, bd, 4


def _acc(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pair_scale(N: int, kind: str) -> float:
    if kind == "raw":
        return 1.0 / (N * N)
    return 1.0 / (N * (N - 1)) if N > 1 else 0.0


def scores_forward(
    vectors: torch.Tensor,
    reference: torch.Tensor | None,
    beta: float = 1.0,
    cosine: bool = True,
    noise: torch.Tensor | None = None,
    tau: float = 1.0,
    eps: float = 1e-8,
    contrastive: str | None = None,
    out: tuple[torch.Tensor, ...] | None = None,
):
    """One launch over ``vectors`` (B, N, D).

    With ``reference`` (D,): selection outputs ``(scores, probs, index, onehot)``
    ((B, N) in the accumulation dtype, index (B,) int64). With ``contrastive``
    (``"normalized"``/``"raw"``): the per-sample loss (B,). Returns
    ``(selection or None, per_sample_loss or None)``. ``out`` may preallocate the four
    selection tensors (tests poison them).
    """
    B, N, D = vectors.shape
    acc_dt = torch.float64 if vectors.dtype == torch.float64 else torch.float32
    dev = vectors.device
    select = reference is not None
    gram = contrastive is not None
    if select:
        scores, probs, index, onehot = out if out is not None else (
            torch.empty((B, N), dtype=acc_dt, device=dev), torch.empty((B, N), dtype=acc_dt, device=dev),
            torch.empty((B,), dtype=torch.int64, device=dev), torch.empty((B, N), dtype=acc_dt, device=dev),
        )  # fmt: skip
    else:
        scores = probs = onehot = index = vectors
    loss = torch.empty((B,), dtype=acc_dt, device=dev) if gram else vectors
    r = reference if select else vectors
    nz = noise if noise is not None else vectors
    bn, bd, warps = scores_config(N, D)
    scores_kernel[(B,)](
        vectors, r, nz, scores, probs, index, onehot, loss,
        *vectors.stride(), r.stride(0) if select else 0, nz.stride(0), nz.stride(1) if noise is not None else 0,
        N, D, float(beta), float(tau), float(eps), _pair_scale(N, contrastive or "normalized"),
        COSINE=bool(cosine), HAS_NOISE=noise is not None, SELECT=select, GRAM=gram, NORMALIZED=contrastive != "raw",
        ACC=_acc(vectors.dtype), BLOCK_N=bn, BLOCK_D=bd, num_warps=warps,
    )  # fmt: skip
    return ((scores, probs, index, onehot) if select else None), (loss if gram else None)


def select_backward(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    probs: torch.Tensor,
    grad_scores: torch.Tensor | None,
    grad_probs: torch.Tensor | None,
    grad_onehot: torch.Tensor | None,
    logit_scale: float,
    cosine: bool = True,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (vectors (B, N, D), reference (D,)) of the selection; ``grad_onehot`` only
    when straight-through (pass None otherwise). The reference gradient is summed over b
    from per-sample partials in a fixed order (deterministic)."""
    B, N, D = vectors.shape
    acc_dt = torch.float64 if vectors.dtype == torch.float64 else torch.float32
    gv = torch.empty((B, N, D), dtype=vectors.dtype, device=vectors.device)
    gr = torch.empty((B, D), dtype=acc_dt, device=vectors.device)
    gs, gp, gh = (None if t is None else t.contiguous() for t in (grad_scores, grad_probs, grad_onehot))
    dummy = probs
    bn, bd, warps = scores_config(N, D)
    select_backward_kernel[(B,)](
        vectors, reference, probs.contiguous(), gs if gs is not None else dummy, gp if gp is not None else dummy,
        gh if gh is not None else dummy, gv, gr, *vectors.stride(), reference.stride(0), N, D, float(logit_scale), float(eps),
        COSINE=bool(cosine), HAS_GS=gs is not None, HAS_GP=gp is not None, HAS_GH=gh is not None,
        ACC=_acc(vectors.dtype), BLOCK_N=bn, BLOCK_D=bd, num_warps=warps,
    )  # fmt: skip
    return gv, gr.sum(0)


def contrastive_backward(grad: torch.Tensor, vectors: torch.Tensor, kind: str, eps: float = 1e-8) -> torch.Tensor:
    """Gradient (B, N, D) of the mean contrastive loss, given its 0-d gradient ``grad`` (read on the device)."""
    B, N, D = vectors.shape
    gv = torch.empty((B, N, D), dtype=vectors.dtype, device=vectors.device)
    bn, bd, warps = scores_config(N, D)
    contrastive_backward_kernel[(B,)](
        vectors, grad, gv, *vectors.stride(), N, D, float(eps), _pair_scale(N, kind) / B,
        NORMALIZED=kind != "raw", ACC=_acc(vectors.dtype), BLOCK_N=bn, BLOCK_D=bd, num_warps=warps,
    )  # fmt: skip
    return gv
