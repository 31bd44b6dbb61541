"""Tensor-level ops with backend dispatch: the seam between ``canon`` and ``canon.kernels``.

Every op has one forward and one backward implementation, each choosing the Triton kernels
(:mod:`canon.triton_ops`) or the plain-PyTorch reference (:mod:`canon.reference`) in one
place, :func:`_triton_for`. Three entry paths:

* **eager** (the common case): a ``torch.autograd.Function`` per op calls the
  implementations directly, a few microseconds of Python per call;
* **torch.compile**: the registered ``torch.library.custom_op`` (namespace ``canon``) with a
  fake implementation and an autograd formula whose backward is itself a registered op, so
  the compiler sees each op as one opaque node, forward and backward (and runs the Triton
  kernels inside compiled graphs). The custom-op dispatcher costs ~60–100 µs per call in
  eager mode, which is why eager calls do not go through it;
* **torch.export and torch.jit.trace** (and what is built on them: ``torch.onnx.export``,
  Lightning's ``to_onnx``, AOTInductor): each op's aten decomposition
  (:mod:`canon.decompositions`), so the graph holds only ops other runtimes read.

A backward runs the backend its forward ran under: the eager Functions record it at forward,
the registered ops pass it to their ``*_backward`` op as an argument (under ``torch.compile`` that
is the backend in force when the graph was traced). A forward that non-reentrant
``torch.utils.checkpoint`` recomputes during the backward runs the backend in force there.

The ops take tensors, device tables (:class:`canon.geometry.ViewTables`) and plain settings,
no groups; inputs are validated one layer up, in :mod:`canon.functional`. Backward
formulas: orbit and transform adjoints; the mixture straight-through gradient of the
transform to its weights (docs/spec.md §3.5); the select/loss gradients of docs/spec.md §4.
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from canon import decompositions as decomp
from canon import reference as ref
from canon.backend import backend_as, get_backend, resolve_backend
from canon.reference import acc_dtype
from canon.types import Selection

__all__ = [
    "orbit",
    "transform",
    "select",
    "contrastive_loss",
    "select_transform",
    "acc_dtype",
    "registered_ops",
    "tracing",
]

_EMPTY_GRADS = (None,) * 16


def _triton():
    from canon import triton_ops  # imported lazily: triton is optional on the CPU path

    return triton_ops


def _triton_for(t: Tensor) -> bool:
    """The one backend decision: run the Triton kernels for an op whose main input is ``t``."""
    return resolve_backend(t) == "triton"


_route = threading.local()


def _backward_runs_the_forward_backend(cls):
    """Class decorator for the ops' ``autograd.Function``: the backward runs the backend that was in
    force when the forward ran. ``use_backend`` is per thread and a backward runs later, often
    outside the block, and on CUDA on autograd's own device thread (where the block never applies)."""
    forward, backward = cls.forward, cls.backward

    def forward_noting_the_backend(ctx, *args):
        ctx.backend = get_backend()
        return forward(ctx, *args)

    def backward_in_that_backend(ctx, *grads):
        with backend_as(ctx.backend):
            return backward(ctx, *grads)

    cls.forward, cls.backward = staticmethod(forward_noting_the_backend), staticmethod(backward_in_that_backend)
    return cls


def tracing() -> bool:
    """torch.compile, torch.export or torch.jit is tracing this call."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def _aten_only() -> bool:
    """torch.export (so also torch.onnx.export, Lightning's to_onnx, AOTInductor) or torch.jit.trace is
    tracing: the graph gets the aten decomposition of each op (:mod:`canon.decompositions`), which other
    runtimes read, instead of the registered custom op they cannot. torch.compile keeps the ops."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def _pin_traced_size(x: Tensor) -> Tensor:
    """Under torch.jit.trace: ``x`` through an ``expand`` to its own (H, W) as constants. The trace holds
    the view matrices of this size as constants; fed another size, the traced graph fails at this
    ``expand`` instead of computing wrong views with them."""
    if not torch.jit.is_tracing():
        return x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # made constants on purpose
        H, W = int(x.shape[-2]), int(x.shape[-1])
    return x.expand(-1, -1, H, W)


def _compiling() -> bool:
    """Take the registered custom ops: while tracing (:func:`tracing`), or when asked (:func:`registered_ops`)."""
    return tracing() or getattr(_route, "registered", False)


_functorch_level = torch._C._functorch.maybe_current_level  # None outside torch.func transforms


def _autograd(op: str, *tensors) -> bool:
    """Whether a call needs ``autograd.Function.apply``: it records a graph. Eager calls that do not
    run the forward alone (apply costs 4–10 µs per call on the CPU, even under ``no_grad``).

    Forward-mode AD and ``torch.func`` transforms are refused here, with what works instead: dual and
    functorch-wrapped tensors do not require grad, so without this check they would get the forward
    alone (a silent zero tangent), and through ``apply`` torch's generic message about ``setup_context``.
    """
    if _forward_ad._current_level >= 0 or _functorch_level() is not None:
        raise RuntimeError(
            f"canon.{op}: forward-mode AD and torch.func transforms (vmap, grad, jacrev, jacfwd, jvp) are not "
            "supported by canon's ops. They are batched already (pass the whole batch instead of vmap), and "
            "reverse-mode gradients work through torch.autograd: loss.backward(), torch.autograd.grad, "
            "torch.autograd.functional.jacobian"
        )
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


@contextlib.contextmanager
def registered_ops():
    """Route eager calls through the registered ``torch.ops.canon.*`` ops (as compiled code runs
    them) instead of the direct autograd path: for tests and dispatch-level tools
    (``TorchDispatchMode``), which see only registered ops."""
    prev = getattr(_route, "registered", False)
    _route.registered = True
    try:
        yield
    finally:
        _route.registered = prev


# ============================================================================= orbit
# Antialiased views (canon.geometry.antialias_tables) add three arguments: the per-pixel filter sums
# ``aa_norm`` (None: plain views), the forward's window side ``aa_taps`` and the adjoint's ``aa_back_taps``.
def _orbit_fwd(
    x, mats, pull, exact, aligned, h, w, padding, interpolation, out_dtype, channels_last,
    aa_norm=None, aa_taps=0, aa_back_taps=0, out=None,
):  # fmt: skip
    if _triton_for(x):
        return _triton().orbit(
            x, mats, pull, exact, aligned, (h, w), padding, interpolation, out_dtype, channels_last, out=out,
            aa_norm=aa_norm, aa_taps=aa_taps,
        )  # fmt: skip
    if aa_norm is not None:
        return ref.orbit_antialias_fast(x, mats, pull, aa_norm, aa_taps, (h, w), padding, out_dtype, channels_last, out)
    return ref.orbit_ref(x, mats, exact, (h, w), padding, interpolation, out_dtype, channels_last, out=out)


def _scatter_adjoint_in_deterministic_mode(padding: str) -> bool:
    # The kernels' adjoint of border/reflection padding scatters with atomics (zero padding
    # is a deterministic gather): deterministic mode takes the reference's sorted scatter.
    return padding != "zeros" and torch.are_deterministic_algorithms_enabled()


def _orbit_bwd(
    grad, mats, pull, exact, aligned, H, W, padding, interpolation, x_dtype, aa_norm=None, aa_taps=0, aa_back_taps=0
):
    if aa_norm is not None:
        # the kernels gather the zero-padded adjoint; border/reflection fold onto edge pixels: the reference's scatter
        if _triton_for(grad) and padding == "zeros":
            return _triton().orbit_backward(
                grad, mats, pull, exact, aligned, (H, W), padding, interpolation, x_dtype, aa_norm=aa_norm,
                aa_back_taps=aa_back_taps,
            )  # fmt: skip
        return ref.orbit_antialias_backward_fast(grad, mats, pull, aa_norm, aa_taps, (H, W), padding, x_dtype)
    if _triton_for(grad) and not _scatter_adjoint_in_deterministic_mode(padding):
        return _triton().orbit_backward(grad, mats, pull, exact, aligned, (H, W), padding, interpolation, x_dtype)
    return ref.orbit_backward_ref(grad, mats, exact, (H, W), padding, interpolation, x_dtype)


@_backward_runs_the_forward_backend
class _Orbit(torch.autograd.Function):
    # Settings and the (cached, constant) tables travel as one tuple: Function.apply's per-argument
    # bookkeeping then sees two arguments instead of fourteen.
    @staticmethod
    def forward(ctx, x, cfg, out):
        mats, pull, exact, aligned, h, w, padding, interpolation, out_dtype, channels_last, *aa = cfg
        ctx.cfg = (mats, pull, exact, aligned, x.shape[-2], x.shape[-1], padding, interpolation, x.dtype, *aa)
        return _orbit_fwd(x, *cfg, out=out)

    @staticmethod
    def backward(ctx, grad):
        return (_orbit_bwd(grad, *ctx.cfg) if ctx.needs_input_grad[0] else None), None, None


@torch.library.custom_op("canon::orbit", mutates_args=())
def _orbit_op(
    x: Tensor,
    mats: Tensor,
    pull: Tensor,
    exact: bool,
    aligned: bool,
    h: int,
    w: int,
    padding: str,
    interpolation: str,
    out_dtype: torch.dtype | None,
    channels_last: bool,
    aa_norm: Tensor | None = None,
    aa_taps: int = 0,
    aa_back_taps: int = 0,
) -> Tensor:
    return _orbit_fwd(
        x, mats, pull, exact, aligned, h, w, padding, interpolation, out_dtype, channels_last, aa_norm, aa_taps,
        aa_back_taps,
    )  # fmt: skip


@_orbit_op.register_fake
def _(x, mats, pull, exact, aligned, h, w, padding, interpolation, out_dtype, channels_last, *aa):
    return ref.orbit_empty(x.shape[0], mats.shape[0], x.shape[1], h, w, out_dtype or x.dtype, x.device, channels_last)


@torch.library.custom_op("canon::orbit_backward", mutates_args=())
def _orbit_backward_op(
    grad: Tensor,
    mats: Tensor,
    pull: Tensor,
    exact: bool,
    aligned: bool,
    H: int,
    W: int,
    padding: str,
    interpolation: str,
    x_dtype: torch.dtype,
    aa_norm: Tensor | None = None,
    aa_taps: int = 0,
    aa_back_taps: int = 0,
    backend: str | None = None,
) -> Tensor:
    with backend_as(backend):
        return _orbit_bwd(
            grad, mats, pull, exact, aligned, H, W, padding, interpolation, x_dtype, aa_norm, aa_taps, aa_back_taps
        )


@_orbit_backward_op.register_fake
def _(grad, mats, pull, exact, aligned, H, W, padding, interpolation, x_dtype, *rest):
    return grad.new_empty((grad.shape[0], grad.shape[2], H, W), dtype=x_dtype)


def _orbit_setup(ctx, inputs, output):
    x, mats, pull, exact, aligned, h, w, padding, interpolation, out_dtype, channels_last, aa_norm, *taps = inputs
    ctx.save_for_backward(mats, pull, aa_norm)
    # the backend in force now (at tracing, for compiled code) runs the backward too (backend_as)
    ctx.cfg = (exact, aligned, x.shape[-2], x.shape[-1], padding, interpolation, x.dtype)
    ctx.taps = (*taps, get_backend())


def _orbit_grad(ctx, grad):
    mats, pull, aa_norm = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return _EMPTY_GRADS[:14]
    gx = torch.ops.canon.orbit_backward(grad, mats, pull, *ctx.cfg, aa_norm, *ctx.taps)
    return (gx,) + _EMPTY_GRADS[:13]


_orbit_op.register_autograd(_orbit_grad, setup_context=_orbit_setup)


def orbit(
    x: Tensor,
    tables,
    size: tuple[int, int],
    padding: str,
    interpolation: str,
    out_dtype=None,
    channels_last: bool = False,
    out=None,
    antialias=None,
) -> Tensor:
    """All views (B, N, C, h, w) of ``x`` (B, C, H, W) through ``tables``; see :func:`canon.orbit`.

    ``out``: a buffer of the views' shape, dtype and layout to write into (eager only; the
    caller guarantees nothing else uses it), e.g. the last call's views once they are dead.
    ``antialias``: the views' :class:`canon.geometry.AntialiasTables`, or None (plain views).
    """
    h, w = size
    aa = (antialias.norm, antialias.taps, antialias.back_taps) if antialias is not None else (None, 0, 0)
    cfg = (
        tables.mats,
        tables.pull,
        tables.exact,
        tables.aligned,
        h,
        w,
        padding,
        interpolation,
        out_dtype,
        channels_last,
        *aa,
    )
    if _compiling():  # (one check on the eager path; which tracer, only when one traces)
        if _aten_only():
            return decomp.orbit(_pin_traced_size(x), *cfg)
        return torch.ops.canon.orbit(x, *cfg)
    return _Orbit.apply(x, cfg, out) if _autograd("orbit", x) else _orbit_fwd(x, *cfg, out=out)


# ============================================================================= transform
def _transform_fwd(x, index, mats, exact, aligned, padding, interpolation, chan_perm):
    if _triton_for(x):
        return _triton().transform(x, index, mats, exact, aligned, padding, interpolation, chan_perm)
    return ref.transform_values_ref(x, index, mats, exact, padding, interpolation, chan_perm)


def _transform_bwd(
    grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_w, chan_perm, chan_inv
):
    if _triton_for(grad) and not (need_x and _scatter_adjoint_in_deterministic_mode(padding)):
        gx, gw = _triton().transform_backward(
            grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_w, chan_perm, chan_inv
        )
    else:
        gx, gw = ref.transform_backward_ref(
            grad, x, index, mats, exact, padding, interpolation, need_x, need_w, chan_perm
        )
    return (gx.to(x.dtype) if gx is not None else None), gw


@_backward_runs_the_forward_backend
class _Transform(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weights, index, cfg):
        mats, pull, exact, aligned, padding, interpolation, chan_perm, chan_inv = cfg
        ctx.save_for_backward(x, index)
        ctx.cfg = (cfg, None if weights is None else weights.dtype)
        return _transform_fwd(x, index, mats, exact, aligned, padding, interpolation, chan_perm)

    @staticmethod
    def backward(ctx, grad):
        x, index = ctx.saved_tensors
        (mats, pull, exact, aligned, padding, interpolation, chan_perm, chan_inv), w_dtype = ctx.cfg
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_w):
            return None, None, None, None
        gx, gw = _transform_bwd(
            grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_w, chan_perm, chan_inv
        )
        return gx, (gw.to(w_dtype) if need_w else None), None, None


@torch.library.custom_op("canon::transform", mutates_args=())
def _transform_op(
    x: Tensor,
    weights: Tensor | None,
    index: Tensor,
    mats: Tensor,
    pull: Tensor,
    exact: bool,
    aligned: bool,
    padding: str,
    interpolation: str,
    chan_perm: Tensor | None,
    chan_inv: Tensor | None,
) -> Tensor:
    return _transform_fwd(x, index, mats, exact, aligned, padding, interpolation, chan_perm)


@_transform_op.register_fake
def _(x, weights, index, mats, pull, exact, aligned, padding, interpolation, chan_perm, chan_inv):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@torch.library.custom_op("canon::transform_backward", mutates_args=())
def _transform_backward_op(
    grad: Tensor,
    x: Tensor,
    index: Tensor,
    mats: Tensor,
    pull: Tensor,
    exact: bool,
    aligned: bool,
    padding: str,
    interpolation: str,
    need_x: bool,
    need_weights: bool,
    chan_perm: Tensor | None,
    chan_inv: Tensor | None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    with backend_as(backend):
        gx, gw = _transform_bwd(
            grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_weights, chan_perm,
            chan_inv,
        )  # fmt: skip
    # Outputs that were not asked for are empty (a custom op returns tensors, never None).
    return (gx if gx is not None else x.new_empty((0,))), (
        gw if gw is not None else x.new_empty((0,), dtype=acc_dtype(x.dtype))
    )


@_transform_backward_op.register_fake
def _(
    grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_weights, chan_perm, chan_inv,
    backend=None,
):  # fmt: skip
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else x.new_empty((0,))
    acc = acc_dtype(x.dtype)
    gw = x.new_empty((x.shape[0], mats.shape[0]), dtype=acc) if need_weights else x.new_empty((0,), dtype=acc)
    return gx, gw


def _transform_setup(ctx, inputs, output):
    x, weights, index, mats, pull, exact, aligned, padding, interpolation, chan_perm, chan_inv = inputs
    ctx.save_for_backward(x, index, mats, pull, chan_perm, chan_inv)
    ctx.cfg = (exact, aligned, padding, interpolation, None if weights is None else weights.dtype, get_backend())


def _transform_grad(ctx, grad):
    x, index, mats, pull, chan_perm, chan_inv = ctx.saved_tensors
    exact, aligned, padding, interpolation, w_dtype, backend = ctx.cfg
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_x or need_w):
        return _EMPTY_GRADS[:11]
    gx, gw = torch.ops.canon.transform_backward(
        grad, x, index, mats, pull, exact, aligned, padding, interpolation, need_x, need_w, chan_perm, chan_inv, backend
    )
    return ((gx if need_x else None), (gw.to(w_dtype) if need_w else None)) + _EMPTY_GRADS[:9]


_transform_op.register_autograd(_transform_grad, setup_context=_transform_setup)


def transform(
    x: Tensor, weights: Tensor | None, index: Tensor, tables, padding: str, interpolation: str, chan_tables=None
) -> Tensor:
    """``T_{index[b]} x[b]`` with the mixture straight-through gradient to ``weights`` (docs/spec.md §3.5).

    ``chan_tables`` = (perm, inverse perm) (N, N') int64: the regular representation's
    channel permutation by the chosen element, applied before the resampling.
    """
    chan_perm, chan_inv = chan_tables if chan_tables is not None else (None, None)
    cfg = (tables.mats, tables.pull, tables.exact, tables.aligned, padding, interpolation, chan_perm, chan_inv)
    if _compiling():
        if _aten_only():
            return decomp.transform(_pin_traced_size(x), weights, index, *cfg)
        return torch.ops.canon.transform(x, weights, index, *cfg)
    if _autograd("transform", x, weights):
        return _Transform.apply(x, weights, index, cfg)
    return _transform_fwd(x, index, tables.mats, tables.exact, tables.aligned, padding, interpolation, chan_perm)


# ============================================================================= select (+ losses)
def _select_fwd(vectors, reference, beta, score, straight_through, noise, tau, contrastive, prior, target, prior_beta):
    """(scores, probs, index, onehot, loss means (2,) or an empty tensor)."""
    with_losses = contrastive != "none" or prior != "none"
    if _triton_for(vectors):
        sel, losses = _triton().select(
            vectors, reference, beta, score, noise, tau, contrastive, prior, target, prior_beta
        )
        means = losses.mean(-1) if with_losses else vectors.new_empty((0,), dtype=acc_dtype(vectors.dtype))
        return (*sel, means)
    # forward values only: the straight-through one-hot's value is the hard one-hot
    sel = ref.select_ref(vectors, reference, beta, score, False, noise, tau)
    if not with_losses:
        return (*sel, vectors.new_empty((0,), dtype=acc_dtype(vectors.dtype)))
    cl = ref.contrastive_loss_ref(vectors, contrastive) if contrastive != "none" else sel.scores.new_zeros(())
    pl = (
        ref.prior_loss_ref(sel.scores, target if target is not None else torch.zeros_like(sel.index), prior_beta)
        if prior != "none"
        else cl.new_zeros(())
    )
    return (*sel, torch.stack([cl.to(sel.scores.dtype), pl.to(sel.scores.dtype)]))


def _select_bwd(
    g_scores,
    g_probs,
    g_onehot,
    g_losses,
    vectors,
    reference,
    probs,
    beta,
    score,
    straight_through,
    noise,
    tau,
    contrastive,
    prior,
    target,
    prior_beta,
):
    with_losses = contrastive != "none" or prior != "none"
    if g_losses is not None and with_losses:
        g_losses = g_losses.contiguous()
    else:
        g_losses = None
    if _triton_for(vectors):
        return _triton().select_backward(
            g_scores, g_probs, g_onehot, g_losses, vectors, reference, probs, beta, score, straight_through, noise, tau,
            contrastive if g_losses is not None else "none", prior if g_losses is not None else "none", target,
            prior_beta,
        )  # fmt: skip
    g_onehot = g_onehot if straight_through else None
    if g_losses is None:
        return ref.select_backward_ref(
            g_scores, g_probs, g_onehot, vectors, reference, beta, score, straight_through, noise, tau
        )
    return ref.select_losses_backward_ref(
        g_scores, g_probs, g_onehot, g_losses, vectors, reference, beta, score, straight_through, noise, tau,
        None if contrastive == "none" else contrastive, prior != "none", target, prior_beta,
    )  # fmt: skip


@_backward_runs_the_forward_backend
class _Select(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, reference, cfg):
        beta, score, straight_through, noise, tau, contrastive, prior, target, prior_beta = cfg
        ctx.set_materialize_grads(False)  # outputs without a gradient arrive as None: the kernel skips them
        out = _select_fwd(vectors, reference, *cfg)
        ctx.save_for_backward(vectors, reference, out[1])
        ctx.cfg = cfg
        ctx.mark_non_differentiable(out[2])
        if not straight_through:  # eval: the one-hot is a constant
            ctx.mark_non_differentiable(out[3])
        return out

    @staticmethod
    def backward(ctx, g_scores, g_probs, g_index, g_onehot, g_losses):
        vectors, reference, probs = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None
        gv, gr = _select_bwd(g_scores, g_probs, g_onehot, g_losses, vectors, reference, probs, *ctx.cfg)
        return (gv if ctx.needs_input_grad[0] else None), (gr if ctx.needs_input_grad[1] else None), None


@torch.library.custom_op("canon::select", mutates_args=())
def _select_op(
    vectors: Tensor,
    reference: Tensor,
    beta: float,
    score: str,
    straight_through: bool,
    gumbel_noise: Tensor | None,
    tau: float,
    contrastive: str,
    prior: str,
    target: Tensor | None,
    prior_beta: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(
        _select_fwd(
            vectors, reference, beta, score, straight_through, gumbel_noise, tau, contrastive, prior, target, prior_beta
        )
    )


@_select_op.register_fake
def _(vectors, reference, beta, score, straight_through, gumbel_noise, tau, contrastive, prior, target, prior_beta):
    B, N, _ = vectors.shape
    acc = acc_dtype(vectors.dtype)
    n_losses = 2 if (contrastive != "none" or prior != "none") else 0
    return (
        vectors.new_empty((B, N), dtype=acc),
        vectors.new_empty((B, N), dtype=acc),
        vectors.new_empty((B,), dtype=torch.int64),
        vectors.new_empty((B, N), dtype=acc),
        vectors.new_empty((n_losses,), dtype=acc),
    )


@torch.library.custom_op("canon::select_backward", mutates_args=())
def _select_backward_op(
    grad_scores: Tensor | None,
    grad_probs: Tensor | None,
    grad_onehot: Tensor | None,
    grad_losses: Tensor | None,
    vectors: Tensor,
    reference: Tensor,
    probs: Tensor,
    beta: float,
    score: str,
    straight_through: bool,
    gumbel_noise: Tensor | None,
    tau: float,
    contrastive: str,
    prior: str,
    target: Tensor | None,
    prior_beta: float,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    with backend_as(backend):
        return _select_bwd(
            grad_scores, grad_probs, grad_onehot, grad_losses, vectors, reference, probs, beta, score, straight_through,
            gumbel_noise, tau,
            contrastive, prior, target, prior_beta,
        )  # fmt: skip


@_select_backward_op.register_fake
def _(
    grad_scores,
    grad_probs,
    grad_onehot,
    grad_losses,
    vectors,
    reference,
    probs,
    beta,
    score,
    straight_through,
    gumbel_noise,
    tau,
    contrastive,
    prior,
    target,
    prior_beta,
    backend=None,
):
    return torch.empty_like(vectors, memory_format=torch.contiguous_format), torch.empty_like(
        reference, memory_format=torch.contiguous_format
    )


def _select_setup(ctx, inputs, output):
    vectors, reference, beta, score, straight_through, gumbel_noise, tau, contrastive, prior, target, prior_beta = (
        inputs
    )
    ctx.save_for_backward(vectors, reference, output[1], gumbel_noise, target)
    ctx.cfg = (beta, score, straight_through, tau, contrastive, prior, prior_beta, get_backend())
    ctx.mark_non_differentiable(output[2])
    if not straight_through:
        ctx.mark_non_differentiable(output[3])


def _select_grad(ctx, g_scores, g_probs, g_index, g_onehot, g_losses):
    vectors, reference, probs, noise, target = ctx.saved_tensors
    beta, score, straight_through, tau, contrastive, prior, prior_beta, backend = ctx.cfg
    if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        return _EMPTY_GRADS[:11]
    gv, gr = torch.ops.canon.select_backward(
        g_scores,
        g_probs,
        g_onehot,
        g_losses,
        vectors,
        reference,
        probs,
        beta,
        score,
        straight_through,
        noise,
        tau,
        contrastive,
        prior,
        target,
        prior_beta,
        backend,
    )
    return (gv if ctx.needs_input_grad[0] else None, gr if ctx.needs_input_grad[1] else None) + _EMPTY_GRADS[:9]


_select_op.register_autograd(_select_grad, setup_context=_select_setup)


def select(
    vectors: Tensor,
    reference: Tensor,
    beta: float,
    score: str,
    straight_through: bool,
    gumbel_noise: Tensor | None,
    tau: float,
    contrastive: str = "none",
    prior: str = "none",
    target: Tensor | None = None,
    prior_beta: float = 1.0,
) -> tuple[Selection, Tensor]:
    """Scores, β-softmax, argmax and (straight-through) one-hot of ``vectors`` (B, N, D), and
    when asked (``contrastive`` ``"normalized"``/``"raw"``, ``prior`` ``"identity"``/``"target"``)
    the batch means of both losses as a (2,) tensor, all from one pass over the vectors."""
    cfg = (
        float(beta),
        score,
        bool(straight_through),
        gumbel_noise,
        float(tau),
        contrastive,
        prior,
        target,
        float(prior_beta),
    )
    if _compiling():
        out = (decomp.select if _aten_only() else torch.ops.canon.select)(vectors, reference, *cfg)
    elif _autograd("select", vectors, reference):
        out = _Select.apply(vectors, reference, cfg)
    else:
        out = _select_fwd(vectors, reference, *cfg)
    return Selection(*out[:4]), out[4]


# ============================================================================= contrastive loss
def _contrastive_fwd(vectors, kind):
    if _triton_for(vectors):
        return _triton().contrastive_loss(vectors, kind).mean()
    return ref.contrastive_loss_ref(vectors, kind)


def _contrastive_bwd(grad, vectors, kind):
    if _triton_for(vectors):
        return _triton().contrastive_loss_backward(grad, vectors, kind)
    return ref.contrastive_loss_backward_ref(grad, vectors, kind)


@_backward_runs_the_forward_backend
class _Contrastive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, kind):
        ctx.save_for_backward(vectors)
        ctx.kind = kind
        return _contrastive_fwd(vectors, kind)

    @staticmethod
    def backward(ctx, grad):
        (vectors,) = ctx.saved_tensors
        return _contrastive_bwd(grad, vectors, ctx.kind), None


@torch.library.custom_op("canon::contrastive_loss", mutates_args=())
def _contrastive_op(vectors: Tensor, kind: str) -> Tensor:
    return _contrastive_fwd(vectors, kind)


@_contrastive_op.register_fake
def _(vectors, kind):
    return vectors.new_empty((), dtype=acc_dtype(vectors.dtype))


@torch.library.custom_op("canon::contrastive_loss_backward", mutates_args=())
def _contrastive_backward_op(grad: Tensor, vectors: Tensor, kind: str, backend: str | None = None) -> Tensor:
    with backend_as(backend):
        return _contrastive_bwd(grad, vectors, kind)


@_contrastive_backward_op.register_fake
def _(grad, vectors, kind, backend=None):
    return torch.empty_like(vectors, memory_format=torch.contiguous_format)


def _contrastive_setup(ctx, inputs, output):
    vectors, kind = inputs
    ctx.save_for_backward(vectors)
    ctx.kind, ctx.backend = kind, get_backend()


def _contrastive_grad(ctx, grad):
    (vectors,) = ctx.saved_tensors
    return torch.ops.canon.contrastive_loss_backward(grad, vectors, ctx.kind, ctx.backend), None


_contrastive_op.register_autograd(_contrastive_grad, setup_context=_contrastive_setup)


def contrastive_loss(vectors: Tensor, kind: str) -> Tensor:
    """Orbit orthogonality loss of ``vectors`` (B, N, D) (docs/spec.md §4)."""
    if _compiling():
        return (decomp.contrastive_loss if _aten_only() else torch.ops.canon.contrastive_loss)(vectors, kind)
    return (
        _Contrastive.apply(vectors, kind) if _autograd("contrastive_loss", vectors) else _contrastive_fwd(vectors, kind)
    )


# ============================================================================= fused eval canonicalization
def _select_transform_fwd(vectors, reference, x, mats, exact, aligned, beta, score, padding, interpolation):
    if _triton_for(x):
        xc, sel = _triton().select_transform(
            vectors, reference, x, mats, exact, aligned, beta, score, padding, interpolation
        )
        return (xc, *sel)
    sel = ref.select_ref(vectors, reference, beta, score, False)
    return (ref.transform_values_ref(x, sel.index, mats, exact, padding, interpolation), *sel)


@_backward_runs_the_forward_backend
class _SelectTransform(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, reference, x, cfg):
        mats, pull, exact, aligned, beta, score, padding, interpolation = cfg
        ctx.set_materialize_grads(False)
        out = _select_transform_fwd(vectors, reference, x, mats, exact, aligned, beta, score, padding, interpolation)
        ctx.save_for_backward(x, out[3])
        ctx.cfg = cfg
        ctx.mark_non_differentiable(*out[1:])
        return out

    @staticmethod
    def backward(ctx, g_xc, *_):
        x, index = ctx.saved_tensors
        mats, pull, exact, aligned, beta, score, padding, interpolation = ctx.cfg
        gx = None
        if ctx.needs_input_grad[2] and g_xc is not None:  # a hard choice: only x receives a gradient
            gx, _ = _transform_bwd(
                g_xc, x, index, mats, pull, exact, aligned, padding, interpolation, True, False, None, None
            )
        return None, None, gx, None


@torch.library.custom_op("canon::select_transform", mutates_args=())
def _select_transform_op(
    vectors: Tensor,
    reference: Tensor,
    x: Tensor,
    mats: Tensor,
    pull: Tensor,
    exact: bool,
    aligned: bool,
    beta: float,
    score: str,
    padding: str,
    interpolation: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(
        _select_transform_fwd(vectors, reference, x, mats, exact, aligned, beta, score, padding, interpolation)
    )


@_select_transform_op.register_fake
def _(vectors, reference, x, mats, pull, exact, aligned, beta, score, padding, interpolation):
    B, N, _ = vectors.shape
    acc = acc_dtype(vectors.dtype)
    return (
        torch.empty(x.shape, dtype=x.dtype, device=x.device),
        vectors.new_empty((B, N), dtype=acc),
        vectors.new_empty((B, N), dtype=acc),
        vectors.new_empty((B,), dtype=torch.int64),
        vectors.new_empty((B, N), dtype=acc),
    )


def _select_transform_setup(ctx, inputs, output):
    vectors, reference, x, mats, pull, exact, aligned, beta, score, padding, interpolation = inputs
    ctx.save_for_backward(x, output[3], mats, pull)
    ctx.cfg = (exact, aligned, padding, interpolation, get_backend())
    ctx.mark_non_differentiable(*output[1:])


def _select_transform_grad(ctx, g_xc, *_):
    x, index, mats, pull = ctx.saved_tensors
    exact, aligned, padding, interpolation, backend = ctx.cfg
    gx = None
    if ctx.needs_input_grad[2]:
        gx, _ = torch.ops.canon.transform_backward(
            g_xc, x, index, mats, pull, exact, aligned, padding, interpolation, True, False, None, None, backend
        )
    return (None, None, gx) + _EMPTY_GRADS[:8]


_select_transform_op.register_autograd(_select_transform_grad, setup_context=_select_transform_setup)


def select_transform(
    vectors: Tensor, reference: Tensor, x: Tensor, tables, beta: float, score: str, padding: str, interpolation: str
) -> tuple[Tensor, Selection]:
    """Eval canonicalization from orbit vectors in one op: (canonical images ``T_{g*} x``, hard Selection)."""
    cfg = (tables.mats, tables.pull, tables.exact, tables.aligned, float(beta), score, padding, interpolation)
    if _compiling():
        if _aten_only():
            out = decomp.select_transform(vectors, reference, _pin_traced_size(x), *cfg)
        else:
            out = torch.ops.canon.select_transform(vectors, reference, x, *cfg)
    elif _autograd("select_transform", vectors, reference, x):
        out = _SelectTransform.apply(vectors, reference, x, cfg)
    else:
        out = _select_transform_fwd(vectors, reference, x, *cfg[:1], *cfg[2:])
    return out[0], Selection(*out[1:])
