"""Numeric rules every backend shares: the accumulation dtype, the orbit's memory layouts and the
source coordinates of a view's pixels.

Imported by the CPU backend (:mod:`canon.reference`), the Triton side (:mod:`canon.triton_ops`),
the oracle (:mod:`canon.oracle`) and the ops' fake implementations, so that no backend imports
another for them. (The kernels' twin of :func:`acc_dtype` is ``canon.kernels.launch.acc_dtype``:
the kernels know nothing of ``canon``.)
"""

from __future__ import annotations

import torch

from canon._memory import empty_reusable

__all__ = ["acc_dtype", "orbit_empty", "sample_coords"]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of every op, on every backend: float64 stays float64, every other
    dtype accumulates in float32 (and is cast back on store)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def orbit_empty(
    B: int, N: int, C: int, h: int, w: int, dtype: torch.dtype, device, channels_last: bool, reuse: bool = False
) -> torch.Tensor:
    """Uninitialised views (B, N, C, h, w); ``channels_last``: laid out so that ``flatten(0, 1)``
    is ``torch.channels_last`` without a copy. The one place the orbit's layouts are defined.
    ``reuse`` (CPU): a large orbit takes the memory of the last one if nothing holds it any more
    (:mod:`canon._memory`), which saves the page faults of a fresh block."""
    shape = (B, N, h, w, C) if channels_last else (B, N, C, h, w)
    if reuse and torch.device(device).type == "cpu":
        out = empty_reusable(shape, dtype)
    else:
        out = torch.empty(shape, dtype=dtype, device=device)
    return out.permute(0, 1, 4, 2, 3) if channels_last else out


def sample_coords(mats: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates ``(u, v)``, each ``(..., h·w)`` float32 (row-major output pixels), for matrices
    ``(..., 2, 3)``: ``u = (m00·j + m01·i) + m02``, ``v = (m10·j + m11·i) + m12``, in this order, as the kernels
    compute them."""
    dev = mats.device
    j = torch.arange(w, device=dev, dtype=torch.float32).repeat(h)
    i = torch.arange(h, device=dev, dtype=torch.float32).repeat_interleave(w)
    m = mats.to(torch.float32)[..., None]  # (..., 2, 3, 1)
    u = (m[..., 0, 0, :] * j + m[..., 0, 1, :] * i) + m[..., 0, 2, :]
    v = (m[..., 1, 0, :] * j + m[..., 1, 1, :] * i) + m[..., 1, 2, :]
    return u, v
