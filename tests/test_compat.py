"""canon.compat reproduces equiadapt 0.1.2's forward semantics on cases derived by hand.

(equiadapt itself does not import beside the CPU torch; tests/manual/equiadapt_parity.py
compares against it in a separate environment.)
"""

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, equiadapt_hparams

import canon
from canon.compat import OptimizedGroupEquivariantImageCanonicalization as Compat
from canon.equivariant import require_e2cnn
from canon.networks import ConvEncoder

_hp = equiadapt_hparams


def _layer(in_shape, **kw):
    torch.manual_seed(0)
    return Compat(ConvEncoder(in_shape[0], out_dim=8, hidden=8), _hp(**kw), in_shape)


def test_grayscale_orbit_layout_and_scores():
    layer = _layer((1, 10, 10), group_type="roto-reflection").eval()
    x = torch.randn(3, 1, 10, 10)
    aug = layer.group_augment(x)
    assert aug.shape == (8 * 3, 1, 10, 10)
    for e in range(4):  # equiadapt: element e turns clockwise by 90e°, then (e ≥ N) flips; row g·B + b
        rot = torch.rot90(x, -e, dims=(-2, -1))
        assert torch.equal(aug[e * 3 : (e + 1) * 3], rot)
        assert torch.equal(aug[(4 + e) * 3 : (5 + e) * 3], torch.flip(rot, dims=(-1,)))
    xc = layer(x)
    info = layer.canonicalization_info_dict
    assert set(info) == {"vector_out", "group_element", "group_activations"}
    v, acts = info["vector_out"], info["group_activations"]
    assert v.shape == (24, 8) and acts.shape == (3, 8)
    expected = (
        F.cosine_similarity(layer.reference_vector.expand(24, -1), layer.canonicalization_network(aug), dim=1)
        .reshape(8, 3)
        .T
    )
    torch.testing.assert_close(acts, expected)
    g = acts.argmax(-1)
    for b in range(3):  # the canonical image is exactly the scored copy (also for reflections: docs/spec.md §6.1)
        assert torch.equal(xc[b], aug[g[b] * 3 + b])
    ged = info["group_element"]
    assert torch.equal(ged["rotation"], (g % 4).float() * 90.0)
    assert torch.equal(ged["reflection"], (g >= 4).float())


def test_losses_and_metric_formulas():
    layer = _layer((1, 8, 8), num_rotations=4).train()
    x = torch.randn(5, 1, 8, 8)
    layer(x)
    info = layer.canonicalization_info_dict
    V = info["vector_out"].reshape(4, 5, -1).permute(1, 0, 2)
    raw = (V @ V.transpose(1, 2) * (1 - torch.eye(4))).abs().mean()
    torch.testing.assert_close(layer.get_optimization_specific_loss(), raw)
    acts = info["group_activations"]
    torch.testing.assert_close(
        layer.get_prior_regularization_loss(), F.cross_entropy(acts, torch.zeros(5, dtype=torch.long))
    )
    assert layer.get_identity_metric().item() == (acts.argmax(-1) == 0).float().mean().item()
    # training: straight-through rotation value is exact, with a gradient
    assert layer.canonicalization_info_dict["group_element"]["rotation"].requires_grad
    # the normalized variant on request
    norm = Compat(layer.canonicalization_network, _hp(contrastive_kind="normalized"), (1, 8, 8))
    norm(x)
    V = norm.canonicalization_info_dict["vector_out"].reshape(4, 5, -1).permute(1, 0, 2)
    torch.testing.assert_close(norm.get_optimization_specific_loss(), canon.losses.contrastive_loss(V))


def test_artifact_term_and_reference_vector():
    layer = _layer((1, 8, 8), artifact_err_wt=0.5, learn_ref_vec=True)
    assert isinstance(layer.reference_vector, torch.nn.Parameter) and layer.reference_vector.shape == (1, 8)
    assert layer.reference_vector.requires_grad
    assert not _layer((1, 8, 8)).reference_vector.requires_grad
    layer(torch.randn(2, 1, 8, 8))
    info = layer.canonicalization_info_dict
    assert info["vector_out_dummy"].shape == info["vector_out"].shape
    # C4 at 90° steps: rotating away and back is exact, so the artifact term is 0
    torch.testing.assert_close(F.mse_loss(info["vector_out_dummy"], info["vector_out"]), torch.tensor(0.0))


def test_colour_crop_resize_and_edge_padding():
    # 20×20, ratio 0.8 → crop ceil(16) = 16, resize to 16: at 90° the views are exact slices
    layer = _layer((3, 20, 20), resize_shape=16, input_crop_ratio=0.8).eval()
    x = torch.randn(2, 3, 20, 20)
    aug = layer.group_augment(layer.transformations_before_canonicalization_network_forward(x))  # as equiadapt
    assert aug.shape == (8, 3, 16, 16)
    crop = x[:, :, 2:18, 2:18]
    for e in range(4):
        assert torch.equal(aug[e * 2 : (e + 1) * 2], torch.rot90(crop, -e, dims=(-2, -1)))
    # C8 on colour: the full-resolution canonical image replicates edges (border padding)
    layer8 = _layer((3, 12, 12), num_rotations=8, resize_shape=12, input_crop_ratio=1.0).eval()
    ones = torch.ones(2, 3, 12, 12)
    layer8(ones)
    assert layer8.padding == "border"
    xc = canon.transform(ones, 1, "C8", padding=layer8.padding)
    torch.testing.assert_close(xc, ones)  # no zero corners, as equiadapt's edge pad → rotate → crop
    gray8 = _layer((1, 12, 12), num_rotations=8).eval()
    assert gray8.padding == "zeros"


def test_invert_canonicalization():
    layer = _layer((1, 8, 8), group_type="roto-reflection", num_rotations=4).eval()
    x = torch.randn(4, 1, 8, 8)
    xc = layer(x)
    assert torch.equal(layer.invert_canonicalization(xc, induced_rep_type="scalar"), x)
    with pytest.raises(NotImplementedError):
        layer.invert_canonicalization(torch.randn(4, 16, 8, 8), induced_rep_type="vector")


needs_e2cnn = pytest.mark.skipif(
    importlib.util.find_spec("e2cnn") is None,
    reason="e2cnn states the regular action independently (pip install 'canon-equivariance[equivariant]')",
)


def _e2cnn_regular(group_type: str, n: int, K: int):
    """e2cnn's gspace and a field type of K regular fields: the regular action, stated independently."""
    e2cnn = require_e2cnn()
    gs = e2cnn.gspaces.Rot2dOnR2(n) if group_type == "rotation" else e2cnn.gspaces.FlipRot2dOnR2(n)
    return e2cnn, gs, e2cnn.nn.FieldType(gs, [gs.regular_repr] * K)


@needs_e2cnn
@pytest.mark.parametrize(
    "group_type,n,in_shape",
    [("rotation", 4, (1, 9, 9)), ("rotation", 8, (1, 9, 9)), ("roto-reflection", 4, (1, 9, 9)),
     ("roto-reflection", 3, (1, 7, 7)), ("rotation", 4, (3, 12, 12))],
)  # fmt: skip
def test_invert_regular_features_as_e2cnn_acts(group_type, n, in_shape):
    # Sample b chooses equiadapt's element b (every element once). Its canonical image is x turned
    # clockwise by 360·k/N (k = b < N), or that then flipped horizontally (b = N + k), so the
    # inverse on regular features is e2cnn's action of the counter-clockwise turn by k, resp. of
    # its flip element (1, k) (self-inverse; e2cnn's flip of FlipRot2dOnR2 is torch.flip(-1)).
    layer = _layer(in_shape, group_type=group_type, num_rotations=n, resize_shape=in_shape[-1], input_crop_ratio=1.0)
    G = layer.num_group
    acts = torch.eye(G)
    layer.canonicalization_info_dict = {"group_activations": acts}
    layer.groupactivations_to_groupelement(acts)
    e2cnn, _, field = _e2cnn_regular(group_type, n, K=2)
    y = torch.randn(G, 2 * G, *in_shape[1:])
    out = layer.invert_canonicalization(y, induced_rep_type="regular")
    for b in range(G):
        k, flip = b % n, b >= n
        element = k if group_type == "rotation" else (int(flip), k)
        expected = e2cnn.nn.GeometricTensor(y[b : b + 1], field).transform(element).tensor
        if (4 * k) % n == 0:  # quarter turns: e2cnn uses rot90, the whole plane is exact
            assert_close(out[b : b + 1], expected, msg=f"element {b}")
        else:  # e2cnn interpolates other angles with a spline: the centre pixel stays put
            c = (slice(None), slice(None), in_shape[1] // 2, in_shape[2] // 2)
            assert_close(out[b : b + 1][c], expected[c], msg=f"element {b}, centre pixel")


@needs_e2cnn
@pytest.mark.parametrize("group_type", ["rotation", "roto-reflection"])
def test_canonicalize_then_invert_cancels_an_e2cnn_equivariant_network(group_type):
    # f equivariant under e2cnn's regular action: invert(f(canon(x))) = ρ(g*)⁻¹ ρ(g*) f(x) = f(x),
    # whichever element g* the drop-in chose (an exact group on square images)
    e2cnn, gs, field = _e2cnn_regular(group_type, 4, K=2)
    torch.manual_seed(1)
    f = e2cnn.nn.R2Conv(e2cnn.nn.FieldType(gs, [gs.trivial_repr]), field, 3, padding=1).eval()
    layer = _layer((1, 9, 9), group_type=group_type, num_rotations=4).eval()
    x = torch.randn(16, 1, 9, 9)
    with torch.no_grad():
        xc = layer(x)
        out = layer.invert_canonicalization(f(e2cnn.nn.GeometricTensor(xc, f.in_type)).tensor)
        direct = f(e2cnn.nn.GeometricTensor(x, f.in_type)).tensor
    assert len(set(layer._selection().index.tolist())) > 2  # several elements were chosen
    assert_close(out, direct, msg="invert(f(canonicalize(x))) vs f(x)", case="e2cnn_filters")


def test_hyperparameter_containers_and_errors():
    net = ConvEncoder(1, out_dim=8)
    for hp in (_hp(), SimpleNamespace(**_hp())):
        assert Compat(net, hp, (1, 8, 8)).num_group == 4
    assert Compat(net, _hp(group_type="roto-reflection", num_rotations=3), (1, 8, 8)).num_group == 6
    with pytest.raises(ValueError, match="group_type"):
        Compat(net, _hp(group_type="reflection"), (1, 8, 8))
    bad = _hp()
    del bad["learn_ref_vec"]
    with pytest.raises(ValueError, match="learn_ref_vec"):
        Compat(net, bad, (1, 8, 8))
    with pytest.raises(ValueError, match="in_shape"):
        Compat(net, _hp(), (8, 8))
    with pytest.raises(ValueError, match="out_vector_size"):
        Compat(torch.nn.Flatten(), _hp(), (1, 8, 8))
    with pytest.raises(ValueError, match=r"expected \(B, 1, 8, 8\)"):
        Compat(net, _hp(), (1, 8, 8))(torch.randn(2, 1, 9, 9))


def test_targets_move_per_sample():
    layer = _layer((1, 8, 8), group_type="roto-reflection").eval()
    x = torch.randn(2, 1, 8, 8)
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    masks[:, 0, 1:3, 2:6] = 1
    targets = [{"boxes": torch.tensor([[2.0, 1.0, 6.0, 3.0]]), "masks": masks[b].clone()} for b in range(2)]
    xc, moved = layer(x, targets)
    idx = layer._selection().index
    for b in range(2):
        m = canon.transform(masks[b : b + 1].float(), idx[b : b + 1], layer.group)[0]
        assert torch.equal(moved[b]["masks"].float(), m)
        rows, cols = (m[0] == 1).nonzero().unbind(-1)
        assert moved[b]["boxes"].tolist() == [
            [cols.min().item(), rows.min().item(), cols.max().item() + 1.0, rows.max().item() + 1.0]
        ]
    assert math.isfinite(float(xc.sum()))


def test_bad_outputs_and_targets_are_named():
    layer = _layer((1, 8, 8)).eval()
    x = torch.randn(2, 1, 8, 8)
    layer(x)
    with pytest.raises(ValueError, match=r"invert_canonicalization: x_canonicalized_out must be \(B, C, H, W\)"):
        layer.invert_canonicalization(torch.randn(1, 8, 8), induced_rep_type="scalar")
    with pytest.raises(ValueError, match="B=2 images, got shape"):
        layer.invert_canonicalization(torch.randn(3, 4, 8, 8))
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must be \(K, 4\)"):
        layer(x, [{"boxes": torch.rand(1, 3)}, {"boxes": torch.rand(1, 3)}])
    with pytest.raises(ValueError, match=r"one dict per image \(B=2\), got 3"):
        layer(x, [{"boxes": torch.rand(1, 4)}] * 3)
    with pytest.raises(ValueError, match=r"targets\[1\]\['masks'\] must be \(K, 8, 8\)"):
        layer(x, [{"masks": torch.zeros(1, 8, 8)}, {"masks": torch.zeros(1, 4, 4)}])


# -- equiadapt's own tests (tests/images/canonicalization/ of equiadapt 0.1.2), ported to the drop-in ---------
# Their fixture: colour (3, 64, 64) inputs, input_crop_ratio 0.9, resize_shape (32, 32), beta 0.1. The
# optimized class of equiadapt 0.1.2 itself needs an int resize_shape (it pads by ceil(resize_shape · 0.5)),
# so the ports use 32.
EQUIADAPT_HP = dict(input_crop_ratio=0.9, resize_shape=32, beta=0.1)


def test_equiadapt_initialization():
    layer = _layer((3, 64, 64), **EQUIADAPT_HP)
    assert layer.pad is not None, "Pad should be initialized."
    assert layer.crop is not None, "Crop should be initialized."


def test_equiadapt_transformation_before_canonicalization_network_forward():
    layer = _layer((3, 64, 64), **EQUIADAPT_HP)
    transformed = layer.transformations_before_canonicalization_network_forward(torch.rand((1, 3, 64, 64)))
    assert transformed.size() == torch.Size([1, 3, 32, 32]), "The transformed image should be resized to (32, 32)."


@pytest.mark.parametrize("induced_rep, num_channels", [("regular", 12), ("scalar", 3)])
def test_equiadapt_invert_canonicalization_induced_rep(induced_rep, num_channels):
    layer = _layer((3, 64, 64), **EQUIADAPT_HP)
    layer(torch.randn((1, 3, 64, 64)))  # to populate the canonicalization_info_dict
    canonicalized_image = torch.randn((1, num_channels, 64, 64))
    inverted = layer.invert_canonicalization(canonicalized_image, induced_rep_type=induced_rep)
    assert inverted.shape == canonicalized_image.shape  # (equiadapt's test asserts nothing more)


def test_every_public_name_of_equiadapts_class():
    # the names equiadapt 0.1.2's OptimizedGroupEquivariantImageCanonicalization has (its class and the
    # instance attributes its __init__ sets), read off equiadapt itself in tests/manual/equiadapt_parity.py
    layer = _layer((3, 40, 40), resize_shape=32)
    names = [
        "pad", "crop", "crop_canonization", "resize_canonization", "crop_group_augment", "pad_group_augment",
        "rotate_and_maybe_reflect", "transformations_before_canonicalization_network_forward", "group_augment",
        "get_group_activations", "groupactivations_to_groupelementonehot", "groupactivations_to_groupelement",
        "get_groupelement", "canonicalize", "invert_canonicalization", "get_optimization_specific_loss",
        "get_prior_regularization_loss", "get_identity_metric", "canonicalization_network",
        "canonicalization_info_dict", "beta", "group_type", "num_rotations", "num_group", "artifact_err_wt",
        "out_vector_size", "reference_vector", "group_info_dict", "add_prior_regularizer",
    ]  # fmt: skip
    assert [n for n in names if not hasattr(layer, n)] == []


def test_equiadapts_transforms_as_torchvision_defines_them():
    layer = _layer((3, 40, 30), resize_shape=16, input_crop_ratio=0.5)
    x = torch.rand(2, 3, 40, 30)
    # Pad(ceil(W/2), edge), CenterCrop((H, W)): padding then cropping gives x back
    padded = layer.pad(x)
    assert padded.shape == (2, 3, 40 + 30, 30 + 30) and torch.equal(layer.crop(padded), x)
    assert torch.equal(padded[..., 0, :15], padded[..., 15, :15].expand_as(padded[..., 0, :15]))  # edge replicated
    # CenterCrop((ceil(40·0.5), ceil(30·0.5))) = (20, 15), top-left rounded: (10, 7.5 → 8)
    assert torch.equal(layer.crop_canonization(x), x[..., 10:30, 8:23])
    # Resize(16): the short side to 16, the long one keeping the aspect ratio (20·16/15 = 21.3 → 21),
    # antialiased bilinear as torchvision's tensor resize
    small = layer.resize_canonization(layer.crop_canonization(x))
    ref = F.interpolate(x[..., 10:30, 8:23], size=(21, 16), mode="bilinear", align_corners=False, antialias=True)
    assert small.shape == (2, 3, 21, 16) and torch.equal(small, ref)
    gray = _layer((1, 8, 8))
    assert all(isinstance(getattr(gray, n), torch.nn.Identity) for n in ("pad", "crop", "resize_canonization"))


@pytest.mark.parametrize("group_type", ["rotation", "roto-reflection"])
def test_rotate_and_maybe_reflect_and_group_augment(group_type):
    layer = _layer((1, 8, 8), group_type=group_type)
    x = torch.rand(2, 1, 8, 8)
    turned = layer.rotate_and_maybe_reflect(x, torch.tensor([0.0, 90.0, 270.0]))
    assert [torch.equal(t, torch.rot90(x, -k, dims=(-2, -1))) for t, k in zip(turned, (0, 1, 3))] == [True] * 3
    if group_type == "roto-reflection":
        (flipped,) = layer.rotate_and_maybe_reflect(x, [90.0], reflect=True)
        assert torch.equal(flipped, torch.flip(torch.rot90(x, -1, dims=(-2, -1)), dims=(-1,)))  # rotate, then flip
    else:
        with pytest.raises(ValueError, match="reflect=True needs group_type 'roto-reflection'"):
            layer.rotate_and_maybe_reflect(x, [90.0], reflect=True)
    with pytest.raises(ValueError, match="multiples of 360/4"):
        layer.rotate_and_maybe_reflect(x, [45.0])
    G = layer.num_group
    assert layer.group_augment(x).shape == (G * 2, 1, 8, 8)


def test_add_prior_regularizer_as_equiadapts_readme_calls_it():
    layer = _layer((1, 8, 8))
    layer(torch.rand(3, 1, 8, 8))
    loss = torch.tensor(2.0)
    assert torch.equal(layer.add_prior_regularizer(loss), loss + layer.get_prior_regularization_loss())
