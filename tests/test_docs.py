"""The runnable examples in the public docstrings run and print what they claim."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "canon.functional",
        "canon.groups",
        "canon.losses",
        "canon.modules",
        "canon.networks",
        "canon.compat",
        "canon.backend",
    ],
)
def test_docstring_examples(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs={"torch": importlib.import_module("torch")}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has no examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module}"


def test_readme_functional_example():
    # the functional snippet of the README, with a real encoder and reference
    import torch

    import canon
    from canon.networks import ConvEncoder

    B, x = 2, torch.rand(2, 3, 40, 40)
    encoder, reference = ConvEncoder(3, out_dim=16), torch.randn(16)
    views = canon.orbit(x, "D4", size=96, crop_ratio=0.8)
    vectors = encoder(views.flatten(0, 1)).unflatten(0, (B, 8))
    sel = canon.select(vectors, reference, beta=1.0)
    xc = canon.canonicalize(x, sel, "D4")
    loss_c = canon.losses.contrastive_loss(vectors)
    assert views.shape == (2, 8, 3, 96, 96) and xc.shape == x.shape and loss_c.ndim == 0
