"""torch.compile(fullgraph=True) of a canonicalizer training step (reference backend, CPU)."""

import torch
from conftest import assert_close

import canon
from canon.networks import ConvEncoder


def test_fullgraph_forward_backward_matches_eager(rng):
    torch.manual_seed(0)
    net = canon.OrbitCanonicalizer(
        ConvEncoder(1, out_dim=8, hidden=4, num_layers=2, kernel_size=3), "C8", size=6, learn_reference=True
    ).train()
    x = torch.rand(2, 1, 7, 7, generator=rng)

    def step(inp):
        xc = net(inp)
        return (xc**2).mean() + 0.5 * net.prior_loss() + 0.1 * net.contrastive_loss()

    def grads(fn):
        net.zero_grad()
        loss = fn(x)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters()]

    with canon.use_backend("reference"):
        eager_loss, eager_grads = grads(step)
        torch._dynamo.reset()
        comp_loss, comp_grads = grads(torch.compile(step, fullgraph=True, backend="aot_eager"))
    assert_close(comp_loss, eager_loss)
    for a, b in zip(comp_grads, eager_grads):
        assert_close(a, b, case="compiled_graph")
