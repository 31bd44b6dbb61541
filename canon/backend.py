"""Which implementation runs the ops: ``auto`` | ``reference`` | ``triton``.

The default comes from the environment variable ``CANON_BACKEND`` (``auto`` when
unset). ``auto`` runs the Triton kernels on CUDA tensors and the plain-PyTorch
reference everywhere else; ``triton`` forces the kernels (on CPU tensors this needs
``TRITON_INTERPRET=1`` set before triton is imported); ``reference`` forces PyTorch.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

__all__ = ["BACKENDS", "get_backend", "set_backend", "use_backend", "resolve_backend"]

BACKENDS = ("auto", "reference", "triton")
_state = threading.local()


def _check(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name.lower()


def _from_environment() -> str:
    value = os.environ.get("CANON_BACKEND", "") or "auto"
    if value.lower() not in BACKENDS:
        raise ValueError(f"environment variable CANON_BACKEND must be one of {BACKENDS} (or unset), got {value!r}")
    return value.lower()


_default = _from_environment()


def get_backend() -> str:
    """The backend in force in this thread (set by :func:`use_backend` or ``CANON_BACKEND``)."""
    return getattr(_state, "name", None) or _default


def set_backend(name: str) -> None:
    """Set the process-wide default backend."""
    global _default
    _default = _check(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager selecting the backend for the ops called inside it.

    Example:
        >>> import canon
        >>> with canon.use_backend("reference"):
        ...     pass
    """
    name = _check(name)
    prev = getattr(_state, "name", None)
    _state.name = name
    try:
        yield
    finally:
        _state.name = prev


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def resolve_backend(t: torch.Tensor) -> str:
    """``"triton"`` or ``"reference"`` for an op whose main input is ``t``."""
    name = get_backend()
    if name == "auto":
        return "triton" if (t.is_cuda and triton_available()) else "reference"
    if name == "triton" and not (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        raise RuntimeError(
            "backend 'triton' on a CPU tensor needs the Triton interpreter: set TRITON_INTERPRET=1 "
            "before importing triton, or use a CUDA tensor, or the 'reference'/'auto' backend"
        )
    return name
