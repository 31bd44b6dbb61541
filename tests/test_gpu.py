"""What only a GPU can show: compiled kernels captured in CUDA graphs, no host synchronisation
in a training step, and the graphed canonicalizer. Runs with ``make test-gpu`` on a CUDA
machine (TRITON_INTERPRET=0); on the CPU machine every test here skips with the reason, and
the CPU-side proofs of the same properties are in ``tests/test_launches.py``."""

import pytest
import torch
from conftest import assert_close, cuda_only

import canon
from canon.networks import ConvEncoder


def test_graphed_canonicalizer_refuses_cpu_with_a_clear_message():
    net = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8, hidden=4), "C4")
    with pytest.raises(ValueError, match="CUDA graphs need CUDA tensors; sample is on cpu"):
        canon.GraphedCanonicalizer(net, torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError, match="must be a canon.OrbitCanonicalizer"):
        canon.GraphedCanonicalizer(torch.nn.Linear(2, 2), torch.rand(2, 1, 8, 8))


def _capture(fn, static_inputs):
    """Capture ``fn(*static_inputs)`` in a CUDA graph (after a side-stream warm-up); (graph, outputs)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn(*static_inputs)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static_inputs)
    return graph, out


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)] if isinstance(out, (tuple, list)) else []


@cuda_only
@pytest.mark.parametrize(
    "name",
    [
        "orbit",
        "orbit_exact",
        "select",
        "select_losses",
        "canonicalize",
        "select_canonicalize",
        "invert",
        "invert_regular",
        "transform",
        "contrastive_loss",
    ],
)
def test_every_public_op_replays_from_a_cuda_graph(name):
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(4, 3, 32, 32, device=dev, generator=g)
    v = torch.randn(4, 8, 16, device=dev, generator=g)
    r = torch.randn(16, device=dev, generator=g)
    idx = torch.tensor([0, 3, 5, 7], device=dev)
    y = torch.rand(4, 16, 32, 32, device=dev, generator=g)
    calls = {
        "orbit": (lambda x, v, i: canon.orbit(x, "C8", size=24, crop_ratio=0.8), (x, v, idx)),
        "orbit_exact": (lambda x, v, i: canon.orbit(x, "D4"), (x, v, idx)),
        "select": (lambda x, v, i: canon.select(v, r), (x, v, idx)),
        "select_losses": (lambda x, v, i: canon.select_losses(v, r, prior_target=i), (x, v, idx)),
        "canonicalize": (lambda x, v, i: canon.canonicalize(x, i, "C8"), (x, v, idx)),
        "select_canonicalize": (lambda x, v, i: canon.select_canonicalize(x, v, r, "C8"), (x, v, idx)),
        "invert": (lambda x, v, i: canon.invert(x, i, "C8"), (x, v, idx)),
        "invert_regular": (lambda x, v, i: canon.invert(x, i, "C8", kind="regular"), (y, v, idx)),
        "transform": (lambda x, v, i: canon.transform(x, i, "C8"), (x, v, idx)),
        "contrastive_loss": (lambda x, v, i: canon.losses.contrastive_loss(v), (x, v, idx)),
    }
    fn, inputs = calls[name]
    static = [t.clone() for t in inputs]
    graph, out = _capture(fn, static)
    fresh = [torch.rand_like(t) if t.is_floating_point() else t.flip(0) for t in inputs]
    for s, f in zip(static, fresh):
        s.copy_(f)
    graph.replay()
    for got, want in zip(_flat(out), _flat(fn(*fresh))):
        assert torch.equal(got, want), name


def _model(group="C8"):
    torch.manual_seed(0)
    enc = ConvEncoder(3, out_dim=32, hidden=8, num_layers=3, kernel_size=5)
    return canon.OrbitCanonicalizer(enc, group, size=32, crop_ratio=0.8, learn_reference=True).cuda()


@cuda_only
def test_training_step_never_synchronises_with_the_host():
    net = _model().train()
    x = torch.rand(16, 3, 48, 48, device="cuda")
    net(x)  # first call builds and caches the device tables
    torch.cuda.set_sync_debug_mode("error")
    try:
        xc = net(x)
        loss = xc.square().mean() + net.prior_loss() + 0.1 * net.contrastive_loss()
        loss.backward()
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda_only
def test_graphed_canonicalizer_matches_eager_and_refuses_other_shapes():
    eager, graphed_net = _model().train(), _model().train()
    x = torch.rand(16, 3, 48, 48, device="cuda")
    graphed = canon.GraphedCanonicalizer(graphed_net, torch.empty_like(x))
    for step in range(3):
        xs = torch.rand_like(x)
        losses = []
        for net, call in ((eager, eager), (graphed_net, graphed)):
            net.zero_grad(set_to_none=True)
            xc = call(xs)
            loss = xc.square().mean() + net.prior_loss() + 0.1 * net.contrastive_loss()
            loss.backward()
            losses.append((loss.detach(), xc.detach(), net.selection.index, [p.grad.clone() for p in net.parameters()]))
        (le, xe, ie, ge), (lg, xg, ig, gg) = losses
        assert torch.equal(ie, ig), f"step {step}: choices differ"
        assert_close(lg, le, msg=f"step {step} loss")
        assert_close(xg, xe, msg=f"step {step} canonical images")
        for a, b in zip(gg, ge):
            assert_close(a, b, msg=f"step {step} grads", case="cuda_graph_replay")
    with pytest.raises(ValueError, match="captured for input"):
        graphed(torch.rand(8, 3, 48, 48, device="cuda"))


@cuda_only
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_module_eval_is_bitwise_invariant_on_cuda(group):
    net = _model(group).eval()
    x = torch.rand(6, 3, 32, 32, device="cuda")
    with torch.no_grad():
        xc = net(x)
        for g in range(1, canon.as_group(group).order):
            assert torch.equal(net(canon.transform(x, g, group)), xc), f"element {g}"


@cuda_only
def test_train_with_cuda_graph_follows_the_eager_run(tmp_path):
    """``python -m canon.train --cuda-graph`` replays the canonicalizer and reaches the eager run's weights
    (a last partial batch runs eagerly beside the graph)."""
    from canon.data import load_dataset
    from canon.train import build_parser, resolve, run
    from canon.train.loop import load_checkpoint

    data = load_dataset("digits", 0.2, 0)
    base = ["--dataset", "digits", "--group", "C8", "--epochs", "1", "--batch-size", "100", "--quiet", "--no-plots"]
    base += ["--methods", "canonicalized", "--device", "cuda", "--eval-batch-size", "500"]
    runs = {}
    for name, extra in (("eager", []), ("graphed", ["--cuda-graph"])):
        cfg = resolve(build_parser().parse_args([*base, *extra, "--output-dir", str(tmp_path / name)]))
        runs[name] = run(cfg, data)["methods"]["canonicalized"]
    assert len(data[0]) % 100 != 0  # the partial last batch ran eagerly
    a = load_checkpoint(str(tmp_path / "eager" / "checkpoint.pt"), "cuda")
    b = load_checkpoint(str(tmp_path / "graphed" / "checkpoint.pt"), "cuda")
    for (k, pa), pb in zip(a.canonicalizer.state_dict().items(), b.canonicalizer.state_dict().values()):
        assert_close(pb, pa, msg=k, case="cuda_graph_training")
    assert abs(runs["eager"]["group_avg_acc"] - runs["graphed"]["group_avg_acc"]) <= 0.02


@cuda_only
def test_cached_launches_match_tritons_own_and_respecialise(monkeypatch):
    """The cached launch path (``canon.kernels.launch``) gives what Triton's ``kernel[grid]`` gives, bit for
    bit, takes the cached path for a repeated specialisation and goes back through Triton for a pointer
    off 16-byte alignment or an odd size (a kernel compiled for aligned pointers must never see one)."""
    from triton.runtime.jit import JITFunction

    from canon.kernels import launch as L

    stock_runs = []
    run = JITFunction.run
    monkeypatch.setattr(JITFunction, "run", lambda self, *a, **k: stock_runs.append(self) or run(self, *a, **k))
    g = torch.Generator(device="cuda").manual_seed(1)
    base = torch.rand(2 * 3 * 40 * 40 + 1, device="cuda", generator=g)
    aligned = base[:-1].view(2, 3, 40, 40)
    shifted = base[1:].view(2, 3, 40, 40)  # 4 bytes past alignment
    odd = torch.rand(2, 3, 37, 41, device="cuda", generator=g)
    calls = [
        lambda x: canon.orbit(x, "C8", size=24, crop_ratio=0.8),
        lambda x: canon.orbit(x, "D4"),
        lambda x: canon.canonicalize(x, torch.tensor([1, 6], device="cuda"), "C8"),
    ]
    for i, fn in enumerate(calls):
        with L.stock_launches():
            want = [fn(x) for x in (aligned, shifted, odd)]
        for x, w in zip((aligned, shifted, odd), want):
            fn(x)  # first sight of this specialisation on the cached path: through Triton
            stock_runs.clear()
            got = fn(x.clone() if x is odd else x)
            assert stock_runs == [], f"call {i}: a repeated specialisation went through Triton"
            assert torch.equal(got, w), f"call {i}: cached launch differs from Triton's"
        stock_runs.clear()
        fn(aligned)
        fn(shifted)
        assert stock_runs == [], f"call {i}: both alignments cached separately"
    with canon.use_backend("reference"):
        ref = calls[0](shifted)
    assert_close(calls[0](shifted), ref, case="grid_sample_coordinates")
