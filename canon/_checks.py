"""Argument checks shared by the public API: every message names what was wrong and what was expected."""

from __future__ import annotations

import functools
import numbers
import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MIN_CROP_RATIO = 1e-6  # smaller crops make the view's scale underflow (and sample one point anyway)
PADDINGS = ("zeros", "border", "reflection")
INTERPOLATIONS = ("bilinear", "nearest")


def check_tensor(
    t, name: str, fn: str, ndim: int | None = None, float_only: bool = True, shape_doc: str = ""
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_nested or t.layout != torch.strided:
        got, fix = ("a nested tensor", "stack its parts") if t.is_nested else (f"layout {t.layout}", "use .to_dense()")
        raise TypeError(f"{fn}: {name} must be a dense (strided) tensor, got {got}; {fix}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} dimensions {shape_doc}, got shape {tuple(t.shape)}")
    if float_only and t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    return t


def check_images(x, fn: str, name: str = "x") -> torch.Tensor:
    check_tensor(x, name, fn, 4, shape_doc="(B, C, H, W)")
    B, C, H, W = x.shape
    if B == 0:
        raise ValueError(f"{fn}: {name} is an empty batch (B=0), shape {tuple(x.shape)}; expected at least one image")
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"{fn}: {name} has an empty channel or spatial dimension, shape {tuple(x.shape)} (B, C, H, W)")
    return x


def check_same_device(fn: str, **tensors: torch.Tensor) -> None:
    items = [(k, v) for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    if not items:
        return
    dev = items[0][1].device
    for k, v in items[1:]:
        if v.device != dev:
            raise ValueError(
                f"{fn}: all tensors must be on one device; {items[0][0]} is on {dev} but {k} is on {v.device}"
            )


def check_choice(value, choices, what: str, fn: str) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: {what} must be one of {choices}, got {value!r}")
    return value


def check_size(size, default: tuple[int, int], fn: str) -> tuple[int, int]:
    if size is None:
        return default
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    if isinstance(size, torch.Size):
        size = tuple(size)
    if not (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"{fn}: size must be None, an int or a pair of ints (h, w), got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"{fn}: size must be positive, got {(h, w)}")
    return h, w


def check_crop_ratio(r, fn: str) -> float | tuple[float, float]:
    """A ratio in (0, 1], or a per-axis pair ``(ry, rx)``."""
    if isinstance(r, (tuple, list)) and len(r) == 2:
        return tuple(check_crop_ratio(v, fn) for v in r)  # type: ignore[return-value]
    if isinstance(r, bool) or not isinstance(r, numbers.Real):
        raise TypeError(f"{fn}: crop_ratio must be a number in (0, 1] or a pair (ry, rx), got {type(r).__name__}")
    r = float(r)
    if not MIN_CROP_RATIO <= r <= 1.0:
        raise ValueError(
            f"{fn}: crop_ratio must be in (0, 1], at least {MIN_CROP_RATIO} (a millionth of the image), got {r}"
        )
    return r


def check_positive(value, what: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {what} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{fn}: {what} must be a positive finite number, got {value}")
    return value


def check_index(index, B: int, N: int, device, fn: str, name: str = "element index") -> torch.Tensor:
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int32, torch.int64):
        got = index.dtype if isinstance(index, torch.Tensor) else type(index).__name__
        raise TypeError(f"{fn}: {name} must be an int32/int64 tensor of shape (B,), got {got}")
    if index.dim() != 1 or index.shape[0] != B:
        raise ValueError(f"{fn}: {name} must have shape (B,) = ({B},), got {tuple(index.shape)}")
    if index.device != device:
        raise ValueError(f"{fn}: {name} is on {index.device} but the images are on {device}")
    # Range check only where it costs no device synchronisation (and not while torch.compile
    # traces); on a GPU the kernels turn an out-of-range index into NaN outputs instead of
    # reading outside their tables.
    if index.device.type == "cpu" and not torch.compiler.is_compiling() and index.numel():
        lo, hi = torch.aminmax(index)
        if int(lo) < 0 or int(hi) >= N:
            raise ValueError(f"{fn}: {name} values must be in [0, {N}), got values in [{int(lo)}, {int(hi)}]")
    return index if index.dtype == torch.int64 else index.long()


def check_finite(t: torch.Tensor, name: str, fn: str) -> None:
    """Raise on NaN/Inf (costs a device synchronisation; only used when asked for)."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{fn}: {name} contains NaN or Inf")


# Outputs above this size are compared with the device's memory before they are allocated.
_CHECKED_BYTES = 1 << 30


@functools.lru_cache(maxsize=16)
def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of ``device`` (RAM for the CPU, the GPU's total for CUDA), None when unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    return None


def check_views_fit(x: torch.Tensor, N: int, hw: tuple[int, int], dtype: torch.dtype, fn: str) -> None:
    """ValueError when the views (B, N, C, h, w) of ``x`` could never fit in the device's memory, checked
    before allocating (the allocator's own error names bytes, not the argument to change). Views under
    1 GiB are not compared; symbolic sizes (torch.export/compile tracing) are left alone, unguarded."""
    B, C = x.shape[:2]
    n = B * C * N * hw[0] * hw[1] * dtype.itemsize
    if type(n) is not int or n < _CHECKED_BYTES:
        return
    total = device_memory(x.device)
    if total is not None and n > total:
        raise ValueError(
            f"{fn}: the views (B, N, C, h, w) {(B, N, C, *hw)} would take {n / 2**30:.1f} GiB, more than the "
            f"{total / 2**30:.1f} GiB of {x.device}; use a smaller size or batch"
        )
