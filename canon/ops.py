"""Tensor-level ops with backend dispatch: the seam between ``canon`` and ``canon.kernels``.

Every op is declared once here, as a class (:class:`canon._opdecl.Op`): its arguments (a
``NamedTuple`` in schema order), its forward and backward, each choosing the Triton kernels
(:mod:`canon.triton_ops`) or the plain-PyTorch CPU backend (:mod:`canon.reference`) in one place,
:func:`_triton_for`, what it saves for the backward and its fake (meta) implementation.
:func:`canon._opdecl.declare` derives every entry path from that declaration:

* **eager** (the common case): the shared ``torch.autograd.Function`` calls the forward and
  backward directly, a few microseconds of Python per call, and only when a call records a graph;
* **torch.compile**: the registered ``torch.library.custom_op`` ``torch.ops.canon.<name>`` with
  its fake implementation and an autograd formula whose backward is the registered
  ``<name>_backward`` op, so the compiler sees each op as one opaque node, forward and backward
  (and runs the Triton kernels inside compiled graphs). The custom-op dispatcher costs ~60–100 µs
  per call in eager mode, which is why eager calls do not go through it;
* **torch.export and torch.jit.trace** (and what is built on them: ``torch.onnx.export``,
  Lightning's ``to_onnx``, AOTInductor): each op's aten decomposition
  (:mod:`canon.decompositions`), so the graph holds only ops other runtimes read.

A backward runs the backend its forward ran under (see :mod:`canon._opdecl`). A forward that
non-reentrant ``torch.utils.checkpoint`` recomputes during the backward runs the backend in force there.

The ops take tensors, device tables (:class:`canon.geometry.ViewTables`) and plain settings,
no groups; inputs are validated one layer up, in :mod:`canon.functional`. Backward
formulas: orbit and transform adjoints; the mixture straight-through gradient of the
transform to its weights (docs/spec.md §3.5); the select/loss gradients of docs/spec.md §4.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from canon import decompositions as decomp
from canon import reference as ref
from canon._opdecl import Eager, Op, declare
from canon.backend import resolve_backend, thread_setting
from canon.numerics import acc_dtype, orbit_empty
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
    "OPS",
]


def _triton():
    from canon import triton_ops  # imported lazily: triton is optional on the CPU path

    return triton_ops


def _triton_for(t: Tensor) -> bool:
    """The one backend decision: run the Triton kernels for an op whose main input is ``t``."""
    return resolve_backend(t) == "triton"


def _scatter_adjoint_in_deterministic_mode(padding: str) -> bool:
    # The kernels' adjoint of border/reflection padding scatters with atomics (zero padding
    # is a deterministic gather): deterministic mode takes the CPU backend's sorted scatter.
    return padding != "zeros" and torch.are_deterministic_algorithms_enabled()


# ============================================================================= orbit
class Orbit(Op):
    """All views (B, N, C, h, w) of ``x`` (B, C, H, W) through the view tables."""

    name = "orbit"
    tables = frozenset({"mats", "pull", "aa_norm", "fam", "chan_perm", "chan_inv"})  # constant device tables
    differentiable = ("x",)

    class Args(NamedTuple):
        x: Tensor
        mats: Tensor
        pull: Tensor
        exact: bool
        aligned: bool
        h: int
        w: int
        padding: str
        interpolation: str
        out_dtype: torch.dtype | None
        channels_last: bool
        # antialiased views (canon.geometry.antialias_tables): the per-pixel filter sums (None: plain
        # views), the forward's window side and the adjoint's
        aa_norm: Tensor | None = None
        aa_taps: int = 0
        aa_back_taps: int = 0
        # the views' quarter-turn families (ViewTables.fam): the kernels may sample each family once
        fam: Tensor | None = None

    class Backward(NamedTuple):
        grad: Tensor
        mats: Tensor
        pull: Tensor
        exact: bool
        aligned: bool
        H: int
        W: int
        padding: str
        interpolation: str
        x_dtype: torch.dtype
        aa_norm: Tensor | None = None
        aa_taps: int = 0
        aa_back_taps: int = 0
        backend: str | None = None

    @staticmethod
    def forward(a, out=None):
        x, hw = a.x, (a.h, a.w)
        if _triton_for(x):
            return _triton().orbit(
                x, a.mats, a.pull, a.exact, a.aligned, hw, a.padding, a.interpolation, a.out_dtype, a.channels_last,
                out=out, aa_norm=a.aa_norm, aa_taps=a.aa_taps, fam=a.fam,
            )  # fmt: skip
        if a.aa_norm is not None:
            return ref.orbit_antialias_fast(
                x, a.mats, a.pull, a.aa_norm, a.aa_taps, hw, a.padding, a.out_dtype, a.channels_last, out
            )
        return ref.orbit_ref(x, a.mats, a.exact, hw, a.padding, a.interpolation, a.out_dtype, a.channels_last, out=out)

    @staticmethod
    def fake(a):
        x = a.x
        dt = a.out_dtype or x.dtype
        return orbit_empty(x.shape[0], a.mats.shape[0], x.shape[1], a.h, a.w, dt, x.device, a.channels_last)

    @staticmethod
    def save(a, outputs):
        x = a.x
        return dict(
            mats=a.mats, pull=a.pull, exact=a.exact, aligned=a.aligned, H=x.shape[-2], W=x.shape[-1],
            padding=a.padding, interpolation=a.interpolation, x_dtype=x.dtype, aa_norm=a.aa_norm,
            aa_taps=a.aa_taps, aa_back_taps=a.aa_back_taps,
        )  # fmt: skip

    @staticmethod
    def backward(b):
        grad, hw = b.grad, (b.H, b.W)
        if b.aa_norm is not None:
            # the kernels gather the zero-padded adjoint; border/reflection fold onto edge pixels: the CPU backend's
            if _triton_for(grad) and b.padding == "zeros":
                return _triton().orbit_backward(
                    grad, b.mats, b.pull, b.exact, b.aligned, hw, b.padding, b.interpolation, b.x_dtype,
                    aa_norm=b.aa_norm, aa_back_taps=b.aa_back_taps,
                )  # fmt: skip
            return ref.orbit_antialias_backward_fast(
                grad, b.mats, b.pull, b.aa_norm, b.aa_taps, hw, b.padding, b.x_dtype
            )
        if _triton_for(grad) and not _scatter_adjoint_in_deterministic_mode(b.padding):
            return _triton().orbit_backward(
                grad, b.mats, b.pull, b.exact, b.aligned, hw, b.padding, b.interpolation, b.x_dtype
            )
        return ref.orbit_backward_ref(grad, b.mats, b.exact, hw, b.padding, b.interpolation, b.x_dtype)

    @staticmethod
    def backward_fake(b):
        grad = b.grad
        return grad.new_empty((grad.shape[0], grad.shape[2], b.H, b.W), dtype=b.x_dtype)


# ============================================================================= transform
class Transform(Op):
    """``T_{index[b]} x[b]`` with the mixture straight-through gradient to ``weights`` (docs/spec.md §3.5)."""

    name = "transform"
    tables = frozenset({"mats", "pull", "aa_norm", "fam", "chan_perm", "chan_inv"})  # constant device tables
    differentiable = ("x", "weights")
    backward_returns = tuple[Tensor, Tensor]

    class Args(NamedTuple):
        x: Tensor
        weights: Tensor | None
        index: Tensor
        mats: Tensor
        pull: Tensor
        exact: bool
        aligned: bool
        padding: str
        interpolation: str
        # the regular representation's channel permutation by the chosen element and its inverse
        # (N, N') int64, applied before the resampling; None: scalar channels
        chan_perm: Tensor | None
        chan_inv: Tensor | None
        # the views' quarter-turn families (ViewTables.fam): the backward's inner products may use them
        fam: Tensor | None = None

    class Backward(NamedTuple):
        grad: Tensor
        x: Tensor
        index: Tensor
        mats: Tensor
        pull: Tensor
        exact: bool
        aligned: bool
        padding: str
        interpolation: str
        need_x: bool
        need_weights: bool
        chan_perm: Tensor | None
        chan_inv: Tensor | None
        fam: Tensor | None = None
        backend: str | None = None

    @staticmethod
    def forward(a, out=None):
        if _triton_for(a.x):
            return _triton().transform(
                a.x, a.index, a.mats, a.exact, a.aligned, a.padding, a.interpolation, a.chan_perm
            )
        return ref.transform_values_ref(a.x, a.index, a.mats, a.exact, a.padding, a.interpolation, a.chan_perm)

    @staticmethod
    def fake(a):
        return torch.empty(a.x.shape, dtype=a.x.dtype, device=a.x.device)

    @staticmethod
    def save(a, outputs):
        return dict(
            x=a.x, index=a.index, mats=a.mats, pull=a.pull, exact=a.exact, aligned=a.aligned, padding=a.padding,
            interpolation=a.interpolation, chan_perm=a.chan_perm, chan_inv=a.chan_inv, fam=a.fam,
            w_dtype=None if a.weights is None else a.weights.dtype,
        )  # fmt: skip

    @staticmethod
    def needs(wanted):
        return {"need_x": wanted["x"], "need_weights": wanted["weights"]}

    @staticmethod
    def backward(b):
        """(grad_x in x.dtype, grad_weights (B, N) in the accumulation dtype); one that was not asked for
        is an empty tensor (a registered op returns tensors, never None)."""
        x = b.x
        if _triton_for(b.grad) and not (b.need_x and _scatter_adjoint_in_deterministic_mode(b.padding)):
            gx, gw = _triton().transform_backward(
                b.grad, x, b.index, b.mats, b.pull, b.exact, b.aligned, b.padding, b.interpolation, b.need_x,
                b.need_weights, b.chan_perm, b.chan_inv, fam=b.fam,
            )  # fmt: skip
        else:
            gx, gw = ref.transform_backward_ref(
                b.grad, x, b.index, b.mats, b.exact, b.padding, b.interpolation, b.need_x, b.need_weights, b.chan_perm
            )
        gx = gx.to(x.dtype) if gx is not None else x.new_empty((0,))
        gw = gw if gw is not None else x.new_empty((0,), dtype=acc_dtype(x.dtype))
        return gx, gw

    @staticmethod
    def backward_fake(b):
        x = b.x
        acc = acc_dtype(x.dtype)
        gx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if b.need_x else x.new_empty((0,))
        gw = x.new_empty((x.shape[0], b.mats.shape[0]), dtype=acc) if b.need_weights else x.new_empty((0,), dtype=acc)
        return gx, gw

    @staticmethod
    def input_grads(outs, saved, wanted):
        gx, gw = outs
        return {
            "x": gx if wanted["x"] else None,
            "weights": gw.to(saved["w_dtype"]) if wanted["weights"] else None,
        }


# ============================================================================= select (+ losses)
class Select(Op):
    """Scores, β-softmax, argmax and (straight-through) one-hot of ``vectors`` (B, N, D), and when
    asked (``contrastive`` ``"normalized"``/``"raw"``, ``prior`` ``"identity"``/``"target"``) the
    batch means of both losses as a (2,) tensor (empty when neither is asked)."""

    name = "select"
    differentiable = ("vectors", "reference")
    returns = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
    output_grads = ("grad_scores", "grad_probs", None, "grad_onehot", "grad_losses")
    backward_returns = tuple[Tensor, Tensor]

    class Args(NamedTuple):
        vectors: Tensor
        reference: Tensor
        beta: float
        score: str
        straight_through: bool
        gumbel_noise: Tensor | None
        tau: float
        contrastive: str  # "none" | "normalized" | "raw"
        prior: str  # "none" | "identity" | "target"
        target: Tensor | None
        prior_beta: float

    class Backward(NamedTuple):
        grad_scores: Tensor | None
        grad_probs: Tensor | None
        grad_onehot: Tensor | None
        grad_losses: Tensor | None
        vectors: Tensor
        reference: Tensor
        probs: Tensor
        beta: float
        score: str
        straight_through: bool
        gumbel_noise: Tensor | None
        tau: float
        contrastive: str
        prior: str
        target: Tensor | None
        prior_beta: float
        backend: str | None = None

    @staticmethod
    def forward(a, out=None):
        vectors = a.vectors
        with_losses = a.contrastive != "none" or a.prior != "none"
        no_losses = vectors.new_empty((0,), dtype=acc_dtype(vectors.dtype))
        if _triton_for(vectors):
            sel, losses = _triton().select(
                vectors, a.reference, a.beta, a.score, a.gumbel_noise, a.tau, a.contrastive, a.prior, a.target,
                a.prior_beta,
            )  # fmt: skip
            return (*sel, losses.mean(-1) if with_losses else no_losses)
        # forward values only: the straight-through one-hot's value is the hard one-hot
        sel = ref.select_ref(vectors, a.reference, a.beta, a.score, False, a.gumbel_noise, a.tau)
        if not with_losses:
            return (*sel, no_losses)
        zero = sel.scores.new_zeros(())
        cl = ref.contrastive_loss_ref(vectors, a.contrastive) if a.contrastive != "none" else zero
        target = a.target if a.target is not None else torch.zeros_like(sel.index)
        pl = ref.prior_loss_ref(sel.scores, target, a.prior_beta) if a.prior != "none" else zero
        return (*sel, torch.stack([cl.to(zero.dtype), pl.to(zero.dtype)]))

    @staticmethod
    def fake(a):
        B, N, _ = a.vectors.shape
        v = a.vectors
        acc = acc_dtype(v.dtype)
        n_losses = 2 if (a.contrastive != "none" or a.prior != "none") else 0
        return (
            v.new_empty((B, N), dtype=acc),
            v.new_empty((B, N), dtype=acc),
            v.new_empty((B,), dtype=torch.int64),
            v.new_empty((B, N), dtype=acc),
            v.new_empty((n_losses,), dtype=acc),
        )

    @staticmethod
    def non_differentiable(a, outputs):
        return (2,) if a.straight_through else (2, 3)  # eval: the one-hot is a constant

    @staticmethod
    def save(a, outputs):
        return dict(
            vectors=a.vectors, reference=a.reference, probs=outputs[1], beta=a.beta, score=a.score,
            straight_through=a.straight_through, gumbel_noise=a.gumbel_noise, tau=a.tau, contrastive=a.contrastive,
            prior=a.prior, target=a.target, prior_beta=a.prior_beta,
        )  # fmt: skip

    @staticmethod
    def backward(b):
        with_losses = b.contrastive != "none" or b.prior != "none"
        g_losses = b.grad_losses.contiguous() if (b.grad_losses is not None and with_losses) else None
        contrastive, prior = (b.contrastive, b.prior) if g_losses is not None else ("none", "none")
        if _triton_for(b.vectors):
            return _triton().select_backward(
                b.grad_scores, b.grad_probs, b.grad_onehot, g_losses, b.vectors, b.reference, b.probs, b.beta,
                b.score, b.straight_through, b.gumbel_noise, b.tau, contrastive, prior, b.target, b.prior_beta,
            )  # fmt: skip
        g_onehot = b.grad_onehot if b.straight_through else None
        if g_losses is None:
            return ref.select_backward_ref(
                b.grad_scores, b.grad_probs, g_onehot, b.vectors, b.reference, b.beta, b.score, b.straight_through,
                b.gumbel_noise, b.tau,
            )  # fmt: skip
        return ref.select_losses_backward_ref(
            b.grad_scores, b.grad_probs, g_onehot, g_losses, b.vectors, b.reference, b.beta, b.score,
            b.straight_through, b.gumbel_noise, b.tau, contrastive, prior, b.target, b.prior_beta,
        )  # fmt: skip

    @staticmethod
    def backward_fake(b):
        return (
            torch.empty_like(b.vectors, memory_format=torch.contiguous_format),
            torch.empty_like(b.reference, memory_format=torch.contiguous_format),
        )

    @staticmethod
    def input_grads(outs, saved, wanted):
        gv, gr = outs
        return {"vectors": gv if wanted["vectors"] else None, "reference": gr if wanted["reference"] else None}


# ============================================================================= contrastive loss
class ContrastiveLoss(Op):
    """Orbit orthogonality loss of ``vectors`` (B, N, D) (docs/spec.md §4), a 0-d batch mean."""

    name = "contrastive_loss"
    differentiable = ("vectors",)

    class Args(NamedTuple):
        vectors: Tensor
        kind: str  # "normalized" | "raw"

    class Backward(NamedTuple):
        grad: Tensor
        vectors: Tensor
        kind: str
        backend: str | None = None

    @staticmethod
    def forward(a, out=None):
        if _triton_for(a.vectors):
            return _triton().contrastive_loss(a.vectors, a.kind).mean()
        return ref.contrastive_loss_ref(a.vectors, a.kind)

    @staticmethod
    def fake(a):
        return a.vectors.new_empty((), dtype=acc_dtype(a.vectors.dtype))

    @staticmethod
    def save(a, outputs):
        return dict(vectors=a.vectors, kind=a.kind)

    @staticmethod
    def backward(b):
        if _triton_for(b.vectors):
            return _triton().contrastive_loss_backward(b.grad, b.vectors, b.kind)
        return ref.contrastive_loss_backward_ref(b.grad, b.vectors, b.kind)

    @staticmethod
    def backward_fake(b):
        return torch.empty_like(b.vectors, memory_format=torch.contiguous_format)


# ============================================================================= fused eval canonicalization
class SelectTransform(Op):
    """Eval canonicalization from orbit vectors in one op: (canonical images ``T_{g*} x``, the hard
    selection's scores, probs, index, one-hot). A hard choice: only ``x`` receives a gradient, through
    the transform's backward op."""

    name = "select_transform"
    tables = frozenset({"mats", "pull", "aa_norm", "chan_perm", "chan_inv"})  # constant device tables
    differentiable = ("vectors", "reference", "x")
    returns = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
    backward_of = Transform

    class Args(NamedTuple):
        vectors: Tensor
        reference: Tensor
        x: Tensor
        mats: Tensor
        pull: Tensor
        exact: bool
        aligned: bool
        beta: float
        score: str
        padding: str
        interpolation: str

    @staticmethod
    def forward(a, out=None):
        if _triton_for(a.x):
            xc, sel = _triton().select_transform(
                a.vectors, a.reference, a.x, a.mats, a.exact, a.aligned, a.beta, a.score, a.padding, a.interpolation
            )
            return (xc, *sel)
        sel = ref.select_ref(a.vectors, a.reference, a.beta, a.score, False)
        return (ref.transform_values_ref(a.x, sel.index, a.mats, a.exact, a.padding, a.interpolation), *sel)

    @staticmethod
    def fake(a):
        B, N, _ = a.vectors.shape
        v = a.vectors
        acc = acc_dtype(v.dtype)
        return (
            torch.empty(a.x.shape, dtype=a.x.dtype, device=a.x.device),
            v.new_empty((B, N), dtype=acc),
            v.new_empty((B, N), dtype=acc),
            v.new_empty((B,), dtype=torch.int64),
            v.new_empty((B, N), dtype=acc),
        )

    @staticmethod
    def non_differentiable(a, outputs):
        return (1, 2, 3, 4)

    @staticmethod
    def save(a, outputs):
        return dict(
            x=a.x, index=outputs[3], mats=a.mats, pull=a.pull, exact=a.exact, aligned=a.aligned, padding=a.padding,
            interpolation=a.interpolation, chan_perm=None, chan_inv=None,
        )  # fmt: skip

    @staticmethod
    def needs(wanted):
        return {"need_x": wanted["x"], "need_weights": False}

    @staticmethod
    def input_grads(outs, saved, wanted):
        return {"x": outs[0] if wanted["x"] else None}


OPS = tuple(declare(op) for op in (Orbit, Transform, Select, ContrastiveLoss, SelectTransform))
for _op in OPS:
    _op.decomposition = getattr(decomp, _op.name)


# ============================================================================= calls
_route = threading.local()


def tracing() -> bool:
    """torch.compile, torch.export or torch.jit is tracing this call: the registered ops (or their
    decompositions) go into the graph. (Whether tensors made now may be cached is another question:
    :func:`canon._cache.transient_tensors`.)"""
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
    """Take the registered custom ops: while tracing (:func:`tracing`), or when asked
    (:func:`registered_ops`)."""
    return tracing() or bool(getattr(_route, "registered", False))


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
    with thread_setting(_route, "registered", True):
        yield


def _call(op: type[Op], a, out=None):
    """Run ``op`` on its arguments ``a`` on the path the call needs."""
    if _compiling():  # (one check on the eager path; which tracer, only when one traces)
        if _aten_only():
            return op.decomposition(*(a._replace(x=_pin_traced_size(a.x)) if "x" in a._fields else a))
        return op.registered(*a)
    inputs = [getattr(a, f) for f in op.differentiable]
    if _autograd(op.name, *inputs):
        return Eager.apply(op, a, out, *inputs)
    return op.forward(a, out)


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
    a = Orbit.Args(
        x, tables.mats, tables.pull, tables.exact, tables.aligned, h, w, padding, interpolation, out_dtype,
        channels_last, fam=getattr(tables, "fam", None),
    )  # fmt: skip
    if antialias is not None:
        a = a._replace(aa_norm=antialias.norm, aa_taps=antialias.taps, aa_back_taps=antialias.back_taps)
    return _call(Orbit, a, out)


def transform(
    x: Tensor, weights: Tensor | None, index: Tensor, tables, padding: str, interpolation: str, chan_tables=None
) -> Tensor:
    """``T_{index[b]} x[b]`` with the mixture straight-through gradient to ``weights`` (docs/spec.md §3.5).

    ``chan_tables`` = (perm, inverse perm) (N, N') int64: the regular representation's
    channel permutation by the chosen element, applied before the resampling.
    """
    chan_perm, chan_inv = chan_tables if chan_tables is not None else (None, None)
    a = Transform.Args(
        x, weights, index, tables.mats, tables.pull, tables.exact, tables.aligned, padding, interpolation, chan_perm,
        chan_inv, fam=getattr(tables, "fam", None),
    )  # fmt: skip
    return _call(Transform, a)


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
    a = Select.Args(
        vectors, reference, float(beta), score, bool(straight_through), gumbel_noise, float(tau), contrastive, prior,
        target, float(prior_beta),
    )  # fmt: skip
    out = _call(Select, a)
    return Selection(*out[:4]), out[4]


def contrastive_loss(vectors: Tensor, kind: str) -> Tensor:
    """Orbit orthogonality loss of ``vectors`` (B, N, D) (docs/spec.md §4)."""
    return _call(ContrastiveLoss, ContrastiveLoss.Args(vectors, kind))


def select_transform(
    vectors: Tensor, reference: Tensor, x: Tensor, tables, beta: float, score: str, padding: str, interpolation: str
) -> tuple[Tensor, Selection]:
    """Eval canonicalization from orbit vectors in one op: (canonical images ``T_{g*} x``, hard Selection)."""
    a = SelectTransform.Args(
        vectors, reference, x, tables.mats, tables.pull, tables.exact, tables.aligned, float(beta), score, padding,
        interpolation,
    )  # fmt: skip
    out = _call(SelectTransform, a)
    return out[0], Selection(*out[1:])
