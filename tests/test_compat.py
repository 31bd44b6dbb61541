"""canon.compat reproduces equiadapt 0.1.2's forward semantics on cases derived by hand.

(equiadapt itself does not import beside the CPU torch; tests/manual/equiadapt_parity.py
compares against it in a separate environment.)
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import equiadapt_hparams

import canon
from canon.compat import OptimizedGroupEquivariantImageCanonicalization as Compat
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
    aug = layer.group_augment(x)
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


def test_invert_regular_features_in_equiadapt_labels():
    # C4 in equiadapt's labels: element e turns clockwise by 90e°, e1∘e2 = e1 + e2 (mod 4).
    # Regular action (g·F)[k, h](p) = F[k, h − g](g⁻¹p); inverting g*·F must give F back.
    layer = _layer((1, 8, 8), num_rotations=4).eval()
    x = torch.randn(6, 1, 8, 8)
    layer(x)
    g = layer.canonicalization_info_dict["group_activations"].argmax(-1)
    feats = torch.randn(6, 3, 4, 8, 8)
    acted = torch.stack(
        [torch.rot90(feats[b][:, [(h - int(g[b])) % 4 for h in range(4)]], -int(g[b]), dims=(-2, -1)) for b in range(6)]
    )
    out = layer.invert_canonicalization(acted.reshape(6, 12, 8, 8))  # default: "regular", as equiadapt
    assert torch.equal(out, feats.reshape(6, 12, 8, 8))


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
