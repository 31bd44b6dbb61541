"""The cached launch path of ``canon.kernels.launch``, without a GPU.

A launch is sent straight to a compiled kernel only when Triton's own binder gives the same
specialisation (dtypes, 16-byte alignment of pointers, integers equal to 1 or divisible by
16), options and knobs as a launch Triton made before; every other launch goes through
``kernel[grid](...)``. Here the kernel is a real ``JITFunction`` with Triton's real binder for
an sm_90 target; only compiling and launching are stood in for (they need a GPU), so the test
sees which path each launch takes and what the cached path hands the launcher.
``tests/test_gpu.py`` runs the same path on a GPU against the reference.
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="the launch path needs triton")

from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

from canon.kernels import launch as L  # noqa: E402


def _scale(x_ptr, y_ptr, n, stride, alpha, BLOCK: "tl.constexpr"):  # noqa: F821 - never compiled here
    pass


class _Compiled:
    """Stands in for Triton's CompiledKernel: records what its launcher is handed."""

    function, packed_metadata = "fn-handle", "packed"

    def __init__(self):
        self.calls = []

    def run(self, *a):
        self.calls.append(a)


class _Kernel(JITFunction):
    """A real JITFunction (signature, params, binder) whose compile-and-launch is recorded."""

    def __init__(self):
        super().__init__(_scale)
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import CUDABackend

        backend = CUDABackend(GPUTarget("cuda", 90, 32))
        binder = create_function_from_signature(self.signature, self.params, backend)
        self.device_caches[0] = ({}, {}, backend.target, backend, binder)
        self.stock, self.compiled = [], _Compiled()

    def run(self, *args, grid, warmup, **kwargs):
        self.stock.append((grid, {k: v for k, v in kwargs.items() if k in ("num_warps", "enable_fp_fusion")}))
        return self.compiled


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(L, "_current_stream", lambda device: 1234)
    monkeypatch.setattr(L, "_compiled", {})
    return _Kernel()


def _args(x=None, n=64, alpha=0.5, block=128, y=None):
    x = torch.rand(256) if x is None else x
    y = torch.empty(256) if y is None else y
    # keyword order differs from the kernel's parameter order on purpose
    return dict(BLOCK=block, alpha=alpha, stride=16, n=n, y_ptr=y, x_ptr=x)


def _paths(kernel, calls):
    """Which path each call took: 'stock' (kernel[grid]) or 'cached' (the compiled launcher)."""
    out = []
    for grid, num_warps, args in calls:
        s, c = len(kernel.stock), len(kernel.compiled.calls)
        L.launch(kernel, grid, num_warps, **args)
        stock, cached = len(kernel.stock) - s, len(kernel.compiled.calls) - c
        out.append("stock" * stock + "cached" * cached)
    return out


def test_a_repeated_specialisation_goes_to_the_compiled_kernel_with_the_arguments_in_kernel_order(kernel):
    x, y = torch.rand(256), torch.empty(256)
    assert _paths(kernel, [((4,), 4, _args()), ((8, 2), 4, _args(x=x, y=y, n=80, alpha=2.0))]) == ["stock", "cached"]
    (call,) = kernel.compiled.calls
    # grid padded to 3-D, current stream, the kernel's handles, no launch metadata and no hooks
    assert call[:9] == (8, 2, 1, 1234, "fn-handle", "packed", None, None, None)
    assert call[9:] == (x, y, 80, 16, 2.0, 128), "arguments in the kernel's parameter order"
    assert kernel.stock[0] == ((4,), {"num_warps": 4})


@pytest.mark.parametrize(
    "change, path",
    [
        (dict(n=96), "cached"),  # 64 and 96 are both divisible by 16
        (dict(n=65), "stock"),  # no longer divisible by 16
        (dict(n=1), "stock"),  # integers equal to 1 are specialised as constants
        (dict(n=2**40), "stock"),  # a 64-bit integer
        (dict(x=torch.rand(257)[1:]), "stock"),  # a pointer 4 bytes past 16-byte alignment
        (dict(x=torch.rand(260)[4:]), "cached"),  # 16 bytes past: still aligned
        (dict(x=torch.rand(256, dtype=torch.float64)), "stock"),  # another dtype
        (dict(block=64), "stock"),  # another constexpr
        (dict(alpha=3.0), "cached"),  # floats are not specialised
    ],
)
def test_any_change_of_specialisation_goes_through_triton(kernel, change, path):
    assert _paths(kernel, [((4,), 4, _args()), ((4,), 4, _args(**change))]) == ["stock", path]


def test_options_knobs_hooks_and_the_stock_switch_go_through_triton(kernel, monkeypatch):
    from triton import knobs

    assert _paths(kernel, [((4,), 4, _args()), ((4,), 8, _args()), ((4,), 8, _args())]) == ["stock"] * 2 + ["cached"]
    assert kernel.stock[1] == ((4,), {"num_warps": 8})
    L.launch(kernel, (4,), 4, fp_fusion=False, **_args())
    assert kernel.stock[-1] == ((4,), {"num_warps": 4, "enable_fp_fusion": False})

    monkeypatch.setattr(knobs.runtime, "debug", True)  # part of Triton's own cache key
    assert _paths(kernel, [((4,), 4, _args())]) == ["stock"]
    monkeypatch.setattr(knobs.runtime, "debug", False)

    def hook(metadata):
        pass

    knobs.runtime.launch_enter_hook.add(hook)  # a profiler listening: every launch through Triton
    try:
        assert _paths(kernel, [((4,), 4, _args())] * 2) == ["stock", "stock"]
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert _paths(kernel, [((4,), 4, _args())]) == ["cached"]
    with L.stock_launches():
        assert _paths(kernel, [((4,), 4, _args())]) == ["stock"]
    assert _paths(kernel, [((4,), 4, _args())]) == ["cached"]


def test_another_device_starts_with_triton(kernel, monkeypatch):
    assert _paths(kernel, [((4,), 4, _args())] * 2) == ["stock", "cached"]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # no binder for device 1 yet
    assert _paths(kernel, [((4,), 4, _args())]) == ["stock"]


def test_interpreted_kernels_and_recording_never_take_the_cached_path():
    from canon.kernels import resample

    interpreted = not hasattr(resample.orbit_kernel, "device_caches")
    assert interpreted == (triton.knobs.runtime.interpret is True)
    sink = []
    with L.recording(sink):
        L.launch(resample.orbit_kernel, (1,), 4, a=1)
    assert [(la.name, la.args) for la in sink] == [("orbit_kernel", {"a": 1})]


def test_host_integer_helpers_equal_tritons():
    for n in range(1, 5000):
        assert L.next_power_of_2(n) == triton.next_power_of_2(n), n
        for d in (1, 3, 8, 16, 127):
            assert L.cdiv(n, d) == triton.cdiv(n, d), (n, d)
    assert L.next_power_of_2(2**40 + 1) == 2**41
