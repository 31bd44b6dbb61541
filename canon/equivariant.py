"""An equivariant canonicalizer (Kaba et al. 2023), the baseline the optimization-based method improves on.

A small C_n- or D_n-equivariant CNN built with ``e2cnn`` (optional: ``pip install
'canon-equivariance[equivariant]'``) looks at the input once and returns, for every group
element g, a vector ``v[g]`` (the regular fields of its last layer, averaged over the
plane). Equivariance gives the same transformation law as the orbit vectors of
:class:`canon.OrbitCanonicalizer`: ``v(T_h x)[g] = v(x)[g·h]`` (docs/spec.md §3, the copy ``g`` of
``T_h x`` is the copy ``g·h`` of ``x``), so the group-pooled activation
``s[g] = mean_k v[g, k]`` picks the element exactly as the orbit scores do, and
``T_{g*} x`` is invariant. The encoder runs once per image instead of |G| times, but its
layers must be equivariant.

:class:`EquivariantCanonicalizer` is an :class:`canon.OrbitCanonicalizer` whose encoder is
such a network: selection, canonical image, inversion, prior and contrastive losses are the
same functions, so it drops into :class:`canon.Canonicalized` and the training loop.

Example:
    >>> enc = EquivariantEncoder(1, "C4", hidden=2, out_fields=4)
    >>> can = EquivariantCanonicalizer(enc, size=9).eval()
    >>> x = torch.rand(3, 1, 20, 20)
    >>> torch.equal(can(torch.rot90(x, 1, dims=(-2, -1))), can(x))
    True
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from canon import functional as Fn
from canon._checks import check_finite as _check_finite
from canon._checks import check_images
from canon.groups import Group, as_group
from canon.modules import OrbitCanonicalizer

__all__ = ["EquivariantEncoder", "EquivariantCanonicalizer", "require_e2cnn", "estimated_build_bytes"]

_TRIVIAL = as_group("C1")


def require_e2cnn(what: str = "the equivariant canonicalizer"):
    """Import ``e2cnn`` or raise an ImportError naming the extra that installs it."""
    try:
        import e2cnn
    except ImportError as e:
        raise ImportError(
            f"{what} needs the optional package e2cnn: pip install 'canon-equivariance[equivariant]' (or pip install "
            "e2cnn)"
        ) from e
    _patch_numpy2(e2cnn)
    return e2cnn


def _patch_numpy2(e2cnn) -> None:
    """Let e2cnn 0.2.3 (its last release, 2023) build dihedral kernels under numpy 2.

    Two numpy-1 idioms fail there: ``ndarray.tostring()`` in the ``__hash__`` of the kernel
    bases (hash the same fields through ``tobytes()``: the same equality classes), and
    ``np.array(scalar, copy=False)`` in the angular functions ``psi``/``chi``/``psichi``
    (give them arrays: ``np.array(array, copy=False)`` still works, nothing else changes).
    """
    from e2cnn.kernels import irreps_basis

    if getattr(irreps_basis, "_canon_numpy2", False) or hasattr(np.ndarray, "tostring"):
        return

    def _hash(self) -> int:
        h = hash(self.in_irrep) + hash(self.out_irrep)
        for name in ("mu", "gamma"):
            v = getattr(self, name, None)
            h += hash(v.tobytes()) if isinstance(v, np.ndarray) else hash(v)
        return h

    for cls in vars(irreps_basis).values():
        if isinstance(cls, type) and issubclass(cls, irreps_basis.IrrepBasis) and "__hash__" in vars(cls):
            cls.__hash__ = _hash

    psi, chi, psichi = irreps_basis.psi, irreps_basis.chi, irreps_basis.psichi
    irreps_basis.psi = lambda theta, k=1, gamma=0.0, out=None: psi(theta, np.asarray(k), np.asarray(gamma), out)
    irreps_basis.chi = lambda s, out=None: chi(np.asarray(s), out)
    irreps_basis.psichi = lambda theta, s, k=1, gamma=0.0, out=None: psichi(
        theta, np.asarray(s), np.asarray(k), np.asarray(gamma), out
    )
    irreps_basis._canon_numpy2 = True


# Memory to build an EquivariantEncoder with e2cnn 0.2.3 on the CPU (peak RSS above the interpreter's,
# measured 2026-12-04 for C16/C24/C32/C40 with hidden 2-4, 8 fields, kernel 5: 158/235/300/457 MiB): the
# sampled steerable bases of the regular→regular convolutions grow as |G|³ (shared by all fields).
_BUILD_BASE_BYTES = 140 * 2**20
_BUILD_BYTES_PER_ORDER_CUBED = 0.005 * 2**20


def estimated_build_bytes(order: int, kernel_size: int = 5) -> int:
    """About how many bytes building an :class:`EquivariantEncoder` of a group of ``order`` elements takes
    (an estimate from measurements, for refusing what cannot fit before e2cnn tries: C360 needs ~230 GiB)."""
    return int(_BUILD_BASE_BYTES + _BUILD_BYTES_PER_ORDER_CUBED * order**3 * (kernel_size / 5) ** 2)


def _e2cnn_order(group: Group) -> torch.Tensor:
    """Index ``m`` with ``s[g] = ψ[m[g]]``: canon's element order from e2cnn's regular fields ``ψ``.

    e2cnn's regular fields transform by the left regular representation,
    ``ψ(T_h x)[e] = ψ(x)[h⁻¹·e]``, with its rotations counter-clockwise as displayed like
    canon's; hence ``s[g] = ψ[g⁻¹]`` obeys ``s(T_h x)[g] = s(x)[g·h]``. e2cnn numbers the
    dihedral element (flip r, rotation k) as ``r·n + k`` and applies the rotation after
    the flip about the vertical axis, as canon's ``R_k ∘ F^r``; the tests check the law
    for C4, C8 and D4 directly.
    """
    inv = [group.inverse(g) for g in range(group.order)]
    return torch.tensor(inv, dtype=torch.int64)


class EquivariantEncoder(nn.Module):
    """A C_n/D_n-equivariant CNN (e2cnn) mapping (M, C, h, w) images to (M, |G|, k) vectors.

    Layers as in :class:`canon.networks.ConvEncoder`: ``num_layers`` steerable convolutions
    (``hidden`` regular fields each, stride 2 on the 2nd and 3rd) with ReLU, a 1×1 steerable
    convolution to ``out_fields`` regular fields, and the mean over the plane. Regular field
    ``k`` at group element ``g`` becomes ``v[:, g, k]`` in canon's element order, so that
    ``v(T_h x)[:, g] = v(x)[:, g·h]``.

    Exactness: the steerable filters are exact for multiples of 90° and flips; with odd view
    sizes every stride keeps the pixel grid symmetric, so C4/D4 equivariance holds up to
    float rounding (different summation order). Rotations by other angles (C8) are
    equivariant only approximately (sampled filters, pixel grid).

    Args:
        in_channels: image channels C (trivial fields).
        group: ``"C8"``, ``"D4"``, ... or a :class:`canon.Group`.
        hidden: regular fields of each hidden layer (``hidden·|G|`` channels).
        out_fields: regular fields of the last layer: the vector size k.
        num_layers: steerable convolutions before the head (>= 1).
        kernel_size: odd kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        group: str | Group,
        hidden: int = 2,
        out_fields: int = 8,
        num_layers: int = 3,
        kernel_size: int = 5,
    ):
        super().__init__()
        fn = "EquivariantEncoder"
        for name, v in (
            ("in_channels", in_channels),
            ("hidden", hidden),
            ("out_fields", out_fields),
            ("num_layers", num_layers),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{fn}: {name} must be an int >= 1, got {v!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"{fn}: kernel_size must be an odd int >= 1, got {kernel_size!r}")
        e2cnn = require_e2cnn(fn)
        gspaces, enn = e2cnn.gspaces, e2cnn.nn
        self.group = as_group(group, fn)
        G = self.group
        if G.order < 2:
            raise ValueError(f"{fn}: group must have at least 2 elements (C2, D1, C4, D4, C8, ...), got {G.name}")
        if G.n == 1:  # D1: e2cnn's space of the flip alone
            gspace = gspaces.Flip2dOnR2()
        else:
            gspace = gspaces.FlipRot2dOnR2(G.n) if G.reflections else gspaces.Rot2dOnR2(G.n)
        self.in_type = enn.FieldType(gspace, in_channels * [gspace.trivial_repr])
        hid = enn.FieldType(gspace, hidden * [gspace.regular_repr])
        out = enn.FieldType(gspace, out_fields * [gspace.regular_repr])
        layers, t = [], self.in_type
        with warnings.catch_warnings():  # e2cnn indexes with uint8 masks, which torch 2 deprecates (same result)
            warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)
            for i in range(num_layers):
                layers += [
                    enn.R2Conv(t, hid, kernel_size, padding=kernel_size // 2, stride=2 if i in (1, 2) else 1),
                    enn.ReLU(hid, inplace=True),
                ]
                t = hid
            layers.append(enn.R2Conv(t, out, 1))
        self.net = enn.SequentialModule(*layers)
        self.register_buffer("order", _e2cnn_order(G), persistent=False)
        self.in_channels, self.out_fields, self.out_dim = in_channels, out_fields, out_fields
        self._geometric_tensor = enn.GeometricTensor

    def extra_repr(self) -> str:
        return f"group={self.group.name}, in_channels={self.in_channels}, out_fields={self.out_fields}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"EquivariantEncoder: expected (M, {self.in_channels}, h, w) input, got shape {tuple(x.shape)}"
            )
        y = self.net(self._geometric_tensor(x, self.in_type)).tensor  # (M, k·|G|, h', w'), field-major
        N = self.group.order
        psi = y.reshape(y.shape[0], self.out_fields, N, -1).mean(-1)  # (M, k, |G|) in e2cnn's order
        return psi.index_select(2, self.order).transpose(1, 2)  # (M, |G|, k) in canon's order


class EquivariantCanonicalizer(OrbitCanonicalizer):
    """Canonicalize with an equivariant network: one view per image, |G| vectors out.

    The view is the input's centre crop (``crop_ratio``) resized to ``size`` (one
    resampling, :func:`canon.orbit` of the trivial group); the encoder returns the
    vectors (B, |G|, k) of all elements at once. Scores are the group-pooled activations
    ``s[g] = mean_k v[g, k]`` (a dot product with the fixed reference ``1/k``), and from
    there everything is :class:`canon.OrbitCanonicalizer`: straight-through argmax in
    training, hard argmax in eval, ``T_{g*} x`` at full resolution, ``prior_loss`` (the
    cross-entropy of ``prior_beta·s``), ``contrastive_loss`` on the vectors, ``invert``.
    The artifact loss needs the orbit views and is not available.

    Args:
        encoder: an :class:`EquivariantEncoder` (its group is the canonicalizer's).
        size: view size (odd sizes keep strided layers exactly C4/D4-equivariant).
        crop_ratio, beta, padding, interpolation, prior_beta, check_finite, antialias: as in
            :class:`canon.OrbitCanonicalizer`.
    """

    def __init__(
        self,
        encoder: EquivariantEncoder,
        size: int | tuple[int, int] | None = None,
        crop_ratio: float = 1.0,
        beta: float = 1.0,
        padding: str = "zeros",
        interpolation: str = "bilinear",
        prior_beta: float = 1.0,
        check_finite: bool = False,
        antialias: bool = True,
    ):
        if not isinstance(encoder, EquivariantEncoder):
            raise TypeError(
                f"EquivariantCanonicalizer: encoder must be an EquivariantEncoder, got {type(encoder).__name__}"
            )
        super().__init__(
            encoder, encoder.group, size=size, crop_ratio=crop_ratio, beta=beta, dim=encoder.out_fields,
            padding=padding, interpolation=interpolation, score="dot", prior_beta=prior_beta, check_finite=check_finite,
            antialias=antialias,
        )  # fmt: skip
        self.reference.fill_(1.0 / encoder.out_fields)  # the mean over fields: group pooling

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the view (B, 1, C, h, w), vectors (B, |G|, k)) of ``x``."""
        check_images(x, "EquivariantCanonicalizer")
        if self.check_finite:
            _check_finite(x, "x", "EquivariantCanonicalizer")
        if self._dtype is None:
            self._dtype = next((p.dtype for p in self.encoder.parameters()), None)
        view = Fn.orbit(
            x, _TRIVIAL, self.size, self.crop_ratio, self.padding, self.interpolation,
            out_dtype=self._dtype or x.dtype, antialias=self.antialias,
        )  # fmt: skip
        vectors = self.encoder(view[:, 0])
        return view, vectors

    def artifact_loss(self, generator: torch.Generator | None = None) -> torch.Tensor:
        raise ValueError(
            "EquivariantCanonicalizer: the artifact loss compares orbit views, which an equivariant canonicalizer "
            "does not build; use artifact_weight=0"
        )
