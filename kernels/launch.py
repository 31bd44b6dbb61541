"""The one place where the launchers start a kernel.

Every launcher in :mod:`canon.kernels` calls :func:`launch` instead of ``kernel[grid](...)``.
That gives two things one seam:

* the compile gate (:mod:`canon.kernels.compile`) swaps in a recorder with
  :func:`recording`, runs the launchers on ``meta`` tensors of real sizes, and compiles
  exactly the variants (constexprs, integer specialisation, num_warps) that a real launch
  of those sizes produces, without a GPU;
* options shared by every kernel (``enable_fp_fusion=False`` for the resampling kernels:
  coordinates are then computed with the same IEEE mul/add as the PyTorch reference, so a
  GPU and the CPU reference pick the same taps) are applied here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import triton.language as tl

__all__ = ["launch", "recording", "Launch", "acc_dtype", "acc_tl"]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of every kernel: float64 stays float64, every other dtype accumulates
    in float32 and is cast back on store (the same rule as ``canon.reference.acc_dtype``)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def acc_tl(dtype: torch.dtype):
    """:func:`acc_dtype` as the Triton dtype passed to a kernel's ``ACC`` meta-parameter."""
    return tl.float64 if dtype == torch.float64 else tl.float32


class Launch:
    """One recorded launch: the kernel, its grid and its arguments by name."""

    def __init__(self, kernel, grid: tuple[int, ...], args: dict, options: dict):
        self.kernel, self.grid, self.args, self.options = kernel, grid, args, options

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__ if hasattr(self.kernel, "fn") else self.kernel.__name__


_recorder: Callable[[Launch], None] | None = None


def launch(kernel, grid: tuple[int, ...], num_warps: int, fp_fusion: bool = True, **args) -> None:
    """Launch ``kernel`` over ``grid`` with keyword ``args`` (pointers, sizes, strides, meta-parameters)."""
    options = {"num_warps": num_warps}
    if not fp_fusion:
        options["enable_fp_fusion"] = False
    if _recorder is not None:
        _recorder(Launch(kernel, tuple(grid), args, options))
        return
    kernel[grid](**args, **options)


@contextlib.contextmanager
def recording(sink: list):
    """Record launches into ``sink`` instead of running them (for the compile gate)."""
    global _recorder
    prev = _recorder
    _recorder = sink.append
    try:
        yield sink
    finally:
        _recorder = prev
