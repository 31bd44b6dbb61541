"""Functional API: orbit → (encoder) → select → canonicalize → invert.

Conventions shared by every function here (docs/spec.md §2):
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

from canon import ops, plans
from canon._checks import (
    check_choice,
    check_images,
    check_index,
    check_same_device,
    check_tensor,
    check_views_fit,
)
from canon.geometry import (
    channel_tables,
    constant_index,
    transform_boxes,
    transform_points,
)
from canon.groups import Group, as_group
from canon.types import Selection, SelectionLosses

__all__ = [
    "Selection",
    "SelectionLosses",
    "orbit",
    "select",
    "select_losses",
    "canonicalize",
    "select_canonicalize",
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
    antialias: bool = True,
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
        antialias: when a view shrinks the input (``size`` and ``crop_ratio`` give more than one
            input pixel per view pixel along an axis) and ``interpolation`` is bilinear, sample it
            with the triangle filter of torchvision's antialiased ``Resize`` (as wide as one view
            pixel), rotated with the view: without it, detail finer than the view's pixels folds
            into it (aliasing). Views that do not shrink are unchanged (exact ones bit-exact).

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
    H, W = x.shape[-2:]
    key = (
        "orbit",
        group,
        H,
        W,
        size,
        crop_ratio,
        padding,
        interpolation,
        out_dtype,
        x.device,
        antialias,
        plans.kind(size),
        plans.kind(crop_ratio),
        plans.kind(antialias),
    )
    tables, hw, padding, aa = plans.cached(
        key,
        lambda: plans.orbit_plan(
            group, (H, W), size, crop_ratio, padding, interpolation, out_dtype, x.device, fn, antialias
        ),
    )
    check_views_fit(x, tables.mats.shape[0], hw, out_dtype or x.dtype, fn)
    return ops.orbit(x, tables, hw, padding, interpolation, out_dtype, bool(channels_last), antialias=aa)


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
        score: ``"cosine"`` (default, docs/spec.md §3) or ``"dot"``.
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
    noise, settings = _select_args(
        vectors, reference, beta, score, straight_through, gumbel, tau, generator, "canon.select"
    )
    return ops.select(vectors, reference, *_select_call(settings, noise))[0]


def select_losses(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    contrastive: str = "normalized",
    prior_target: torch.Tensor | None = None,
    prior_beta: float = 1.0,
) -> SelectionLosses:
    """:func:`select` and both training losses of the same vectors in one pass (docs/spec.md §4).

    The orbit contrastive loss (:func:`canon.losses.contrastive_loss`) and the prior
    cross-entropy of ``prior_beta · scores`` towards ``prior_target`` (default: the identity,
    element 0; see :func:`canon.losses.prior_loss`) come out of the same kernel as the
    selection: one launch and one reduction on a GPU instead of one chain per loss.

    Args:
        vectors, reference, beta, score, straight_through, gumbel, tau, generator: as in :func:`select`.
        contrastive: ``"normalized"`` (default) or ``"raw"``.
        prior_target: (B,) int element indices, or None for the identity.
        prior_beta: inverse temperature of the prior loss.

    Returns:
        :class:`SelectionLosses` ``(selection, contrastive, prior)``, the losses 0-d batch means.

    Example:
        >>> from canon.losses import contrastive_loss, prior_loss
        >>> v = torch.randn(2, 4, 16)
        >>> sel, l_c, l_p = select_losses(v, torch.randn(16))
        >>> bool(torch.isclose(l_c, contrastive_loss(v))), bool(torch.isclose(l_p, prior_loss(sel.scores)))
        (True, True)
    """
    fn = "canon.select_losses"
    noise, settings = _select_args(vectors, reference, beta, score, straight_through, gumbel, tau, generator, fn)
    contrastive, prior_beta = plans.cached(
        ("select_losses", contrastive, prior_beta, plans.kind(prior_beta)),
        lambda: plans.losses_settings(contrastive, prior_beta, fn),
    )
    prior = "identity"
    if prior_target is not None:
        B, N = vectors.shape[:2]
        prior_target = check_index(prior_target, B, N, vectors.device, fn, "prior_target")
        prior = "target"
    sel, losses = ops.select(
        vectors, reference, *_select_call(settings, noise), contrastive, prior, prior_target, prior_beta
    )
    return SelectionLosses(sel, losses[0], losses[1])


def _select_call(s: plans.SelectSettings, noise):
    """:func:`canon.ops.select`'s arguments after the tensors, up to the losses."""
    return s.beta, s.score, s.straight_through, noise, s.tau


def _select_args(vectors, reference, beta, score, straight_through, gumbel, tau, generator, fn):
    """Check the tensors of a selection; (Gumbel noise or None, :class:`canon.plans.SelectSettings`)."""
    check_tensor(vectors, "vectors", fn, 3, shape_doc="(B, N, D)")
    check_tensor(reference, "reference", fn, 1, shape_doc="(D,)")
    B, N, D = vectors.shape
    if B == 0 or N == 0 or D == 0:
        raise ValueError(f"{fn}: vectors must be non-empty (B, N, D), got shape {tuple(vectors.shape)}")
    if reference.shape[0] != D:
        raise ValueError(
            f"{fn}: reference has length {reference.shape[0]} but vectors have D={D} (shape {tuple(vectors.shape)})"
        )
    if vectors.device != reference.device:
        check_same_device(fn, vectors=vectors, reference=reference)
    settings = plans.cached(
        ("select", beta, score, straight_through, tau, plans.kind(beta), plans.kind(tau)),
        lambda: plans.select_settings(beta, score, straight_through, tau, fn),
    )
    noise = None
    if gumbel:
        on_cpu = generator is not None and generator.device.type == "cpu"
        u = torch.rand((B, N), generator=generator, dtype=torch.float32, device="cpu" if on_cpu else vectors.device)
        noise = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7))).to(vectors.device)
    return noise, settings


def _selection_parts(selection, B: int, N: int, device, fn: str) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(weights or None, index) from a Selection or an index tensor."""
    if isinstance(selection, Selection):
        weights = selection.onehot
        check_tensor(weights, "selection.onehot", fn, 2, shape_doc="(B, N)")
        if weights.shape[0] != B or weights.shape[1] != N:
            raise ValueError(f"{fn}: selection.onehot must have shape (B, N) = ({B}, {N}), got {tuple(weights.shape)}")
        if weights.device != device:
            raise ValueError(f"{fn}: selection is on {weights.device} but the images are on {device}")
        return weights, check_index(selection.index, B, N, device, fn)
    return None, check_index(selection, B, N, device, fn)


def _transform_setup(x, group, padding, interpolation, fn, inverse=False):
    """(group, tables, effective padding) of a full-resolution transform of ``x`` (cached)."""
    H, W = x.shape[-2:]
    key = ("transform", group, H, W, padding, interpolation, x.device, inverse)
    return plans.cached(key, lambda: plans.transform_plan(group, (H, W), padding, interpolation, x.device, inverse, fn))


def canonicalize(
    x: torch.Tensor,
    selection: Selection | torch.Tensor,
    group: str | Group,
    padding: str = "zeros",
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """The canonical images ``T_{g*[b]} x[b]`` at full input resolution.

    The forward value is exactly the chosen transform (no mixing). In backward the
    mixture straight-through estimator of docs/spec.md §3.5 applies: ``∂L/∂onehot[b, g] =
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
    g, tables, padding = _transform_setup(x, group, padding, interpolation, fn)
    weights, index = _selection_parts(selection, x.shape[0], g.order, x.device, fn)
    return ops.transform(x, weights, index, tables, padding, interpolation)


def select_canonicalize(
    x: torch.Tensor,
    vectors: torch.Tensor,
    reference: torch.Tensor,
    group: str | Group,
    beta: float = 1.0,
    score: str = "cosine",
    padding: str = "zeros",
    interpolation: str = "bilinear",
) -> tuple[torch.Tensor, Selection]:
    """Eval canonicalization from orbit vectors: the hard :func:`select` and :func:`canonicalize`
    in one op (one kernel launch on a GPU: scores, argmax and the chosen transform).

    Same values as ``canonicalize(x, select(vectors, reference, beta, score, straight_through=False), group)``;
    gradients reach ``x`` only (a hard choice has no gradient to the scores).

    Returns:
        (canonical images (B, C, H, W), :class:`Selection` with the plain one-hot).

    Example:
        >>> x, v, ref = torch.rand(2, 1, 8, 8), torch.randn(2, 4, 16), torch.randn(16)
        >>> xc, sel = select_canonicalize(x, v, ref, "C4")
        >>> torch.equal(xc, canonicalize(x, select(v, ref, straight_through=False), "C4"))
        True
    """
    fn = "canon.select_canonicalize"
    check_images(x, fn)
    _, settings = _select_args(vectors, reference, beta, score, False, False, 1.0, None, fn)
    g, tables, padding = _transform_setup(x, group, padding, interpolation, fn)
    if vectors.shape[0] != x.shape[0] or vectors.shape[1] != g.order:
        raise ValueError(
            f"{fn}: vectors must have shape (B, N, D) = ({x.shape[0]}, {g.order}, D) for x {tuple(x.shape)} and group "
            f"{g.name}, got {tuple(vectors.shape)}"
        )
    if vectors.device != x.device:
        check_same_device(fn, x=x, vectors=vectors)
    return ops.select_transform(vectors, reference, x, tables, settings.beta, settings.score, padding, interpolation)


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
    g, tables, padding = _transform_setup(x, group, padding, interpolation, fn)
    if isinstance(element, int) and not isinstance(element, bool):
        if not 0 <= element < g.order:
            raise ValueError(f"{fn}: element must be in [0, {g.order}) for group {g.name}, got {element}")
        index = constant_index(int(element), x.shape[0], x.device)
    else:
        index = check_index(element, x.shape[0], g.order, x.device, fn)
    return ops.transform(x, None, index, tables, padding, interpolation)


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
    # row g of the inverse tables holds the view of g⁻¹: one launch, no index arithmetic
    g, tables, padding = _transform_setup(y, group, padding, interpolation, fn, inverse=True)
    check_choice(kind, ("scalar", "regular"), "kind", fn)
    weights, index = _selection_parts(selection, y.shape[0], g.order, y.device, fn)
    chan = None
    if kind == "regular":
        if y.shape[1] % g.order:
            raise ValueError(
                f"{fn}: kind='regular' needs channels divisible by |G|={g.order} (grouped as (K, N)), got "
                f"{y.shape[1]} channels"
            )
        # out[:, k, h] = (g*⁻¹ acting on the plane of) y[:, k, g*·h]
        chan = channel_tables(g, y.device)
    return ops.transform(y, weights, index, tables, padding, interpolation, chan)


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


def invert_points(
    points: torch.Tensor, selection: Selection | torch.Tensor, group: str | Group, image_size
) -> torch.Tensor:
    """Map points (B, P, 2) ``(x, y)`` in pixel coordinates of the canonical image back to the input.

    Example:
        >>> pts = torch.tensor([[[0.0, 0.0]]])
        >>> invert_points(pts, torch.tensor([1]), "C4", (4, 4))  # rot90: top-left came from top-right
        tensor([[[3., 0.]]])
    """
    fn = "canon.invert_points"
    g, index = _point_args(points, selection, group, 2, "points", "(B, P, 2)", fn)
    return transform_points(points, index, g, _image_hw(image_size, fn), inverse=True)


def invert_boxes(
    boxes: torch.Tensor, selection: Selection | torch.Tensor, group: str | Group, image_size
) -> torch.Tensor:
    """Map boxes (B, K, 4) in ``xyxy`` edge coordinates (``[0, W] × [0, H]``) back to the input frame.

    Returns the axis-aligned box enclosing the moved corners (exact for 90° multiples and flips).
    """
    fn = "canon.invert_boxes"
    g, index = _point_args(boxes, selection, group, 4, "boxes", "(B, K, 4)", fn)
    return transform_boxes(boxes, index, g, _image_hw(image_size, fn), inverse=True)
