"""Antialiased views (issue 21, item 3): views that shrink the input are sampled with torchvision's
antialiasing filter, rotated with the view; views that do not shrink are untouched.

Checked against: the filter's definition computed brute force in float64 (``conftest.view_ref_aa``);
torchvision's antialiased resize (``F.interpolate(..., antialias=True)``, what ``transforms.Resize``
runs on tensors) for views without rotation; a pattern finer than the view's pixels, which must
average out instead of folding into the view; the Triton kernels (interpreter here, compiled on a
GPU) against the reference, outputs poisoned, gradients in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, kernel_device, to_cpu, view_ref_aa

import canon
from canon import oracle
from canon import reference as ref
from canon.geometry import antialias_tables, view_tables
from canon.groups import as_group

NAN = float("nan")


def _tables(group, in_hw, out_hw, crop=1.0, dev="cpu"):
    g = as_group(group)
    dev = torch.device(dev)
    return view_tables(g, in_hw, out_hw, crop, dev), antialias_tables(g, in_hw, out_hw, crop, dev)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize(
    "group,in_hw,out_hw,crop",
    [("C8", (9, 11), (5, 4), (0.9, 0.8)), ("D4", (12, 12), (5, 5), 1.0), ("C3", (10, 7), (4, 6), 1.0)],
)
def test_views_match_the_filters_definition(group, in_hw, out_hw, crop, padding, rng):
    # C3 (10, 7) → (4, 6): one axis shrinks, the other grows (stays bilinear along it)
    x = torch.rand(2, 2, *in_hw, generator=rng)
    views = canon.orbit(x, group, out_hw, crop, padding)
    assert_close(views, view_ref_aa(x, as_group(group), out_hw, crop, padding), case="grid_sample_coordinates")


@pytest.mark.parametrize("in_side,out_side", [(64, 16), (58, 32), (40, 32), (224, 32)])
def test_unrotated_views_are_torchvisions_antialiased_resize(in_side, out_side, rng):
    x = torch.rand(2, 3, in_side, in_side, generator=rng)
    views = canon.orbit(x, "C4", out_side, padding="border")
    resized = F.interpolate(x, size=(out_side, out_side), mode="bilinear", align_corners=False, antialias=True)
    # away from the border (torchvision renormalises the filter at the image edge, canon pads)
    inner = (..., slice(2, -2), slice(2, -2))
    assert_close(views[:, 0][inner], resized[inner], msg="identity view", case="grid_sample_coordinates")
    for k in (1, 2, 3):  # quarter turns of the same filter: the resized image turned (taps summed in another order)
        assert_close(views[:, k], torch.rot90(views[:, 0], k, dims=(-2, -1)), msg=f"element {k}")


@pytest.mark.parametrize("size", [16, 20])
def test_detail_finer_than_the_view_averages_out(size):
    # A checkerboard at the input's Nyquist frequency, 64 → 16 or 20, every C8 view: its local mean is 0.5.
    # Measured: antialiased within 0.007 / 0.020 of it (the 45° views; the triangle filter is no ideal
    # low-pass), one tap per pixel 0.36 / 0.39 away (the pattern folds into the view).
    i = torch.arange(64)
    board = ((i[:, None] + i[None, :]) % 2).float().expand(1, 1, 64, 64)
    inner = (..., slice(2, -2), slice(2, -2))
    smooth = canon.orbit(board, "C8", size, padding="reflection")[inner]
    aliased = canon.orbit(board, "C8", size, padding="reflection", antialias=False)[inner]
    assert (smooth - 0.5).abs().max() < 0.025, float((smooth - 0.5).abs().max())
    assert (aliased - 0.5).abs().max() > 0.35, float((aliased - 0.5).abs().max())


@pytest.mark.parametrize("group,in_side,size,crop", [("C8", 28, None, 1.0), ("D4", 16, 24, 1.0), ("C4", 20, 16, 0.8)])
def test_views_that_do_not_shrink_are_unchanged(group, in_side, size, crop, rng):
    x = torch.rand(2, 1, in_side, in_side, generator=rng)
    assert torch.equal(canon.orbit(x, group, size, crop), canon.orbit(x, group, size, crop, antialias=False))


def test_option_reaches_the_modules_and_the_drop_in():
    from canon.compat import OptimizedGroupEquivariantImageCanonicalization as Compat
    from canon.networks import ConvEncoder

    x = torch.rand(2, 3, 40, 40)
    for aa in (True, False):
        can = canon.OrbitCanonicalizer(ConvEncoder(3, out_dim=8), "C4", size=16, antialias=aa).eval()
        can(x)
        assert torch.equal(can.state.views, canon.orbit(x, "C4", 16, antialias=aa)), aa
    # the drop-in antialiases as equiadapt's torchvision Resize: at quarter turns its views are
    # equiadapt's group_augment of the resized crop, away from the crop's edges
    hp = dict(beta=1.0, input_crop_ratio=0.8, resize_shape=16, group_type="rotation", num_rotations=4)
    layer = Compat(ConvEncoder(3, out_dim=8), {**hp, "artifact_err_wt": 0.0, "learn_ref_vec": False}, (3, 40, 40))
    ours = layer._views(x).transpose(0, 1).flatten(0, 1)
    theirs = layer.group_augment(layer.transformations_before_canonicalization_network_forward(x))
    inner = (..., slice(2, -2), slice(2, -2))
    assert_close(ours[inner], theirs[inner], case="grid_sample_coordinates")
    with pytest.raises(TypeError, match="antialias must be True or False"):
        canon.orbit(x, "C4", 16, antialias="yes")


def test_exact_groups_stay_invariant_with_antialiased_views():
    from canon.networks import ConvEncoder

    torch.manual_seed(0)
    model = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8), "C4", size=9, crop_ratio=0.9).eval()
    x = torch.rand(16, 1, 20, 20)
    with torch.no_grad():
        xc = model(x)
        for k in (1, 2, 3):
            assert torch.equal(model(torch.rot90(x, k, dims=(-2, -1))), xc), f"rot90 × {k}"


# -- the kernels ----------------------------------------------------------------------------------
CASES = [
    ("C8", (7, 7), (3, 3), 0.9, "zeros"),
    ("D4", (17, 17), (8, 8), 0.8, "reflection"),
    ("C4", (16, 16), (5, 5), 1.0, "border"),
    ("C3", (12, 12), (7, 7), (0.9, 0.5), "zeros"),  # one axis shrinks, one grows
]


@kernel_device
@pytest.mark.parametrize("group,in_hw,out_hw,crop,padding", CASES)
def test_triton_matches_the_reference(dev, group, in_hw, out_hw, crop, padding, rng):
    from canon import triton_ops

    t, aa = _tables(group, in_hw, out_hw, crop)
    td, aad = _tables(group, in_hw, out_hw, crop, dev)
    x = torch.rand(2, 2, *in_hw, generator=rng)
    expect = oracle.orbit_antialias(x, t.mats, t.pull, aa.norm, aa.taps, out_hw, padding)
    out = torch.full(expect.shape, NAN, device=dev)
    triton_ops.orbit(
        x.to(dev), td.mats, td.pull, t.exact, t.aligned, out_hw, padding, "bilinear", out=out, aa_norm=aad.norm,
        aa_taps=aad.taps,
    )  # fmt: skip
    assert_close(to_cpu(out), expect, msg="antialiased views")
    g = torch.randn(expect.shape, generator=rng)
    gx_ref = ref.orbit_antialias_backward_ref(g, t.mats, t.pull, aa.norm, aa.taps, in_hw, padding)
    xr = x.clone().requires_grad_()
    oracle.orbit_antialias(xr, t.mats, t.pull, aa.norm, aa.taps, out_hw, padding).backward(g)
    assert_close(gx_ref, xr.grad, msg="explicit adjoint vs autograd of the reference")
    if padding == "zeros":  # the gather adjoint (other paddings fold onto edge pixels: the reference's scatter)
        gx = torch.full(x.shape, NAN, device=dev)
        triton_ops.orbit_backward(
            g.to(dev), td.mats, td.pull, t.exact, t.aligned, in_hw, padding, "bilinear", x.dtype, out=gx,
            aa_norm=aad.norm, aa_back_taps=aad.back_taps,
        )  # fmt: skip
        assert_close(to_cpu(gx), gx_ref, msg="antialiased adjoint", case="inner_products")


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_gradcheck_float64_reference(padding):
    x = torch.rand(2, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    with canon.use_backend("reference"):
        assert torch.autograd.gradcheck(lambda t: canon.orbit(t, "C8", (3, 2), 0.9, padding), (x,))


@kernel_device
def test_gradcheck_float64_through_triton(dev):
    # tiny: C2 (a half turn), 5×4 → 2×2; fast mode (random projections) keeps the interpreter calls few.
    # The kernels' adjoint is the zero-padded gather (other paddings': the reference's, on every backend).
    x = torch.rand(1, 1, 5, 4, dtype=torch.float64, device=dev, requires_grad=True)
    with canon.use_backend("triton"):
        assert torch.autograd.gradcheck(lambda t: canon.orbit(t, "C2", 2), (x,), fast_mode=True)
