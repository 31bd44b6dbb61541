"""OrbitCanonicalizer: train vs eval, exposed state, losses, invert, reference vector."""

import copy

import pytest
import torch
from conftest import assert_close

import canon
from canon.networks import ConvEncoder


def _net(**kw):
    torch.manual_seed(0)
    return canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8, hidden=8), "C8", size=9, crop_ratio=0.9, **kw)


def test_forward_state_and_losses():
    net = _net(beta=2.0)
    x = torch.randn(3, 1, 12, 12)
    xc = net(x)
    assert xc.shape == x.shape
    assert net.scores.shape == (3, 8) and net.element.shape == (3,)
    assert torch.equal(net.element, net.scores.argmax(-1))
    # canonical image is the chosen transform of x at full resolution
    assert torch.equal(xc, canon.transform(x, net.element, "C8"))
    v = net.state.vectors
    assert_close(net.contrastive_loss(), canon.losses.contrastive_loss(v))
    assert_close(net.prior_loss(), torch.nn.functional.cross_entropy(net.scores, torch.zeros(3, dtype=torch.long)))
    assert float(net.identity_metric()) == float((net.element == 0).float().mean())
    assert net.artifact_loss(torch.Generator().manual_seed(0)) >= 0
    assert torch.equal(net.invert(xc)[net.element % 2 == 0], x[net.element % 2 == 0])  # 90° multiples invert exactly


def test_training_gradients_reach_encoder_and_reference():
    net = _net(learn_reference=True).train()
    x = torch.randn(4, 1, 12, 12)
    xc = net(x)
    loss = (xc * torch.randn_like(xc)).sum() + net.contrastive_loss() + net.prior_loss()
    loss.backward()
    assert net.reference.grad is not None and net.reference.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())
    # the task gradient alone reaches the encoder through the straight-through selection
    net.zero_grad()
    (net(x) * torch.randn(4, 1, 12, 12)).sum().backward()
    assert net.encoder.head.weight.grad.abs().sum() > 0


def test_eval_is_hard_and_reference_is_seeded_buffer():
    a, b = _net(seed=3), _net(seed=3)
    assert torch.equal(a.reference, b.reference) and "reference" in dict(a.named_buffers())
    assert not torch.equal(_net(seed=4).reference, a.reference)
    a.eval()
    x = torch.randn(2, 1, 12, 12, requires_grad=True)
    a(x)
    assert not a.selection.onehot.requires_grad
    assert "group=C8" in repr(a)


def test_dtype_follows_encoder():
    net = _net().to(torch.float64)
    out = net(torch.randn(2, 1, 12, 12, dtype=torch.float64))
    assert out.dtype == torch.float64 and net.state.views.dtype == torch.float64


def test_check_finite_and_errors():
    net = _net(check_finite=True)
    x = torch.randn(2, 1, 12, 12)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        net(x)
    with pytest.raises(RuntimeError, match="forward"):
        _net().contrastive_loss()
    with pytest.raises(ValueError, match="dim"):
        canon.OrbitCanonicalizer(torch.nn.Flatten(), "C4")
    with pytest.raises(TypeError, match="nn.Module"):
        canon.OrbitCanonicalizer(lambda x: x, "C4", dim=3)

    class Bad(torch.nn.Module):
        out_dim = 4

        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    with pytest.raises(ValueError, match="encoder must return"):
        canon.OrbitCanonicalizer(Bad(), "C4")(torch.randn(2, 1, 6, 6))


def test_nan_policy_without_check():
    # without check_finite a NaN propagates: the canonical image holds NaN where x did
    net = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8, hidden=8), "C4").eval()
    x = torch.randn(2, 1, 8, 8)
    x[1, 0, 2, 5] = float("nan")
    xc = net(x)
    assert torch.isnan(xc[1]).sum() >= 1 and not torch.isnan(xc[0]).any()


def test_dead_views_are_reused_and_live_ones_never_overwritten(rng, monkeypatch):
    # On the CPU a forward writes its views into the last forward's views when nothing else
    # refers to them (no page faults for a fresh buffer); views someone still holds stay intact.
    # The module does it for blocks of canon._memory.MIN_BYTES and more; lowered here so that
    # tiny inputs take the same path.
    import canon._memory

    monkeypatch.setattr(canon._memory, "MIN_BYTES", 0)
    torch.manual_seed(0)
    net = canon.OrbitCanonicalizer(
        ConvEncoder(1, out_dim=8, hidden=4, num_layers=2, kernel_size=3), "C8", size=8, learn_reference=True
    ).train()
    x1, x2 = torch.rand(2, 1, 8, 8, generator=rng), torch.rand(2, 1, 8, 8, generator=rng)
    with torch.no_grad():
        net(x1)
        first = net.state.views.data_ptr()
        net(x2)
        assert net.state.views.data_ptr() == first, "dead views were not reused"
        held = net.state.views
        snapshot = held.clone()
        net(x1)
        assert net.state.views.data_ptr() != held.data_ptr() and torch.equal(held, snapshot), (
            "views held by the caller changed"
        )
        # a kept state tuple holds its views too
        kept = net.select(x1)
        kept_views = kept.views.clone()
        net.select(x2)
        assert torch.equal(kept.views, kept_views), "views of a kept state changed"
    # inference mode: the first call builds the device tables, later calls outside it work,
    # and views made in inference mode are never written to outside it
    fresh = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8, hidden=4, num_layers=2, kernel_size=3), "C6", size=5)
    with torch.inference_mode():
        a = fresh.eval()(x1)
    with torch.no_grad():
        assert torch.equal(fresh(x1), a)
    assert torch.equal(canon.orbit(x1, "C6", size=5), fresh.state.views)
    # a graph that saved the views (the encoder's input) keeps them: a second forward before the
    # first backward must not overwrite them, and the first backward stays right
    loss1 = net(x1).square().mean() + net.prior_loss()
    saved = net.state.views.clone()
    ptr = net.state.views.data_ptr()
    net(x2)
    assert net.state.views.data_ptr() != ptr
    grads = torch.autograd.grad(loss1, list(net.encoder.parameters()))
    net2 = copy.deepcopy(net)
    expected = torch.autograd.grad(net2(x1).square().mean() + net2.prior_loss(), list(net2.encoder.parameters()))
    for a, b in zip(grads, expected):
        assert torch.equal(a, b)
    assert torch.equal(canon.orbit(x1, "C8", size=8), saved)
