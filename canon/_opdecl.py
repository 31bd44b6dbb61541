"""How an op of :mod:`canon.ops` is declared once and run on every path.

An op is a class of plain functions and two ``NamedTuple`` argument lists (:class:`Op`); the
:func:`declare` decorator derives from it

* the eager path: one ``torch.autograd.Function`` (:class:`Eager`) shared by every op, used only
  when a call records a graph (``Function.apply`` costs 4–10 µs per call on the CPU);
* the registered ``torch.ops.canon.<name>`` and ``torch.ops.canon.<name>_backward`` custom ops
  (schemas read from the argument lists, fake implementations, the autograd formula), which
  ``torch.compile`` sees as opaque nodes;

and both paths save the same things, pass the same named fields and run the same backward. A
backward runs the backend its forward ran under: the eager Function records it at forward, the
registered ops pass it to the backward op as its ``backend`` argument (under ``torch.compile``,
the backend in force when the graph was traced).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Callable

import torch
from torch import Tensor

from canon.backend import backend_as, get_backend

__all__ = ["Op", "Eager", "declare", "run_backward"]


class Op:
    """One op, declared once. Subclasses set:

    ``name``: the registered name (``torch.ops.canon.<name>``).
    ``Args``: a ``NamedTuple`` of the op's arguments in schema order, annotated (the schema is read
    from it). ``returns``: the return annotation (``Tensor`` or ``tuple[Tensor, ...]``).
    ``differentiable``: the fields of ``Args`` that may require grad (eager calls with none of them
    requiring grad run :meth:`forward` alone).
    ``output_grads``: per output, the field of the backward's arguments its gradient fills (None: the
    output has no gradient).
    ``Backward``: a ``NamedTuple`` of the backward op's arguments (the output gradients, what
    :meth:`save` keeps, and ``backend`` last); ``backward_of``: another op whose backward op this op
    reuses (then ``Backward`` and :meth:`backward` are that op's).

    and the functions :meth:`forward`, :meth:`fake`, :meth:`save`, :meth:`backward`,
    :meth:`backward_fake` and :meth:`input_grads`.
    """

    name: str
    Args: type
    returns: object = Tensor
    differentiable: tuple[str, ...] = ()
    output_grads: tuple[str | None, ...] = ("grad",)
    Backward: type | None = None
    backward_returns: object = Tensor
    backward_of: type[Op] | None = None
    decomposition: Callable | None = None  # set by canon.ops: the aten-only function for export/trace
    # saved tensors that are constant device tables (built once, never modified in place): kept as plain
    # attributes, without save_for_backward's per-tensor bookkeeping
    tables: frozenset = frozenset()

    @staticmethod
    def forward(a, out=None):
        """The outputs (the backend decision is made here)."""
        raise NotImplementedError

    @staticmethod
    def fake(a):
        """Empty outputs of the right shapes, dtypes and devices (for tracing)."""
        raise NotImplementedError

    @staticmethod
    def non_differentiable(a, outputs) -> tuple[int, ...]:
        """Indices of outputs without a gradient."""
        return ()

    @staticmethod
    def save(a, outputs) -> dict:
        """What the backward needs, by the names of ``Backward``'s fields (and any extra the op's
        :meth:`input_grads` reads): a new dict. Tensors among them, except ``tables``, go through
        ``ctx.save_for_backward``."""
        raise NotImplementedError

    @staticmethod
    def needs(wanted: dict) -> dict:
        """Backward fields that say which input gradients are wanted (``wanted``: field → bool)."""
        return {}

    @staticmethod
    def backward(b):
        """The backward op's outputs from its arguments ``b`` (a ``Backward``)."""
        raise NotImplementedError

    @staticmethod
    def backward_fake(b):
        raise NotImplementedError

    @staticmethod
    def input_grads(outs, saved: dict, wanted: dict) -> dict:
        """Gradients of the differentiable inputs, by field, from the backward op's outputs."""
        (field,) = (f for f, w in wanted.items() if w)
        return {field: outs}


def _backward_op(op: type[Op]) -> type[Op]:
    return op.backward_of or op


def _signature_fn(fields: type, returns, impl: Callable) -> Callable:
    """A function of the fields of ``fields`` (annotated, with their defaults) calling ``impl(fields(...))``:
    what ``torch.library.custom_op`` reads the schema from."""
    hints = typing.get_type_hints(fields)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    empty = inspect.Parameter.empty
    params = [
        inspect.Parameter(n, kind, annotation=hints[n], default=fields._field_defaults.get(n, empty))
        for n in fields._fields
    ]

    def fn(*args, **kwargs):
        return impl(fields(*args, **kwargs))

    fn.__signature__ = inspect.Signature(params, return_annotation=returns)
    fn.__name__ = fields.__name__
    return fn


def _keep(ctx, op: type[Op], saved: dict) -> None:
    """``saved``'s tensors through ``save_for_backward`` (version checks, no reference cycles), except the
    op's constant ``tables``; the rest as is."""
    names, tensors = [], []
    for k, v in saved.items():
        if isinstance(v, Tensor) and k not in op.tables:
            names.append(k)
            tensors.append(v)
    for k in names:
        del saved[k]
    ctx.save_for_backward(*tensors)
    ctx.saved_names = names
    ctx.saved_rest = saved


def _kept(ctx) -> dict:
    saved = dict(ctx.saved_rest)
    saved.update(zip(ctx.saved_names, ctx.saved_tensors))
    return saved


def run_backward(op: type[Op], saved: dict, grads, wanted: dict, call: Callable) -> dict:
    """Input gradients (by field) of ``op`` from its output gradients ``grads``; ``call(b)`` runs the
    backward op on its arguments ``b``. Nothing runs when no input wants a gradient or none arrived."""
    if not any(wanted.values()) or all(g is None for g in grads):
        return {}
    fields = dict(saved)
    fields.update((name, g) for name, g in zip(op.output_grads, grads) if name is not None)
    fields.update(op.needs(wanted))
    Backward = _backward_op(op).Backward
    b = Backward(**{f: fields[f] for f in Backward._fields if f in fields})
    return op.input_grads(call(b), saved, wanted)


class Eager(torch.autograd.Function):
    """The eager autograd node of every op: ``Eager.apply(op, args, out, *differentiable inputs)``.
    The arguments travel as one ``NamedTuple`` (``Function.apply``'s bookkeeping is per argument);
    the differentiable inputs follow it so that autograd sees them."""

    @staticmethod
    def forward(ctx, op, a, out, *inputs):
        ctx.set_materialize_grads(False)  # outputs without a gradient arrive as None
        ctx.op, ctx.backend = op, get_backend()
        outputs = op.forward(a, out)
        _keep(ctx, op, op.save(a, outputs))
        nondiff = op.non_differentiable(a, outputs)
        if nondiff:
            ctx.mark_non_differentiable(*(outputs[i] for i in nondiff))
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        op = ctx.op
        wanted = dict(zip(op.differentiable, ctx.needs_input_grad[3:]))
        with backend_as(ctx.backend):
            got = run_backward(op, _kept(ctx), grads, wanted, _backward_op(op).backward)
        return (None, None, None, *(got.get(f) for f in op.differentiable))


_AUTOCAST_DEVICES = ("cpu", "cuda")


def _without_autocast(fn: Callable) -> Callable:
    """``fn`` with autocast off inside it. Every op chooses its own dtypes (outputs in the input's or the
    requested dtype, sums in :func:`canon.numerics.acc_dtype`), so an autocast region around a call must
    not recast the products inside it: the CPU antialias product is a sparse one without a bfloat16
    kernel, and the contrastive loss's Gram matrices would lose their float32 sums."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        on = [d for d in _AUTOCAST_DEVICES if torch.is_autocast_enabled(d)]
        if not on:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for d in on:
                stack.enter_context(torch.autocast(d, enabled=False))
            return fn(*args, **kwargs)

    return run


def declare(op: type[Op]) -> type[Op]:
    """Register ``op`` (and its backward op, unless it reuses another op's) with torch.library; its
    forward and backward run with autocast off (:func:`_without_autocast`) on every path."""
    name = op.name
    op.forward = staticmethod(_without_autocast(op.forward))
    if op.backward_of is None:
        op.backward = staticmethod(_without_autocast(op.backward))
    forward = _signature_fn(op.Args, op.returns, op.forward)
    registered = torch.library.custom_op(f"canon::{name}", forward, mutates_args=())
    registered.register_fake(_signature_fn(op.Args, op.returns, op.fake))
    if op.backward_of is None:

        def run(b):
            with backend_as(b.backend):
                return op.backward(b)

        back = torch.library.custom_op(
            f"canon::{name}_backward", _signature_fn(op.Backward, op.backward_returns, run), mutates_args=()
        )
        back.register_fake(_signature_fn(op.Backward, op.backward_returns, op.backward_fake))
    backward_name = f"{_backward_op(op).name}_backward"

    def setup_context(ctx, inputs, output):
        a = op.Args(*inputs)
        _keep(ctx, op, op.save(a, output))
        ctx.backend = get_backend()  # the backend in force now (at tracing, for compiled code) runs the backward
        nondiff = op.non_differentiable(a, output)
        if nondiff:
            ctx.mark_non_differentiable(*(output[i] for i in nondiff))

    def backward(ctx, *grads):
        wanted = {f: ctx.needs_input_grad[i] for i, f in enumerate(op.Args._fields) if f in op.differentiable}
        saved = _kept(ctx)
        saved["backend"] = ctx.backend
        got = run_backward(op, saved, grads, wanted, lambda b: getattr(torch.ops.canon, backward_name)(*b))
        return tuple(got.get(f) for f in op.Args._fields)

    registered.register_autograd(backward, setup_context=setup_context)
    op.registered = registered
    return op
