"""Affine maps of the views: crop, resize and group element composed into one 2×3 matrix.

A view matrix ``M`` (2×3) maps an *output* pixel index ``(j, i)`` (column, row)
to the *input* pixel coordinate ``(u, v)`` that it samples:

    u = M[0,0]·j + M[0,1]·i + M[0,2]
    v = M[1,0]·j + M[1,1]·i + M[1,2]

Pixel centres are at integer coordinates; ``(0, 0)`` is the centre of the top-left
pixel. The view of element ``g`` with crop ratio ``r`` is

    source = c_in + A_g⁻¹ · diag(r·W/w, r·H/h) · ((j, i) − c_out)

with ``c = ((W−1)/2, (H−1)/2)`` (``r`` may differ per axis: ``(ry, rx)``) and ``A_g`` from :meth:`canon.groups.Group.matrix`.
Everything is built in float64 and cast once to float32, so multiples of 90° and
flips give exact integer coordinates (they are then pixel permutations).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from canon.groups import Group

__all__ = ["view_matrices", "view_matrices_tensor", "views_in_range", "transform_points", "transform_boxes"]


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
        exact &= all(x in (-1.0, 0.0, 1.0) for x in (m00, m01, m10, m11)) and float(m02).is_integer() and float(m12).is_integer()
    return tuple(mats), exact


@lru_cache(maxsize=256)
def views_in_range(group: Group, in_hw: tuple[int, int], out_hw: tuple[int, int], crop_ratio: float | tuple[float, float] = 1.0) -> bool:
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


_TENSOR_CACHE: dict = {}


def view_matrices_tensor(
    group: Group,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    crop_ratio: float | tuple[float, float],
    device: torch.device,
) -> tuple[torch.Tensor, bool]:
    """(N, 2, 3) float32 view matrices on ``device``, cached (no per-call host→device copy)."""
    crop = tuple(float(c) for c in crop_ratio) if isinstance(crop_ratio, (tuple, list)) else float(crop_ratio)
    key = (group, tuple(in_hw), tuple(out_hw), crop, torch.device(device))
    hit = _TENSOR_CACHE.get(key)
    if hit is None:
        mats, exact = view_matrices(group, tuple(in_hw), tuple(out_hw), crop)
        t = torch.tensor(mats, dtype=torch.float64).to(torch.float32).to(device)
        if len(_TENSOR_CACHE) > 512:
            _TENSOR_CACHE.clear()
        hit = _TENSOR_CACHE[key] = (t, exact)
    return hit


def _as_index_tensor(index: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{what}: element indices must be an int tensor")
    return index.long()


def transform_points(points: torch.Tensor, index: torch.Tensor, group: Group, image_hw: tuple[int, int], inverse: bool = False) -> torch.Tensor:
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


def transform_boxes(boxes: torch.Tensor, index: torch.Tensor, group: Group, image_hw: tuple[int, int], inverse: bool = False) -> torch.Tensor:
    """Move axis-aligned boxes ``(B, K, 4)`` in ``xyxy`` edge coordinates (``[0, W] × [0, H]``).

    The four corners are moved and the enclosing axis-aligned box is returned; for
    multiples of 90° and flips this is exact.
    """
    H, W = image_hw
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(p, -1) for p in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], dim=-2)  # (B, K, 4, 2)
    B, K = boxes.shape[:2]
    # Edge coordinates are pixel coordinates shifted by half a pixel.
    moved = transform_points(corners.reshape(B, K * 4, 2) - 0.5, index, group, image_hw, inverse) + 0.5
    moved = moved.reshape(B, K, 4, 2)
    lo, hi = moved.amin(dim=-2), moved.amax(dim=-2)
    return torch.cat([lo, hi], dim=-1)
