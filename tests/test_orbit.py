"""canon.orbit against independent references: torch.rot90/flip, and per-element affine_grid + grid_sample."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, assert_within_torch_error

import canon
from canon.groups import as_group


def _rot_flip(x, k, r):
    """T_(k, r) for 90° groups built only from torch.flip / torch.rot90 (flip first)."""
    if r:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1))


def _slow_view(x, group, g, size, crop, padding, mode):
    """One view via F.affine_grid + F.grid_sample, with rotation angles from math.cos/sin."""
    G = as_group(group)
    B, C, H, W = x.shape
    h, w = size
    k, r = G.element(g)
    th = 2 * math.pi * k / G.n
    # inverse map: undo the rotation (turn by -θ), then undo the flip
    c, s = math.cos(th), math.sin(th)
    # normalized coordinates (align_corners=False): x_n = (2u + 1)/W - 1; output grid spans
    # crop·(size) of the input around the centre.
    lin = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    if r:
        lin = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64) @ lin
    # affine_grid works in normalized coords of the *output*; map output-normalized → pixel
    # offsets → rotate → input-normalized.
    ry, rx = crop if isinstance(crop, tuple) else (crop, crop)
    to_pix_out = torch.diag(
        torch.tensor([rx * W / 2, ry * H / 2], dtype=torch.float64)
    )  # normalized out → centred input pixels
    to_norm_in = torch.diag(torch.tensor([2 / W, 2 / H], dtype=torch.float64))
    theta = (to_norm_in @ lin @ to_pix_out).float()
    theta = torch.cat([theta, torch.zeros(2, 1)], 1)[None].expand(B, 2, 3)
    grid = F.affine_grid(theta, (B, C, h, w), align_corners=False)
    return F.grid_sample(x.float(), grid, mode=mode, padding_mode=padding, align_corners=False)


@pytest.mark.parametrize("group", ["C1", "C2", "C4", "D1", "D2", "D4"])
@pytest.mark.parametrize("hw", [(7, 7), (8, 8), (1, 1), (5, 5)])
def test_exact_groups_are_permutations(group, hw, rng):
    x = torch.randn(3, 2, *hw, generator=rng)
    views = canon.orbit(x, group)
    G = as_group(group)
    for g in range(G.order):
        k, r = G.element(g)
        assert torch.equal(views[:, g], _rot_flip(x, k * 4 // G.n if G.n <= 4 else k, r)), (group, g)


def test_c4_element1_is_rot90_and_flips_any_shape(rng):
    x = torch.randn(2, 3, 6, 6, generator=rng)
    assert torch.equal(canon.orbit(x, "C4")[:, 1], torch.rot90(x, 1, dims=(-2, -1)))
    y = torch.randn(2, 3, 5, 9, generator=rng)  # non-square: flips and 180° stay exact
    v = canon.orbit(y, "D2")
    assert torch.equal(v[:, 1], torch.rot90(y, 2, dims=(-2, -1)))
    assert torch.equal(v[:, 2], torch.flip(y, dims=(-1,)))
    assert torch.equal(v[:, 3], torch.flip(y, dims=(-2,)))


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize(
    "group,hw,size,crop",
    [
        ("C8", (11, 13), (7, 9), 0.8),
        ("D3", (16, 16), (9, 9), 1.0),
        ("C5", (12, 10), (12, 10), 0.6),
        ("D6", (9, 9), (17, 17), (0.9, 0.7)),
    ],
)
def test_orbit_matches_grid_sample(group, hw, size, crop, padding, rng):
    x = torch.randn(2, 3, *hw, generator=rng)
    views = canon.orbit(x, group, size=size, crop_ratio=crop, padding=padding, antialias=False)  # one tap per pixel
    assert views.shape == (2, as_group(group).order, 3, *size)
    for g in range(as_group(group).order):
        assert_close(
            views[:, g],
            _slow_view(x, group, g, size, crop, padding, "bilinear"),
            msg=f"{group} g={g}",
            case="grid_sample_coordinates",
        )


def test_nearest_matches_grid_sample_away_from_ties(rng):
    # nearest rounds half to even like grid_sample; compare where no coordinate sits near a .5 tie
    x = torch.randn(1, 1, 15, 15, generator=rng)
    views = canon.orbit(x, "C7", size=(11, 11), crop_ratio=0.9, interpolation="nearest")
    mats, _ = canon.geometry.view_matrices_tensor(as_group("C7"), (15, 15), (11, 11), 0.9, x.device)
    u, v = canon.numerics.sample_coords(mats, 11, 11)
    safe = (((u - u.floor() - 0.5).abs() > 1e-3) & ((v - v.floor() - 0.5).abs() > 1e-3)).reshape(7, 11, 11)
    for g in range(7):
        ref = _slow_view(x, "C7", g, (11, 11), 0.9, "zeros", "nearest")[0, 0]
        assert torch.equal(views[0, g, 0][safe[g]], ref[safe[g]])
    assert safe.float().mean() > 0.9


def test_exact_crop_is_a_slice(rng):
    # crop 20 → 10 at scale 1 (r·W/w = 1) samples pixel centres exactly
    x = torch.randn(2, 1, 20, 20, generator=rng)
    v = canon.orbit(x, "C4", size=10, crop_ratio=0.5)
    assert torch.equal(v[:, 0], x[:, :, 5:15, 5:15])
    assert torch.equal(v[:, 1], torch.rot90(x[:, :, 5:15, 5:15], 1, dims=(-2, -1)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_and_layouts(dtype, rng):
    x = torch.randn(2, 3, 9, 9, generator=rng)
    ref = canon.orbit(x, "C8", size=7, crop_ratio=0.9)
    out = canon.orbit(x.to(dtype), "C8", size=7, crop_ratio=0.9)
    assert out.dtype == dtype
    # against the float64 views of the same (rounded) inputs, judged by the correctly rounded result's error
    truth = canon.orbit(x.to(dtype).double(), "C8", size=7, crop_ratio=0.9)
    assert_within_torch_error(out, truth.to(dtype), truth, msg=str(dtype))
    cl = canon.orbit(x, "C8", size=7, crop_ratio=0.9, out_dtype=torch.bfloat16, channels_last=True)
    assert cl.dtype == torch.bfloat16 and cl.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl.float(), ref.to(torch.bfloat16).float())
    # channels_last and sliced inputs give the same views
    assert torch.equal(canon.orbit(x.contiguous(memory_format=torch.channels_last), "C8", size=7, crop_ratio=0.9), ref)
    big = torch.randn(4, 5, 12, 12, generator=rng)
    sl = big[::2, 1:4, 1:10, 2:11]
    assert torch.equal(
        canon.orbit(sl, "C8", size=7, crop_ratio=0.9), canon.orbit(sl.contiguous(), "C8", size=7, crop_ratio=0.9)
    )


def test_orbit_gradcheck():
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    for padding in ("zeros", "border", "reflection"):
        for interp in ("bilinear", "nearest"):
            assert torch.autograd.gradcheck(
                lambda x, p=padding, i=interp: canon.orbit(
                    x, "D3", size=(4, 3), crop_ratio=0.7, padding=p, interpolation=i, antialias=False
                ),  # (antialiased views: tests/test_antialias.py)
                (x,),
            )
    assert torch.autograd.gradcheck(lambda x: canon.orbit(x, "D4"), (x,))


@pytest.mark.parametrize("group", ["C8", "D8", "C12"])
def test_quarter_turns_inside_larger_groups_are_exact(group, rng):
    # docs/spec.md §2: multiples of 90° and flips are exact pixel permutations in every group
    G = as_group(group)
    x = torch.randn(2, 3, 10, 10, generator=rng)
    views = canon.orbit(x, G)
    q = G.n // 4
    for g in range(G.order):
        k, r = G.element(g)
        if k % q == 0:
            assert torch.equal(views[:, g], _rot_flip(x, k // q, r)), g
    idx = torch.tensor([q, G.n // 2])
    assert torch.equal(
        canon.canonicalize(x, idx, G), torch.stack([torch.rot90(x[0], 1, (-2, -1)), torch.rot90(x[1], 2, (-2, -1))])
    )


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("B, C", [(4, 3), (7, 1), (5, 2)])
@pytest.mark.parametrize("padding", ["zeros", "reflection"])
def test_bilinear_views_fold_the_batch_into_channels_bit_identically(B, C, threads, padding):
    """Without autograd the reference samples each bilinear view for a few chunks of the batch folded
    into channels (one tap computation per chunk): the values must be aten's per-image grid sampler's,
    bit for bit, whatever the thread count and whether B·C divides into chunks (7·1 does not)."""
    from canon import reference as ref
    from canon.geometry import view_tables

    g = torch.Generator().manual_seed(B * 10 + C)
    x = torch.rand(B, C, 9, 8, generator=g)
    t = view_tables(as_group("C8"), (9, 8), (11, 10), 0.8, torch.device("cpu"))
    plan = ref._view_plan(t.mats, t.exact, (9, 8), (11, 10), padding, "bilinear", torch.float32)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = canon.orbit(x, "C8", size=(11, 10), crop_ratio=0.8, padding=padding)
        got16 = canon.orbit(x, "C8", size=(11, 10), crop_ratio=0.8, padding=padding, out_dtype=torch.float16)
    finally:
        torch.set_num_threads(prev)
    for n in range(8):
        grid = plan.grids[n : n + 1].expand(B, 11, 10, 2)
        want = torch.ops.aten.grid_sampler_2d(x, grid, 0, plan.padding, False)
        assert torch.equal(got[:, n], want), n
        assert torch.equal(got16[:, n], want.half()), n


@pytest.mark.parametrize(
    "threads, B, C, k",
    [
        (1, 7, 1, 1),
        (2, 4, 3, 2),
        (2, 7, 1, 0),
        (16, 64, 3, 16),
        (16, 62, 1, 0),
        (16, 62, 3, 0),
        (16, 60, 3, 15),
        (16, 4, 3, 12),
    ],
)
def test_the_batch_is_folded_only_where_the_threads_stay_busy(monkeypatch, threads, B, C, k):
    """A divisor of B·C near the thread count, else no folding: B·C = 2·31 on 16 threads would run on 2."""
    from canon import reference as ref

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert ref._image_chunks(B, C) == k
