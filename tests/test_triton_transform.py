"""Transform kernels (canonicalize, invert with scalar and regular channels, the fused eval
canonicalization ``select_transform``), forward and backward, against the oracle. Runs under the
Triton interpreter on CPU here and on compiled kernels on a CUDA machine (``make test-gpu``)."""

import pytest
import torch
from conftest import assert_close, kernel_device, spy_launches, to_cpu

pytest.importorskip("triton", reason="the Triton path needs triton")

import canon  # noqa: E402
from canon import oracle, triton_ops  # noqa: E402
from canon import reference as ref  # noqa: E402
from canon.geometry import channel_tables, view_tables  # noqa: E402
from canon.groups import as_group  # noqa: E402

NAN = float("nan")


def _tables(group, in_hw, out_hw, crop=1.0, dev="cpu", inverse=False):
    return view_tables(as_group(group), in_hw, out_hw, crop, torch.device(dev), inverse)


@kernel_device
@pytest.mark.parametrize(
    "group,in_hw,padding,interp",
    [
        ("C4", (7, 7), "zeros", "bilinear"), ("C8", (5, 7), "reflection", "bilinear"),
        ("D5", (6, 6), "border", "nearest"), ("D4", (5, 5), "border", "bilinear"),
        ("C8", (9, 9), "zeros", "bilinear"), ("D4", (6, 8), "zeros", "nearest"),
        ("D4", (32, 32), "zeros", "bilinear"), ("C8", (16, 16), "zeros", "bilinear"),
    ],
)  # fmt: skip
def test_transform_forward_backward_matches_reference(dev, group, in_hw, padding, interp, rng):
    B, C = 3, 2
    x = torch.randn(B, C, *in_hw, generator=rng)
    t, td = _tables(group, in_hw, in_hw), _tables(group, in_hw, in_hw, dev=dev)
    N = t.mats.shape[0]
    index = torch.randint(0, N, (B,), generator=rng)
    out = torch.full((B, C, *in_hw), NAN, device=dev)
    triton_ops.transform(x.to(dev), index.to(dev), td.mats, t.exact, t.aligned, padding, interp, out=out)
    xr = x.clone().requires_grad_()
    w = torch.zeros(B, N, requires_grad=True)
    expect = oracle.transform(xr, w, index, t.mats, t.exact, padding, interp)
    assert_close(to_cpu(out), expect, msg="transform")
    g = torch.randn(x.shape, generator=rng)
    expect.backward(g)
    gx, gw = triton_ops.transform_backward(
        g.to(dev), x.to(dev), index.to(dev), td.mats, td.pull, t.exact, t.aligned, padding, interp
    )
    assert_close(to_cpu(gx), xr.grad, msg="grad_x")
    assert_close(to_cpu(gw), w.grad, msg="grad_weights", case="inner_products")


def _regular_invert_case(group, side, index, dev, rng):
    """Two fields of a regular representation (2·|G| channels) on a side × side plane, elements ``index``:
    (B, N, y, index, inverse tables here and on ``dev``, channel tables here and on ``dev``)."""
    G = as_group(group)
    B, N = len(index), G.order
    y = torch.randn(B, 2 * N, side, side, generator=rng)
    hw = (side, side)
    t, td = _tables(G, hw, hw, inverse=True), _tables(G, hw, hw, dev=dev, inverse=True)
    chans, chans_d = channel_tables(G, torch.device("cpu")), channel_tables(G, torch.device(dev))
    return B, N, y, torch.tensor(index), t, td, chans, chans_d


@kernel_device
def test_regular_invert_permutes_channels_forward_and_backward(dev, rng):
    B, N, y, index, t, td, (perm, inv), (perm_d, inv_d) = _regular_invert_case("D4", 6, [0, 5, 3], dev, rng)
    out = torch.full(y.shape, NAN, device=dev)
    triton_ops.transform(
        y.to(dev), index.to(dev), td.mats, t.exact, t.aligned, "zeros", "bilinear", chan_perm=perm_d, out=out
    )
    yr = y.clone().requires_grad_()
    w = torch.zeros(B, N, requires_grad=True)
    expect = oracle.transform(yr, w, index, t.mats, t.exact, "zeros", "bilinear", chan_perm=perm)
    assert torch.equal(to_cpu(out), expect.detach())
    g = torch.randn(y.shape, generator=rng)
    expect.backward(g)
    gx, gw = triton_ops.transform_backward(
        g.to(dev),
        y.to(dev),
        index.to(dev),
        td.mats,
        td.pull,
        t.exact,
        t.aligned,
        "zeros",
        "bilinear",
        True,
        True,
        perm_d,
        inv_d,
    )
    assert torch.equal(to_cpu(gx), yr.grad)
    assert_close(to_cpu(gw), w.grad, case="inner_products")
    assert_close(
        ref.transform_backward_ref(g, y, index, t.mats, t.exact, "zeros", "bilinear", True, True, perm)[0],
        yr.grad,
        msg="explicit adjoint",
    )


@kernel_device
@pytest.mark.parametrize("padding", ["border", "reflection"])
def test_regular_invert_with_folding_padding_scatters_then_permutes_channels(dev, padding, rng):
    """The adjoint to x of a regular invert whose padding folds taps onto the edge: a scatter, then the inverse
    channel permutation (it raised NotImplementedError); 45° elements, two fields of C8's 8 channels."""
    B, N, y, index, t, td, (perm, inv), (perm_d, inv_d) = _regular_invert_case("C8", 7, [1, 6, 3], dev, rng)
    yr = y.clone().requires_grad_()
    w = torch.zeros(B, N, requires_grad=True)
    g = torch.randn(y.shape, generator=rng)
    oracle.transform(yr, w, index, t.mats, t.exact, padding, "bilinear", chan_perm=perm).backward(g)
    gx, gw = triton_ops.transform_backward(
        g.to(dev), y.to(dev), index.to(dev), td.mats, td.pull, t.exact, t.aligned, padding, "bilinear", True, True,
        perm_d, inv_d,
    )  # fmt: skip
    assert_close(to_cpu(gx), yr.grad, msg="grad_x")
    assert_close(to_cpu(gw), w.grad, msg="grad_weights", case="inner_products")


def test_channel_blocks_split_evenly_or_test_the_count():
    """Blocks of at most 4 (or 2) channels: RGB is one block of 3 with no per-load test of the channel count,
    6 is two of 3; where no even split keeps the number of blocks (5, 7; 3 in blocks of 2) every load tests it."""
    from canon.kernels.resample import _channel_blocks

    want = {
        (1, 1): (1, False), (2, 2): (2, False), (3, 4): (3, False), (4, 4): (4, False), (5, 4): (4, True),
        (6, 4): (3, False), (7, 4): (4, True), (8, 4): (4, False), (64, 4): (4, False), (3, 2): (2, True),
    }  # fmt: skip
    got = {k: tuple(_channel_blocks(*k).values()) for k in want}
    assert got == want


@kernel_device
@pytest.mark.parametrize("channels,C", [(2, 5), (4, 5), (4, 3), (4, 6)])
def test_pull_channel_blocks_match_the_oracle(dev, channels, C, monkeypatch, rng):
    """The pull adjoints sum each channel of a block in its own accumulator: blocks of 2 (float64's) and 4
    channels over C channels (5: a partial last block, tested per load; 3 and 6: even blocks of 3, untested), through
    shrinking, full-size and upsampling views, and a regular invert (8 permuted channels: two blocks) through C8's
    non-permutation views, all equal the oracle."""
    from canon.kernels import resample

    orig = resample.resample_config

    def config(h, w, C, dtype, kind):
        cfg = orig(h, w, C, dtype, kind)
        return dict(cfg, CHANNELS=channels) if kind == "pull" else cfg

    monkeypatch.setattr(resample, "resample_config", config)
    x = torch.randn(1, C, 6, 5, generator=rng)
    for out_hw, crop, padding in (((4, 4), 0.9, "zeros"), ((6, 5), 1.0, "border"), ((8, 9), 0.8, "reflection")):
        t, td = _tables("C8", (6, 5), out_hw, crop), _tables("C8", (6, 5), out_hw, crop, dev=dev)
        g = torch.randn(1, 8, C, *out_hw, generator=rng)
        xr = x.clone().requires_grad_()
        (expect,) = torch.autograd.grad(oracle.orbit(xr, t.mats, t.exact, out_hw, padding, "bilinear"), xr, g)
        got = torch.full(x.shape, NAN, device=dev)
        resample.orbit_backward(g.to(dev), td.mats, td.pull, t.exact, t.aligned, (6, 5), padding, "bilinear", got)
        assert_close(to_cpu(got), expect, msg=f"orbit backward {out_hw} {padding}")
    if C != 5:
        return  # (the invert's 8 channels split alike whatever C)
    G = as_group("C8")
    y = torch.randn(2, 8, 6, 6, generator=rng)  # K = 1 regular field: channel h is group element h
    index = torch.tensor([1, 6])  # 45° and 270° views: non-permutation and permutation
    t, td = _tables(G, (6, 6), (6, 6), inverse=True), _tables(G, (6, 6), (6, 6), dev=dev, inverse=True)
    perm, inv = channel_tables(G, torch.device("cpu"))
    perm_d, inv_d = channel_tables(G, torch.device(dev))
    yr = y.clone().requires_grad_()
    w = torch.zeros(2, 8, requires_grad=True)
    g = torch.randn(y.shape, generator=rng)
    oracle.transform(yr, w, index, t.mats, t.exact, "zeros", "bilinear", chan_perm=perm).backward(g)
    gx, gw = triton_ops.transform_backward(
        g.to(dev), y.to(dev), index.to(dev), td.mats, td.pull, t.exact, t.aligned, "zeros", "bilinear",
        True, True, perm_d, inv_d,
    )  # fmt: skip
    assert_close(to_cpu(gx), yr.grad, msg="regular invert grad_x")
    assert_close(to_cpu(gw), w.grad, msg="regular invert grad_weights", case="inner_products")


@kernel_device
@pytest.mark.parametrize("group,padding", [("C4", "zeros"), ("C8", "zeros"), ("C8", "border")])
def test_index_outside_the_table_gives_nan_never_a_read_outside_it(dev, group, padding, rng):
    # (an out-of-bounds read shows only on a GPU, as a fault or garbage; here the NaN contract)
    x = torch.randn(2, 2, 5, 5, generator=rng, device="cpu").to(dev)
    td = _tables(group, (5, 5), (5, 5), dev=dev)
    idx = torch.tensor([1, 9], device=dev)
    out = triton_ops.transform(x, idx, td.mats, td.exact, td.aligned, padding, "bilinear")
    good = oracle.transform(to_cpu(x[:1]), None, idx[:1].cpu(), _tables(group, (5, 5), (5, 5)).mats, td.exact, padding)
    assert_close(to_cpu(out[:1]), good)
    assert torch.isnan(out[1]).all()
    g = torch.randn(x.shape, generator=rng).to(dev)
    gx, gw = triton_ops.transform_backward(g, x, idx, td.mats, td.pull, td.exact, td.aligned, padding, "bilinear")
    assert torch.isfinite(gx[0]).all() and torch.isfinite(gw[0]).all()
    assert torch.isnan(gx[1]).any() and torch.isnan(gw[1]).all()


@kernel_device
@pytest.mark.parametrize(
    "group,in_hw,score", [("C4", (6, 6), "cosine"), ("C8", (7, 9), "dot"), ("D4", (5, 5), "cosine")]
)
def test_fused_select_transform_matches_select_then_transform(dev, group, in_hw, score, rng):
    G = as_group(group)
    B, C, D = 3, 2, 10
    x = torch.randn(B, C, *in_hw, generator=rng)
    v = torch.randn(B, G.order, D, generator=rng)
    r = torch.randn(D, generator=rng)
    t, td = _tables(G, in_hw, in_hw), _tables(G, in_hw, in_hw, dev=dev)
    poison = (
        tuple(torch.full(s, NAN, device=dev) for s in ((B, G.order), (B, G.order)))
        + (torch.full((B,), -3, device=dev),)
        + (torch.full((B, G.order), NAN, device=dev),)
    )
    out = torch.full(x.shape, NAN, device=dev)
    xc, sel = triton_ops.select_transform(
        v.to(dev),
        r.to(dev),
        x.to(dev),
        td.mats,
        t.exact,
        t.aligned,
        1.3,
        score,
        "zeros",
        "bilinear",
        out=out,
        sel_out=poison,
    )
    e = oracle.select(v, r, 1.3, score, False)
    assert torch.equal(to_cpu(sel.index), e.index)
    assert_close(to_cpu(sel.scores), e.scores)
    assert_close(to_cpu(sel.probs), e.probs)
    assert torch.equal(to_cpu(sel.onehot), e.onehot)
    assert_close(to_cpu(xc), oracle.transform(x, None, e.index, t.mats, t.exact, "zeros", "bilinear"))
    # and the same choice as the select kernel itself
    alone, _ = triton_ops.select(v.to(dev), r.to(dev), 1.3, score, None, 1.0)
    assert torch.equal(alone.index, sel.index) and torch.equal(alone.scores, sel.scores)


@kernel_device
def test_straight_through_weights_gradient_is_the_mixture_inner_product(dev, rng):
    G = as_group("C8")
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64, generator=rng).to(dev)
    idx = torch.tensor([5, 2], device=dev)
    onehot = torch.nn.functional.one_hot(idx, G.order).double().requires_grad_()
    sel = canon.Selection(onehot.detach(), onehot.detach(), idx, onehot)
    with canon.use_backend("triton"):
        xc = canon.canonicalize(x, sel, G)
        go = torch.randn(xc.shape, dtype=torch.float64, generator=rng).to(dev)
        xc.backward(go)
        orbit = canon.orbit(x, G)
        assert_close(to_cpu(onehot.grad), to_cpu(torch.einsum("bnchw,bchw->bn", orbit, go)))
        # invert: the weight of element g gets <grad, T_{g⁻¹} y>
        onehot.grad = None
        canon.invert(x, sel, G).backward(go)
        inv_views = canon.orbit(x, G)[:, G.inverse_table.to(dev)]
        assert_close(to_cpu(onehot.grad), to_cpu(torch.einsum("bnchw,bchw->bn", inv_views, go)))


@kernel_device
def test_invert_round_trip_through_triton(dev, rng):
    x = torch.randn(3, 4, 5, 5, generator=rng).to(dev)
    idx = torch.tensor([0, 5, 3], device=dev)
    with canon.use_backend("triton"):
        assert torch.equal(canon.invert(canon.canonicalize(x, idx, "D4"), idx, "D4"), x)
        y = torch.randn(3, 8, 5, 5, generator=rng).to(dev)
        got = canon.invert(y, idx, "D4", kind="regular")
    with canon.use_backend("reference"):
        assert torch.equal(to_cpu(got), canon.invert(to_cpu(y), to_cpu(idx), "D4", kind="regular"))


@kernel_device
def test_transform_gradcheck_float64_through_triton(dev, rng):
    # as the orbit's gradcheck (tests/test_triton_orbit.py): fast_mode, and nondet_tol for the padded scatter
    torch.manual_seed(0)
    scatter = dict(fast_mode=True, nondet_tol=1e-12)
    with canon.use_backend("triton"):
        xs = torch.randn(2, 1, 5, 5, dtype=torch.float64, generator=rng).to(dev).requires_grad_()
        idx = torch.tensor([3, 1], device=dev)
        assert torch.autograd.gradcheck(lambda t: canon.canonicalize(t, idx, "C8", padding="border"), (xs,), **scatter)
        assert torch.autograd.gradcheck(lambda t: canon.canonicalize(t, idx, "C8"), (xs,), fast_mode=True)
        assert torch.autograd.gradcheck(lambda t: canon.canonicalize(t, idx, "C4"), (xs,), fast_mode=True)
        assert torch.autograd.gradcheck(lambda t: canon.invert(t, idx, "C8"), (xs,), fast_mode=True)


@kernel_device
@pytest.mark.parametrize(
    "group,side,padding",
    [("C8", 12, "zeros"), ("C8", 16, "border"), ("C16", 9, "reflection"), ("D8", 10, "zeros"), ("C4", 8, "zeros")],
)
def test_family_inner_products_match_the_oracle(dev, group, side, padding, monkeypatch, rng):
    """With ``ORBIT_FAMILIES`` the canonicalize backward computes the inner products of a quarter-turn family
    from one sample of its base view (the gradient read at the turned pixels): they equal the oracle's within
    the inner-product tolerance, and the adjoint to x is the same bits as without."""
    from canon.kernels import resample

    launches = spy_launches(monkeypatch)
    t, td = _tables(group, (side, side), (side, side)), _tables(group, (side, side), (side, side), dev=dev)
    n = t.mats.shape[0]
    x = torch.rand(3, 3, side, side, generator=rng)
    g = torch.randn(x.shape, generator=rng)
    index = torch.tensor([1, 0, n - 1])
    args = (g.to(dev), x.to(dev), index.to(dev), td.mats, td.pull, t.exact, t.aligned, padding, "bilinear")
    gx0, _ = triton_ops.transform_backward(*args, True, True, fam=td.fam)
    monkeypatch.setattr(resample, "ORBIT_FAMILIES", True)
    gx, gw = triton_ops.transform_backward(*args, True, True, fam=td.fam)
    flags = [kw.get("FAMILIES") for _, kw in launches]
    assert [f for f in flags if f is not None] == [False, True]  # (the folded scatter of padded views has no flag)
    xr = x.double().requires_grad_()
    w = torch.zeros(3, n, dtype=torch.float64, requires_grad=True)
    oracle.transform(xr, w, index, t.mats, t.exact, padding, "bilinear").backward(g.double())
    assert_close(to_cpu(gw).double(), w.grad, msg=f"{group} {padding} inner products", case="inner_products")
    assert torch.equal(to_cpu(gx), to_cpu(gx0))
