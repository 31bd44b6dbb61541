"""The bench's plain-PyTorch peers (``torch-batched``, ``torch-compile``; ``bench/peers.py``) compute canon's
outputs and gradients, so that their times compare identical work."""

import os

import pytest
import torch
from conftest import assert_close, kernel_device

import bench.cases  # noqa: F401  (registers the cases)
import canon
from bench import peers
from bench.registry import REGISTRY, Config, Inputs, Unavailable, build

# (case, batch, N, shape): views that shrink (orbit-one-tap 224 → 96), upsample (orbit 32 → 96), full-size transforms
POINTS = [
    ("orbit-one-tap", 2, 8, "3x224x224"),
    ("orbit", 3, 4, "3x32x32"),
    ("orbit", 2, 4, "1x28x28"),
    ("canonicalize", 3, 8, "3x32x32"),
    ("invert", 3, 8, "3x32x32"),
]
# where canon runs: the reference on the CPU; the compiled Triton kernels on a GPU (make test-gpu)
OURS = [("ours-reference", "cpu")]
if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    OURS.append(("ours-triton", "cuda"))


def _outputs(cfg: Config, provider: str, device: str):
    """(outputs, gradients of the leaves) of one provider's work on the bench's seeded inputs."""
    work = REGISTRY[cfg.case].build(cfg, provider, Inputs.make(cfg, device, grad=cfg.mode != "forward"))
    outs = work.forward()
    if cfg.mode == "forward":
        return [o.detach() for o in outs], []
    grads = torch.autograd.grad(outs, work.leaves, [u.to(o.dtype) for o, u in zip(outs, work.upstream)])
    return [o.detach() for o in outs], list(grads)


@pytest.mark.parametrize("ours,device", OURS)
@pytest.mark.parametrize("mode", ["forward", "backward"])
@pytest.mark.parametrize("point", POINTS, ids=lambda p: f"{p[0]}-C{p[2]}-{p[3]}")
def test_torch_batched_computes_canons_outputs_and_gradients(point, mode, ours, device):
    case, batch, n, shape = point
    cfg = Config(case, batch, n, shape, mode=mode)
    peer_out, peer_grads = _outputs(cfg, "torch-batched", device)
    our_out, our_grads = _outputs(cfg, ours, device)
    assert [o.shape for o in peer_out] == [o.shape for o in our_out]
    for a, b in zip(peer_out + peer_grads, our_out + our_grads):
        assert a.abs().sum() > 0  # nothing trivially zero
        assert_close(a.cpu(), b.cpu(), case="grid_sample_coordinates", msg=f"{case} {mode}")
    assert len(peer_grads) == len(our_grads) == (0 if mode == "forward" else 2 - case.startswith("orbit"))


def test_torch_compile_provider_compiles_the_same_function(monkeypatch):
    """The compiled closure is what the timer calls; aot_eager here (dynamo + AOT autograd, no C++ build on CI;
    the GPU run uses inductor) and the result equals the eager peer."""
    monkeypatch.setenv("BENCH_COMPILE_BACKEND", "aot_eager")
    for mode in ("forward", "backward"):
        cfg = Config("canonicalize", 2, 4, "3x32x32", mode=mode)
        b = build(cfg, "torch-compile", "cpu")
        assert "torch.compile(backend=aot_eager, mode=default)" in b.note
        got, want = b.fn(), build(cfg, "torch-batched", "cpu").fn()
        got, want = (got, want) if mode == "backward" else (got[0:1], want[0:1])
        for a, w in zip(got, want):
            assert_close(a, w, case="compiled_graph")


@pytest.mark.parametrize(
    "case,shape,why",
    [
        ("orbit", "3x224x224", "does not antialias"),
        ("select", "3x32x32", "no plain-PyTorch peer"),
        ("step-no-encoder", "3x32x32", "no plain-PyTorch peer"),
    ],
)
def test_peers_say_where_they_do_not_apply(case, shape, why):
    with pytest.raises(Unavailable, match=why):
        build(Config(case, 2, 4, shape), "torch-batched", "cpu")


def test_thetas_map_pixel_centres_as_canons_view_matrices():
    """θ of the identity view at equal size is the identity; a 90° view swaps the axes (normalised)."""
    g = canon.groups.as_group("C4")
    t = peers.thetas(g, (5, 7), (5, 7))
    assert torch.allclose(t[0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64))
    assert torch.allclose(t[1, :, :2].abs(), torch.tensor([[0, 5 / 7], [7 / 5, 0]], dtype=torch.float64))
    inv = peers.thetas(g, (5, 7), (5, 7), inverse=True)
    assert torch.allclose(inv[1], t[3]) and torch.allclose(inv[3], t[1])


@kernel_device
def test_adjoint_check_compares_the_same_gradients(dev):
    """bench/adjoint_check.py: both adjoints of a padded view, the same gradients (tiny shapes here)."""
    from bench.adjoint_check import CASES, Case, gradients

    tiny = (Case("orbit", "C8", 1, 7, 5, 0.9, "border"), Case("canonicalize", "C4", 2, 5, None, 1.0, "border"))
    with canon.use_backend("triton"):
        for case in tiny:
            _, pull = gradients(case, dev, "pull")
            _, scatter = gradients(case, dev, "scatter")
            for a, b in zip(pull, scatter):
                assert_close(a.cpu(), b.cpu(), msg=case.label)
    assert "orbit backward C8 B=64 3×224²→96 crop 0.8 border" in [c.label for c in CASES]
