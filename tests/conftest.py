"""Shared test set-up. TRITON_INTERPRET must be set before triton is first imported, so it is set here."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One tolerance table by dtype (rtol, atol) for comparisons against the float64/fp32 reference.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, rtol=None, atol=None, msg: str = "") -> None:
    """assert_close that reports the worst element (index, both values) on failure."""
    dtype = dtype or expected.dtype
    r, a = TOLERANCES.get(dtype, (1e-5, 1e-5))
    rtol, atol = rtol if rtol is not None else r, atol if atol is not None else a
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    act, exp = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert not torch.isnan(act).any() or torch.equal(torch.isnan(act), torch.isnan(exp)), f"{msg} unexpected NaN"
    err = (act - exp).abs()
    bound = atol + rtol * exp.abs()
    bad = err > bound
    if bad.any():
        worst = int(torch.argmax(err - bound))
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), err.shape))
        raise AssertionError(
            f"{msg} {int(bad.sum())}/{err.numel()} elements differ; worst at {idx}: actual={act[idx].item():.8g} "
            f"expected={exp[idx].item():.8g} |diff|={err[idx].item():.3g} > {bound[idx].item():.3g} (rtol={rtol}, atol={atol})"
        )


def _kernel_devices() -> list:
    """Where the Triton kernels run in this session: the interpreter on CPU tensors
    (TRITON_INTERPRET=1, the default here), or compiled on CUDA (TRITON_INTERPRET=0 on a GPU
    machine: ``make test-gpu``). Empty when neither is possible (tests then skip with the reason)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return []
    if os.environ.get("TRITON_INTERPRET") == "1":
        return ["cpu"]
    return ["cuda"] if torch.cuda.is_available() else []


KERNEL_DEVICES = _kernel_devices()
NO_KERNEL_DEVICE = "no Triton kernel device: triton missing, or TRITON_INTERPRET=0 without CUDA"
kernel_device = pytest.mark.parametrize("dev", KERNEL_DEVICES or [pytest.param("none", marks=pytest.mark.skip(reason=NO_KERNEL_DEVICE))])
cuda_only = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1", reason="needs compiled kernels on a CUDA device (make test-gpu)"
)


def to_cpu(t):
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (fresh random inputs, reproducible failures)."""
    return torch.Generator().manual_seed(1234)
