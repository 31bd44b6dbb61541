"""Memory of large CPU orbits: the last one's block reused once dropped, fresh ones on huge pages.

glibc serves every block above its mmap threshold (at most 32 MiB) with freshly mapped
memory, so each large output of an op costs one page fault per 4 KiB page on its first
write: for the quick benchmark's orbit (57 MB) about 15 ms of the 27 ms the op took on
the 2-core machine, more than the resampling itself. Asking the kernel for huge pages on
the untouched block (``madvise(MADV_HUGEPAGE)``) makes that one fault per 2 MiB: 2.6 ms.
(PyTorch does the same for every allocation when started with ``THP_MEM_ALLOC_ENABLE=1``;
this module does it only for the outputs of canon's ops, whatever the environment.)

Only when the kernel's policy is ``madvise`` (with ``always`` the pages are huge anyway,
with ``never`` the advice does nothing); only whole 2 MiB pages inside the tensor's own
block are advised; any failure leaves the tensor as it was. ``CANON_HUGE_PAGES=0`` turns it off.

Reuse does better where a loop drops each orbit before the next (an evaluation loop, a
benchmark): :func:`empty_reusable` keeps a private alias of the last large block and hands
its memory out again once that alias is the only holder left (C++ storage reference
counts: a tensor still held anywhere — by the caller, a view of it, an autograd graph — keeps
it from being reused). It costs one kept block (the last large orbit's size) after the caller
has dropped everything; :func:`release` frees it.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading

import torch

__all__ = ["advise_huge_pages", "empty_reusable", "release", "HUGE_PAGE_BYTES", "MIN_BYTES"]

HUGE_PAGE_BYTES = 2 << 20
MIN_BYTES = 16 << 20  # below glibc's largest mmap threshold, blocks are usually reused (no page faults)
_MADV_HUGEPAGE = 14
_POLICY = "/sys/kernel/mm/transparent_hugepage/enabled"

_madvise = None  # the libc function once found; False when unavailable or not useful here


def _find_madvise():
    if os.environ.get("CANON_HUGE_PAGES", "1") == "0":
        return False
    try:
        with open(_POLICY) as f:
            if "[madvise]" not in f.read():
                return False
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def advise_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Advise huge pages for a freshly allocated CPU tensor of at least :data:`MIN_BYTES`; returns ``t``.

    Call it before anything writes to ``t``: pages already touched stay small.
    """
    global _madvise
    if t.device.type != "cpu" or torch.compiler.is_compiling():
        return t
    try:
        storage = t.untyped_storage()
        start, size = storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):  # fake/functional tensors have no memory
        return t
    if size < MIN_BYTES or start == 0:
        return t
    if _madvise is None:
        _madvise = _find_madvise()
    if _madvise is False:
        return t
    end = start + size
    first = -(-start // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    last = end // HUGE_PAGE_BYTES * HUGE_PAGE_BYTES
    if last > first:
        _madvise(first, last - first, _MADV_HUGEPAGE)  # advice only: a failure changes nothing
    return t


_lock = threading.Lock()
_kept: torch.Tensor | None = None  # private alias of the last large block handed out (never returned itself)


def _sole_holder(buf: torch.Tensor) -> bool:
    try:  # minus the temporary storage object made by untyped_storage()
        return torch._C._storage_Use_Count(buf.untyped_storage()._cdata) - 1 == 1
    except AttributeError:  # private counter missing in this torch: never reuse
        return False


def empty_reusable(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU; a large block reuses the last one's memory when nothing
    else holds it, else is fresh (and advised for huge pages). Contents are undefined either way."""
    global _kept
    if math.prod(shape) * dtype.itemsize < MIN_BYTES or torch.compiler.is_compiling():
        return torch.empty(shape, dtype=dtype)
    with _lock:
        buf = _kept
        if buf is not None and buf.dtype == dtype and buf.numel() == math.prod(shape) and _sole_holder(buf):
            return buf.view(shape)  # a new tensor on the same memory; the alias stays private
        out = advise_huge_pages(torch.empty(shape, dtype=dtype))
        # inference tensors cannot be used outside inference mode later: never kept
        _kept = None if out.is_inference() else out.detach()
        return out


def release() -> None:
    """Drop the kept block (its memory is freed once nothing else holds it)."""
    global _kept
    with _lock:
        _kept = None
