"""CUDA-graph capture of a canonicalizer's forward and backward, for training loops.

At the batch sizes canonicalizers train at, the GPU work of one step is tens of
microseconds per op, so the host time of launching it dominates. Every canon op is
capturable (no host↔device copy or synchronisation per call), so the whole canonicalizer
(orbit, encoder, selection with both losses, canonical image) and its backward can be
captured once with ``torch.cuda.make_graphed_callables`` and replayed per step.

:class:`GraphedCanonicalizer` wraps an :class:`canon.OrbitCanonicalizer`: call it like the
canonicalizer; afterwards the canonicalizer's ``selection``, ``prior_loss()`` (default
target), ``contrastive_loss()`` and ``invert()`` work as after an eager forward, and
gradients reach the encoder and the reference vector through the replayed backward.

Example (on a CUDA machine)::

    canon_net = canon.OrbitCanonicalizer(encoder, "C8", size=64).cuda().train()
    graphed = canon.GraphedCanonicalizer(canon_net, torch.empty(64, 3, 96, 96, device="cuda"))
    for x, y in loader:                      # every batch the captured shape (drop_last=True)
        xc = graphed(x.cuda())
        loss = task(predictor(xc), y) + canon_net.prior_loss() + 0.1 * canon_net.contrastive_loss()
        loss.backward(); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

import torch
from torch import nn

from canon.modules import OrbitCanonicalizer

__all__ = ["GraphedCanonicalizer"]


class _Outputs(nn.Module):
    """The canonicalizer's forward with everything a training step reads returned as outputs
    (a captured graph replays outputs; Python side effects happen only at capture)."""

    def __init__(self, canonicalizer: OrbitCanonicalizer):
        super().__init__()
        self.canonicalizer = canonicalizer

    def forward(self, x):
        c = self.canonicalizer
        xc = c(x)
        st = c.state
        if c.training:
            l_c, l_p = c._losses
        else:
            l_c = l_p = st.vectors.new_zeros(())
        sel = st.selection
        return xc, st.vectors, sel.scores, sel.probs, sel.index, sel.onehot, l_c, l_p


class GraphedCanonicalizer(nn.Module):
    """A canonicalizer whose forward and backward replay CUDA graphs captured for one input shape.

    Args:
        canonicalizer: the :class:`canon.OrbitCanonicalizer` (on CUDA, in the mode it will
            run in: ``train()`` captures the training forward and backward).
        sample: a CUDA tensor of the exact shape, dtype and device every later input has
            (its values do not matter).
        warmup: eager iterations before capture (on a side stream, as PyTorch requires).

    Raises:
        ValueError: the canonicalizer or the sample is not on CUDA, or a later input's
            shape/dtype/device or the canonicalizer's mode differs from the captured ones.
    """

    def __init__(self, canonicalizer: OrbitCanonicalizer, sample: torch.Tensor, warmup: int = 3):
        super().__init__()
        fn = "canon.GraphedCanonicalizer"
        if not isinstance(canonicalizer, OrbitCanonicalizer):
            raise TypeError(
                f"{fn}: canonicalizer must be a canon.OrbitCanonicalizer, got {type(canonicalizer).__name__}"
            )
        if not isinstance(sample, torch.Tensor) or sample.dim() != 4:
            raise ValueError(
                f"{fn}: sample must be an image batch (B, C, H, W) tensor, "
                f"got {getattr(sample, 'shape', type(sample).__name__)}"
            )
        if sample.device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError(
                f"{fn}: CUDA graphs need CUDA tensors; sample is on {sample.device} (run eagerly on the CPU: call the "
                f"canonicalizer itself)"
            )
        devices = {p.device for p in canonicalizer.parameters()} | {b.device for b in canonicalizer.buffers()}
        if devices != {sample.device}:
            raise ValueError(
                f"{fn}: the canonicalizer's parameters/buffers are on {sorted(map(str, devices))} but the sample is "
                f"on {sample.device}; call .to({str(sample.device)!r}) first"
            )
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"{fn}: warmup must be an int >= 1, got {warmup!r}")
        self.canonicalizer = canonicalizer
        self._key = (tuple(sample.shape), sample.dtype, sample.device, canonicalizer.training)
        self._graphed = torch.cuda.make_graphed_callables(_Outputs(canonicalizer), (sample,), num_warmup_iters=warmup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.device, self.canonicalizer.training)
        if key != self._key:
            raise ValueError(
                f"canon.GraphedCanonicalizer: captured for input {self._key[:3]} in "
                f"{'train' if self._key[3] else 'eval'} mode, "
                f"got {key[:3]} in {'train' if key[3] else 'eval'} mode; capture another GraphedCanonicalizer for it "
                f"(or run the canonicalizer eagerly)"
            )
        xc, vectors, scores, probs, index, onehot, l_c, l_p = self._graphed(x)
        from canon.types import Selection

        sel = Selection(scores, probs, index, onehot)
        self.canonicalizer._remember(None, vectors, sel, (l_c, l_p) if self.canonicalizer.training else None)
        return xc
