"""The peers a PyTorch user has for free: canon's ops written as one batched ``F.grid_sample`` each.

These are the bench's ``torch-batched`` provider, and, wrapped in ``torch.compile``, its
``torch-compile`` provider (inductor turns them into generated Triton or C++ kernels, forward and
backward). They compute canon's outputs and gradients (the tolerance table's
``grid_sample_coordinates`` case), with the geometry taken from :mod:`canon.geometry` so that the
work compared is the resampling itself:

* :func:`orbit`: every view of every image in ONE ``grid_sample``: the N view grids are stacked
  along the output height, ``(1, N·h, w, 2)``, expanded over the batch (no copy of the images), and
  the result ``(B, C, N·h, w)`` is returned as the ``(B, N, C, h, w)`` view of it (permuted, not
  copied: the cheapest layout for the peer). The grids are built once per shape, outside the timed
  call, as a user who caches them would. One bilinear tap per pixel: no antialiasing.
* :func:`transform` (canonicalize; invert with the inverse elements): with an index tensor, one
  ``affine_grid`` + ``grid_sample`` of the chosen elements. With a one-hot that receives a gradient
  (canon's :class:`canon.Selection`), canon's mixture straight-through rule ``∂L/∂onehot[b, g] =
  ⟨∂L/∂x_c[b], T_g x[b]⟩`` needs every ``T_g x``: the peer samples all N transforms at full
  resolution in one call and contracts them with the one-hot (forward value: the chosen transform).

Pixel-to-normalised coordinates follow ``grid_sample(align_corners=False)``, as canon's padding
modes do (docs/spec.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from canon.geometry import view_matrices
from canon.groups import Group

__all__ = ["thetas", "orbit_grid", "orbit", "transform", "compiled"]


def thetas(
    group: Group, in_hw: tuple[int, int], out_hw: tuple[int, int], crop_ratio=1.0, inverse: bool = False
) -> torch.Tensor:
    """(N, 2, 3) float64 ``affine_grid`` matrices of every view (``inverse``: row g holds the view of g⁻¹).

    canon's view matrix maps an output pixel index to an input pixel coordinate; ``affine_grid``
    maps normalised output coordinates to normalised input ones, so ``θ = A_in · M · A_out⁻¹``
    with ``A`` the pixel → normalised map of ``align_corners=False`` (``x = (2u + 1)/W − 1``).
    """
    (H, W), (h, w) = in_hw, out_hw
    mats, _ = view_matrices(group, tuple(in_hw), tuple(out_hw), crop_ratio)
    if inverse:
        mats = tuple(mats[group.inverse(g)] for g in range(group.order))
    m = torch.tensor(mats, dtype=torch.float64)
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(len(mats), 1, 3)
    m = torch.cat([m, bottom], 1)
    to_norm_in = torch.tensor([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]], dtype=torch.float64)
    from_norm_out = torch.tensor([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    return (to_norm_in @ m @ from_norm_out)[:, :2]


def orbit_grid(group: Group, in_hw, out_hw, crop_ratio, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The sampling grid of every view, stacked along the height: (1, N·h, w, 2) (float32 for half inputs)."""
    t = thetas(group, in_hw, out_hw, crop_ratio)
    N, (h, w) = group.order, out_hw
    grid = F.affine_grid(t, [N, 1, h, w], align_corners=False)  # float64, then one rounding
    return grid.reshape(1, N * h, w, 2).to(device, dtype)


def orbit(x: torch.Tensor, grid: torch.Tensor, n: int, padding: str = "zeros") -> torch.Tensor:
    """(B, N, C, h, w) views of ``x`` (B, C, H, W) from :func:`orbit_grid`'s ``grid``: one ``grid_sample``."""
    B, C = x.shape[:2]
    y = F.grid_sample(_wide(x), grid.expand(B, -1, -1, -1), "bilinear", padding, align_corners=False)
    return y.unflatten(2, (n, -1)).transpose(1, 2).to(x.dtype)


def transform(x: torch.Tensor, choice: torch.Tensor, theta: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """``T_{g[b]} x[b]`` at full resolution: canon's canonicalize (``theta`` of :func:`thetas`) or invert
    (``thetas(..., inverse=True)``).

    ``theta``: float32 (float64 for float64 images) on the images' device. ``choice``: an int tensor (B,)
    of elements (one ``grid_sample`` of the chosen views), or a float
    one-hot (B, N) (every transform sampled in one call and mixed by the one-hot, so that the one-hot
    receives canon's straight-through gradient).
    """
    B, C, H, W = x.shape
    if not choice.is_floating_point():
        grid = F.affine_grid(theta[choice], [B, C, H, W], align_corners=False)
        return F.grid_sample(_wide(x), grid, "bilinear", padding, align_corners=False).to(x.dtype)
    N = theta.shape[0]
    grid = F.affine_grid(theta, [N, 1, H, W], align_corners=False).reshape(1, N * H, W, 2)
    every = F.grid_sample(_wide(x), grid.expand(B, -1, -1, -1), "bilinear", padding, align_corners=False)
    return torch.einsum("bcnhw,bn->bchw", every.unflatten(2, (N, H)), choice.float()).to(x.dtype)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32 samples of a half-precision input: ``grid_sample`` wants the grid in the input's dtype, and
    bf16 coordinates are off by up to ~0.4 px at 224² (canon computes coordinates in float32 too)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def compiled(fn, backend: str = "inductor", mode: str | None = None):
    """``fn`` under ``torch.compile`` as a user would call it: whole graph, static shapes.

    ``fullgraph=True`` turns a graph break into an error (a row that says so) instead of a silent
    partial compile; ``dynamic=False`` keeps the shapes of one size point specialised.
    """
    return torch.compile(fn, backend=backend, mode=mode, fullgraph=True, dynamic=False)
