"""Resampling kernels (orbit, transform/canonicalize/invert) through the Triton interpreter, against the reference."""

import pytest
import torch
from conftest import TOLERANCES, assert_close

pytest.importorskip("triton", reason="the Triton path needs triton")

import canon  # noqa: E402
from canon import reference as ref  # noqa: E402
from canon import triton_ops  # noqa: E402
from canon.geometry import view_matrices_tensor  # noqa: E402
from canon.groups import as_group  # noqa: E402

NAN = float("nan")


def _mats(group, in_hw, out_hw, crop=1.0):
    return view_matrices_tensor(as_group(group), in_hw, out_hw, crop, "cpu")


CASES = [
    # group, (H, W), (h, w), crop, padding, interpolation
    ("C4", (7, 7), (7, 7), 1.0, "zeros", "bilinear"),
    ("D4", (5, 5), (5, 5), 1.0, "reflection", "bilinear"),
    ("C8", (7, 9), (5, 6), 0.8, "zeros", "bilinear"),
    ("C3", (6, 5), (7, 3), 0.7, "border", "bilinear"),
    ("D3", (5, 7), (5, 5), 0.9, "reflection", "nearest"),
    ("C6", (9, 9), (4, 4), 1.0, "border", "nearest"),
    ("C2", (4, 6), (4, 6), 1.0, "border", "bilinear"),
    ("D2", (1, 5), (3, 2), 1.0, "reflection", "bilinear"),
    ("C4", (8, 8), (4, 4), 0.5, "zeros", "bilinear"),  # exact crop
]


@pytest.mark.parametrize("group,in_hw,out_hw,crop,padding,interp", CASES)
def test_orbit_forward_backward_matches_reference(group, in_hw, out_hw, crop, padding, interp, rng):
    B, C = 2, 3
    x = torch.randn(B, C, *in_hw, generator=rng)
    mats, exact = _mats(group, in_hw, out_hw, crop)
    out = torch.full((B, mats.shape[0], C, *out_hw), NAN)
    triton_ops.orbit(x, mats, exact, out_hw, padding, interp, out=out)
    assert_close(out, ref.orbit_ref(x, mats, exact, out_hw, padding, interp), msg="orbit")
    g = torch.randn(out.shape, generator=rng)
    gx = torch.full_like(x, NAN)
    triton_ops.orbit_backward(g, mats, exact, in_hw, padding, interp, x.dtype, out=gx)
    xr = x.clone().requires_grad_()
    ref.orbit_ref(xr, mats, exact, out_hw, padding, interp).backward(g)
    assert_close(gx, xr.grad, msg="orbit grad_x vs autograd of the reference")
    assert_close(gx, ref.orbit_backward_ref(g, mats, exact, in_hw, padding, interp), msg="orbit grad_x vs explicit adjoint")


@pytest.mark.parametrize(
    "group,in_hw,padding,interp",
    [("C4", (7, 7), "zeros", "bilinear"), ("C8", (5, 7), "reflection", "bilinear"), ("D5", (6, 6), "border", "nearest"), ("D4", (5, 5), "border", "bilinear")],
)
def test_transform_forward_backward_matches_reference(group, in_hw, padding, interp, rng):
    B, C = 3, 2
    x = torch.randn(B, C, *in_hw, generator=rng)
    mats, exact = _mats(group, in_hw, in_hw)
    N = mats.shape[0]
    index = torch.randint(0, N, (B,), generator=rng)
    out = torch.full_like(x, NAN)
    triton_ops.transform(x, None, index, mats, exact, padding, interp, out=out)
    xr = x.clone().requires_grad_()
    w = torch.zeros(B, N, requires_grad=True)
    expect = ref.transform_ref(xr, w, index, mats, exact, padding, interp)
    assert_close(out, expect, msg="transform")
    g = torch.randn(x.shape, generator=rng)
    expect.backward(g)
    gx, gw = triton_ops.transform_backward(g, x, index, mats, exact, padding, interp)
    assert_close(gx, xr.grad, msg="grad_x")
    assert_close(gw, w.grad, atol=1e-4, msg="grad_weights")  # sums of H·W·C products


def test_layouts_channels_last_sliced_and_out_formats(rng):
    base = torch.randn(3, 5, 11, 10, generator=rng)
    x = base[1:, 1:4, 2:9, 1:8]  # (2, 3, 7, 7), non-contiguous
    xcl = x.contiguous(memory_format=torch.channels_last)
    mats, exact = _mats("C8", (7, 7), (5, 5), 0.9)
    expect = ref.orbit_ref(x.contiguous(), mats, exact, (5, 5), "zeros", "bilinear")
    for inp in (x, xcl):
        out = triton_ops.orbit(inp, mats, exact, (5, 5), "zeros", "bilinear")
        assert_close(out, expect, msg="strided input")
        cl = triton_ops.orbit(inp, mats, exact, (5, 5), "zeros", "bilinear", channels_last=True)
        assert cl.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
        assert_close(cl, expect, msg="channels_last output")
    g = torch.randn(expect.shape, generator=rng).transpose(3, 4).contiguous().transpose(3, 4)  # strided grad
    gx = triton_ops.orbit_backward(g, mats, exact, (7, 7), "zeros", "bilinear", x.dtype)
    assert_close(gx, ref.orbit_backward_ref(g, mats, exact, (7, 7), "zeros", "bilinear"), msg="strided grad")
    ex_m, ex = _mats("D4", (7, 7), (7, 7))
    gx = triton_ops.orbit_backward(torch.randn(2, 8, 3, 7, 7, generator=rng)[:, :, :, :, :], ex_m, ex, (7, 7), "zeros", "bilinear", x.dtype)
    assert gx.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_io_within_torch_own_error(dtype, rng):
    x32 = torch.randn(2, 3, 9, 9, generator=rng)
    x = x32.to(dtype)
    mats, exact = _mats("C8", (9, 9), (6, 6), 0.8)
    truth = ref.orbit_ref(x.double(), mats, exact, (6, 6), "border", "bilinear")
    out = triton_ops.orbit(x, mats, exact, (6, 6), "border", "bilinear")
    assert out.dtype == dtype
    torch_err = (ref.orbit_ref(x, mats, exact, (6, 6), "border", "bilinear").double() - truth).abs().max()
    ours = (out.double() - truth).abs().max()
    assert ours <= 2 * torch_err + TOLERANCES[torch.float32][1], (ours, torch_err)
    # fp32 in, low precision out (the encoder's dtype): one rounding of the fp32 result
    o = triton_ops.orbit(x32, mats, exact, (6, 6), "border", "bilinear", out_dtype=dtype)
    assert torch.equal(o, ref.orbit_ref(x32, mats, exact, (6, 6), "border", "bilinear").to(dtype)) or (o.double() - truth.new_tensor(0)).isfinite().all()
    assert_close(o.float(), ref.orbit_ref(x32, mats, exact, (6, 6), "border", "bilinear"), dtype=dtype)
    # exact views are copies: bit-identical in any dtype
    em, ex = _mats("D4", (9, 9), (9, 9))
    assert torch.equal(triton_ops.orbit(x, em, ex, (9, 9), "zeros", "bilinear"), ref.orbit_ref(x, em, ex, (9, 9), "zeros", "bilinear"))


def test_gradcheck_float64_through_triton(rng):
    # fast_mode (random projections of the Jacobian) keeps the interpreter calls few.
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=rng, requires_grad=True)
    with canon.use_backend("triton"):
        assert torch.autograd.gradcheck(lambda t: canon.orbit(t, "C8", size=(3, 4), crop_ratio=0.9, padding="reflection"), (x,), fast_mode=True)
        assert torch.autograd.gradcheck(lambda t: canon.orbit(t, "D4", size=(3, 3), padding="zeros", interpolation="nearest"), (x,), fast_mode=True)
        xs = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=rng, requires_grad=True)
        idx = torch.tensor([3, 1])
        assert torch.autograd.gradcheck(lambda t: canon.canonicalize(t, idx, "C8", padding="border"), (xs,), fast_mode=True)
        assert torch.autograd.gradcheck(lambda t: canon.canonicalize(t, idx, "C4"), (xs,), fast_mode=True)


def test_straight_through_weights_gradient_is_the_mixture_inner_product(rng):
    G = as_group("C8")
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64, generator=rng)
    onehot = torch.nn.functional.one_hot(torch.tensor([5, 2]), G.order).double().requires_grad_()
    sel = canon.Selection(onehot.detach(), onehot.detach(), torch.tensor([5, 2]), onehot)
    with canon.use_backend("triton"):
        xc = canon.canonicalize(x, sel, G)
        go = torch.randn(xc.shape, dtype=torch.float64, generator=rng)
        xc.backward(go)
        orbit = canon.orbit(x, G)
    assert_close(onehot.grad, torch.einsum("bnchw,bchw->bn", orbit, go))


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_exact_invariance_through_triton(group, rng):
    from canon.networks import ConvEncoder

    G = as_group(group)
    torch.manual_seed(0)
    net = canon.OrbitCanonicalizer(ConvEncoder(2, out_dim=8, hidden=4, num_layers=2, kernel_size=3), G).eval()
    x = torch.rand(2, 2, 6, 6, generator=rng)
    with canon.use_backend("triton"), torch.no_grad():
        xc = net(x)
        for g in range(1, G.order):
            xg = canon.transform(x, g, G)
            assert torch.equal(net(xg), xc), f"element {g}"


def test_invert_round_trip_through_triton(rng):
    x = torch.randn(3, 4, 5, 5, generator=rng)
    idx = torch.tensor([0, 5, 3])
    with canon.use_backend("triton"):
        assert torch.equal(canon.invert(canon.canonicalize(x, idx, "D4"), idx, "D4"), x)
        y = torch.randn(3, 8, 5, 5, generator=rng)
        got = canon.invert(y, idx, "D4", kind="regular")
    with canon.use_backend("reference"):
        assert torch.equal(got, canon.invert(y, idx, "D4", kind="regular"))


def test_backward_is_deterministic(rng):
    x = torch.randn(2, 3, 7, 7, generator=rng)
    for group, pad in (("D4", "zeros"), ("C8", "border")):
        mats, exact = _mats(group, (7, 7), (7, 7))
        g = torch.randn(2, mats.shape[0], 3, 7, 7, generator=rng)
        a = triton_ops.orbit_backward(g, mats, exact, (7, 7), pad, "bilinear", x.dtype)
        b = triton_ops.orbit_backward(g, mats, exact, (7, 7), pad, "bilinear", x.dtype)
        assert torch.equal(a, b)
        idx = torch.tensor([1, 2])
        a = triton_ops.transform_backward(g[:, 0], x, idx, mats, exact, pad, "bilinear")
        b = triton_ops.transform_backward(g[:, 0], x, idx, mats, exact, pad, "bilinear")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_deterministic_mode_uses_sorted_reference_adjoint(rng):
    mats, exact = _mats("C8", (6, 6), (6, 6))
    g = torch.randn(1, 8, 2, 6, 6, generator=rng)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        got = triton_ops.orbit_backward(g, mats, exact, (6, 6), "border", "bilinear", torch.float32)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(got, ref.orbit_backward_ref(g, mats, exact, (6, 6), "border", "bilinear"))
