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
    """The README's functional snippet, taken from the README, with a real encoder and reference."""
    import torch
    from conftest import readme_block

    import canon
    from canon.networks import ConvEncoder

    code = readme_block("The same pipeline, functionally:")
    scope = {"canon": canon, "B": 2, "x": torch.rand(2, 3, 40, 40), "reference": torch.randn(16)}
    scope["encoder"] = ConvEncoder(3, out_dim=16)
    exec(compile(code, "README.md", "exec"), scope)
    views, xc, loss_c = scope["views"], scope["xc"], scope["loss_c"]
    assert views.shape == (2, 8, 3, 96, 96) and xc.shape == scope["x"].shape and loss_c.ndim == 0
    assert scope["sel"].index.shape == (2,) and scope["vectors"].shape == (2, 8, 16)
