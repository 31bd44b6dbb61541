"""Large fresh CPU outputs backed by transparent huge pages (Linux).

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
"""

from __future__ import annotations

import ctypes
import os

import torch

__all__ = ["advise_huge_pages", "HUGE_PAGE_BYTES", "MIN_BYTES"]

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
