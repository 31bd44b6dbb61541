"""Property test over the public functional API's arguments (issue 12).

Hypothesis draws arguments that are valid or wrong in one or several ways (ranks, dtypes,
sizes, group specs, crop ratios, β, selections, image sizes). Every call must either

* return the right result, checked against an independent computation (``grid_sample``
  with the view matrix of docs/spec.md §3, ``torch.rot90``/``torch.flip`` for exact elements,
  cosine similarity and softmax by hand, the affine point map) or an invariant, or
* raise ``ValueError``/``TypeError`` whose message starts with the function's name and
  names one of the arguments that were drawn wrong.

A valid call that raises, an invalid call that returns, and any other exception fail.
Every tensor argument is drawn in a memory layout too (contiguous, sliced, a column, transposed,
expanded, offset, channels_last). Reference backend, tiny tensors, bounded examples.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import LAYOUTS, TOLERANCES, relayout, view_ref_aa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import canon
from canon.groups import Group, as_group

pytestmark = pytest.mark.usefixtures("reference_backend")
SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None
)

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
GROUPS = ("C1", "C2", "C3", "C4", "C8", "D1", "D2", "D4", "d3", "c6")
# how a message may name each argument
NAMES = {
    "x": r"\bx\b",
    "y": r"\by\b",
    "group": r"\bgroup\b",
    "size": r"\bsize\b",
    "crop_ratio": r"\bcrop_ratio\b",
    "padding": r"\bpadding\b",
    "interpolation": r"\binterpolation\b",
    "out_dtype": r"\bout_dtype\b",
    "antialias": r"\bantialias\b",
    "vectors": r"\bvectors\b",
    "reference": r"\breference\b",
    "beta": r"\bbeta\b",
    "tau": r"\btau\b",
    "score": r"\bscore\b",
    "selection": r"\bselection\b|\belement ind",
    "element": r"\belement\b|\belement ind",
    "kind": r"\bkind\b",
    "points": r"\bpoints\b",
    "boxes": r"\bboxes\b",
    "image_size": r"\bimage_size\b",
}


@pytest.fixture
def reference_backend():
    with canon.use_backend("reference"):
        yield


def outcome(fn: str, call, bad: set[str], verify) -> None:
    """Run ``call``; a refusal must name ``fn`` and one of ``bad``, a result must pass ``verify``."""
    try:
        out = call()
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert bad, f"{fn} refused valid arguments: {type(e).__name__}: {msg}"
        assert msg.startswith(f"{fn}: "), f"message does not name {fn}: {msg}"
        assert any(re.search(NAMES[b], msg) for b in bad), (
            f"message names none of the wrong arguments {sorted(bad)}: {msg}"
        )
        return
    assert not bad, f"{fn} accepted wrong {sorted(bad)}"
    verify(out)


def tol(dtype: torch.dtype) -> dict:
    # coordinates are float32 (canon.geometry): ~1e-6 px on values in [0, 1]
    r, a = TOLERANCES[dtype]
    return {"rtol": max(r, 1e-5), "atol": max(a, 2e-5)}


# -- strategies: every argument has a right and a wrong strategy ------------------------------
def wrong_set(data, names: list[str]) -> set[str]:
    """Which arguments to draw wrong: none (half the examples), exactly one, or several."""
    mode = data.draw(st.sampled_from(["none", "none", "one", "several"]), label="mode")
    if mode == "none":
        return set()
    if mode == "one":
        return {data.draw(st.sampled_from(names), label="wrong")}
    return set(data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=len(names), unique=True), label="wrong"))


def draw_args(data, wrong: set[str], **strategies) -> dict:
    """``name=(right, wrong)`` strategies → drawn values, wrong where ``name in wrong``."""
    return {k: data.draw(bad if k in wrong else good, label=k) for k, (good, bad) in strategies.items()}


@st.composite
def laid_out(draw, t, label: str = "layout"):
    """``t`` as drawn: contiguous or in one of ``conftest.LAYOUTS`` (a slice of a wider buffer, a
    column, transposed, expanded, with a storage offset, channels_last), for every tensor argument."""
    if not isinstance(t, torch.Tensor):
        return t
    layout = draw(st.sampled_from(("contiguous", *LAYOUTS)), label=label)
    arranged = relayout(t, layout, float("nan") if t.is_floating_point() else 0) if layout != "contiguous" else None
    return t if arranged is None else arranged[0]


@st.composite
def images(draw, wrong: bool = False):
    """A small float image batch; wrong: in rank, dtype, type or emptiness."""
    B, C = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(FLOATS))
    x = torch.rand(B, C, H, W, generator=generator(draw)).to(dtype)
    fault = draw(st.sampled_from(["rank3", "rank5", "int", "numpy", "empty_batch", "empty_hw"])) if wrong else None
    if fault == "rank3":
        x = x[0]
    elif fault == "rank5":
        x = x[None]
    elif fault == "int":
        x = (x * 10).to(torch.int64)
    elif fault == "numpy":
        x = x.float().numpy()
    elif fault == "empty_batch":
        x = x[:0]
    elif fault == "empty_hw":
        x = x[..., :0, :]
    return draw(laid_out(x))


IMAGES = (images(), images(wrong=True))
GROUP_SPECS = (
    st.one_of(st.sampled_from(GROUPS), st.builds(Group, st.integers(1, 8), st.booleans())),
    st.sampled_from(["Q4", "C0", "D-2", "C4.5", "", "4", 4, None, ("C", 4)]),
)
_RATIO = st.floats(0.05, 1.0)
_BAD_RATIO = st.sampled_from([0.0, -0.5, 1.5, float("nan"), float("inf"), "0.5", True, (0.5, 0.5, 0.5)])
CROP_RATIOS = (
    st.one_of(st.just(1.0), _RATIO, st.tuples(_RATIO, _RATIO)),
    st.one_of(_BAD_RATIO, st.tuples(_RATIO, _BAD_RATIO)),
)
VIEW_SIZES = (
    st.one_of(st.none(), st.integers(1, 6), st.tuples(st.integers(1, 6), st.integers(1, 6))),
    st.sampled_from([0, -2, (3, 0), 2.5, True, (3, 3, 3), "4"]),
)
POSITIVES = (st.floats(1e-3, 1e3), st.sampled_from([0, -1.0, float("nan"), float("inf"), "1", True, None]))
PADDINGS = (st.sampled_from(["zeros", "border", "reflection"]), st.sampled_from(["wrap", None, 3]))
INTERPOLATIONS = (st.sampled_from(["bilinear", "nearest"]), st.sampled_from(["bicubic", ""]))


def generator(draw) -> torch.Generator:
    """A generator seeded from the example, so that a replayed example draws the same tensors."""
    return torch.Generator().manual_seed(draw(st.integers(0, 2**16), label="seed"))


def n_of(x) -> int:
    """The batch size a right selection needs for ``x`` (2 when ``x`` has none)."""
    return x.shape[0] if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] else 2


@st.composite
def indices(draw, B: int, N: int, wrong: bool = False):
    """Element indices (B,); wrong: in dtype, shape, range or type."""
    idx = torch.tensor(
        draw(st.lists(st.integers(0, N - 1), min_size=B, max_size=B)),
        dtype=draw(st.sampled_from([torch.int64, torch.int32])),
    )
    fault = draw(st.sampled_from(["float", "shape", "short", "negative", "too_big", "list"])) if wrong else None
    if fault == "float":
        idx = idx.float()
    elif fault == "shape":
        idx = idx[None]
    elif fault == "short":
        idx = idx[:-1]
    elif fault == "negative":
        idx = idx.clone()
        idx[0] = -1
    elif fault == "too_big":
        idx = idx.clone()
        idx[-1] = N
    elif fault == "list":
        idx = idx.tolist()
    return draw(laid_out(idx, "index layout"))


@st.composite
def selections(draw, B: int, N: int, wrong: bool = False):
    """A Selection from canon.select or element indices; wrong: another B or N, or bad indices."""
    if draw(st.booleans()):
        return draw(indices(B, N, wrong))
    b, n = draw(st.sampled_from([(B + 1, N), (B, N + 1)])) if wrong else (B, N)
    gen = generator(draw)
    sel = canon.select(torch.randn(b, n, 3, generator=gen), torch.randn(3, generator=gen))
    return sel._replace(
        index=draw(laid_out(sel.index, "index layout")), onehot=draw(laid_out(sel.onehot, "onehot layout"))
    )


# -- independent computations -----------------------------------------------------------
def view_ref(x: torch.Tensor, g: Group, out_hw, crop, padding: str, interpolation: str = "bilinear") -> torch.Tensor:
    """docs/spec.md §3 by grid_sample: output (i, j) samples c_in + A_g⁻¹·diag(rx·W/w, ry·H/h)·((j, i) − c_out);
    (B, N, C, h, w) in float64."""
    B, C, H, W = x.shape
    h, w = out_hw
    ry, rx = crop if isinstance(crop, tuple) else (crop, crop)
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    offs = torch.stack([(jj - (w - 1) / 2) * rx * W / w, (ii - (h - 1) / 2) * ry * H / h])  # (2, h, w): (u, v)
    views = []
    for e in range(g.order):
        inv = torch.linalg.inv(torch.tensor(g.matrix(e), dtype=torch.float64))
        u, v = torch.einsum("ab,bhw->ahw", inv, offs)
        u, v = u + (W - 1) / 2, v + (H - 1) / 2
        grid = torch.stack([(2 * u + 1) / W - 1, (2 * v + 1) / H - 1], -1)[None].expand(B, h, w, 2)
        views.append(F.grid_sample(x.double(), grid, mode=interpolation, padding_mode=padding, align_corners=False))
    return torch.stack(views, 1)


def exact_ref(x: torch.Tensor, g: Group, e: int) -> torch.Tensor | None:
    """T_e x by rot90/flip when e is a quarter turn (with or without the flip) of a square image."""
    k, r = g.element(e)
    if (4 * k) % g.n or x.shape[-1] != x.shape[-2]:
        return None
    return torch.rot90(torch.flip(x, dims=(-1,)) if r else x, 4 * k // g.n, dims=(-2, -1))


def check_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), **tol(dtype))


# -- orbit -----------------------------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_orbit(data):
    wrong = wrong_set(data, ["x", "size", "crop_ratio", "padding", "interpolation", "out_dtype", "antialias"])
    a = draw_args(
        data,
        wrong,
        x=IMAGES,
        group=(GROUP_SPECS[0], GROUP_SPECS[0]),  # wrong specs: test_bad_group_spec_names_the_function
        size=VIEW_SIZES,
        crop_ratio=CROP_RATIOS,
        padding=PADDINGS,
        interpolation=INTERPOLATIONS,
        out_dtype=(st.sampled_from([None, torch.float32, torch.float64]), st.sampled_from([torch.int32, "float32"])),
        antialias=(st.booleans(), st.sampled_from(["yes", 1, None])),
    )
    x, sz, cr, pad, mode, od = a["x"], a["size"], a["crop_ratio"], a["padding"], a["interpolation"], a["out_dtype"]
    aa = a["antialias"]

    def verify(views):
        g = as_group(a["group"])
        B, C, H, W = x.shape
        h, w = (H, W) if sz is None else (sz, sz) if isinstance(sz, int) else sz
        assert views.shape == (B, g.order, C, h, w) and views.dtype == (od or x.dtype)
        ry, rx = cr if isinstance(cr, tuple) else (cr, cr)
        shrinks = max(rx * W / w, ry * H / h) > 1.0 + 1e-9
        if mode == "bilinear" and aa and shrinks:
            check_close(views, view_ref_aa(x, g, (h, w), cr, pad), x.dtype)
        elif mode == "bilinear":
            check_close(views, view_ref(x, g, (h, w), cr, pad), x.dtype)
        else:  # nearest: every value is an input pixel, or 0 where zeros padding applies
            allowed = torch.cat([x.double().flatten(), torch.zeros(1, dtype=torch.float64)])
            assert torch.isin(views.to(x.dtype).double(), allowed).all()
        if (h, w) == (H, W) and cr in (1.0, (1.0, 1.0)):
            for e in range(g.order):
                ref = exact_ref(x, g, e)
                if ref is not None:
                    assert torch.equal(views[:, e], ref.to(views.dtype)), (
                        f"element {e} is not an exact pixel permutation"
                    )

    outcome("canon.orbit", lambda: canon.orbit(x, a["group"], sz, cr, pad, mode, od, antialias=aa), wrong, verify)


# -- select ----------------------------------------------------------------------------
@st.composite
def vectors_and_reference(draw, wrong: str | None):
    B, N, D = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 5))
    dtype = draw(st.sampled_from(FLOATS))
    gen = generator(draw)
    v, ref = torch.randn(B, N, D, generator=gen).to(dtype), torch.randn(D, generator=gen).to(dtype)
    if wrong == "vectors":
        fault = draw(st.sampled_from(["rank", "int", "empty"]))
        v = v[0] if fault == "rank" else v.long() if fault == "int" else v[:, :0]
    elif wrong == "reference":
        fault = draw(st.sampled_from(["length", "rank", "int"]))
        ref = (
            torch.randn(D + 1, generator=gen).to(dtype)
            if fault == "length"
            else ref[None]
            if fault == "rank"
            else ref.long()
        )
    return draw(laid_out(v, "vectors layout")), draw(laid_out(ref, "reference layout"))


@SETTINGS
@given(data=st.data(), straight=st.booleans())
def test_select(data, straight):
    wrong = wrong_set(data, ["vectors", "reference", "beta", "tau", "score"])
    tensor_fault = (
        data.draw(st.sampled_from(sorted(wrong & {"vectors", "reference"})))
        if wrong & {"vectors", "reference"}
        else None
    )
    vectors, reference = data.draw(vectors_and_reference(tensor_fault), label="tensors")
    wrong = (wrong - {"vectors", "reference"}) | ({tensor_fault} if tensor_fault else set())
    a = draw_args(
        data,
        wrong,
        beta=POSITIVES,
        tau=POSITIVES,
        score=(st.sampled_from(["cosine", "dot"]), st.sampled_from(["l2", None])),
    )
    b, sc = a["beta"], a["score"]
    bad = wrong | (
        {"vectors"} if tensor_fault == "reference" else set()
    )  # a length mismatch may be reported from either side

    def verify(sel):
        B, N, _ = vectors.shape
        v, ref = vectors.double(), reference.double()
        s = F.cosine_similarity(v, ref.expand_as(v), dim=-1) if sc == "cosine" else v @ ref
        dtype = vectors.dtype
        check_close(sel.scores, s, dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32)
        assert sel.index.dtype == torch.int64 and sel.index.shape == (B,)
        top = sel.scores.max(-1, keepdim=True).values  # the index holds the lowest row maximum
        assert torch.equal(sel.index, (sel.scores == top).int().argmax(-1))
        check_close(sel.probs, torch.softmax(b * sel.scores.double(), -1), dtype)
        check_close(
            sel.onehot, F.one_hot(sel.index, N).double(), dtype
        )  # straight-through: forward value is the one-hot

    outcome("canon.select", lambda: canon.select(vectors, reference, b, sc, straight, tau=a["tau"]), bad, verify)


# -- canonicalize, transform, invert ------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_canonicalize(data):
    wrong = wrong_set(data, ["x", "selection", "padding"])
    a = draw_args(data, wrong, x=IMAGES, group=(GROUP_SPECS[0],) * 2, padding=PADDINGS)
    x, pad, g = a["x"], a["padding"], as_group(a["group"])
    B = n_of(x)
    sel = data.draw(selections(B, g.order, "selection" in wrong), label="selection")

    def verify(xc):
        idx = sel.index if isinstance(sel, canon.Selection) else sel
        assert xc.shape == x.shape and xc.dtype == x.dtype
        expected = torch.stack([view_ref(x[b : b + 1], g, x.shape[-2:], 1.0, pad)[0, int(idx[b])] for b in range(B)])
        check_close(xc, expected, x.dtype)
        assert torch.equal(xc, canon.transform(x, idx, g, pad))  # the chosen transform, exactly

    outcome("canon.canonicalize", lambda: canon.canonicalize(x, sel, g, pad), wrong, verify)


@SETTINGS
@given(data=st.data())
def test_transform(data):
    wrong = wrong_set(data, ["x", "element", "interpolation"])
    a = draw_args(data, wrong, x=IMAGES, group=(GROUP_SPECS[0],) * 2, interpolation=INTERPOLATIONS)
    x, mode, g = a["x"], a["interpolation"], as_group(a["group"])
    B = n_of(x)
    if data.draw(st.booleans(), label="tensor element"):
        element = data.draw(indices(B, g.order, "element" in wrong), label="element")
    else:
        element = data.draw(
            st.sampled_from([g.order, -1, True, 1.0]) if "element" in wrong else st.integers(0, g.order - 1),
            label="element",
        )

    def verify(out):
        idx = torch.full((B,), element) if isinstance(element, int) else element
        assert out.shape == x.shape and out.dtype == x.dtype
        for b in range(B):
            e = int(idx[b])
            ref = exact_ref(x[b : b + 1], g, e)
            if ref is not None:
                assert torch.equal(out[b : b + 1], ref)
            elif mode == "bilinear":
                check_close(out[b : b + 1], view_ref(x[b : b + 1], g, x.shape[-2:], 1.0, "zeros")[:, e], x.dtype)
        if isinstance(element, int) and element == 0:
            assert torch.equal(out, x)

    outcome("canon.transform", lambda: canon.transform(x, element, g, "zeros", mode), wrong, verify)


@SETTINGS
@given(data=st.data())
def test_invert(data):
    wrong = wrong_set(data, ["y", "selection", "kind"])
    a = draw_args(
        data,
        wrong,
        y=IMAGES,
        group=(GROUP_SPECS[0],) * 2,
        kind=(st.sampled_from(["scalar", "regular"]), st.sampled_from(["vector", 0])),
    )
    y, k, g = a["y"], a["kind"], as_group(a["group"])
    if k == "regular" and "y" not in wrong:  # regular features: channels grouped as (K, N)
        y = torch.rand(
            y.shape[0], g.order * data.draw(st.integers(1, 2)), *y.shape[-2:], generator=generator(data.draw)
        ).to(y.dtype)
        if g.order > 1 and data.draw(st.booleans(), label="indivisible channels"):
            y = y[:, 1:]
            wrong = wrong | {"kind"}
        y = data.draw(laid_out(y))
    B = n_of(y)
    sel = data.draw(selections(B, g.order, "selection" in wrong), label="selection")

    def verify(out):
        idx = sel.index if isinstance(sel, canon.Selection) else sel
        assert out.shape == y.shape and out.dtype == y.dtype
        for b in range(B):
            e = int(idx[b])
            yb = y[b : b + 1]
            if k == "regular":  # out[:, k, h] = T_e⁻¹ y[:, k, e·h]
                K = y.shape[1] // g.order
                perm = [g.compose(e, h) for h in range(g.order)]
                yb = yb.reshape(1, K, g.order, *y.shape[-2:])[:, :, perm].reshape(yb.shape)
            check_close(out[b : b + 1], view_ref(yb, g, y.shape[-2:], 1.0, "zeros")[:, g.inverse(e)], y.dtype)
        if (
            k == "scalar" and y.shape[-1] == y.shape[-2] and g.all_exact
        ):  # exact groups: inversion undoes canonicalization
            assert torch.equal(canon.invert(canon.canonicalize(y, idx, g), idx, g), y)

    outcome("canon.invert", lambda: canon.invert(y, sel, g, k), wrong, verify)


# -- points and boxes -------------------------------------------------------------------
IMAGE_SIZES = (
    st.one_of(
        st.integers(1, 9), st.tuples(st.integers(1, 9), st.integers(1, 9)), st.builds(np.int64, st.integers(1, 9))
    ),
    st.sampled_from([0, -3, (4, 0), (0, 4), (4,), (4, 4, 4), 4.0, True, "8", None]),
)


@st.composite
def coordinates(draw, B: int, nd: int, wrong: bool = False):
    t = (
        torch.rand(
            B,
            draw(st.integers(1, 4)),
            nd,
            generator=generator(draw),
            dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        )
        * 8
    )
    fault = draw(st.sampled_from(["last", "rank", "int"])) if wrong else None
    t = t[..., :-1] if fault == "last" else t[0] if fault == "rank" else t.long() if fault == "int" else t
    return draw(laid_out(t))


def _affine_back(p: torch.Tensor, g: Group, idx: torch.Tensor, centre: tuple[float, float]) -> torch.Tensor:
    """q = c + A_e⁻¹ (p − c) for every sample's element: where a point of the canonical image came from."""
    c = torch.tensor(centre, dtype=torch.float64)
    out = []
    for b in range(p.shape[0]):
        inv = torch.linalg.inv(torch.tensor(g.matrix(int(idx[b])), dtype=torch.float64))
        out.append((p[b].double() - c) @ inv.T + c)
    return torch.stack(out)


@SETTINGS
@given(data=st.data(), boxes=st.booleans(), B=st.integers(1, 3))
def test_invert_points_and_boxes(data, boxes, B):
    name, nd = ("boxes", 4) if boxes else ("points", 2)
    fn = canon.invert_boxes if boxes else canon.invert_points
    wrong = wrong_set(data, [name, "selection", "group", "image_size"])
    a = draw_args(data, wrong, group=GROUP_SPECS, image_size=IMAGE_SIZES)
    group, sz = a["group"], a["image_size"]
    t = data.draw(coordinates(B, nd, name in wrong), label=name)
    N = 2 if "group" in wrong else as_group(group).order
    sel = data.draw(selections(B, N, "selection" in wrong), label="selection")

    def verify(out):
        g = as_group(group)
        idx = sel.index if isinstance(sel, canon.Selection) else sel
        H, W = sz if isinstance(sz, tuple) else (int(sz), int(sz))
        assert out.shape == t.shape and out.dtype == t.dtype
        if not boxes:
            expected = _affine_back(t, g, idx, ((W - 1) / 2, (H - 1) / 2))  # pixel centres
        else:  # edge coordinates: the box enclosing the four moved corners
            n = t.shape[1]
            corners = t[..., [0, 1, 2, 1, 0, 3, 2, 3]].reshape(B, n * 4, 2)
            moved = _affine_back(corners, g, idx, (W / 2, H / 2)).reshape(B, n, 4, 2)
            expected = torch.cat([moved.min(2).values, moved.max(2).values], -1)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)

    outcome(f"canon.{fn.__name__}", lambda: fn(t, sel, group, sz), wrong, verify)


# -- group specs in the other functions -----------------------------------------------------
@pytest.mark.parametrize(
    "fn, call",
    [
        ("canon.orbit", lambda g: canon.orbit(torch.rand(1, 1, 4, 4), g)),
        ("canon.canonicalize", lambda g: canon.canonicalize(torch.rand(1, 1, 4, 4), torch.tensor([0]), g)),
        ("canon.transform", lambda g: canon.transform(torch.rand(1, 1, 4, 4), 0, g)),
        ("canon.invert", lambda g: canon.invert(torch.rand(1, 1, 4, 4), torch.tensor([0]), g)),
    ],
)
@pytest.mark.parametrize("spec", ["Q4", 4])
def test_bad_group_spec_names_the_function(fn, call, spec):
    outcome(fn, lambda: call(spec), {"group"}, lambda out: None)


def test_the_independent_view_matches_rot90():
    # the check above is only as good as view_ref: it reproduces a quarter turn and a flip exactly
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    v = view_ref(x, as_group("D4"), (5, 5), 1.0, "zeros")
    assert torch.allclose(v[:, 1], torch.rot90(x, 1, dims=(-2, -1)), atol=1e-12)
    assert torch.allclose(v[:, 4], torch.flip(x, dims=(-1,)), atol=1e-12)
    assert math.isclose(float(view_ref(torch.ones(1, 1, 4, 4), as_group("C8"), (3, 3), 0.5, "border").min()), 1.0)
