"""Shared test set-up. TRITON_INTERPRET must be set before triton is first imported, so it is set here."""

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (make test: one worker per core) each worker gets its share of the cores, so
# that workers' intra-op threads do not fight over them (tests that need a thread count set it).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

# One tolerance table by dtype (rtol, atol) for comparisons against the float64/fp32 reference.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}


# Comparisons that are not "the same computation in the same dtype": (rtol, atol) and why.
CASE_TOLERANCES = {
    # float32 sums of C·H·W products, summed per tile by the kernel and at once by einsum
    "inner_products": (1e-5, 1e-4),
    # affine_grid + grid_sample round the normalised coordinates in float32 (~1e-6 px),
    # which moves a bilinear value by up to ~1e-6 × its neighbours' difference
    "grid_sample_coordinates": (1e-4, 1e-4),
    # the same float32 graph through torch.compile (AOT autograd reorders some sums)
    "compiled_graph": (1e-5, 1e-6),
    # the export decomposition samples with the tap formula, the eager reference with grid_sample
    "tap_formula_vs_grid_sample": (1e-5, 2e-6),
    # onnxruntime's float32 kernels (convolutions, reductions) round differently from PyTorch's
    "onnxruntime": (1e-5, 1e-5),
    "onnxruntime_dense": (1e-5, 1e-6),
    # a CUDA graph replays the same kernels, but cuBLAS/cuDNN may pick other algorithms at capture
    "cuda_graph_replay": (1e-5, 1e-5),
    # the replay differences above, carried through an epoch of Adam updates (steps of ~lr = 3e-3)
    "cuda_graph_training": (1e-3, 1e-4),
    # a 3×3 convolution summed over input channels against the same kernels summed first
    "conv_channel_sum": (1e-5, 1e-6),
    # equiadapt's rotation (kornia's normalised affine grid, align_corners=True) against rot90
    "kornia_rotation": (1e-5, 1e-5),
    # e2cnn's steerable filters, expanded from a float32 basis: a turned filter equals the original up to rounding
    "e2cnn_filters": (1e-4, 1e-5),
}


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    msg: str = "",
    case: str | None = None,
) -> None:
    """assert_close that reports the worst element (index, both values) on failure.

    Tolerances come from :data:`TOLERANCES` by dtype, or from :data:`CASE_TOLERANCES` by name
    (``case``) where the two sides are not the same computation in the same dtype.
    """
    dtype = dtype or expected.dtype
    rtol, atol = CASE_TOLERANCES[case] if case is not None else TOLERANCES.get(dtype, (1e-5, 1e-5))
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
            f"expected={exp[idx].item():.8g} |diff|={err[idx].item():.3g} > {bound[idx].item():.3g} (rtol={rtol}, "
            f"atol={atol})"
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
kernel_device = pytest.mark.parametrize(
    "dev", KERNEL_DEVICES or [pytest.param("none", marks=pytest.mark.skip(reason=NO_KERNEL_DEVICE))]
)
cuda_only = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs compiled kernels on a CUDA device (make test-gpu)",
)


def to_cpu(t):
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


def assert_within_torch_error(ours: torch.Tensor, torch_own: torch.Tensor, truth: torch.Tensor, msg: str = "") -> None:
    """Low precision judged against PyTorch's own low-precision error, not a magic atol:
    ``max|ours − truth| ≤ 2·max|torch_own − truth| + the float32 atol``, where ``truth`` is
    the float64 result of the same low-precision inputs and ``torch_own`` what PyTorch
    produces in that dtype (or the correctly rounded truth)."""
    ours_err = (ours.detach().double().cpu() - truth.detach().double().cpu()).abs().max()
    torch_err = (torch_own.detach().double().cpu() - truth.detach().double().cpu()).abs().max()
    bound = 2 * torch_err + TOLERANCES[torch.float32][1]
    assert ours_err <= bound, (
        f"{msg} error {float(ours_err):.3g} > 2 × PyTorch's own {float(torch_err):.3g} + {TOLERANCES[torch.float32][1]}"
    )


# Memory layouts of a tensor argument (tests/test_layouts.py, tests/test_api_properties.py): see relayout.
LAYOUTS = ("sliced", "column", "transposed", "expanded", "offset", "channels_last")


def relayout(t: torch.Tensor, layout: str, poison) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(arranged, dense)``: ``arranged`` holds the values of ``dense`` in ``layout`` inside a buffer
    filled with ``poison``; ``dense`` is a contiguous tensor of the same values. None where the
    layout does not apply to ``t`` (or would leave it contiguous)."""
    t = t.detach()
    if t.numel() == 0:
        return None
    if layout == "expanded":
        if t.dim() == 0 or t.shape[0] < 2:
            return None
        arranged = t[:1].expand_as(t)
        return arranged, arranged.contiguous()
    if layout == "offset":
        buf = torch.full((t.numel() + 3,), poison, dtype=t.dtype, device=t.device)
        arranged = buf[3:].view(t.shape)
    elif layout == "sliced":
        if t.dim() == 0:
            return None
        buf = torch.full((2 * t.shape[0], *t.shape[1:]), poison, dtype=t.dtype, device=t.device)
        arranged = buf[1::2]
    elif layout == "column":
        if t.dim() == 0:
            return None
        buf = torch.full((*t.shape, 2), poison, dtype=t.dtype, device=t.device)
        arranged = buf[..., 1]
    elif layout in ("transposed", "channels_last"):
        if t.dim() < 2 or (layout == "channels_last" and t.dim() != 4):
            return None
        if layout == "transposed":
            arranged = t.transpose(-1, -2).contiguous().transpose(-1, -2)
        else:
            arranged = t.contiguous(memory_format=torch.channels_last)
        return None if arranged.is_contiguous() else (arranged, t.contiguous())
    else:
        raise ValueError(layout)
    arranged.copy_(t)  # sliced, column and offset views start 1 or 3 elements into their buffer
    return arranged, t.contiguous()


def _padded(x: torch.Tensor, qi: torch.Tensor, size: int, padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of integer positions ``qi`` along an axis of ``size`` after padding, and where they read."""
    if padding == "border":
        return qi.clamp(0, size - 1), torch.ones_like(qi, dtype=torch.bool)
    if padding == "reflection":  # mirror about the outer pixel edges, periodically: …, 1, 0, | 0, 1, …, n-1, | n-1, …
        period = qi.remainder(2 * size)
        return torch.where(period < size, period, 2 * size - 1 - period), torch.ones_like(qi, dtype=torch.bool)
    return qi.clamp(0, size - 1), (qi >= 0) & (qi < size)


def view_ref_aa(x: torch.Tensor, g, out_hw, crop, padding: str) -> torch.Tensor:
    """Antialiased views by their definition, brute force in float64: output pixel (i, j) of view g is the
    mean of the padded input over every integer pixel q near it, weighted by tri(a·min(1, sx))·tri(b·min(1, sy)),
    (a, b) = A⁻¹(q − p) the offset of q from the pixel's centre p in view pixels, A = A_g⁻¹·diag(sx, sy)."""
    B, C, H, W = x.shape
    h, w = out_hw
    ry, rx = crop if isinstance(crop, tuple) else (crop, crop)
    sx, sy = rx * W / w, ry * H / h
    k = torch.tensor([min(1.0, sx), min(1.0, sy)], dtype=torch.float64)
    reach = int(math.ceil(2 * (max(sx, 1.0) + max(sy, 1.0)))) + 2
    qv, qu = torch.meshgrid(
        torch.arange(-reach, H + reach, dtype=torch.float64),
        torch.arange(-reach, W + reach, dtype=torch.float64),
        indexing="ij",
    )
    iu, okx = _padded(x, qu.long(), W, padding)
    iv, oky = _padded(x, qv.long(), H, padding)
    vals = x.double()[:, :, iv, iu] * (okx & oky)  # (B, C, H + 2·reach, W + 2·reach)
    views = torch.zeros(B, g.order, C, h, w, dtype=torch.float64)
    for e in range(g.order):
        A = torch.linalg.inv(torch.tensor(g.matrix(e), dtype=torch.float64)) @ torch.diag(
            torch.tensor([sx, sy], dtype=torch.float64)
        )
        Ainv = torch.linalg.inv(A)
        for i in range(h):
            for j in range(w):
                off = torch.tensor([j - (w - 1) / 2, i - (h - 1) / 2], dtype=torch.float64)
                p = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=torch.float64) + A @ off
                ab = torch.einsum("ij,jhw->ihw", Ainv, torch.stack([qu - p[0], qv - p[1]]))
                wt = (1 - ab[0].abs() * k[0]).clamp_min(0) * (1 - ab[1].abs() * k[1]).clamp_min(0)
                views[:, e, :, i, j] = (vals * wt).sum((-2, -1)) / wt.sum()
    return views


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (fresh random inputs, reproducible failures)."""
    return torch.Generator().manual_seed(1234)


# The smallest training run the CLI tests use: digits, one epoch of two steps, one thread, no plots.
# On the CPU also on a GPU machine: these runs test the loop's logic (bit-for-bit resume, checksums), which
# CUDA's non-deterministic kernels would not keep; CUDA training is tests/test_gpu.py's and bench/gpu_run.sh's.
TINY_TRAIN = ["--dataset", "digits", "--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--threads", "1"]
TINY_TRAIN += ["--device", "cpu"]
TINY_TRAIN += ["--quiet", "--no-plots"]


def train_config(base, *args):
    """The resolved training configuration of the options ``base`` then ``args`` (a test's tiny run)."""
    from canon.train import build_parser, resolve

    return resolve(build_parser().parse_args([*base, *args]))


@pytest.fixture(scope="module")
def digits():
    """The built-in digits with a 20 % test split, loaded once per test module."""
    from canon.data import load_dataset

    return load_dataset("digits", 0.2, 0)


def equiadapt_hparams(**kw) -> dict:
    """equiadapt's canonicalization hyperparameters for the compat layer (C4 rotations, crop 0.8,
    views of 16), with ``kw`` replacing any of them."""
    base = dict(
        beta=1.0,
        input_crop_ratio=0.8,
        resize_shape=16,
        group_type="rotation",
        num_rotations=4,
        artifact_err_wt=0.0,
        learn_ref_vec=False,
    )
    return {**base, **kw}


def readme_block(marker: str) -> str:
    """The first ```python block of the README after ``marker`` (a heading or a sentence): the README's own
    text, so that an edit of the example is what the test runs."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    after = text[text.index(marker) :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


def compiled_json(code: str, timeout: int = 300):
    """Run ``code`` in a fresh Python without ``TRITON_INTERPRET`` (the kernels compile for real GPU targets,
    no GPU needed) from the repository root; the JSON it printed last after ``@@``."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton", reason="compiling the kernels needs triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    run = [sys.executable, "-c", code]
    proc = subprocess.run(run, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1][2:])


def spy_launches(monkeypatch) -> list:
    """Record ``(grid, keyword arguments)`` of every launch of ``canon.kernels.resample`` from now on (the
    launches still run): what a launcher chose, e.g. ``FAMILIES``."""
    from canon.kernels import resample

    seen = []
    real = resample.launch

    def spy(kernel, grid, *args, **kw):
        seen.append((tuple(grid), kw))
        return real(kernel, grid, *args, **kw)

    monkeypatch.setattr(resample, "launch", spy)
    return seen
