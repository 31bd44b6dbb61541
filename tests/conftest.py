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


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (fresh random inputs, reproducible failures)."""
    return torch.Generator().manual_seed(1234)
