"""canon.equivariant: the e2cnn canonicalizer (Kaba et al. 2023) used as the baseline of issue 11.

Tests that build networks need the optional package e2cnn (extra ``[equivariant]``) and are
skipped with that reason without it; the missing-package message is tested everywhere.
"""

import importlib.util
import sys

import pytest
import torch

import canon
from canon.data import load_dataset
from canon.train import build_parser, load_checkpoint, resolve, run

HAS_E2CNN = importlib.util.find_spec("e2cnn") is not None
needs_e2cnn = pytest.mark.skipif(
    not HAS_E2CNN, reason="e2cnn is not installed (pip install 'canon-equivariance[equivariant]')"
)


def smooth_images(b, c, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, h, generator=g)
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1)


def test_missing_e2cnn_names_the_extra(monkeypatch):
    from canon import equivariant

    monkeypatch.setitem(sys.modules, "e2cnn", None)  # import e2cnn now raises ImportError
    with pytest.raises(ImportError, match=r"canon-equivariance\[equivariant\]"):
        equivariant.require_e2cnn()
    with pytest.raises(ImportError, match=r"EquivariantEncoder needs the optional package e2cnn"):
        equivariant.EquivariantEncoder(1, "C4")


@needs_e2cnn
@pytest.mark.parametrize("group", ["C4", "D4", "C2", "D1", "D2"])
def test_vectors_follow_the_orbit_law_on_exact_groups(group):
    # v(T_h x)[g] = v(x)[g·h]: the copy g of T_h x is the copy g·h of x (docs/spec.md §3)
    from canon.equivariant import EquivariantEncoder

    torch.manual_seed(0)
    G = canon.as_group(group)
    enc = EquivariantEncoder(2, G, hidden=2, out_fields=3).eval()
    x = smooth_images(3, 2, 17)
    with torch.no_grad():
        v = enc(x)
        assert v.shape == (3, G.order, 3)
        for h in range(G.order):
            vh = enc(canon.transform(x, h, G))
            perm = torch.tensor([G.compose(g, h) for g in range(G.order)])
            torch.testing.assert_close(vh, v[:, perm], rtol=1e-5, atol=1e-6 * float(v.abs().max()))
    # and the law is not satisfied by accident: the vectors of different elements differ
    assert float((v[:, 0] - v[:, 1]).abs().max()) > 1e-3


@needs_e2cnn
def test_c8_law_holds_exactly_for_quarter_turns_and_roughly_for_45_degrees():
    from canon.equivariant import EquivariantEncoder

    torch.manual_seed(1)
    G = canon.as_group("C8")
    enc = EquivariantEncoder(1, G, hidden=2, out_fields=4).eval()
    x = smooth_images(4, 1, 21, seed=3)
    with torch.no_grad():
        v = enc(x)
        scale = float(v.abs().max())
        for h in range(8):
            perm = torch.tensor([G.compose(g, h) for g in range(8)])
            err = float((enc(canon.transform(x, h, G)) - v[:, perm]).abs().max()) / scale
            assert err < (1e-5 if h % 2 == 0 else 0.5), (h, err)


@needs_e2cnn
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_canonical_images_are_invariant(group):
    from canon.equivariant import EquivariantCanonicalizer, EquivariantEncoder

    torch.manual_seed(2)
    G = canon.as_group(group)
    can = EquivariantCanonicalizer(EquivariantEncoder(1, G, hidden=2, out_fields=4), size=13).eval()
    x = smooth_images(16, 1, 20, seed=4)
    with torch.no_grad():
        xc = can(x)
        chosen = can.element.clone()
        for h in range(1, G.order):
            assert torch.equal(can(canon.transform(x, h, G)), xc), f"element {h}"
    assert len(set(chosen.tolist())) > 1, "a random network should not pick the same element for every image"


@needs_e2cnn
def test_trains_inside_canonicalized_and_round_trips():
    from canon.equivariant import EquivariantCanonicalizer, EquivariantEncoder

    torch.manual_seed(3)
    G = canon.as_group("C4")
    predictor = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3))
    model = canon.Canonicalized(
        predictor,
        EquivariantCanonicalizer(EquivariantEncoder(1, G, hidden=2, out_fields=4), size=9, prior_beta=10.0),
        contrastive_weight=0.0,
    )
    x, y = smooth_images(8, 1, 12), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(15):
        loss = model.loss(torch.nn.functional.cross_entropy(model(x), y))
        opt.zero_grad()
        loss.backward()
        first = first if first is not None else float(loss.detach())
        opt.step()
    # every filter gets a gradient (the last layer's biases shift all |G| scores alike: no gradient there)
    enc_grads = [p.grad for n, p in model.canonicalizer.encoder.named_parameters() if n.endswith("weights")]
    assert len(enc_grads) == 4 and all(g is not None and float(g.abs().sum()) > 1e-4 for g in enc_grads), (
        "the losses reach the equivariant encoder"
    )
    assert float(model.loss(torch.nn.functional.cross_entropy(model(x), y)).detach()) < first
    terms = model.losses()
    assert set(terms) == {"prior", "contrastive"} and all(torch.isfinite(v) for v in terms.values())
    with pytest.raises(ValueError, match="artifact loss"):
        model.canonicalizer.artifact_loss()
    # state_dict round trip: a fresh model with the loaded weights gives the same outputs
    copy = canon.Canonicalized(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3)),
        EquivariantCanonicalizer(EquivariantEncoder(1, G, hidden=2, out_fields=4), size=9),
    )
    copy.load_state_dict(model.state_dict())
    model.eval(), copy.eval()
    with torch.no_grad():
        assert torch.equal(copy(x), model(x))


@needs_e2cnn
def test_bad_arguments_are_named():
    from canon.equivariant import EquivariantCanonicalizer, EquivariantEncoder

    with pytest.raises(ValueError, match="at least 2 elements"):
        EquivariantEncoder(1, "C1")
    with pytest.raises(ValueError, match="kernel_size must be an odd"):
        EquivariantEncoder(1, "C4", kernel_size=4)
    with pytest.raises(ValueError, match="hidden must be an int >= 1"):
        EquivariantEncoder(1, "C4", hidden=0)
    with pytest.raises(TypeError, match="encoder must be an EquivariantEncoder"):
        EquivariantCanonicalizer(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"expected \(M, 1, h, w\)"):
        EquivariantEncoder(1, "C4", hidden=1, out_fields=1)(torch.rand(2, 3, 9, 9))


@needs_e2cnn
def test_equivariant_method_trains_and_evaluates(tmp_path):
    # the smoke test of `python -m canon.train --methods equivariant`, at a tiny size
    data = load_dataset("digits", 0.2, 0)
    args = [
        "--dataset",
        "digits",
        "--group",
        "C4",
        "--methods",
        "canonicalized,equivariant",
        "--epochs",
        "1",
        "--max-steps",
        "3",
    ]
    args += [
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--quiet",
        "--eq-hidden",
        "2",
        "--eq-fields",
        "4",
        "--output-dir",
        str(tmp_path),
    ]
    result = run(resolve(build_parser().parse_args(args)), data)
    eq = result["methods"]["equivariant"]
    assert eq["invariance_rate"] == 1.0 and eq["canonical_consistency"] == 1.0 and len(set(eq["per_element_acc"])) == 1
    assert 0.0 <= eq["score_tie_rate"] <= 1.0 and -1.0 <= eq["mean_pair_cos"] <= 1.0
    assert len(eq["angle_acc"]["acc"]) == 24
    cost = result["canonicalizer_cost"]
    assert cost["equivariant"]["canonicalizer_params"] > 0 and cost["equivariant"]["canonicalizer_step_ms"] > 0
    assert (tmp_path / "canonical_grid_equivariant.png").is_file()
    m = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert m.equivariant is not None and not m.equivariant.training
    x = data[1].x[:20]
    with torch.no_grad():
        assert torch.equal(m.equivariant(torch.rot90(x, 1, dims=(-2, -1))), m.equivariant(x))


@needs_e2cnn
def test_docstring_example():
    import doctest

    import canon.equivariant

    result = doctest.testmod(canon.equivariant, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
