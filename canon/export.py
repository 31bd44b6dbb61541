"""Deployment helpers: an aten-only ``torch.export`` program, ONNX, or a guarded TorchScript trace.

The standard tools work on their own: while ``torch.export`` (and so ``torch.onnx.export``,
Lightning's ``to_onnx``) or ``torch.jit.trace`` traces a model, every canon op emits its
aten decomposition (:mod:`canon.decompositions`), so their graphs hold no custom op. This
module is the convenience on top: :func:`export` also checks the model and example, can keep
the batch dynamic from one example image, and decomposes programs exported with the
``canon::*`` ops inside (:func:`decompositions`); :func:`to_onnx` turns that into an ONNX
model (``pip install 'canon-equivariance[export]'``); :func:`trace` guards a trace to its
image size with a readable message. What the decomposed graph computes:
:mod:`canon.decompositions`.

The graph is specialised to the example's channel count and image size (the view
matrices are constants); :func:`export` can leave the batch size dynamic.

Example:
    >>> import canon
    >>> from canon.networks import ConvEncoder
    >>> model = canon.OrbitCanonicalizer(ConvEncoder(1, 8, hidden=4), "C4").eval()
    >>> x = torch.rand(2, 1, 8, 8)
    >>> program = export(model, (x,))
    >>> any(str(n.target).startswith("canon.") for n in program.graph.nodes)
    False
    >>> torch.equal(program.module()(x), model(x))
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from canon.decompositions import DECOMPOSITIONS
from canon.modules import OrbitCanonicalizer

__all__ = ["decompositions", "registered_ops", "missing_decompositions", "export", "to_onnx", "trace"]


# ----------------------------------------------------------------------------- decompositions
def registered_ops() -> list[torch._ops.OpOverload]:
    """Every overload registered under the ``canon`` op namespace in this process."""
    import canon.ops  # noqa: F401  (registers the ops)

    names = sorted(
        {n.split("::", 1)[1].split(".", 1)[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("canon::")}
    )
    out = []
    for name in names:
        packet = getattr(torch.ops.canon, name)
        out += [getattr(packet, overload) for overload in packet.overloads()]
    return out


def decompositions() -> dict[torch._ops.OpOverload, Callable]:
    """``{torch.ops.canon.<op>.<overload>: plain-PyTorch function}`` for every canon op that has one.

    Forward ops decompose into what the exported graph runs (see the module notes);
    the ``*_backward`` ops into the reference's backward formulas (they appear only in
    graphs that contain a backward pass). :func:`missing_decompositions` lists any
    registered op that has no entry.
    """
    table = {}
    for op in registered_ops():
        fn = DECOMPOSITIONS.get(op._schema.name.split("::", 1)[1]) if op._overloadname == "default" else None
        if fn is not None:
            table[op] = fn
    return table


def missing_decompositions() -> list[str]:
    """Names of the registered canon ops without a decomposition (empty when export covers them all)."""
    table = decompositions()
    return [str(op) for op in registered_ops() if op not in table]


# ----------------------------------------------------------------------------- export
def _check_model_args(model, args, fn: str) -> tuple:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(args, torch.Tensor):
        args = (args,)
    if not isinstance(args, tuple) or not all(isinstance(a, torch.Tensor) for a in args) or not args:
        raise TypeError(
            f"{fn}: example inputs must be a tensor or a non-empty tuple of tensors, got {type(args).__name__}"
        )
    if model.training:
        raise ValueError(f"{fn}: model must be in eval mode for deployment (call model.eval()), got training mode")
    return args


def _canonicalizer_states(model: nn.Module) -> list:
    # tracing replaces each canonicalizer's last-forward state with traced tensors
    return [(m, m.state) for m in model.modules() if isinstance(m, OrbitCanonicalizer)]


def _two_copies(a):
    """A batch-1 example as a batch of two (the same image twice), other examples as they are."""
    return torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == 1 else a


def _warm_up(model: nn.Module, args: tuple) -> None:
    # One eager forward first: the canonicalizer caches its view matrices per (group, size,
    # device) on first use, and a cache filled while torch.export traces would hold fake
    # tensors. It also sets the canonicalizer's last-forward state, which tracing reads.
    with torch.no_grad():
        model(*args)


def export(
    model: nn.Module, args, dynamic_batch: bool = False, core_aten: bool = False
) -> torch.export.ExportedProgram:
    """``torch.export`` a model containing canon ops, with every ``canon::*`` op decomposed into aten ops.

    Args:
        model: any module in eval mode (e.g. :class:`canon.Canonicalized` or
            :class:`canon.OrbitCanonicalizer`).
        args: example input tensor or tuple of tensors (fixes C, H, W of the graph).
        dynamic_batch: make dimension 0 of every input dynamic (size >= 1); a batch-1 example is
            traced as two copies of itself (torch.export would fix a size-1 dimension to 1).
        core_aten: also apply PyTorch's default decompositions (Core ATen IR, for
            backends that accept only that operator set).

    Returns:
        an ``ExportedProgram`` without canon ops; ``.module()`` runs it in PyTorch.

    Raises:
        RuntimeError: if a canon op has no decomposition (see :func:`missing_decompositions`).
    """
    fn = "canon.export.export"
    args = _check_model_args(model, args, fn)
    missing = missing_decompositions()
    if missing:
        raise RuntimeError(
            f"{fn}: no aten decomposition for the canon op(s) {missing}; add one to canon/decompositions.py"
        )
    checking = [name for name, m in model.named_modules() if isinstance(m, OrbitCanonicalizer) and m.check_finite]
    if checking:
        raise ValueError(
            f"{fn}: OrbitCanonicalizer(check_finite=True) at {checking} raises on NaN/Inf by reading tensor values, "
            "which an exported graph cannot do; set check_finite=False on it before exporting"
        )
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} for _ in args)
        # torch.export specialises a dimension of size 1 to the constant 1: trace a batch of two copies
        args = tuple(_two_copies(a) for a in args)
    _warm_up(model, args)
    states = _canonicalizer_states(model)
    try:
        with warnings.catch_warnings():
            # the canonicalizer keeps its last forward's tensors as attributes (restored below)
            warnings.filterwarnings("ignore", message=".*were assigned during export.*")
            program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    finally:
        for module, state in states:
            module.state = state
    program = program.run_decompositions(decompositions())
    if core_aten:  # a second pass: in one pass, some default decompositions leave in-place ops
        program = program.run_decompositions(torch.export.default_decompositions())
    left = sorted(
        {str(n.target) for n in program.graph.nodes if n.op == "call_function" and str(n.target).startswith("canon.")}
    )
    if left:
        raise RuntimeError(f"{fn}: canon ops left in the exported graph after decomposition: {left}")
    return program


def to_onnx(
    model: nn.Module | torch.export.ExportedProgram,
    args,
    path: str | None = None,
    dynamic_batch: bool = False,
    opset_version: int | None = None,
):
    """Export to ONNX through :func:`export` (aten only) and ``torch.onnx.export(..., dynamo=True)``.

    Needs the ``onnx`` and ``onnxscript`` packages (``pip install 'canon-equivariance[export]'``,
    which also brings ``onnxruntime`` to run the model).

    Args:
        model: a module in eval mode, or a program returned by :func:`export`.
        args: example input tensor or tuple of tensors.
        path: where to write the ``.onnx`` file (optional).
        dynamic_batch: keep the batch dimension dynamic (as :func:`export`).
        opset_version: ONNX opset (default: torch.onnx's).

    Returns:
        the ``torch.onnx.ONNXProgram`` (``.model_proto`` is the ONNX model).

    Example:
        >>> import canon, onnxruntime
        >>> from canon.networks import ConvEncoder
        >>> model = canon.OrbitCanonicalizer(ConvEncoder(1, 8, hidden=4), "C4").eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> onnx_program = to_onnx(model, (x,))
        >>> session = onnxruntime.InferenceSession(onnx_program.model_proto.SerializeToString())
        >>> (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        >>> torch.equal(torch.from_numpy(out), model(x))
        True
    """
    fn = "canon.export.to_onnx"
    missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
    if missing:
        raise ImportError(
            f"{fn}: ONNX export needs the package(s) {missing}; install them with `pip install "
            f"'canon-equivariance[export]'`"
        )
    if isinstance(args, torch.Tensor):
        args = (args,)
    program = (
        model if isinstance(model, torch.export.ExportedProgram) else export(model, args, dynamic_batch=dynamic_batch)
    )
    kwargs = {} if opset_version is None else {"opset_version": opset_version}
    onnx_program = torch.onnx.export(program, args, dynamo=True, verbose=False, **kwargs)
    if path is not None:
        onnx_program.save(path)
    return onnx_program


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ----------------------------------------------------------------------------- TorchScript
class _ShapeGuard(nn.Module):
    """Runs a traced module after checking that the input has the traced (C, H, W)."""

    def __init__(self, traced: nn.Module, shape: list[int]):
        super().__init__()
        self.traced = traced
        self.c, self.h, self.w = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.size(1) != self.c or x.size(2) != self.h or x.size(3) != self.w:
            raise ValueError(
                f"canon traced model: expected input (B, {self.c}, {self.h}, {self.w}) as traced, got {list(x.shape)}"
            )
        return self.traced(x)


def trace(model: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` a canonicalized model (one image-batch input, one tensor output), guarded to the
    traced image size.

    The traced graph holds aten ops only (the ops' decompositions; loading it needs no
    canon) and the view matrices of the example's size as constants, so the returned
    module checks that every input is (B, C, H, W) with the traced C, H, W (any B), and
    raises a message naming both otherwise (a plain ``torch.jit.trace`` also refuses another
    H, W, with PyTorch's message of a failed ``expand``). ``torch.jit.script`` is not
    supported (the modules use Python features TorchScript lacks).

    Example:
        >>> import canon
        >>> from canon.networks import ConvEncoder
        >>> model = canon.OrbitCanonicalizer(ConvEncoder(1, 8, hidden=4), "C4").eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> traced = trace(model, x)
        >>> torch.equal(traced(torch.rot90(x, 1, dims=(-2, -1))), model(x))
        True
    """
    fn = "canon.export.trace"
    (x,) = _check_model_args(model, x, fn)
    if x.dim() != 4:
        raise ValueError(f"{fn}: x must be images (B, C, H, W), got shape {tuple(x.shape)}")
    _warm_up(model, (x,))
    with warnings.catch_warnings():
        # Python-side checks (index range, shapes) turn into constants in the trace: expected here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (x,), check_trace=False)
    return torch.jit.script(_ShapeGuard(traced, list(x.shape[1:])))
