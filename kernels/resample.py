"""Resampling kernels: orbit views, the per-sample transform (canonicalize/invert), their adjoints.

Geometry. A view matrix ``M`` (2×3 float32, row-major, slots ``M00 … M12``) maps output pixel
``(j, i)`` (column, row) to the input coordinate ``u = (M00·j + M01·i) + M02``,
``v = (M10·j + M11·i) + M12``. Sampling matches ``canon.reference`` (and
``grid_sample(align_corners=False)``): pixel centres at integer coordinates, padding
``zeros``/``border``/``reflection`` applied to the coordinates, ``nearest`` rounds half to
even, bilinear taps outside the input read nothing, taps of weight zero read nothing.

Two ways to produce a tile of a view, chosen per program from its matrix:

* **permutation copy**: the matrix is a signed permutation with an integer translation
  (quarter turns, flips, exact crops) and padding is ``zeros``. The source tile is read
  with rows along memory (coalesced, 128-bit where alignment allows), transposed in
  registers/shared memory for quarter turns (``tl.permute``), and stored row-contiguous.
  No arithmetic touches the values: copies are bit-exact.
* **taps**: anything else. Coordinates are computed once per tile and reused by every
  channel; bilinear reads four taps, nearest (and exact views with border/reflection
  padding) one.

Programs own 2-D output tiles (``TILE_H × TILE_W``) and a block of ``CHANNELS`` channels at a
time, so that a warp's rotated gathers stay within a few input rows (L1 hits) and every
channel's loads are issued before the stores. Adjoints are gathers too ("pull"): each
input pixel sums, in a fixed order, the output pixels whose taps read it, found by the
inverse map (a per-view pull table, see ``P_RJ``). Border/reflection padding folds whole half-planes
onto edge pixels (unbounded fan-in): their adjoint pulls the output pixels whose coordinates lie
inside the input (the padding does not change those) and scatters the others with atomics
(:func:`orbit_backward_scatter_kernel`, ``OUT_OF_RANGE``: the corners of rotated crops);
``canon.triton_ops`` routes it to the deterministic reference under
``torch.use_deterministic_algorithms(True)``.

Coordinates and weights are float32 and computed without FMA contraction (the same IEEE
operations as the reference); values accumulate in ``ACC`` (float32, or float64 for float64
tensors) and are cast on store. Batch, view and channel offsets are int64; offsets inside
one image plane are int32 (the launchers check that they fit).

These kernels know tensors, strides and matrices, nothing about groups or training.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

from .launch import acc_dtype, acc_tl, cdiv, dense, float_args, launch, next_power_of_2
from .select import scalar, select_argmax, select_config, select_scores_row

__all__ = [
    "PADDING_CODES",
    "MAT_SLOTS",
    "PULL_SLOTS",
    "resample_config",
    "orbit_forward",
    "orbit_backward",
    "transform_forward",
    "transform_backward",
    "select_transform_forward",
    "orbit_kernel",
    "transform_kernel",
    "select_transform_kernel",
    "orbit_backward_kernel",
    "orbit_backward_scatter_kernel",
    "transform_backward_kernel",
    "orbit_antialias_forward",
    "orbit_antialias_backward",
    "orbit_antialias_kernel",
    "orbit_antialias_backward_kernel",
]

# ----------------------------------------------------------------------------- named constants
PADDING_ZEROS = tl.constexpr(0)
PADDING_BORDER = tl.constexpr(1)
PADDING_REFLECTION = tl.constexpr(2)
PADDING_CODES = {"zeros": 0, "border": 1, "reflection": 2}

# Slots of a view matrix (2×3, row-major) in the (N, MAT_SLOTS) table.
M00 = tl.constexpr(0)
M01 = tl.constexpr(1)
M02 = tl.constexpr(2)
M10 = tl.constexpr(3)
M11 = tl.constexpr(4)
M12 = tl.constexpr(5)
MAT_SLOTS = tl.constexpr(6)

# Slots of the pull table (N, PULL_SLOTS): the inverse affine map (input pixel -> output
# coordinate, same slot order as a view matrix), the half-widths of the window of output
# pixels whose taps can reach one input pixel, and the number of candidates per axis. The
# caller builds it on the host in float64 (canon.geometry.pull_rows); the kernel widens
# each window by 0.01 px on both sides to absorb float32 rounding and starts at the first
# integer inside it.
P_RJ = tl.constexpr(6)
P_RI = tl.constexpr(7)
P_KJ = tl.constexpr(8)
P_KI = tl.constexpr(9)
PULL_SLOTS = tl.constexpr(10)

_I32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- helpers (jit)
@triton.jit
def _load_matrix(table_ptr, elem, SLOTS: tl.constexpr):
    """The six affine slots of row ``g`` of a (N, SLOTS) float32 table."""
    row = table_ptr + elem * SLOTS
    return (
        tl.load(row + M00),
        tl.load(row + M01),
        tl.load(row + M02),
        tl.load(row + M10),
        tl.load(row + M11),
        tl.load(row + M12),
    )


@triton.jit
def _is_permutation(m00, m01, m02, m10, m11, m12):
    """The view is a pixel copy: signed permutation matrix, integer translation."""
    straight = (m01 == 0.0) & (m10 == 0.0) & (tl.abs(m00) == 1.0) & (tl.abs(m11) == 1.0)
    swapped = (m00 == 0.0) & (m11 == 0.0) & (tl.abs(m01) == 1.0) & (tl.abs(m10) == 1.0)
    whole = (m02 == tl.floor(m02)) & (m12 == tl.floor(m12))
    return (straight | swapped) & whole


@triton.jit
def _reads_one_pixel(m00, m01, m02, m10, m11, m12):
    """The oracle's ``permutes_pixels``: linear entries in {0, ±1} and an integer translation, so every output
    pixel samples an integer coordinate and reads that one pixel (wider than :func:`_is_permutation`: a 45°
    view scaled by √2 is one, though not a bijection)."""
    lin = ((m00 == 0.0) | (tl.abs(m00) == 1.0)) & ((m01 == 0.0) | (tl.abs(m01) == 1.0))
    lin = lin & ((m10 == 0.0) | (tl.abs(m10) == 1.0)) & ((m11 == 0.0) | (tl.abs(m11) == 1.0))
    return lin & (m02 == tl.floor(m02)) & (m12 == tl.floor(m12))


@triton.jit
def _load_segments(
    src, chan_off, chan_ok, row_off, row_ok, lo, keep_lo, keep_hi, src_w, s_w, LEN: tl.constexpr, ALIGNED: tl.constexpr
):
    """[CHANNELS, rows, LEN] tile: source columns ``lo, lo + 1, …`` of the rows at ``row_off``
    (valid where ``row_ok``), kept where the column lies in [0, src_w) and its position in
    [keep_lo, keep_hi). ``ALIGNED``: the launcher guarantees ``lo`` is a multiple of 16; the
    column index is then rebuilt as ``(lo // 16) * 16 + j``, the same value, from which the
    compiler proves 16-element alignment and issues 128-bit loads."""
    j = tl.arange(0, LEN)
    if ALIGNED:
        cols = (lo // 16) * 16 + j
    else:
        cols = lo + j
    ok = (
        chan_ok
        & (row_ok[:, None] & ((cols >= 0) & (cols < src_w) & (j >= keep_lo) & (j < keep_hi))[None, :])[None, :, :]
    )
    return tl.load(src + chan_off + (row_off[:, None] + cols[None, :] * s_w)[None, :, :], mask=ok, other=0.0)


@triton.jit
def _permuted_tile(
    src,  # pointer to the source plane's origin (batch/view offset applied)
    chan_off,  # [CHANNELS, 1, 1] int64 source channel offsets
    chan_ok,  # [CHANNELS, 1, 1] which channels exist
    s_h,
    s_w,  # source row and column strides
    src_h,
    src_w,  # source plane size
    m00,
    m01,
    m02,
    m10,
    m11,
    m12,  # the signed permutation (float32 holding integers)
    r,  # [TILE_H] destination rows, r0 + 0..TILE_H-1
    q,  # [TILE_W] destination columns, q0 + 0..TILE_W-1
    r0,
    q0,  # tile origin
    dst_h,
    dst_w,  # destination plane size
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    ALIGNED: tl.constexpr,  # every run starts at a multiple of 16 (see _load_segments)
):
    """Tile [CHANNELS, TILE_H, TILE_W] of the destination pixels (r, q) copied from ``src``
    through a signed permutation; sources outside the plane read 0 (zero padding).

    Every read is a run of ascending source columns (coalesced, vectorised when aligned).
    Straight matrices read the source rows directly; swapped ones (quarter turns) read the
    transposed tile and transpose it (``tl.permute``: a shared-memory transpose). A reversed
    axis is read ascending and reversed in registers (``tl.flip``: bit moves, no arithmetic,
    so copies stay bit-exact, NaN and -0.0 included).
    """
    a = m00.to(tl.int32)
    b = m01.to(tl.int32)
    c = m10.to(tl.int32)
    d = m11.to(tl.int32)
    tx = m02.to(tl.int32)
    ty = m12.to(tl.int32)
    if b == 0:
        # straight: source row from r, source column from q
        s_rows = d * r + ty
        s_row_ok = (r < dst_h) & (s_rows >= 0) & (s_rows < src_h)
        if a > 0:
            tile = _load_segments(
                src, chan_off, chan_ok, s_rows * s_h, s_row_ok, q0 + tx, 0, dst_w - q0, src_w, s_w, TILE_W, ALIGNED
            )
        else:
            seg = _load_segments(
                src,
                chan_off,
                chan_ok,
                s_rows * s_h,
                s_row_ok,
                tx - q0 - (TILE_W - 1),
                q0 + TILE_W - dst_w,
                TILE_W,
                src_w,
                s_w,
                TILE_W,
                ALIGNED,
            )
            tile = tl.flip(seg, 2)
    else:
        # swapped: source row from q, source column from r; read [CHANNELS, TILE_W, TILE_H]
        t_rows = c * q + ty
        t_row_ok = (q < dst_w) & (t_rows >= 0) & (t_rows < src_h)
        if b > 0:
            seg_t = _load_segments(
                src, chan_off, chan_ok, t_rows * s_h, t_row_ok, r0 + tx, 0, dst_h - r0, src_w, s_w, TILE_H, ALIGNED
            )
        else:
            seg_t = _load_segments(
                src,
                chan_off,
                chan_ok,
                t_rows * s_h,
                t_row_ok,
                tx - r0 - (TILE_H - 1),
                r0 + TILE_H - dst_h,
                TILE_H,
                src_w,
                s_w,
                TILE_H,
                ALIGNED,
            )
            seg_t = tl.flip(seg_t, 2)
        tile = tl.permute(seg_t, (0, 2, 1))
    return tile


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
def _reflect_inside(x):
    # _reflect(x, size) for 0 ≤ x ≤ size - 1, operation for operation: |x + 0.5| is x + 0.5 and lies
    # below size - 0.5, so no flip and no clip applies; what is left is (x + 0.5) - 0.5, rounded twice
    return (x + 0.5) - 0.5


@triton.jit
def _round_half_even(x):
    r = tl.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)


@triton.jit
def _source_coords(m00, m01, m02, m10, m11, m12, jf, if_):
    """Input coordinate (u, v) of output pixel (jf, if_), in the reference's operation order."""
    u = (m00 * jf + m01 * if_) + m02
    v = (m10 * jf + m11 * if_) + m12
    return u, v


@triton.jit
def _pad(u, v, Wf, Hf, PADDING: tl.constexpr):
    if PADDING == PADDING_BORDER:
        u = tl.minimum(tl.maximum(u, 0.0), Wf - 1.0)
        v = tl.minimum(tl.maximum(v, 0.0), Hf - 1.0)
    elif PADDING == PADDING_REFLECTION:
        u = _reflect(u, Wf)
        v = _reflect(v, Hf)
    return u, v


@triton.jit
def _taps(u, v, pix_ok, Wf, Hf, ONE_TAP: tl.constexpr, NEAREST: tl.constexpr, skip_zero=False):
    """Taps of padded coordinates (u, v): top-left tap (int32, clamped to [-1, size] so it stays
    representable), the four bilinear weights and the four in-range masks (and'ed with
    ``pix_ok``). One-tap modes (nearest, exact views) use ``wt00``/``k00`` only.

    A bilinear tap of weight 0 is read like the others (NaN · 0 is NaN: the oracle's and aten's
    grid_sample's rule) unless ``skip_zero`` (a scalar): a view whose coordinates are all integers
    (:func:`_reads_one_pixel`) reads its one pixel, as the oracle's (keeping -0.0 and a neighbour's
    NaN out), and a scatter adds nothing for
    ``grad · 0`` (no atomic; as the pull, which skips weight 0 too)."""
    if ONE_TAP:
        if NEAREST:
            u = _round_half_even(u)
            v = _round_half_even(v)
        ok = (u >= 0.0) & (u <= Wf - 1.0) & (v >= 0.0) & (v <= Hf - 1.0) & pix_ok
        ix = tl.minimum(tl.maximum(u, -1.0), Wf).to(tl.int32)
        iy = tl.minimum(tl.maximum(v, -1.0), Hf).to(tl.int32)
        one = tl.full(u.shape, 1.0, tl.float32)
        return ix, iy, one, one, one, one, ok, ok, ok, ok
    else:
        x0 = tl.floor(u)
        y0 = tl.floor(v)
        fx = u - x0
        fy = v - y0
        in_x0 = (x0 >= 0.0) & (x0 <= Wf - 1.0) & pix_ok
        in_x1 = (x0 + 1.0 >= 0.0) & (x0 + 1.0 <= Wf - 1.0) & pix_ok
        in_y0 = (y0 >= 0.0) & (y0 <= Hf - 1.0)
        in_y1 = (y0 + 1.0 >= 0.0) & (y0 + 1.0 <= Hf - 1.0)
        if skip_zero is not False:
            in_x1 = in_x1 & ~tl.where(skip_zero, fx == 0.0, False)
            in_y1 = in_y1 & ~tl.where(skip_zero, fy == 0.0, False)
        ix = tl.minimum(tl.maximum(x0, -1.0), Wf).to(tl.int32)
        iy = tl.minimum(tl.maximum(y0, -1.0), Hf).to(tl.int32)
        gx = 1.0 - fx
        gy = 1.0 - fy
        return ix, iy, gx * gy, fx * gy, gx * fy, fx * fy, in_x0 & in_y0, in_x1 & in_y0, in_x0 & in_y1, in_x1 & in_y1


@triton.jit
def _gather(
    src,
    chan_off,
    chan_ok,
    s_h,
    s_w,
    ix,
    iy,
    wt00,
    wt01,
    wt10,
    wt11,
    k00,
    k01,
    k10,
    k11,
    ACC: tl.constexpr,
    ONE_TAP: tl.constexpr,
):
    """Sample [CHANNELS, TILE_H, TILE_W] at the taps; one-tap modes return the raw values."""
    off = (iy * s_h + ix * s_w)[None, :, :]
    base = src + chan_off + off
    if ONE_TAP:
        return tl.load(base, mask=chan_ok & k00[None, :, :], other=0.0)
    else:
        # every tap's load is issued before the sums; same summation order as the reference; taps
        # outside the input add nothing (their masks), taps of weight 0 add value · 0
        t00 = tl.load(base, mask=chan_ok & k00[None, :, :], other=0.0).to(ACC)
        t01 = tl.load(base + s_w, mask=chan_ok & k01[None, :, :], other=0.0).to(ACC)
        t10 = tl.load(base + s_h, mask=chan_ok & k10[None, :, :], other=0.0).to(ACC)
        t11 = tl.load(base + s_h + s_w, mask=chan_ok & k11[None, :, :], other=0.0).to(ACC)
        t = t00 * wt00[None, :, :]
        t = tl.where(k01[None, :, :], t + t01 * wt01[None, :, :], t)
        t = tl.where(k10[None, :, :], t + t10 * wt10[None, :, :], t)
        return tl.where(k11[None, :, :], t + t11 * wt11[None, :, :], t)


@triton.jit
def _tile_coords(t, w, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """Rows [TILE_H], columns [TILE_W] and origin (r0, q0) of tile ``t`` of a plane ``w`` columns wide."""
    n_cols = tl.cdiv(w, TILE_W)
    ti = t // n_cols
    r0 = ti * TILE_H
    q0 = (t - ti * n_cols) * TILE_W
    return r0 + tl.arange(0, TILE_H), q0 + tl.arange(0, TILE_W), r0, q0


@triton.jit
def _channels(c0, C, N_PERM, chan_perm_row, s_c, CHANNELS: tl.constexpr, CHANNEL_PERM: tl.constexpr):
    """(channels [CHANNELS], source offsets [CHANNELS,1,1] int64, exists [CHANNELS,1,1]) of chunk ``c0``.

    ``CHANNEL_PERM``: channels are grouped (K, N_PERM) and channel ``k·N_PERM + h`` reads
    source channel ``k·N_PERM + chan_perm_row[h]`` (the regular representation's group axis).
    """
    c = c0 + tl.arange(0, CHANNELS)
    ok = c < C
    src = c
    if CHANNEL_PERM:
        k = c // N_PERM
        src = k * N_PERM + tl.load(chan_perm_row + (c - k * N_PERM), mask=ok, other=0).to(tl.int32)
    return c, (src.to(tl.int64) * s_c)[:, None, None], ok[:, None, None]


@triton.jit
def _channel_at(c, C, N_PERM, chan_perm_row, s_c, CHANNEL_PERM: tl.constexpr):
    """(source offset, exists) of the one channel ``c``: :func:`_channels` for a scalar channel."""
    ok = c < C
    src = c
    if CHANNEL_PERM:
        k = c // N_PERM
        src = k * N_PERM + tl.load(chan_perm_row + (c - k * N_PERM), mask=ok, other=0).to(tl.int32)
    return tl.cast(src, tl.int64) * s_c, ok


@triton.jit
def _resample_tile(
    x_img,  # pointer to image b of the source (B, C, H, W)
    out_view,  # pointer to the destination plane set (view n of image b)
    mats_ptr,  # (N, MAT_SLOTS) float32 view matrices
    elem,  # which matrix this program applies
    chan_perm_row,  # (N_PERM,) int64 row of the channel permutation table (CHANNEL_PERM)
    t,  # tile index in the destination plane
    sx_c,
    sx_h,
    sx_w,
    so_c,
    so_h,
    so_w,
    C,
    H,
    W,  # source size
    h,
    w,  # destination size
    N_PERM,
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    ALL_EXACT: tl.constexpr,  # every matrix of the launch is a permutation: taps code for padded copies only
    ALIGNED: tl.constexpr,  # every view a zero-padded permutation with 16-aligned runs: tile copies
    CHANNEL_PERM: tl.constexpr,
    ACC: tl.constexpr,
    CHANNELS: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    FAMILY: tl.constexpr = False,  # also store the tile, turned, into the views of the family's members
    out_img=None,  # (FAMILY) pointer to the destination views of image b (view n: + n · so_n)
    so_n=0,  # (FAMILY) view stride
    g1=-1,
    g2=-1,
    g3=-1,  # (FAMILY) the views that are this one turned by 1, 2, 3 quarter turns, or −1
):
    """One destination tile of one view, every channel, in chunks of CHANNELS (and, with ``FAMILY``, the
    same values turned into the views ``g1``, ``g2``, ``g3``: see :func:`_store_turned`)."""
    tl.static_assert(not (FAMILY and ALIGNED), "_resample_tile: families are sampled views, not tile copies")
    r, q, r0, q0 = _tile_coords(t, w, TILE_H, TILE_W)
    m00, m01, m02, m10, m11, m12 = _load_matrix(mats_ptr, elem, MAT_SLOTS)
    pix_ok = (r < h)[:, None] & (q < w)[None, :]
    out_off = (r[:, None] * so_h + q[None, :] * so_w)[None, :, :]
    out_ty = out_view.dtype.element_ty
    # ALIGNED (set by the launcher): every view is a zero-padded permutation whose runs start at
    # multiples of 16, so tiles are copies. Other permutations take the one-tap gather below
    # (still exact: no arithmetic on the values).
    if ALIGNED:
        for c0 in range(0, C, CHANNELS):
            c, src_off, c_ok = _channels(c0, C, N_PERM, chan_perm_row, sx_c, CHANNELS, CHANNEL_PERM)
            tile = _permuted_tile(
                x_img,
                src_off,
                c_ok,
                sx_h,
                sx_w,
                H,
                W,
                m00,
                m01,
                m02,
                m10,
                m11,
                m12,
                r,
                q,
                r0,
                q0,
                h,
                w,
                TILE_H,
                TILE_W,
                ALIGNED,
            )
            tl.store(
                out_view + (c.to(tl.int64) * so_c)[:, None, None] + out_off,
                tile.to(out_ty),
                mask=c_ok & pix_ok[None, :, :],
            )
    else:
        Wf = W * 1.0
        Hf = H * 1.0
        u, v = _source_coords(m00, m01, m02, m10, m11, m12, q[None, :].to(tl.float32), r[:, None].to(tl.float32))
        u, v = _pad(u, v, Wf, Hf, PADDING)
        one_pixel = _reads_one_pixel(m00, m01, m02, m10, m11, m12)
        ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11 = _taps(
            u, v, pix_ok, Wf, Hf, ALL_EXACT or NEAREST, NEAREST, one_pixel
        )
        for c0 in range(0, C, CHANNELS):
            c, src_off, c_ok = _channels(c0, C, N_PERM, chan_perm_row, sx_c, CHANNELS, CHANNEL_PERM)
            val = _gather(
                x_img,
                src_off,
                c_ok,
                sx_h,
                sx_w,
                ix,
                iy,
                wt00,
                wt01,
                wt10,
                wt11,
                k00,
                k01,
                k10,
                k11,
                ACC,
                ALL_EXACT or NEAREST,
            )
            tl.store(
                out_view + (c.to(tl.int64) * so_c)[:, None, None] + out_off,
                val.to(out_ty),
                mask=c_ok & pix_ok[None, :, :],
            )
            if FAMILY:
                chan = (c.to(tl.int64) * so_c)[:, None, None]
                keep = c_ok & pix_ok[None, :, :]
                turned = val.to(out_ty)
                _store_turned(out_img, so_n, chan, so_h, so_w, r, q, w, g1, 1, turned, keep)
                _store_turned(out_img, so_n, chan, so_h, so_w, r, q, w, g2, 2, turned, keep)
                _store_turned(out_img, so_n, chan, so_h, so_w, r, q, w, g3, 3, turned, keep)


@triton.jit
def _turned_offsets(r, q, w, s_h, s_w, K: tl.constexpr):
    """[1, TILE_H, TILE_W] offsets in a square ``w × w`` plane of the pixels ``Q_K⁻¹ (q, r)`` of a tile (rows
    ``r``, columns ``q``): where a view turned by ``K`` quarter turns of the output grid holds the tile's
    pixels, ``Q_1 (j, i) = (s − i, j)`` with s = w − 1 (``canon.geometry.quarter_turn_families``)."""
    s = w - 1
    if K == 0:
        off = r[:, None] * s_h + q[None, :] * s_w
    elif K == 1:
        off = (s - q)[None, :] * s_h + r[:, None] * s_w
    elif K == 2:
        off = (s - r)[:, None] * s_h + (s - q)[None, :] * s_w
    else:
        off = q[None, :] * s_h + (s - r)[:, None] * s_w
    return off[None, :, :]


@triton.jit
def _store_turned(out_img, so_n, chan, so_h, so_w, r, q, w, g, K: tl.constexpr, val, keep):
    """Store a tile of view ``n`` into view ``g`` (nothing when ``g`` < 0), the view whose matrix is view n's
    composed with ``K`` quarter turns of the output grid: ``out_g[p] = out_n[Q_K p]``, so the tile's pixel
    (j, i) = (q, r) lands at ``Q_K⁻¹ (q, r)`` (:func:`_turned_offsets`)."""
    off = _turned_offsets(r, q, w, so_h, so_w, K)
    tl.store(out_img + g.to(tl.int64) * so_n + chan + off, val, mask=keep & (g >= 0))


# ----------------------------------------------------------------------------- forward kernels
@triton.jit
def orbit_kernel(
    # pointers
    x_ptr,  # (B, C, H, W) input, any strides
    mats_ptr,  # (N, MAT_SLOTS) float32 view matrices, contiguous
    fam_ptr,  # (NV, 4) int32 quarter-turn families [base, g1, g2, g3] (FAMILIES), else unused
    out_ptr,  # (B, N, C, h, w) views, any strides
    # strides (elements)
    sx_b,
    sx_c,
    sx_h,
    sx_w,
    so_b,
    so_n,
    so_c,
    so_h,
    so_w,
    # sizes
    C,
    H,
    W,  # input plane
    h,
    w,  # view plane
    NV,  # programs' views per image: N, or the number of families (FAMILIES)
    # meta-parameters
    PADDING: tl.constexpr,  # PADDING_ZEROS | PADDING_BORDER | PADDING_REFLECTION
    NEAREST: tl.constexpr,  # nearest instead of bilinear
    ALL_EXACT: tl.constexpr,  # every matrix is a permutation
    ALIGNED: tl.constexpr,  # permutation reads start at multiples of 16
    ACC: tl.constexpr,  # accumulation dtype
    CHANNELS: tl.constexpr,  # channels per chunk
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    FAMILIES: tl.constexpr,  # one program per (b, family, tile) samples its base view and stores all members
):
    """``out[b, n] = view n of x[b]``: one program per (b, n, output tile); with ``FAMILIES``, per
    (b, family, tile): the base view's tile is sampled once and stored, turned, into its members' views."""
    pid = tl.program_id(0)
    tiles = tl.cdiv(h, TILE_H) * tl.cdiv(w, TILE_W)
    view = pid // tiles
    b = view // NV
    n = view - b * NV
    g1 = -1
    g2 = -1
    g3 = -1
    if FAMILIES:
        row = fam_ptr + n * 4
        g1 = tl.load(row + 1)
        g2 = tl.load(row + 2)
        g3 = tl.load(row + 3)
        n = tl.load(row)
    out_img = out_ptr + b.to(tl.int64) * so_b
    _resample_tile(
        x_ptr + b.to(tl.int64) * sx_b, out_img + n.to(tl.int64) * so_n, mats_ptr, n, x_ptr,
        pid - view * tiles,
        sx_c, sx_h, sx_w, so_c, so_h, so_w, C, H, W, h, w, 1,
        PADDING, NEAREST, ALL_EXACT, ALIGNED, False, ACC, CHANNELS, TILE_H, TILE_W,
        FAMILIES, out_img, so_n, g1, g2, g3,
    )  # fmt: skip


@triton.jit
def transform_kernel(
    # pointers
    x_ptr,  # (B, C, H, W) input, any strides
    mats_ptr,  # (N, MAT_SLOTS) float32 matrices, one per element
    index_ptr,  # (B,) int64 element per image; out-of-range indices give NaN images
    chan_perm_ptr,  # (N, N_PERM) int64 channel permutation per element (CHANNEL_PERM) else unused
    out_ptr,  # (B, C, H, W) output, any strides
    # strides
    sx_b,
    sx_c,
    sx_h,
    sx_w,
    so_b,
    so_c,
    so_h,
    so_w,
    # sizes
    C,
    H,
    W,
    N,  # number of matrices (the valid index range)
    N_PERM,  # group order of the channel grouping (CHANNEL_PERM)
    # meta-parameters
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    ALL_EXACT: tl.constexpr,
    ALIGNED: tl.constexpr,
    CHANNEL_PERM: tl.constexpr,
    ACC: tl.constexpr,
    CHANNELS: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    """``out[b] = T_{index[b]} x[b]`` at the input size: one program per (b, tile)."""
    pid = tl.program_id(0)
    tiles = tl.cdiv(H, TILE_H) * tl.cdiv(W, TILE_W)
    b = pid // tiles
    elem = tl.load(index_ptr + b)
    out_b = out_ptr + b.to(tl.int64) * so_b
    if (elem >= 0) & (elem < N):
        _resample_tile(
            x_ptr + b.to(tl.int64) * sx_b, out_b, mats_ptr, elem, chan_perm_ptr + elem * N_PERM, pid - b * tiles,
            sx_c, sx_h, sx_w, so_c, so_h, so_w, C, H, W, H, W, N_PERM,
            PADDING, NEAREST, ALL_EXACT, ALIGNED, CHANNEL_PERM, ACC, CHANNELS, TILE_H, TILE_W,
        )  # fmt: skip
    else:
        _poison_tile(out_b, pid - b * tiles, so_c, so_h, so_w, C, H, W, CHANNELS, TILE_H, TILE_W)


@triton.jit
def _poison_tile(
    out_img, t, so_c, so_h, so_w, C, h, w, CHANNELS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr
):
    """NaN into one tile: an element index outside the table must not read outside it, nor look valid."""
    r, q, r0, q0 = _tile_coords(t, w, TILE_H, TILE_W)
    pix_ok = ((r < h)[:, None] & (q < w)[None, :])[None, :, :]
    off = (r[:, None] * so_h + q[None, :] * so_w)[None, :, :]
    for c0 in range(0, C, CHANNELS):
        c = c0 + tl.arange(0, CHANNELS)
        nan = tl.full([CHANNELS, TILE_H, TILE_W], float("nan"), tl.float32)
        tl.store(
            out_img + (c.to(tl.int64) * so_c)[:, None, None] + off,
            nan.to(out_img.dtype.element_ty),
            mask=(c < C)[:, None, None] & pix_ok,
        )


@triton.jit
def select_transform_kernel(
    # pointers
    v_ptr,  # (B, N, D) orbit vectors, any strides
    r_ptr,  # (D,) reference vector
    x_ptr,  # (B, C, H, W) images
    mats_ptr,  # (N, MAT_SLOTS) float32 matrices
    scores_ptr,  # (B, N) ACC, contiguous: written by each image's first tile
    probs_ptr,  # (B, N) ACC
    index_ptr,  # (B,) int64
    onehot_ptr,  # (B, N) ACC
    out_ptr,  # (B, C, H, W) canonical images, any strides
    # strides
    sv_b,
    sv_n,
    sv_d,
    sr_d,
    sx_b,
    sx_c,
    sx_h,
    sx_w,
    so_b,
    so_c,
    so_h,
    so_w,
    # sizes
    N,
    D,
    C,
    H,
    W,
    # runtime scalars (each with its float32 rest, NAME_lo: kernels.launch.float_args)
    beta,  # inverse temperature of the softmax
    beta_lo,
    eps,  # norm clamp of the cosine
    eps_lo,
    # meta-parameters
    COSINE: tl.constexpr,
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    ALL_EXACT: tl.constexpr,
    ALIGNED: tl.constexpr,
    SCORE_ACC: tl.constexpr,  # accumulation dtype of the scores (the select kernel's)
    ACC: tl.constexpr,  # accumulation dtype of the resampling
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CHANNELS: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    """Eval canonicalization in one launch: scores of image b's orbit vectors, argmax (ties to the
    lowest index), then ``out[b] = T_{argmax} x[b]``. The scores come from the same helper as
    the select kernel (same values, same choice)."""
    beta = scalar(beta, beta_lo, SCORE_ACC)
    eps = scalar(eps, eps_lo, SCORE_ACC)
    pid = tl.program_id(0)
    tiles = tl.cdiv(H, TILE_H) * tl.cdiv(W, TILE_W)
    b = pid // tiles
    t = pid - b * tiles
    s, n, n_ok = select_scores_row(
        v_ptr + b.to(tl.int64) * sv_b, sv_n, sv_d, r_ptr, sr_d, N, D, eps, COSINE, SCORE_ACC, BLOCK_N, BLOCK_D
    )
    logits = tl.where(n_ok, beta * s, -float("inf"))
    elem = select_argmax(logits, n, n_ok, BLOCK_N)
    if t == 0:
        e = tl.where(n_ok, tl.exp(logits - tl.max(logits, axis=0)), 0.0)
        row = b.to(tl.int64) * N + n
        tl.store(scores_ptr + row, s, mask=n_ok)
        tl.store(probs_ptr + row, e / tl.sum(e, axis=0), mask=n_ok)
        tl.store(onehot_ptr + row, tl.where(n == elem, 1.0, 0.0), mask=n_ok)
        tl.store(index_ptr + b, elem.to(tl.int64))
    _resample_tile(
        x_ptr + b.to(tl.int64) * sx_b, out_ptr + b.to(tl.int64) * so_b, mats_ptr, elem, x_ptr, t,
        sx_c, sx_h, sx_w, so_c, so_h, so_w, C, H, W, H, W, 1,
        PADDING, NEAREST, ALL_EXACT, ALIGNED, False, ACC, CHANNELS, TILE_H, TILE_W,
    )  # fmt: skip


# ----------------------------------------------------------------------------- adjoints (pull)
@triton.jit
def _stack_channels(acc0, acc1, acc2, acc3, CHANNELS: tl.constexpr):
    """[CHANNELS, TILE_H, TILE_W] whose channel k is the 2-D ``acc<k>`` (k < CHANNELS ≤ 4)."""
    ch = tl.arange(0, CHANNELS)[:, None, None]
    acc = tl.where(ch == 0, acc0[None, :, :], acc1[None, :, :])
    if CHANNELS > 2:
        acc = tl.where(ch == 2, acc2[None, :, :], tl.where(ch == 3, acc3[None, :, :], acc))
    return acc


@triton.jit
def _load_channel(at, o, e, ok, CHECK_C: tl.constexpr):
    """The gradient of one channel (offset ``o``) at ``at`` where ``ok`` (and, with ``CHECK_C``, where the
    channel exists: ``e``), else 0."""
    if CHECK_C:
        g = tl.load(at + o, mask=ok & e, other=0.0)
    else:
        g = tl.load(at + o, mask=ok, other=0.0)
    return g


@triton.jit
def _add_channels(
    acc0,
    acc1,
    acc2,
    acc3,  # [TILE_H, TILE_W] sums of the block's channels (those past LIVE unused)
    at,  # [TILE_H, TILE_W] pointers to the gradient pixels read, channel offsets not yet added
    o0,
    o1,
    o2,
    o3,  # channel offsets
    e0,
    e1,
    e2,
    e3,  # which channels exist (read only with CHECK_C)
    ok,  # [TILE_H, TILE_W] which pixels read anything
    wt,  # their weight ([TILE_H, TILE_W], or 1.0 for a copy)
    ACC: tl.constexpr,
    LIVE: tl.constexpr,  # channels of the block (at most 4)
    CHECK_C: tl.constexpr,  # whether a block's channels may pass the last one (else no test per load)
):
    """``acc<k> += wt × grad[channel k] at at`` (one fused multiply-add) for each of the block's ``LIVE``
    channels; every channel's load is issued before the sums."""
    g0 = _load_channel(at, o0, e0, ok, CHECK_C)
    if LIVE > 1:
        g1 = _load_channel(at, o1, e1, ok, CHECK_C)
    if LIVE > 2:
        g2 = _load_channel(at, o2, e2, ok, CHECK_C)
    if LIVE > 3:
        g3 = _load_channel(at, o3, e3, ok, CHECK_C)
    acc0 = tl.fma(g0.to(ACC), wt, acc0)
    if LIVE > 1:
        acc1 = tl.fma(g1.to(ACC), wt, acc1)
    if LIVE > 2:
        acc2 = tl.fma(g2.to(ACC), wt, acc2)
    if LIVE > 3:
        acc3 = tl.fma(g3.to(ACC), wt, acc3)
    return acc0, acc1, acc2, acc3


@triton.jit
def _pull_tile(
    acc0,
    acc1,
    acc2,
    acc3,  # [TILE_H, TILE_W] ACC sums so far of channels c0 .. c0 + 3 (those past CHANNELS unused)
    grad_view,  # pointer to the gradient planes of one view of one image
    pull_ptr,  # (N, PULL_SLOTS) float32 pull table
    mats_ptr,
    elem,  # which view
    c0,  # first channel of the block (channels c0 .. c0 + CHANNELS - 1 of the input gradient)
    C,  # channel count
    N_PERM,  # (CHANNEL_PERM) size of a channel group
    perm_row,  # (CHANNEL_PERM) pointer to the gradient channel of each input channel in a group
    sg_c,
    sg_h,
    sg_w,  # gradient strides
    h,
    w,  # gradient (view) plane size
    r,
    q,  # [TILE_H] input rows V, [TILE_W] input columns U
    r0,
    q0,  # tile origin
    H,
    W,  # input plane size
    NEAREST: tl.constexpr,
    ALL_EXACT: tl.constexpr,  # every view is a permutation: only the copy path is compiled
    ALIGNED: tl.constexpr,
    ACC: tl.constexpr,
    CHANNELS: tl.constexpr,  # channels of the stacked block (a power of 2, at least LIVE)
    LIVE: tl.constexpr,  # channels c0 .. c0 + LIVE - 1 are read (LIVE ≤ CHANNELS, ≤ 4)
    CHECK_C: tl.constexpr,  # whether some of them may not exist (c ≥ C): tested per load
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    PADDING: tl.constexpr,  # zeros: every output pixel; border/reflection: those inside the input only
    CHANNEL_PERM: tl.constexpr,  # input channel k·N_PERM + j reads gradient channel k·N_PERM + perm_row[j]
):
    """Adds the adjoint of one zero-padded view at input pixels (r, q) (Σ over the view's output
    pixels whose taps read (r, q) of tap weight × gradient) to ``acc0 .. acc3``; returns them.

    Permutation views read the one output pixel the inverse permutation names. Other views
    enumerate the window of candidate output pixels around the inverse image of the input
    pixel (pull table) and recompute each candidate's forward taps with the forward's
    operations, so the weights are exactly the forward's. That arithmetic, not memory, bounds
    the pull, so it is done once per pixel for every channel of the block: one 2-D accumulator
    per channel (at most 4), each candidate's weight and address shared by the channels' loads,
    kept by the caller across the views and stacked once (:func:`_stack_channels`). (A
    [CHANNELS, TILE_H, TILE_W] accumulator let the compiler spread the channels over threads,
    each of which recomputed its pixel's weights; stacking after every view cost a shared-memory
    layout change with 8 barriers per view.)

    ``PADDING`` border/reflection: the part of the view's adjoint that a pull can do. An output
    pixel whose coordinate lies in ``[0, W-1] × [0, H-1]`` samples the same taps under every
    padding, so it is pulled here; the others (their taps folded onto the edge by the padding)
    are left to a scatter (``orbit_backward_scatter_kernel`` with ``OUT_OF_RANGE``). Border
    leaves such a coordinate unchanged; reflection computes it as ``(u + 0.5) - 0.5``, which can
    move it by one float32 rounding, so its weights are taken at that coordinate, as the
    forward's are (:func:`_reflect_inside`). A permutation's pixel that reads (r, q) has exactly
    the coordinate (r, q), so that path needs no test.
    """
    tl.static_assert(CHANNELS <= 4, "_pull_tile: at most 4 channels per block")
    tl.static_assert(LIVE <= CHANNELS, "_pull_tile: LIVE channels of a block of CHANNELS")
    m00, m01, m02, m10, m11, m12 = _load_matrix(mats_ptr, elem, MAT_SLOTS)
    p00, p01, p02, p10, p11, p12 = _load_matrix(pull_ptr, elem, PULL_SLOTS)
    # the block's channels: gradient offset and existence of each (those past LIVE unused)
    o0, e0 = _channel_at(c0, C, N_PERM, perm_row, sg_c, CHANNEL_PERM)
    o1, e1 = o0, e0
    o2, e2 = o0, e0
    o3, e3 = o0, e0
    if LIVE > 1:
        o1, e1 = _channel_at(c0 + 1, C, N_PERM, perm_row, sg_c, CHANNEL_PERM)
    if LIVE > 2:
        o2, e2 = _channel_at(c0 + 2, C, N_PERM, perm_row, sg_c, CHANNEL_PERM)
    if LIVE > 3:
        o3, e3 = _channel_at(c0 + 3, C, N_PERM, perm_row, sg_c, CHANNEL_PERM)
    if ALL_EXACT:
        exact = True
    else:
        exact = _is_permutation(m00, m01, m02, m10, m11, m12)
    if exact:
        # the adjoint of a zero-padded permutation is the inverse permutation, zero-padded
        if ALIGNED:
            # (the tile-copy configuration): one [CHANNELS, TILE_H, TILE_W] copy, split by channel
            _, chan_off, chan_ok = _channels(c0, C, N_PERM, perm_row, sg_c, CHANNELS, CHANNEL_PERM)
            tile = _permuted_tile(
                grad_view,
                chan_off,
                chan_ok,
                sg_h,
                sg_w,
                h,
                w,
                p00,
                p01,
                p02,
                p10,
                p11,
                p12,
                r,
                q,
                r0,
                q0,
                H,
                W,
                TILE_H,
                TILE_W,
                ALIGNED,
            ).to(ACC)
            ch = tl.arange(0, CHANNELS)[:, None, None]
            acc0 += tl.sum(tl.where(ch == 0, tile, 0.0), axis=0)
            if CHANNELS > 1:
                acc1 += tl.sum(tl.where(ch == 1, tile, 0.0), axis=0)
            if CHANNELS > 2:
                acc2 += tl.sum(tl.where(ch == 2, tile, 0.0), axis=0)
                acc3 += tl.sum(tl.where(ch == 3, tile, 0.0), axis=0)
        else:
            in_ok = (r < H)[:, None] & (q < W)[None, :]
            u, v = _source_coords(p00, p01, p02, p10, p11, p12, q[None, :].to(tl.float32), r[:, None].to(tl.float32))
            ix, iy, _, _, _, _, k00, _, _, _ = _taps(u, v, in_ok, w * 1.0, h * 1.0, True, False)
            at = grad_view + (iy * sg_h + ix * sg_w)
            acc0, acc1, acc2, acc3 = _add_channels(
                acc0, acc1, acc2, acc3, at, o0, o1, o2, o3, e0, e1, e2, e3, k00, 1.0, ACC, LIVE, CHECK_C
            )
    else:
        row = pull_ptr + elem * PULL_SLOTS
        rj = tl.load(row + P_RJ)
        ri = tl.load(row + P_RI)
        kj = tl.load(row + P_KJ).to(tl.int32)
        ki = tl.load(row + P_KI).to(tl.int32)
        uu = q[None, :].to(tl.float32)
        vv = r[:, None].to(tl.float32)
        # first candidate per axis: the first integer inside the open window around the inverse image
        j0 = tl.floor((p00 * uu + p01 * vv) + p02 - rj - 0.01).to(tl.int32) + 1
        i0 = tl.floor((p10 * uu + p11 * vv) + p12 - ri - 0.01).to(tl.int32) + 1
        w_last = W - 1.0  # (border/reflection) the input's last column and row
        h_last = H - 1.0
        for di in range(ki):
            ii = i0 + di
            for dj in range(kj):
                jj = j0 + dj
                # (pixels past the input's edge, r ≥ H or q ≥ W, read valid gradient pixels too: never stored;
                # a candidate outside the view is masked, its address never dereferenced)
                ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
                u, v = _source_coords(m00, m01, m02, m10, m11, m12, jj.to(tl.float32), ii.to(tl.float32))
                if PADDING != PADDING_ZEROS:
                    # the in-range part: the test on the coordinate itself, as the scatter of the rest tests it
                    ok = ok & (tl.minimum(u, v) >= 0.0) & (u <= w_last) & (v <= h_last)
                if PADDING == PADDING_REFLECTION:
                    u = _reflect_inside(u)
                    v = _reflect_inside(v)
                if NEAREST:
                    wt = tl.where((_round_half_even(u) == uu) & (_round_half_even(v) == vv), 1.0, 0.0)
                else:
                    x0 = tl.floor(u)
                    y0 = tl.floor(v)
                    fx = u - x0
                    fy = v - y0
                    # (the second tap's weight is fx; where fx is 0 so is wt, and the pixel is masked below)
                    wx = tl.where(x0 == uu, 1.0 - fx, tl.where(x0 + 1.0 == uu, fx, 0.0))
                    wy = tl.where(y0 == vv, 1.0 - fy, tl.where(y0 + 1.0 == vv, fy, 0.0))
                    wt = wx * wy
                ok = ok & (wt != 0.0)
                at = grad_view + (ii * sg_h + jj * sg_w)
                acc0, acc1, acc2, acc3 = _add_channels(
                    acc0, acc1, acc2, acc3, at, o0, o1, o2, o3, e0, e1, e2, e3, ok, wt, ACC, LIVE, CHECK_C
                )
    return acc0, acc1, acc2, acc3


@triton.jit
def orbit_backward_kernel(
    # pointers
    grad_ptr,  # (B, N, C, h, w) gradient of the views, any strides
    mats_ptr,  # (N, MAT_SLOTS) float32 view matrices
    pull_ptr,  # (N, PULL_SLOTS) float32 pull table
    gx_ptr,  # (B, C, H, W) gradient of the input, any strides; written once
    # strides
    sg_b,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    sgx_b,
    sgx_c,
    sgx_h,
    sgx_w,
    # sizes
    C,
    H,
    W,
    h,
    w,
    N,
    # meta-parameters
    NEAREST: tl.constexpr,
    ALL_EXACT: tl.constexpr,
    ALIGNED: tl.constexpr,
    ACC: tl.constexpr,
    CHANNELS: tl.constexpr,  # channels stacked per block (a power of 2)
    LIVE: tl.constexpr,  # channels read per block (≤ CHANNELS; see _channel_blocks)
    CHECK_C: tl.constexpr,  # whether a block may pass the last channel
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    PADDING: tl.constexpr,  # zeros: all of the adjoint; border/reflection: its in-range part (see _pull_tile)
):
    """Adjoint of a zero-padded :func:`orbit_kernel` by gather: ``gx[b] = Σ_n T_nᵀ g[b, n]``,
    views summed in order n = 0, 1, … (deterministic, no atomics). One program per (b, input tile)."""
    pid = tl.program_id(0)
    tiles = tl.cdiv(H, TILE_H) * tl.cdiv(W, TILE_W)
    b = pid // tiles
    r, q, r0, q0 = _tile_coords(pid - b * tiles, W, TILE_H, TILE_W)
    grad_b = grad_ptr + b.to(tl.int64) * sg_b
    gx_b = gx_ptr + b.to(tl.int64) * sgx_b
    for c0 in range(0, C, LIVE):
        k = tl.arange(0, CHANNELS)
        c = c0 + k
        c_ok = ((k < LIVE) & (c < C))[:, None, None]
        acc0 = tl.zeros([TILE_H, TILE_W], dtype=ACC)  # one 2-D sum per channel, stacked after the views
        acc1 = tl.zeros([TILE_H, TILE_W], dtype=ACC)
        acc2 = tl.zeros([TILE_H, TILE_W], dtype=ACC)
        acc3 = tl.zeros([TILE_H, TILE_W], dtype=ACC)
        grad_view = grad_b  # advanced by the view stride: 64-bit addresses, no int32 product
        for n in range(N):
            acc0, acc1, acc2, acc3 = _pull_tile(
                acc0,
                acc1,
                acc2,
                acc3,
                grad_view,
                pull_ptr,
                mats_ptr,
                n,
                c0,
                C,
                1,
                pull_ptr,  # (no channel permutation)
                sg_c,
                sg_h,
                sg_w,
                h,
                w,
                r,
                q,
                r0,
                q0,
                H,
                W,
                NEAREST,
                ALL_EXACT,
                ALIGNED,
                ACC,
                CHANNELS,
                LIVE,
                CHECK_C,
                TILE_H,
                TILE_W,
                PADDING,
                False,
            )
            grad_view += sg_n
        acc = _stack_channels(acc0, acc1, acc2, acc3, CHANNELS)
        # (the store's offsets and mask made after the views: fewer registers live through their loop)
        pix_ok = ((r < H)[:, None] & (q < W)[None, :])[None, :, :]
        gx_off = (r[:, None] * sgx_h + q[None, :] * sgx_w)[None, :, :]
        tl.store(
            gx_b + (c.to(tl.int64) * sgx_c)[:, None, None] + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=c_ok & pix_ok
        )


@triton.jit
def _view_dot(
    x_b,  # pointer to one image of x
    grad_b,  # pointer to the same image of the output gradient
    grad_tile_off,  # [1, TILE_H, TILE_W] the tile's offsets in a gradient plane
    pix_ok,  # [TILE_H, TILE_W] pixels inside the plane
    m00,
    m01,
    m02,
    m10,
    m11,
    m12,  # the view's matrix
    r,
    q,  # [TILE_H] rows, [TILE_W] columns
    Wf,
    Hf,  # plane size (float)
    perm_row,  # (CHANNEL_PERM) source channel of each channel in a group
    C,
    N_PERM,
    sx_c,
    sx_h,
    sx_w,
    sg_c,
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    CHANNEL_PERM: tl.constexpr,
    ACC: tl.constexpr,
    ONE_TAP: tl.constexpr,  # nearest, or a permutation view: one tap per pixel
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    """[1, TILE_H, TILE_W] per-pixel share of ``<grad[b], T x[b]>`` over every channel, for one view T.

    The taps are computed once and serve every channel; channels one at a time, each a 2-D gather
    (a [CHANNELS, ...] block spread the channels over threads, which recomputed the taps)."""
    part = tl.zeros([1, TILE_H, TILE_W], dtype=ACC)
    u, v = _source_coords(m00, m01, m02, m10, m11, m12, q[None, :].to(tl.float32), r[:, None].to(tl.float32))
    u, v = _pad(u, v, Wf, Hf, PADDING)
    ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11 = _taps(u, v, pix_ok, Wf, Hf, ONE_TAP, NEAREST)
    for c in range(0, C):
        src_off, c_ok = _channel_at(c, C, N_PERM, perm_row, sx_c, CHANNEL_PERM)
        xs = _gather(
            x_b, src_off, c_ok, sx_h, sx_w, ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11, ACC, ONE_TAP
        ).to(ACC)
        gv = tl.load(grad_b + tl.cast(c, tl.int64) * sg_c + grad_tile_off, mask=pix_ok[None, :, :], other=0.0)
        part += xs * gv.to(ACC)
    return part


@triton.jit
def _family_dot(
    x_b,  # pointer to one image of x
    grad_b,  # pointer to the same image of the output gradient
    pix_ok,  # [TILE_H, TILE_W] pixels inside the (square) plane
    m00,
    m01,
    m02,
    m10,
    m11,
    m12,  # the family's base view
    g1,
    g2,
    g3,  # its members turned by 1, 2, 3 quarter turns, or −1
    r,
    q,  # [TILE_H] rows, [TILE_W] columns
    W,  # plane side
    C,
    sx_c,
    sx_h,
    sx_w,
    sg_c,
    sg_h,
    sg_w,
    PADDING: tl.constexpr,
    ACC: tl.constexpr,
    ONE_TAP: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    """Per-pixel shares of ``<grad[b], T_g x[b]>`` for the four views of a quarter-turn family from one
    sample of the base view: member k's view is the base's turned, ``(T_gk x)(p) = (T_base x)(Q_k p)``,
    so its inner product is Σ_q grad(Q_k⁻¹ q)·(T_base x)(q), the gradient read at the turned pixel
    (:func:`_turned_offsets`). Returns four [1, TILE_H, TILE_W] tensors (base, k = 1, 2, 3)."""
    part0 = tl.zeros([1, TILE_H, TILE_W], dtype=ACC)
    part1 = tl.zeros([1, TILE_H, TILE_W], dtype=ACC)
    part2 = tl.zeros([1, TILE_H, TILE_W], dtype=ACC)
    part3 = tl.zeros([1, TILE_H, TILE_W], dtype=ACC)
    Wf = W * 1.0
    u, v = _source_coords(m00, m01, m02, m10, m11, m12, q[None, :].to(tl.float32), r[:, None].to(tl.float32))
    u, v = _pad(u, v, Wf, Wf, PADDING)
    ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11 = _taps(u, v, pix_ok, Wf, Wf, ONE_TAP, False)
    off0 = _turned_offsets(r, q, W, sg_h, sg_w, 0)
    off1 = _turned_offsets(r, q, W, sg_h, sg_w, 1)
    off2 = _turned_offsets(r, q, W, sg_h, sg_w, 2)
    off3 = _turned_offsets(r, q, W, sg_h, sg_w, 3)
    ok = pix_ok[None, :, :]
    for c in range(0, C):
        src_off = tl.cast(c, tl.int64) * sx_c
        xs = _gather(
            x_b, src_off, c < C, sx_h, sx_w, ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11, ACC, ONE_TAP
        ).to(ACC)
        gc = grad_b + tl.cast(c, tl.int64) * sg_c
        part0 += xs * tl.load(gc + off0, mask=ok, other=0.0).to(ACC)
        part1 += xs * tl.load(gc + off1, mask=ok & (g1 >= 0), other=0.0).to(ACC)
        part2 += xs * tl.load(gc + off2, mask=ok & (g2 >= 0), other=0.0).to(ACC)
        part3 += xs * tl.load(gc + off3, mask=ok & (g3 >= 0), other=0.0).to(ACC)
    return part0, part1, part2, part3


@triton.jit
def _store_dot(dot_ptr, b, N, g, tiles, t, part, valid):
    """The tile's share of ``<grad[b], T_g x[b]>`` (NaN for an invalid index) at ``dot[b, g, t]``; nothing for
    g < 0."""
    total = tl.sum(tl.sum(tl.sum(part, axis=2), axis=1), axis=0)
    gs = tl.maximum(g, 0)
    tl.store(dot_ptr + (b.to(tl.int64) * N + gs) * tiles + t, tl.where(valid, total, float("nan")), mask=g >= 0)


@triton.jit
def transform_backward_kernel(
    # pointers
    grad_ptr,  # (B, C, H, W) gradient of the output, any strides
    x_ptr,  # (B, C, H, W) input of the forward (NEED_DOT)
    mats_ptr,  # (N, MAT_SLOTS) float32 matrices
    pull_ptr,  # (N, PULL_SLOTS) float32 pull table (NEED_GX)
    index_ptr,  # (B,) int64 chosen elements
    chan_perm_ptr,  # (N, N_PERM) forward channel permutation (CHANNEL_PERM, for the inner products)
    chan_inv_ptr,  # (N, N_PERM) its inverse (CHANNEL_PERM, for the adjoint)
    gx_ptr,  # (B, C, H, W) gradient of x, any strides (NEED_GX)
    dot_ptr,  # (B, N, tiles) ACC partial inner products per tile (NEED_DOT)
    fam_ptr,  # (NF, 4) int32 quarter-turn families [base, g1, g2, g3] (FAMILIES), else unused
    # strides
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
    # sizes
    C,
    H,
    W,
    N,
    N_PERM,
    NF,  # (FAMILIES) number of families
    # meta-parameters
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    ALL_EXACT: tl.constexpr,
    ALIGNED: tl.constexpr,
    CHANNEL_PERM: tl.constexpr,
    NEED_GX: tl.constexpr,  # the adjoint to x by pull (all of it with zero padding, else its in-range part)
    NEED_DOT: tl.constexpr,  # <grad[b], T_g x[b]> for every g (mixture straight-through)
    ACC: tl.constexpr,
    CHANNELS: tl.constexpr,  # channels stacked per block (a power of 2)
    LIVE: tl.constexpr,  # channels read per block (≤ CHANNELS; see _channel_blocks)
    CHECK_C: tl.constexpr,  # whether a block may pass the last channel
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    FAMILIES: tl.constexpr = False,  # inner products per quarter-turn family (_family_dot); square planes
):
    """Backward of :func:`transform_kernel` for ``out[b] = T_{index[b]} x[b]``: one program per
    (b, tile) writes the adjoint to x on its tile and its share of every inner product."""
    pid = tl.program_id(0)
    tiles = tl.cdiv(H, TILE_H) * tl.cdiv(W, TILE_W)
    b = pid // tiles
    t = pid - b * tiles
    r, q, r0, q0 = _tile_coords(t, W, TILE_H, TILE_W)
    pix_ok = (r < H)[:, None] & (q < W)[None, :]
    grad_b = grad_ptr + b.to(tl.int64) * sg_b
    sel = tl.load(index_ptr + b)
    valid = (sel >= 0) & (sel < N)  # an index outside the table reads row 0 and yields NaN gradients
    sel = tl.where(valid, sel, 0)
    if NEED_GX:
        gx_b = gx_ptr + b.to(tl.int64) * sgx_b
        gx_off = (r[:, None] * sgx_h + q[None, :] * sgx_w)[None, :, :]
        for c0 in range(0, C, LIVE):
            k = tl.arange(0, CHANNELS)
            c = c0 + k
            c_ok = ((k < LIVE) & (c < C))[:, None, None]
            zero = tl.zeros([TILE_H, TILE_W], dtype=ACC)
            acc0, acc1, acc2, acc3 = _pull_tile(
                zero,
                zero,
                zero,
                zero,
                grad_b,
                pull_ptr,
                mats_ptr,
                sel,
                c0,
                C,
                N_PERM,
                chan_inv_ptr + sel * N_PERM,  # gradient channel that each input channel's values went to
                sg_c,
                sg_h,
                sg_w,
                H,
                W,
                r,
                q,
                r0,
                q0,
                H,
                W,
                NEAREST,
                ALL_EXACT,
                ALIGNED,
                ACC,
                CHANNELS,
                LIVE,
                CHECK_C,
                TILE_H,
                TILE_W,
                PADDING,
                CHANNEL_PERM,
            )
            acc = tl.where(valid, _stack_channels(acc0, acc1, acc2, acc3, CHANNELS), float("nan"))
            tl.store(
                gx_b + (c.to(tl.int64) * sgx_c)[:, None, None] + gx_off,
                acc.to(gx_ptr.dtype.element_ty),
                mask=c_ok & pix_ok[None, :, :],
            )
    if NEED_DOT and FAMILIES:
        x_b = x_ptr + b.to(tl.int64) * sx_b
        for f in range(NF):
            row = fam_ptr + f * 4
            g0 = tl.load(row)
            g1 = tl.load(row + 1)
            g2 = tl.load(row + 2)
            g3 = tl.load(row + 3)
            m00, m01, m02, m10, m11, m12 = _load_matrix(mats_ptr, g0, MAT_SLOTS)
            if ALL_EXACT:
                one_tap = True
            else:
                one_tap = _is_permutation(m00, m01, m02, m10, m11, m12)
            if one_tap:
                p0, p1, p2, p3 = _family_dot(
                    x_b, grad_b, pix_ok, m00, m01, m02, m10, m11, m12, g1, g2, g3, r, q, W, C,
                    sx_c, sx_h, sx_w, sg_c, sg_h, sg_w, PADDING, ACC, True, TILE_H, TILE_W,
                )  # fmt: skip
            else:
                p0, p1, p2, p3 = _family_dot(
                    x_b, grad_b, pix_ok, m00, m01, m02, m10, m11, m12, g1, g2, g3, r, q, W, C,
                    sx_c, sx_h, sx_w, sg_c, sg_h, sg_w, PADDING, ACC, False, TILE_H, TILE_W,
                )  # fmt: skip
            _store_dot(dot_ptr, b, N, g0, tiles, t, p0, valid)
            _store_dot(dot_ptr, b, N, g1, tiles, t, p1, valid)
            _store_dot(dot_ptr, b, N, g2, tiles, t, p2, valid)
            _store_dot(dot_ptr, b, N, g3, tiles, t, p3, valid)
    elif NEED_DOT:
        x_b = x_ptr + b.to(tl.int64) * sx_b
        grad_tile_off = (r[:, None] * sg_h + q[None, :] * sg_w)[None, :, :]
        Wf = W * 1.0
        Hf = H * 1.0
        for gi in range(N):
            m00, m01, m02, m10, m11, m12 = _load_matrix(mats_ptr, gi, MAT_SLOTS)
            if ALL_EXACT or NEAREST:
                one_tap = True
            else:
                # a quarter turn of a bilinear group: one tap, the same values as the four (weights 1, 0, 0, 0)
                one_tap = _is_permutation(m00, m01, m02, m10, m11, m12)
            if one_tap:
                part = _view_dot(
                    x_b, grad_b, grad_tile_off, pix_ok, m00, m01, m02, m10, m11, m12, r, q, Wf, Hf,
                    chan_perm_ptr + sel * N_PERM, C, N_PERM, sx_c, sx_h, sx_w, sg_c,
                    PADDING, NEAREST, CHANNEL_PERM, ACC, True, TILE_H, TILE_W,
                )  # fmt: skip
            else:
                part = _view_dot(
                    x_b, grad_b, grad_tile_off, pix_ok, m00, m01, m02, m10, m11, m12, r, q, Wf, Hf,
                    chan_perm_ptr + sel * N_PERM, C, N_PERM, sx_c, sx_h, sx_w, sg_c,
                    PADDING, NEAREST, CHANNEL_PERM, ACC, False, TILE_H, TILE_W,
                )  # fmt: skip
            total = tl.sum(tl.sum(tl.sum(part, axis=2), axis=1), axis=0)
            tl.store(dot_ptr + (b.to(tl.int64) * N + gi) * tiles + t, tl.where(valid, total, float("nan")))


# ----------------------------------------------------------------------------- adjoint (scatter)
@triton.jit
def _scatter(base, W, H, val, ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11, ONE_TAP: tl.constexpr):
    """Adjoint of :func:`_gather` into one contiguous (H, W) plane: atomically add ``val`` times each tap weight."""
    if ONE_TAP:
        # Unmasked add of 0 at a clamped address where the tap is out of range: the masked
        # form gave ptxas a stack frame (local-memory spills) on sm_90.
        cx = tl.minimum(tl.maximum(ix, 0), W - 1)
        cy = tl.minimum(tl.maximum(iy, 0), H - 1)
        tl.atomic_add(base + cy * W + cx, tl.where(k00, val, 0.0), sem="relaxed")
    else:
        off = iy * W + ix
        tl.atomic_add(base + off, val * wt00, mask=k00, sem="relaxed")
        tl.atomic_add(base + off + 1, val * wt01, mask=k01, sem="relaxed")
        tl.atomic_add(base + off + W, val * wt10, mask=k10, sem="relaxed")
        tl.atomic_add(base + off + W + 1, val * wt11, mask=k11, sem="relaxed")


@triton.jit
def orbit_backward_scatter_kernel(
    # pointers
    grad_ptr,  # (B, NV, C, h, w) gradient of the views, any strides
    mats_ptr,  # (N, MAT_SLOTS) float32 matrices
    index_ptr,  # (B,) int64 (USE_INDEX: one view per image, matrix index[b]) else unused
    gx_ptr,  # (B, C, H, W) contiguous ACC accumulator, zero-initialised
    # strides
    sg_b,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    # sizes
    C,
    H,
    W,
    h,
    w,
    NV,  # views per image (N; 1 with USE_INDEX)
    NM,  # number of matrices (the valid index range with USE_INDEX)
    # meta-parameters
    PADDING: tl.constexpr,
    NEAREST: tl.constexpr,
    ALL_EXACT: tl.constexpr,
    USE_INDEX: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,  # output pixels per program
    OUT_OF_RANGE: tl.constexpr,  # only output pixels whose coordinate lies outside the input
):
    """Adjoint of a border/reflection-padded view by scatter (atomics): these paddings fold whole
    half-planes onto edge pixels, so an input pixel has no bounded set of output pixels to pull
    from. Not bit-deterministic on a GPU; ``canon.triton_ops`` uses the reference adjoint in
    deterministic mode. With ``OUT_OF_RANGE`` it adds only the folded part, after a padded pull
    (:func:`_pull_tile`) wrote the rest (few pixels: the corners of rotated crops)."""
    pid = tl.program_id(0)
    nblk = tl.cdiv(h * w, BLOCK)
    o = pid // nblk
    blk = pid - o * nblk
    b = o // NV
    n = o - b * NV
    valid = True
    if USE_INDEX:
        elem = tl.load(index_ptr + b)
        valid = (elem >= 0) & (elem < NM)  # outside the table: row 0's taps receive NaN
        elem = tl.where(valid, elem, 0)
    else:
        elem = n
    p = blk * BLOCK + tl.arange(0, BLOCK)
    p_ok = p < h * w
    i = p // w
    j = p - i * w
    m00, m01, m02, m10, m11, m12 = _load_matrix(mats_ptr, elem, MAT_SLOTS)
    Wf = W * 1.0
    Hf = H * 1.0
    u, v = _source_coords(m00, m01, m02, m10, m11, m12, j.to(tl.float32), i.to(tl.float32))
    if OUT_OF_RANGE:
        p_ok = p_ok & ((u < 0.0) | (u > Wf - 1.0) | (v < 0.0) | (v > Hf - 1.0))
    u, v = _pad(u, v, Wf, Hf, PADDING)
    ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11 = _taps(u, v, p_ok, Wf, Hf, ALL_EXACT or NEAREST, NEAREST, True)
    grad_c = grad_ptr + b.to(tl.int64) * sg_b + n.to(tl.int64) * sg_n
    gx_c = gx_ptr + b.to(tl.int64) * C * H * W
    grad_off = i * sg_h + j * sg_w
    for _ in range(C):
        val = tl.where(valid, tl.load(grad_c + grad_off, mask=p_ok, other=0.0).to(ACC), float("nan"))
        _scatter(gx_c, W, H, val, ix, iy, wt00, wt01, wt10, wt11, k00, k01, k10, k11, ALL_EXACT or NEAREST)
        grad_c += sg_c
        gx_c += H * W


# ----------------------------------------------------------------------------- antialiased views
@triton.jit
def _antialias_frame(m00, m01, m10, m11):
    """(ka, kb, ru, rv) of a view: the filter's scale along the view's axes (min(1, input pixels per
    output pixel)) and the half-widths of its footprint in input pixels (as ``canon.reference``)."""
    sx = tl.sqrt(m00 * m00 + m10 * m10)
    sy = tl.sqrt(m01 * m01 + m11 * m11)
    ka = tl.minimum(sx, 1.0)
    kb = tl.minimum(sy, 1.0)
    return ka, kb, tl.abs(m00) / ka + tl.abs(m01) / kb, tl.abs(m10) / ka + tl.abs(m11) / kb


@triton.jit
def orbit_antialias_kernel(
    # pointers
    x_ptr,  # (B, C, H, W) input, any strides
    mats_ptr,  # (N, MAT_SLOTS) float32 view matrices
    pull_ptr,  # (N, PULL_SLOTS) float32 pull table (its inverse maps)
    norm_ptr,  # (N, h, w) float32 sum of each output pixel's filter weights, contiguous
    out_ptr,  # (B, N, C, h, w) views, any strides
    # strides
    sx_b,
    sx_c,
    sx_h,
    sx_w,
    so_b,
    so_n,
    so_c,
    so_h,
    so_w,
    # sizes
    C,
    H,
    W,
    h,
    w,
    N,
    TAPS,  # side of the square window of input pixels around each output pixel's centre
    # meta-parameters
    PADDING: tl.constexpr,
    ACC: tl.constexpr,
    CHANNELS: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    """Antialiased views (``canon.reference.orbit_antialias_ref``): each output pixel is the normalised
    sum, over a TAPS × TAPS window of input pixels, of the view-frame triangle filter × the (padded)
    input. One program per (b, n, output tile); taps summed in the reference's order."""
    pid = tl.program_id(0)
    tiles = tl.cdiv(h, TILE_H) * tl.cdiv(w, TILE_W)
    bn = pid // tiles
    b = bn // N
    n = bn - b * N
    r, q, r0, q0 = _tile_coords(pid - bn * tiles, w, TILE_H, TILE_W)
    pix_ok = (r < h)[:, None] & (q < w)[None, :]
    m00, m01, m02, m10, m11, m12 = _load_matrix(mats_ptr, n, MAT_SLOTS)
    p00, p01, p02, p10, p11, p12 = _load_matrix(pull_ptr, n, PULL_SLOTS)
    ka, kb, ru, rv = _antialias_frame(m00, m01, m10, m11)
    jf = q[None, :].to(tl.float32)
    if_ = r[:, None].to(tl.float32)
    u, v = _source_coords(m00, m01, m02, m10, m11, m12, jf, if_)
    u0 = tl.floor(u - ru - 0.01)
    v0 = tl.floor(v - rv - 0.01)
    Wf = W * 1.0
    Hf = H * 1.0
    x_img = x_ptr + b.to(tl.int64) * sx_b
    out_view = out_ptr + b.to(tl.int64) * so_b + n.to(tl.int64) * so_n
    nrm = tl.load(
        norm_ptr + n.to(tl.int64) * h * w + (tl.minimum(r, h - 1)[:, None] * w + tl.minimum(q, w - 1)[None, :]),
        mask=pix_ok,
        other=1.0,
    )
    out_off = (r[:, None] * so_h + q[None, :] * so_w)[None, :, :]
    for c0 in range(0, C, CHANNELS):
        c = c0 + tl.arange(0, CHANNELS)
        c_ok = (c < C)[:, None, None]
        chan_off = (c.to(tl.int64) * sx_c)[:, None, None]
        acc = tl.zeros([CHANNELS, TILE_H, TILE_W], dtype=ACC)
        for ti in range(TAPS):
            qv = v0 + ti
            for tj in range(TAPS):
                qu = u0 + tj
                ox = (p00 * qu + p01 * qv) + p02
                oy = (p10 * qu + p11 * qv) + p12
                wt = tl.maximum(1.0 - tl.abs(ox - jf) * ka, 0.0) * tl.maximum(1.0 - tl.abs(oy - if_) * kb, 0.0)
                pu, pv = _pad(qu, qv, Wf, Hf, PADDING)
                ok = pix_ok & (wt != 0.0) & (pu >= 0.0) & (pu <= Wf - 1.0) & (pv >= 0.0) & (pv <= Hf - 1.0)
                iu = tl.minimum(tl.maximum(pu, 0.0), Wf - 1.0).to(tl.int32)
                iv = tl.minimum(tl.maximum(pv, 0.0), Hf - 1.0).to(tl.int32)
                val = tl.load(
                    x_img + chan_off + (iv * sx_h + iu * sx_w)[None, :, :], mask=c_ok & ok[None, :, :], other=0.0
                ).to(ACC)
                acc += val * wt.to(ACC)[None, :, :]
        tl.store(
            out_view + (c.to(tl.int64) * so_c)[:, None, None] + out_off,
            (acc / nrm.to(ACC)[None, :, :]).to(out_ptr.dtype.element_ty),
            mask=c_ok & pix_ok[None, :, :],
        )


@triton.jit
def orbit_antialias_backward_kernel(
    # pointers
    grad_ptr,  # (B, N, C, h, w) gradient of the views, any strides
    mats_ptr,  # (N, MAT_SLOTS) float32 view matrices
    pull_ptr,  # (N, PULL_SLOTS) float32 pull table
    norm_ptr,  # (N, h, w) float32 filter sums, contiguous
    gx_ptr,  # (B, C, H, W) gradient of the input, any strides; written once
    # strides
    sg_b,
    sg_n,
    sg_c,
    sg_h,
    sg_w,
    sgx_b,
    sgx_c,
    sgx_h,
    sgx_w,
    # sizes
    C,
    H,
    W,
    h,
    w,
    N,
    BACK_TAPS,  # side of the window of output pixels whose filters can reach one input pixel
    # meta-parameters
    ACC: tl.constexpr,
    CHANNELS: tl.constexpr,
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
):
    """Adjoint of zero-padded :func:`orbit_antialias_kernel` by gather: every input pixel sums, view by
    view in order, the gradient / norm × weight of the output pixels whose filters cover it (found
    around the pixel's position in the view's frame; deterministic, no atomics)."""
    pid = tl.program_id(0)
    tiles = tl.cdiv(H, TILE_H) * tl.cdiv(W, TILE_W)
    b = pid // tiles
    r, q, r0, q0 = _tile_coords(pid - b * tiles, W, TILE_H, TILE_W)
    in_ok = (r < H)[:, None] & (q < W)[None, :]
    uu = q[None, :].to(tl.float32)
    vv = r[:, None].to(tl.float32)
    grad_b = grad_ptr + b.to(tl.int64) * sg_b
    gx_b = gx_ptr + b.to(tl.int64) * sgx_b
    gx_off = (r[:, None] * sgx_h + q[None, :] * sgx_w)[None, :, :]
    for c0 in range(0, C, CHANNELS):
        c = c0 + tl.arange(0, CHANNELS)
        c_ok = (c < C)[:, None, None]
        chan_off = (c.to(tl.int64) * sg_c)[:, None, None]
        acc = tl.zeros([CHANNELS, TILE_H, TILE_W], dtype=ACC)
        grad_view = grad_b
        for n in range(N):
            m00, m01, m02, m10, m11, m12 = _load_matrix(mats_ptr, n, MAT_SLOTS)
            p00, p01, p02, p10, p11, p12 = _load_matrix(pull_ptr, n, PULL_SLOTS)
            ka, kb, ru, rv = _antialias_frame(m00, m01, m10, m11)
            ox = (p00 * uu + p01 * vv) + p02  # this input pixel in the view's frame
            oy = (p10 * uu + p11 * vv) + p12
            j0 = tl.floor(ox - 1.0 / ka - 0.01).to(tl.int32)
            i0 = tl.floor(oy - 1.0 / kb - 0.01).to(tl.int32)
            norm_view = norm_ptr + n * h * w  # (N·h·w < 2³¹: the launcher checks the plane)
            for di in range(BACK_TAPS):
                ii = i0 + di
                for dj in range(BACK_TAPS):
                    jj = j0 + dj
                    wt = tl.maximum(1.0 - tl.abs(ox - jj.to(tl.float32)) * ka, 0.0) * tl.maximum(
                        1.0 - tl.abs(oy - ii.to(tl.float32)) * kb, 0.0
                    )
                    ok = in_ok & (wt != 0.0) & (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
                    ic = tl.minimum(tl.maximum(ii, 0), h - 1)
                    jc = tl.minimum(tl.maximum(jj, 0), w - 1)
                    nrm = tl.load(norm_view + ic * w + jc, mask=ok, other=1.0).to(ACC)
                    gv = tl.load(
                        grad_view + chan_off + (ic * sg_h + jc * sg_w)[None, :, :],
                        mask=c_ok & ok[None, :, :],
                        other=0.0,
                    ).to(ACC)
                    acc += (gv / nrm[None, :, :]) * wt.to(ACC)[None, :, :]
            grad_view += sg_n
        tl.store(
            gx_b + (c.to(tl.int64) * sgx_c)[:, None, None] + gx_off,
            acc.to(gx_ptr.dtype.element_ty),
            mask=c_ok & in_ok[None, :, :],
        )


# ----------------------------------------------------------------------------- host side
def resample_config(h: int, w: int, C: int, dtype: torch.dtype, kind: str) -> dict:
    """A fresh dict of :func:`_resample_config`, which is cached: uncached it cost ~5.6 µs per launch
    (on the 2-core CPU machine; 0.4 µs cached)."""
    return dict(_resample_config(int(h), int(w), int(C), dtype, kind))


@functools.lru_cache(maxsize=1024)
def _resample_config(h: int, w: int, C: int, dtype: torch.dtype, kind: str) -> tuple:
    """Tile, channel block and warps of one resampling launch, by the kind of work per pixel.

    A program owns a ``TILE_H × TILE_W`` tile of the plane it writes and ``CHANNELS`` channels
    at a time. ``kind``:

    * ``copy`` (every view a permutation, zero padding): square tiles, as a transpose wants,
      one 128-bit vector (4 fp32 / 8 half) per thread and channel, 8 warps;
    * ``taps`` (bilinear/nearest/padded views): 8×16 tiles, one channel at a time, 2 warps
      (two pixels per thread). Timed on an H100 (``python -m bench sweep``, 2026-11-28, see
      ``bench/results/h100-2026-11-28``): C8 B=256 3×224² bilinear 1.030 ms and C16 B=256
      224→96 crop 0.8 0.561 ms, against 1.673 / 0.888 ms for the earlier 16×8, 2 channels,
      4 warps; a second channel per program was slower in every tile tried;
    * ``pull`` (adjoints by gather, many candidates per pixel): 16×8, up to 4 channels, 4 warps. A
      candidate's coordinates, weights and address serve every channel of the block, and that
      arithmetic, not memory, bounds the pull: one channel per program (before 2026-12-04) ran
      the C8 B=64 224 → 96 orbit backward at 82% of the SM's issue rate and 1% of copy (ncu, H200).

    Register use, spills and occupancy of every variant are checked by ``canon.kernels.compile``.
    """
    elt = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    regs = None  # ptxas's own register count unless capped (launch option ``maxnreg``)
    if kind == "copy":
        # one 128-bit vector per thread per channel at 8 warps: ~32 registers, full occupancy
        tile_h, tile_w, channels, warps = 32, 32 if elt >= 4 else 64, 1, 8
    elif kind == "pull":
        # capped at 64 registers (at least half occupancy): left to itself ptxas used ~48 and spilled
        # 2-3 values in the bf16 and float64 variants; with the cap no variant spills (compile gate)
        tile_h, tile_w, channels, warps = 16, 8, 2 if elt >= 8 else 4, 4
        regs = 64
    elif kind == "filter-pull":
        tile_h, tile_w, channels, warps = 16, 8, 1, 4
    else:
        tile_h, tile_w, channels, warps = 8, 16, 1, 2
    tile_w = min(tile_w, max(8, next_power_of_2(w)))
    tile_h = min(tile_h, max(1, next_power_of_2(h)))
    channels = min(channels, next_power_of_2(max(int(C), 1)))
    cfg = dict(TILE_H=tile_h, TILE_W=tile_w, CHANNELS=channels, num_warps=warps)
    if regs is not None:
        cfg["maxnreg"] = regs
    return tuple(cfg.items())


def _channel_blocks(C: int, channels: int) -> dict:
    """``LIVE`` and ``CHECK_C`` of the pull kernels for ``C`` channels in blocks of at most ``channels``: the
    largest block that splits ``C`` evenly into as many blocks as ``channels`` would (RGB: one block of 3,
    rather than 4 with one channel loaded, added and tested for nothing per candidate), and no test of the
    channel count per load; else blocks of ``channels`` that test it (C = 5: 4 + 1)."""
    blocks = cdiv(C, channels)
    for live in range(channels, 0, -1):
        if C % live == 0 and C // live == blocks:
            return dict(LIVE=live, CHECK_C=False)
    return dict(LIVE=channels, CHECK_C=True)


def _check_plane(name: str, t: torch.Tensor, hw_dims=(-2, -1)) -> None:
    # In-plane offsets are int32 (batch/channel offsets are int64).
    extent = sum((t.shape[d] - 1) * abs(t.stride(d)) for d in hw_dims) + 1
    if extent > _I32_MAX:
        raise ValueError(
            f"kernels.resample: one image plane of {name} spans {extent} elements, more than int32 offsets allow"
        )


def _tiles(h: int, w: int, cfg: dict) -> int:
    return cdiv(h, cfg["TILE_H"]) * cdiv(w, cfg["TILE_W"])


def _kind(all_exact: bool, aligned: bool, padding: str) -> str:
    return "copy" if all_exact and aligned and padding == "zeros" else "taps"


def _split(cfg: dict) -> tuple[dict, dict]:
    """(the kernel's meta-parameters, the launch options: ``num_warps`` and any ``maxnreg``) of a config."""
    meta = dict(cfg)
    return meta, {k: meta.pop(k) for k in ("num_warps", "maxnreg") if k in meta}


def _aligned(aligned: bool, meta: dict, kind: str) -> bool:
    # tile copies (kind "copy": every view a zero-padded permutation) read runs that start at
    # (tile origin + translation): 16-aligned when the translations are (``aligned``, from the
    # host's float64 matrices) and the tiles are
    return kind == "copy" and bool(aligned) and meta["TILE_W"] % 16 == 0 and meta["TILE_H"] % 16 == 0


def _rounded_from_float64(x: torch.Tensor, out: torch.Tensor) -> bool:
    """Float64 input, 16-bit output: the views are computed in float64 and rounded once by torch. (The
    kernels' own float64 → bfloat16 store is wrong under the Triton interpreter: NaN and zeros.)"""
    return x.dtype == torch.float64 and out.dtype in (torch.bfloat16, torch.float16)


def orbit_forward(
    x, mats, all_exact: bool, aligned: bool, size, padding: str, interpolation: str, out: torch.Tensor, fam=None
) -> torch.Tensor:
    """Write all views of ``x`` (B, C, H, W) through ``mats`` (N, 2, 3) into ``out`` (B, N, C, h, w), any strides.

    ``all_exact``: every matrix is a signed permutation with integer translation;
    ``aligned``: the translations of those that are put every copied run on a multiple of 16
    (ascending axes at multiples of 16, reversed axes one below); ``fam``: the views' quarter-turn
    families (``canon.geometry.quarter_turn_families``), sampled once each where :data:`ORBIT_FAMILIES`
    allows.
    """
    if _rounded_from_float64(x, out):
        tmp = torch.empty(out.shape, dtype=torch.float64, device=out.device)
        return out.copy_(orbit_forward(x, mats, all_exact, aligned, size, padding, interpolation, tmp, fam))
    B, C, H, W = x.shape
    N = mats.shape[0]
    h, w = size
    mats = dense(mats)
    _check_plane("x", x)
    _check_plane("out", out)
    kind = _kind(all_exact, aligned, padding)
    meta, opts = _split(resample_config(h, w, C, out.dtype, kind))
    families = _use_families(fam, kind, interpolation, (x.dtype, out.dtype), (h, w))
    fam = dense(fam) if families else None
    nv = fam.shape[0] if families else N
    launch(
        orbit_kernel, (B * nv * _tiles(h, w, meta),), fp_fusion=False, **opts,
        x_ptr=x, mats_ptr=mats, fam_ptr=fam if families else mats, out_ptr=out,
        sx_b=x.stride(0), sx_c=x.stride(1), sx_h=x.stride(2), sx_w=x.stride(3),
        so_b=out.stride(0), so_n=out.stride(1), so_c=out.stride(2), so_h=out.stride(3), so_w=out.stride(4),
        C=C, H=H, W=W, h=h, w=w, NV=nv,
        PADDING=PADDING_CODES[padding], NEAREST=interpolation == "nearest", ALL_EXACT=bool(all_exact),
        ALIGNED=_aligned(aligned, meta, kind),
        ACC=acc_tl(x.dtype), FAMILIES=families, **meta,
    )  # fmt: skip
    return out


# Whether the bilinear orbit samples each quarter-turn family once (``canon.geometry.quarter_turn_families``:
# C8's eight views are two families of four) and stores the tile turned into the other members' views: a
# quarter of the gathers of C8/C16 views. The members' values then come from the base view's coordinates,
# which differ from the member's own matrix by float32 rounding: up to 3.0e-5 of the oracle on uniform
# noise at 224² (1.5e-6 at 16²; the direct path 1.1e-7), above the float32 test tolerance. Off until a GPU measures it
# (docs/kernels.md, "Quarter-turn families"); float64 and nearest views never use it. The environment
# variable CANON_ORBIT_FAMILIES=1 turns it on at import (to time both on a GPU without code changes).
ORBIT_FAMILIES = os.environ.get("CANON_ORBIT_FAMILIES", "0") == "1"


@contextlib.contextmanager
def orbit_families(on: bool = True):
    """:data:`ORBIT_FAMILIES` set to ``on`` inside the block (restored after it)."""
    global ORBIT_FAMILIES
    saved, ORBIT_FAMILIES = ORBIT_FAMILIES, bool(on)
    try:
        yield
    finally:
        ORBIT_FAMILIES = saved


def _use_families(fam, kind: str, interpolation: str, dtypes: tuple, hw) -> bool:
    """Whether a launch samples by family: the switch, square bilinear views, and no float64 in or out."""
    return (
        ORBIT_FAMILIES
        and fam is not None
        and kind == "taps"
        and interpolation == "bilinear"
        and torch.float64 not in dtypes
        and hw[0] == hw[1]
    )


def transform_forward(
    x, index, mats, all_exact: bool, aligned: bool, padding: str, interpolation: str, out: torch.Tensor, chan_perm=None
) -> torch.Tensor:
    """``out[b] = T_{index[b]} x[b]`` at the input size; ``out`` (B, C, H, W), any strides.

    ``chan_perm`` (N, N') int64: channels grouped (K, N'), output channel ``k·N' + h`` reads
    input channel ``k·N' + chan_perm[index[b], h]``. An index outside [0, N) gives a NaN image.
    """
    B, C, H, W = x.shape
    index, mats, chan_perm = dense(index), dense(mats), dense(chan_perm)
    _check_plane("x", x)
    _check_plane("out", out)
    kind = _kind(all_exact, aligned, padding)
    meta, opts = _split(resample_config(H, W, C, out.dtype, kind))
    n_perm = chan_perm.shape[1] if chan_perm is not None else 1
    launch(
        transform_kernel, (B * _tiles(H, W, meta),), fp_fusion=False, **opts,
        x_ptr=x, mats_ptr=mats, index_ptr=index, chan_perm_ptr=chan_perm if chan_perm is not None else index,
        out_ptr=out,
        sx_b=x.stride(0), sx_c=x.stride(1), sx_h=x.stride(2), sx_w=x.stride(3),
        so_b=out.stride(0), so_c=out.stride(1), so_h=out.stride(2), so_w=out.stride(3),
        C=C, H=H, W=W, N=mats.shape[0], N_PERM=n_perm,
        PADDING=PADDING_CODES[padding], NEAREST=interpolation == "nearest", ALL_EXACT=bool(all_exact),
        ALIGNED=_aligned(aligned, meta, kind),
        CHANNEL_PERM=chan_perm is not None, ACC=acc_tl(x.dtype), **meta,
    )  # fmt: skip
    return out


def select_transform_forward(
    vectors,
    reference,
    x,
    mats,
    all_exact: bool,
    aligned: bool,
    beta: float,
    cosine: bool,
    padding: str,
    interpolation: str,
    out,
    selection,
    eps: float = 1e-8,
):
    """Eval canonicalization in one launch; ``selection`` = (scores, probs, index, onehot) outputs to fill."""
    B, N, D = vectors.shape
    _, C, H, W = x.shape
    mats = dense(mats)
    _check_plane("x", x)
    _check_plane("out", out)
    kind = _kind(all_exact, aligned, padding)
    meta, opts = _split(resample_config(H, W, C, out.dtype, kind))
    block_n, block_d, _ = select_config(N, D)
    scores, probs, index, onehot = selection
    launch(
        select_transform_kernel, (B * _tiles(H, W, meta),), fp_fusion=False, **opts,
        v_ptr=vectors, r_ptr=reference, x_ptr=x, mats_ptr=mats,
        scores_ptr=scores, probs_ptr=probs, index_ptr=index, onehot_ptr=onehot, out_ptr=out,
        sv_b=vectors.stride(0), sv_n=vectors.stride(1), sv_d=vectors.stride(2), sr_d=reference.stride(0),
        sx_b=x.stride(0), sx_c=x.stride(1), sx_h=x.stride(2), sx_w=x.stride(3),
        so_b=out.stride(0), so_c=out.stride(1), so_h=out.stride(2), so_w=out.stride(3),
        N=N, D=D, C=C, H=H, W=W, **float_args(beta=beta, eps=eps),
        COSINE=bool(cosine), PADDING=PADDING_CODES[padding], NEAREST=interpolation == "nearest",
        ALL_EXACT=bool(all_exact),
        ALIGNED=_aligned(aligned, meta, kind), SCORE_ACC=acc_tl(vectors.dtype), ACC=acc_tl(x.dtype), BLOCK_N=block_n,
        BLOCK_D=block_d, **meta,
    )  # fmt: skip
    return out


def orbit_backward(
    grad, mats, pull, all_exact: bool, aligned: bool, in_hw, padding: str, interpolation: str, out: torch.Tensor
) -> torch.Tensor:
    """Adjoint of :func:`orbit_forward`: ``out`` (B, C, H, W) ← Σ_n T_nᵀ grad[:, n].

    Zero padding: one gather launch writing ``out`` directly (deterministic, no atomics).
    Border/reflection, pulled (:data:`BORDER_ADJOINT`): the same gather for the output pixels whose
    coordinate lies inside the input, then atomics for the rest (folded onto the edge by the padding),
    into ``out`` or (another dtype or layout) a float32 buffer copied into it; scattered: atomics for
    every pixel into a zeroed accumulator. ``aligned`` refers to the inverse permutations of the pull table.
    """
    B, N, C, h, w = grad.shape
    H, W = in_hw
    mats, pull = dense(mats), dense(pull)
    _check_plane("grad", grad)
    _check_plane("out", out)
    nearest = interpolation == "nearest"
    if padding != "zeros" and not _pull_padded(nearest):
        accum = torch.zeros((B, C, H, W), dtype=acc_dtype(out.dtype), device=grad.device)
        _scatter_launch(grad, mats, None, all_exact, padding, nearest, accum, (h, w))
        out.copy_(accum)
        return out
    folded = padding != "zeros"  # border/reflection: pull the in-range part, then scatter the folded rest
    target = _atomic_target(out) if folded else out
    kind = _kind(all_exact, aligned, padding) if (all_exact and not folded) else "pull"
    meta, opts = _split(resample_config(H, W, C, out.dtype, kind))
    launch(
        orbit_backward_kernel, (B * _tiles(H, W, meta),), fp_fusion=False, **opts,
        grad_ptr=grad, mats_ptr=mats, pull_ptr=pull, gx_ptr=target,
        sg_b=grad.stride(0), sg_n=grad.stride(1), sg_c=grad.stride(2), sg_h=grad.stride(3), sg_w=grad.stride(4),
        sgx_b=target.stride(0), sgx_c=target.stride(1), sgx_h=target.stride(2), sgx_w=target.stride(3),
        C=C, H=H, W=W, h=h, w=w, N=N, NEAREST=nearest, ALL_EXACT=bool(all_exact),
        ALIGNED=_aligned(aligned, meta, kind),
        ACC=acc_tl(out.dtype), PADDING=PADDING_CODES[padding], **meta, **_channel_blocks(C, meta["CHANNELS"]),
    )  # fmt: skip
    if folded:
        _scatter_launch(grad, mats, None, all_exact, padding, nearest, target, (h, w), out_of_range=True)
        if target is not out:
            out.copy_(target)
    return out


# How the adjoint of a border/reflection-padded bilinear view is computed: "pull" (the default: a
# deterministic gather of every output pixel whose coordinate lies inside the input, then atomics for
# the few whose taps the padding folds onto the edge) or "scatter" (atomics for every output pixel, as
# aten's grid_sample backward does). Both are exact; nearest views always scatter. Measured on one
# H200 (bench/adjoint_check.py, bench/results/h200-2026-12-04-b, commit f1e928a), pull against
# scatter: C8 B=64 32 → 96 0.50 / 0.93 ms, canonicalize C8 B=256 224² 1.90 / 2.31 ms, and the 224 → 96
# shrink 0.56 / 0.52 ms (the one loss; the two changes after it, unmeasured, take ~40% of the pull's
# instructions per view and its barriers: docs/kernels.md, "Fewer candidates, shared by the channels").
BORDER_ADJOINT = "pull"


def _pull_padded(nearest: bool) -> bool:
    """Whether the adjoint of a border/reflection-padded view pulls (see :data:`BORDER_ADJOINT`)."""
    if BORDER_ADJOINT not in ("pull", "scatter"):
        raise ValueError(f"kernels.resample.BORDER_ADJOINT: 'pull' or 'scatter', got {BORDER_ADJOINT!r}")
    return not nearest and BORDER_ADJOINT == "pull"


def _atomic_target(out: torch.Tensor) -> torch.Tensor:
    """``out`` itself when atomics can add into it (contiguous, accumulation dtype), else a buffer like it."""
    acc = acc_dtype(out.dtype)
    if out.dtype == acc and out.is_contiguous():
        return out
    return torch.empty(out.shape, dtype=acc, device=out.device)


def _scatter_launch(grad5, mats, index, all_exact, padding, nearest, accum, hw, out_of_range: bool = False):
    B, NV, C = grad5.shape[:3]
    H, W = accum.shape[-2:]
    h, w = hw
    mats, index = dense(mats), dense(index)
    block = min(512, max(32, next_power_of_2(h * w)))  # 2 pixels per thread at 8 warps
    launch(
        orbit_backward_scatter_kernel, (B * NV * cdiv(h * w, block),), 8 if block >= 512 else 4, fp_fusion=False,
        grad_ptr=grad5, mats_ptr=mats, index_ptr=index if index is not None else mats, gx_ptr=accum,
        sg_b=grad5.stride(0), sg_n=grad5.stride(1), sg_c=grad5.stride(2), sg_h=grad5.stride(3), sg_w=grad5.stride(4),
        C=C, H=H, W=W, h=h, w=w, NV=NV, NM=mats.shape[0],
        PADDING=PADDING_CODES[padding], NEAREST=nearest, ALL_EXACT=bool(all_exact), USE_INDEX=index is not None,
        ACC=acc_tl(accum.dtype), BLOCK=block, OUT_OF_RANGE=out_of_range,
    )  # fmt: skip


def transform_backward(
    grad,
    x,
    index,
    mats,
    pull,
    all_exact: bool,
    aligned: bool,
    padding: str,
    interpolation: str,
    grad_x,
    grad_w,
    chan_perm=None,
    chan_inv=None,
    fam=None,
) -> None:
    """Backward of :func:`transform_forward` over ``grad`` (B, C, H, W).

    Fills ``grad_x`` (B, C, H, W) with the adjoint of the chosen transforms and ``grad_w``
    (B, N) with ``<grad[b], T_g x[b]>``; either may be None (not computed). Zero padding:
    one launch (plus the fixed-order sum of the per-tile inner products). Border/reflection:
    the adjoint is a scatter (a second launch into a zeroed accumulator).
    """
    B, C, H, W = grad.shape
    N = mats.shape[0]
    index, mats, pull, chan_perm, chan_inv = (dense(t) for t in (index, mats, pull, chan_perm, chan_inv))
    _check_plane("grad", grad)
    _check_plane("x", x)
    nearest = interpolation == "nearest"
    folded = grad_x is not None and padding != "zeros" and chan_perm is None
    folded = folded and _pull_padded(nearest)
    kind = _kind(all_exact, aligned, padding) if (all_exact and grad_w is None and not folded) else "pull"
    meta, opts = _split(resample_config(H, W, C, x.dtype, kind))
    tiles = _tiles(H, W, meta)
    acc_dt = acc_dtype(x.dtype)
    pull_gx = grad_x is not None and (padding == "zeros" or folded)
    target = _atomic_target(grad_x) if folded else grad_x
    dot = torch.empty((B, N, tiles), dtype=acc_dt, device=grad.device) if grad_w is not None else None
    n_perm = chan_perm.shape[1] if chan_perm is not None else 1
    families = dot is not None and chan_perm is None and _use_families(fam, "taps", interpolation, (x.dtype,), (H, W))
    fam = dense(fam) if families else None
    if pull_gx or dot is not None:
        gx = target if pull_gx else grad
        launch(
            transform_backward_kernel, (B * tiles,), fp_fusion=False, **opts,
            grad_ptr=grad, x_ptr=x, mats_ptr=mats, pull_ptr=pull, index_ptr=index,
            chan_perm_ptr=chan_perm if chan_perm is not None else index,
            chan_inv_ptr=chan_inv if chan_inv is not None else index,
            gx_ptr=gx, dot_ptr=dot if dot is not None else grad, fam_ptr=fam if families else mats,
            sg_b=grad.stride(0), sg_c=grad.stride(1), sg_h=grad.stride(2), sg_w=grad.stride(3),
            sx_b=x.stride(0), sx_c=x.stride(1), sx_h=x.stride(2), sx_w=x.stride(3),
            sgx_b=gx.stride(0), sgx_c=gx.stride(1), sgx_h=gx.stride(2), sgx_w=gx.stride(3),
            C=C, H=H, W=W, N=N, N_PERM=n_perm, NF=fam.shape[0] if families else 0,
            PADDING=PADDING_CODES[padding], NEAREST=nearest, ALL_EXACT=bool(all_exact),
            ALIGNED=_aligned(aligned, meta, kind),
            CHANNEL_PERM=chan_perm is not None, NEED_GX=pull_gx, NEED_DOT=dot is not None, ACC=acc_tl(x.dtype),
            FAMILIES=families, **meta, **_channel_blocks(C, meta["CHANNELS"]),
        )  # fmt: skip
    if folded:  # the folded rest of the border/reflection adjoint
        _scatter_launch(grad.unsqueeze(1), mats, index, all_exact, padding, nearest, target, (H, W), out_of_range=True)
        if target is not grad_x:
            grad_x.copy_(target)
    if grad_x is not None and not pull_gx:
        accum = torch.zeros((B, C, H, W), dtype=acc_dt, device=grad.device)
        _scatter_launch(grad.unsqueeze(1), mats, index, all_exact, padding, nearest, accum, (H, W))
        if chan_perm is not None:
            # the forward read input channel k·n + chan_perm[g, j] into channel k·n + j: its adjoint reads
            # channel k·n + chan_inv[g, i] into k·n + i (an index outside the table: row 0, NaN from the scatter)
            n = chan_inv.shape[1]
            rows = chan_inv[index.clamp(0, chan_inv.shape[0] - 1)]  # (B, n)
            perm = rows[:, None, :, None, None].expand(B, C // n, n, H, W)
            accum = torch.gather(accum.reshape(B, C // n, n, H, W), 2, perm).reshape(B, C, H, W)
        grad_x.copy_(accum)
    if dot is not None:
        torch.sum(dot, dim=-1, out=grad_w)


def orbit_antialias_forward(x, mats, pull, norm, taps: int, size, padding: str, out: torch.Tensor) -> torch.Tensor:
    """Antialiased views of ``x`` (B, C, H, W) into ``out`` (B, N, C, h, w), any strides; ``norm`` (N, h, w)
    and ``taps`` from ``canon.geometry.antialias_tables``."""
    if _rounded_from_float64(x, out):
        tmp = torch.empty(out.shape, dtype=torch.float64, device=out.device)
        return out.copy_(orbit_antialias_forward(x, mats, pull, norm, taps, size, padding, tmp))
    B, C, H, W = x.shape
    N = mats.shape[0]
    h, w = size
    mats, pull, norm = dense(mats), dense(pull), dense(norm)
    _check_plane("x", x)
    _check_plane("out", out)
    meta, opts = _split(resample_config(h, w, C, out.dtype, "taps"))
    launch(
        orbit_antialias_kernel, (B * N * _tiles(h, w, meta),), fp_fusion=False, **opts,
        x_ptr=x, mats_ptr=mats, pull_ptr=pull, norm_ptr=norm, out_ptr=out,
        sx_b=x.stride(0), sx_c=x.stride(1), sx_h=x.stride(2), sx_w=x.stride(3),
        so_b=out.stride(0), so_n=out.stride(1), so_c=out.stride(2), so_h=out.stride(3), so_w=out.stride(4),
        C=C, H=H, W=W, h=h, w=w, N=N, TAPS=int(taps),
        PADDING=PADDING_CODES[padding], ACC=acc_tl(x.dtype), **meta,
    )  # fmt: skip
    return out


def orbit_antialias_backward(grad, mats, pull, norm, back_taps: int, in_hw, out: torch.Tensor) -> torch.Tensor:
    """Adjoint of zero-padded :func:`orbit_antialias_forward`: ``out`` (B, C, H, W) ← Σ_n A_nᵀ grad[:, n]."""
    B, N, C, h, w = grad.shape
    H, W = in_hw
    mats, pull, norm = dense(mats), dense(pull), dense(norm)
    _check_plane("grad", grad)
    _check_plane("out", out)
    meta, opts = _split(resample_config(H, W, C, out.dtype, "filter-pull"))
    launch(
        orbit_antialias_backward_kernel, (B * _tiles(H, W, meta),), fp_fusion=False, **opts,
        grad_ptr=grad, mats_ptr=mats, pull_ptr=pull, norm_ptr=norm, gx_ptr=out,
        sg_b=grad.stride(0), sg_n=grad.stride(1), sg_c=grad.stride(2), sg_h=grad.stride(3), sg_w=grad.stride(4),
        sgx_b=out.stride(0), sgx_c=out.stride(1), sgx_h=out.stride(2), sgx_w=out.stride(3),
        C=C, H=H, W=W, h=h, w=w, N=N, BACK_TAPS=int(back_taps),
        ACC=acc_tl(out.dtype), **meta,
    )  # fmt: skip
    return out
