"""Guards of the public API outside the training command: the equiadapt-compatible class refuses what
it cannot honour, no silent wrong result (image ranges, indices, large groups), the module's state
after a forward stays out of copies, and bad input gets a message naming the problem."""

import copy
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import equiadapt_hparams

import canon
from canon.compat import OptimizedGroupEquivariantImageCanonicalization as Compat
from canon.data import check_data, load_npz
from canon.groups import Group, as_group
from canon.networks import ConvEncoder
from canon.train.evaluate import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = torch.rand(2, 1, 8, 8)


def _hp(**kw):
    return equiadapt_hparams(**{"resize_shape": 8, **kw})


# -- item 5: the equiadapt-compatible class ------------------------------------------
@pytest.mark.parametrize(
    "hp, in_shape, exc, message",
    [
        (_hp(beta=float("nan")), (1, 8, 8), ValueError, "beta must be a positive finite number, got nan"),
        (_hp(beta=0), (1, 8, 8), ValueError, "beta must be a positive finite number, got 0.0"),
        (_hp(beta=-1), (1, 8, 8), ValueError, "beta"),
        (_hp(beta=float("inf")), (1, 8, 8), ValueError, "beta"),
        (_hp(beta="abc"), (1, 8, 8), TypeError, "beta must be a positive number, got str"),
        (_hp(learn_ref_vec="False"), (1, 8, 8), TypeError, "learn_ref_vec must be True or False, got 'False'"),
        (_hp(learn_ref_vec=1), (1, 8, 8), TypeError, "learn_ref_vec"),
        (_hp(num_rotations=4.7), (1, 8, 8), ValueError, "num_rotations must be an integer >= 1, got 4.7"),
        (_hp(num_rotations=0), (1, 8, 8), ValueError, "num_rotations"),
        (_hp(num_rotations=True), (1, 8, 8), ValueError, "num_rotations"),
        (_hp(artifact_err_wt=-1), (1, 8, 8), ValueError, "artifact_err_wt must be a finite number >= 0"),
        (_hp(artifact_err_wt=float("nan")), (1, 8, 8), ValueError, "artifact_err_wt"),
        (
            _hp(input_crop_ratio=float("nan")),
            (3, 8, 8),
            ValueError,
            r"input_crop_ratio must be a number in \(0, 1\], got nan",
        ),
        (_hp(input_crop_ratio=0), (3, 8, 8), ValueError, "input_crop_ratio"),
        (_hp(input_crop_ratio=1.5), (3, 8, 8), ValueError, "input_crop_ratio"),
        (_hp(resize_shape=0), (3, 8, 8), ValueError, "resize_shape must be a positive int"),
        (_hp(contrastive_kind="cosine"), (1, 8, 8), ValueError, "contrastive_kind must be one of"),
        (_hp(), (3, 0, 0), ValueError, r"in_shape must be \(C, H, W\) with positive integers, got \(3, 0, 0\)"),
        (_hp(), (1, 8.5, 8), ValueError, "in_shape"),
    ],
)
def test_compat_refuses_bad_hyperparameters(hp, in_shape, exc, message):
    with pytest.raises(exc, match=message) as e:
        Compat(ConvEncoder(in_shape[0] if in_shape[0] else 1, out_dim=8), hp, in_shape)
    assert str(e.value).startswith("OptimizedGroupEquivariantImageCanonicalization: ")


def test_compat_accepts_what_equiadapt_configs_hold():
    layer = Compat(
        ConvEncoder(1, out_dim=8),
        _hp(learn_ref_vec=np.bool_(True), artifact_err_wt=None, num_rotations=np.int64(4)),
        (1, 8, 8),
    )
    assert (
        layer.learn_ref_vec is True
        and layer.reference_vector.requires_grad
        and layer.artifact_err_wt == 0.0
        and layer.num_group == 4
    )
    assert not Compat(ConvEncoder(1, out_dim=8), _hp(), (1, 8, 8)).reference_vector.requires_grad


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.get_optimization_specific_loss(),
        lambda m: m.get_prior_regularization_loss(),
        lambda m: m.get_identity_metric(),
        lambda m: m.invert_canonicalization(torch.rand(2, 4, 8, 8)),
        lambda m: m.invert_canonicalization(torch.rand(2, 4, 8, 8), induced_rep_type="scalar"),
    ],
)
def test_compat_methods_before_canonicalize(call):
    layer = Compat(ConvEncoder(1, out_dim=8), _hp(), (1, 8, 8))
    with pytest.raises(RuntimeError, match="nothing canonicalized yet; call canonicalize"):
        call(layer)
    layer(X)
    assert torch.is_tensor(call(layer))  # after a forward they work


def test_compat_network_returning_a_tuple():
    class TupleNet(torch.nn.Module):
        out_vector_size = 8

        def forward(self, x):
            return x.flatten(1)[:, :8], None

    with pytest.raises(
        ValueError, match=r"canonicalization_network must return a \(G·B, D\) = \(8, D\) tensor, got a tuple"
    ):
        Compat(TupleNet(), _hp(), (1, 8, 8))(X)


def test_compat_state_stays_out_of_copies():
    layer = Compat(ConvEncoder(1, out_dim=8), _hp(learn_ref_vec=True), (1, 8, 8)).train()
    layer(X)
    twin = copy.deepcopy(layer)
    assert twin.canonicalization_info_dict == {} and layer.canonicalization_info_dict
    assert torch.equal(twin.reference_vector, layer.reference_vector)


# -- item 6: silent wrong results ----------------------------------------------------
@pytest.mark.parametrize("fn", [canon.invert_points, canon.invert_boxes])
@pytest.mark.parametrize(
    "size, exc",
    [
        (0, ValueError),
        (-4, ValueError),
        ((8, 0), ValueError),
        ((0, 8), ValueError),
        (True, TypeError),
        (8.0, TypeError),
        ((8,), TypeError),
    ],
)
def test_invert_points_and_boxes_refuse_bad_image_size(fn, size, exc):
    pts = torch.zeros(1, 1, 2 if fn is canon.invert_points else 4)
    with pytest.raises(exc, match=rf"canon\.{fn.__name__}: image_size must be"):
        fn(pts, torch.tensor([1]), "C4", size)
    assert fn(pts, torch.tensor([1]), "C4", np.int64(8)).shape == pts.shape  # numpy ints are ints


@pytest.mark.parametrize(
    "applied", [torch.tensor([-1, 0]), torch.tensor([0, 4]), torch.tensor([0, 1], dtype=torch.int32) - 5]
)
def test_prior_target_refuses_indices_out_of_range(applied):
    with pytest.raises(ValueError, match=r"canon\.losses\.prior_target: applied must hold element indices in \[0, 4\)"):
        canon.losses.prior_target("C4", applied, 2)
    assert canon.losses.prior_target("C4", torch.tensor([0, 1, 3]), 3).tolist() == [0, 3, 1]


def test_prior_loss_refuses_target_out_of_range():
    with pytest.raises(
        ValueError,
        match=r"canon\.losses\.prior_loss: target must hold element indices in \[0, 4\), got values in \[0, 7\]",
    ):
        canon.losses.prior_loss(torch.randn(2, 4), torch.tensor([0, 7]))
    net = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8, hidden=8), "C4")
    net(X)
    with pytest.raises(ValueError, match="target must hold element indices"):
        net.prior_loss(torch.tensor([0, -1]))


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535)])
def test_unsigned_images_are_scaled_by_their_range(tmp_path, dtype, top):
    x = np.array([0, top // 2, top], dtype=dtype).reshape(3, 1, 1) * np.ones((1, 4, 4), dtype=dtype)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0]))
    d = load_npz(str(tmp_path / "d.npz"))
    assert d.x.dtype == torch.float32 and float(d.x.max()) == 1.0 and float(d.x.min()) == 0.0
    assert float(d.x[1].max()) == pytest.approx((top // 2) / top, abs=1e-7)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_integer_images_without_a_range_are_refused(dtype):
    with pytest.raises(ValueError, match=f"images of dtype {np.dtype(dtype).name} have no agreed pixel range"):
        check_data(np.zeros((3, 4, 4), dtype=dtype), np.array([0, 1, 0]), "test")
    x, _ = check_data(np.ones((3, 4, 4), dtype=bool), np.array([0, 1, 0]), "test")  # bool is 0/1
    assert float(x.max()) == 1.0


# -- item 7: large groups ------------------------------------------------------------
@pytest.mark.parametrize("spec", ["C1", "D1", "C5", "D4", "D7", "C12"])
def test_vectorised_group_law_matches_the_scalar_one(spec):
    g = as_group(spec)
    a, b = torch.meshgrid(torch.arange(g.order), torch.arange(g.order), indexing="ij")
    expected = torch.tensor([[g.compose(i, j) for j in range(g.order)] for i in range(g.order)])
    assert torch.equal(g.compose_indices(a, b), expected) and torch.equal(g.cayley_table, expected)
    assert g.inverse_indices(torch.arange(g.order)).tolist() == [g.inverse(i) for i in range(g.order)]
    with pytest.raises(ValueError, match=rf"group {g.name}: a must hold indices in \[0, {g.order}\)"):
        g.compose_indices(torch.tensor([g.order]), 0)
    with pytest.raises(TypeError, match="integer tensor"):
        g.inverse_indices(torch.tensor([0.0]))


def test_huge_group_needs_no_table():
    g = as_group("C100000")
    assert g.inverse_table[1] == 99999 and g.compose_indices(torch.tensor([99999]), torch.tensor([2])).item() == 1
    with pytest.raises(ValueError, match=r"Cayley table would hold 100000² = 10,000,000,000 entries"):
        _ = g.cayley_table


def test_evaluation_does_not_build_the_cayley_table(monkeypatch):
    def no_table(self):
        raise AssertionError("evaluate built the O(N²) Cayley table")

    monkeypatch.setattr(Group, "cayley_table", property(no_table))
    from canon.data import ImageData
    from canon.train.loop import CanonicalizedClassifier

    torch.manual_seed(0)
    can = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8, hidden=4), "D3")
    model = CanonicalizedClassifier(can, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)))
    test = ImageData(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]), 3)
    m = evaluate({"canonicalized": model}, test, as_group("D3"), "cpu", 4)["canonicalized"]
    # orientation consistency recomputed directly from the chosen elements
    g = as_group("D3")
    with torch.no_grad():
        els = []
        for e in range(g.order):
            can(canon.transform(test.x, e, g))
            els.append(can.element.clone())
    direct = torch.stack(
        [torch.tensor([g.compose(int(els[e][b]), e) for b in range(6)]) == els[0] for e in range(g.order)]
    ).all(0)
    assert m["orientation_consistency"] == pytest.approx(float(direct.double().mean()), abs=1e-12)


# -- item 8: the module's state after a forward -----------------------------------------
def test_state_after_forward_stays_out_of_copies_and_pickles():
    torch.manual_seed(0)
    net = canon.OrbitCanonicalizer(ConvEncoder(1, out_dim=8, hidden=8), "C8", size=9, learn_reference=True).train()
    empty = io.BytesIO()
    torch.save(net, empty)
    x = torch.rand(32, 1, 28, 28)
    xc = net(x)
    twin = copy.deepcopy(net)  # raised before: the state held non-leaf tensors
    assert twin.state is None and net.state is not None
    assert all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(), net.state_dict().values()))
    saved = io.BytesIO()
    torch.save(net, saved)
    assert len(saved.getvalue()) == len(empty.getvalue())  # the last batch is not stored
    loaded = torch.load(io.BytesIO(saved.getvalue()), weights_only=False)
    assert loaded.state is None and torch.equal(loaded(x), twin(x))
    # the public API still works on the original, and the losses still train the encoder
    assert net.selection.index.shape == (32,) and net.scores.shape == (32, 8) and net.element.shape == (32,)
    assert net.invert(xc).shape == x.shape
    (net.contrastive_loss() + net.prior_loss()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())


def test_encoder_returning_a_tuple():
    class TupleEncoder(torch.nn.Module):
        out_dim = 4

        def forward(self, x):
            return x.flatten(1)[:, :4], x

    with pytest.raises(
        TypeError, match=r"OrbitCanonicalizer: the encoder must return one \(M, D\) tensor, got a tuple"
    ):
        canon.OrbitCanonicalizer(TupleEncoder(), "C4")(X)


# -- item 9: clear messages -----------------------------------------------------------
def test_bad_canon_backend_names_the_variable():
    env = {**os.environ, "CANON_BACKEND": "garbage"}
    proc = subprocess.run(
        [sys.executable, "-c", "import canon"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last == "ValueError: environment variable CANON_BACKEND must be one of ('auto', 'reference', 'triton') "
        "(or unset), got 'garbage'"
    )
