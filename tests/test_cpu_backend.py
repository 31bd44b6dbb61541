"""The CPU backend (``canon.reference``: cached plans, ``grid_sample`` with the batch folded into the
channels, index gathers written into their slots, the sparse antialias operator, explicit backward
formulas) against the oracle (``canon.oracle``), values and gradients, through the ops layer as
every call reaches it (with and without a graph). The Triton kernels meet the same oracle in
tests/test_triton_*.py."""

import pytest
import torch
from conftest import assert_close

import canon
from canon import ops, oracle
from canon.geometry import antialias_tables, channel_tables, view_tables
from canon.groups import as_group

CASES = [
    # group, (H, W), (h, w), crop, padding, interpolation
    ("C4", (7, 7), (7, 7), 1.0, "zeros", "bilinear"),  # exact: gathers
    ("D4", (6, 9), (6, 9), 1.0, "reflection", "bilinear"),  # exact views leaving a non-square input
    ("C8", (7, 9), (5, 6), 0.8, "zeros", "bilinear"),  # exact and grid_sample views in one orbit
    ("C3", (6, 5), (7, 3), 0.7, "border", "bilinear"),
    ("D3", (5, 7), (5, 5), 0.9, "reflection", "nearest"),
    ("C8", (5, 5), (8, 8), 0.8, "border", "bilinear"),  # upsampling
    ("D2", (1, 5), (3, 2), 1.0, "reflection", "bilinear"),  # one row
]


# the backend samples float32 bilinear views with grid_sample (its own operation order), the oracle with
# the kernels' tap formula: they agree to float32 rounding. Float64 views take the tap formula there too
# (float32 weights, as defined): they equal the oracle to float64 rounding.
TAPS = "tap_formula_vs_grid_sample"


def _case(dtype):
    return TAPS if dtype == torch.float32 else None


def _tables(group, in_hw, out_hw, crop=1.0, inverse=False):
    return view_tables(as_group(group), in_hw, out_hw, crop, torch.device("cpu"), inverse)


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


@pytest.fixture(autouse=True)
def _reference_backend():
    with canon.use_backend("reference"):
        yield


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("group,in_hw,out_hw,crop,padding,interp", CASES)
def test_orbit_values_and_gradient(group, in_hw, out_hw, crop, padding, interp, dtype, rng):
    x = torch.randn(3, 2, *in_hw, generator=rng, dtype=dtype)
    t = _tables(group, in_hw, out_hw, crop)
    want = oracle.orbit(x, t.mats, t.exact, out_hw, padding, interp)
    case = _case(dtype)
    assert_close(ops.orbit(x, t, out_hw, padding, interp), want, msg="no graph (views into their slots)", case=case)
    xr = x.clone().requires_grad_()
    got = ops.orbit(xr, t, out_hw, padding, interp)
    assert_close(got, want, msg="with a graph", case=case)
    g = torch.randn(got.shape, generator=rng, dtype=dtype)
    (expect,) = _grads(oracle.orbit(xr, t.mats, t.exact, out_hw, padding, interp), xr, g)
    assert_close(_grads(got, xr, g)[0], expect, msg="grad x", case=case)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_antialiased_orbit_values_and_gradient(padding, rng):
    group, in_hw, out_hw, crop = "C8", (13, 11), (5, 4), 0.9
    x = torch.randn(2, 2, *in_hw, generator=rng, dtype=torch.float64, requires_grad=True)
    t = _tables(group, in_hw, out_hw, crop)
    aa = antialias_tables(as_group(group), in_hw, out_hw, crop, torch.device("cpu"))
    got = ops.orbit(x, t, out_hw, padding, "bilinear", antialias=aa)
    want = oracle.orbit_antialias(x, t.mats, t.pull, aa.norm, aa.taps, out_hw, padding)
    assert_close(got, want, dtype=torch.float64, msg="sparse operator")
    g = torch.randn(got.shape, generator=rng, dtype=torch.float64)
    assert_close(_grads(got, x, g)[0], _grads(want, x, g)[0], dtype=torch.float64, msg="its transpose")


@pytest.mark.parametrize("group,in_hw,out_hw,crop,padding,interp", CASES)
def test_transform_values_and_both_gradients(group, in_hw, out_hw, crop, padding, interp, rng):
    x = torch.randn(3, 2, *in_hw, generator=rng, dtype=torch.float64, requires_grad=True)
    t = _tables(group, in_hw, in_hw)
    N = t.mats.shape[0]
    index = torch.randint(0, N, (3,), generator=rng)
    w = torch.randn(3, N, generator=rng, dtype=torch.float64, requires_grad=True)
    got = ops.transform(x, w, index, t, padding, interp)
    want = oracle.transform(x, w, index, t.mats, t.exact, padding, interp)
    assert_close(got, want)
    assert_close(ops.transform(x.detach(), None, index, t, padding, interp), want)
    g = torch.randn(got.shape, generator=rng, dtype=torch.float64)
    for a, b, name in zip(_grads(got, (x, w), g), _grads(want, (x, w), g), ("x", "weights (mixture ST)")):
        assert_close(a, b, msg=name)


def test_regular_inversion_values_and_gradients(rng):
    group = as_group("D2")
    y = torch.randn(2, 2 * group.order, 5, 5, generator=rng, dtype=torch.float64, requires_grad=True)
    t = _tables("D2", (5, 5), (5, 5), inverse=True)
    perm, inv = channel_tables(group, torch.device("cpu"))
    index = torch.tensor([1, 3])
    w = torch.randn(2, group.order, generator=rng, dtype=torch.float64, requires_grad=True)
    got = ops.transform(y, w, index, t, "zeros", "bilinear", (perm, inv))
    want = oracle.transform(y, w, index, t.mats, t.exact, "zeros", "bilinear", perm)
    assert torch.equal(got, want)  # exact: a permutation of pixels and channels
    g = torch.randn(got.shape, generator=rng, dtype=torch.float64)
    for a, b in zip(_grads(got, (y, w), g), _grads(want, (y, w), g)):
        assert_close(a, b, dtype=torch.float64)


@pytest.mark.parametrize("score", ["cosine", "dot"])
@pytest.mark.parametrize("contrastive,prior", [("none", "none"), ("normalized", "identity"), ("raw", "target")])
@pytest.mark.parametrize("gumbel", [False, True])
def test_select_and_losses_values_and_gradients(score, contrastive, prior, gumbel, rng):
    B, N, D = 3, 6, 5
    v = torch.randn(B, N, D, generator=rng, dtype=torch.float64, requires_grad=True)
    r = torch.randn(D, generator=rng, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(B, N, generator=rng, dtype=torch.float64) if gumbel else None
    target = torch.randint(0, N, (B,), generator=rng) if prior == "target" else None
    sel, losses = ops.select(v, r, 1.3, score, True, noise, 0.7, contrastive, prior, target, 1.7)
    want = oracle.select(v, r, 1.3, score, True, noise, 0.7)
    for name in ("scores", "probs", "onehot"):
        assert_close(getattr(sel, name), getattr(want, name), dtype=torch.float64, msg=name)
    assert torch.equal(sel.index, want.index)
    outs, wants = [sel.scores, sel.probs, sel.onehot], [want.scores, want.probs, want.onehot]
    if contrastive != "none":
        tgt = target if target is not None else torch.zeros(B, dtype=torch.int64)
        wl = torch.stack([oracle.contrastive_loss(v, contrastive), oracle.prior_loss(want.scores, tgt, 1.7)])
        assert_close(losses, wl, dtype=torch.float64, msg="losses")
        outs.append(losses)
        wants.append(wl)
    else:
        assert losses.numel() == 0
    gs = [torch.randn(o.shape, generator=rng, dtype=torch.float64) for o in outs]
    got = torch.autograd.grad(outs, (v, r), gs)
    expect = torch.autograd.grad(wants, (v, r), gs)
    for a, b, name in zip(got, expect, ("vectors", "reference")):
        assert_close(a, b, dtype=torch.float64, msg=name)


@pytest.mark.parametrize("kind", ["normalized", "raw"])
def test_contrastive_loss_value_and_gradient(kind, rng):
    v = torch.randn(4, 5, 3, generator=rng, dtype=torch.float64, requires_grad=True)
    got, want = ops.contrastive_loss(v, kind), oracle.contrastive_loss(v, kind)
    assert_close(got, want, dtype=torch.float64)
    assert_close(_grads(got, v, None)[0], _grads(want, v, None)[0], dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_norms_below_eps_and_zero_vectors(dtype, rng):
    """Vectors with 0 < |v| < eps, a zero vector and a zero reference: the gradients of the scores and of the
    normalized contrastive loss equal the oracle's (the CPU backend's explicit formulas, as the kernels')."""
    v = torch.randn(2, 5, 3, generator=rng, dtype=dtype)
    v[0, 1] = torch.tensor([3e-9, -4e-9, 0.0], dtype=dtype)
    v[1, 2] = 0.0
    for r in (torch.randn(3, generator=rng, dtype=dtype), torch.zeros(3, dtype=dtype)):
        vr, rr = v.clone().requires_grad_(), r.clone().requires_grad_()
        sel, _ = ops.select(vr, rr, 0.3, "cosine", False, None, 1.0)
        want = oracle.select(vr, rr, 0.3, "cosine", False)
        g = torch.randn(2, 5, generator=rng, dtype=dtype)
        for a, b, name in zip(_grads(sel.scores, (vr, rr), g), _grads(want.scores, (vr, rr), g), ("v", "r")):
            assert_close(a, b, msg=f"grad {name}")
    vr = v.clone().requires_grad_()
    got, want = ops.contrastive_loss(vr, "normalized"), oracle.contrastive_loss(vr, "normalized")
    assert_close(_grads(got, vr, None)[0], _grads(want, vr, None)[0], msg="contrastive")


@pytest.mark.parametrize("group,padding", [("C8", "border"), ("D4", "zeros")])
def test_select_transform_values_and_gradient(group, padding, rng):
    t = _tables(group, (6, 6), (6, 6))
    N = t.mats.shape[0]
    x = torch.randn(3, 2, 6, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    v, r = torch.randn(3, N, 4, generator=rng), torch.randn(4, generator=rng)
    xc, sel = ops.select_transform(v, r, x, t, 1.0, "cosine", padding, "bilinear")
    want, wsel = oracle.select_transform(v, r, x, t.mats, t.exact, 1.0, "cosine", padding, "bilinear")
    assert torch.equal(sel.index, wsel.index)
    assert_close(xc, want)
    g = torch.randn(xc.shape, generator=rng, dtype=torch.float64)
    assert_close(_grads(xc, x, g)[0], _grads(want, x, g)[0])


def test_the_oracle_fails_a_wrong_backend(rng, monkeypatch):
    """The comparison can fail: a CPU backend that rounds a bilinear weight differently is caught."""
    from canon import reference as ref

    x = torch.randn(2, 1, 7, 9, generator=rng)
    t = _tables("C8", (7, 9), (5, 6), 0.8)
    real = ref.orbit_ref
    monkeypatch.setattr(ref, "orbit_ref", lambda *a, **k: real(*a, **k).mul_(1 + 1e-3))
    with pytest.raises(AssertionError):
        assert_close(ops.orbit(x, t, (5, 6), "zeros", "bilinear"), oracle.orbit(x, t.mats, t.exact, (5, 6)))
