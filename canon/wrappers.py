"""``Canonicalized``: make any model invariant (or, for dense outputs, equivariant) in one line."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from canon import losses
from canon._checks import check_choice
from canon.modules import OrbitCanonicalizer

__all__ = ["Canonicalized", "DEFAULT_WEIGHTS"]

# The weights the project trains with (docs/training.md: λ_prior = 1, λ_contrastive = 0.1,
# no artifact term); the prior's inverse temperature belongs to the canonicalizer
# (``OrbitCanonicalizer(prior_beta=...)``, 10 in the training CLI).
DEFAULT_WEIGHTS = {"prior": 1.0, "contrastive": 0.1, "artifact": 0.0}


def _weight(value, what: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{fn}: {what} must be a finite number >= 0, got {value!r}")
    return float(value)


class Canonicalized(nn.Module):
    """Wrap any model so that its output is invariant (or equivariant) to a planar group.

    ``forward(x)`` canonicalizes ``x`` (``canonicalizer(x)``, the best-scoring copy of
    the orbit, docs/spec.md §3), runs ``predictor`` on it and, for dense outputs, maps the
    result back to the input frame with the inverse of the chosen element:

    * ``output="invariant"`` (class logits, embeddings): ``predictor(canonicalizer(x))``;
    * ``output="dense"`` (segmentation maps, dense features of shape (B, K, H', W')):
      ``canonicalizer.invert(predictor(canonicalizer(x)), kind)``. ``kind="scalar"``
      moves only the plane; ``kind="regular"`` also permutes the group axis of
      channels grouped as (K, |G|). Tensors inside a dict, list or tuple output (as
      torchvision's segmentation models return) are inverted one by one.

    For exact groups (C2, C4, D1, D2, D4 on square inputs) the model is exactly
    invariant/equivariant in eval mode: ``model(T_g x) == model(x)`` (invariant) or
    ``model(T_g x) == T_g model(x)`` (dense), bit for bit, for any predictor.

    Training adds the canonicalizer's losses of the last forward to the task loss:
    :meth:`loss` returns ``task + λ_p·L_prior + λ_c·L_contrastive (+ λ_a·L_artifact)``
    with defaults λ_p = 1, λ_c = 0.1, λ_a = 0 (what the project's training CLI uses;
    see docs/training.md), and :meth:`losses` the unweighted terms for logging. The
    parameters of both parts are trained by one optimizer (or two groups:
    ``model.predictor`` and ``model.canonicalizer``, as the training CLI does).

    Args:
        predictor: any model taking the canonical images (B, C, H, W).
        canonicalizer: an :class:`canon.OrbitCanonicalizer` (encoder, group, view size, ...).
        output: ``"invariant"`` or ``"dense"``.
        kind: ``"scalar"`` or ``"regular"``, for ``output="dense"``.
        prior_weight, contrastive_weight, artifact_weight: λ_p, λ_c, λ_a (>= 0).

    Example:
        >>> from canon.networks import ConvEncoder
        >>> predictor = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 10))
        >>> model = Canonicalized(predictor, OrbitCanonicalizer(ConvEncoder(1, 16), "C4")).eval()
        >>> x = torch.rand(2, 1, 12, 12)
        >>> torch.equal(model(torch.rot90(x, 1, dims=(-2, -1))), model(x))
        True
        >>> _ = model.train()(x)
        >>> model.loss(torch.nn.functional.cross_entropy(model(x), torch.tensor([3, 7]))).ndim
        0

    Convention:
        the element chosen for ``x[b]`` is ``model.canonicalizer.element[b]`` after a
        forward; ``T_g`` is :func:`canon.transform` (counter-clockwise rotations about
        the image centre, flip first, then rotate).
    """

    def __init__(
        self,
        predictor: nn.Module,
        canonicalizer: OrbitCanonicalizer,
        output: str = "invariant",
        kind: str = "scalar",
        prior_weight: float = DEFAULT_WEIGHTS["prior"],
        contrastive_weight: float = DEFAULT_WEIGHTS["contrastive"],
        artifact_weight: float = DEFAULT_WEIGHTS["artifact"],
    ):
        super().__init__()
        fn = "Canonicalized"
        if not isinstance(predictor, nn.Module):
            raise TypeError(f"{fn}: predictor must be an nn.Module, got {type(predictor).__name__}")
        if not isinstance(canonicalizer, OrbitCanonicalizer):
            raise TypeError(
                f"{fn}: canonicalizer must be a canon.OrbitCanonicalizer (e.g. OrbitCanonicalizer(ConvEncoder(3, 64), "
                f"'C8')), "
                f"got {type(canonicalizer).__name__}"
            )
        self.output = check_choice(output, ("invariant", "dense"), "output", fn)
        self.kind = check_choice(kind, ("scalar", "regular"), "kind", fn)
        self.prior_weight = _weight(prior_weight, "prior_weight", fn)
        self.contrastive_weight = _weight(contrastive_weight, "contrastive_weight", fn)
        self.artifact_weight = _weight(artifact_weight, "artifact_weight", fn)
        # the same attribute names as the training CLI's models (optimizer groups by part)
        self.canonicalizer = canonicalizer
        self.predictor = predictor

    def extra_repr(self) -> str:
        return (
            f"output={self.output!r}, kind={self.kind!r}, prior_weight={self.prior_weight}, "
            f"contrastive_weight={self.contrastive_weight}, artifact_weight={self.artifact_weight}"
        )

    @property
    def group(self):
        """The canonicalizer's :class:`canon.Group`."""
        return self.canonicalizer.group

    def forward(self, x: torch.Tensor):
        """Invariant outputs ``predictor(canon(x))``, or dense outputs mapped back to the frame of ``x``."""
        y = self.predictor(self.canonicalizer(x))
        if self.output == "dense":
            y = self._invert_all(y, self.kind)
        return y

    def canonicalize(self, x: torch.Tensor) -> torch.Tensor:
        """The canonical images (B, C, H, W) the predictor sees (runs the canonicalizer)."""
        return self.canonicalizer(x)

    def invert(self, y: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Map a dense output (B, K, H', W') of the last forward's canonical images back to the input frame."""
        return self.canonicalizer.invert(y, kind or self.kind)

    def _invert_all(self, y, kind: str):
        if isinstance(y, torch.Tensor):
            if y.dim() != 4:
                raise ValueError(
                    f"Canonicalized: output='dense' needs the predictor to return (B, K, H', W') maps, got shape "
                    f"{tuple(y.shape)}; "
                    "use output='invariant' for logits or vectors"
                )
            return self.canonicalizer.invert(y, kind)
        if isinstance(y, Mapping):
            return type(y)((k, self._invert_all(v, kind)) for k, v in y.items())
        if isinstance(y, (list, tuple)):
            parts = [self._invert_all(v, kind) for v in y]
            return type(y)(*parts) if hasattr(y, "_fields") else type(y)(parts)
        raise TypeError(
            f"Canonicalized: output='dense' needs tensors (or a dict/list/tuple of tensors) from the predictor, got "
            f"{type(y).__name__}"
        )

    # -- training ---------------------------------------------------------------
    def losses(
        self,
        target: torch.Tensor | None = None,
        applied: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted canonicalization losses of the last forward: ``prior``, ``contrastive`` (and ``artifact``
        when its weight is > 0).

        Args:
            target: (B,) prior target elements (default: the identity, for upright data).
            applied: (B,) elements applied to the inputs by augmentation; the prior's
                target is then their inverse (:func:`canon.losses.prior_target`).
                Give at most one of ``target`` and ``applied``.
            generator: random generator of the artifact loss.
        """
        if target is not None and applied is not None:
            raise ValueError("Canonicalized.losses: give target or applied, not both")
        if applied is not None:
            scores = self.canonicalizer.scores
            target = losses.prior_target(self.group, applied.to(scores.device), scores.shape[0], scores.device)
        out = {"prior": self.canonicalizer.prior_loss(target), "contrastive": self.canonicalizer.contrastive_loss()}
        if self.artifact_weight > 0:
            out["artifact"] = self.canonicalizer.artifact_loss(generator)
        return out

    def loss(
        self,
        task_loss: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        applied: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``task_loss + λ_p·L_prior + λ_c·L_contrastive (+ λ_a·L_artifact)`` for the last forward.

        Without ``task_loss`` it returns the weighted canonicalization terms alone. Terms
        whose weight is 0 are skipped. ``target``/``applied``: see :meth:`losses`.
        """
        terms = self.losses(target, applied, generator)
        weights = {"prior": self.prior_weight, "contrastive": self.contrastive_weight, "artifact": self.artifact_weight}
        total = task_loss
        for name, value in terms.items():
            if weights[name] > 0:
                total = weights[name] * value if total is None else total + weights[name] * value
        if total is None:  # every weight is 0 and no task loss: a zero that still has a graph
            total = 0.0 * terms["prior"]
        return total

    def identity_metric(self) -> torch.Tensor:
        """Share of the last batch whose chosen element is the identity."""
        return self.canonicalizer.identity_metric()
