"""canon.Canonicalized: invariant and equivariant outputs, losses with default weights, state_dict round trip."""

import doctest
import io

import pytest
import torch
from conftest import assert_close, readme_block
from torch import nn

import canon
import canon.wrappers
from canon.networks import ConvEncoder


def canonicalizer(group="C4", channels=1, seed=0, **kw):
    torch.manual_seed(seed)
    return canon.OrbitCanonicalizer(ConvEncoder(channels, 8, hidden=4), group, seed=seed, **kw)


def classifier(channels=1, size=12, classes=5):
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes))


def segmenter(channels=1, out=3):
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, out, 3, padding=1))


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_invariant_output_is_exactly_invariant(group):
    model = canon.Canonicalized(classifier(2), canonicalizer(group, 2)).eval()
    x = torch.rand(3, 2, 12, 12)
    with torch.no_grad():
        base = model(x)
        assert torch.equal(base, model.predictor(model.canonicalizer(x)))
        for g in range(canon.as_group(group).order):
            assert torch.equal(model(canon.transform(x, g, group)), base), f"element {g}"


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_dense_output_is_exactly_equivariant(group):
    model = canon.Canonicalized(segmenter(), canonicalizer(group), output="dense").eval()
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        base = model(x)
        assert base.shape == (2, 3, 12, 12)
        for g in range(canon.as_group(group).order):
            assert torch.equal(model(canon.transform(x, g, group)), canon.transform(base, g, group)), f"element {g}"


def test_dense_regular_output_permutes_the_group_axis():
    # out(T_a x)[:, k, h] == T_a out(x)[:, k, a⁻¹·h] for channels grouped as (K, |G|)
    G = canon.as_group("D4")
    N = G.order
    model = canon.Canonicalized(segmenter(out=2 * N), canonicalizer("D4"), output="dense", kind="regular").eval()
    x = torch.rand(2, 1, 10, 10)
    with torch.no_grad():
        base = model(x).reshape(2, 2, N, 10, 10)
        for a in range(N):
            got = model(canon.transform(x, a, G)).reshape(2, 2, N, 10, 10)
            for h in range(N):
                src = G.compose(G.inverse(a), h)
                assert torch.equal(got[:, :, h], canon.transform(base[:, :, src], a, G)), f"a={a}, h={h}"


def test_dense_outputs_in_a_dict_are_each_inverted():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.seg, self.aux = segmenter(), segmenter(out=2)

        def forward(self, x):
            return {"out": self.seg(x), "aux": self.aux(x)}

    model = canon.Canonicalized(TwoHeads(), canonicalizer("C4"), output="dense").eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        base, turned = model(x), model(torch.rot90(x, 1, dims=(-2, -1)))
    assert set(turned) == {"out", "aux"}
    for k in base:
        assert torch.equal(turned[k], torch.rot90(base[k], 1, dims=(-2, -1))), k


def test_loss_is_the_weighted_sum_with_the_documented_defaults():
    model = canon.Canonicalized(classifier(), canonicalizer("C8", learn_reference=True)).train()
    assert (model.prior_weight, model.contrastive_weight, model.artifact_weight) == (1.0, 0.1, 0.0)
    x, y = torch.rand(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    task = nn.functional.cross_entropy(model(x), y)
    terms = model.losses()
    assert set(terms) == {"prior", "contrastive"}
    assert_close(model.loss(task), task + 1.0 * terms["prior"] + 0.1 * terms["contrastive"])
    assert_close(model.loss(), terms["prior"] + 0.1 * terms["contrastive"])
    model.loss(task).backward()
    enc_grad = sum(p.grad.abs().sum() for p in model.canonicalizer.encoder.parameters())
    assert enc_grad > 0 and model.canonicalizer.reference.grad.abs().sum() > 0, (
        "the losses must reach the canonicalizer"
    )


def test_loss_with_augmentation_targets_the_inverse_element():
    model = canon.Canonicalized(classifier(), canonicalizer("C8"), artifact_weight=0.5).train()
    model(torch.rand(3, 1, 12, 12))
    applied = torch.tensor([1, 3, 0])
    target = canon.losses.prior_target("C8", applied, 3)
    assert target.tolist() == [7, 5, 0]
    assert_close(model.losses(applied=applied)["prior"], model.canonicalizer.prior_loss(target))
    gen = torch.Generator().manual_seed(0)
    terms = model.losses(target=target, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"prior", "contrastive", "artifact"}
    expected = 2.0 + terms["prior"] + 0.1 * terms["contrastive"] + 0.5 * terms["artifact"]
    assert_close(model.loss(torch.tensor(2.0), applied=applied, generator=gen), expected)
    with pytest.raises(ValueError, match="target or applied"):
        model.loss(target=target, applied=applied)


def test_zero_weights_skip_terms():
    model = canon.Canonicalized(classifier(), canonicalizer(), prior_weight=0.0, contrastive_weight=0.0)
    model(torch.rand(2, 1, 12, 12))
    assert float(model.loss().detach()) == 0.0
    assert float(model.loss(torch.tensor(1.5))) == 1.5


def test_state_dict_round_trip():
    a = canon.Canonicalized(segmenter(), canonicalizer("D4", seed=0), output="dense").eval()
    b = canon.Canonicalized(segmenter(), canonicalizer("D4", seed=1), output="dense").eval()
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        assert not torch.equal(a(x), b(x))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert torch.equal(a.canonicalizer.element, b.canonicalizer.element)
    assert set(a.state_dict()) == set(b.state_dict())
    assert "canonicalizer.reference" in a.state_dict(), "the fixed reference vector must travel with the weights"


def test_invert_and_helpers_follow_the_last_forward():
    model = canon.Canonicalized(classifier(), canonicalizer("C4")).eval()
    x = torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        xc = model.canonicalize(x)
        model(x)
    assert torch.equal(model.invert(xc), x)
    assert model.group.name == "C4"
    assert 0.0 <= float(model.identity_metric()) <= 1.0
    assert "output='invariant'" in repr(model)


def test_errors_are_clear():
    can = canonicalizer()
    with pytest.raises(TypeError, match="predictor must be an nn.Module"):
        canon.Canonicalized(lambda x: x, can)
    with pytest.raises(TypeError, match="canonicalizer must be a canon.OrbitCanonicalizer"):
        canon.Canonicalized(classifier(), ConvEncoder(1, 8))
    with pytest.raises(ValueError, match="output"):
        canon.Canonicalized(classifier(), can, output="logits")
    with pytest.raises(ValueError, match="contrastive_weight must be a finite number >= 0"):
        canon.Canonicalized(classifier(), can, contrastive_weight=-1)
    dense_logits = canon.Canonicalized(classifier(), can, output="dense")
    with pytest.raises(ValueError, match=r"\(B, K, H', W'\)"):
        dense_logits(torch.rand(2, 1, 12, 12))
    with pytest.raises(RuntimeError, match="call forward"):
        canon.Canonicalized(classifier(), canonicalizer()).loss()


def test_docstring_examples():
    result = doctest.testmod(canon.wrappers, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_readme_wrapper_example_runs():
    code = readme_block("### One line: `canon.Canonicalized`")
    backbone = [line for line in code.splitlines() if "torchvision:" in line]
    assert len(backbone) == 1, backbone
    try:
        import torchvision  # noqa: F401
    except Exception:  # without torchvision that line must fail with the install advice, not a traceback deep down
        code = "\n".join(line for line in code.splitlines() if "torchvision:" not in line)
        from canon.networks import backbone_encoder

        with pytest.raises(ImportError, match="install them as a pair from the same index"):
            exec(compile(backbone[0], "README.md", "exec"), {"backbone_encoder": backbone_encoder})
    G = canon.as_group("C8")
    scope = {
        "my_classifier": classifier(3, 32, 10),
        "my_segmenter": segmenter(3, 2),
        "my_head": segmenter(3, 2 * G.order),
        "x": torch.rand(2, 3, 32, 32),
        "y": torch.tensor([1, 2]),
        "task": torch.tensor(0.5),
        "a": torch.tensor([3, 0]),
    }
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["logits"].shape == (2, 10) and scope["loss"].ndim == 0
    assert scope["seg"](scope["x"]).shape == (2, 2, 32, 32)
