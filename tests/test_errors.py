"""Bad input raises a clear error naming the problem (rank, dtype, device, group, sizes, empty batch)."""

import pytest
import torch

import canon

X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: canon.orbit(torch.randn(3, 8, 8), "C4"), ValueError, r"4 dimensions.*\(B, C, H, W\).*\(3, 8, 8\)"),
        (lambda: canon.orbit(X.long(), "C4"), TypeError, "float16, bfloat16, float32 or float64.*int64"),
        (lambda: canon.orbit(X.numpy(), "C4"), TypeError, "torch.Tensor"),
        (lambda: canon.orbit(torch.randn(0, 3, 8, 8), "C4"), ValueError, "empty batch"),
        (lambda: canon.orbit(torch.randn(2, 3, 0, 8), "C4"), ValueError, "empty"),
        (lambda: canon.orbit(X, "Q4"), ValueError, "cannot parse 'Q4'"),
        (lambda: canon.orbit(X, "C\uff14"), ValueError, "cannot parse"),  # a full-width digit is not 4
        (lambda: canon.orbit(X, 4), TypeError, "group must be"),
        (lambda: canon.orbit(X, "C4", size=0), ValueError, "size must be positive"),
        (lambda: canon.orbit(X, "C4", size=(3, 4, 5)), TypeError, "size must be"),
        (lambda: canon.orbit(X, "C4", size=2.5), TypeError, "size must be"),
        (lambda: canon.orbit(X, "C4", crop_ratio=0.0), ValueError, r"crop_ratio must be in \(0, 1\]"),
        (lambda: canon.orbit(X, "C4", crop_ratio=1.5), ValueError, "crop_ratio"),
        (lambda: canon.orbit(X, "C4", crop_ratio="a"), TypeError, "crop_ratio"),
        (lambda: canon.orbit(X, "C4", padding="wrap"), ValueError, "padding must be one of"),
        (lambda: canon.orbit(X, "C4", interpolation="bicubic"), ValueError, "interpolation must be one of"),
        (lambda: canon.orbit(X, "C4", out_dtype=torch.int32), TypeError, "out_dtype"),
        (lambda: canon.select(torch.randn(2, 4), torch.randn(4)), ValueError, r"\(B, N, D\)"),
        (lambda: canon.select(torch.randn(2, 4, 5), torch.randn(3)), ValueError, "reference has length 3.*D=5"),
        (lambda: canon.select(torch.randn(2, 4, 5), torch.randn(5), beta=0), ValueError, "beta must be a positive"),
        (lambda: canon.select(torch.randn(2, 4, 5), torch.randn(5), beta=float("nan")), ValueError, "beta"),
        (lambda: canon.select(torch.randn(2, 4, 5), torch.randn(5), score="l2"), ValueError, "score must be one of"),
        (lambda: canon.select(torch.randn(0, 4, 5), torch.randn(5)), ValueError, "non-empty"),
        (
            lambda: canon.select(torch.randn(2, 4, 5), torch.randn(5).to(torch.int64)),
            TypeError,
            "reference must be float",
        ),
        (lambda: canon.canonicalize(X, torch.tensor([0, 4]), "C4"), ValueError, r"in \[0, 4\)"),
        (lambda: canon.canonicalize(X, torch.tensor([0]), "C4"), ValueError, r"shape \(B,\) = \(2,\)"),
        (lambda: canon.canonicalize(X, torch.tensor([0.0, 1.0]), "C4"), TypeError, "int32/int64"),
        (lambda: canon.canonicalize(X, [0, 1], "C4"), TypeError, "int32/int64 tensor"),
        (lambda: canon.transform(X, 9, "D4"), ValueError, r"element must be in \[0, 8\)"),
        (lambda: canon.invert(X, torch.tensor([0, 1]), "C4", kind="vector"), ValueError, "kind must be one of"),
        (
            lambda: canon.invert(torch.randn(2, 6, 4, 4), torch.tensor([0, 1]), "C4", kind="regular"),
            ValueError,
            "divisible by",
        ),
        (
            lambda: canon.invert_points(torch.randn(2, 3, 3), torch.tensor([0, 1]), "C4", 8),
            ValueError,
            "last dimension must be 2",
        ),
        (lambda: canon.invert_boxes(torch.randn(2, 3, 4), torch.tensor([0, 1]), "C4", "big"), TypeError, "image_size"),
        (lambda: canon.losses.contrastive_loss(torch.randn(2, 4)), ValueError, r"\(B, N, D\)"),
        (lambda: canon.losses.contrastive_loss(torch.randn(2, 4, 3), "cosine"), ValueError, "kind must be one of"),
        (lambda: canon.losses.prior_loss(torch.randn(2, 4), torch.tensor([0, 1, 2])), ValueError, r"shape \(B,\)"),
        (lambda: canon.OrbitCanonicalizer(torch.nn.Linear(2, 2), "C4", dim=2, crop_ratio=2), ValueError, "crop_ratio"),
        (lambda: canon.OrbitCanonicalizer(torch.nn.Linear(2, 2), "X", dim=2), ValueError, "group"),
        (lambda: canon.use_backend("cuda").__enter__(), ValueError, "backend must be one of"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_selection_shape_and_device_mismatch():
    sel = canon.select(torch.randn(3, 4, 5), torch.randn(5))
    with pytest.raises(ValueError, match=r"\(B, N\) = \(2, 4\)"):
        canon.canonicalize(X, sel, "C4")
    sel2 = canon.select(torch.randn(2, 4, 5), torch.randn(5))
    with pytest.raises(ValueError, match=r"\(B, N\) = \(2, 8\)"):
        canon.canonicalize(X, sel2, "D4")
    meta = canon.Selection(sel2.scores, sel2.probs, sel2.index.to("meta"), sel2.onehot)
    with pytest.raises(ValueError, match="meta"):
        canon.canonicalize(X, meta, "C4")
    with pytest.raises(ValueError, match="one device"):
        canon.select(torch.randn(2, 4, 5), torch.randn(5, device="meta"))


def test_backend_selection(monkeypatch):
    assert canon.get_backend() in ("auto", "reference", "triton")
    with canon.use_backend("reference"):
        assert canon.get_backend() == "reference"
        with canon.use_backend("auto"):
            assert canon.get_backend() == "auto"
        assert canon.get_backend() == "reference"
    from canon import backend

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with canon.use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        backend.resolve_backend(X)
    with canon.use_backend("auto"):
        assert backend.resolve_backend(X) == "reference"


# -- issue 19: inputs that came out as raw torch/Python errors, silent NaN or silently accepted ---------
ENC = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: canon.losses.prior_loss(torch.zeros(0, 4)), ValueError, "non-empty"),  # was NaN
        (lambda: canon.orbit(X, "C4", crop_ratio=5e-324), ValueError, "crop_ratio must be in"),  # ZeroDivisionError
        (lambda: canon.orbit(X, "C4", size=100000), ValueError, r"views .* would take [0-9.]+ GiB, more than"),
        (lambda: canon.orbit(X.to_sparse(), "C4"), TypeError, r"dense \(strided\) tensor, got layout torch.sparse"),
        (lambda: canon.orbit(X.to_mkldnn(), "C4"), TypeError, r"dense \(strided\) tensor, got layout"),
        (
            lambda: canon.orbit(torch.nested.nested_tensor([torch.rand(3, 8, 8)] * 2), "C4"),
            TypeError,
            "got a nested tensor",
        ),
        (lambda: canon.OrbitCanonicalizer(ENC, "C4", dim=True), ValueError, "dim must be a positive int"),
        (lambda: canon.OrbitCanonicalizer(ENC, "C4", dim=8, seed=2**70), ValueError, "seed must be an int"),
        (lambda: canon.losses.identity_metric(torch.rand(4)), TypeError, "int32/int64"),
    ],
)
def test_bad_input_named_not_raw(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_a_bool_setting_is_refused_even_after_its_number_was_cached():
    # True == 1 == 1.0 hash alike: the per-setting plan cache handed beta=True the checked plan of beta=1
    v, r = torch.randn(2, 4, 3), torch.randn(3)
    canon.select(v, r, beta=1, tau=1.0)
    canon.orbit(X, "C4", crop_ratio=1)
    canon.select_losses(v, r, prior_beta=1)
    with pytest.raises(TypeError, match="beta must be a positive number, got bool"):
        canon.select(v, r, beta=True)
    with pytest.raises(TypeError, match="tau must be a positive number, got bool"):
        canon.select(v, r, tau=True)
    with pytest.raises(TypeError, match="crop_ratio must be a number"):
        canon.orbit(X, "C4", crop_ratio=True)
    with pytest.raises(TypeError, match="prior_beta must be a positive number, got bool"):
        canon.select_losses(v, r, prior_beta=True)


def test_an_empty_batch_of_points_or_boxes_maps_to_an_empty_batch():
    empty = torch.zeros(0, dtype=torch.int64)
    assert canon.invert_points(torch.zeros(0, 3, 2), empty, "C4", 8).shape == (0, 3, 2)
    assert canon.invert_boxes(torch.zeros(0, 3, 4), empty, "C4", 8).shape == (0, 3, 4)


@pytest.mark.parametrize(
    "transform,call",
    [
        ("vmap", lambda: torch.func.vmap(lambda t: canon.orbit(t[None], "C4"))(X)),
        ("grad", lambda: torch.func.grad(lambda t: canon.orbit(t, "C4").sum())(X)),
        ("jacrev", lambda: torch.func.jacrev(lambda v: canon.select(v, torch.randn(3)).probs)(torch.randn(2, 4, 3))),
        ("jacrev", lambda: torch.func.jacrev(canon.losses.contrastive_loss)(torch.randn(2, 4, 3))),
    ],
)
def test_torch_func_transforms_get_canons_message(transform, call):
    with pytest.raises(RuntimeError, match=r"canon\.\w+: forward-mode AD and torch.func transforms .* torch.autograd"):
        call()


def test_what_the_message_offers_instead_works():
    # torch.autograd.functional.jacobian (reverse mode, no functorch) differentiates through the ops
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: canon.orbit(t, "C4")[:, 1], x)
    expected = torch.autograd.functional.jacobian(lambda t: torch.rot90(t, 1, dims=(-2, -1)), x)
    assert torch.equal(jac, expected)
