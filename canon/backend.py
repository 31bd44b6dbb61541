"""Which implementation runs the ops: ``auto`` | ``reference`` | ``triton``.

The default comes from the environment variable ``CANON_BACKEND`` (``auto`` when
unset). ``auto`` runs the Triton kernels on CUDA tensors and the plain-PyTorch
reference everywhere else; ``triton`` forces the kernels (on CPU tensors this needs
``TRITON_INTERPRET=1`` set before triton is imported); ``reference`` forces PyTorch.

Triton is optional (``pip install 'canon-equivariance[gpu]'``; CUDA builds of torch bring
it already): without it ``auto`` runs the reference everywhere, and asking for ``triton``
raises an ImportError that says how to install it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import torch

__all__ = [
    "BACKENDS",
    "get_backend",
    "set_backend",
    "use_backend",
    "resolve_backend",
    "triton_available",
    "require_triton",
]

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


@contextlib.contextmanager
def backend_as(name: str | None):
    """This thread runs ``name`` inside the block (no checks: for replaying a backend already in force,
    e.g. a backward pass running the backend its forward ran under, on whichever thread autograd uses).
    None leaves the backend in force as it is."""
    if name is None:
        yield
        return
    with thread_setting(_state, "name", name):
        yield


@contextlib.contextmanager
def thread_setting(state: threading.local, attr: str, value):
    """``state.attr`` is ``value`` in this thread inside the block, and what it was (or unset) after it."""
    prev = getattr(state, attr, None)
    setattr(state, attr, value)
    try:
        yield
    finally:
        setattr(state, attr, prev)


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``triton`` needs the triton package)."""
    global _default
    name = _check(name)
    if name == "triton":
        require_triton("canon.set_backend")
    _default = name


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager selecting the backend for the ops called inside it.

    Example:
        >>> import canon
        >>> with canon.use_backend("reference"):
        ...     pass
    """
    name = _check(name)
    if name == "triton":
        require_triton("canon.use_backend")
    with backend_as(name):
        yield


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    """Why ``import triton`` fails (None when it works); tried once per process."""
    try:
        import triton  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising anything else
        return f"{type(e).__name__}: {e}"
    return None


def triton_available() -> bool:
    """Whether the triton package imports (the Triton backend can run)."""
    return _triton_import_error() is None


def require_triton(fn: str) -> None:
    """Raise an ImportError naming the fix when the triton package does not import."""
    err = _triton_import_error()
    if err is not None:
        raise ImportError(
            f"{fn}: backend 'triton' needs the triton package, which did not import ({err}). "
            "Install it with `pip install 'canon-equivariance[gpu]'` (or `pip install triton`; Linux only, "
            "CUDA builds of torch already include it), or use the 'auto' or 'reference' backend "
            "(CANON_BACKEND=auto|reference), which run without triton."
        )


def resolve_backend(t: torch.Tensor) -> str:
    """``"triton"`` or ``"reference"`` for an op whose main input is ``t``."""
    name = get_backend()
    if name == "auto":
        return "triton" if (t.is_cuda and triton_available()) else "reference"
    if name == "triton":
        require_triton(f"canon (CANON_BACKEND={os.environ.get('CANON_BACKEND', '')!r})")
    if name == "triton" and not (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        raise RuntimeError(
            "backend 'triton' on a CPU tensor needs the Triton interpreter: set TRITON_INTERPRET=1 "
            "before importing triton, or use a CUDA tensor, or the 'reference'/'auto' backend"
        )
    return name
