"""select → canonicalize → invert: conventions, exact invariance, round trips, gradients."""

import pytest
import torch
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import canon
from canon.groups import Group, as_group
from canon.networks import ConvEncoder

EXACT = ["C2", "C4", "D1", "D2", "D4"]


def _independent(x, group, g):
    """T_g x for exact groups from torch.rot90/flip only (flip first, then rotate)."""
    G = as_group(group)
    k, r = G.element(g)
    if r:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k * (4 // G.n), dims=(-2, -1))


@pytest.mark.parametrize("group", EXACT)
@pytest.mark.parametrize("C,S", [(1, 9), (3, 8)])
def test_exact_invariance(group, C, S):
    torch.manual_seed(hash((group, C, S)) % 2**31)
    net = canon.OrbitCanonicalizer(ConvEncoder(C, out_dim=12, hidden=8), group, seed=group.__hash__() % 100).eval()
    x = torch.randn(5, C, S, S)
    with torch.no_grad():
        xc = net(x)
        for g in range(as_group(group).order):
            assert torch.equal(net(_independent(x, group, g)), xc), f"{group}: canon(T_{g} x) != canon(x)"


@pytest.mark.parametrize("group", ["C8", "C3", "D8"])
def test_non_exact_invariance_measured(group):
    # Rotations by non-multiples of 90° resample, so T_g x is not a permutation of x's
    # orbit: views differ by interpolation error (and the corners by padding). We measure
    # the canonical images on a smooth, centred blob (nothing near the border) and require
    # them to agree up to the resampling error. Bilinear errs by at most (2/8)·max|f''| per
    # resampling; the blob's max|f''| ≤ 1/4 + 0.6/2.5 (its two Gaussians), and canon(x)
    # resamples once while canon(T_g x) resamples twice: tol is that bound, not a fitted number.
    tol = 3 * (2 / 8) * (1 / 4 + 0.6 / 2.5)
    S = 21
    yy, xx = torch.meshgrid(torch.arange(S) - 10.0, torch.arange(S) - 10.0, indexing="ij")
    blob = torch.exp(-((xx - 2) ** 2 + (yy + 3) ** 2) / 8.0) + 0.6 * torch.exp(-((xx + 3) ** 2 + (yy - 1) ** 2) / 5.0)
    x = blob[None, None]
    torch.manual_seed(0)
    net = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=16, hidden=8), group, beta=1.0).eval()
    G = as_group(group)
    with torch.no_grad():
        xc = net(x)
        agree = 0
        for g in range(G.order):
            xg = canon.transform(x, g, G)
            agree += int((net(xg) - xc).abs().max() < tol)
    # with exact score ties impossible, most elements must land on the same canonical copy
    assert agree >= G.order - 1, f"{group}: only {agree}/{G.order} transformed inputs gave the same canonical image"


@given(st.sampled_from([Group(n, r) for n in (1, 2, 3, 4, 5, 8) for r in (False, True)]), st.data())
@settings(max_examples=30, deadline=None)
def test_composition_T_g_T_h_is_T_gh(G, data):
    a = data.draw(st.integers(0, G.order - 1))
    b = data.draw(st.integers(0, G.order - 1))
    S = 6 if G.all_exact else 15
    x = torch.randn(2, 2, S, S, generator=torch.Generator().manual_seed(a * 31 + b))
    lhs = canon.transform(canon.transform(x, b, G), a, G)
    rhs = canon.transform(x, G.compose(a, b), G)
    if G.is_exact(a) and G.is_exact(b):
        assert torch.equal(lhs, rhs)
    else:  # two resamplings vs one: compare a smooth image on the central disc, away from padding
        smooth, disc, bound = _smooth(S, resamplings=3)
        smooth = smooth.expand(2, 2, S, S).contiguous()
        l2 = canon.transform(canon.transform(smooth, b, G), a, G)
        r2 = canon.transform(smooth, G.compose(a, b), G)
        assert (l2 - r2)[..., disc].abs().max() <= bound


def _smooth(S, resamplings, sigma2=6.0):
    """A centred Gaussian, the disc where it is compared, and a bound on the resampling error.

    Bilinear interpolation errs by at most (1/8)·(|f_uu| + |f_vv|) ≤ (2/8)·max|f''| per
    resampling, and max|f''| = 1/σ² for exp(-r²/2σ²); errors of several resamplings add.
    """
    c = (S - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(S) - c, torch.arange(S) - c, indexing="ij")
    img = torch.exp(-(xx**2 + yy**2) / (2 * sigma2))[None, None]
    disc = (xx**2 + yy**2) <= (S / 2 - 2) ** 2
    return img, disc, resamplings * (2 / 8) / sigma2


@pytest.mark.parametrize("group", ["C4", "D4", "C8", "D3"])
def test_invert_after_canonicalize_round_trips(group, rng):
    G = as_group(group)
    x = torch.randn(4, 3, 8, 8, generator=rng)
    idx = torch.randint(0, G.order, (4,), generator=rng)
    back = canon.invert(canon.canonicalize(x, idx, G), idx, G)
    if G.all_exact:
        assert torch.equal(back, x)
    else:
        exact = torch.tensor([G.is_exact(int(i)) for i in idx])
        assert torch.equal(back[exact], x[exact])
        # non-exact: bilinear twice; compare a smooth image on the central disc
        smooth, disc, bound = _smooth(8, resamplings=2, sigma2=4.0)
        smooth = smooth.expand(4, 3, 8, 8).contiguous()
        b2 = canon.invert(canon.canonicalize(smooth, idx, G), idx, G)
        assert (b2 - smooth)[..., disc].abs().max() <= bound


def test_invert_regular_representation(rng):
    # y in the regular rep (K, N); act with g then invert must give back y
    G = as_group("D4")
    B, K, S = 3, 2, 6
    y = torch.randn(B, K * G.order, S, S, generator=rng)
    idx = torch.tensor([1, 5, 6])
    # regular action (g·F)[k, h](p) = F[k, g⁻¹h](g⁻¹p)
    acted = []
    for b in range(B):
        g = int(idx[b])
        yk = y[b].reshape(K, G.order, S, S)
        perm = [G.compose(G.inverse(g), h) for h in range(G.order)]
        moved = canon.transform(yk[:, perm].reshape(1, -1, S, S), g, G)
        acted.append(moved[0])
    acted = torch.stack(acted)
    assert torch.equal(canon.invert(acted, idx, G, kind="regular"), y)
    with pytest.raises(ValueError, match="divisible"):
        canon.invert(torch.randn(3, 5, S, S), idx, G, kind="regular")


def test_select_semantics(rng):
    v = torch.randn(4, 6, 5, generator=rng)
    ref = torch.randn(5, generator=rng)
    sel = canon.select(v, ref, beta=3.0)
    cos = torch.nn.functional.cosine_similarity(v, ref.expand_as(v), dim=-1)
    assert_close(sel.scores, cos)
    assert_close(sel.probs, torch.softmax(3.0 * cos, -1))
    assert torch.equal(sel.index, cos.argmax(-1))
    assert torch.equal(sel.onehot, torch.nn.functional.one_hot(sel.index, 6).float())
    dot = canon.select(v, ref, score="dot")
    assert_close(dot.scores, (v * ref).sum(-1))
    # ties go to the lowest index
    tied = torch.stack([ref, -ref, ref, ref])[None]
    assert int(canon.select(tied, ref).index) == 0
    # eval: no gradient path to the scores through onehot
    vv = v.clone().requires_grad_()
    assert not canon.select(vv, ref, straight_through=False).onehot.requires_grad
    # Gumbel: reproducible with a generator, random otherwise
    g1 = canon.select(v, ref, gumbel=True, generator=torch.Generator().manual_seed(3))
    g2 = canon.select(v, ref, gumbel=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(g1.index, g2.index) and torch.equal(g1.probs, g2.probs)


def test_straight_through_gradients_match_mixture(rng):
    """∂L/∂onehot[b, g] = ⟨∂L/∂x_c[b], T_g x[b]⟩ (docs/spec.md §3.5); x gets T_{g*}ᵀ grad."""
    G = as_group("C8")
    x = torch.randn(3, 2, 7, 7, dtype=torch.float64, generator=rng, requires_grad=True)
    v = torch.randn(3, G.order, 4, dtype=torch.float64, generator=rng, requires_grad=True)
    ref = torch.randn(4, dtype=torch.float64, generator=rng)
    sel = canon.select(v, ref, beta=2.0)
    onehot = sel.onehot.detach().requires_grad_()
    xc = canon.canonicalize(x, canon.Selection(sel.scores, sel.probs, sel.index, onehot), G)
    go = torch.randn_like(xc)
    xc.backward(go)
    orbit = canon.orbit(x.detach(), G)
    assert_close(onehot.grad, torch.einsum("bnchw,bchw->bn", orbit, go))
    # the explicit mixture Σ_g h_g T_g x, differentiated by autograd, gives the same x gradient
    x2 = x.detach().clone().requires_grad_()
    mix = torch.einsum("bn,bnchw->bchw", onehot.detach(), canon.orbit(x2, G))
    mix.backward(go)
    assert_close(x.grad, x2.grad)
    # through select: the scores get the gradient of softmax(β s) · mixture term
    v.grad = None
    sel = canon.select(v, ref, beta=2.0)
    canon.canonicalize(x.detach(), sel, G).backward(go)
    p = torch.softmax(2.0 * sel.scores.detach(), -1)
    dh = torch.einsum("bnchw,bchw->bn", orbit, go)
    ds = 2.0 * p * (dh - (p * dh).sum(-1, keepdim=True))
    s_ref = torch.nn.functional.cosine_similarity(v, ref.expand_as(v), dim=-1)
    (gv,) = torch.autograd.grad(s_ref, v, ds)
    assert_close(v.grad, gv)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
def test_gradcheck_canonicalize_invert(padding, interp):
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([3, 5])
    assert torch.autograd.gradcheck(lambda x: canon.canonicalize(x, idx, "C8", padding, interp), (x,))
    assert torch.autograd.gradcheck(lambda x: canon.invert(x, idx, "D8", "scalar", padding, interp), (x,))
    y = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda y: canon.invert(y, torch.tensor([1, 2]), "C4", "regular", padding, interp), (y,)
    )


def test_gradcheck_select_and_losses():
    v = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, r: canon.select(v, r, beta=1.7).probs, (v, ref))
    assert torch.autograd.gradcheck(lambda v, r: canon.select(v, r, score="dot").scores, (v, ref))
    assert torch.autograd.gradcheck(lambda v: canon.losses.contrastive_loss(v), (v,))
    assert torch.autograd.gradcheck(lambda v: canon.losses.contrastive_loss(v, "raw"), (v,))
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: canon.losses.prior_loss(s, torch.tensor([0, 2, 4]), beta=2.0), (s,))


def test_points_and_boxes():
    G = as_group("D4")
    H = W = 10
    img = torch.zeros(4, 1, H, W)
    pts = torch.tensor([[2.0, 7.0], [9.0, 0.0]])
    for b, (px, py) in enumerate([(2, 7), (9, 0), (2, 7), (9, 0)]):
        img[b, 0, py, px] = 1.0
    idx = torch.tensor([1, 3, 5, 6])
    xc = canon.canonicalize(img, idx, G)
    # the marked pixel of the canonical image maps back to the marked input pixel
    for b in range(4):
        yy, xx = (xc[b, 0] == 1).nonzero()[0].tolist()
        back = canon.invert_points(torch.tensor([[[float(xx), float(yy)]]]), idx[b : b + 1], G, (H, W))
        assert back[0, 0].tolist() == pts[b % 2].tolist()
    # boxes: the canonical box of a filled rectangle inverts to the input rectangle
    img = torch.zeros(1, 1, H, W)
    img[0, 0, 1:4, 2:8] = 1  # rows 1..3, cols 2..7 → xyxy edges (2, 1, 8, 4)
    for g in range(G.order):
        i = torch.tensor([g])
        rows, cols = (canon.canonicalize(img, i, G)[0, 0] == 1).nonzero().unbind(-1)
        box_c = torch.tensor([[[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]]], dtype=torch.float32)
        assert canon.invert_boxes(box_c, i, G, (H, W)).tolist() == [[[2.0, 1.0, 8.0, 4.0]]]
