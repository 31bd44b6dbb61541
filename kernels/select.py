"""Selection kernels over orbit vectors (B, N, D): scores, β-softmax, argmax, one-hot, and the two
losses computed from the same vectors (orbit contrastive loss, prior cross-entropy), forward
and backward.

One program per sample b reads its (N, D) vectors in D-blocks. Constexpr switches turn
each product on independently, so one launch can produce the selection and both
per-sample losses (the training step's whole selection stage) or only one of them.
Scores come from :func:`select_scores_row`, which the fused eval kernel
(``resample.select_transform_kernel``) calls too: both compute bit-identical scores and so
make the same choice. Accumulation is in ``ACC`` (float32, float64 for float64 vectors);
norms are clamped at ``eps`` as ``torch.nn.functional.cosine_similarity`` does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import acc_dtype, acc_tl, dense, float_args, launch, next_power_of_2

__all__ = [
    "CONTRASTIVE_CODES",
    "PRIOR_NONE",
    "PRIOR_IDENTITY",
    "PRIOR_TARGET",
    "select_config",
    "select_forward",
    "select_backward",
    "select_scores_row",
    "select_argmax",
    "select_kernel",
    "select_backward_kernel",
    "scalar",
]

# contrastive loss variants (docs/spec.md §4)
CONTRASTIVE_NONE = tl.constexpr(0)
CONTRASTIVE_NORMALIZED = tl.constexpr(1)
CONTRASTIVE_RAW = tl.constexpr(2)
CONTRASTIVE_CODES = {"none": 0, "normalized": 1, "raw": 2}  # host names of the kernels' CONTRASTIVE
# prior loss target (host values; the kernels compare with the constexpr twins below)
PRIOR_NONE = 0
PRIOR_IDENTITY = 1  # target = element 0 for every sample
PRIOR_TARGET = 2  # target per sample from a (B,) int64 tensor
_PRIOR_NONE = tl.constexpr(PRIOR_NONE)
_PRIOR_TARGET = tl.constexpr(PRIOR_TARGET)
LOSS_ROWS = 2  # losses tensor (LOSS_ROWS, B): row 0 contrastive, row 1 prior
ROW_CONTRASTIVE = tl.constexpr(0)
ROW_PRIOR = tl.constexpr(1)


@triton.jit
def scalar(hi, lo, ACC: tl.constexpr):
    """A float scalar argument in ``ACC``: as passed (float32) for float32 kernels; for float64 ones with
    the rest that ``kernels.launch.float_args`` passes beside it added back."""
    if ACC == tl.float64:
        return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)
    else:
        return hi


@triton.jit
def select_scores_row(
    v_row,  # pointer to vectors[b] (N, D)
    sv_n,
    sv_d,
    r_ptr,  # (D,) reference
    sr_d,
    N,
    D,
    eps,
    COSINE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Scores of one sample's N vectors against the reference: (s [BLOCK_N], n, n_ok)."""
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    dot = tl.zeros([BLOCK_N], dtype=ACC)
    vv = tl.zeros([BLOCK_N], dtype=ACC)
    rr = tl.zeros([BLOCK_D], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        vt = tl.load(v_row + n[:, None] * sv_n + d[None, :] * sv_d, mask=n_ok[:, None] & d_ok[None, :], other=0.0).to(
            ACC
        )
        r = tl.load(r_ptr + d * sr_d, mask=d_ok, other=0.0).to(ACC)
        dot += tl.sum(vt * r[None, :], axis=1)
        vv += tl.sum(vt * vt, axis=1)
        rr += r * r
    if COSINE:
        s = dot / (tl.maximum(tl.sqrt(vv), eps) * tl.maximum(tl.sqrt(tl.sum(rr, axis=0)), eps))
    else:
        s = dot
    return s, n, n_ok


@triton.jit
def select_argmax(logits, n, n_ok, BLOCK_N: tl.constexpr):
    """The chosen element of one row: argmax, ties to the lowest index, the first NaN if any
    (``torch.argmax``'s rule), never a padding lane. Triton's own argmax lets the reduction order
    decide between NaN and numbers, so NaN is handled here explicitly."""
    is_nan = n_ok & (logits != logits)
    first_nan = tl.min(tl.where(is_nan, n, BLOCK_N), axis=0)
    best = tl.argmax(tl.where(is_nan, -float("inf"), logits), axis=0, tie_break_left=True)
    return tl.minimum(tl.where(first_nan < BLOCK_N, first_nan, best), tl.max(tl.where(n_ok, n, 0), axis=0))


@triton.jit
def _gram_row(v_row, sv_n, sv_d, N, D, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """(Gram matrix [BLOCK_N, BLOCK_N], squared norms [BLOCK_N]) of one sample's vectors."""
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    vv = tl.zeros([BLOCK_N], dtype=ACC)
    gram = tl.zeros([BLOCK_N, BLOCK_N], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        vt = tl.load(
            v_row + n[:, None] * sv_n + d[None, :] * sv_d, mask=n_ok[:, None] & (d < D)[None, :], other=0.0
        ).to(ACC)
        vv += tl.sum(vt * vt, axis=1)
        gram += tl.sum(vt[:, None, :] * vt[None, :, :], axis=2)
    return gram, vv


@triton.jit
def _off_diagonal(n, N):
    return (n[:, None] != n[None, :]) & (n < N)[:, None] & (n < N)[None, :]


@triton.jit
def select_kernel(
    # pointers
    v_ptr,  # (B, N, D) orbit vectors, any strides
    r_ptr,  # (D,) reference vector (SELECT)
    noise_ptr,  # (B, N) Gumbel noise (HAS_NOISE)
    target_ptr,  # (B,) int64 prior targets (PRIOR == PRIOR_TARGET)
    scores_ptr,  # (B, N) ACC, contiguous (SELECT)
    probs_ptr,  # (B, N) ACC
    index_ptr,  # (B,) int64
    onehot_ptr,  # (B, N) ACC
    losses_ptr,  # (LOSS_ROWS, B) ACC per-sample losses: contrastive, prior
    # strides
    sv_b,
    sv_n,
    sv_d,
    sr_d,
    sn_b,
    sn_n,
    # sizes
    B,
    N,
    D,
    # runtime scalars (each with its float32 rest, NAME_lo: kernels.launch.float_args)
    beta,  # inverse temperature of the choice softmax
    beta_lo,
    tau,  # Gumbel-softmax temperature (HAS_NOISE)
    tau_lo,
    eps,  # norm clamp
    eps_lo,
    pair_scale,  # 1 / pairs averaged by the contrastive loss: N(N-1) normalized, N² raw, 0 when N < 2
    pair_scale_lo,
    prior_beta,  # inverse temperature of the prior cross-entropy
    prior_beta_lo,
    # meta-parameters
    COSINE: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    SELECT: tl.constexpr,  # scores, probs, argmax, one-hot
    CONTRASTIVE: tl.constexpr,  # CONTRASTIVE_NONE | _NORMALIZED | _RAW
    PRIOR: tl.constexpr,  # PRIOR_NONE | PRIOR_IDENTITY | PRIOR_TARGET (needs SELECT)
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Selection and per-sample losses of sample b = program id."""
    beta = scalar(beta, beta_lo, ACC)
    tau = scalar(tau, tau_lo, ACC)
    eps = scalar(eps, eps_lo, ACC)
    pair_scale = scalar(pair_scale, pair_scale_lo, ACC)
    prior_beta = scalar(prior_beta, prior_beta_lo, ACC)
    b = tl.program_id(0)
    v_row = v_ptr + b.to(tl.int64) * sv_b
    if SELECT:
        s, n, n_ok = select_scores_row(v_row, sv_n, sv_d, r_ptr, sr_d, N, D, eps, COSINE, ACC, BLOCK_N, BLOCK_D)
        logits = beta * s
        if HAS_NOISE:
            noise = tl.load(noise_ptr + b.to(tl.int64) * sn_b + n * sn_n, mask=n_ok, other=0.0).to(ACC)
            logits = (logits + noise) / tau
        logits = tl.where(n_ok, logits, -float("inf"))
        e = tl.where(n_ok, tl.exp(logits - tl.max(logits, axis=0)), 0.0)
        idx = select_argmax(logits, n, n_ok, BLOCK_N)
        row = b.to(tl.int64) * N + n
        tl.store(scores_ptr + row, s, mask=n_ok)
        tl.store(probs_ptr + row, e / tl.sum(e, axis=0), mask=n_ok)
        tl.store(onehot_ptr + row, tl.where(n == idx, 1.0, 0.0), mask=n_ok)
        tl.store(index_ptr + b, idx.to(tl.int64))
        if PRIOR != _PRIOR_NONE:
            target = 0
            if PRIOR == _PRIOR_TARGET:
                target = tl.load(target_ptr + b)
            z = tl.where(n_ok, prior_beta * s, -float("inf"))
            zmax = tl.max(z, axis=0)
            lse = zmax + tl.log(tl.sum(tl.where(n_ok, tl.exp(z - zmax), 0.0), axis=0))
            # a target outside [0, N) gives NaN (never a plausible loss); the API checks CPU targets
            loss = tl.where(
                (target >= 0) & (target < N), lse - tl.sum(tl.where(n == target, z, 0.0), axis=0), float("nan")
            )
            tl.store(losses_ptr + ROW_PRIOR * B + b, loss)
    if (PRIOR == _PRIOR_NONE) and (CONTRASTIVE != CONTRASTIVE_NONE):
        tl.store(losses_ptr + ROW_PRIOR * B + b, 0.0)  # a loss not asked for is 0, not memory garbage
    if (CONTRASTIVE == CONTRASTIVE_NONE) and (PRIOR != _PRIOR_NONE):
        tl.store(losses_ptr + ROW_CONTRASTIVE * B + b, 0.0)
    if CONTRASTIVE != CONTRASTIVE_NONE:
        gram, vv = _gram_row(v_row, sv_n, sv_d, N, D, ACC, BLOCK_N, BLOCK_D)
        nn = tl.arange(0, BLOCK_N)
        if CONTRASTIVE == CONTRASTIVE_NORMALIZED:
            inv = 1.0 / tl.maximum(tl.sqrt(vv), eps)
            gram = gram * inv[:, None] * inv[None, :]
        total = tl.sum(tl.sum(tl.where(_off_diagonal(nn, N), tl.abs(gram), 0.0), axis=1), axis=0)
        tl.store(losses_ptr + ROW_CONTRASTIVE * B + b, total * pair_scale)


@triton.jit
def select_backward_kernel(
    # pointers
    v_ptr,  # (B, N, D) vectors, any strides
    r_ptr,  # (D,) reference
    probs_ptr,  # (B, N) contiguous probs saved by the forward (SELECT)
    target_ptr,  # (B,) int64 prior targets (PRIOR == PRIOR_TARGET)
    gs_ptr,  # (B, N) contiguous gradient of the scores (HAS_GS)
    gp_ptr,  # (B, N) gradient of the probs (HAS_GP)
    gh_ptr,  # (B, N) gradient of the one-hot (HAS_GH: straight-through)
    gl_ptr,  # (LOSS_ROWS,) gradients of the two mean losses, read on the device
    gv_ptr,  # (B, N, D) contiguous output, the vectors' dtype
    gr_ptr,  # (B, D) contiguous ACC partial gradients of the reference (summed over b by the launcher)
    # strides
    sv_b,
    sv_n,
    sv_d,
    sr_d,
    # sizes
    B,
    N,
    D,
    # runtime scalars (each with its float32 rest, NAME_lo: kernels.launch.float_args)
    logit_scale,  # d logits / d scores: beta (beta / tau with Gumbel noise)
    logit_scale_lo,
    eps,
    eps_lo,
    pair_scale,  # as in select_kernel
    pair_scale_lo,
    prior_beta,
    prior_beta_lo,
    # meta-parameters
    COSINE: tl.constexpr,
    SELECT: tl.constexpr,  # gradients through scores/probs/one-hot (and the prior) to vectors and reference
    HAS_GS: tl.constexpr,
    HAS_GP: tl.constexpr,
    HAS_GH: tl.constexpr,
    CONTRASTIVE: tl.constexpr,
    PRIOR: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Gradient of everything :func:`select_kernel` produced, for sample b = program id."""
    logit_scale = scalar(logit_scale, logit_scale_lo, ACC)
    eps = scalar(eps, eps_lo, ACC)
    pair_scale = scalar(pair_scale, pair_scale_lo, ACC)
    prior_beta = scalar(prior_beta, prior_beta_lo, ACC)
    b = tl.program_id(0)
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    v_row = v_ptr + b.to(tl.int64) * sv_b
    row = b.to(tl.int64) * N + n
    gsc = tl.zeros([BLOCK_N], dtype=ACC)
    if SELECT:
        # d loss / d logits through the softmax (probs and the straight-through one-hot)
        g_logits = tl.zeros([BLOCK_N], dtype=ACC)
        if HAS_GP:
            g_logits += tl.load(gp_ptr + row, mask=n_ok, other=0.0).to(ACC)
        if HAS_GH:
            g_logits += tl.load(gh_ptr + row, mask=n_ok, other=0.0).to(ACC)
        p = tl.load(probs_ptr + row, mask=n_ok, other=0.0).to(ACC)
        gsc = p * (g_logits - tl.sum(p * g_logits, axis=0)) * logit_scale
        if HAS_GS:
            gsc += tl.load(gs_ptr + row, mask=n_ok, other=0.0).to(ACC)
        s, n, n_ok = select_scores_row(v_row, sv_n, sv_d, r_ptr, sr_d, N, D, eps, COSINE, ACC, BLOCK_N, BLOCK_D)
        if PRIOR != _PRIOR_NONE:
            target = 0
            if PRIOR == _PRIOR_TARGET:
                target = tl.load(target_ptr + b)
            z = tl.where(n_ok, prior_beta * s, -float("inf"))
            e = tl.where(n_ok, tl.exp(z - tl.max(z, axis=0)), 0.0)
            g_prior = tl.load(gl_ptr + ROW_PRIOR).to(ACC) / B
            g_prior = tl.where((target >= 0) & (target < N), g_prior, float("nan"))
            gsc += g_prior * prior_beta * (e / tl.sum(e, axis=0) - tl.where(n == target, 1.0, 0.0))
        if COSINE:
            # re-read norms for the chain rule of cos = <v, r> / (|v||r|)
            vv = tl.zeros([BLOCK_N], dtype=ACC)
            rr = tl.zeros([BLOCK_D], dtype=ACC)
            for d0 in range(0, D, BLOCK_D):
                d = d0 + tl.arange(0, BLOCK_D)
                d_ok = d < D
                vt = tl.load(
                    v_row + n[:, None] * sv_n + d[None, :] * sv_d, mask=n_ok[:, None] & d_ok[None, :], other=0.0
                ).to(ACC)
                r = tl.load(r_ptr + d * sr_d, mask=d_ok, other=0.0).to(ACC)
                vv += tl.sum(vt * vt, axis=1)
                rr += r * r
            tv = tl.sqrt(vv)
            tr = tl.sqrt(tl.sum(rr, axis=0))
            nv = tl.maximum(tv, eps)
            nr = tl.maximum(tr, eps)
            # d/dv = r/(|v||r|) - cos·v/|v|²,  d/dr = Σ v/(|v||r|) - cos·r/|r|². A norm clamped at eps divides
            # by eps but keeps its own derivative v/|v| (F.cosine_similarity clamps the norm in place, out of
            # autograd's sight): cos·v/(eps|v|), and 0 for a zero vector
            a = gsc / (nv * nr)
            cv = tl.where(tv > 0.0, gsc * s / (nv * tl.where(tv > 0.0, tv, 1.0)), 0.0)
            cr = tl.where(tr > 0.0, tl.sum(gsc * s, axis=0) / (nr * tl.where(tr > 0.0, tr, 1.0)), 0.0)
    if CONTRASTIVE != CONTRASTIVE_NONE:
        gram, vv2 = _gram_row(v_row, sv_n, sv_d, N, D, ACC, BLOCK_N, BLOCK_D)
        inv = 1.0 / tl.maximum(tl.sqrt(vv2), eps)
        clamped = tl.sqrt(vv2) < eps  # v / eps: no projection term below
        if CONTRASTIVE == CONTRASTIVE_NORMALIZED:
            gram = gram * inv[:, None] * inv[None, :]
        scale = tl.load(gl_ptr + ROW_CONTRASTIVE).to(ACC) * pair_scale / B
        sgn = tl.where(gram > 0, 1.0, tl.where(gram < 0, -1.0, 0.0))
        # d/dG of Σ|G| is sign(G); G symmetric, so d/dV of G = V Vᵀ gives (S + Sᵀ) V = 2 S V
        S = tl.where(_off_diagonal(n, N), sgn, 0.0) * (2.0 * scale)
        if CONTRASTIVE == CONTRASTIVE_NORMALIZED:
            proj = tl.sum(S * gram, axis=1)  # <vn, dVn> per row, from G without another pass over D
            proj = tl.where(clamped, 0.0, proj)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        m2 = n_ok[:, None] & d_ok[None, :]
        vt = tl.load(v_row + n[:, None] * sv_n + d[None, :] * sv_d, mask=m2, other=0.0).to(ACC)
        gv = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
        if SELECT:
            r = tl.load(r_ptr + d * sr_d, mask=d_ok, other=0.0).to(ACC)
            if COSINE:
                gv += a[:, None] * r[None, :] - cv[:, None] * vt
                gr = tl.sum(a[:, None] * vt, axis=0) - cr * r
            else:
                gv += gsc[:, None] * r[None, :]
                gr = tl.sum(gsc[:, None] * vt, axis=0)
            tl.store(gr_ptr + b.to(tl.int64) * D + d, gr, mask=d_ok)
        if CONTRASTIVE == CONTRASTIVE_NORMALIZED:
            vn = vt * inv[:, None]
            dvn = tl.sum(S[:, :, None] * vn[None, :, :], axis=1)
            gv += (dvn - vn * proj[:, None]) * inv[:, None]
        elif CONTRASTIVE == CONTRASTIVE_RAW:
            gv += tl.sum(S[:, :, None] * vt[None, :, :], axis=1)
        tl.store(gv_ptr + row[:, None] * D + d[None, :], gv.to(gv_ptr.dtype.element_ty), mask=m2)


# ----------------------------------------------------------------------------- launchers
def select_config(N: int, D: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps) of every selection kernel (and of the fused eval kernel's scores).

    The Gram product holds BLOCK_N² · BLOCK_D values; it is kept at 2048 (16 per thread at
    4 warps) so that no variant spills and the backward with both losses keeps half occupancy
    (``canon.kernels.compile``).
    """
    block_n = next_power_of_2(max(int(N), 2))
    block_d = max(1, min(next_power_of_2(int(D)), 64, 2048 // (block_n * block_n)))
    return block_n, block_d, 4


def pair_scale(N: int, kind: str) -> float:
    """1 / number of pairs the contrastive loss averages over (docs/spec.md §4)."""
    if kind == "raw":
        return 1.0 / (N * N)
    return 1.0 / (N * (N - 1)) if N > 1 else 0.0


def select_forward(
    vectors: torch.Tensor,
    reference: torch.Tensor | None,
    beta: float = 1.0,
    cosine: bool = True,
    noise: torch.Tensor | None = None,
    tau: float = 1.0,
    eps: float = 1e-8,
    contrastive: str = "none",
    prior: int = PRIOR_NONE,
    target: torch.Tensor | None = None,
    prior_beta: float = 1.0,
    out: tuple[torch.Tensor, ...] | None = None,
):
    """One launch over ``vectors`` (B, N, D).

    With ``reference`` (D,): selection ``(scores, probs, index, onehot)`` ((B, N) in the
    accumulation dtype, index (B,) int64). With ``contrastive`` (``"normalized"``/``"raw"``)
    and/or ``prior`` (PRIOR_IDENTITY, or PRIOR_TARGET with ``target`` (B,) int64): the
    per-sample losses as a (2, B) tensor (row 0 contrastive, row 1 prior; rows not asked
    for are left unwritten). Returns ``(selection or None, losses or None)``. ``out`` may
    preallocate the four selection tensors (tests poison them).
    """
    B, N, D = vectors.shape
    acc_dt = acc_dtype(vectors.dtype)
    dev = vectors.device
    select = reference is not None
    target = dense(target)
    if select:
        scores, probs, index, onehot = out if out is not None else (
            torch.empty((B, N), dtype=acc_dt, device=dev), torch.empty((B, N), dtype=acc_dt, device=dev),
            torch.empty((B,), dtype=torch.int64, device=dev), torch.empty((B, N), dtype=acc_dt, device=dev),
        )  # fmt: skip
    else:
        scores = probs = onehot = index = vectors
    with_losses = contrastive != "none" or prior != PRIOR_NONE
    losses = torch.empty((LOSS_ROWS, B), dtype=acc_dt, device=dev) if with_losses else vectors
    block_n, block_d, warps = select_config(N, D)
    r = reference if select else vectors
    launch(
        select_kernel, (B,), warps, fp_fusion=False,
        v_ptr=vectors, r_ptr=r, noise_ptr=noise if noise is not None else vectors,
        target_ptr=target if target is not None else vectors,
        scores_ptr=scores, probs_ptr=probs, index_ptr=index, onehot_ptr=onehot, losses_ptr=losses,
        sv_b=vectors.stride(0), sv_n=vectors.stride(1), sv_d=vectors.stride(2), sr_d=r.stride(0) if select else 0,
        sn_b=noise.stride(0) if noise is not None else 0, sn_n=noise.stride(1) if noise is not None else 0,
        B=B, N=N, D=D,
        **float_args(beta=beta, tau=tau, eps=eps, pair_scale=pair_scale(N, contrastive), prior_beta=prior_beta),
        COSINE=bool(cosine), HAS_NOISE=noise is not None, SELECT=select, CONTRASTIVE=CONTRASTIVE_CODES[contrastive],
        PRIOR=int(prior),
        ACC=acc_tl(vectors.dtype), BLOCK_N=block_n, BLOCK_D=block_d,
    )  # fmt: skip
    return ((scores, probs, index, onehot) if select else None), (losses if with_losses else None)


def select_backward(
    grad_scores: torch.Tensor | None,
    grad_probs: torch.Tensor | None,
    grad_onehot: torch.Tensor | None,
    grad_losses: torch.Tensor | None,
    vectors: torch.Tensor,
    reference: torch.Tensor | None,
    probs: torch.Tensor | None,
    logit_scale: float = 1.0,
    cosine: bool = True,
    eps: float = 1e-8,
    contrastive: str = "none",
    prior: int = PRIOR_NONE,
    target: torch.Tensor | None = None,
    prior_beta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients (vectors (B, N, D), reference (D,) or None) of :func:`select_forward`.

    ``grad_onehot`` only when straight-through (pass None otherwise); ``grad_losses`` (2,)
    holds the gradients of the batch means of the two losses (row order as ``losses``). The
    reference gradient is summed over b from per-sample partials in a fixed order (deterministic).
    """
    B, N, D = vectors.shape
    acc_dt = acc_dtype(vectors.dtype)
    select = reference is not None
    target, grad_losses = dense(target), dense(grad_losses)
    gv = torch.empty((B, N, D), dtype=vectors.dtype, device=vectors.device)
    gr = torch.empty((B, D), dtype=acc_dt, device=vectors.device) if select else vectors
    gs, gp, gh = (dense(t) for t in (grad_scores, grad_probs, grad_onehot))
    dummy = vectors
    block_n, block_d, warps = select_config(N, D)
    launch(
        select_backward_kernel, (B,), warps, fp_fusion=False,
        v_ptr=vectors, r_ptr=reference if select else dummy,
        probs_ptr=dense(probs) if probs is not None else dummy,
        target_ptr=target if target is not None else dummy,
        gs_ptr=gs if gs is not None else dummy, gp_ptr=gp if gp is not None else dummy,
        gh_ptr=gh if gh is not None else dummy,
        gl_ptr=grad_losses if grad_losses is not None else dummy, gv_ptr=gv, gr_ptr=gr,
        sv_b=vectors.stride(0), sv_n=vectors.stride(1), sv_d=vectors.stride(2),
        sr_d=reference.stride(0) if select else 0,
        B=B, N=N, D=D,
        **float_args(
            logit_scale=logit_scale, eps=eps, pair_scale=pair_scale(N, contrastive), prior_beta=prior_beta
        ),
        COSINE=bool(cosine), SELECT=select, HAS_GS=gs is not None, HAS_GP=gp is not None, HAS_GH=gh is not None,
        CONTRASTIVE=CONTRASTIVE_CODES[contrastive], PRIOR=int(prior), ACC=acc_tl(vectors.dtype), BLOCK_N=block_n,
        BLOCK_D=block_d,
    )  # fmt: skip
    return gv, (gr.sum(0) if select else None)
