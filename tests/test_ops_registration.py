"""The registered canon:: ops pass torch.library.opcheck on both backends."""

import contextlib

import pytest
import torch
from conftest import KERNEL_DEVICES, NO_KERNEL_DEVICE

import canon  # noqa: F401  (registers the ops)
from canon.geometry import channel_tables, view_tables
from canon.groups import as_group

# the reference on CPU tensors; the Triton kernels where they run in this session (the interpreter on
# CPU tensors, or compiled on CUDA: TRITON_INTERPRET=0 refuses CPU tensors for the triton backend)
BACKENDS = [("reference", "cpu")] + (
    [("triton", d) for d in KERNEL_DEVICES]
    or [pytest.param("triton", "none", marks=pytest.mark.skip(reason=NO_KERNEL_DEVICE))]
)


def _on(dev, args):
    """The sample's tensors on ``dev`` (leaves that record gradients stay leaves)."""

    def move(a):
        if not isinstance(a, torch.Tensor):
            return a
        b = a.detach().to(dev)
        return b.requires_grad_() if a.requires_grad else b

    return tuple(move(a) for a in args)


def _samples(rng):
    x = torch.randn(2, 2, 5, 5, generator=rng, requires_grad=True)
    t8 = view_tables(as_group("C8"), (5, 5), (4, 4), 0.9, torch.device("cpu"))
    t4 = view_tables(as_group("C4"), (5, 5), (5, 5), 1.0, torch.device("cpu"))
    tf = view_tables(as_group("C8"), (5, 5), (5, 5), 1.0, torch.device("cpu"))
    ti = view_tables(as_group("D2"), (5, 5), (5, 5), 1.0, torch.device("cpu"), inverse=True)
    perm, inv = channel_tables(as_group("D2"), torch.device("cpu"))
    v = torch.randn(2, 4, 6, generator=rng, requires_grad=True)
    r = torch.randn(6, generator=rng, requires_grad=True)
    w = torch.zeros(2, 8, requires_grad=True)
    idx = torch.tensor([3, 6])
    target = torch.tensor([1, 0])
    g = torch.randn(2, 8, 2, 4, 4, generator=rng)
    y = torch.randn(2, 8, 5, 5, generator=rng, requires_grad=True)
    return [
        (
            torch.ops.canon.orbit.default,
            (x, t8.mats, t8.pull, t8.exact, t8.aligned, 4, 4, "reflection", "bilinear", None, False),
        ),
        (
            torch.ops.canon.orbit.default,
            (x, t8.mats, t8.pull, t8.exact, t8.aligned, 4, 4, "zeros", "bilinear", None, False),
        ),
        (
            torch.ops.canon.orbit.default,
            (x, t4.mats, t4.pull, t4.exact, t4.aligned, 5, 5, "zeros", "bilinear", torch.float32, True),
        ),
        (
            torch.ops.canon.orbit_backward.default,
            (g, t8.mats, t8.pull, t8.exact, t8.aligned, 5, 5, "border", "nearest", torch.float32),
        ),
        (
            torch.ops.canon.transform.default,
            (x, w, idx, tf.mats, tf.pull, tf.exact, tf.aligned, "border", "bilinear", None, None),
        ),
        (
            torch.ops.canon.transform.default,
            (x, None, idx, tf.mats, tf.pull, tf.exact, tf.aligned, "zeros", "bilinear", None, None),
        ),
        (
            torch.ops.canon.transform.default,
            (
                y,
                torch.zeros(2, 4, requires_grad=True),
                torch.tensor([1, 3]),
                ti.mats,
                ti.pull,
                ti.exact,
                ti.aligned,
                "zeros",
                "bilinear",
                perm,
                inv,
            ),
        ),
        (
            torch.ops.canon.transform_backward.default,
            (
                torch.randn(2, 2, 5, 5, generator=rng),
                x.detach(),
                idx,
                tf.mats,
                tf.pull,
                tf.exact,
                tf.aligned,
                "zeros",
                "bilinear",
                True,
                True,
                None,
                None,
            ),
        ),
        (torch.ops.canon.select.default, (v, r, 1.5, "cosine", True, None, 1.0, "none", "none", None, 1.0)),
        (
            torch.ops.canon.select.default,
            (v, r, 1.0, "dot", False, torch.randn(2, 4, generator=rng), 0.5, "none", "none", None, 1.0),
        ),
        (torch.ops.canon.select.default, (v, r, 1.5, "cosine", True, None, 1.0, "normalized", "identity", None, 2.0)),
        (torch.ops.canon.select.default, (v, r, 1.5, "cosine", True, None, 1.0, "raw", "target", target, 2.0)),
        (
            torch.ops.canon.select_backward.default,
            (
                torch.randn(2, 4, generator=rng),
                None,
                torch.randn(2, 4, generator=rng),
                torch.tensor([0.5, 1.5]),
                v.detach(),
                r.detach(),
                torch.softmax(torch.randn(2, 4, generator=rng), -1),
                1.0,
                "cosine",
                True,
                None,
                1.0,
                "normalized",
                "target",
                target,
                2.0,
            ),
        ),  # fmt: skip
        (torch.ops.canon.contrastive_loss.default, (v, "normalized")),
        (torch.ops.canon.contrastive_loss.default, (v, "raw")),
        (torch.ops.canon.contrastive_loss_backward.default, (torch.tensor(1.0), v.detach(), "normalized")),
        (
            torch.ops.canon.select_transform.default,
            (
                torch.randn(2, 8, 6, generator=rng),
                r.detach(),
                x,
                tf.mats,
                tf.pull,
                tf.exact,
                tf.aligned,
                1.0,
                "cosine",
                "zeros",
                "bilinear",
            ),
        ),
    ]


@pytest.mark.parametrize("sample", range(len(_samples(torch.Generator().manual_seed(0)))))
@pytest.mark.parametrize("backend, dev", BACKENDS)
def test_opcheck_every_op(backend, dev, sample, rng):
    # one test per sample call, so that parallel workers share them (each takes seconds interpreted)
    op, args = _samples(rng)[sample]
    with canon.use_backend(backend):
        torch.library.opcheck(
            op,
            _on(dev, args),
            test_utils=(
                "test_schema",
                "test_autograd_registration",
                "test_faketensor",
                "test_aot_dispatch_dynamic",
            ),
        )


def test_calls_without_a_graph_skip_autograd_function_and_give_the_same_values(monkeypatch):
    """Eager calls that record no graph run the forward alone (no ``Function.apply``); with a graph they go
    through it. Either way the values are the same."""
    import canon
    from canon import ops

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 9, 9, generator=g)
    v, r = torch.randn(2, 8, 5, generator=g), torch.randn(5, generator=g)
    calls = {
        "orbit": lambda x, v, r: canon.orbit(x, "C8", size=7),
        "select": lambda x, v, r: canon.select(v, r).scores,
        "transform": lambda x, v, r: canon.transform(x, torch.tensor([1, 3]), "C8"),
        "contrastive_loss": lambda x, v, r: canon.losses.contrastive_loss(v),
        "select_canonicalize": lambda x, v, r: canon.select_canonicalize(x, v, r, "C8")[0],
    }
    with_graph = {}
    for name, fn in calls.items():
        xg, vg, rg = x.clone().requires_grad_(), v.clone().requires_grad_(), r.clone().requires_grad_()
        out = fn(xg, vg, rg)
        assert out.grad_fn is not None, name
        with_graph[name] = out.detach()

    def refuse(*args, **kwargs):
        raise AssertionError("autograd.Function.apply called for a call without a graph")

    monkeypatch.setattr(ops.Eager, "apply", refuse)  # the autograd.Function every op's eager path shares
    for name, fn in calls.items():
        with torch.no_grad():
            assert torch.equal(fn(x.clone().requires_grad_(), v, r), with_graph[name]), name
        assert torch.equal(fn(x, v, r), with_graph[name]), name  # no input requires a gradient


def test_forward_mode_ad_is_refused_clearly_not_answered_with_zero_tangents():
    """Dual tensors do not require grad, yet forward-mode AD and torch.func transforms must reach
    autograd.Function (which says it has no jvp) instead of the forward alone (a silent zero tangent)."""
    import canon

    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 8, 8, generator=g)
    v, r, tv = torch.randn(2, 4, 3, generator=g), torch.randn(3, generator=g), torch.randn(2, 4, 3, generator=g)
    calls = [
        lambda v: canon.select(v, r).scores,
        lambda v: canon.canonicalize(x, canon.select(v, r), "C4"),
        lambda v: canon.losses.contrastive_loss(v),
    ]
    for fn in calls:
        with pytest.raises(RuntimeError, match="jvp|forward AD|forward-mode|setup_context|vmap"):
            torch.func.jvp(fn, (v,), (tv,))
    with pytest.raises(RuntimeError, match="jvp|forward AD|forward-mode|setup_context"):
        torch.func.jvp(lambda x: canon.orbit(x, "C4"), (x,), (torch.rand_like(x),))


@pytest.mark.parametrize("route", ["eager", "registered ops"])
@pytest.mark.parametrize("where", ["after the block", "on another thread"])
def test_backward_runs_the_backend_of_its_forward(monkeypatch, where, route):
    """``use_backend`` is per thread and a backward runs later (on CUDA, on autograd's device thread):
    the backward must still run the backend its forward ran under, not the default in force then;
    on the eager path and through the registered ops (as compiled code runs them)."""
    import contextlib
    import threading
    import types

    from canon import backend, ops
    from canon import reference as ref

    ran = []
    spy = types.SimpleNamespace(orbit_backward=lambda *a, **k: ran.append("triton"))
    real = ref.orbit_backward_ref
    monkeypatch.setattr(ref, "orbit_backward_ref", lambda *a, **k: (ran.append("reference"), real(*a, **k))[1])
    monkeypatch.setattr(ops, "_triton", lambda: spy)
    monkeypatch.setattr(
        ops, "resolve_backend", lambda t: "reference" if backend.get_backend() == "auto" else backend.get_backend()
    )
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    with (
        canon.use_backend("reference"),
        ops.registered_ops() if route == "registered ops" else contextlib.nullcontext(),
    ):
        y = canon.orbit(x, "C8")
    monkeypatch.setattr(backend, "_default", "triton")  # the default now names the other backend
    if where == "after the block":
        y.sum().backward()
    else:
        t = threading.Thread(target=lambda: y.sum().backward())
        t.start()
        t.join()
    assert ran == ["reference"] and x.grad is not None


def test_a_torch_func_transform_leaves_no_wrapped_tensor_in_the_caches():
    """Tables first built inside a ``torch.func`` transform are functorch-wrapped tensors; cached, they
    made a later ``torch.export`` fail ("Cannot access storage of TensorWrapper"). No cache keeps them."""
    import canon
    from canon import geometry, plans

    wrapped = torch._C._functorch.is_functorch_wrapped_tensor

    def cached_tensors():
        out = []
        for cache in (plans._PLANS, geometry._TABLES):
            stack = list(cache.values())
            while stack:
                v = stack.pop()
                if isinstance(v, torch.Tensor):
                    out.append(v)
                elif isinstance(v, (tuple, list)):
                    stack.extend(v)
                elif hasattr(v, "_fields"):
                    stack.extend(tuple(v))
        return out

    x = torch.rand(2, 1, 11, 13)  # a size no other test uses: the tables are built inside the transform
    with pytest.raises(RuntimeError):
        torch.func.jvp(lambda x: canon.orbit(x, "C4"), (x,), (torch.rand_like(x),))
    assert not any(wrapped(t) for t in cached_tensors())
    model = canon.OrbitCanonicalizer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(11 * 13, 4)), "C4", dim=4)
    model.eval()(x)
    assert cached_tensors() and not any(wrapped(t) for t in cached_tensors())
    torch.export.export(model, (x,))  # with the tables of this size cached: a wrapped one failed here


@pytest.mark.parametrize("route", ["eager", "registered"])
def test_ops_keep_their_dtypes_inside_autocast(route, rng):
    """An autocast region around the ops changes nothing: values, gradients and dtypes are those outside it
    (without the guard, the CPU antialias product had no bfloat16 kernel and the loss was computed and
    returned in bfloat16)."""
    from canon.ops import registered_ops

    x = torch.rand(2, 3, 16, 16, generator=rng, requires_grad=True)
    v = torch.randn(2, 8, 6, generator=rng, requires_grad=True)

    def step():
        views = canon.orbit(x, "C8", size=8)  # shrinking views: antialiased by default
        loss = canon.losses.contrastive_loss(v) + views.square().mean()
        gx, gv = torch.autograd.grad(loss, (x, v))
        return views, loss, gx, gv

    with registered_ops() if route == "registered" else contextlib.nullcontext():
        expect = step()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = step()
    for name, a, b in zip(("views", "loss", "grad x", "grad v"), got, expect):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b), name
