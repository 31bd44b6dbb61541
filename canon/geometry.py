"""Affine maps of the views: crop, resize and group element composed into one 2×3 matrix.

A view matrix ``M`` (2×3) maps an *output* pixel index ``(j, i)`` (column, row)
to the *input* pixel coordinate ``(u, v)`` that it samples:

    u = M[0,0]·j + M[0,1]·i + M[0,2]
    v = M[1,0]·j + M[1,1]·i + M[1,2]

Pixel centres are at integer coordinates; ``(0, 0)`` is the centre of the top-left
pixel. The view of element ``g`` with crop ratio ``r`` is

    source = c_in + A_g⁻¹ · diag(r·W/w, r·H/h) · ((j, i) − c_out)

with ``c = ((W−1)/2, (H−1)/2)`` (``r`` may differ per axis: ``(ry, rx)``) and ``A_g`` from
:meth:`canon.groups.Group.matrix`.
Everything is built in float64 and cast once to float32, so multiples of 90° and
flips give exact integer coordinates (they are then pixel permutations).
"""

from __future__ import annotations

import bisect
import math
from functools import lru_cache
from typing import NamedTuple

import torch

from canon._cache import Cache
from canon.groups import Group

__all__ = [
    "ViewTables",
    "AntialiasTables",
    "antialias_tables",
    "antialias_frame",
    "antialias_window",
    "view_scales",
    "view_matrices",
    "view_tables",
    "view_matrices_tensor",
    "channel_tables",
    "group_table",
    "views_in_range",
    "pull_rows",
    "quarter_turn_families",
    "copies_aligned",
    "transform_points",
    "transform_boxes",
]


def _inverse_linear(group: Group, index: int) -> tuple[tuple[float, float], tuple[float, float]]:
    return group.matrix(group.inverse(index))


@lru_cache(maxsize=256)
def view_matrices(
    group: Group,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    crop_ratio: float | tuple[float, float] = 1.0,
) -> tuple[tuple[tuple[float, ...], ...], bool]:
    """Float64 view matrices of every element, and whether all of them are exact.

    Returns:
        ``(mats, exact)``: ``mats[g]`` is a 2×3 nested tuple; ``exact`` is True when
        every view samples integer coordinates only (a pure pixel gather).
    """
    H, W = in_hw
    h, w = out_hw
    ry, rx = crop_ratio if isinstance(crop_ratio, tuple) else (crop_ratio, crop_ratio)
    sx, sy = rx * W / w, ry * H / h
    cxi, cyi = (W - 1) / 2.0, (H - 1) / 2.0
    cxo, cyo = (w - 1) / 2.0, (h - 1) / 2.0
    mats = []
    exact = True
    for g in range(group.order):
        (a, b), (c, d) = _inverse_linear(group, g)
        m00, m01, m10, m11 = a * sx, b * sy, c * sx, d * sy
        m02 = cxi - (m00 * cxo + m01 * cyo)
        m12 = cyi - (m10 * cxo + m11 * cyo)
        row0, row1 = (m00, m01, m02), (m10, m11, m12)
        mats.append((row0, row1))
        exact &= (
            all(x in (-1.0, 0.0, 1.0) for x in (m00, m01, m10, m11))
            and float(m02).is_integer()
            and float(m12).is_integer()
        )
    return tuple(mats), exact


@lru_cache(maxsize=256)
def views_in_range(
    group: Group, in_hw: tuple[int, int], out_hw: tuple[int, int], crop_ratio: float | tuple[float, float] = 1.0
) -> bool:
    """True when every view samples only inside the input (then the padding mode cannot matter).

    The maps are affine, so checking the four corner pixels of the output suffices.
    """
    H, W = in_hw
    h, w = out_hw
    mats, _ = view_matrices(group, tuple(in_hw), tuple(out_hw), crop_ratio)
    eps = 1e-9
    for (m00, m01, m02), (m10, m11, m12) in mats:
        for j, i in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
            u, v = m00 * j + m01 * i + m02, m10 * j + m11 * i + m12
            if not (-eps <= u <= W - 1 + eps and -eps <= v <= H - 1 + eps):
                return False
    return True


class ViewTables(NamedTuple):
    """Device tables of one view set, as the ops take them (cached: no per-call host→device copy).

    ``mats`` (N, 2, 3) float32 view matrices; ``pull`` (N, 10) float32 inverse maps and pull
    windows for the gather adjoints (:func:`pull_rows`, built in plain Python so the CPU path
    needs no triton); ``exact``: every view is a pixel permutation; ``aligned``: every view
    that is a permutation (and its inverse) copies runs of source columns that start at
    multiples of 16 (:func:`copies_aligned`), so the GPU copies can use 128-bit accesses; ``fam``: the
    views that are quarter turns of one another (:func:`quarter_turn_families`), or None.
    """

    mats: torch.Tensor
    pull: torch.Tensor
    exact: bool
    aligned: bool
    # (F, 4) int32 quarter-turn families of square views (:func:`quarter_turn_families`), or None
    fam: torch.Tensor | None = None


# Device tables, built once per argument set (canon._cache: none is kept while tracing).
_TABLES = Cache(limit=512)


def _cached(key, build):
    return _TABLES.get(key, build)


def constant_index(element: int, n: int, device: torch.device) -> torch.Tensor:
    """An int64 tensor ``(n,)`` filled with ``element`` on ``device``, cached like the tables (so that
    ``canon.transform(x, 3, "C8")`` launches no fill kernel per call). Read-only: the ops only read it."""
    key = ("constant index", element, n, device)
    hit = _TABLES.peek(key)
    if hit is not None:
        return hit
    build = lambda: torch.full((n,), element, dtype=torch.int64, device=device)  # noqa: E731
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return build()  # filled only when the graph replays: never cached
    return _cached(key, build)


def pull_rows(mats) -> list[list[float]]:
    """Rows of the pull table for float64 matrices ``((m00, m01, m02), (m10, m11, m12))``.

    Row layout (kept in step with ``canon.kernels.resample.PULL_SLOTS``): the inverse affine
    map (input pixel (U, V) → output coordinate (j, i)) in matrix slot order, then the window
    half-widths RJ = |p00| + |p01|, RI = |p10| + |p11| and the candidate counts
    ⌊2·R + 0.02⌋ + 2 per axis: a bilinear tap reaches (U, V) only from |u − U| < 1, |v − V| < 1.
    """
    rows = []
    for (m00, m01, m02), (m10, m11, m12) in mats:
        det = m00 * m11 - m01 * m10
        p00, p01, p10, p11 = m11 / det, -m01 / det, -m10 / det, m00 / det
        p02, p12 = -(p00 * m02 + p01 * m12), -(p10 * m02 + p11 * m12)
        rj, ri = abs(p00) + abs(p01), abs(p10) + abs(p11)
        rows.append(
            [
                p00,
                p01,
                p02,
                p10,
                p11,
                p12,
                rj,
                ri,
                float(math.floor(2 * rj + 0.02) + 1),
                float(math.floor(2 * ri + 0.02) + 1),
            ]
        )
    return rows


def copies_aligned(mats) -> bool:
    """True when every permutation among ``mats`` (float64 2×3) reads 16-aligned runs: an
    ascending source axis starts at a multiple of 16, a reversed one ends one below a multiple
    of 16 (it is read ascending and reversed in registers). Non-permutation views do not count."""
    for (m00, m01, m02), (m10, m11, m12) in mats:
        straight = m01 == 0 and m10 == 0 and abs(m00) == 1 and abs(m11) == 1
        swapped = m00 == 0 and m11 == 0 and abs(m01) == 1 and abs(m10) == 1
        if not ((straight or swapped) and float(m02).is_integer() and float(m12).is_integer()):
            continue
        sign = m00 if straight else m01  # direction of the source column axis
        if (m02 if sign > 0 else m02 + 1) % 16 != 0:
            return False
    return True


# The quarter turns of a square output grid of side s + 1 as affine maps of the output pixel (j, i):
# Q_1 (j, i) = (s − i, j), Q_2 = Q_1², Q_3 = Q_1³ (exact pixel permutations).
def _quarter_turn(k: int, s: float):
    return {1: ((0, -1, s), (1, 0, 0)), 2: ((-1, 0, s), (0, -1, s)), 3: ((0, 1, 0), (-1, 0, s))}[k]


def _compose(m, q):
    """The affine map p ↦ m(q(p)) of two 2×3 maps."""
    (a, b, c), (d, e, f) = m
    (qa, qb, qc), (qd, qe, qf) = q
    first = (a * qa + b * qd, a * qb + b * qe, a * qc + b * qf + c)
    return first, (d * qa + e * qd, d * qb + e * qe, d * qc + e * qf + f)


def quarter_turn_families(mats, out_hw: tuple[int, int]) -> list[list[int]] | None:
    """Rows ``[base, g1, g2, g3]`` grouping the views whose matrices are the base's composed with a quarter turn
    of the (square) output grid: ``M_gk = M_base ∘ Q_k`` (within 1e-9 per output pixel, float64 matrices), so
    view ``gk`` is view ``base`` turned by k quarter turns, and the kernels can sample a family once; −1 where
    no view is that turn. None when the views are not square or no two views are related.

    Views come in the order of ``mats``; each view is in exactly one row, as its base or as a member.
    """
    h, w = out_hw
    if h != w or len(mats) < 2:
        return None
    s = float(w - 1)
    tol = 1e-9 * (1.0 + s)
    close = lambda a, b: all(abs(x - y) <= tol for ra, rb in zip(a, b) for x, y in zip(ra, rb))  # noqa: E731
    # candidates by their first entry (sorted, bisected): O(N log N) for groups of thousands of elements
    order = sorted(range(len(mats)), key=lambda o: mats[o][0][0])
    first = [mats[o][0][0] for o in order]
    placed = [False] * len(mats)
    rows = []
    for g, m in enumerate(mats):
        if placed[g]:
            continue
        placed[g] = True
        row = [g, -1, -1, -1]
        for k in (1, 2, 3):
            turned = _compose(m, _quarter_turn(k, s))
            lo = bisect.bisect_left(first, turned[0][0] - tol)
            hi = bisect.bisect_right(first, turned[0][0] + tol)
            hits = [order[i] for i in range(lo, hi) if order[i] > g and not placed[order[i]]]
            hit = min((o for o in hits if close(mats[o], turned)), default=None)  # the first view that is the turn
            if hit is not None:
                row[k], placed[hit] = hit, True
        rows.append(row)
    return rows if len(rows) < len(mats) else None


def _inverse_mats(mats):
    return tuple(((r[0], r[1], r[2]), (r[3], r[4], r[5])) for r in pull_rows(mats))


def view_tables(
    group: Group,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    crop_ratio: float | tuple[float, float],
    device: torch.device,
    inverse: bool = False,
) -> ViewTables:
    """Cached :class:`ViewTables` on ``device``; ``inverse=True`` orders the views by inverse
    element (row g holds the view of g⁻¹: what ``invert`` applies for a choice g)."""
    crop = tuple(float(c) for c in crop_ratio) if isinstance(crop_ratio, (tuple, list)) else float(crop_ratio)
    key = ("views", group, tuple(in_hw), tuple(out_hw), crop, torch.device(device), bool(inverse))

    def build():
        mats, exact = view_matrices(group, tuple(in_hw), tuple(out_hw), crop)
        if inverse:
            mats = tuple(mats[group.inverse(g)] for g in range(group.order))
        m = torch.tensor(mats, dtype=torch.float64).to(torch.float32).to(device)
        pull = torch.tensor(pull_rows(mats), dtype=torch.float64).to(torch.float32).to(device)
        fam = quarter_turn_families(mats, tuple(out_hw))
        fam = torch.tensor(fam, dtype=torch.int32, device=device) if fam is not None else None
        return ViewTables(m, pull, exact, copies_aligned(mats) and copies_aligned(_inverse_mats(mats)), fam)

    return _cached(key, build)


# Antialiased views. A view that shrinks the input (more than one input pixel per output pixel along an
# axis) samples each output pixel with the triangle filter of torchvision's/PIL's antialiased bilinear
# resize, in the view's own frame: input pixel q weighs tri(a·ka)·tri(b·kb), where (a, b) = P(q) − (j, i)
# is q's offset from output pixel (j, i) in output pixels (P: the view's inverse map, the pull table's
# first six slots), and ka = min(1, sx), kb = min(1, sy) with sx, sy the input pixels per output pixel
# along the view's axes (so a shrinking axis has a filter one output pixel wide, a growing one stays
# bilinear). Weights are normalised by their sum over the whole pixel lattice (``AntialiasTables.norm``);
# pixels outside the input take the padding's value (zeros: 0, border: the edge, reflection: the
# mirror). For a view without rotation this is torchvision's antialiased resize away from the image
# border; rotated views use the rotated filter. The values: canon.oracle.orbit_antialias.
def antialias_frame(mats: torch.Tensor, pull: torch.Tensor):
    """Per view (N,): ``ka``, ``kb`` and the window half-widths ``ru``, ``rv`` in input pixels."""
    m = mats.reshape(-1, 6)
    sx = torch.sqrt(m[:, 0] * m[:, 0] + m[:, 3] * m[:, 3])
    sy = torch.sqrt(m[:, 1] * m[:, 1] + m[:, 4] * m[:, 4])
    ka, kb = sx.clamp(max=1.0), sy.clamp(max=1.0)
    return ka, kb, m[:, 0].abs() / ka + m[:, 1].abs() / kb, m[:, 3].abs() / ka + m[:, 4].abs() / kb


def antialias_window(mats: torch.Tensor, pull: torch.Tensor, h: int, w: int, taps: int):
    """Yield ``(qu, qv, weight)`` for the ``taps × taps`` window positions around every output pixel of
    every view: integer input coordinates and filter weights, each (N, h·w), in ``mats``' dtype."""
    dt = mats.dtype
    m = mats.reshape(-1, 6)
    p = pull[:, :6].to(dt)
    j = torch.arange(w, device=mats.device, dtype=dt).repeat(h)
    i = torch.arange(h, device=mats.device, dtype=dt).repeat_interleave(w)
    u = (m[:, 0:1] * j + m[:, 1:2] * i) + m[:, 2:3]
    v = (m[:, 3:4] * j + m[:, 4:5] * i) + m[:, 5:6]
    ka, kb, ru, rv = (t[:, None] for t in antialias_frame(mats, pull))
    u0, v0 = torch.floor(u - ru - 0.01), torch.floor(v - rv - 0.01)
    for ti in range(taps):
        qv = v0 + ti
        for tj in range(taps):
            qu = u0 + tj
            ox = (p[:, 0:1] * qu + p[:, 1:2] * qv) + p[:, 2:3]
            oy = (p[:, 3:4] * qu + p[:, 4:5] * qv) + p[:, 5:6]
            wa = (1.0 - (ox - j).abs() * ka).clamp_min(0.0)
            wb = (1.0 - (oy - i).abs() * kb).clamp_min(0.0)
            yield qu, qv, wa * wb


class AntialiasTables(NamedTuple):
    """What antialiased views of one view set need (see :func:`antialias_window`).

    ``norm`` (N, h, w) float32: the sum of every output pixel's filter weights over the pixel lattice;
    ``taps``: the side of the square window of input pixels that covers every output pixel's filter
    (the forward's loop bound); ``back_taps``: the side of the window of output pixels whose filters
    reach one input pixel (the gather adjoint's loop bound).
    """

    norm: torch.Tensor
    taps: int
    back_taps: int


def view_scales(in_hw: tuple[int, int], out_hw: tuple[int, int], crop_ratio) -> tuple[float, float]:
    """Input pixels per output pixel along the view's (x, y) axes: ``(rx·W/w, ry·H/h)``."""
    ry, rx = crop_ratio if isinstance(crop_ratio, (tuple, list)) else (crop_ratio, crop_ratio)
    return rx * in_hw[1] / out_hw[1], ry * in_hw[0] / out_hw[0]


def antialias_tables(
    group: Group,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    crop_ratio: float | tuple[float, float],
    device: torch.device,
) -> AntialiasTables | None:
    """Cached :class:`AntialiasTables` of the views of ``group``, or None when no view axis shrinks
    (antialiasing would change nothing: the views stay the plain bilinear, exact ones bit-exact)."""
    sx, sy = view_scales(in_hw, out_hw, crop_ratio)
    if max(sx, sy) <= 1.0 + 1e-9:
        return None
    crop = tuple(float(c) for c in crop_ratio) if isinstance(crop_ratio, (tuple, list)) else float(crop_ratio)
    key = ("antialias", group, tuple(in_hw), tuple(out_hw), crop, torch.device(device))

    def build():
        mats, _ = view_matrices(group, tuple(in_hw), tuple(out_hw), crop)
        m = torch.tensor(mats, dtype=torch.float64)
        p = torch.tensor(pull_rows(mats), dtype=torch.float64)
        ka, kb, ru, rv = antialias_frame(m, p)
        taps = int(torch.floor(2 * torch.maximum(ru, rv) + 0.02).max()) + 2
        back_taps = int(torch.floor(2 / torch.minimum(ka, kb) + 0.02).max()) + 2
        h, w = out_hw
        norm = sum(wt for _, _, wt in antialias_window(m, p, h, w, taps)).reshape(-1, h, w)
        return AntialiasTables(norm.to(torch.float32).to(device), taps, back_taps)

    return _cached(key, build)


def view_matrices_tensor(
    group: Group,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    crop_ratio: float | tuple[float, float],
    device: torch.device,
) -> tuple[torch.Tensor, bool]:
    """(N, 2, 3) float32 view matrices on ``device`` and whether all are exact (cached)."""
    t = view_tables(group, in_hw, out_hw, crop_ratio, device)
    return t.mats, t.exact


def channel_tables(group: Group, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached (N, N) int64 tables for the regular representation's group axis: row g of the
    first is ``h ↦ g·h`` (the Cayley table), row g of the second its inverse ``h ↦ g⁻¹·h``."""

    def build():
        table = group.cayley_table
        return table.to(device), table[group.inverse_table].to(device)

    return _cached(("channels", group, torch.device(device)), build)


def group_table(group: Group, name: str, device: torch.device) -> torch.Tensor:
    """A cached device copy of ``group.<name>`` (e.g. ``inverse_table``)."""
    return _cached(("group", group, name, torch.device(device)), lambda: getattr(group, name).to(device))


def _as_index_tensor(index: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{what}: element indices must be an int tensor")
    return index.long()


def transform_points(
    points: torch.Tensor, index: torch.Tensor, group: Group, image_hw: tuple[int, int], inverse: bool = False
) -> torch.Tensor:
    """Move points ``(B, P, 2)`` given as ``(x, y)`` in pixel coordinates through element ``index[b]``.

    ``inverse=False`` maps a point of ``x`` to where it lands in ``T_g x``;
    ``inverse=True`` maps a point of ``T_g x`` back to ``x``. The rotation centre is
    ``((W−1)/2, (H−1)/2)``, as for images.
    """
    H, W = image_hw
    idx = _as_index_tensor(index, group.order, "transform_points")
    if inverse:
        idx = group.inverse_table.to(idx.device)[idx]
    lin = torch.tensor([group.matrix(g) for g in range(group.order)], dtype=torch.float64)
    A = lin.to(points.device)[idx].to(points.dtype if points.is_floating_point() else torch.float32)  # (B, 2, 2)
    c = torch.tensor([(W - 1) / 2.0, (H - 1) / 2.0], dtype=A.dtype, device=points.device)
    return torch.einsum("bij,bpj->bpi", A, points - c) + c


def transform_boxes(
    boxes: torch.Tensor, index: torch.Tensor, group: Group, image_hw: tuple[int, int], inverse: bool = False
) -> torch.Tensor:
    """Move axis-aligned boxes ``(B, K, 4)`` in ``xyxy`` edge coordinates (``[0, W] × [0, H]``).

    The four corners are moved and the enclosing axis-aligned box is returned; for
    multiples of 90° and flips this is exact.
    """
    H, W = image_hw
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack(
        [torch.stack(p, -1) for p in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], dim=-2
    )  # (B, K, 4, 2)
    B, K = boxes.shape[:2]
    # Edge coordinates are pixel coordinates shifted by half a pixel.
    moved = transform_points(corners.reshape(B, K * 4, 2) - 0.5, index, group, image_hw, inverse) + 0.5
    moved = moved.reshape(B, K, 4, 2)
    lo, hi = moved.amin(dim=-2), moved.amax(dim=-2)
    return torch.cat([lo, hi], dim=-1)
