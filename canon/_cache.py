"""The one cache policy of ``canon`` and the one question it asks: may tensors made now be kept?

Every cache of derived data (argument plans and device tables, :mod:`canon.plans` and
:mod:`canon.geometry`; the CPU backend's per-matrix plans, :mod:`canon.reference`; reused memory,
:mod:`canon._memory`) keeps nothing while :func:`transient_tensors` holds. Caches keyed by argument
values are :class:`Cache`, caches of data derived from a table tensor :class:`PerTensorCache`.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["transient_tensors", "Cache", "PerTensorCache"]


def transient_tensors() -> bool:
    """Tensors made now would not be plain, lasting ones, so no cache keeps them: torch.compile/export
    or torch.jit tracing (fake or traced tensors), a dispatch mode (fake tensors, ``make_fx``), or a
    ``torch.func`` transform (wrapped tensors: cached once, they made a later ``torch.export`` fail
    with "Cannot access storage of TensorWrapper")."""
    return (
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or _get_current_dispatch_mode() is not None
        or torch._C._functorch.maybe_current_level() is not None
    )


class Cache:
    """``key → build()``, computed once. Unhashable keys and calls under :func:`transient_tensors` build
    without keeping; past ``limit`` entries the cache starts over (argument sets are few in practice;
    the limit only bounds a caller that makes new ones forever). Builds run with inference mode off, so
    that a first call under ``torch.inference_mode()`` keeps normal tensors (inference tensors could not
    be saved for backward nor version-checked by later calls)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._entries: dict = {}

    def get(self, key, build):
        try:
            hit = self._entries.get(key)
        except TypeError:  # an unhashable argument
            return build()
        if hit is None:
            if transient_tensors():
                return build()
            if len(self._entries) >= self.limit:
                self._entries.clear()
            with torch.inference_mode(False):
                hit = self._entries[key] = build()
        return hit

    def peek(self, key):
        """The kept value of ``key``, or None (nothing is built)."""
        return self._entries.get(key)

    def values(self):
        return self._entries.values()

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class PerTensorCache:
    """``(tensor, key) → build()``, kept while ``tensor`` lives (a weak reference drops its entries with
    it): for data derived from a table tensor, such as the CPU backend's sampling plans. The tensor is
    treated as immutable; an in-place change shows in its version counter, part of the key, and
    rebuilds. Nothing is kept under :func:`transient_tensors` or for a tensor that requires grad."""

    def __init__(self):
        self._owners: dict = {}  # id(tensor) -> (weak reference, {key: value})

    def get(self, tensor: torch.Tensor, key, build):
        if transient_tensors() or tensor.requires_grad:
            return build()
        owner = id(tensor)
        per = self._owners.get(owner)
        if per is None or per[0]() is not tensor:
            per = self._owners[owner] = (weakref.ref(tensor, lambda _: self._owners.pop(owner, None)), {})
        version = None if tensor.is_inference() else tensor._version  # inference tensors have no version counter
        hit = per[1].get((version, key))
        if hit is None:
            with torch.inference_mode(False):
                hit = per[1][(version, key)] = build()
        return hit
