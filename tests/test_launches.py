"""What one call of each public op puts on the device, proved without a GPU.

The Triton path runs on ``meta`` tensors with launches recorded instead of run
(``canon.kernels.launch.recording``), under a dispatch mode that sees every aten op. That
shows, per call: the kernel launches (Triton launches plus aten ops that would launch a
kernel), and that nothing is created from Python data or copied between host and device,
so every op can be captured in a CUDA graph and never waits for the host.
"""

import pytest
import torch
from conftest import KERNEL_DEVICES, NO_KERNEL_DEVICE
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

pytest.importorskip("triton", reason="the Triton path needs triton")

import canon  # noqa: E402
from canon.kernels.launch import recording  # noqa: E402
from canon.networks import ConvEncoder  # noqa: E402

pytestmark = pytest.mark.skipif(
    "cpu" not in KERNEL_DEVICES,
    reason=f"needs the Triton interpreter to trace launches on meta tensors ({NO_KERNEL_DEVICE})",
)

META = torch.device("meta")
# aten ops that launch no kernel: metadata, views, allocation
_NO_KERNEL = {
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "view", "_unsafe_view", "reshape",
    "expand", "permute", "transpose",
    "t", "as_strided", "select", "slice", "unsqueeze", "squeeze", "alias", "detach", "unbind", "split",
    "split_with_sizes", "unflatten", "flatten",
    "view_as", "expand_as", "_reshape_alias", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
    "is_same_size",
}  # fmt: skip
# aten ops that read data back to the host
_TO_HOST = {"_local_scalar_dense", "item", "tolist", "equal", "is_nonzero"}


class DeviceWork(TorchDispatchMode):
    """Kernels (aten ops that compute) and host<->device traffic of everything below autograd.

    Host traffic: a tensor made from Python data (``lift_fresh``: ``torch.tensor([...])``),
    any op touching a tensor that is not on the device (a CPU tensor among meta ones, a copy
    to or from the device), and reads of values back to the host.
    """

    def __init__(self):
        super().__init__()
        self.kernels, self.host = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        devices = {a.device for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        if "device" in kwargs and kwargs["device"] is not None:
            devices.add(torch.device(kwargs["device"]))
        if name in _TO_HOST or name.startswith("lift_fresh") or devices - {META}:
            self.host.append(str(func))
        elif name not in _NO_KERNEL and func.namespace == "aten":
            self.kernels.append(str(func))
        return func(*args, **kwargs)


class PythonData(TorchFunctionMode):
    """Tensors made from Python data at the function level (some constructors, e.g.
    ``torch.tensor(data, device=...)``, build their data without a dispatched op)."""

    _MAKERS = {torch.tensor, torch.as_tensor, torch.asarray, torch.from_numpy, torch.frombuffer}

    def __init__(self, sink: list):
        super().__init__()
        self.sink = sink

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._MAKERS:
            self.sink.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def device_work(fn):
    """(Triton launch names, aten kernel ops, host traffic) of one call of ``fn``, after a warm-up
    call (tables are built and cached on the device by the first call)."""
    with canon.use_backend("triton"), recording([]):
        fn()
        launches, mode = [], DeviceWork()
        with recording(launches), PythonData(mode.host), mode:
            fn()
    return [la.name for la in launches], mode.kernels, mode.host


def _inputs(group="C8", C=3, S=32):
    N = canon.as_group(group).order
    x = torch.empty(4, C, S, S, device=META)
    v = torch.empty(4, N, 16, device=META)
    r = torch.empty(16, device=META)
    idx = torch.empty(4, dtype=torch.int64, device=META)
    sel = canon.Selection(
        torch.empty(4, N, device=META), torch.empty(4, N, device=META), idx, torch.empty(4, N, device=META)
    )
    return x, v, r, idx, sel


CALLS = {
    # name: (call, Triton launches, at most this many aten kernels)
    "orbit": (
        lambda x, v, r, i, s: canon.orbit(x, "C8", size=24, crop_ratio=0.8, antialias=False),
        ["orbit_kernel"],
        0,
    ),
    # a shrinking view antialiased (the default): one launch too
    "orbit antialias": (lambda x, v, r, i, s: canon.orbit(x, "C8", size=8), ["orbit_antialias_kernel"], 0),
    "orbit exact": (lambda x, v, r, i, s: canon.orbit(x, "D4"), ["orbit_kernel"], 0),
    "select": (lambda x, v, r, i, s: canon.select(v, r), ["select_kernel"], 0),
    "select gumbel": (
        lambda x, v, r, i, s: canon.select(v, r, gumbel=True),
        ["select_kernel"],
        6,
    ),  # noise: rand + clamp + 2 log + 2 neg
    "select_losses": (lambda x, v, r, i, s: canon.select_losses(v, r), ["select_kernel"], 1),  # + the batch means
    "select_losses target": (lambda x, v, r, i, s: canon.select_losses(v, r, prior_target=i), ["select_kernel"], 1),
    "canonicalize index": (lambda x, v, r, i, s: canon.canonicalize(x, i, "C8"), ["transform_kernel"], 0),
    "canonicalize Selection": (lambda x, v, r, i, s: canon.canonicalize(x, s, "C8"), ["transform_kernel"], 0),
    "select_canonicalize": (
        lambda x, v, r, i, s: canon.select_canonicalize(x, v, r, "C8"),
        ["select_transform_kernel"],
        0,
    ),
    "invert": (lambda x, v, r, i, s: canon.invert(x, s, "C8"), ["transform_kernel"], 0),
    "invert regular": (
        lambda x, v, r, i, s: canon.invert(torch.empty(4, 16, 32, 32, device=META), i, "C8", kind="regular"),
        ["transform_kernel"],
        0,
    ),
    "transform": (lambda x, v, r, i, s: canon.transform(x, i, "C8"), ["transform_kernel"], 0),
    # one element for the whole batch: its index tensor is cached per device (no fill kernel per call)
    "transform int element": (lambda x, v, r, i, s: canon.transform(x, 3, "C8"), ["transform_kernel"], 0),
    "contrastive_loss": (lambda x, v, r, i, s: canon.losses.contrastive_loss(v), ["select_kernel"], 1),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_forward_launches_and_no_host_traffic(name):
    call, want, max_kernels = CALLS[name]
    args = _inputs()
    launches, kernels, host = device_work(lambda: call(*args))
    assert launches == want, f"{name}: Triton launches {launches}, expected {want}"
    assert len(kernels) <= max_kernels, f"{name}: aten kernels {kernels}"
    assert host == [], f"{name}: host<->device traffic per call: {host}"


@pytest.mark.parametrize("group", ["C8", "D4"])
def test_module_forward_backward_make_no_host_traffic(group):
    torch.manual_seed(0)
    model = canon.OrbitCanonicalizer(
        ConvEncoder(3, out_dim=16, hidden=4, num_layers=2, kernel_size=3), group, size=24, learn_reference=True
    ).to(META)
    x = torch.empty(4, 3, 32, 32, device=META)

    def train_step():
        xc = model.train()(x)
        loss = xc.square().mean() + model.prior_loss() + 0.1 * model.contrastive_loss()
        loss.backward()

    launches, kernels, host = device_work(train_step)
    assert host == [], f"training step host<->device traffic: {host}"
    assert (
        launches.count("orbit_antialias_kernel") == 1  # 32 → 24: the views shrink, antialiased by default
        and launches.count("select_kernel") == 1
        and launches.count("transform_kernel") == 1
    ), launches
    assert "select_backward_kernel" in launches and "transform_backward_kernel" in launches, launches
    assert not any("scatter" in name for name in launches), f"zero-padded adjoints are gathers: {launches}"
    launches, kernels, host = device_work(lambda: model.eval()(x))
    assert host == [], f"eval forward host<->device traffic: {host}"
    assert launches == ["orbit_antialias_kernel", "select_transform_kernel"], launches  # plus the encoder's own


@pytest.mark.parametrize(
    "bad",
    [
        lambda: torch.tensor([1.0, 2.0]).to(META),  # Python data, then a host->device copy
        lambda: torch.tensor([1.0, 2.0], device=META),  # Python data straight to the device
        lambda: torch.ones(2).to(META),  # a host tensor copied over
        lambda: torch.empty(2, device=META).add_(torch.ones(())),  # a host scalar tensor in a device op
    ],
)
def test_the_recorder_sees_host_traffic(bad):
    # the proofs above could pass vacuously if the mode missed transfers: show that it sees them
    _, _, host = device_work(bad)
    assert host, "host<->device traffic went unseen"
