"""Built-in datasets, .npz loading, the seeded split and the transformed test sets."""

import numpy as np
import pytest
import torch

import canon
from canon.data import check_data, load_dataset, load_digits, load_mnist, load_npz, stratified_split, transformed_copies


def test_mnist_bundled_digits():
    d = load_mnist()
    assert d.x.shape == (5000, 1, 28, 28) and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert torch.bincount(d.y).tolist() == [500] * 10
    assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
    # digits are centred: the border ring is (almost) empty, the centre is not
    assert float(d.x[..., :2, :].mean()) < 1e-3 < float(d.x[..., 10:18, 10:18].mean())


def test_digits_and_split_are_seeded_stratified_and_disjoint():
    d = load_digits()
    assert d.x.shape == (1797, 1, 8, 8) and 0.0 <= float(d.x.min()) and float(d.x.max()) == 1.0
    tr1, te1 = stratified_split(d.y, 0.2, seed=3)
    tr2, te2 = stratified_split(d.y, 0.2, seed=3)
    _, te3 = stratified_split(d.y, 0.2, seed=4)
    assert torch.equal(te1, te2) and torch.equal(tr1, tr2) and not torch.equal(te1, te3)
    assert set(tr1.tolist()).isdisjoint(te1.tolist()) and tr1.numel() + te1.numel() == 1797
    per_class_test = torch.bincount(d.y[te1], minlength=10).float() / torch.bincount(d.y, minlength=10).float()
    assert float((per_class_test - 0.2).abs().max()) < 0.02


def test_load_dataset_mnist_split():
    train, test = load_dataset("mnist", test_fraction=0.2, seed=0)
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(test.y).tolist() == [100] * 10


def test_transformed_copies_follow_canon_transform():
    x = torch.rand(3, 1, 9, 9)
    copies = transformed_copies(x, "D4")
    assert len(copies) == 8 and torch.equal(copies[0], x)
    assert torch.equal(copies[1], torch.rot90(x, 1, dims=(-2, -1))) and torch.equal(
        copies[4], torch.flip(x, dims=(-1,))
    )
    c8 = transformed_copies(x, "C8")
    assert torch.equal(c8[3], canon.transform(x, 3, "C8"))


def test_npz_round_trip(tmp_path):
    x = (np.arange(5 * 6 * 7) % 256).astype(np.uint8).reshape(5, 6, 7)
    y = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_npz(str(tmp_path / "d.npz"))
    assert d.x.shape == (5, 1, 6, 7) and d.num_classes == 3
    assert torch.allclose(d.x[:, 0], torch.from_numpy(x).float() / 255)
    # float images stay as they are, with channels
    np.savez(tmp_path / "f.npz", x=np.full((4, 3, 5, 5), 2.5, np.float64), y=np.arange(4))
    assert float(load_npz(str(tmp_path / "f.npz")).x.max()) == 2.5


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((4, 2)), np.zeros(4, int), "must have shape"),
        (np.zeros((4, 1, 2, 2, 2)), np.zeros(4, int), "must have shape"),
        (np.zeros((4, 5, 5)), np.zeros(3, int), "4 images but 3 labels"),
        (np.zeros((4, 5, 5)), np.zeros((4, 1), int), "labels must have shape"),
        (np.full((4, 5, 5), np.nan), np.zeros(4, int), "NaN"),
        (np.zeros((4, 5, 5)), np.array([0, 1, 0.5, 1]), "integers"),
        (np.zeros((4, 5, 5)), np.array([0, -1, 0, 1]), ">= 0"),
        (np.zeros((0, 5, 5)), np.zeros(0, int), "empty"),
    ],
)
def test_malformed_data_fails_fast(x, y, message):
    with pytest.raises(ValueError, match=message):
        check_data(x, y, "test")


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"missing array\(s\) \['y'\]"):
        load_npz(str(tmp_path / "nolabels.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "inf.npz", x=np.array([[[np.inf]]] * 2), y=np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN/Inf"):
        load_npz(str(tmp_path / "inf.npz"))
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    # a truncated zip and a zip with damaged member data
    np.savez(tmp_path / "good.npz", x=np.random.rand(20, 8, 8), y=np.arange(20) % 4)
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(raw[: len(raw) // 2])
    damaged = bytearray(raw)
    damaged[100:140] = bytes(40)
    (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
    for name in ("half.npz", "damaged.npz"):
        with pytest.raises(ValueError, match="not a readable .npz"):
            load_npz(str(tmp_path / name))
    # labels that are not class indices, complex images
    np.savez(tmp_path / "biglabel.npz", x=np.random.rand(20, 8, 8), y=np.array([0] * 19 + [10**9]))
    with pytest.raises(ValueError, match="class indices 0..K-1"):
        load_npz(str(tmp_path / "biglabel.npz"))
    np.savez(tmp_path / "complex.npz", x=np.random.rand(4, 8, 8) + 1j, y=np.arange(4))
    with pytest.raises(ValueError, match="real numbers"):
        load_npz(str(tmp_path / "complex.npz"))


@pytest.mark.parametrize("module", ["canon.data", "canon.predictors"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0


def test_channels_last_arrays_are_read_as_such_with_a_warning(tmp_path):
    # (N, H, W, C) as PIL/OpenCV/TensorFlow store images: it crashed 40 lines deep in training before
    rgb = np.random.default_rng(0).random((6, 10, 12, 3), dtype=np.float32)
    with pytest.warns(UserWarning, match=r"channels-last \(N, H, W, C\) with C = 3"):
        x, _ = check_data(rgb, np.arange(6) % 2, "rgb.npz")
    assert x.shape == (6, 3, 10, 12) and torch.equal(x, torch.from_numpy(rgb).permute(0, 3, 1, 2))
    with pytest.warns(UserWarning, match="C = 1"):
        assert check_data(rgb[..., :1], np.arange(6) % 2, "grey.npz")[0].shape == (6, 1, 10, 12)
    # (N, C, H, W) stays as it is, and tiny planes are not guessed at
    assert check_data(np.moveaxis(rgb, -1, 1), np.arange(6) % 2, "ok.npz")[0].shape == (6, 3, 10, 12)
    assert check_data(np.zeros((6, 3, 4, 3), np.float32), np.arange(6) % 2, "tiny.npz")[0].shape == (6, 3, 4, 3)


def test_textures_are_non_overlapping_patches_of_the_three_photographs():
    skimage_data = pytest.importorskip("skimage.data", reason="--dataset textures needs scikit-image")
    from canon.data import TEXTURES, load_textures

    data = load_textures()
    assert data.x.shape == (972, 1, 28, 28) and data.x.dtype == torch.float32 and data.num_classes == 3
    assert torch.equal(data.y.bincount(), torch.tensor([324, 324, 324]))
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0
    # patch (r, c) of texture k is that 28×28 square of the photograph, scaled to [0, 1]
    for k, name in enumerate(TEXTURES):
        img = torch.from_numpy(getattr(skimage_data, name)().astype(np.float32) / 255.0)
        first = int((data.y == k).nonzero()[0])
        assert torch.equal(data.x[first + 0, 0], img[:28, :28])
        assert torch.equal(data.x[first + 18 + 2, 0], img[28:56, 56:84])  # row 1, column 2 of 18
    train, test = load_dataset("textures", 0.2, 0)
    assert len(train) == 777 and len(test) == 195 and torch.equal(test.y.bincount(), torch.tensor([65, 65, 65]))


def test_textures_without_scikit_image_names_the_extra(monkeypatch):
    import sys

    from canon.data import load_textures

    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage.data now raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"canon-equivariance\[textures\].*pip install scikit-image"):
        load_textures()
