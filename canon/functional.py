"""Functional API: orbit → (encoder) → select → canonicalize → invert.

Conventions shared by every function here (SPEC §2):
    * images are (B, C, H, W), row 0 on top; pixel centres at integer coordinates;
    * element ``k + n·r`` of D_n is ``R_k ∘ F^r`` (flip first, then rotate), C_n has
      ``r = 0``; ``R_1`` of C4 equals ``torch.rot90(x, 1, dims=(-2, -1))``
      (counter-clockwise as displayed);
    * rotations turn about the image centre ((W−1)/2, (H−1)/2);
    * orbit layout is batch-major: (B, N, C, h, w), index b·N + g once flattened.

NaN/Inf policy: no function inspects values (that would synchronise the device).
NaN and Inf propagate to every output that reads them (a resampled pixel reads up
to four input pixels); a row of scores holding NaN selects its first NaN, as
``torch.argmax`` does. Pass ``check_finite=True`` to :class:`canon.OrbitCanonicalizer`
to raise instead.
"""

from __future__ import annotations

import numbers

import torch

from canon import ops
from canon._checks import (
    INTERPOLATIONS,
    PADDINGS,
    check_choice,
    check_crop_ratio,
    check_images,
    check_index,
    check_positive,
    check_same_device,
    check_size,
    check_tensor,
)
from canon.geometry import transform_boxes, transform_points, view_matrices_tensor, views_in_range
from canon.groups import Group, as_group
from canon.reference import Selection

__all__ = [
    "Selection",
    "orbit",
    "select",
    "canonicalize",
    "invert",
    "transform",
    "invert_points",
    "invert_boxes",
]


def orbit(
    x: torch.Tensor,
    group: str | Group,
    size: int | tuple[int, int] | None = None,
    crop_ratio: float | tuple[float, float] = 1.0,
    padding: str = "zeros",
    interpolation: str = "bilinear",
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Every group-transformed view of every image, in one resampling per view.

    View ``g`` of image ``b`` is ``P(T_g x[b])``: ``x`` transformed by element ``g``,
    then centre-cropped by ``crop_ratio`` and resized to ``size``, all composed into a
    single affine resampling. Multiples of 90° and flips at unchanged scale are exact
    pixel permutations.

    Args:
        x: images (B, C, H, W), float16/bfloat16/float32/float64.
        group: ``"C8"``, ``"D4"``, ... or a :class:`canon.Group`.
        size: view size ``h`` or ``(h, w)``; default ``(H, W)``.
        crop_ratio: side of the centre crop relative to the input, in (0, 1], or a
            pair ``(ry, rx)`` per axis.
        padding: value of pixels sampled from outside the input: ``"zeros"``,
            ``"border"`` (replicate the edge) or ``"reflection"`` (mirror about the
            outer pixel edges).
        interpolation: ``"bilinear"`` or ``"nearest"`` (round half to even).
        out_dtype: dtype of the views (default: ``x.dtype``), e.g. the encoder's.
        channels_last: store the views so that ``views.flatten(0, 1)`` is
            ``torch.channels_last`` without a copy.

    Returns:
        views (B, N, C, h, w), ``N = |G|``; differentiable with respect to ``x``.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> orbit(x, "C4").shape
        torch.Size([2, 4, 3, 32, 32])
        >>> torch.equal(orbit(x, "C4")[:, 1], torch.rot90(x, 1, dims=(-2, -1)))
        True

    Convention:
        positive angles turn counter-clockwise as displayed, about ((W−1)/2, (H−1)/2);
        output pixel (i, j) samples ``c_in + A_g⁻¹ · diag(r·W/w, r·H/h) · ((j, i) − c_out)``.
    """
    fn = "canon.orbit"
    check_images(x, fn)
    g = as_group(group)
    H, W = x.shape[-2:]
    h, w = check_size(size, (H, W), fn)
    crop_ratio = check_crop_ratio(crop_ratio, fn)
    check_choice(padding, PADDINGS, "padding", fn)
    check_choice(interpolation, INTERPOLATIONS, "interpolation", fn)
    if out_dtype is not None and out_dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{fn}: out_dtype must be a floating dtype, got {out_dtype}")
    mats, exact = view_matrices_tensor(g, (H, W), (h, w), crop_ratio, x.device)
    padding = _effective_padding(padding, exact, g, (H, W), (h, w), crop_ratio)
    return ops.orbit(x, mats, exact, (h, w), padding, interpolation, out_dtype, bool(channels_last))


def select(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> Selection:
    """Score every orbit copy against a reference vector and pick the best.

    Args:
        vectors: encoder outputs (B, N, D).
        reference: reference vector (D,).
        beta: inverse temperature of the softmax over scores.
        score: ``"cosine"`` (default, SPEC) or ``"dot"``.
        straight_through: if True (training), ``onehot = hard + p − stopgrad(p)`` so
            gradients reach the scores; if False (eval), ``onehot`` is the plain one-hot.
        gumbel: add Gumbel noise to ``beta·scores`` (then divided by ``tau``) before
            softmax and argmax: a stochastic choice, for exploration in training.
        tau: Gumbel-softmax temperature.
        generator: random generator for the Gumbel noise.

    Returns:
        :class:`Selection` with ``scores`` (B, N), ``probs`` (B, N), ``index`` (B,)
        int64 (argmax, ties to the lowest index) and ``onehot`` (B, N).

    Example:
        >>> v = torch.randn(2, 4, 16)
        >>> sel = select(v, torch.randn(16))
        >>> sel.index.shape, sel.onehot.sum(-1)
        (torch.Size([2]), tensor([1., 1.]))
    """
    fn = "canon.select"
    check_tensor(vectors, "vectors", fn, 3, shape_doc="(B, N, D)")
    check_tensor(reference, "reference", fn, 1, shape_doc="(D,)")
    B, N, D = vectors.shape
    if B == 0 or N == 0 or D == 0:
        raise ValueError(f"{fn}: vectors must be non-empty (B, N, D), got shape {tuple(vectors.shape)}")
    if reference.shape[0] != D:
        raise ValueError(f"{fn}: reference has length {reference.shape[0]} but vectors have D={D} (shape {tuple(vectors.shape)})")
    check_same_device(fn, vectors=vectors, reference=reference)
    beta = check_positive(beta, "beta", fn)
    tau = check_positive(tau, "tau", fn)
    check_choice(score, ("cosine", "dot"), "score", fn)
    noise = None
    if gumbel:
        u = torch.rand(
            (B, N), generator=generator, dtype=torch.float32, device="cpu" if generator is not None and generator.device.type == "cpu" else vectors.device
        )
        noise = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7))).to(vectors.device)
    return ops.select(vectors, reference, beta, score, bool(straight_through), noise, tau)


def _effective_padding(padding: str, exact: bool, g: Group, in_hw, out_hw, crop_ratio) -> str:
    # Exact views that never leave the input (quarter turns of square images, flips) do
    # not depend on the padding; "zeros" lets the GPU backward use its gather (no atomics).
    if exact and padding != "zeros" and views_in_range(g, in_hw, out_hw, crop_ratio):
        return "zeros"
    return padding


def _selection_parts(selection, B: int, N: int, device, fn: str) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(weights or None, index) from a Selection or an index tensor."""
    if isinstance(selection, Selection):
        weights = selection.onehot
        check_tensor(weights, "selection.onehot", fn, 2, shape_doc="(B, N)")
        if tuple(weights.shape) != (B, N):
            raise ValueError(f"{fn}: selection.onehot must have shape (B, N) = ({B}, {N}), got {tuple(weights.shape)}")
        if weights.device != device:
            raise ValueError(f"{fn}: selection is on {weights.device} but the images are on {device}")
        return weights, check_index(selection.index, B, N, device, fn)
    return None, check_index(selection, B, N, device, fn)


def _transform(x, weights, index, g: Group, padding, interpolation, fn) -> torch.Tensor:
    check_choice(padding, PADDINGS, "padding", fn)
    check_choice(interpolation, INTERPOLATIONS, "interpolation", fn)
    H, W = x.shape[-2:]
    mats, exact = view_matrices_tensor(g, (H, W), (H, W), 1.0, x.device)
    padding = _effective_padding(padding, exact, g, (H, W), (H, W), 1.0)
    if weights is None:
        weights = torch.zeros(x.shape[0], g.order, dtype=x.dtype, device=x.device)
    return ops.transform(x, weights, index, mats, exact, padding, interpolation)


def canonicalize(
    x: torch.Tensor,
    selection: Selection | torch.Tensor,
    group: str | Group,
    padding: str = "zeros",
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """The canonical images ``T_{g*[b]} x[b]`` at full input resolution.

    The forward value is exactly the chosen transform (no mixing). In backward the
    mixture straight-through estimator of SPEC §3.5 applies: ``∂L/∂onehot[b, g] =
    ⟨∂L/∂x_c[b], T_g x[b]⟩``, and ``x`` receives the adjoint of the chosen transform.

    Args:
        x: images (B, C, H, W).
        selection: a :class:`Selection` (gradient reaches its ``onehot``) or an int
            tensor (B,) of element indices (no gradient to any score).
        group: the group the selection indexes.
        padding, interpolation: as in :func:`orbit`.

    Returns:
        (B, C, H, W) in ``x.dtype``.

    Example:
        >>> x = torch.rand(2, 1, 8, 8)
        >>> xc = canonicalize(x, torch.tensor([1, 0]), "C4")
        >>> torch.equal(xc[0], torch.rot90(x[0], 1, dims=(-2, -1)))
        True
    """
    fn = "canon.canonicalize"
    check_images(x, fn)
    g = as_group(group)
    weights, index = _selection_parts(selection, x.shape[0], g.order, x.device, fn)
    return _transform(x, weights, index, g, padding, interpolation, fn)


def transform(
    x: torch.Tensor,
    element: int | torch.Tensor,
    group: str | Group,
    padding: str = "zeros",
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Apply group element(s) to images: ``T_{element[b]} x[b]``.

    Args:
        x: images (B, C, H, W).
        element: one element index for the whole batch, or an int tensor (B,).
        group: ``"C8"``, ``"D4"``, ... or a :class:`canon.Group`.

    Example:
        >>> x = torch.rand(1, 1, 5, 5)
        >>> torch.equal(transform(x, 4, "D4"), torch.flip(x, dims=(-1,)))
        True
    """
    fn = "canon.transform"
    check_images(x, fn)
    g = as_group(group)
    if isinstance(element, int) and not isinstance(element, bool):
        if not 0 <= element < g.order:
            raise ValueError(f"{fn}: element must be in [0, {g.order}) for group {g.name}, got {element}")
        element = torch.full((x.shape[0],), element, dtype=torch.int64, device=x.device)
    index = check_index(element, x.shape[0], g.order, x.device, fn)
    return _transform(x, None, index, g, padding, interpolation, fn)


def _inverse_selection(weights, index, g: Group):
    inv = g.inverse_table.to(index.device)
    index_inv = inv[index]
    # weight of element g moves to g⁻¹ (inverse is an involution on indices)
    weights_inv = weights[:, inv] if weights is not None else None
    return weights_inv, index_inv


def invert(
    y: torch.Tensor,
    selection: Selection | torch.Tensor,
    group: str | Group,
    kind: str = "scalar",
    padding: str = "zeros",
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Undo the canonicalization on dense outputs: ``T_{g*[b]}⁻¹ y[b]``.

    Args:
        y: dense outputs (B, K, H', W') computed from the canonical images.
        selection: the :class:`Selection` (or index tensor) used to canonicalize.
        group: the group.
        kind: ``"scalar"`` (each channel is a scalar field: only the plane moves) or
            ``"regular"`` (channels grouped as (K, N), the regular representation:
            ``out[:, k, h] = T_{g*}⁻¹ y[:, k, g*·h]``, so the group axis moves too).

    Returns:
        (B, K, H', W'). The gradient to ``selection.onehot`` follows the mixture
        straight-through rule through the spatial part.

    Example:
        >>> x = torch.rand(3, 2, 6, 6)
        >>> idx = torch.tensor([0, 1, 3])
        >>> torch.equal(invert(canonicalize(x, idx, "C4"), idx, "C4"), x)
        True
    """
    fn = "canon.invert"
    check_images(y, fn, "y")
    g = as_group(group)
    check_choice(kind, ("scalar", "regular"), "kind", fn)
    weights, index = _selection_parts(selection, y.shape[0], g.order, y.device, fn)
    if kind == "regular":
        B, KN, Hy, Wy = y.shape
        N = g.order
        if KN % N:
            raise ValueError(f"{fn}: kind='regular' needs channels divisible by |G|={N} (grouped as (K, N)), got {KN} channels")
        # out[:, k, h] = (g*⁻¹ acting on the plane of) y[:, k, g*·h]
        perm = g.cayley_table.to(y.device)[index]  # (B, N): perm[b, h] = g*[b]·h
        yk = y.reshape(B, KN // N, N, Hy, Wy)
        gather_idx = perm[:, None, :, None, None].expand(B, KN // N, N, Hy, Wy)
        y = torch.gather(yk, 2, gather_idx).reshape(B, KN, Hy, Wy)
    weights_inv, index_inv = _inverse_selection(weights, index, g)
    return _transform(y, weights_inv, index_inv, g, padding, interpolation, fn)


def _image_hw(image_size, fn) -> tuple[int, int]:
    """``(H, W)`` of the image the coordinates refer to: positive ints (an int means a square)."""
    pair = (image_size, image_size) if not isinstance(image_size, (tuple, list, torch.Size)) else tuple(image_size)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{fn}: image_size must be an int or a pair of ints (H, W), got {image_size!r}")
    H, W = int(pair[0]), int(pair[1])
    if H < 1 or W < 1:
        raise ValueError(f"{fn}: image_size must be positive, got {(H, W)}")
    return H, W


def _point_args(t, selection, group, nd, name, doc, fn):
    check_tensor(t, name, fn, 3, shape_doc=doc)
    g = as_group(group, fn)
    _, index = _selection_parts(selection, t.shape[0], g.order, t.device, fn)  # a Selection of another group is refused
    if t.shape[-1] != nd:
        raise ValueError(f"{fn}: {name} {doc}: last dimension must be {nd}, got shape {tuple(t.shape)}")
    return g, index


def invert_points(points: torch.Tensor, selection: Selection | torch.Tensor, group: str | Group, image_size) -> torch.Tensor:
    """Map points (B, P, 2) ``(x, y)`` in pixel coordinates of the canonical image back to the input.

    Example:
        >>> pts = torch.tensor([[[0.0, 0.0]]])
        >>> invert_points(pts, torch.tensor([1]), "C4", (4, 4))  # rot90: top-left came from top-right
        tensor([[[3., 0.]]])
    """
    fn = "canon.invert_points"
    g, index = _point_args(points, selection, group, 2, "points", "(B, P, 2)", fn)
    return transform_points(points, index, g, _image_hw(image_size, fn), inverse=True)


def invert_boxes(boxes: torch.Tensor, selection: Selection | torch.Tensor, group: str | Group, image_size) -> torch.Tensor:
    """Map boxes (B, K, 4) in ``xyxy`` edge coordinates (``[0, W] × [0, H]``) back to the input frame.

    Returns the axis-aligned box enclosing the moved corners (exact for 90° multiples and flips).
    """
    fn = "canon.invert_boxes"
    g, index = _point_args(boxes, selection, group, 4, "boxes", "(B, K, 4)", fn)
    return transform_boxes(boxes, index, g, _image_hw(image_size, fn), inverse=True)
