"""The registered canon:: ops pass torch.library.opcheck on both backends."""

import pytest
import torch

import canon  # noqa: F401  (registers the ops)
from canon.geometry import view_matrices_tensor
from canon.groups import as_group

BACKENDS = [
    "reference",
    pytest.param("triton", marks=pytest.mark.skipif(__import__("importlib").util.find_spec("triton") is None, reason="triton not installed")),
]


def _samples(rng):
    x = torch.randn(2, 2, 5, 5, generator=rng, requires_grad=True)
    m8, e8 = view_matrices_tensor(as_group("C8"), (5, 5), (4, 4), 0.9, "cpu")
    m4, e4 = view_matrices_tensor(as_group("C4"), (5, 5), (5, 5), 1.0, "cpu")
    mf, ef = view_matrices_tensor(as_group("C8"), (5, 5), (5, 5), 1.0, "cpu")
    v = torch.randn(2, 4, 6, generator=rng, requires_grad=True)
    r = torch.randn(6, generator=rng, requires_grad=True)
    w = torch.zeros(2, 8, requires_grad=True)
    idx = torch.tensor([3, 6])
    g = torch.randn(2, 8, 2, 4, 4, generator=rng)
    return [
        (torch.ops.canon.orbit.default, (x, m8, e8, 4, 4, "reflection", "bilinear", None, False)),
        (torch.ops.canon.orbit.default, (x, m4, e4, 5, 5, "zeros", "bilinear", torch.float32, True)),
        (torch.ops.canon.orbit_backward.default, (g, m8, e8, 5, 5, "border", "nearest", torch.float32)),
        (torch.ops.canon.transform.default, (x, w, idx, mf, ef, "border", "bilinear")),
        (torch.ops.canon.transform_backward.default, (torch.randn(2, 2, 5, 5, generator=rng), x.detach(), idx, mf, ef, "zeros", "bilinear", True, True)),
        (torch.ops.canon.select.default, (v, r, 1.5, "cosine", True, None, 1.0)),
        (torch.ops.canon.select.default, (v, r, 1.0, "dot", False, torch.randn(2, 4, generator=rng), 0.5)),
        (
            torch.ops.canon.select_backward.default,
            (
                torch.randn(2, 4, generator=rng),
                None,
                torch.randn(2, 4, generator=rng),
                v.detach(),
                r.detach(),
                torch.softmax(torch.randn(2, 4, generator=rng), -1),
                1.0,
                "cosine",
                True,
                None,
                1.0,
            ),
        ),
        (torch.ops.canon.contrastive_loss.default, (v, "normalized")),
        (torch.ops.canon.contrastive_loss.default, (v, "raw")),
        (torch.ops.canon.contrastive_loss_backward.default, (torch.tensor(1.0), v.detach(), "normalized")),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_every_op(backend, rng):
    with canon.use_backend(backend):
        for op, args in _samples(rng):
            torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))
