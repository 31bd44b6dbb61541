"""The ``reference`` backend: every op in plain PyTorch, tuned for the CPU (and the GPU fallback).

What the values are is defined in :mod:`canon.oracle` (small and slow on purpose); this module
computes the same values fast: cached per-matrix plans, bilinear views through aten's
``grid_sampler_2d`` with the batch folded into the channels (float32 and lower; float64 views
take the oracle's four taps, weighed in float32 as defined, where aten weighs in float64 and was
up to 2e-6 off), exact views as cached index gathers
written straight into their slot of the output, antialiased views as one sparse product, and
explicit backward formulas (the registered ops' backward halves run without autograd). The tests
compare it with the oracle, as they compare the Triton kernels.

Knows tensors and view matrices (see :mod:`canon.geometry`), not groups. Coordinates
(:func:`canon.numerics.sample_coords`) and the accumulation dtype (:func:`canon.numerics.acc_dtype`)
are the rules every backend shares.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from canon._cache import PerTensorCache
from canon.geometry import antialias_window
from canon.numerics import acc_dtype, orbit_empty, sample_coords
from canon.types import Selection

__all__ = [
    "orbit_ref",
    "transform_values_ref",
    "select_ref",
    "contrastive_loss_ref",
    "prior_loss_ref",
    "permute_channels_ref",
    "orbit_backward_ref",
    "transform_backward_ref",
    "select_backward_ref",
    "select_losses_backward_ref",
    "contrastive_loss_backward_ref",
    "orbit_antialias_backward_ref",
    "orbit_antialias_fast",
    "orbit_antialias_backward_fast",
]


def _scores(v: torch.Tensor, r: torch.Tensor, score: str, eps: float) -> torch.Tensor:
    """(B, N) scores of vectors ``v`` against ``r``, both in the accumulation dtype already."""
    return F.cosine_similarity(v, r.expand_as(v), dim=-1, eps=eps) if score == "cosine" else (v * r).sum(-1)


def _reflect(x: torch.Tensor, size: int) -> torch.Tensor:
    # Mirror about -0.5 and size-0.5 (grid_sample, align_corners=False), then clip.
    if size == 1:
        return torch.zeros_like(x)
    y = (x + 0.5).abs()
    flips = torch.floor(y / size)
    extra = y - flips * size
    even = torch.remainder(flips, 2) == 0
    y = torch.where(even, extra - 0.5, size - extra - 0.5)
    return y.clamp(0, size - 1)


def _round_half_even(x: torch.Tensor) -> torch.Tensor:
    r = torch.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = torch.remainder(r, 2) != 0
    return torch.where(tie & odd, r - 1, r)


def _taps(u: torch.Tensor, v: torch.Tensor, H: int, W: int, padding: str, interpolation: str, exact: bool):
    """Per tap: flat source index (int64, clamped), weight (float32) and in-range mask.

    Out-of-range taps read nothing (a NaN at the border does not leak outwards).
    """
    if padding == "border":
        u, v = u.clamp(0, W - 1), v.clamp(0, H - 1)
    elif padding == "reflection":
        u, v = _reflect(u, W), _reflect(v, H)
    if exact or interpolation == "nearest":
        ui, vi = (u, v) if exact else (_round_half_even(u), _round_half_even(v))
        ok = (ui >= 0) & (ui <= W - 1) & (vi >= 0) & (vi <= H - 1)
        idx = (vi.clamp(0, H - 1) * W + ui.clamp(0, W - 1)).long()
        return [(idx, torch.ones_like(u), ok)]
    x0, y0 = torch.floor(u), torch.floor(v)
    fx, fy = u - x0, v - y0
    taps = []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xx, yy = x0 + dx, y0 + dy
            ok = (xx >= 0) & (xx <= W - 1) & (yy >= 0) & (yy <= H - 1)
            idx = (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)).long()
            taps.append((idx, wx * wy, ok))
    return taps


def _exact_rows(mats: torch.Tensor) -> torch.Tensor:
    """(…,) bool: which matrices sample integer coordinates only (pixel permutations, docs/spec.md §2)."""
    m = mats.detach().to("cpu", torch.float64)
    lin = m[..., :2]
    exact = ((lin == 0) | (lin.abs() == 1)).all(-1).all(-1) & (m[..., 2] == m[..., 2].round()).all(-1)
    return exact.to(mats.device)


def _gather_taps(
    src: torch.Tensor, u: torch.Tensor, v: torch.Tensor, H: int, W: int, padding: str, interpolation: str, exact: bool
) -> torch.Tensor:
    """Sample ``src`` (B, C, H·W) at coordinates (P,) shared by the batch, or (B, P) per sample → (B, C, P)."""
    return _apply_taps(src, _taps(u, v, H, W, padding, interpolation, exact), exact or interpolation == "nearest")


def _apply_taps(src: torch.Tensor, taps, one_tap: bool) -> torch.Tensor:
    """Sum of tap value × weight over ``taps`` [(index, weight, in-range)] of (P,) or (B, P) → (B, C, P)."""
    B, C, _ = src.shape
    zero = torch.zeros((), dtype=src.dtype, device=src.device)
    out = None
    for idx, wt, ok in taps:
        if idx.dim() == 1:
            # gather with a broadcast index: 5-20× faster on CPU than index_select along the last dim
            val = torch.gather(src, 2, idx.expand(B, C, idx.shape[-1]))
        else:
            val = torch.gather(src, 2, idx[:, None, :].expand(B, C, idx.shape[-1]))
            wt, ok = wt[:, None, :], ok[:, None, :]
        if not one_tap:
            val = val * wt.to(src.dtype)
        val = torch.where(ok, val, zero)
        out = val if out is None else out + val
    return out


_GRID_PADDING = {"zeros": 0, "border": 1, "reflection": 2}  # aten grid_sampler padding codes


class _ViewPlan:
    """Everything about a set of view matrices that does not depend on the images, computed once.

    Views in ``gathered`` are sampled by one-tap gathers (exact views, or every view when
    nearest); the others are bilinear through ``grid_sample`` with the normalised ``grids``
    (N, h, w, 2). ``taps`` hold the one-tap gathers of every view as (N, P) tensors;
    ``gathered_taps``/``gathered_index`` the same restricted to the gathered views.
    """

    def __init__(
        self, mats: torch.Tensor, exact: bool, in_hw, out_hw, padding: str, interpolation: str, dtype: torch.dtype
    ):
        H, W = in_hw
        h, w = out_hw
        N = mats.shape[0]
        u, v = sample_coords(mats, h, w)  # (N, P)
        self.exact_rows = (True,) * N if exact else tuple(bool(r) for r in _exact_rows(mats).tolist())
        nearest = interpolation == "nearest"
        self.gathered = tuple(nearest or r for r in self.exact_rows)
        # one tap per view: exact integer coordinates, or nearest rounding (a no-op on exact views)
        self.taps = _taps(u, v, H, W, padding, interpolation, exact or not nearest)
        rows = [n for n in range(N) if self.gathered[n]]
        self.gathered_rows = rows
        self.gathered_index = torch.tensor(rows, dtype=torch.int64, device=mats.device)
        self.gathered_mask = torch.tensor(self.gathered, device=mats.device)
        self.gathered_taps = [
            (i[rows].reshape(-1), wt[rows].reshape(-1), ok[rows].reshape(-1)) for i, wt, ok in self.taps
        ]
        self.grids = self.taps4 = None
        if len(rows) < N and dtype == torch.float64:
            # float64: aten's grid sampler would weigh in float64 (and reflect in float64), the definition
            # weighs in float32 (canon.oracle): the four taps of every view, gathered and summed as there
            self.taps4 = _taps(u, v, H, W, padding, interpolation, False)
        elif len(rows) < N:
            grid = torch.stack([(2 * u.to(dtype) + 1) / W - 1, (2 * v.to(dtype) + 1) / H - 1], -1)
            self.grids = grid.reshape(N, h, w, 2)
        self.padding = _GRID_PADDING[padding]
        self.padding_name, self.interpolation, self.out_hw = padding, interpolation, (h, w)


_VIEW_PLANS = PerTensorCache()


def _view_plan(
    mats: torch.Tensor, exact: bool, in_hw, out_hw, padding: str, interpolation: str, dtype: torch.dtype
) -> _ViewPlan:
    """The cached :class:`_ViewPlan` of ``mats`` (plans die with their matrix tensor)."""
    key = (tuple(in_hw), tuple(out_hw), padding, interpolation, dtype, bool(exact))
    return _VIEW_PLANS.get(mats, key, lambda: _ViewPlan(mats, exact, in_hw, out_hw, padding, interpolation, dtype))


def _image_chunks(B: int, C: int) -> int:
    """Into how many chunks :func:`_grid_view` folds a batch of ``B`` images of ``C`` channels: one per
    thread (aten's CPU grid sampler runs one image per thread), a divisor of ``B·C``. 0: do not fold,
    when no divisor keeps at least half the threads the unfolded batch would keep busy (B·C = 2·prime
    on 16 threads would otherwise run on 2)."""
    threads = torch.get_num_threads()
    if threads <= 1:
        return 1
    images = B * C
    k = next((k for k in range(min(threads, images), 1, -1) if images % k == 0), 0)
    return k if 2 * k >= min(threads, B) else 0


def _grid_view(src: torch.Tensor, plan: _ViewPlan, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear view ``n`` of ``src`` (B, C, H, W) → (B, C, h, w), written into ``out`` when given (no autograd).

    Without autograd the batch is folded into the channels of a few images (``_image_chunks``): every
    image of a view samples the same grid, so aten then computes each pixel's taps once per chunk
    instead of once per image (bit-identical values; 11.4 → 10.4 ms for the quick benchmark's C8
    orbit on the 2-core machine). ``out`` may have another dtype (the copy converts)."""
    B, C, H, W = src.shape
    if plan.taps4 is not None:  # float64
        y = _tap_views(src, plan, n).reshape(B, C, *plan.out_hw)
        return y if out is None else out.copy_(y)
    if out is not None:
        k = _image_chunks(B, C) if src.device.type == "cpu" else 0
        if k:
            grid = plan.grids[n : n + 1].expand(k, *plan.grids.shape[1:])
            y = torch.ops.aten.grid_sampler_2d(src.reshape(k, B * C // k, H, W), grid, 0, plan.padding, False)
            return out.copy_(y.view(out.shape))
        grid = plan.grids[n : n + 1].expand(B, *plan.grids.shape[1:])
        if out.dtype != src.dtype:
            return out.copy_(torch.ops.aten.grid_sampler_2d(src, grid, 0, plan.padding, False))
        return torch.ops.aten.grid_sampler_2d.out(src, grid, 0, plan.padding, False, out=out)
    grid = plan.grids[n : n + 1].expand(B, *plan.grids.shape[1:])
    return torch.ops.aten.grid_sampler_2d(src, grid, 0, plan.padding, False)


def _tap_views(src: torch.Tensor, plan: _ViewPlan, rows) -> torch.Tensor:
    """Bilinear views ``rows`` (an int: one view for the batch; a (B,) tensor: one per sample) of ``src``
    (B, C, H, W) through the plan's four taps (float64 plans) → (B, C, P)."""
    B, C, H, W = src.shape
    return _apply_taps(src.reshape(B, C, H * W), [(i[rows], wt[rows], ok[rows]) for i, wt, ok in plan.taps4], False)


def _gathered_views(src: torch.Tensor, plan: _ViewPlan) -> torch.Tensor:
    """The gathered views of ``src`` (B, C, H, W) → (B, C, len(gathered rows), P), one gather in all."""
    B, C, H, W = src.shape
    return _apply_taps(src.reshape(B, C, H * W), plan.gathered_taps, True).reshape(B, C, len(plan.gathered_rows), -1)


def _orbit_views(
    x: torch.Tensor, mats, exact, out_hw, padding, interpolation, out: torch.Tensor | None
) -> torch.Tensor:
    """All views of ``x`` (B, C, H, W, compute dtype) as (B, N, C, h, w): written into ``out`` when
    given (the fast path: every view straight into its slot of the final layout), else
    built differentiably (autograd) and stacked."""
    B, C, H, W = x.shape
    h, w = out_hw
    plan = _view_plan(mats, exact, (H, W), out_hw, padding, interpolation, x.dtype)
    N, g_rows = len(plan.gathered), plan.gathered_rows
    if out is None:
        views: list = [None] * N
        if g_rows:
            part = _gathered_views(x, plan)
            for k, n in enumerate(g_rows):
                views[n] = part[:, :, k].reshape(B, C, h, w)
        for n in range(N):
            if views[n] is None:
                views[n] = _grid_view(x, plan, n)
        return torch.stack(views, 1)
    if g_rows:
        part = _gathered_views(x, plan).reshape(B, C, len(g_rows), h, w).transpose(1, 2)
        if len(g_rows) == N:
            out.copy_(part)
        else:
            out.index_copy_(1, plan.gathered_index, part.to(out.dtype))
    for n in range(N):
        if not plan.gathered[n]:
            _grid_view(x, plan, n, out=out[:, n])
    return out


def orbit_ref(
    x: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    size: tuple[int, int],
    padding: str = "zeros",
    interpolation: str = "bilinear",
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """All views ``(B, N, C, h, w)`` of ``x`` (B, C, H, W) through matrices ``(N, 2, 3)``.

    Exact elements are pixel gathers, others bilinear through ``grid_sample``; derived
    coordinates are cached per matrix table. Without autograd every view is written
    straight into its slot of the output (one pass over the output memory); when ``x``
    requires grad the views are built differentiably.
    """
    B, C, H, W = x.shape
    h, w = size
    N, dt = mats.shape[0], out_dtype or x.dtype
    xs = x.to(acc_dtype(x.dtype))
    if torch.is_grad_enabled() and xs.requires_grad:
        views = _orbit_views(xs, mats, exact, (h, w), padding, interpolation, None)
        return orbit_empty(B, N, C, h, w, dt, x.device, channels_last).copy_(views) if channels_last else views.to(dt)
    if out is None:
        out = orbit_empty(B, N, C, h, w, dt, x.device, channels_last, reuse=True)
    return _orbit_views(xs, mats, exact, (h, w), padding, interpolation, out)


def _sample_per_sample(
    x: torch.Tensor, index: torch.Tensor, mats: torch.Tensor, exact: bool, padding: str, interpolation: str
) -> torch.Tensor:
    """``x`` (B, C, H, W) resampled by matrix ``index[b]`` of ``mats`` (N, 2, 3), same size (differentiable)."""
    B, C, H, W = x.shape
    plan = _view_plan(mats, exact, (H, W), (H, W), padding, interpolation, x.dtype)
    flat = x.reshape(B, C, H * W)
    if all(plan.gathered):
        return _apply_taps(flat, [(i[index], wt[index], ok[index]) for i, wt, ok in plan.taps], True).reshape(x.shape)

    def resampled(xs, idx):
        if plan.taps4 is not None:  # float64
            return _tap_views(xs, plan, idx).reshape(xs.shape)
        return torch.ops.aten.grid_sampler_2d(xs, plan.grids[idx], 0, plan.padding, False)

    if not any(plan.gathered):
        return resampled(x, index)
    # a group with exact and resampled elements (e.g. C8): split the batch by the kind of its element
    kind = plan.gathered_mask[index]
    ex, ne = kind.nonzero().flatten(), (~kind).nonzero().flatten()
    out = x.new_zeros(x.shape)
    out = out.index_copy(0, ne, resampled(x[ne], index[ne]))
    taps = [(i[index[ex]], wt[index[ex]], ok[index[ex]]) for i, wt, ok in plan.taps]
    return out.index_copy(0, ex, _apply_taps(flat[ex], taps, True).reshape(-1, C, H, W))


def _sample_per_sample_adjoint(
    g: torch.Tensor, index: torch.Tensor, mats: torch.Tensor, exact: bool, padding: str, interpolation: str
) -> torch.Tensor:
    """Adjoint of :func:`_sample_per_sample`, written out with aten ops (no autograd: it also runs
    inside registered ops' backward): ``grid_sampler_2d_backward`` for resampled samples, a
    scatter-add of the one-tap gathers for the others; deterministic on CPU."""
    B, C, H, W = g.shape
    plan = _view_plan(mats, exact, (H, W), (H, W), padding, interpolation, g.dtype)

    def scatter(gs, idx):
        idx, wt, ok = (t[idx] for t in plan.taps[0])
        P = idx.shape[-1]
        vals = torch.where(
            ok[:, None, :], gs.reshape(gs.shape[0], C, P), torch.zeros((), dtype=gs.dtype, device=gs.device)
        )
        return torch.zeros_like(vals).scatter_add_(2, idx[:, None, :].expand(-1, C, P), vals).reshape(gs.shape)

    def resampled(gs, idx):
        if plan.taps4 is not None:  # float64: the adjoint of the four taps
            u, v = sample_coords(mats[idx], H, W)
            return _scatter_taps(gs.reshape(-1, C, H * W), u, v, H, W, padding, interpolation, False).reshape(gs.shape)
        src = torch.zeros((), dtype=gs.dtype, device=gs.device).expand(gs.shape)
        return torch.ops.aten.grid_sampler_2d_backward(gs, src, plan.grids[idx], 0, plan.padding, False, [True, False])[
            0
        ]

    if all(plan.gathered):
        return scatter(g, index)
    if not any(plan.gathered):
        return resampled(g, index)
    kind = plan.gathered_mask[index]
    ex, ne = kind.nonzero().flatten(), (~kind).nonzero().flatten()
    out = torch.zeros_like(g).index_copy(0, ne, resampled(g[ne], index[ne]))
    return out.index_copy(0, ex, scatter(g[ex], index[ex]))


def permute_channels_ref(y: torch.Tensor, index: torch.Tensor, chan_perm: torch.Tensor) -> torch.Tensor:
    """Channels grouped (K, N'): output channel ``k·N' + h`` is input channel ``k·N' + chan_perm[index[b], h]``."""
    B, C, H, W = y.shape
    n = chan_perm.shape[1]
    perm = chan_perm[index]  # (B, N')
    yk = y.reshape(B, C // n, n, H, W)
    return torch.gather(yk, 2, perm[:, None, :, None, None].expand(B, C // n, n, H, W)).reshape(B, C, H, W)


def transform_values_ref(
    x: torch.Tensor,
    index: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    padding: str = "zeros",
    interpolation: str = "bilinear",
    chan_perm=None,
) -> torch.Tensor:
    """``T_{index[b]} x[b]`` (after the channel permutation ``chan_perm`` by the chosen element when given): the
    CPU forward of the op, values only (:func:`canon.oracle.transform` defines them)."""
    if chan_perm is not None:
        x = permute_channels_ref(x, index, chan_perm)
    return _sample_per_sample(x.to(acc_dtype(x.dtype)), index, mats, exact, padding, interpolation).to(x.dtype)


def select_ref(
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel_noise: torch.Tensor | None = None,
    tau: float = 1.0,
    eps: float = 1e-8,
) -> Selection:
    """Scores, β-softmax, argmax (ties to lowest index) and (straight-through) one-hot."""
    cdt = acc_dtype(vectors.dtype)
    v = vectors.to(cdt)
    r = reference.to(cdt)
    s = _scores(v, r, score, eps)
    logits = beta * s
    if gumbel_noise is not None:
        logits = (logits + gumbel_noise.to(cdt)) / tau
    p = torch.softmax(logits, dim=-1)
    index = torch.argmax(logits.detach(), dim=-1)
    hard = F.one_hot(index, s.shape[-1]).to(cdt)
    onehot = hard + (p - p.detach()) if straight_through else hard
    return Selection(s, p, index, onehot)


def contrastive_loss_ref(vectors: torch.Tensor, kind: str = "normalized", eps: float = 1e-8) -> torch.Tensor:
    """Orbit orthogonality loss of ``vectors`` (B, N, D) (docs/spec.md §4)."""
    v = vectors.to(acc_dtype(vectors.dtype))
    B, N, _ = v.shape
    if kind == "raw":
        gram = v @ v.transpose(1, 2)
        gram = gram * (1 - torch.eye(N, dtype=v.dtype, device=v.device))
        return gram.abs().mean()
    if N < 2:
        return v.sum() * 0
    vn = v / v.norm(dim=-1, keepdim=True).clamp_min(eps)
    gram = (vn @ vn.transpose(1, 2)).abs()
    off = gram.sum(dim=(1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(-1)
    return (off / (N * (N - 1))).mean()


def prior_loss_ref(scores: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Cross-entropy of ``beta · scores`` (B, N) against element indices ``target`` (B,)."""
    return F.cross_entropy(beta * scores.to(acc_dtype(scores.dtype)), target)


# ----------------------------------------------------------------------------- explicit adjoints
# The backward halves of the registered ops in canon.ops on the reference path. Resampling
# adjoints scatter the taps of :func:`_taps` with ``index_put_(accumulate=True)``, which
# is deterministic on CPU and, under ``torch.use_deterministic_algorithms(True)``, on CUDA.


def _scatter_taps(
    g: torch.Tensor, u: torch.Tensor, v: torch.Tensor, H: int, W: int, padding: str, interpolation: str, exact: bool
) -> torch.Tensor:
    """Adjoint of :func:`_gather_taps`: ``g`` (B, C, P) → (B, C, H·W); coordinates (P,) or (B, P)."""
    B, C, P = g.shape
    acc = g.new_zeros(B * H * W, C)
    gt = g.permute(0, 2, 1)  # (B, P, C)
    base = (torch.arange(B, device=g.device) * (H * W))[:, None]
    for idx, wt, ok in _taps(u, v, H, W, padding, interpolation, exact):
        idx, wt, ok = idx.expand(B, P), wt.expand(B, P), ok.expand(B, P)
        val = gt if (exact or interpolation == "nearest") else gt * wt[..., None].to(g.dtype)
        val = torch.where(ok[..., None], val, torch.zeros((), dtype=g.dtype, device=g.device))
        acc.index_put_(((idx + base).reshape(-1),), val.reshape(-1, C), accumulate=True)
    return acc.reshape(B, H * W, C).permute(0, 2, 1).reshape(B, C, H, W).contiguous()


def orbit_backward_ref(
    grad: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    in_hw: tuple[int, int],
    padding: str = "zeros",
    interpolation: str = "bilinear",
    x_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gradient w.r.t. ``x`` (B, C, H, W) of :func:`orbit_ref`, given ``grad`` (B, N, C, h, w)."""
    B, N, C, h, w = grad.shape
    H, W = in_hw
    cdt = acc_dtype(grad.dtype)
    g = grad.to(cdt)
    # aten's grid_sampler backward scatters with atomics on CUDA: deterministic mode takes
    # the tap scatter below for every view instead
    fast = grad.device.type == "cpu" or not torch.are_deterministic_algorithms_enabled()
    fast = fast and cdt != torch.float64  # float64: the taps weighed in float32, as defined (see _ViewPlan)
    plan = _view_plan(mats, exact, (H, W), (h, w), padding, interpolation, cdt)
    scattered = [n for n in range(N) if plan.gathered[n] or not fast]
    out = None
    if scattered:
        u, v = sample_coords(mats[scattered], h, w)
        gs = g[:, scattered].permute(0, 2, 1, 3, 4).reshape(B, C, len(scattered) * h * w)
        out = _scatter_taps(
            gs,
            u.reshape(-1),
            v.reshape(-1),
            H,
            W,
            padding,
            interpolation,
            exact or all(plan.exact_rows[n] for n in scattered),
        )
    src = torch.zeros((), dtype=cdt, device=grad.device).expand(B, C, H, W)
    for n in range(N):  # one view at a time: no transposed copy of the whole gradient
        if n not in scattered:
            grid = plan.grids[n : n + 1].expand(B, h, w, 2)
            gx, _ = torch.ops.aten.grid_sampler_2d_backward(g[:, n], src, grid, 0, plan.padding, False, [True, False])
            out = gx if out is None else out + gx
    return out.to(x_dtype or grad.dtype)


def transform_backward_ref(
    grad: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    mats: torch.Tensor,
    exact: bool,
    padding: str = "zeros",
    interpolation: str = "bilinear",
    need_x: bool = True,
    need_weights: bool = True,
    chan_perm: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Backward of the transform (:func:`canon.oracle.transform`): (grad_x (B, C, H, W) or None,
    grad_weights (B, N) or None).

    ``grad_x`` is the adjoint of the chosen transforms (and of the channel permutation);
    ``grad_weights[b, g] = <grad[b], T_g P x[b]>`` (mixture straight-through, docs/spec.md §3.5),
    both in the compute dtype.
    """
    B, C, H, W = x.shape
    cdt = acc_dtype(x.dtype)
    g = grad.to(cdt)
    gx = gw = None
    if need_x:
        if grad.device.type == "cpu" or not torch.are_deterministic_algorithms_enabled():
            gx = _sample_per_sample_adjoint(g, index, mats, exact, padding, interpolation)
        else:  # aten's grid_sampler/gather backward use atomics on CUDA: the sorted tap scatter instead
            u, v = sample_coords(mats[index], H, W)
            gx = _scatter_taps(g.reshape(B, C, H * W), u, v, H, W, padding, interpolation, exact)
        if chan_perm is not None:  # the adjoint of a gather by a permutation is the scatter by it
            n = chan_perm.shape[1]
            perm = chan_perm[index][:, None, :, None, None].expand(B, C // n, n, H, W)
            gx = (
                torch.zeros_like(gx)
                .reshape(B, C // n, n, H, W)
                .scatter_(2, perm, gx.reshape(B, C // n, n, H, W))
                .reshape(B, C, H, W)
            )
    if need_weights:
        xp = permute_channels_ref(x, index, chan_perm) if chan_perm is not None else x
        # the orbit is this call's own: multiplied in place and summed (einsum's batched gemv: 0.6 ms → 0.1 ms
        # for C8 B=64 3×32² on the 2-core machine)
        views = orbit_ref(xp.to(cdt), mats, exact, (H, W), padding, interpolation)
        gw = views.mul_(g[:, None]).sum((2, 3, 4))
    return gx, gw


def select_backward_ref(
    grad_scores: torch.Tensor | None,
    grad_probs: torch.Tensor | None,
    grad_onehot: torch.Tensor | None,
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel_noise: torch.Tensor | None = None,
    tau: float = 1.0,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (vectors, reference) of :func:`select_ref`, written out (it runs inside a
    registered op's backward, where autograd is not available).

    softmax: dlogits = p·(g − Σ p·g) with g = grad_probs + grad_onehot (straight-through);
    dscores = grad_scores + (β / τ if Gumbel else β)·dlogits; cosine: d/dv = r/(|v||r|) −
    cos·v/|v|², d/dr = Σ_n v/(|v||r|) − cos·r/|r|² (norms clamped at ``eps``).
    """
    cdt = acc_dtype(vectors.dtype)
    v, r = vectors.to(cdt), reference.to(cdt)
    B, N, _ = v.shape
    logits = beta * _scores(v, r, score, eps)
    if gumbel_noise is not None:
        logits = (logits + gumbel_noise.to(cdt)) / tau
    p = torch.softmax(logits, dim=-1)
    gl = torch.zeros_like(p)
    if grad_probs is not None:
        gl = gl + grad_probs.to(cdt)
    if grad_onehot is not None and straight_through:
        gl = gl + grad_onehot.to(cdt)
    gs = p * (gl - (p * gl).sum(-1, keepdim=True)) * (beta / tau if gumbel_noise is not None else beta)
    if grad_scores is not None:
        gs = gs + grad_scores.to(cdt)
    if score == "cosine":
        tv, tr = v.norm(dim=-1), r.norm()
        nv, nr = tv.clamp_min(eps), tr.clamp_min(eps)
        cos = (v * r).sum(-1) / (nv * nr)
        a = gs / (nv * nr)
        # a norm clamped at eps divides by eps but keeps its own derivative v/|v| (F.cosine_similarity
        # clamps it in place, out of autograd's sight): cos·v/(eps·|v|), 0 for a zero vector
        zero = torch.zeros((), dtype=cdt, device=v.device)
        cv = torch.where(tv > 0, gs * cos / (nv * torch.where(tv > 0, tv, 1.0)), zero)
        cr = torch.where(tr > 0, (gs * cos).sum() / (nr * torch.where(tr > 0, tr, 1.0)), zero)
        gv = a[..., None] * r - cv[..., None] * v
        gr = (a[..., None] * v).sum((0, 1)) - cr * r
    else:
        gv = gs[..., None] * r
        gr = (gs[..., None] * v).sum((0, 1))
    return gv.to(vectors.dtype), gr.to(reference.dtype)


def contrastive_loss_backward_ref(
    grad: torch.Tensor, vectors: torch.Tensor, kind: str = "normalized", eps: float = 1e-8
) -> torch.Tensor:
    """Gradient w.r.t. ``vectors`` of :func:`contrastive_loss_ref`, written out (no autograd).

    With G the (normalized) Gram matrix, d/dG of the off-diagonal Σ|G| is sign(G), so
    d/dV = 2·S·V with S = sign(G)·offdiag·scale; the normalization adds the projection
    (dVn − vn⟨vn, dVn⟩)/|v|.
    """
    cdt = acc_dtype(vectors.dtype)
    v = vectors.to(cdt)
    B, N, _ = v.shape
    off = 1 - torch.eye(N, dtype=cdt, device=v.device)
    g = grad.to(cdt)
    if kind == "raw":
        S = torch.sign(v @ v.transpose(1, 2)) * off * (g / (B * N * N))
        return (2 * S @ v).to(vectors.dtype)
    if N < 2:
        return torch.zeros_like(vectors)
    t = v.norm(dim=-1, keepdim=True)
    n = t.clamp_min(eps)
    vn = v / n
    G = vn @ vn.transpose(1, 2)
    S = 2 * torch.sign(G) * off * (g / (B * N * (N - 1)))
    dvn = S @ vn
    proj = torch.where(t < eps, 0.0, (S * G).sum(-1, keepdim=True))  # a norm clamped at eps: v/eps, no projection
    return ((dvn - vn * proj) / n).to(vectors.dtype)


def select_losses_backward_ref(
    grad_scores: torch.Tensor | None,
    grad_probs: torch.Tensor | None,
    grad_onehot: torch.Tensor | None,
    grad_losses: torch.Tensor,
    vectors: torch.Tensor,
    reference: torch.Tensor,
    beta: float = 1.0,
    score: str = "cosine",
    straight_through: bool = True,
    gumbel_noise: torch.Tensor | None = None,
    tau: float = 1.0,
    contrastive: str = "normalized",
    prior: str = "identity",
    target: torch.Tensor | None = None,
    prior_beta: float = 1.0,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (vectors, reference) of :func:`canon.oracle.select_losses`; ``grad_losses`` (2,) holds the
    gradients of the contrastive and the prior loss (``contrastive`` / ``prior`` ``"none"``: that
    loss was not computed). The prior's gradient to the scores,
    ``g·β_p·(softmax(β_p·s) − onehot(target)) / B``, joins ``grad_scores``."""
    cdt = acc_dtype(vectors.dtype)
    v, r = vectors.to(cdt), reference.to(cdt)
    B, N, _ = v.shape
    gs = None if grad_scores is None else grad_scores.to(cdt)
    if prior != "none":
        s = _scores(v, r, score, eps)
        if target is None:
            target = torch.zeros(B, dtype=torch.int64, device=v.device)
        g_prior = (
            grad_losses[1].to(cdt) / B * prior_beta * (torch.softmax(prior_beta * s, -1) - F.one_hot(target, N).to(cdt))
        )
        gs = g_prior if gs is None else gs + g_prior
    gv, gr = select_backward_ref(
        gs, grad_probs, grad_onehot, vectors, reference, beta, score, straight_through, gumbel_noise, tau, eps
    )
    if contrastive != "none":
        gv = gv + contrastive_loss_backward_ref(grad_losses[0], vectors, contrastive, eps).to(gv.dtype)
    return gv, gr


# ============================================================================= antialiased views
# A view that shrinks the input (more than one input pixel per output pixel along an axis) samples
# each output pixel with the triangle filter of torchvision's/PIL's antialiased bilinear resize, in
# the view's own frame: input pixel q weighs tri(a·ka)·tri(b·kb), where (a, b) = P(q) − (j, i) is q's
# offset from output pixel (j, i) in output pixels (P: the view's inverse map, the pull table's first
# six slots), and ka = min(1, sx), kb = min(1, sy) with sx, sy the input pixels per output pixel along
# the view's axes (so a shrinking axis has a filter one output pixel wide, a growing one stays
# bilinear). Weights are normalised by their sum over the whole pixel lattice (``norm``, a per-plan
# table: canon.geometry.antialias_tables); pixels outside the input take the padding's value (zeros:
# 0, border: the edge, reflection: the mirror). For a view without rotation this is torchvision's
# antialiased resize away from the image border; rotated views use the rotated filter.
def _antialias_index(qu: torch.Tensor, qv: torch.Tensor, H: int, W: int, padding: str):
    """Flat input index of integer coordinates after padding, and where they read anything (zeros)."""
    if padding == "border":
        qu, qv = qu.clamp(0, W - 1), qv.clamp(0, H - 1)
    elif padding == "reflection":
        qu, qv = _reflect(qu, W), _reflect(qv, H)
    ok = (qu >= 0) & (qu <= W - 1) & (qv >= 0) & (qv <= H - 1)
    return (qv.clamp(0, H - 1) * W + qu.clamp(0, W - 1)).long(), ok


def orbit_antialias_backward_ref(
    grad: torch.Tensor,
    mats: torch.Tensor,
    pull: torch.Tensor,
    norm: torch.Tensor,
    taps: int,
    in_hw: tuple[int, int],
    padding: str = "zeros",
    x_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gradient w.r.t. ``x`` (B, C, H, W) of :func:`canon.oracle.orbit_antialias`, given ``grad`` (B, N, C, h, w):
    every output pixel's gradient, divided by its norm, scattered back with the forward's weights
    (padding folds onto the pixels it read)."""
    B, N, C, h, w = grad.shape
    H, W = in_hw
    cdt = acc_dtype(grad.dtype)
    g = (grad.to(cdt) / norm.to(cdt)[None, :, None]).permute(0, 2, 1, 3, 4).reshape(B, C, N * h * w)
    acc = g.new_zeros(B * H * W, C)
    gt = g.permute(0, 2, 1)  # (B, N·h·w, C)
    base = (torch.arange(B, device=grad.device) * (H * W))[:, None]
    zero = torch.zeros((), dtype=cdt, device=grad.device)
    for qu, qv, wt in antialias_window(mats.to(torch.float32), pull.to(torch.float32), h, w, taps):
        idx, ok = _antialias_index(qu, qv, H, W, padding)
        val = torch.where(ok.reshape(-1, 1), gt * wt.reshape(-1, 1).to(cdt), zero)
        acc.index_put_(((idx.reshape(1, -1) + base).reshape(-1),), val.reshape(-1, C), accumulate=True)
    return acc.reshape(B, H * W, C).permute(0, 2, 1).reshape(B, C, H, W).to(x_dtype or grad.dtype)


# The CPU path of antialiased views (the gather formulation above is their definition, and what exported
# graphs record): every view pixel's filter weights, divided by their sum, as one sparse (N·h·w, H·W)
# matrix A built once per view set and padding (pixels outside the input fold onto the ones the padding
# reads), so that the views are A·x and the adjoint Aᵀ·g, two sparse-dense products: 224 → 96 C8 views of
# 16 images take 33 ms forward and 11 ms backward on 2 CPU threads, where the gathers took 882 ms.
_AA_PLANS = PerTensorCache()


def _antialias_operator(mats, pull, norm, taps: int, in_hw, out_hw, padding: str, dtype: torch.dtype):
    """(A, Aᵀ) as CSR matrices of ``dtype`` on ``norm``'s device, cached with ``norm`` (one per view set)."""

    def build():
        H, W = in_hw
        h, w = out_hw
        N = mats.shape[0]
        rows, cols, vals = [], [], []
        out_index = torch.arange(N * h * w, device=norm.device).reshape(N, h * w)
        inv_norm = 1.0 / norm.reshape(N, h * w).to(torch.float64)
        for qu, qv, wt in antialias_window(mats.to(torch.float32), pull.to(torch.float32), h, w, taps):
            idx, ok = _antialias_index(qu, qv, H, W, padding)
            keep = ok & (wt != 0)
            rows.append(out_index[keep])
            cols.append(idx[keep])
            vals.append((wt.to(torch.float64) * inv_norm)[keep])
        coo = torch.sparse_coo_tensor(
            torch.stack([torch.cat(rows), torch.cat(cols)]),
            torch.cat(vals).to(dtype),
            (N * h * w, H * W),
            check_invariants=False,  # built valid here (and the check would cost a pass)
        ).coalesce()  # duplicates (padding folding several taps onto one pixel) are summed
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()

    return _AA_PLANS.get(norm, (tuple(in_hw), tuple(out_hw), padding, dtype, int(taps)), build)


def orbit_antialias_fast(
    x, mats, pull, norm, taps: int, size, padding: str = "zeros", out_dtype=None, channels_last: bool = False, out=None
) -> torch.Tensor:
    """:func:`canon.oracle.orbit_antialias`'s values as one sparse-dense product (no autograd: the op's backward is
    :func:`orbit_antialias_backward_fast`)."""
    B, C, H, W = x.shape
    h, w = size
    N = mats.shape[0]
    cdt = acc_dtype(x.dtype)
    A, _ = _antialias_operator(mats, pull, norm, taps, (H, W), (h, w), padding, cdt)
    flat = x.to(cdt).reshape(B * C, H * W).t()
    views = (A @ flat).reshape(N, h, w, B, C).permute(3, 0, 4, 1, 2)  # (B, N, C, h, w)
    if out is None:
        out = orbit_empty(B, N, C, h, w, out_dtype or x.dtype, x.device, channels_last)
    return out.copy_(views)


def orbit_antialias_backward_fast(grad, mats, pull, norm, taps: int, in_hw, padding: str = "zeros", x_dtype=None):
    """Gradient w.r.t. ``x`` of :func:`orbit_antialias_fast`: ``Aᵀ·grad``."""
    B, N, C, h, w = grad.shape
    H, W = in_hw
    cdt = acc_dtype(grad.dtype)
    _, At = _antialias_operator(mats, pull, norm, taps, (H, W), (h, w), padding, cdt)
    g = grad.to(cdt).permute(1, 3, 4, 0, 2).reshape(N * h * w, B * C)
    return (At @ g).reshape(H, W, B, C).permute(2, 3, 0, 1).contiguous().to(x_dtype or grad.dtype)
