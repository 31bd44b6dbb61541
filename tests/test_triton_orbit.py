"""Orbit kernels (all views, forward and backward: tile copies, bilinear taps, the padded adjoint)
against the oracle (the transform kernels: tests/test_triton_transform.py). Runs under the Triton
interpreter on CPU here and on compiled kernels on a CUDA machine (``make test-gpu``)."""

import pytest
import torch
from conftest import assert_close, assert_within_torch_error, kernel_device, spy_launches, to_cpu

pytest.importorskip("triton", reason="the Triton path needs triton")

import canon  # noqa: E402
from canon import oracle, triton_ops  # noqa: E402
from canon import reference as ref  # noqa: E402
from canon.geometry import antialias_tables, view_tables  # noqa: E402
from canon.groups import as_group  # noqa: E402

NAN = float("nan")


def _tables(group, in_hw, out_hw, crop=1.0, dev="cpu", inverse=False):
    return view_tables(as_group(group), in_hw, out_hw, crop, torch.device(dev), inverse)


CASES = [
    # group, (H, W), (h, w), crop, padding, interpolation
    ("C4", (7, 7), (7, 7), 1.0, "zeros", "bilinear"),  # quarter turns: permutation copies
    ("D4", (5, 5), (5, 5), 1.0, "reflection", "bilinear"),
    ("C8", (7, 9), (5, 6), 0.8, "zeros", "bilinear"),
    ("C3", (6, 5), (7, 3), 0.7, "border", "bilinear"),
    ("D3", (5, 7), (5, 5), 0.9, "reflection", "nearest"),
    ("C6", (9, 9), (4, 4), 1.0, "border", "nearest"),
    ("C2", (4, 6), (4, 6), 1.0, "border", "bilinear"),
    ("D2", (1, 5), (3, 2), 1.0, "reflection", "bilinear"),
    ("C4", (8, 8), (4, 4), 0.5, "zeros", "bilinear"),  # exact crop: copies with an offset
    ("C8", (5, 5), (8, 8), 0.8, "zeros", "bilinear"),  # upsampling: wide pull windows (49 candidates)
    ("C8", (9, 9), (4, 5), 1.0, "zeros", "nearest"),
    ("D4", (6, 9), (6, 9), 1.0, "zeros", "bilinear"),  # non-square: rotations leave the input
    ("C4", (19, 21), (20, 23), 1.0, "zeros", "bilinear"),  # several tiles per plane, ragged edges
    ("D8", (13, 13), (7, 7), 0.9, "zeros", "bilinear"),
    # sides that are multiples of 16: tile copies with 16-aligned runs (transposes, reversed runs)
    ("D4", (32, 32), (32, 32), 1.0, "zeros", "bilinear"),
    ("D2", (32, 48), (32, 48), 1.0, "zeros", "bilinear"),  # flips of a non-square plane
    ("C8", (16, 16), (16, 16), 1.0, "zeros", "bilinear"),  # exact elements among bilinear ones (one-tap reads)
]


@kernel_device
@pytest.mark.parametrize("group,in_hw,out_hw,crop,padding,interp", CASES)
def test_orbit_forward_backward_matches_reference(dev, group, in_hw, out_hw, crop, padding, interp, rng):
    B, C = 2, 2  # (partial channel blocks: the tile test below; pull blocks: tests/test_triton_transform.py)
    x = torch.randn(B, C, *in_hw, generator=rng)
    t = _tables(group, in_hw, out_hw, crop)
    td = _tables(group, in_hw, out_hw, crop, dev)
    out = torch.full((B, t.mats.shape[0], C, *out_hw), NAN, device=dev)
    triton_ops.orbit(x.to(dev), td.mats, td.pull, t.exact, t.aligned, out_hw, padding, interp, out=out)
    assert_close(to_cpu(out), oracle.orbit(x, t.mats, t.exact, out_hw, padding, interp), msg="orbit")
    g = torch.randn(out.shape, generator=rng)
    gx = torch.full((B, C, *in_hw), NAN, device=dev)
    triton_ops.orbit_backward(g.to(dev), td.mats, td.pull, t.exact, t.aligned, in_hw, padding, interp, x.dtype, out=gx)
    xr = x.clone().requires_grad_()
    oracle.orbit(xr, t.mats, t.exact, out_hw, padding, interp).backward(g)
    assert_close(to_cpu(gx), xr.grad, msg="orbit grad_x vs autograd of the reference")
    assert_close(
        to_cpu(gx),
        ref.orbit_backward_ref(g, t.mats, t.exact, in_hw, padding, interp),
        msg="orbit grad_x vs explicit adjoint",
    )


@kernel_device
@pytest.mark.parametrize("tile", [(8, 8, 2, 2), (16, 8, 4, 4), (8, 16, 1, 2)])
def test_every_taps_tile_shape_and_channel_block_matches_the_reference(dev, tile, monkeypatch, rng):
    """The taps default is one channel per program (8×16, 2 warps); channel blocks of 2 and 4 and other
    tiles (which ``bench sweep`` times) stay correct, C = 3 leaving a partial channel block."""
    from canon.kernels import resample

    orig = resample.resample_config

    def config(h, w, C, dtype, kind):
        if kind != "taps":
            return orig(h, w, C, dtype, kind)
        th, tw, ch, warps = tile
        return dict(TILE_H=th, TILE_W=tw, CHANNELS=ch, num_warps=warps)

    monkeypatch.setattr(resample, "resample_config", config)
    x = torch.randn(2, 3, 13, 11, generator=rng)
    for group, out_hw, crop, padding in (("C8", (9, 19), 0.8, "zeros"), ("D3", (12, 10), 1.0, "reflection")):
        t, td = _tables(group, (13, 11), out_hw, crop), _tables(group, (13, 11), out_hw, crop, dev)
        out = torch.full((2, t.mats.shape[0], 3, *out_hw), NAN, device=dev)
        triton_ops.orbit(x.to(dev), td.mats, td.pull, t.exact, t.aligned, out_hw, padding, "bilinear", out=out)
        want = oracle.orbit(x, t.mats, t.exact, out_hw, padding, "bilinear")
        assert_close(to_cpu(out), want, msg=f"orbit {group} tile {tile}")
    t, td = _tables("C8", (13, 11), (13, 11)), _tables("C8", (13, 11), (13, 11), dev=dev)
    index = torch.tensor([3, 6])
    out = torch.full(x.shape, NAN, device=dev)
    triton_ops.transform(x.to(dev), index.to(dev), td.mats, t.exact, t.aligned, "border", "bilinear", out=out)
    want = oracle.transform(x, torch.zeros(2, 8), index, t.mats, t.exact, "border", "bilinear")
    assert_close(to_cpu(out), want, msg=f"transform tile {tile}")


@kernel_device
def test_layouts_channels_last_sliced_and_out_formats(dev, rng):
    base = torch.randn(3, 5, 11, 10, generator=rng).to(dev)
    x = base[1:, 1:4, 2:9, 1:8]  # (2, 3, 7, 7), non-contiguous
    xcl = x.contiguous(memory_format=torch.channels_last)
    t = _tables("C8", (7, 7), (5, 5), 0.9)
    td = _tables("C8", (7, 7), (5, 5), 0.9, dev)
    expect = oracle.orbit(to_cpu(x).contiguous(), t.mats, t.exact, (5, 5), "zeros", "bilinear")
    for inp in (x, xcl):
        out = triton_ops.orbit(inp, td.mats, td.pull, t.exact, t.aligned, (5, 5), "zeros", "bilinear")
        assert_close(to_cpu(out), expect, msg="strided input")
        cl = triton_ops.orbit(
            inp, td.mats, td.pull, t.exact, t.aligned, (5, 5), "zeros", "bilinear", channels_last=True
        )
        assert cl.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
        assert_close(to_cpu(cl), expect, msg="channels_last output")
    g = torch.randn(expect.shape, generator=rng).transpose(3, 4).contiguous().transpose(3, 4)  # strided grad
    gx = triton_ops.orbit_backward(
        g.to(dev), td.mats, td.pull, t.exact, t.aligned, (7, 7), "zeros", "bilinear", x.dtype
    )
    assert_close(
        to_cpu(gx), ref.orbit_backward_ref(g, t.mats, t.exact, (7, 7), "zeros", "bilinear"), msg="strided grad"
    )
    gx_out = torch.full((2, 3, 7, 9), NAN, device=dev)[..., 1:8]  # strided gradient output
    triton_ops.orbit_backward(
        g.to(dev), td.mats, td.pull, t.exact, t.aligned, (7, 7), "zeros", "bilinear", x.dtype, out=gx_out
    )
    assert_close(
        to_cpu(gx_out),
        ref.orbit_backward_ref(g, t.mats, t.exact, (7, 7), "zeros", "bilinear"),
        msg="strided grad output",
    )


@kernel_device
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_io_within_torch_own_error(dev, dtype, rng):
    x32 = torch.randn(2, 3, 9, 9, generator=rng)
    x = x32.to(dtype)
    t = _tables("C8", (9, 9), (6, 6), 0.8)
    td = _tables("C8", (9, 9), (6, 6), 0.8, dev)
    truth = oracle.orbit(x.double(), t.mats, t.exact, (6, 6), "border", "bilinear")
    out = to_cpu(triton_ops.orbit(x.to(dev), td.mats, td.pull, t.exact, t.aligned, (6, 6), "border", "bilinear"))
    assert out.dtype == dtype
    torch_own = ref.orbit_ref(
        x, t.mats, t.exact, (6, 6), "border", "bilinear"
    )  # PyTorch's grid_sample in this dtype's pipeline
    assert_within_torch_error(out, torch_own, truth, msg=str(dtype))
    # the check fails on a wrong output: one value off by ten times PyTorch's own error
    wrong = out.clone()
    wrong.view(-1)[5] += 10 * float((torch_own.double() - truth).abs().max()) + 1e-3
    with pytest.raises(AssertionError, match="PyTorch's own"):
        assert_within_torch_error(wrong, torch_own, truth)
    # fp32 in, low precision out (the encoder's dtype): one rounding of the fp32 result
    o = to_cpu(
        triton_ops.orbit(
            x32.to(dev), td.mats, td.pull, t.exact, t.aligned, (6, 6), "border", "bilinear", out_dtype=dtype
        )
    )
    assert o.dtype == dtype
    assert_close(o.float(), oracle.orbit(x32, t.mats, t.exact, (6, 6), "border", "bilinear"), dtype=dtype)
    # float64 in, low precision out: the float64 views rounded once (plain and antialiased; under the
    # interpreter the kernels' own float64 → bfloat16 store gave NaN)
    x64 = x32.double()
    aa = antialias_tables(as_group("C8"), (9, 9), (6, 6), 0.8, torch.device(dev))
    for norm, taps in ((None, 0), (aa.norm, aa.taps)):
        o = triton_ops.orbit(
            x64.to(dev), td.mats, td.pull, t.exact, t.aligned, (6, 6), "border", "bilinear", out_dtype=dtype,
            aa_norm=norm, aa_taps=taps,
        )  # fmt: skip
        expect = triton_ops.orbit(
            x64.to(dev), td.mats, td.pull, t.exact, t.aligned, (6, 6), "border", "bilinear", aa_norm=norm, aa_taps=taps
        )
        assert o.dtype == dtype and torch.equal(to_cpu(o), to_cpu(expect).to(dtype)), f"antialias={norm is not None}"
    # exact views are copies: bit-identical in any dtype
    te, ted = _tables("D4", (9, 9), (9, 9)), _tables("D4", (9, 9), (9, 9), dev=dev)
    copies = to_cpu(triton_ops.orbit(x.to(dev), ted.mats, ted.pull, te.exact, te.aligned, (9, 9), "zeros", "bilinear"))
    assert torch.equal(copies, oracle.orbit(x, te.mats, te.exact, (9, 9), "zeros", "bilinear"))


@kernel_device
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_tile_copies_are_exact_in_every_dtype(dev, dtype, rng):
    # 16-aligned quarter turns and flips (tile copies with 128-bit accesses on a GPU) in every dtype
    for group, hw in (("D4", (32, 32)), ("D2", (32, 64))):
        x = torch.randn(1, 2, *hw, generator=rng).to(dtype)
        t, td = _tables(group, hw, hw), _tables(group, hw, hw, dev=dev)
        assert t.exact and t.aligned
        out = torch.full((1, t.mats.shape[0], 2, *hw), float("nan"), dtype=dtype, device=dev)
        triton_ops.orbit(x.to(dev), td.mats, td.pull, t.exact, t.aligned, hw, "zeros", "bilinear", out=out)
        assert torch.equal(to_cpu(out), oracle.orbit(x, t.mats, t.exact, hw, "zeros", "bilinear")), (group, dtype)


@kernel_device
def test_gradcheck_float64_through_triton(dev, rng):
    # fast_mode (random projections of the Jacobian) keeps the interpreter calls few. The adjoint of
    # border/reflection padding scatters with atomics: compiled on a GPU its sums come in any order, so two
    # backward passes may differ in the last bits (gradcheck's reentrancy check; nondet_tol allows rounding).
    torch.manual_seed(0)
    scatter = dict(fast_mode=True, nondet_tol=1e-12)
    # one channel: the channel offsets are checked against the reference above; gradcheck checks derivatives
    x = torch.randn(1, 1, 5, 4, dtype=torch.float64, generator=rng).to(dev).requires_grad_()
    with canon.use_backend("triton"):
        assert torch.autograd.gradcheck(
            lambda t: canon.orbit(t, "C8", (3, 4), 0.9, "reflection", antialias=False), (x,), **scatter
        )
        assert torch.autograd.gradcheck(  # the zero-padded pull (upsampling pulls: compared with the reference above)
            lambda t: canon.orbit(t, "C8", size=(3, 3), crop_ratio=0.9, padding="zeros", antialias=False),
            (x,),
            fast_mode=True,
        )
        assert torch.autograd.gradcheck(
            lambda t: canon.orbit(t, "D4", size=(3, 3), padding="zeros", interpolation="nearest"), (x,), fast_mode=True
        )


@kernel_device
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_exact_invariance_through_triton(dev, group, rng):
    from canon.networks import ConvEncoder

    G = as_group(group)
    torch.manual_seed(0)
    net = canon.OrbitCanonicalizer(ConvEncoder(2, out_dim=8, hidden=4, num_layers=2, kernel_size=3), G).eval().to(dev)
    x = torch.rand(2, 2, 6, 6, generator=rng).to(dev)
    with canon.use_backend("triton"), torch.no_grad():
        xc = net(x)
        for g in range(1, G.order):
            xg = canon.transform(x, g, G)
            assert torch.equal(net(xg), xc), f"element {g}"


@kernel_device
def test_backward_is_deterministic(dev, rng):
    x = torch.randn(2, 2, 7, 7, generator=rng).to(dev)
    for group, pad in (("D4", "zeros"), ("C8", "zeros"), ("C8", "border")):
        t = _tables(group, (7, 7), (7, 7), dev=dev)
        g = torch.randn(2, t.mats.shape[0], 2, 7, 7, generator=rng).to(dev)
        if pad == "zeros":  # the pull adjoint: bit-deterministic by construction (no atomics)
            a = triton_ops.orbit_backward(g, t.mats, t.pull, t.exact, t.aligned, (7, 7), pad, "bilinear", x.dtype)
            b = triton_ops.orbit_backward(g, t.mats, t.pull, t.exact, t.aligned, (7, 7), pad, "bilinear", x.dtype)
            assert torch.equal(a, b)
        idx = torch.tensor([1, 2], device=dev)
        a = triton_ops.transform_backward(g[:, 0], x, idx, t.mats, t.pull, t.exact, t.aligned, pad, "bilinear")
        b = triton_ops.transform_backward(g[:, 0], x, idx, t.mats, t.pull, t.exact, t.aligned, pad, "bilinear")
        if pad == "zeros":
            assert torch.equal(a[0], b[0])
        assert torch.equal(a[1], b[1])


@kernel_device
def test_deterministic_mode_uses_the_reference_adjoint_for_padded_views(dev, rng):
    # the kernels' border/reflection adjoint scatters with atomics; canon.ops reroutes it
    x = torch.randn(1, 2, 6, 6, generator=rng).to(dev).requires_grad_()
    g = torch.randn(1, 8, 2, 6, 6, generator=rng).to(dev)
    t = _tables("C8", (6, 6), (6, 6), dev=dev)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with canon.use_backend("triton"):
            (got,) = torch.autograd.grad(canon.orbit(x, "C8", padding="border"), x, g)
        expect = ref.orbit_backward_ref(g, t.mats, t.exact, (6, 6), "border", "bilinear")
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(got, expect)


@kernel_device
def test_exact_views_of_a_bilinear_group_keep_negative_zero(dev, rng):
    # C8's quarter turns read one tap; adding the other (empty) taps would turn -0.0 into +0.0
    x = torch.randn(1, 2, 9, 9, generator=rng)
    x[x < 0] = -0.0
    t, td = _tables("C8", (9, 9), (9, 9)), _tables("C8", (9, 9), (9, 9), dev=dev)
    out = to_cpu(triton_ops.orbit(x.to(dev), td.mats, td.pull, t.exact, t.aligned, (9, 9), "zeros", "bilinear"))
    expect = oracle.orbit(x, t.mats, t.exact, (9, 9), "zeros", "bilinear")
    for g in (0, 2, 4, 6):
        assert torch.equal(torch.signbit(out[:, g]), torch.signbit(expect[:, g])), f"element {g}"
        assert torch.equal(out[:, g], torch.rot90(x, g // 2, dims=(-2, -1))), f"element {g}"


@kernel_device
@pytest.mark.parametrize(
    "mode,group,in_hw,out_hw,crop,padding,interp",
    [
        ("pull", "C8", (7, 6), (7, 6), 1.0, "border", "bilinear"),  # rotated corners leave the input: folded taps
        ("pull", "C8", (7, 7), (3, 3), 0.9, "reflection", "bilinear"),  # shrinking views
        ("scatter", "C4", (3, 4), (5, 6), 1.0, "border", "bilinear"),  # upsampling, non-square
        ("pull", "C8", (3, 3), (5, 4), 0.9, "border", "bilinear"),  # upsampling: long pull windows
        ("pull", "C6", (6, 5), (4, 4), 1.0, "reflection", "nearest"),  # (nearest views always scatter)
    ],
)
def test_padded_adjoint_pull_plus_folded_scatter_matches_the_reference(
    dev, mode, group, in_hw, out_hw, crop, padding, interp, rng, monkeypatch
):
    """Border/reflection adjoints: the in-range pull plus the out-of-range scatter ("pull", the default) and
    the scatter of every pixel equal the reference, for orbit and transform, into float32, bf16 and float64
    gradients (float64 to 1e-10: reflection moves in-range coordinates by a float32 rounding, which the
    pull's weights must follow)."""
    from canon.kernels import resample

    monkeypatch.setattr(resample, "BORDER_ADJOINT", mode)
    B, C = 2, 2
    t, td = _tables(group, in_hw, out_hw, crop), _tables(group, in_hw, out_hw, crop, dev=dev)
    N = t.mats.shape[0]
    g = torch.randn(B, N, C, *out_hw, generator=rng, dtype=torch.float64)
    x = torch.randn(B, C, *in_hw, generator=rng, dtype=torch.float64)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        gq = g.to(dtype)  # the reference sums the same rounded gradient in the kernel's accumulation dtype
        xa = x.to(acc).clone().requires_grad_()
        (expect,) = torch.autograd.grad(oracle.orbit(xa, t.mats, t.exact, out_hw, padding, interp), xa, gq.to(acc))
        out = torch.full((B, C, *in_hw), NAN, dtype=dtype, device=dev)
        resample.orbit_backward(gq.to(dev), td.mats, td.pull, t.exact, t.aligned, in_hw, padding, interp, out)
        assert_close(to_cpu(out).to(acc), expect.to(dtype).to(acc), dtype=dtype, msg=f"orbit {dtype}")
    # transform (canonicalize) at full size, with the inner products of the straight-through rule
    tt, ttd = _tables(group, in_hw, in_hw), _tables(group, in_hw, in_hw, dev=dev)
    index = torch.randint(0, N, (B,), generator=rng)
    gy = torch.randn(B, C, *in_hw, generator=rng, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        xr = x.to(dtype).clone().requires_grad_()
        w = torch.zeros(B, N, dtype=dtype, requires_grad=True)
        oracle.transform(xr, w, index, tt.mats, tt.exact, padding, interp).backward(gy.to(dtype))
        gx, gw = triton_ops.transform_backward(
            gy.to(dtype).to(dev), xr.detach().to(dev), index.to(dev), ttd.mats, ttd.pull, tt.exact, tt.aligned,
            padding, interp,
        )  # fmt: skip
        assert_close(to_cpu(gx), xr.grad, msg=f"transform grad_x {dtype}")
        case = "inner_products" if dtype == torch.float32 else None
        assert_close(to_cpu(gw), w.grad, msg=f"grad_weights {dtype}", case=case)


def test_padded_adjoint_routing(monkeypatch):
    """BORDER_ADJOINT "pull" (default) pulls every bilinear view, shrinking or upsampling; "scatter" scatters;
    nearest views always scatter; any other value is an error naming the setting."""
    from canon.kernels import resample

    assert resample.BORDER_ADJOINT == "pull"
    assert resample._pull_padded(False) and not resample._pull_padded(True)
    monkeypatch.setattr(resample, "BORDER_ADJOINT", "scatter")
    assert not resample._pull_padded(False)
    monkeypatch.setattr(resample, "BORDER_ADJOINT", "auto")
    with pytest.raises(ValueError, match="BORDER_ADJOINT"):
        resample._pull_padded(False)


def test_quarter_turn_families_group_the_turned_views():
    """Views related by a quarter turn of the square output grid share a row [base, 1, 2, 3 turns]; every view
    is in one row; views that are not square, or with no partner, have none."""
    from canon.geometry import quarter_turn_families, view_matrices

    def fam(group, in_hw, out_hw, crop=1.0):
        return quarter_turn_families(view_matrices(as_group(group), in_hw, out_hw, crop)[0], out_hw)

    assert fam("C8", (16, 16), (16, 16)) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert fam("C16", (224, 224), (96, 96), 0.8) == [[k, k + 4, k + 8, k + 12] for k in range(4)]
    assert fam("D8", (13, 13), (7, 7), 0.9) == [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]]
    # a non-square input: only the half turns map its crop onto itself
    assert fam("C8", (5, 7), (5, 5)) == [[k, -1, k + 4, -1] for k in range(4)]
    assert fam("C8", (7, 9), (5, 6), 0.8) is None  # views not square
    assert fam("C3", (6, 6), (6, 6)) is None  # no view is a quarter turn of another
    # a large group (the search bisects sorted matrices: C4001 took 40 s when it compared every pair)
    assert fam("C360", (28, 28), (16, 16)) == [[k, k + 90, k + 180, k + 270] for k in range(90)]


FAMILY_CASES = [
    # group, (H, W), (h, w), crop, padding, dtype
    ("C8", (16, 16), (16, 16), 1.0, "zeros", torch.float32),
    ("C16", (20, 20), (9, 9), 0.8, "border", torch.float32),
    ("D8", (13, 13), (7, 7), 0.9, "reflection", torch.float32),
    ("C8", (5, 7), (5, 5), 1.0, "zeros", torch.float32),  # half turns only
    ("C8", (12, 12), (24, 24), 0.8, "border", torch.bfloat16),  # upsampling, several tiles per plane
]


@kernel_device
@pytest.mark.parametrize("group,in_hw,out_hw,crop,padding,dtype", FAMILY_CASES)
def test_family_path_samples_each_family_once_and_matches_the_oracle(
    dev, group, in_hw, out_hw, crop, padding, dtype, monkeypatch, rng
):
    """With ``ORBIT_FAMILIES`` the orbit launches one program per (image, family, tile), writes every view (the
    output is poisoned with NaN first) and equals the oracle within the dtype's tolerance: the members' values
    come from the base view's coordinates, equal to their own up to float32 rounding."""
    from canon.kernels import resample

    launches = spy_launches(monkeypatch)
    monkeypatch.setattr(resample, "ORBIT_FAMILIES", True)
    t, td = _tables(group, in_hw, out_hw, crop), _tables(group, in_hw, out_hw, crop, dev=dev)
    B, n = 2, t.mats.shape[0]
    x = torch.rand(B, 3, *in_hw, generator=rng).to(dtype)
    out = torch.full((B, n, 3, *out_hw), NAN, dtype=dtype, device=dev)
    triton_ops.orbit(x.to(dev), td.mats, td.pull, t.exact, t.aligned, out_hw, padding, "bilinear", out=out, fam=td.fam)
    (grid,), kw = launches[-1]
    th, tw, f = kw["TILE_H"], kw["TILE_W"], td.fam.shape[0]
    assert kw["FAMILIES"] and grid == B * f * -(-out_hw[0] // th) * -(-out_hw[1] // tw)
    expect = oracle.orbit(x.float(), t.mats, t.exact, out_hw, padding, "bilinear").to(dtype)
    assert_close(to_cpu(out), expect, dtype=dtype, msg=f"{group} {in_hw}->{out_hw} {padding} {dtype}")


@kernel_device
@pytest.mark.parametrize(
    "dtype,out_dtype,interp",
    [(torch.float64, None, "bilinear"), (torch.float32, torch.float64, "bilinear"), (torch.float32, None, "nearest")],
)
def test_family_path_leaves_float64_and_nearest_views_alone(dev, dtype, out_dtype, interp, monkeypatch, rng):
    """float64 views (in or out) keep their own coordinates (the oracle's to 1e-10), nearest ones their own
    rounding."""
    from canon.kernels import resample

    launches = spy_launches(monkeypatch)
    monkeypatch.setattr(resample, "ORBIT_FAMILIES", True)
    t, td = _tables("C8", (8, 8), (8, 8)), _tables("C8", (8, 8), (8, 8), dev=dev)
    x = torch.rand(1, 2, 8, 8, generator=rng).to(dtype)
    got = triton_ops.orbit(
        x.to(dev), td.mats, td.pull, td.exact, td.aligned, (8, 8), "zeros", interp, out_dtype=out_dtype, fam=td.fam
    )
    assert [kw["FAMILIES"] for _, kw in launches] == [False]
    expect = oracle.orbit(x, t.mats, t.exact, (8, 8), "zeros", interp, out_dtype)
    assert_close(to_cpu(got), expect, dtype=got.dtype)


@kernel_device
def test_public_orbit_hands_the_families_to_the_kernel(dev, monkeypatch, rng):
    """``canon.orbit`` passes its tables' families down: with the switch on, C8 views of a square image launch
    one program per family and tile, and equal the views with the switch off within the float32 tolerance."""
    from canon.kernels import resample

    launches = spy_launches(monkeypatch)
    x = torch.rand(2, 3, 12, 12, generator=rng).to(dev)
    with canon.use_backend("triton"):
        plain = canon.orbit(x, "C8", antialias=False)
        monkeypatch.setattr(resample, "ORBIT_FAMILIES", True)
        turned = canon.orbit(x, "C8", antialias=False)
    assert [kw["FAMILIES"] for _, kw in launches] == [False, True]
    assert_close(to_cpu(turned), to_cpu(plain))


@kernel_device
@pytest.mark.parametrize(
    "group,in_hw,out_hw,crop,padding",
    [
        ("C4", (7, 7), (7, 7), 0.5, "zeros"),
        ("C8", (7, 7), (5, 5), 1.0, "border"),
        ("D3", (7, 7), (7, 7), 1.0, "reflection"),
        # 45° views scaled by √2: integer coordinates everywhere, one pixel read (the oracle's permutes_pixels)
        ("C8", (9, 9), (5, 5), 2**0.5 * 5 / 9, "zeros"),
    ],
)
def test_nan_and_inf_pixels_reach_the_outputs_the_oracle_says(dev, group, in_hw, out_hw, crop, padding, rng):
    """A bilinear tap of weight 0 is read (NaN · 0 and inf · 0 are NaN, as the oracle and grid_sample compute),
    except in views that permute pixels (one pixel read): NaN outputs are exactly the oracle's, orbit and
    transform. (The kernels used to skip every tap of weight 0.)"""
    x = torch.randn(2, 2, *in_hw, generator=rng)
    x[0, 0, 2, 3] = NAN
    x[1, 1, 0, 0] = float("inf")
    x[1, 0, 3, 2] = -float("inf")
    t, td = _tables(group, in_hw, out_hw, crop), _tables(group, in_hw, out_hw, crop, dev)
    expect = oracle.orbit(x, t.mats, t.exact, out_hw, padding, "bilinear")
    got = to_cpu(triton_ops.orbit(x.to(dev), td.mats, td.pull, t.exact, t.aligned, out_hw, padding, "bilinear"))
    assert torch.isnan(expect).any() and torch.equal(torch.isnan(got), torch.isnan(expect))
    ok = ~torch.isnan(expect)
    assert_close(got[ok], expect[ok])
    tt, ttd = _tables(group, in_hw, in_hw), _tables(group, in_hw, in_hw, dev=dev)
    index = torch.tensor([1, tt.mats.shape[0] - 1])
    expect = oracle.transform(x, None, index, tt.mats, tt.exact, padding, "bilinear")
    got = to_cpu(triton_ops.transform(x.to(dev), index.to(dev), ttd.mats, tt.exact, tt.aligned, padding, "bilinear"))
    assert torch.equal(torch.isnan(got), torch.isnan(expect))
    ok = ~torch.isnan(expect)
    assert_close(got[ok], expect[ok])
