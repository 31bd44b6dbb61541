"""Public result types of the functional API."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Selection", "SelectionLosses"]


class Selection(NamedTuple):
    """What :func:`canon.select` chose for every sample.

    Attributes:
        scores: (B, N) score of every orbit copy (cosine or dot with the reference).
        probs: (B, N) β-softmax of the scores (with Gumbel noise when asked).
        index: (B,) int64 chosen element: argmax, ties to the lowest index.
        onehot: (B, N) one-hot of ``index``; in training straight-through
            (``hard + probs − stopgrad(probs)``), so gradients reach the scores.
    """

    scores: torch.Tensor
    probs: torch.Tensor
    index: torch.Tensor
    onehot: torch.Tensor


class SelectionLosses(NamedTuple):
    """:func:`canon.select_losses`: the selection and both training losses of the same vectors.

    Attributes:
        selection: the :class:`Selection`.
        contrastive: 0-d orbit contrastive loss (batch mean).
        prior: 0-d prior cross-entropy towards the targets (batch mean).
    """

    selection: Selection
    contrastive: torch.Tensor
    prior: torch.Tensor
