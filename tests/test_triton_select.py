"""Selection kernels (select, the fused selection + losses, contrastive loss) against the reference,
under the Triton interpreter here and compiled on a CUDA machine (``make test-gpu``)."""

import pytest
import torch
from conftest import assert_close, kernel_device, to_cpu

pytest.importorskip("triton", reason="the Triton path needs triton")

import canon  # noqa: E402
from canon import oracle, triton_ops  # noqa: E402
from canon import reference as ref  # noqa: E402
from canon.geometry import view_tables  # noqa: E402
from canon.groups import as_group  # noqa: E402

NAN = float("nan")


@kernel_device
@pytest.mark.parametrize(
    "B,N,D,score,noise",
    [(1, 4, 7, "cosine", False), (3, 8, 5, "dot", False), (2, 5, 70, "cosine", True), (2, 13, 3, "cosine", False)],
)
def test_select_forward_backward_matches_reference(dev, B, N, D, score, noise, rng):
    v = torch.randn(B, N, D, generator=rng)
    r = torch.randn(D, generator=rng)
    gn = torch.randn(B, N, generator=rng) if noise else None
    d = lambda t: None if t is None else t.to(dev)  # noqa: E731
    out = tuple(torch.full(s, NAN, device=dev) for s in ((B, N), (B, N))) + (
        torch.full((B,), -7, dtype=torch.int64, device=dev),
        torch.full((B, N), NAN, device=dev),
    )
    sel, losses = triton_ops.select(d(v), d(r), 1.7, score, d(gn), 0.6, out=out)
    assert losses is None
    e = oracle.select(v, r, 1.7, score, True, gn, 0.6)
    assert_close(to_cpu(sel.scores), e.scores, msg="scores")
    assert_close(to_cpu(sel.probs), e.probs, msg="probs")
    assert torch.equal(to_cpu(sel.index), e.index)
    assert torch.equal(to_cpu(sel.onehot), e.onehot.detach())
    gs, gp, gh = (torch.randn(B, N, generator=rng) for _ in range(3))
    gv, gr = triton_ops.select_backward(d(gs), d(gp), d(gh), None, d(v), d(r), sel.probs, 1.7, score, True, d(gn), 0.6)
    vr, rr = v.clone().requires_grad_(), r.clone().requires_grad_()
    e = oracle.select(vr, rr, 1.7, score, True, gn, 0.6)
    ev, er = torch.autograd.grad([e.scores, e.probs, e.onehot], [vr, rr], [gs, gp, gh], retain_graph=True)
    assert_close(to_cpu(gv), ev, msg="grad vectors")
    assert_close(to_cpu(gr), er, msg="grad reference")
    # missing gradients (None) and eval (no straight-through)
    gv, gr = triton_ops.select_backward(d(gs), None, d(gh), None, d(v), d(r), sel.probs, 1.7, score, False, d(gn), 0.6)
    ev, er = torch.autograd.grad([e.scores], [vr, rr], [gs])
    assert_close(to_cpu(gv), ev, msg="grad vectors, scores only")
    assert_close(to_cpu(gr), er, msg="grad reference, scores only")


@kernel_device
@pytest.mark.parametrize(
    "kind,prior", [("normalized", "identity"), ("raw", "target"), ("normalized", "none"), ("none", "target")]
)
def test_fused_selection_and_losses_match_reference(dev, kind, prior, rng):
    B, N, D = 3, 8, 11
    v = torch.randn(B, N, D, generator=rng)
    r = torch.randn(D, generator=rng)
    target = torch.randint(0, N, (B,), generator=rng)
    tgt = target if prior == "target" else None
    sel, losses = triton_ops.select(
        v.to(dev),
        r.to(dev),
        1.3,
        "cosine",
        None,
        1.0,
        kind,
        prior,
        None if tgt is None else tgt.to(dev),
        prior_beta=2.5,
    )
    vr, rr = v.clone().requires_grad_(), r.clone().requires_grad_()
    e_sel, e_c, e_p = oracle.select_losses(
        vr, rr, 1.3, "cosine", True, None, 1.0, "normalized" if kind == "none" else kind, tgt, 2.5
    )
    means = to_cpu(losses).mean(-1)
    assert torch.equal(to_cpu(sel.index), e_sel.index)
    if kind != "none":
        assert_close(means[0], e_c.detach(), msg="contrastive")
    if prior != "none":
        assert_close(means[1], e_p.detach(), msg="prior")
    # backward of everything at once
    gs, gh = torch.randn(B, N, generator=rng), torch.randn(B, N, generator=rng)
    gl = torch.tensor([0.7 if kind != "none" else 0.0, -1.3 if prior != "none" else 0.0])
    gv, gr = triton_ops.select_backward(
        gs.to(dev),
        None,
        gh.to(dev),
        gl.to(dev),
        v.to(dev),
        r.to(dev),
        sel.probs,
        1.3,
        "cosine",
        True,
        False,
        1.0,
        kind,
        prior,
        None if tgt is None else tgt.to(dev),
        2.5,
    )
    outs, grads = [e_sel.scores, e_sel.onehot], [gs, gh]
    if kind != "none":
        outs, grads = outs + [e_c], grads + [gl[0]]
    if prior != "none":
        outs, grads = outs + [e_p], grads + [gl[1]]
    ev, er = torch.autograd.grad(outs, [vr, rr], grads)
    assert_close(to_cpu(gv), ev, msg="grad vectors")
    assert_close(to_cpu(gr), er, msg="grad reference")


@kernel_device
def test_argmax_ties_go_to_lowest_index(dev):
    v = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]], device=dev)
    sel, _ = triton_ops.select(v, torch.tensor([1.0, 0.0], device=dev), 1.0, "cosine", None, 1.0)
    assert int(sel.index) == 0


@kernel_device
@pytest.mark.parametrize("N", [6, 8])
def test_nan_scores_choose_the_first_nan_as_torch_argmax(dev, N, rng):
    # every score NaN, or some: the first NaN wins (torch.argmax), never a padding lane or a later NaN
    v = torch.randn(4, N, 5, generator=rng)
    v[0] = float("nan")  # whole row
    v[1, 3] = float("nan")  # one vector
    v[2, [2, 5]] = float("nan")  # two: the first one
    r = torch.randn(5, generator=rng)
    sel, _ = triton_ops.select(v.to(dev), r.to(dev), 1.0, "cosine", None, 1.0)
    expect = oracle.select(v, r, 1.0, "cosine", False)
    assert torch.equal(to_cpu(sel.index), expect.index), (sel.index, expect.index)
    assert to_cpu(sel.index).tolist()[:3] == [0, 3, 2]
    x = torch.randn(4, 1, 6, 6, generator=rng)
    t = view_tables(as_group(f"C{N}"), (6, 6), (6, 6), 1.0, torch.device(dev))
    xc, fused = triton_ops.select_transform(
        v.to(dev), r.to(dev), x.to(dev), t.mats, t.exact, t.aligned, 1.0, "cosine", "zeros", "bilinear"
    )
    assert torch.equal(to_cpu(fused.index), expect.index)
    assert torch.isfinite(xc).all()  # a valid element chosen: the images themselves are finite


@kernel_device
def test_out_of_range_prior_target_gives_nan(dev):
    v = torch.randn(2, 4, 3, device=dev)
    _, losses = triton_ops.select(
        v, torch.randn(3, device=dev), 1.0, "cosine", None, 1.0, "none", "target", torch.tensor([1, 9], device=dev)
    )
    assert torch.isfinite(losses[1, 0]) and torch.isnan(losses[1, 1])


@kernel_device
@pytest.mark.parametrize("kind", ["normalized", "raw"])
@pytest.mark.parametrize("B,N,D", [(1, 4, 9), (3, 5, 33), (2, 1, 4), (2, 16, 3)])
def test_contrastive_loss_matches_reference(dev, kind, B, N, D, rng):
    v = torch.randn(B, N, D, generator=rng)
    loss = triton_ops.contrastive_loss(v.to(dev), kind).mean()
    vr = v.clone().requires_grad_()
    e = oracle.contrastive_loss(vr, kind)
    assert_close(to_cpu(loss), e.detach(), msg="loss")
    g = torch.tensor(1.3)
    gv = triton_ops.contrastive_loss_backward(g.to(dev), v.to(dev), kind)
    ev = torch.autograd.grad(e, vr, g)[0] if e.requires_grad else torch.zeros_like(v)
    assert_close(to_cpu(gv), ev, msg="grad")
    assert_close(ref.contrastive_loss_backward_ref(g, v, kind), ev, msg="explicit reference adjoint")


@kernel_device
def test_gradcheck_float64_select_and_losses_through_triton(dev, rng):
    v = torch.randn(2, 4, 3, dtype=torch.float64, generator=rng).to(dev).requires_grad_()
    r = torch.randn(3, dtype=torch.float64, generator=rng).to(dev).requires_grad_()
    target = torch.tensor([2, 0], device=dev)
    with canon.use_backend("triton"):
        # scores and probs are true derivatives (the one-hot's straight-through gradient is not)
        assert torch.autograd.gradcheck(lambda a, b: canon.select(a, b, beta=1.5)[:2], (v, r))
        assert torch.autograd.gradcheck(lambda a: canon.losses.contrastive_loss(a), (v,))
        assert torch.autograd.gradcheck(lambda a: canon.losses.contrastive_loss(a, "raw"), (v,))
        assert torch.autograd.gradcheck(
            lambda a, b: canon.select_losses(a, b, beta=1.5, prior_target=target, prior_beta=2.0)[1:], (v, r)
        )


@kernel_device
def test_select_backward_deterministic(dev, rng):
    v = torch.randn(3, 8, 40, generator=rng).to(dev)
    r = torch.randn(40, generator=rng).to(dev)
    sel, _ = triton_ops.select(v, r, 1.0, "cosine", None, 1.0)
    g = torch.randn(3, 8, generator=rng).to(dev)
    gl = torch.tensor([0.5, 2.0], device=dev)
    a = triton_ops.select_backward(
        g, g, g, gl, v, r, sel.probs, 1.0, "cosine", True, None, 1.0, "normalized", "identity"
    )
    b = triton_ops.select_backward(
        g, g, g, gl, v, r, sel.probs, 1.0, "cosine", True, None, 1.0, "normalized", "identity"
    )
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@kernel_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_norms_below_eps_and_zero_vectors_match_the_reference(dev, dtype, rng):
    """Vectors with 0 < |v| < eps and zero vectors (a clamped norm divides by eps; autograd through
    F.cosine_similarity keeps the norm's own derivative, and the normalized loss's clamp has none), and a
    zero reference: scores and gradients of the kernels equal the oracle's, float64 to 1e-10 (eps and the
    other float scalars reach float64 kernels unrounded)."""
    v = torch.randn(2, 5, 3, generator=rng, dtype=dtype)
    v[0, 1] = torch.tensor([3e-9, -4e-9, 0.0], dtype=dtype)  # |v| = 5e-9 < eps
    v[1, 2] = 0.0
    d = lambda t: t.to(dev)  # noqa: E731
    for r in (torch.randn(3, generator=rng, dtype=dtype), torch.zeros(3, dtype=dtype)):
        sel, _ = triton_ops.select(d(v), d(r), 0.3, "cosine", None, 1.0)
        vr, rr = v.clone().requires_grad_(), r.clone().requires_grad_()
        e = oracle.select(vr, rr, 0.3, "cosine", False)
        assert_close(to_cpu(sel.scores), e.scores, msg="scores")
        gs = torch.randn(2, 5, generator=rng, dtype=dtype)
        gv, gr = triton_ops.select_backward(
            d(gs), None, None, None, d(v), d(r), sel.probs, 0.3, "cosine", False, None, 1.0
        )
        ev, er = torch.autograd.grad(e.scores, [vr, rr], gs)
        assert_close(to_cpu(gv), ev, msg="grad vectors")
        assert_close(to_cpu(gr), er, msg="grad reference")
    vr = v.clone().requires_grad_()
    ev = torch.autograd.grad(oracle.contrastive_loss(vr, "normalized"), vr)[0]
    gv = triton_ops.contrastive_loss_backward(torch.tensor(1.0, dtype=dtype, device=dev), d(v), "normalized")
    assert_close(to_cpu(gv), ev, msg="grad of the normalized contrastive loss")


def test_float_args_carry_float64_scalars_past_triton_float32():
    """Triton passes Python floats as float32; each float argument comes with its float32 rest."""
    from canon.kernels.launch import float_args

    args = float_args(beta=0.1, pair=1 / 56, big=1e300, one=1.0, inf=float("inf"))
    for name, value in (("beta", 0.1), ("pair", 1 / 56), ("one", 1.0)):
        hi, lo = args[name], args[f"{name}_lo"]
        assert torch.tensor(hi, dtype=torch.float32).item() == hi  # hi is a float32
        assert abs((hi + lo) - value) <= 1e-15 * value and (lo == 0.0) == (hi == value)
    assert args["big_lo"] == 0.0 and args["inf"] == float("inf") and args["inf_lo"] == 0.0
