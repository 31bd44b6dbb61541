"""Memory of large CPU orbits: the block of a dropped orbit is lent to the next one.

glibc serves every block above its mmap threshold (at most 32 MiB) with freshly mapped
memory, so each large output of an op costs one page fault per 4 KiB page on its first
write: for the quick benchmark's orbit (57 MB) about 15 ms of the 26 ms the op took on the
2-core machine, more than the resampling itself. Where a loop drops each orbit before the
next (an evaluation loop, a benchmark), :func:`empty_reusable` hands the same block out
again: it keeps a private alias of the last large block and reuses it only once that alias
is the one holder left (:func:`sole_holder`: a tensor still held anywhere — by the caller, a
view of it, an autograd graph —, a kept storage object or another process sharing the memory
keeps the block from being reused). The cost is
one kept block (the last large orbit's size) after the caller has dropped everything;
:func:`release` frees it.

(Advising fresh blocks for transparent huge pages, ``madvise(MADV_HUGEPAGE)``, was tried
too: 26 → 13 ms in a steady loop, but first calls stalled up to 79 ms in the kernel's
compaction on the 2-core machine, so it is not done.)
"""

from __future__ import annotations

import math
import sys
import threading

import torch

from canon._cache import transient_tensors

__all__ = ["empty_reusable", "sole_holder", "on_memory_of", "release", "MIN_BYTES"]

MIN_BYTES = 16 << 20  # smaller blocks come from glibc's heap, usually without page faults

_lock = threading.Lock()
_kept: torch.Tensor | None = None  # private alias of the last large block handed out (never returned itself)


def _storage_refs(t: torch.Tensor) -> tuple[int, int]:
    """(Python references to ``t``'s storage object, C++ holders of its storage) seen from here."""
    storage = t.untyped_storage()  # the caller's storage object if one is alive, else a new one
    return sys.getrefcount(storage), torch._C._storage_Use_Count(storage._cdata)


try:  # the counts of a storage that nothing but one tensor holds
    _ALONE = _storage_refs(torch.empty(1))
except AttributeError:  # private counter missing in this torch: never reuse
    _ALONE = None


def sole_holder(buf: torch.Tensor) -> bool:
    """Whether ``buf`` is the only holder of its memory: no other tensor (view, slice, saved for
    backward), no storage object (``x.untyped_storage()`` kept by someone), no other process
    (shared memory). C++ and Python reference counts, not guesses."""
    if _ALONE is None or buf.is_shared() or type(buf) is not torch.Tensor:
        return False
    return _storage_refs(buf) == _ALONE


def on_memory_of(buf: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A tensor of ``shape`` on ``buf``'s memory that is not a view of it (autograd lets callers modify
    it in place, which it refuses for a view made inside a custom ``autograd.Function``)."""
    return torch.empty(0, dtype=buf.dtype, device=buf.device).set_(buf.untyped_storage(), 0, shape)


def empty_reusable(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU; a large block reuses the last one's memory when nothing
    else holds it. Contents are undefined either way. Under tracing or a dispatch mode (fake tensors,
    ``make_fx``) always a plain ``torch.empty``, never kept."""
    global _kept
    if math.prod(shape) * dtype.itemsize < MIN_BYTES or transient_tensors():
        return torch.empty(shape, dtype=dtype)
    with _lock:
        buf = _kept
        if buf is not None and buf.dtype == dtype and buf.numel() == math.prod(shape) and sole_holder(buf):
            return on_memory_of(buf, shape)  # the alias stays private
        out = torch.empty(shape, dtype=dtype)
        # inference tensors cannot be used outside inference mode later, subclasses are not memory: never kept
        _kept = out.detach() if type(out) is torch.Tensor and not out.is_inference() else None
        return out


def release() -> None:
    """Drop the kept block (its memory is freed once nothing else holds it)."""
    global _kept
    with _lock:
        _kept = None
