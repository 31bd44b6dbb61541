"""Score kernels (select, contrastive loss) through the Triton interpreter, against the reference."""

import pytest
import torch
from conftest import assert_close

pytest.importorskip("triton", reason="the Triton path needs triton")

import canon  # noqa: E402
from canon import reference as ref  # noqa: E402
from canon import triton_ops  # noqa: E402

NAN = float("nan")


@pytest.mark.parametrize("B,N,D,score,noise", [(1, 4, 7, "cosine", False), (3, 8, 5, "dot", False), (2, 5, 70, "cosine", True), (2, 13, 3, "cosine", False)])
def test_select_forward_backward_matches_reference(B, N, D, score, noise, rng):
    v = torch.randn(B, N, D, generator=rng)
    r = torch.randn(D, generator=rng)
    gn = torch.randn(B, N, generator=rng) if noise else None
    out = (torch.full((B, N), NAN), torch.full((B, N), NAN), torch.full((B,), -7, dtype=torch.int64), torch.full((B, N), NAN))
    sel = triton_ops.select(v, r, 1.7, score, True, gn, 0.6, out=out)
    e = ref.select_ref(v, r, 1.7, score, True, gn, 0.6)
    assert_close(sel.scores, e.scores, msg="scores")
    assert_close(sel.probs, e.probs, msg="probs")
    assert torch.equal(sel.index, e.index)
    assert torch.equal(sel.onehot, e.onehot.detach())
    gs, gp, gh = (torch.randn(B, N, generator=rng) for _ in range(3))
    gv, gr = triton_ops.select_backward(gs, gp, gh, v, r, sel.probs, 1.7, score, True, noise, 0.6)
    vr, rr = v.clone().requires_grad_(), r.clone().requires_grad_()
    e = ref.select_ref(vr, rr, 1.7, score, True, gn, 0.6)
    ev, er = torch.autograd.grad([e.scores, e.probs, e.onehot], [vr, rr], [gs, gp, gh], retain_graph=True)
    assert_close(gv, ev, msg="grad vectors")
    assert_close(gr, er, msg="grad reference")
    # missing gradients (None) and eval (no straight-through)
    gv, gr = triton_ops.select_backward(gs, None, gh, v, r, sel.probs, 1.7, score, False, noise, 0.6)
    ev, er = torch.autograd.grad([e.scores], [vr, rr], [gs])
    assert_close(gv, ev, msg="grad vectors, scores only")
    assert_close(gr, er, msg="grad reference, scores only")


def test_argmax_ties_go_to_lowest_index():
    v = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]])
    sel = triton_ops.select(v, torch.tensor([1.0, 0.0]), 1.0, "cosine", True, None, 1.0)
    assert int(sel.index) == 0


@pytest.mark.parametrize("kind", ["normalized", "raw"])
@pytest.mark.parametrize("B,N,D", [(1, 4, 9), (3, 5, 33), (2, 1, 4), (2, 16, 3)])
def test_contrastive_loss_matches_reference(kind, B, N, D, rng):
    v = torch.randn(B, N, D, generator=rng)
    loss = triton_ops.contrastive_loss(v, kind)
    vr = v.clone().requires_grad_()
    e = ref.contrastive_loss_ref(vr, kind)
    assert_close(loss, e.detach(), msg="loss")
    g = torch.tensor(1.3)
    gv = triton_ops.contrastive_loss_backward(g, v, kind)
    if e.requires_grad:
        (ev,) = torch.autograd.grad(e, vr, g)
    else:
        ev = torch.zeros_like(v)
    assert_close(gv, ev, msg="grad")
    assert_close(ref.contrastive_loss_backward_ref(g, v, kind), ev, msg="explicit reference adjoint")


def test_gradcheck_float64_select_and_contrastive_through_triton(rng):
    v = torch.randn(2, 4, 3, dtype=torch.float64, generator=rng, requires_grad=True)
    r = torch.randn(3, dtype=torch.float64, generator=rng, requires_grad=True)
    with canon.use_backend("triton"):
        # scores and probs are true derivatives (the one-hot's straight-through gradient is not)
        assert torch.autograd.gradcheck(lambda a, b: canon.select(a, b, beta=1.5)[:2], (v, r))
        assert torch.autograd.gradcheck(lambda a: canon.losses.contrastive_loss(a), (v,))
        assert torch.autograd.gradcheck(lambda a: canon.losses.contrastive_loss(a, "raw"), (v,))


def test_select_backward_deterministic(rng):
    v = torch.randn(3, 8, 40, generator=rng)
    r = torch.randn(40, generator=rng)
    sel = triton_ops.select(v, r, 1.0, "cosine", True, None, 1.0)
    g = torch.randn(3, 8, generator=rng)
    a = triton_ops.select_backward(g, g, g, v, r, sel.probs, 1.0, "cosine", True, False, 1.0)
    b = triton_ops.select_backward(g, g, g, v, r, sel.probs, 1.0, "cosine", True, False, 1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
