"""Training objectives of docs/spec.md §4: contrastive (orbit orthogonality), prior, artifact; identity metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from canon import ops
from canon._checks import check_choice, check_positive, check_tensor
from canon.geometry import group_table
from canon.groups import Group, as_group
from canon.reference import prior_loss_ref

__all__ = ["contrastive_loss", "prior_loss", "identity_metric", "artifact_loss", "prior_target"]


def contrastive_loss(vectors: torch.Tensor, kind: str = "normalized") -> torch.Tensor:
    """Orbit orthogonality loss on encoder outputs (B, N, D).

    ``"normalized"`` (default): ``mean_b mean_{g≠g'} |cos(v[b,g], v[b,g'])|``, which
    shrinking the vectors cannot lower. ``"raw"``: equiadapt's variant, the mean over
    all N² pairs (zeroed diagonal included) of ``|⟨v[b,g], v[b,g']⟩|``.

    Example:
        >>> v = torch.eye(4).expand(2, 4, 4)  # orthogonal copies
        >>> float(contrastive_loss(v))
        0.0
    """
    fn = "canon.losses.contrastive_loss"
    check_tensor(vectors, "vectors", fn, 3, shape_doc="(B, N, D)")
    if vectors.numel() == 0:
        raise ValueError(f"{fn}: vectors must be non-empty, got shape {tuple(vectors.shape)}")
    check_choice(kind, ("normalized", "raw"), "kind", fn)
    return ops.contrastive_loss(vectors, kind)


def prior_target(group: str | Group, applied: torch.Tensor | None, batch: int, device=None) -> torch.Tensor:
    """Prior targets: identity (0) for upright data, ``a⁻¹`` for inputs augmented by element ``a``.

    Args:
        applied: (B,) int indices of the elements applied to the inputs, or None (upright).
        batch: B, used when ``applied`` is None.

    Raises:
        TypeError/ValueError: ``applied`` is not a (B,) int tensor, or (CPU tensors only) holds
            an index outside ``[0, |G|)``. CUDA tensors are not range-checked, since that
            would synchronise the device; an out-of-range index there fails in the lookup
            (a device-side assertion) instead of wrapping around.
    """
    fn = "canon.losses.prior_target"
    g = as_group(group)
    if applied is None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise ValueError(f"{fn}: batch must be an int >= 0, got {batch!r}")
        return torch.zeros(batch, dtype=torch.int64, device=device)
    check_tensor(applied, "applied", fn, 1, float_only=False, shape_doc="(B,)")
    if applied.dtype not in INDEX_DTYPES:
        raise TypeError(f"{fn}: applied must be an int32/int64 tensor of element indices, got {applied.dtype}")
    _check_range(applied, g.order, "applied", fn)
    return group_table(g, "inverse_table", applied.device)[applied.long()]


INDEX_DTYPES = (torch.int32, torch.int64)


def _check_range(index: torch.Tensor, N: int, name: str, fn: str) -> None:
    # only where it costs no device synchronisation, and not while torch.compile traces
    if index.device.type == "cpu" and not torch.compiler.is_compiling() and index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= N:
            raise ValueError(f"{fn}: {name} must hold element indices in [0, {N}), got values in [{lo}, {hi}]")


def prior_loss(scores: torch.Tensor, target: torch.Tensor | None = None, beta: float = 1.0) -> torch.Tensor:
    """Cross-entropy of ``beta · scores`` (B, N) towards ``target`` (B,) (default: identity, index 0).

    ``target`` must hold indices in ``[0, N)``: checked on CPU; on CUDA (no device
    synchronisation) an index out of range fails in the cross-entropy kernel instead.

    Example:
        >>> s = torch.tensor([[1.0, -1.0, -1.0, -1.0]])
        >>> prior_loss(s, beta=10.0) < prior_loss(-s, beta=10.0)
        tensor(True)
    """
    fn = "canon.losses.prior_loss"
    check_tensor(scores, "scores", fn, 2, shape_doc="(B, N)")
    beta = check_positive(beta, "beta", fn)
    B, N = scores.shape
    if B == 0 or N == 0:
        raise ValueError(f"{fn}: scores must be a non-empty (B, N) batch, got shape {tuple(scores.shape)}")
    if target is None:
        target = torch.zeros(B, dtype=torch.int64, device=scores.device)
    check_tensor(target, "target", fn, 1, float_only=False, shape_doc="(B,)")
    if target.dtype not in INDEX_DTYPES or target.shape[0] != B:
        raise ValueError(
            f"{fn}: target must be an int tensor of shape (B,) = ({B},), got {target.dtype} {tuple(target.shape)}"
        )
    if target.device != scores.device:
        raise ValueError(f"{fn}: target is on {target.device} but scores are on {scores.device}")
    _check_range(target, N, "target", fn)
    return prior_loss_ref(scores, target.long(), beta)


def identity_metric(index: torch.Tensor) -> torch.Tensor:
    """Share of samples whose chosen element is the identity (index 0)."""
    fn = "canon.losses.identity_metric"
    check_tensor(index, "index", fn, 1, float_only=False, shape_doc="(B,)")
    if index.dtype not in INDEX_DTYPES:
        raise TypeError(f"{fn}: index must be an int32/int64 tensor of element indices, got {index.dtype}")
    if index.numel() == 0:
        raise ValueError(f"{fn}: index must hold at least one sample, got shape {tuple(index.shape)}")
    return (index == 0).float().mean()


def artifact_loss(
    encoder: torch.nn.Module,
    views: torch.Tensor,
    group: str | Group,
    vectors: torch.Tensor | None = None,
    padding: str = "zeros",
    interpolation: str = "bilinear",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MSE between ``φ(x̃)`` and ``φ`` of ``x̃`` rotated by a random rotation of the group and back.

    Teaches the encoder to ignore interpolation artifacts of non-90° rotations.

    Args:
        encoder: φ, (M, C, h, w) → (M, D).
        views: orbit views (B, N, C, h, w).
        vectors: φ(views) (B, N, D) if already computed (saves one encoder pass).
    """
    from canon.functional import transform

    fn = "canon.losses.artifact_loss"
    check_tensor(views, "views", fn, 5, shape_doc="(B, N, C, h, w)")
    g = as_group(group)
    flat = views.flatten(0, 1)
    M = flat.shape[0]
    if generator is None or generator.device == flat.device:
        k = torch.randint(0, g.n, (M,), generator=generator, device=flat.device)
    else:
        k = torch.randint(0, g.n, (M,), generator=generator, device=generator.device).to(flat.device)
    there = transform(flat, k, g, padding, interpolation)
    back = transform(there, group_table(g, "inverse_table", flat.device)[k], g, padding, interpolation)
    v0 = encoder(flat) if vectors is None else vectors.reshape(M, -1)
    v1 = encoder(back)
    return F.mse_loss(v1, v0)
