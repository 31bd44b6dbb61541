"""Memory of large CPU orbits: the block of a dropped orbit is lent to the next one.

glibc serves every block above its mmap threshold (at most 32 MiB) with freshly mapped
memory, so each large output of an op costs one page fault per 4 KiB page on its first
write: for the quick benchmark's orbit (57 MB) about 15 ms of the 26 ms the op took on the
2-core machine, more than the resampling itself. Where a loop drops each orbit before the
next (an evaluation loop, a benchmark), :func:`empty_reusable` hands the same block out
again: it keeps a private alias of the last large block and reuses it only once that alias
is the one holder left (C++ storage reference counts: a tensor still held anywhere — by the
caller, a view of it, an autograd graph — keeps the block from being reused). The cost is
one kept block (the last large orbit's size) after the caller has dropped everything;
:func:`release` frees it.

(Advising fresh blocks for transparent huge pages, ``madvise(MADV_HUGEPAGE)``, was tried
too: 26 → 13 ms in a steady loop, but first calls stalled up to 79 ms in the kernel's
compaction on the 2-core machine, so it is not done.)
"""

from __future__ import annotations

import math
import threading

import torch

__all__ = ["empty_reusable", "release", "MIN_BYTES"]

MIN_BYTES = 16 << 20  # smaller blocks come from glibc's heap, usually without page faults

_lock = threading.Lock()
_kept: torch.Tensor | None = None  # private alias of the last large block handed out (never returned itself)


def _sole_holder(buf: torch.Tensor) -> bool:
    try:  # minus the temporary storage object made by untyped_storage()
        return torch._C._storage_Use_Count(buf.untyped_storage()._cdata) - 1 == 1
    except AttributeError:  # private counter missing in this torch: never reuse
        return False


def empty_reusable(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU; a large block reuses the last one's memory when nothing
    else holds it. Contents are undefined either way."""
    global _kept
    if math.prod(shape) * dtype.itemsize < MIN_BYTES or torch.compiler.is_compiling():
        return torch.empty(shape, dtype=dtype)
    with _lock:
        buf = _kept
        if buf is not None and buf.dtype == dtype and buf.numel() == math.prod(shape) and _sole_holder(buf):
            return buf.view(shape)  # a new tensor on the same memory; the alias stays private
        out = torch.empty(shape, dtype=dtype)
        # inference tensors cannot be used outside inference mode later: never kept
        _kept = None if out.is_inference() else out.detach()
        return out


def release() -> None:
    """Drop the kept block (its memory is freed once nothing else holds it)."""
    global _kept
    with _lock:
        _kept = None
