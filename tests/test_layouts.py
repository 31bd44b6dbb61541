"""Every tensor argument, in every memory layout, gives the result of its contiguous copy (issue 19).

For each public op and each registered ``canon::`` op, and for each of its tensor arguments
(images, element indices, one-hots, vectors, reference, targets, noise, view and pull tables,
channel tables, gradients), the argument is laid out

* ``sliced``: every second row of a wider buffer (dim 0, step 2);
* ``column``: one column of a table with a trailing axis of 2 (every stride doubled, offset 1), for
  integer tables (indices, targets, channel tables: floats take the other strides);
* ``transposed``: the last two axes stored column-major;
* ``expanded``: stride 0 along dim 0 (one row repeated, as ``t[:1].expand``);
* ``offset``: a storage offset of 3 elements;
* ``channels_last``: 4-D tensors only;

with the memory around it poisoned (NaN for floats, an element index that would change the
answer for ints), and the op's outputs and input gradients are compared against the same call
on a contiguous copy of the same values. Both backends: the reference, and the Triton kernels
(interpreter here, compiled on a GPU with ``make test-gpu``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from conftest import KERNEL_DEVICES, LAYOUTS, NO_KERNEL_DEVICE, assert_close, relayout
from hypothesis import given, settings
from hypothesis import strategies as st

import canon
from canon.geometry import antialias_tables, channel_tables, view_tables
from canon.groups import as_group

NAN = float("nan")


@dataclass
class Case:
    """One op: ``make(device)`` gives its tensor arguments by name, ``call(**tensors)`` runs it.

    ``poison``: the value around int arguments (one that changes the answer when read instead);
    ``grads``: the float arguments whose gradients are compared (public ops only).
    """

    make: Callable[[torch.device], dict]
    call: Callable[..., object]
    poison: dict = field(default_factory=dict)
    grads: tuple = ()
    kernels: bool = True  # False: plain torch on every backend (run on one)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(dev, B=2, C=2, H=4, W=4, seed=0):
    return torch.rand(B, C, H, W, generator=_gen(seed)).to(dev)


def _vectors(dev, B=2, N=4, D=3, seed=1):
    g = _gen(seed)
    return {"vectors": torch.randn(B, N, D, generator=g).to(dev), "reference": torch.randn(D, generator=g).to(dev)}


def _index(dev, values=(1, 2)):
    return torch.tensor(values, dtype=torch.int64, device=dev)


def _onehot(dev, index, N):
    # a soft one-hot: its gradient (the mixture straight-through rule) depends on every entry
    return torch.nn.functional.one_hot(index.cpu(), N).double().add(0.1).to(torch.float32).to(dev)


def _selection(index, onehot):
    zeros = torch.zeros_like(onehot)
    return canon.Selection(zeros, zeros, index, onehot)


# ----------------------------------------------------------------------------- public ops
PUBLIC = {
    "orbit": Case(lambda d: {"x": _x(d)}, lambda x: canon.orbit(x, "C4"), grads=("x",)),
    # two views of a 0.8 crop: bilinear taps (the gradient of x does not read x: checked with "orbit");
    # antialiased views: the registered orbit_antialias cases below
    "orbit_bilinear": Case(
        lambda d: {"x": _x(d, H=4, W=5)}, lambda x: canon.orbit(x, "C2", size=3, crop_ratio=0.8, antialias=False)
    ),
    "select": Case(
        lambda d: _vectors(d),
        lambda vectors, reference: canon.select(vectors, reference),
        grads=("vectors", "reference"),
    ),
    "select_losses": Case(
        lambda d: {**_vectors(d), "prior_target": _index(d)},
        lambda vectors, reference, prior_target: canon.select_losses(vectors, reference, prior_target=prior_target),
        poison={"prior_target": 3},
        grads=("vectors", "reference"),
    ),
    "canonicalize_index": Case(
        lambda d: {"x": _x(d), "index": _index(d)},
        lambda x, index: canon.canonicalize(x, index, "C4"),
        poison={"index": 3},
        grads=("x",),
    ),
    "canonicalize_selection": Case(
        lambda d: {"x": _x(d), "index": _index(d), "onehot": _onehot(d, _index("cpu"), 4)},
        lambda x, index, onehot: canon.canonicalize(x, _selection(index, onehot), "C4"),
        poison={"index": 3},
        grads=("x", "onehot"),
    ),
    # C3: no element but the identity is a pixel permutation
    "canonicalize_bilinear": Case(
        lambda d: {"x": _x(d, H=4, W=5), "index": _index(d, (1, 2)), "onehot": _onehot(d, _index("cpu", (1, 2)), 3)},
        lambda x, index, onehot: canon.canonicalize(x, _selection(index, onehot), "C3"),
        poison={"index": 0},
        grads=("x", "onehot"),
    ),
    "select_canonicalize": Case(
        lambda d: {"x": _x(d), **_vectors(d)},
        lambda x, vectors, reference: canon.select_canonicalize(x, vectors, reference, "C4"),
        grads=("x",),
    ),
    "transform": Case(
        lambda d: {"x": _x(d), "element": _index(d)},
        lambda x, element: canon.transform(x, element, "C4"),
        poison={"element": 3},
        grads=("x",),
    ),
    "invert_scalar": Case(
        lambda d: {"y": _x(d), "index": _index(d), "onehot": _onehot(d, _index("cpu"), 4)},
        lambda y, index, onehot: canon.invert(y, _selection(index, onehot), "C4"),
        poison={"index": 3},
        grads=("y", "onehot"),
    ),
    "invert_regular": Case(
        lambda d: {"y": _x(d, C=4), "index": _index(d, (3, 2)), "onehot": _onehot(d, _index("cpu", (3, 2)), 4)},
        lambda y, index, onehot: canon.invert(y, _selection(index, onehot), "D2", kind="regular"),
        poison={"index": 1},
        grads=("y", "onehot"),
    ),
    "invert_points": Case(
        lambda d: {"points": torch.rand(2, 3, 2, generator=_gen(2)).mul(4).to(d), "index": _index(d)},
        lambda points, index: canon.invert_points(points, index, "C4", (5, 6)),
        poison={"index": 3},
        grads=("points",),
        kernels=False,
    ),
    "invert_boxes": Case(
        lambda d: {"boxes": torch.rand(2, 3, 4, generator=_gen(3)).mul(4).to(d), "index": _index(d)},
        lambda boxes, index: canon.invert_boxes(boxes, index, "C4", (5, 6)),
        poison={"index": 3},
        grads=("boxes",),
        kernels=False,
    ),
    "contrastive_loss": Case(
        lambda d: {"vectors": _vectors(d)["vectors"]},
        lambda vectors: canon.losses.contrastive_loss(vectors),
        grads=("vectors",),
    ),
    "prior_loss": Case(
        lambda d: {"scores": torch.randn(2, 4, generator=_gen(4)).to(d), "target": _index(d)},
        lambda scores, target: canon.losses.prior_loss(scores, target),
        poison={"target": 3},
        grads=("scores",),
        kernels=False,
    ),
}


# ----------------------------------------------------------------------------- registered ops
# Small tables keep the interpreter quick: C2 views of a 0.8 crop (two bilinear views, the pull
# adjoint), C3 transforms (bilinear, three candidate elements) and D2 regular features (a channel
# permutation per element).
def _tables(dev, group="C2", hw=(4, 5), out_hw=(3, 3), crop=0.8, inverse=False):
    return view_tables(as_group(group), hw, out_hw, crop, torch.device(dev), inverse)


def _c3(dev):
    return _tables(dev, "C3", (4, 5), (4, 5), 1.0)


def _d2(dev):
    t = _tables(dev, "D2", (4, 4), (4, 4), 1.0, inverse=True)
    return (t, *channel_tables(as_group("D2"), torch.device(dev)))


def _orbit_args(dev):
    t = _tables(dev)
    return {"x": _x(dev, H=4, W=5), "mats": t.mats.clone(), "pull": t.pull.clone()}


def _orbit_op(x, mats, pull):
    t = _tables("cpu")
    return torch.ops.canon.orbit(x, mats, pull, t.exact, t.aligned, 3, 3, "zeros", "bilinear", None, False)


def _orbit_backward_args(dev):
    t = _tables(dev)
    return {
        "grad": torch.randn(2, 2, 2, 3, 3, generator=_gen(5)).to(dev),
        "mats": t.mats.clone(),
        "pull": t.pull.clone(),
    }


def _orbit_backward_op(grad, mats, pull, backend):
    t = _tables("cpu")
    return torch.ops.canon.orbit_backward(
        grad, mats, pull, t.exact, t.aligned, 4, 5, "zeros", "bilinear", torch.float32, backend=backend
    )


def _antialias(dev):
    return antialias_tables(as_group("C2"), (4, 5), (3, 3), 0.8, torch.device(dev))


def _orbit_antialias_args(dev):
    t = _tables(dev)
    return {"x": _x(dev, H=4, W=5), "mats": t.mats.clone(), "pull": t.pull.clone(), "aa_norm": _antialias(dev).norm}


def _orbit_antialias_op(x, mats, pull, aa_norm):
    t, aa = _tables("cpu"), _antialias("cpu")
    return torch.ops.canon.orbit(
        x, mats, pull, t.exact, t.aligned, 3, 3, "border", "bilinear", None, False, aa_norm, aa.taps, aa.back_taps
    )


def _orbit_antialias_backward_args(dev):
    return {**_orbit_backward_args(dev), "aa_norm": _antialias(dev).norm}


def _orbit_antialias_backward_op(grad, mats, pull, aa_norm, backend):
    t, aa = _tables("cpu"), _antialias("cpu")
    return torch.ops.canon.orbit_backward(
        grad, mats, pull, t.exact, t.aligned, 4, 5, "zeros", "bilinear", torch.float32, aa_norm, aa.taps, aa.back_taps,
        backend,
    )  # fmt: skip


def _transform_args(dev):
    t = _c3(dev)
    return {"x": _x(dev, H=4, W=5), "index": _index(dev, (1, 2)), "mats": t.mats.clone()}


def _transform_op(x, index, mats):
    t = _c3(x.device)
    return torch.ops.canon.transform(x, None, index, mats, t.pull, t.exact, t.aligned, "zeros", "bilinear", None, None)


def _transform_regular_args(dev):
    t, perm, _ = _d2(dev)
    return {"x": _x(dev, C=4), "index": _index(dev, (3, 2)), "mats": t.mats.clone(), "chan_perm": perm.clone()}


def _transform_regular_op(x, index, mats, chan_perm):
    t, _, inv = _d2(x.device)
    return torch.ops.canon.transform(
        x, None, index, mats, t.pull, t.exact, t.aligned, "zeros", "bilinear", chan_perm, inv
    )


def _transform_backward_args(dev):
    t = _c3(dev)
    grad = torch.randn(2, 2, 4, 5, generator=_gen(6)).to(dev)
    x = _x(dev, H=4, W=5)
    return {"grad": grad, "x": x, "index": _index(dev, (1, 2)), "mats": t.mats.clone(), "pull": t.pull.clone()}


def _transform_backward_op(grad, x, index, mats, pull, backend):
    t = _c3(x.device)
    return torch.ops.canon.transform_backward(
        grad, x, index, mats, pull, t.exact, t.aligned, "zeros", "bilinear", True, True, None, None, None, backend
    )


def _transform_backward_regular_args(dev):
    t, perm, inv = _d2(dev)
    grad = torch.randn(2, 4, 4, 4, generator=_gen(7)).to(dev)
    return {"grad": grad, "index": _index(dev, (3, 2)), "chan_perm": perm.clone(), "chan_inv": inv.clone()}


def _transform_backward_regular_op(grad, index, chan_perm, chan_inv, backend):
    t, _, _ = _d2(grad.device)
    x = _x(grad.device, C=4)
    return torch.ops.canon.transform_backward(
        grad, x, index, t.mats, t.pull, t.exact, t.aligned, "zeros", "bilinear", True, True, chan_perm, chan_inv,
        None, backend,
    )  # fmt: skip


def _select_args(dev):
    noise = torch.randn(2, 4, generator=_gen(8)).to(dev)
    return {**_vectors(dev), "noise": noise, "target": _index(dev)}


def _select_op(vectors, reference, noise, target):
    return torch.ops.canon.select(
        vectors, reference, 2.0, "cosine", True, noise, 0.5, "normalized", "target", target, 3.0
    )


def _select_backward_args(dev):
    g = _gen(9)
    probs = torch.softmax(torch.randn(2, 4, generator=g), -1)
    grads = {k: torch.randn(2, 4, generator=g) for k in ("grad_scores", "grad_probs", "grad_onehot")}
    tensors = {**grads, "grad_losses": torch.randn(2, generator=g), "probs": probs, "target": _index("cpu")}
    return {**{k: v.to(dev) for k, v in tensors.items()}, **_vectors(dev)}


def _select_backward_op(grad_scores, grad_probs, grad_onehot, grad_losses, vectors, reference, probs, target, backend):
    return torch.ops.canon.select_backward(
        grad_scores, grad_probs, grad_onehot, grad_losses, vectors, reference, probs, 2.0, "cosine", True, None, 1.0,
        "normalized", "target", target, 3.0, backend,
    )  # fmt: skip


def _contrastive_backward_args(dev):
    return {"grad": torch.tensor(1.5, device=dev), "vectors": _vectors(dev)["vectors"]}


def _select_transform_args(dev):
    t = _c3(dev)
    return {**_vectors(dev, N=3), "x": _x(dev, H=4, W=5), "mats": t.mats.clone()}


def _select_transform_op(vectors, reference, x, mats):
    t = _c3(x.device)
    return torch.ops.canon.select_transform(
        vectors, reference, x, mats, t.pull, t.exact, t.aligned, 1.0, "cosine", "zeros", "bilinear"
    )


# element indices and targets: 0 or 3 is another valid element (C3 / D2 / four views); channel tables: row 0
TABLE_POISON = {"index": 0, "target": 3, "chan_perm": 0, "chan_inv": 0}
REGISTERED = {
    "orbit": Case(_orbit_args, _orbit_op),
    "orbit_backward": Case(_orbit_backward_args, _orbit_backward_op),
    "orbit_antialias": Case(_orbit_antialias_args, _orbit_antialias_op),
    "orbit_antialias_backward": Case(_orbit_antialias_backward_args, _orbit_antialias_backward_op),
    "transform": Case(_transform_args, _transform_op, TABLE_POISON),
    "transform_regular": Case(_transform_regular_args, _transform_regular_op, TABLE_POISON),
    "transform_backward": Case(_transform_backward_args, _transform_backward_op, TABLE_POISON),
    "transform_backward_regular": Case(_transform_backward_regular_args, _transform_backward_regular_op, TABLE_POISON),
    "select": Case(_select_args, _select_op, TABLE_POISON),
    "select_backward": Case(_select_backward_args, _select_backward_op, TABLE_POISON),
    "contrastive_loss": Case(
        lambda d: {"vectors": _vectors(d)["vectors"]}, lambda vectors: torch.ops.canon.contrastive_loss(vectors, "raw")
    ),
    "contrastive_loss_backward": Case(
        _contrastive_backward_args,
        lambda grad, vectors, backend: torch.ops.canon.contrastive_loss_backward(grad, vectors, "normalized", backend),
    ),
    "select_transform": Case(_select_transform_args, _select_transform_op),
}


# ----------------------------------------------------------------------------- the matrix
BACKENDS = [pytest.param("reference", "cpu", id="reference")] + (
    [pytest.param("triton", d, id=f"triton-{d}") for d in KERNEL_DEVICES]
    or [pytest.param("triton", "none", id="triton", marks=pytest.mark.skip(reason=NO_KERNEL_DEVICE))]
)


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    flat = []
    for o in out:
        flat += _outputs(o)
    return flat


def _run(case: Case, tensors: dict, backend: str):
    """(outputs, gradients of ``case.grads``) of one call, with a fixed cotangent per float output."""
    args = {k: (v.requires_grad_() if k in case.grads else v) for k, v in tensors.items()}
    if "backend" in case.call.__code__.co_varnames:
        args["backend"] = backend
    with canon.use_backend(backend):
        outs = _outputs(case.call(**args))
        grads = []
        if case.grads:
            g = _gen(42)
            floats = [o for o in outs if o.is_floating_point() and o.requires_grad]
            total = sum((o * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in floats)
            grads = list(torch.autograd.grad(total, [args[k] for k in case.grads], allow_unused=True))
    return [o.detach() for o in outs], grads


_BASE: dict = {}


def _base_run(case: Case, backend: str, dev: str):
    """The contiguous call of ``case`` (once per case and backend: every argument's layouts compare with it)."""
    key = (id(case), backend, dev)
    if key not in _BASE:
        _BASE[key] = _run(case, case.make(torch.device(dev)), backend)
    return _BASE[key]


def _compare(case: Case, name: str, backend: str, dev: str):
    base = case.make(torch.device(dev))
    tried = 0
    for layout in LAYOUTS:
        if layout == "column" and base[name].is_floating_point():
            continue  # a column of a wider table: index tables (floats' strides: sliced, transposed, channels_last)
        arranged = relayout(base[name], layout, case.poison.get(name, NAN))
        if arranged is None:
            continue
        tried += 1
        strided, dense = arranged
        if layout == "expanded":  # other values: its own contiguous call
            expected = _run(case, {**case.make(torch.device(dev)), name: dense}, backend)
        else:
            expected = _base_run(case, backend, dev)
        actual = _run(case, {**case.make(torch.device(dev)), name: strided.detach()}, backend)
        where = f"{name} {layout} (strides {strided.stride()}, offset {strided.storage_offset()}), {backend}:"
        for i, (a, e) in enumerate(zip(actual[0], expected[0], strict=True)):
            if e.is_floating_point():
                assert_close(a, e, msg=f"{where} output {i}")
            else:
                assert torch.equal(a.cpu(), e.cpu()), f"{where} output {i}: {a.tolist()} != {e.tolist()}"
        for k, a, e in zip(case.grads, actual[1], expected[1], strict=True):
            assert (a is None) == (e is None), f"{where} gradient of {k}"
            if e is not None:
                assert_close(a, e, msg=f"{where} gradient of {k}")
    assert tried >= (1 if base[name].dim() == 0 else 3), f"only {tried} layouts apply to {name}"


def _params(cases: dict) -> list:
    """(op, argument, backend, device) for every tensor argument; ops without kernels on the reference only."""
    out = []
    for op, case in cases.items():
        for name in case.make(torch.device("cpu")):
            for b in BACKENDS if case.kernels else BACKENDS[:1]:
                out.append(pytest.param(op, name, *b.values, id=f"{op}-{name}-{b.id}", marks=b.marks))
    return out


@pytest.mark.parametrize("op,name,backend,dev", _params(PUBLIC))
def test_public_op_argument_layouts(op, name, backend, dev):
    _compare(PUBLIC[op], name, backend, dev)


@pytest.mark.parametrize("op,name,backend,dev", _params(REGISTERED))
def test_registered_op_argument_layouts(op, name, backend, dev):
    _compare(REGISTERED[op], name, backend, dev)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_relayout_keeps_values_and_changes_memory(layout):
    # the matrix above is only as good as this helper: same values, really another layout
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    strided, dense = relayout(t, layout, NAN)
    assert torch.equal(strided, dense) and dense.is_contiguous()
    assert not strided.is_contiguous() or strided.storage_offset() == 3
    if layout != "expanded":
        assert torch.equal(strided, t)
    i = relayout(torch.tensor([1, 2]), layout, 3)
    if i is not None:
        assert torch.equal(i[0], i[1])


# ----------------------------------------------------------------------------- drawn layouts, Triton = reference


@st.composite
def _laid_out(draw, t: torch.Tensor, poison, label: str):
    layout = draw(st.sampled_from(("contiguous", *LAYOUTS)), label=label)
    arranged = relayout(t, layout, poison) if layout != "contiguous" else None
    return t if arranged is None else arranged[0]


@st.composite
def _drawn_call(draw, dev: str):
    """An op with valid arguments of drawn sizes on ``dev``, every tensor argument in a drawn layout."""
    g = as_group(draw(st.sampled_from(["C2", "C3", "C4", "D2", "D4"]), label="group"))
    N = g.order
    B, C = draw(st.integers(1, 3), label="B"), draw(st.integers(1, 3), label="C")
    H, W = draw(st.integers(1, 5), label="H"), draw(st.integers(1, 5), label="W")
    seed = draw(st.integers(0, 2**16), label="seed")
    gen = torch.Generator().manual_seed(seed)
    op = draw(st.sampled_from(["orbit", "select_losses", "canonicalize", "transform", "invert", "select_canonicalize"]))
    x = draw(_laid_out(torch.rand(B, C * (N if op == "invert" else 1), H, W, generator=gen).to(dev), NAN, "x layout"))
    index = draw(
        _laid_out(torch.randint(0, N, (B,), generator=gen).to(dev), draw(st.integers(0, N - 1)), "index layout")
    )
    v = draw(_laid_out(torch.randn(B, N, 3, generator=gen).to(dev), NAN, "vectors layout"))
    r = draw(_laid_out(torch.randn(3, generator=gen).to(dev), NAN, "reference layout"))
    onehot = draw(_laid_out(torch.rand(B, N, generator=gen).to(dev), NAN, "onehot layout"))
    sel = canon.Selection(onehot, onehot, index, onehot)
    padding = draw(st.sampled_from(["zeros", "border", "reflection"]), label="padding")
    size, crop = draw(st.integers(1, 4), label="size"), draw(st.sampled_from([1.0, 0.7]), label="crop")
    antialias = draw(st.booleans(), label="antialias")
    kind = draw(st.sampled_from(["scalar", "regular"]), label="kind")
    calls = {
        "orbit": lambda: canon.orbit(x, g, size, crop, padding, antialias=antialias),
        "select_losses": lambda: canon.select_losses(v, r, prior_target=index),
        "canonicalize": lambda: canon.canonicalize(x, sel, g, padding),
        "transform": lambda: canon.transform(x, index, g, padding),
        "invert": lambda: canon.invert(x, sel, g, kind),
        "select_canonicalize": lambda: canon.select_canonicalize(x, v, r, g, padding=padding),
    }
    return op, calls[op]


@pytest.mark.parametrize(
    "dev", KERNEL_DEVICES or [pytest.param("none", marks=pytest.mark.skip(reason=NO_KERNEL_DEVICE))]
)
@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_triton_equals_reference_for_drawn_layouts(dev, data):
    op, call = data.draw(_drawn_call(dev), label="call")
    with canon.use_backend("reference"):
        expected = _outputs(call())
    with canon.use_backend("triton"):
        actual = _outputs(call())
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if e.is_floating_point():
            assert_close(a, e, msg=f"{op} output {i}")
        else:
            assert torch.equal(a, e), f"{op} output {i}"
