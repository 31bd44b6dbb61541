"""The one place where the launchers start a kernel.

Every launcher in :mod:`canon.kernels` calls :func:`launch` instead of ``kernel[grid](...)``.
That gives two things one seam:

* the compile gate (:mod:`canon.kernels.compile`) swaps in a recorder with
  :func:`recording`, runs the launchers on ``meta`` tensors of real sizes, and compiles
  exactly the variants (constexprs, integer specialisation, num_warps) that a real launch
  of those sizes produces, without a GPU;
* options shared by every kernel (``enable_fp_fusion=False`` for the resampling kernels:
  coordinates are then computed with the same IEEE mul/add as the PyTorch reference, so a
  GPU and the CPU reference pick the same taps) are applied here;
* a cached launch path (:func:`_launch_cached`): Triton's ``kernel[grid](...)`` costs tens of
  microseconds of host time per launch (it rebuilds its cache key with ``str(options)``,
  checks globals, builds launch metadata and calls empty launch hooks from C). Here Triton's
  own binder still computes the specialisation of every argument (dtypes, 16-byte alignment
  of pointers, integers equal to 1 or divisible by 16), so a launch whose specialisation
  differs compiles and runs through Triton as before; a launch whose specialisation was
  seen before goes straight to the compiled kernel's launcher. What it skips besides: Triton's
  check that no global a kernel reads changed since it compiled (the kernels here read only
  module constants). :func:`stock_launches` turns it off (the overhead bench compares both).
"""

from __future__ import annotations

import contextlib
import functools
import math
import struct
from collections.abc import Callable

import torch
import triton.language as tl
from triton import knobs

__all__ = [
    "launch",
    "recording",
    "stock_launches",
    "Launch",
    "acc_dtype",
    "acc_tl",
    "cdiv",
    "dense",
    "next_power_of_2",
]


# Host-side integer helpers for the launchers. triton.cdiv and triton.next_power_of_2 are
# constexpr_function objects whose __call__ unwraps constexprs on every call (~1–2 µs each on the
# host, several per launch); these are the same arithmetic as plain functions.
def cdiv(a: int, b: int) -> int:
    """Ceiling of ``a / b`` for positive ``b`` (as ``triton.cdiv``)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= ``n``, for ``n >= 1`` (as ``triton.next_power_of_2``)."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def dense(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` as a contiguous tensor (itself when it is one; None stays None).

    For the small tables a kernel reads by a flat offset (element indices, prior targets,
    view/pull matrices, channel permutations, loss gradients): a slice, a column of a wider
    table or an expanded (stride 0) index is copied here, so the kernel never reads another
    sample's entry or past the storage. Images, vectors and gradients carry their strides instead.
    """
    return t if t is None or t.is_contiguous() else t.contiguous()


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
# True: every launch goes through Triton's kernel[grid](...) (see stock_launches). ROCm builds
# always do: the cached path hands arguments to the launcher as Triton's CUDA driver takes them.
_stock = torch.version.hip is not None

# (kernel, device, options, Triton's debug and instrumentation knobs, specialisation) -> CompiledKernel
_compiled: dict[tuple, object] = {}


def launch(
    kernel, grid: tuple[int, ...], num_warps: int, fp_fusion: bool = True, maxnreg: int | None = None, **args
) -> None:
    """Launch ``kernel`` over ``grid`` with keyword ``args`` (pointers, sizes, strides, meta-parameters);
    ``maxnreg`` caps the registers per thread (Triton's option of that name)."""
    options = {"num_warps": num_warps}
    if not fp_fusion:
        options["enable_fp_fusion"] = False
    if maxnreg is not None:
        options["maxnreg"] = maxnreg
    if _recorder is not None:
        _recorder(Launch(kernel, tuple(grid), args, options))
        return
    if _stock or not hasattr(kernel, "device_caches"):  # the interpreter's kernels have no device caches
        kernel[grid](**args, **options)
        return
    _launch_cached(kernel, grid, options, args)


def _launch_cached(kernel, grid, options: dict, args: dict) -> None:
    """``kernel[grid](**args, **options)`` without Triton's per-launch Python work once the same
    specialisation has been launched before (on this device, with these options and knobs)."""
    device = torch.cuda.current_device()  # what Triton launches on (the launchers set it from the tensors)
    caches = kernel.device_caches.get(device)
    hooks = knobs.runtime.launch_enter_hook.calls or knobs.runtime.launch_exit_hook.calls
    if caches is None or hooks or kernel.pre_run_hooks:  # first launch on this device, or someone listens
        kernel[grid](**args, **options)
        return
    # Triton's binder: the specialisation Triton itself would compute (argument order = the kernel's)
    bound, specialization, _ = caches[4](**args)
    key = (
        kernel,
        device,
        options.get("num_warps"),
        options.get("enable_fp_fusion", True),
        options.get("maxnreg"),
        knobs.runtime.debug,
        knobs.compilation.instrumentation_mode,
        *specialization,
    )
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = kernel[grid](**args, **options)  # compiles if needed, launches, returns the kernel
        if compiled is not None and not hasattr(compiled, "result"):  # not an async-compile future
            _compiled[key] = compiled
        return
    g1 = grid[1] if len(grid) > 1 else 1
    g2 = grid[2] if len(grid) > 2 else 1
    stream = _current_stream(device)
    # (launch metadata, enter hook, exit hook) = None: nobody listens (checked above)
    fn, meta = compiled.function, compiled.packed_metadata
    compiled.run(grid[0], g1, g2, stream, fn, meta, None, None, None, *bound.values())


def _current_stream(device: int) -> int:
    """The current CUDA stream's handle, read as Triton's driver reads it."""
    return torch._C._cuda_getCurrentRawStream(device)


@contextlib.contextmanager
def stock_launches():
    """Launch every kernel through Triton's own ``kernel[grid](...)`` inside the block (for comparison)."""
    global _stock
    prev = _stock
    _stock = True
    try:
        yield
    finally:
        _stock = prev


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


def float_args(**values: float) -> dict:
    """Float scalar arguments as Triton takes them, and exact enough for float64 kernels.

    Triton passes a Python float as float32, so a float64 kernel would compute with ``beta = 0.1``
    rounded to 2^-24. Each value ``name`` comes with ``name_lo``, the rest of it (``value − float32(value)``,
    itself in float32), which the float64 kernels add back (``kernels.select.scalar``): ~2^-48."""
    out = {}
    for name, value in values.items():
        out[name], out[f"{name}_lo"] = _float32_split(float(value))
    return out


@functools.lru_cache(maxsize=256)
def _float32_split(value: float) -> tuple[float, float]:
    try:
        hi = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond float32: Triton makes it inf anyway
        hi = value
    lo = value - hi
    return hi, (lo if math.isfinite(lo) else 0.0)
