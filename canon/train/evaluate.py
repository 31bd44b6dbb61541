"""Evaluation on every group-transformed copy of the test set (SPEC §5).

For each method and each group element g, the test set transformed by g
(:func:`canon.transform`) is classified. Reported, all as fractions in [0, 1]:

* ``upright_acc``: accuracy on the untransformed test set (g = identity);
* ``group_avg_acc``: mean over all group elements of the accuracy on ``T_g x``
  (C_n: the n rotations; D_n: all 2n elements);
* ``per_element_acc``: the accuracies in group order;
* ``invariance_rate``: share of test samples whose predicted class is the same for all copies.

For the canonicalized method also:

* ``canonical_consistency``: share of samples whose canonical images agree across all
  copies. For exact groups on square images (C2, C4, D1, D2, D4) the comparison is
  exact (``torch.equal`` per sample). For other groups the copies were resampled,
  so ``canon(T_g x)`` and ``canon(x)`` differ by interpolation even when the same
  orientation was chosen; they are compared up to ``CONSISTENCY_TOL``, a relative L1
  distance (``Σ|a − b| / Σ|b|``). Measured on the 1,000 MNIST test digits (C8): the
  same orientation reached through two bilinear resamplings (45° and back) differs from
  the original by 0.22 (median), 0.45 at most; a digit turned by 45° or more differs by
  1.2–1.4 (median), with 1% below 0.31–0.78 depending on the angle (nearly symmetric
  digits such as 0 and 1 under 180°); hence the threshold 0.5. In the C8 MNIST runs the
  image test and the exact orientation test below gave the same share;
* ``orientation_consistency``: share whose chosen element composes to the same overall
  transform for every copy (``g*(T_g x) ∘ g == g*(x)``), an exact integer test for any group;
* ``identity_metric``: share of upright test samples whose chosen element is the identity;
* ``orientation_acc``: share of all copies ``T_g x`` whose chosen element is ``g⁻¹``.

Test samples are sharded over ranks and the counts summed with ``all_reduce``. Element
compositions are computed per sample (:meth:`canon.Group.compose_indices`), never through the
N × N Cayley table, so the cost of evaluation is that of the N passes over the test set.
"""

from __future__ import annotations

import torch
from torch import nn

from canon.functional import transform
from canon.groups import Group

__all__ = ["evaluate", "upright_accuracy", "CONSISTENCY_TOL"]

CONSISTENCY_TOL = 0.5


def _reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _shard(n: int, rank: int, world: int) -> torch.Tensor:
    return torch.arange(rank, n, max(world, 1))


def exact_canonicalization(group: Group, image_size) -> bool:
    """True when every element is an exact pixel permutation of these images."""
    H, W = image_size
    return group.all_exact and (H == W or all(group.element(i)[0] * 2 % group.n == 0 for i in range(group.order)))


def same_images(a: torch.Tensor, b: torch.Tensor, exact: bool) -> torch.Tensor:
    """(B,) bool: per-sample agreement, exact or within ``CONSISTENCY_TOL`` relative L1."""
    if exact:
        return (a == b).flatten(1).all(1)
    diff = (a.float() - b.float()).abs().flatten(1).sum(1)
    ref = b.float().abs().flatten(1).sum(1).clamp_min(1e-12)
    return diff / ref <= CONSISTENCY_TOL


@torch.no_grad()
def upright_accuracy(model: nn.Module, test, device, batch_size: int, rank: int = 0, world: int = 1) -> float:
    model.eval()
    idx = _shard(len(test), rank, world)
    counts = torch.zeros(2, dtype=torch.float64)
    for s in range(0, idx.numel(), batch_size):
        i = idx[s : s + batch_size]
        pred = model(test.x[i].to(device)).argmax(1).cpu()
        counts += torch.tensor([float((pred == test.y[i]).sum()), float(i.numel())], dtype=torch.float64)
    c = _reduce(counts.to(device), world).cpu()
    return float(c[0] / c[1])


@torch.no_grad()
def evaluate(
    models: dict[str, nn.Module],
    test,
    group: Group,
    device,
    batch_size: int,
    padding: str = "zeros",
    rank: int = 0,
    world: int = 1,
) -> dict:
    """Metrics of every method (see the module docstring); identical on every rank."""
    N = group.order
    exact = exact_canonicalization(group, test.x.shape[-2:])
    idx = _shard(len(test), rank, world)
    out = {}
    for name, model in models.items():
        model.eval()
        ours = name == "canonicalized"
        # counts: per-element correct (N), invariant, consistent, orientation-consistent, identity, orientation-correct, samples
        c = torch.zeros(N + 6, dtype=torch.float64)
        for s in range(0, idx.numel(), batch_size):
            i = idx[s : s + batch_size]
            xb, yb = test.x[i].to(device), test.y[i]
            invariant = consistent = orient_same = None
            for e in range(N):
                xt = transform(xb, e, group, padding) if e else xb
                if ours:
                    xc = model.canonicalizer(xt)
                    el = model.canonicalizer.element.cpu()
                    pred = model.predictor(xc).argmax(1).cpu()
                else:
                    pred = model(xt).argmax(1).cpu()
                c[e] += float((pred == yb).sum())
                if e == 0:
                    p0, invariant = pred, torch.ones_like(pred, dtype=torch.bool)
                    if ours:
                        xc0, el0 = xc, el
                        consistent = orient_same = torch.ones_like(invariant)
                        c[N + 3] += float((el == 0).sum())
                else:
                    invariant &= pred == p0
                    if ours:
                        consistent &= same_images(xc, xc0, exact).cpu()
                        orient_same &= group.compose_indices(el, e) == el0
                if ours:
                    c[N + 4] += float((group.compose_indices(el, e) == 0).sum())
            c[N] += float(invariant.sum())
            if ours:
                c[N + 1] += float(consistent.sum())
                c[N + 2] += float(orient_same.sum())
            c[N + 5] += float(i.numel())
        c = _reduce(c.to(device), world).cpu()
        n = float(c[N + 5])
        per = [float(v) / n for v in c[:N]]
        m = {
            "upright_acc": per[0],
            "group_avg_acc": sum(per) / N,
            "per_element_acc": per,
            "invariance_rate": float(c[N]) / n,
        }
        if ours:
            m.update(
                canonical_consistency=float(c[N + 1]) / n,
                consistency_comparison="exact" if exact else f"relative L1 <= {CONSISTENCY_TOL}",
                orientation_consistency=float(c[N + 2]) / n,
                identity_metric=float(c[N + 3]) / n,
                orientation_acc=float(c[N + 4]) / (n * N),
            )
        out[name] = m
    return out
