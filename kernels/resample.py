"""Resampling kernels: orbit views, the per-sample canonicalize/invert transform, and their adjoints.

A view matrix ``M`` (2×3, float32, row-major in memory) maps output pixel ``(j, i)``
(column, row) to the input coordinate ``u = (M00·j + M01·i) + M02``,
``v = (M10·j + M11·i) + M12``. Sampling matches ``canon.reference`` (and
``grid_sample(align_corners=False)``): pixel centres at integer coordinates, padding
``zeros``/``border``/``reflection`` applied to the coordinates, ``nearest`` rounds
half to even, bilinear taps outside the input read nothing. ``EXACT`` means every
matrix is a signed permutation with an integer translation: one tap, no weights.

Coordinates and weights are float32; values accumulate in ``ACC`` (float32, or float64
for float64 tensors) and are cast on store. Batch, view and channel offsets are int64;
offsets inside one image plane are int32 (the launchers check that they fit).

These kernels know tensors, strides and matrices, nothing about groups or training.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "PADDING_CODES",
    "resample_config",
    "orbit_forward",
    "orbit_backward",
    "transform_forward",
    "transform_backward",
    "resample_kernel",
    "resample_push_kernel",
    "resample_pull_kernel",
    "transform_backward_kernel",
]

PADDING_CODES = {"zeros": 0, "border": 1, "reflection": 2}
_I32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- helpers (jit)
@triton.jit
def _reflect(x, size_f):
    # Mirror about -0.5 and size-0.5 (grid_sample, align_corners=False), then clip; size 1 maps to 0.
    y = tl.abs(x + 0.5)
    flips = tl.floor(y / size_f)
    extra = y - flips * size_f
    even = (flips - 2.0 * tl.floor(flips * 0.5)) == 0.0
    y = tl.where(even, extra - 0.5, size_f - extra - 0.5)
    y = tl.minimum(tl.maximum(y, 0.0), size_f - 1.0)
    return tl.where(size_f == 1.0, 0.0, y)


@triton.jit
def _round_half_even(x):
    r = tl.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)


@triton.jit
def _view_taps(mats_ptr, g, p, pmask, w, Wf, Hf, PADDING: tl.constexpr, NEAREST: tl.constexpr, EXACT: tl.constexpr):
    """Taps of output pixels ``p`` (flat, row-major in a ``w``-wide plane) under matrix ``g``.

    Returns (ix, iy, w00, w01, w10, w11, k00, k01, k10, k11): the top-left tap (int32,
    clamped to [-1, size] so out-of-range values stay representable), the four bilinear
    weights and in-range masks (and'ed with ``pmask``, the pixels of this program). One-tap modes (EXACT, NEAREST) use only ``w00``/``k00``.
    Taps of weight zero are masked off (an exact element inside a non-exact group then
    reads one pixel, as the reference's gather does).
    """
    mp = mats_ptr + g * 6
    m00 = tl.load(mp)
    m01 = tl.load(mp + 1)
    m02 = tl.load(mp + 2)
    m10 = tl.load(mp + 3)
    m11 = tl.load(mp + 4)
    m12 = tl.load(mp + 5)
    i = p // w
    j = p - i * w
    jf = j.to(tl.float32)
    if_ = i.to(tl.float32)
    u = (m00 * jf + m01 * if_) + m02
    v = (m10 * jf + m11 * if_) + m12
    if PADDING == 1:
        u = tl.minimum(tl.maximum(u, 0.0), Wf - 1.0)
        v = tl.minimum(tl.maximum(v, 0.0), Hf - 1.0)
    elif PADDING == 2:
        u = _reflect(u, Wf)
        v = _reflect(v, Hf)
    if EXACT or NEAREST:
        if not EXACT:
            u = _round_half_even(u)
            v = _round_half_even(v)
        ok = (u >= 0.0) & (u <= Wf - 1.0) & (v >= 0.0) & (v <= Hf - 1.0) & pmask
        ix = tl.minimum(tl.maximum(u, -1.0), Wf).to(tl.int32)
        iy = tl.minimum(tl.maximum(v, -1.0), Hf).to(tl.int32)
        one = tl.full(u.shape, 1.0, tl.float32)
        return ix, iy, one, one, one, one, ok, ok, ok, ok
    else:
        x0 = tl.floor(u)
        y0 = tl.floor(v)
        fx = u - x0
        fy = v - y0
        inx0 = (x0 >= 0.0) & (x0 <= Wf - 1.0) & pmask
        inx1 = (x0 + 1.0 >= 0.0) & (x0 + 1.0 <= Wf - 1.0) & (fx != 0.0) & pmask
        iny0 = (y0 >= 0.0) & (y0 <= Hf - 1.0)
        iny1 = (y0 + 1.0 >= 0.0) & (y0 + 1.0 <= Hf - 1.0) & (fy != 0.0)
        ix = tl.minimum(tl.maximum(x0, -1.0), Wf).to(tl.int32)
        iy = tl.minimum(tl.maximum(y0, -1.0), Hf).to(tl.int32)
        gx = 1.0 - fx
        gy = 1.0 - fy
        return ix, iy, gx * gy, fx * gy, gx * fy, fx * fy, inx0 & iny0, inx1 & iny0, inx0 & iny1, inx1 & iny1


@triton.jit
def _gather(base, s_h, s_w, ix, iy, w00, w01, w10, w11, k00, k01, k10, k11, ACC: tl.constexpr, ONE_TAP: tl.constexpr):
    """Sample one channel plane at the taps; ONE_TAP returns the raw value (no arithmetic)."""
    off = iy * s_h + ix * s_w
    if ONE_TAP:
        return tl.load(base + off, mask=k00, other=0.0)
    else:
        # Same summation order as the reference: ((t00 + t01) + t10) + t11.
        t = tl.load(base + off, mask=k00, other=0.0).to(ACC) * w00
        t += tl.load(base + off + s_w, mask=k01, other=0.0).to(ACC) * w01
        t += tl.load(base + off + s_h, mask=k10, other=0.0).to(ACC) * w10
        t += tl.load(base + off + s_h + s_w, mask=k11, other=0.0).to(ACC) * w11
        return t


@triton.jit
def _scatter(base, W, H, val, ix, iy, w00, w01, w10, w11, k00, k01, k10, k11, ONE_TAP: tl.constexpr):
    """Adjoint of :func:`_gather` into a contiguous (H, W) plane: atomically add ``val`` times each tap weight."""
    if ONE_TAP:
        # Unmasked add of 0 at a clamped address where the tap is out of range: the masked
        # form gave ptxas a stack frame (local-memory spills) on sm_90 in the fused backward.
        cx = tl.minimum(tl.maximum(ix, 0), W - 1)
        cy = tl.minimum(tl.maximum(iy, 0), H - 1)
        tl.atomic_add(base + cy * W + cx, tl.where(k00, val, 0.0), sem="relaxed")
    else:
        off = iy * W + ix
        tl.atomic_add(base + off, val * w00, mask=k00, sem="relaxed")
        tl.atomic_add(base + off + 1, val * w01, mask=k01, sem="relaxed")
        tl.atomic_add(base + off + W, val * w10, mask=k10, sem="relaxed")
        tl.atomic_add(base + off + W + 1, val * w11, mask=k11, sem="relaxed")


# ----------------------------------------------------------------------------- kernels
@triton.jit
def resample_kernel(
    x_ptr,
    mats_ptr,
    index_ptr,  # (B,) int64 chosen matrix per image (USE_INDEX) else unused
    out_ptr,
    sx_b,
    sx_c,
    sx_h,
    sx_w,
    so_b,
    so_n,
    so_c,
    so_h,
    so_w,
    C,
    H,
    W,
    h,
    w,
    NV,  # views per image: N for the orbit, 1 for transform
    PADDING: tl.constexpr,  # 0 zeros, 1 border, 2 reflection
    NEAREST: tl.constexpr,
    EXACT: tl.constexpr,
    USE_INDEX: tl.constexpr,
    OUT_CONTIG: tl.constexpr,  # the (h, w) plane of out is contiguous: store at base + p
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out[b, n, c] = view (matrix ``n``, or ``index[b]``) of x[b, c], for every channel."""
    pid = tl.program_id(0)
    nblk = tl.cdiv(h * w, BLOCK)
    o = pid // nblk
    blk = pid - o * nblk
    b = o // NV
    n = o - b * NV
    if USE_INDEX:
        g = tl.load(index_ptr + b)
    else:
        g = n
    p = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = p < h * w
    ix, iy, w00, w01, w10, w11, k00, k01, k10, k11 = _view_taps(mats_ptr, g, p, pmask, w, W * 1.0, H * 1.0, PADDING, NEAREST, EXACT)
    if OUT_CONTIG:
        o_off = p
    else:
        i = p // w
        o_off = i * so_h + (p - i * w) * so_w
    # Channel pointers advance by the stride each step: 64-bit addresses, no int32 product.
    x_c = x_ptr + b.to(tl.int64) * sx_b
    o_c = out_ptr + b.to(tl.int64) * so_b + n.to(tl.int64) * so_n
    for _ in range(C):
        val = _gather(x_c, sx_h, sx_w, ix, iy, w00, w01, w10, w11, k00, k01, k10, k11, ACC, EXACT or NEAREST)
        tl.store(o_c + o_off, val.to(out_ptr.dtype.element_ty), mask=pmask)
        x_c += sx_c
        o_c += so_c


@triton.jit
def resample_push_kernel(
    g_ptr,  # gradient of the views, (B, NV, C, h, w) through strides
    mats_ptr,
    index_ptr,
    gx_ptr,  # (B, C, H, W) contiguous accumulator in ACC, zero-initialised
    sg_b,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    C,
    H,
    W,
    h,
    w,
    NV,
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    EXACT: tl.constexpr,
    USE_INDEX: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Adjoint of :func:`resample_kernel` by scatter (atomics).

    Why a scatter: the bilinear adjoint of an arbitrary affine view has a data-dependent
    fan-in per input pixel (a downscaled rotation reaches a rotated parallelogram of
    output pixels; border padding folds a whole half-plane onto an edge pixel,
    reflection folds it back in), so a pull would have to enumerate preimages per
    pixel. Exact elements with zero padding use :func:`resample_pull_kernel` instead,
    and ``torch.use_deterministic_algorithms(True)`` routes the general case to the
    sort-based reference adjoint (see ``canon.triton_ops``).
    """
    pid = tl.program_id(0)
    nblk = tl.cdiv(h * w, BLOCK)
    o = pid // nblk
    blk = pid - o * nblk
    b = o // NV
    n = o - b * NV
    if USE_INDEX:
        g = tl.load(index_ptr + b)
    else:
        g = n
    p = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = p < h * w
    ix, iy, w00, w01, w10, w11, k00, k01, k10, k11 = _view_taps(mats_ptr, g, p, pmask, w, W * 1.0, H * 1.0, PADDING, NEAREST, EXACT)
    i = p // w
    g_off = i * sg_h + (p - i * w) * sg_w
    g_c = g_ptr + b.to(tl.int64) * sg_b + n.to(tl.int64) * sg_n
    gx_c = gx_ptr + b.to(tl.int64) * C * H * W
    for _ in range(C):
        val = tl.load(g_c + g_off, mask=pmask, other=0.0).to(ACC)
        _scatter(gx_c, W, H, val, ix, iy, w00, w01, w10, w11, k00, k01, k10, k11, EXACT or NEAREST)
        g_c += sg_c
        gx_c += H * W


@triton.jit
def _pull_view(g_base, mats_ptr, g, py, px, pmask, sg_h, sg_w, h, w):
    """Gradient of an exact, zero-padded view at input pixels (py, px): the view's value at the
    output pixel the inverse map sends them to (the inverse of a signed permutation is its transpose)."""
    mp = mats_ptr + g * 6
    du = px.to(tl.float32) - tl.load(mp + 2)
    dv = py.to(tl.float32) - tl.load(mp + 5)
    jf = tl.load(mp) * du + tl.load(mp + 3) * dv
    if_ = tl.load(mp + 1) * du + tl.load(mp + 4) * dv
    ok = pmask & (jf >= 0.0) & (jf <= (w - 1) * 1.0) & (if_ >= 0.0) & (if_ <= (h - 1) * 1.0)
    jj = tl.minimum(tl.maximum(jf, 0.0), (w - 1) * 1.0).to(tl.int32)
    ii = tl.minimum(tl.maximum(if_, 0.0), (h - 1) * 1.0).to(tl.int32)
    return tl.load(g_base + ii * sg_h + jj * sg_w, mask=ok, other=0.0)


@triton.jit
def resample_pull_kernel(
    g_ptr,  # gradient of the views, (B, NV, C, h, w) through strides
    mats_ptr,
    index_ptr,
    gx_ptr,  # (B, C, H, W) output through strides, written once (no accumulation across programs)
    sg_b,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    sgx_b,
    sgx_c,
    sgx_h,
    sgx_w,
    C,
    H,
    W,
    h,
    w,
    NV,
    USE_INDEX: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Adjoint of an EXACT zero-padded :func:`resample_kernel` by gather: deterministic, no atomics.

    Each input pixel sums, over the views in a fixed order, the one output pixel
    (if any) that read it.
    """
    pid = tl.program_id(0)
    nblk = tl.cdiv(H * W, BLOCK)
    b = pid // nblk
    blk = pid - b * nblk
    p = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = p < H * W
    py = p // W
    px = p - py * W
    g_c = g_ptr + b.to(tl.int64) * sg_b
    gx_c = gx_ptr + b.to(tl.int64) * sgx_b
    gx_off = py * sgx_h + px * sgx_w
    for _ in range(C):
        acc = tl.zeros([BLOCK], dtype=ACC)
        if USE_INDEX:
            acc += _pull_view(g_c, mats_ptr, tl.load(index_ptr + b), py, px, pmask, sg_h, sg_w, h, w).to(ACC)
        else:
            g_n = g_c
            for n in range(NV):
                acc += _pull_view(g_n, mats_ptr, n, py, px, pmask, sg_h, sg_w, h, w).to(ACC)
                g_n += sg_n
        tl.store(gx_c + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=pmask)
        g_c += sg_c
        gx_c += sgx_c


@triton.jit
def transform_backward_kernel(
    g_ptr,  # grad_out (B, C, H, W) through strides
    x_ptr,  # x (B, C, H, W) through strides
    mats_ptr,
    index_ptr,
    gx_ptr,  # GX_PULL: (B, C, H, W) through strides; else contiguous zeroed ACC accumulator
    dot_ptr,  # (B, N, nblk) ACC partial sums of <grad_out, T_g x> per pixel block
    sg_b,
    sg_c,
    sg_h,
    sg_w,
    sx_b,
    sx_c,
    sx_h,
    sx_w,
    sgx_b,
    sgx_c,
    sgx_h,
    sgx_w,
    C,
    H,
    W,
    N,
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    EXACT: tl.constexpr,
    NEED_GX: tl.constexpr,
    GX_PULL: tl.constexpr,  # exact + zeros: gather adjoint; else scatter (see resample_push_kernel)
    NEED_DOT: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One pass over grad_out for ``out[b] = T_{index[b]} x[b]``: the adjoint to x and the
    mixture straight-through inner products ``<grad_out[b], T_g x[b]>`` for every g."""
    pid = tl.program_id(0)
    nblk = tl.cdiv(H * W, BLOCK)
    b = pid // nblk
    blk = pid - b * nblk
    p = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = p < H * W
    py = p // W
    px = p - py * W
    Wf = W * 1.0
    Hf = H * 1.0
    g_b = g_ptr + b.to(tl.int64) * sg_b
    g_off = py * sg_h + px * sg_w
    if NEED_DOT:
        x_b = x_ptr + b.to(tl.int64) * sx_b
        for gi in range(N):
            ix, iy, w00, w01, w10, w11, k00, k01, k10, k11 = _view_taps(mats_ptr, gi, p, pmask, W, Wf, Hf, PADDING, NEAREST, EXACT)
            s = tl.zeros([BLOCK], dtype=ACC)
            x_c = x_b
            g_c = g_b
            for _ in range(C):
                xs = _gather(x_c, sx_h, sx_w, ix, iy, w00, w01, w10, w11, k00, k01, k10, k11, ACC, EXACT or NEAREST).to(ACC)
                gv = tl.load(g_c + g_off, mask=pmask, other=0.0).to(ACC)
                s += xs * gv
                x_c += sx_c
                g_c += sg_c
            tl.store(dot_ptr + (b.to(tl.int64) * N + gi) * nblk + blk, tl.sum(s, axis=0))
    if NEED_GX:
        sel = tl.load(index_ptr + b)
        if GX_PULL:
            gx_c = gx_ptr + b.to(tl.int64) * sgx_b
            gx_off = py * sgx_h + px * sgx_w
            g_c = g_b
            for _ in range(C):
                val = _pull_view(g_c, mats_ptr, sel, py, px, pmask, sg_h, sg_w, H, W)
                tl.store(gx_c + gx_off, val.to(gx_ptr.dtype.element_ty), mask=pmask)
                g_c += sg_c
                gx_c += sgx_c
        else:
            ix, iy, w00, w01, w10, w11, k00, k01, k10, k11 = _view_taps(mats_ptr, sel, p, pmask, W, Wf, Hf, PADDING, NEAREST, EXACT)
            gx_c = gx_ptr + b.to(tl.int64) * C * H * W
            g_c = g_b
            for _ in range(C):
                val = tl.load(g_c + g_off, mask=pmask, other=0.0).to(ACC)
                _scatter(gx_c, W, H, val, ix, iy, w00, w01, w10, w11, k00, k01, k10, k11, EXACT or NEAREST)
                g_c += sg_c
                gx_c += H * W


# ----------------------------------------------------------------------------- launchers
def resample_config(npix: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for a kernel that walks ``npix`` pixels of one plane per program.

    Shared by every resampling kernel, forward and backward. A block covers a whole
    small plane (one program per view, which also keeps interpreter tests fast) and
    at most 1024 pixels (4 per thread at 8 warps) on large planes: no variant spills on
    sm_80/sm_90 and the fused bilinear backward stays under 150 registers
    (kernels.compile report, tests/test_compile_gate.py).
    """
    block = min(1024, max(32, triton.next_power_of_2(int(npix))))
    return block, (8 if block >= 1024 else 4)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_plane(name: str, t: torch.Tensor, hw_dims=(-2, -1)) -> None:
    # In-plane offsets are int32 (batch/channel offsets are int64).
    extent = sum((t.shape[d] - 1) * abs(t.stride(d)) for d in hw_dims) + 1
    if extent > _I32_MAX:
        raise ValueError(f"kernels.resample: one image plane of {name} spans {extent} elements, more than int32 offsets allow")


def orbit_forward(x: torch.Tensor, mats: torch.Tensor, exact: bool, size: tuple[int, int], padding: str, interpolation: str, out: torch.Tensor) -> torch.Tensor:
    """Write all views of ``x`` (B, C, H, W) through ``mats`` (N, 2, 3) into ``out`` (B, N, C, h, w), any strides."""
    B, C, H, W = x.shape
    N = mats.shape[0]
    h, w = size
    _check_plane("x", x)
    _check_plane("out", out)
    block, warps = resample_config(h * w)
    so = out.stride()
    grid = (B * N * triton.cdiv(h * w, block),)
    resample_kernel[grid](
        x, mats, mats, out, *x.stride(), *so, C, H, W, h, w, N,
        PADDING=PADDING_CODES[padding], NEAREST=interpolation == "nearest", EXACT=bool(exact), USE_INDEX=False,
        OUT_CONTIG=(so[4] == 1 and so[3] == w), ACC=_acc(x.dtype), BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return out


def transform_forward(
    x: torch.Tensor, index: torch.Tensor, mats: torch.Tensor, exact: bool, padding: str, interpolation: str, out: torch.Tensor
) -> torch.Tensor:
    """``out[b] = T_{index[b]} x[b]`` at the input size; ``out`` (B, C, H, W), any strides."""
    B, C, H, W = x.shape
    _check_plane("x", x)
    _check_plane("out", out)
    block, warps = resample_config(H * W)
    so = out.stride()
    grid = (B * triton.cdiv(H * W, block),)
    resample_kernel[grid](
        x, mats, index, out, *x.stride(), so[0], 0, so[1], so[2], so[3], C, H, W, H, W, 1,
        PADDING=PADDING_CODES[padding], NEAREST=interpolation == "nearest", EXACT=bool(exact), USE_INDEX=True,
        OUT_CONTIG=(so[3] == 1 and so[2] == W), ACC=_acc(x.dtype), BLOCK=block, num_warps=warps,
    )  # fmt: skip
    return out


def orbit_backward(
    grad: torch.Tensor, mats: torch.Tensor, exact: bool, in_hw: tuple[int, int], padding: str, interpolation: str, out: torch.Tensor
) -> torch.Tensor:
    """Adjoint of :func:`orbit_forward`: ``out`` (B, C, H, W) ← Σ_n T_nᵀ grad[:, n].

    Exact views with zero padding: one gather launch writing ``out`` directly
    (deterministic). Otherwise a scatter into a zeroed accumulator, then a copy into
    ``out`` (see :func:`resample_push_kernel` for why).
    """
    B, N, C, h, w = grad.shape
    H, W = in_hw
    _check_plane("grad", grad)
    if exact and padding == "zeros":
        block, warps = resample_config(H * W)
        resample_pull_kernel[(B * triton.cdiv(H * W, block),)](
            grad, mats, mats, out, *grad.stride(), *out.stride(), C, H, W, h, w, N,
            USE_INDEX=False, ACC=_acc(out.dtype), BLOCK=block, num_warps=warps,
        )  # fmt: skip
        return out
    accum = torch.zeros((B, C, H, W), dtype=torch.float64 if out.dtype == torch.float64 else torch.float32, device=grad.device)
    block, warps = resample_config(h * w)
    resample_push_kernel[(B * N * triton.cdiv(h * w, block),)](
        grad, mats, mats, accum, *grad.stride(), C, H, W, h, w, N,
        PADDING=PADDING_CODES[padding], NEAREST=interpolation == "nearest", EXACT=bool(exact), USE_INDEX=False,
        ACC=_acc(accum.dtype), BLOCK=block, num_warps=warps,
    )  # fmt: skip
    out.copy_(accum)
    return out


def transform_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    padding: str,
    interpolation: str,
    grad_x: torch.Tensor | None,
    grad_w: torch.Tensor | None,
) -> None:
    """Backward of :func:`transform_forward` in one launch over ``grad`` (B, C, H, W).

    Fills ``grad_x`` (B, C, H, W) with the adjoint of the chosen transforms and
    ``grad_w`` (B, N) with ``<grad[b], T_g x[b]>``; either may be None (not computed).
    The inner products are summed per pixel block in the kernel and over blocks here,
    in a fixed order (deterministic).
    """
    B, C, H, W = grad.shape
    N = mats.shape[0]
    _check_plane("grad", grad)
    _check_plane("x", x)
    block, warps = resample_config(H * W)
    nblk = triton.cdiv(H * W, block)
    acc_dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    pull = bool(exact) and padding == "zeros"
    need_gx, need_dot = grad_x is not None, grad_w is not None
    if need_gx and not pull:
        gx = torch.zeros((B, C, H, W), dtype=acc_dt, device=grad.device)
    else:
        gx = grad_x if need_gx else grad
    dot = torch.empty((B, N, nblk), dtype=acc_dt, device=grad.device) if need_dot else grad
    transform_backward_kernel[(B * nblk,)](
        grad, x, mats, index, gx, dot, *grad.stride(), *x.stride(), *gx.stride(), C, H, W, N,
        PADDING=PADDING_CODES[padding], NEAREST=interpolation == "nearest", EXACT=bool(exact),
        NEED_GX=need_gx, GX_PULL=pull, NEED_DOT=need_dot, ACC=_acc(x.dtype), BLOCK=block, num_warps=warps,
    )  # fmt: skip
    if need_gx and not pull:
        grad_x.copy_(gx)
    if need_dot:
        grad_w.copy_(dot.sum(-1))
