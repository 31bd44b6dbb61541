"""Evaluation on every group-transformed copy of the test set (docs/spec.md §5).

For each method and each group element g, the test set transformed by g
(:func:`canon.transform`) is classified. Reported, all as fractions in [0, 1]:

* ``upright_acc``: accuracy on the untransformed test set (g = identity);
* ``group_avg_acc``: mean over all group elements of the accuracy on ``T_g x``
  (C_n: the n rotations; D_n: all 2n elements);
* ``per_element_acc``: the accuracies in group order;
* ``invariance_rate``: share of test samples whose predicted class is the same for all copies.

Arbitrary angles (``angle_step`` degrees, 15 by default): the test set turned by every
multiple of the step (:func:`canon.transform` with the group C_{360/step}, or D_{360/step}
for a dihedral group, whose flipped copies are included), resampled bilinearly where the
angle is not a multiple of 90°:

* ``angle_acc``: ``{"angles_deg": [...], "acc": [...]}`` and, for dihedral groups,
  ``"flipped_acc"`` (the copies flipped first, then turned);
* ``angle_avg_acc``: the mean of all those accuracies; ``angle_invariance_rate``: share of
  samples whose prediction is the same for every one of those copies.

For the methods with a canonicalizer (``canonicalized``, ``equivariant``) also:

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
* ``orientation_acc``: share of all copies ``T_g x`` whose chosen element is ``g⁻¹``;
* collapse statistics of the upright test set (:func:`collapse_statistics`): ``score_tie_rate``
  (best and second-best scores within ``TIE_GAP``), ``parallel_orbit_rate`` (every pair of the
  orbit's vectors has cosine >= ``PARALLEL_COS``), ``mean_pair_cos`` and ``median_score_gap``.

Test samples are sharded over ranks and the counts summed with ``all_reduce``. Element
compositions are computed per sample (:meth:`canon.Group.compose_indices`), never through the
N × N Cayley table, so the cost of evaluation is that of the N passes over the test set.
"""

from __future__ import annotations

import torch
from torch import nn

from canon.functional import transform
from canon.groups import Group

__all__ = [
    "evaluate",
    "upright_accuracy",
    "angle_accuracy",
    "collapse_statistics",
    "CONSISTENCY_TOL",
    "TIE_GAP",
    "PARALLEL_COS",
]

CONSISTENCY_TOL = 0.5
TIE_GAP = 1e-3  # scores closer than this: the choice is decided by noise (float rounding, resampling)
PARALLEL_COS = 0.99  # cosine of 8.1°: vectors this close point the same way


def _canonicalizing(model: nn.Module) -> bool:
    return hasattr(model, "canonicalizer") and hasattr(model, "predictor")


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


DEGENERATE_SHARE = 0.99  # a model predicting one class for this share of the upright test images is degenerate


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
    progress=None,
) -> dict:
    """Metrics of every method (see the module docstring); identical on every rank. ``progress(n)``, when
    given, is called with the number of images of each transformed batch evaluated (a progress bar)."""
    N = group.order
    K = max(int(test.num_classes), 1)
    exact = exact_canonicalization(group, test.x.shape[-2:])
    idx = _shard(len(test), rank, world)
    out = {}
    for name, model in models.items():
        model.eval()
        ours = _canonicalizing(model)
        # counts: per-element correct (N), invariant, consistent, orientation-consistent, identity,
        # orientation-correct, samples, upright predictions per class (K)
        c = torch.zeros(N + 6 + K, dtype=torch.float64)
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
                if progress is not None:
                    progress(int(i.numel()))
                if e == 0:
                    p0, invariant = pred, torch.ones_like(pred, dtype=torch.bool)
                    c[N + 6 :] += torch.bincount(pred.clamp(0, K - 1), minlength=K)[:K].double()
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
        share, top = (float(v) for v in torch.max(c[N + 6 :] / n, 0))
        m = {
            "upright_acc": per[0],
            "group_avg_acc": sum(per) / N,
            "per_element_acc": per,
            "invariance_rate": float(c[N]) / n,
            # a model that answers one class for (almost) every image is trivially invariant: flagged
            "majority_prediction": {"class": int(top), "share": share},
            "degenerate": K > 1 and share >= DEGENERATE_SHARE,
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


@torch.no_grad()
def angle_accuracy(
    models: dict[str, nn.Module],
    test,
    group: Group,
    step_deg: int,
    device,
    batch_size: int,
    padding: str = "zeros",
    rank: int = 0,
    world: int = 1,
    progress=None,
) -> dict:
    """Accuracy of every method on the test set turned by every multiple of ``step_deg`` degrees
    (``progress`` as in :func:`evaluate`).

    See the module docstring.

    Returns ``{method: {"angle_acc": {...}, "angle_avg_acc": float, "angle_invariance_rate": float}}``.
    """
    if isinstance(step_deg, bool) or not isinstance(step_deg, int) or step_deg < 1 or 360 % step_deg:
        raise ValueError(f"angle_accuracy: step_deg must be a positive divisor of 360, got {step_deg!r}")
    grid = Group(360 // step_deg, group.reflections)
    M = grid.order
    idx = _shard(len(test), rank, world)
    out = {}
    for name, model in models.items():
        model.eval()
        c = torch.zeros(M + 2, dtype=torch.float64)  # per copy correct, invariant, samples
        for s in range(0, idx.numel(), batch_size):
            i = idx[s : s + batch_size]
            xb, yb = test.x[i].to(device), test.y[i]
            invariant = p0 = None
            for e in range(M):
                pred = model(transform(xb, e, grid, padding) if e else xb).argmax(1).cpu()
                c[e] += float((pred == yb).sum())
                if progress is not None:
                    progress(int(i.numel()))
                if e == 0:
                    p0, invariant = pred, torch.ones_like(pred, dtype=torch.bool)
                else:
                    invariant &= pred == p0
            c[M] += float(invariant.sum())
            c[M + 1] += float(i.numel())
        c = _reduce(c.to(device), world).cpu()
        n = float(c[M + 1])
        acc = [float(v) / n for v in c[:M]]
        table = {"angles_deg": [step_deg * k for k in range(grid.n)], "acc": acc[: grid.n]}
        if group.reflections:
            table["flipped_acc"] = acc[grid.n :]
        out[name] = {"angle_acc": table, "angle_avg_acc": sum(acc) / M, "angle_invariance_rate": float(c[M]) / n}
    return out


def pair_cosines(vectors: torch.Tensor) -> torch.Tensor:
    """(B, N, N) cosine similarity of every pair of each orbit's vectors (B, N, D)."""
    v = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return v @ v.transpose(1, 2)


@torch.no_grad()
def collapse_statistics(model: nn.Module, test, device, batch_size: int, rank: int = 0, world: int = 1) -> dict:
    """What the contrastive loss is meant to prevent, measured on the upright test set.

    For each test image x the canonicalizer (eval mode) computes the orbit vectors
    v[g] (B, N, D) and scores s[g]:

    * ``score_tie_rate``: share of images whose best and second-best scores differ by less
      than ``TIE_GAP`` (1e-3): the choice there is decided by noise;
    * ``parallel_orbit_rate``: share of images whose orbit is collapsed: every pair g ≠ g'
      has ``cos(v[g], v[g']) >= PARALLEL_COS`` (0.99, i.e. all vectors within 8.1° of each
      other), so no score can tell the copies apart reliably;
    * ``mean_pair_cos``: mean of ``cos(v[g], v[g'])`` over images and pairs g ≠ g';
    * ``median_score_gap``: median over images of (best − second-best score).

    Scores are cosines in [-1, 1] for the optimization-based canonicalizer; for the
    equivariant one they are mean activations (no fixed scale), so the tie rate compares
    different scales there.
    """
    can = model.canonicalizer
    model.eval()
    idx = _shard(len(test), rank, world)
    ties = parallel = pair_sum = 0.0
    gaps = []
    for s in range(0, idx.numel(), batch_size):
        i = idx[s : s + batch_size]
        st = can.select(test.x[i].to(device))
        scores = st.selection.scores.float()
        top = scores.topk(2, dim=1).values if scores.shape[1] > 1 else torch.cat([scores, scores], 1)
        gap = (top[:, 0] - top[:, 1]).cpu()
        gaps.append(gap)
        ties += float((gap < TIE_GAP).sum())
        cos = pair_cosines(st.vectors)
        N = cos.shape[1]
        off = ~torch.eye(N, dtype=torch.bool, device=cos.device)
        offdiag = cos[:, off].reshape(cos.shape[0], -1)
        if N > 1:
            parallel += float((offdiag.min(1).values >= PARALLEL_COS).sum())
            pair_sum += float(offdiag.mean(1).sum())
    c = _reduce(
        torch.tensor([ties, parallel, pair_sum, float(idx.numel())], dtype=torch.float64, device=device), world
    ).cpu()
    gap_all = torch.cat(gaps) if gaps else torch.zeros(0)
    if world > 1:  # the median needs every rank's gaps
        import torch.distributed as dist

        parts = [None] * world
        dist.all_gather_object(parts, gap_all)
        gap_all = torch.cat(parts)
    n = float(c[3])
    return {
        "score_tie_rate": float(c[0]) / n,
        "parallel_orbit_rate": float(c[1]) / n,
        "mean_pair_cos": float(c[2]) / n,
        "median_score_gap": float(gap_all.median()) if gap_all.numel() else 0.0,
    }


def canonicalizer_cost(model: nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 2) -> dict:
    """Parameters of the canonicalizer and the predictor, and the canonicalizer's share of a training step.

    One step here is what the canonicalizer adds to a training step on the batch ``x``: its
    forward in training mode (views, encoder, selection, canonical images) and the backward
    of its weighted losses plus a stand-in task loss on the canonical images (mean square),
    without the predictor and without an optimizer update. Wall-clock median of ``repeats``
    runs after ``warmup``, in milliseconds; gradients are cleared afterwards.
    """
    import time

    can = model.canonicalizer
    was_training = model.training
    model.train()
    times = []
    try:
        for r in range(warmup + repeats):
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            with torch.enable_grad():
                xc = can(x)
                loss = model.loss(xc.float().square().mean())
                loss.backward()
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            if r >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    times.sort()
    return {
        "canonicalizer_params": sum(p.numel() for p in can.parameters()),
        "predictor_params": sum(p.numel() for p in model.predictor.parameters()),
        "canonicalizer_step_ms": 1e3 * times[len(times) // 2],
    }
