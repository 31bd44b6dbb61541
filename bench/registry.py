"""The case registry: what a benchmark case is, the inputs every provider shares, and the closure of one mode.

A case is one small builder, registered by name with :func:`register` (the builders live in
:mod:`bench.cases`; importing it fills :data:`REGISTRY`). A builder returns, for one provider, a
:class:`Work`: the forward (the outputs that a backward differentiates), the inputs that receive
gradients and the upstream gradient of each output. :func:`build` turns a Work into the closure
of one mode:

* ``forward``: the forward alone (op cases under ``torch.no_grad()``, as inference runs them;
  steps record the graph, as a training step does);
* ``backward``: the backward alone: the graph is built once, outside the timed region, and each
  timed call is ``torch.autograd.grad(outputs, inputs, upstream, retain_graph=True)``;
* ``full``: forward (recording the graph) + backward per call; for steps the whole training
  step (forward, losses, backward, SGD update).

Providers get the same inputs (:class:`Inputs`), parameters and upstream gradients:

* ``ours-triton``: canon with the Triton backend (CUDA only);
* ``ours-reference``: canon with the plain-PyTorch reference backend (any device);
* ``equiadapt``: equiadapt 0.1.2 itself, where it imports;
* ``equiadapt-loop``: :class:`bench.baselines.EquiadaptLoop`, its operations in torch;
* ``torch-batched``: what a PyTorch user writes instead (:mod:`bench.peers`): one batched
  ``F.grid_sample`` per op over all views, same outputs and gradients (orbit without antialiasing,
  canonicalize, invert; no peer for the other cases);
* ``torch-compile``: the same functions under ``torch.compile`` (inductor, default mode, whole graph,
  static shapes; ``BENCH_COMPILE_MODE`` / ``BENCH_COMPILE_BACKEND`` choose others), compiled and
  warmed outside the timed calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import canon
from bench import peers
from bench.baselines import equiadapt_status

PROVIDERS = ("ours-triton", "ours-reference", "equiadapt", "equiadapt-loop", "torch-batched", "torch-compile")
PEERS = ("torch-batched", "torch-compile")  # plain PyTorch: one batched grid_sample per op (bench.peers)
MODES = ("forward", "backward", "full")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SHAPES = {"1x28x28": ((1, 28, 28), None), "3x32x32": ((3, 32, 32), 96), "3x224x224": ((3, 224, 224), 96)}
DIM = 128  # vector size D (equiadapt's example out_vector_size)

# providers timed also with CUDA graphs (the launch-bound ones, and ours-triton beside them);
# the reference backend reads view matrices on the host (a sync), which graphs cannot capture
GRAPH_PROVIDERS = ("ours-triton", "equiadapt", "equiadapt-loop", "torch-batched", "torch-compile")


class Unavailable(Exception):
    """This provider cannot run this case or mode here (the reason goes into the row's note)."""


@dataclass(frozen=True)
class Config:
    """One size point of one case in one mode (``mode=None``: the case's default mode)."""

    case: str
    batch: int
    n: int
    shape: str  # key of SHAPES
    dtype: str = "fp32"
    mode: str | None = None

    def __post_init__(self):
        if self.mode is None and self.case in REGISTRY:
            object.__setattr__(self, "mode", REGISTRY[self.case].default_mode)

    @property
    def group(self) -> str:
        return f"C{self.n}"

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return SHAPES[self.shape][0]

    @property
    def view(self) -> int:
        """Side of the views the encoder scores."""
        size = SHAPES[self.shape][1]
        return size if size is not None else self.in_shape[1]

    @property
    def label(self) -> str:
        v = self.view
        tail = "" if v == self.in_shape[1] else f"→{v}"
        return f"{self.group} B={self.batch} {self.shape}{tail} {self.dtype}"


@dataclass
class Bench:
    """A ready-to-time closure and what it moves."""

    fn: Callable[[], object]
    bytes: int | None  # inputs read once + outputs written once (None: not a bandwidth case)
    out_shape: str
    note: str = ""


# -- the registry ----------------------------------------------------------------------------


@dataclass
class Work:
    """What one provider computes for one case; :func:`build` makes the closure of a mode from it.

    ``forward`` returns the outputs that the backward differentiates, ``leaves`` are the inputs
    that receive gradients and ``upstream`` the gradient of each output (cast to its dtype).
    """

    forward: Callable[[], tuple[torch.Tensor, ...]]
    leaves: tuple[torch.Tensor, ...]
    upstream: tuple[torch.Tensor, ...]
    out_shape: str | None = None  # default: the shape of the first output
    note: str = ""
    step: Callable[[], object] | None = None  # steps: the whole training step, timed as ``full``
    no_grad_forward: bool = True  # forward mode under torch.no_grad (steps record, as a step does)


@dataclass(frozen=True)
class Case:
    """A registered case: its builder, its default mode and the bytes one call moves."""

    name: str
    build: Callable[[Config, str, Inputs], Work]
    default_mode: str
    nbytes: Callable[[Config, str], int | None]
    min_reps: int  # timed calls per CPU row at least
    summary: str


REGISTRY: dict[str, Case] = {}


def register(name: str, default_mode: str = "forward", nbytes: Callable | None = None, min_reps: int = 5):
    """Decorator: register ``builder(cfg, provider, inputs) -> Work`` as case ``name``."""

    def wrap(builder):
        summary = (builder.__doc__ or "").strip().splitlines()[0]
        REGISTRY[name] = Case(name, builder, default_mode, nbytes or (lambda cfg, mode: None), min_reps, summary)
        return builder

    return wrap


def graphable(cfg: Config) -> bool:
    """Timed also under a CUDA graph: the forward mode of an op case (no autograd, no step)."""
    return cfg.mode == "forward" and REGISTRY[cfg.case].default_mode == "forward"


# -- inputs shared by every provider ----------------------------------------------------------


@dataclass
class Inputs:
    """The tensors of one size point, identical for every provider.

    With ``grad`` (backward and full modes) the images, vectors, reference and the one-hot of
    the choice are leaves that require gradients.
    """

    cfg: Config
    device: str
    grad: bool
    x: torch.Tensor  # (B, C, H, W)
    index: torch.Tensor  # (B,) chosen elements
    onehot: torch.Tensor  # (B, N) one-hot of index, float32
    vectors: torch.Tensor  # (B, N, D)
    vectors_gm: torch.Tensor  # (N·B, D), equiadapt's group-major layout of the same vectors
    reference: torch.Tensor  # (D,) float32

    @classmethod
    def make(cls, cfg: Config, device: str, grad: bool) -> Inputs:
        g = torch.Generator().manual_seed(0)
        dt = DTYPES[cfg.dtype]
        B, N = cfg.batch, cfg.n
        x = torch.rand(B, *cfg.in_shape, generator=g)
        index = torch.randint(0, N, (B,), generator=g)
        vectors = torch.randn(B, N, DIM, generator=g)
        reference = torch.randn(DIM, generator=g)
        vectors_gm = vectors.transpose(0, 1).reshape(N * B, DIM)

        def leaf(t: torch.Tensor, dtype=None) -> torch.Tensor:
            return t.to(device, dtype).contiguous().requires_grad_(grad)

        onehot = F.one_hot(index, N).float()
        index = index.to(device)
        return cls(
            cfg,
            device,
            grad,
            leaf(x, dt),
            index,
            leaf(onehot),
            leaf(vectors, dt),
            leaf(vectors_gm, dt),
            leaf(reference),
        )

    def normal(self, *shape: int) -> torch.Tensor:
        """A seeded standard-normal tensor: the upstream gradient of an output of this shape."""
        return torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(self.device)

    def selection(self) -> canon.Selection | torch.Tensor:
        """canon's choice: the index (forward), or a Selection whose one-hot receives a gradient."""
        if not self.grad:
            return self.index
        return canon.Selection(self.onehot.detach(), self.onehot.detach(), self.index, self.onehot)

    def group_element(self) -> dict:
        """equiadapt's choice: ``{"rotation": degrees (B,)}`` (call it inside the forward).

        With ``grad`` the angle is computed from the one-hot, as equiadapt's straight-through
        path does, so the gradient reaches the one-hot. equiadapt rotates by −angle: for the
        same element as canon's index k (counter-clockwise 360·k/N) it gets −360·k/N: the same
        work, the sign does not change the cost.
        """
        N = self.cfg.n
        table = torch.arange(N, device=self.device, dtype=torch.float32) * (360.0 / N)
        if not self.grad:
            return {"rotation": -table[self.index]}
        return {"rotation": -(self.onehot * table).sum(-1)}


def _shape(t) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, torch.Tensor) else ""


# -- from a Work to the closure of one mode ----------------------------------------------------


def check_available(provider: str, device: str) -> None:
    """Raise :class:`Unavailable` (with the reason) where ``provider`` cannot run on ``device``."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; choose from {PROVIDERS}")
    if provider == "ours-triton":
        if device != "cuda":
            raise Unavailable("no CUDA device here (the Triton interpreter is a test tool, not a performance path)")
        try:
            from canon import triton_ops  # noqa: F401
        except Exception as e:
            raise Unavailable(f"canon's Triton ops do not import: {type(e).__name__}: {e}") from e
    if provider == "equiadapt":
        ok, why = equiadapt_status()
        if not ok:
            raise Unavailable(why)


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _closure(work: Work, mode: str) -> tuple[Callable[[], object], tuple]:
    """(the timed closure of ``mode``, the outputs of one untimed forward)."""
    if mode == "forward":
        fn = _no_grad(work.forward) if work.no_grad_forward else work.forward
        return fn, fn()
    outs = work.forward()  # backward: the graph that every timed call differentiates again
    if len(outs) != len(work.upstream) or any(o.shape != u.shape for o, u in zip(outs, work.upstream)):
        raise ValueError(f"upstream gradients {[tuple(u.shape) for u in work.upstream]} do not match the outputs")
    up = tuple(u.to(o.dtype) for o, u in zip(outs, work.upstream))
    leaves = work.leaves
    if mode == "backward":
        return (lambda: torch.autograd.grad(outs, leaves, up, retain_graph=True)), outs
    if work.step is not None:
        return work.step, outs
    return (lambda: torch.autograd.grad(work.forward(), leaves, up)), outs


def build(cfg: Config, provider: str, device: str, check_provider: bool = True) -> Bench:
    """The closure timing ``cfg.case`` in ``cfg.mode`` for ``provider`` on ``device``; raises :class:`Unavailable`.

    ``check_provider=False`` skips the availability check: the tests run ours-triton's closures
    on CPU tensors under the Triton interpreter, which is no performance path.
    """
    if cfg.case not in REGISTRY:
        raise ValueError(f"unknown case {cfg.case!r}; choose from {tuple(REGISTRY)}")
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose from {MODES}")
    if check_provider:
        check_available(provider, device)
    case = REGISTRY[cfg.case]
    work = case.build(cfg, provider, Inputs.make(cfg, device, grad=cfg.mode != "forward"))
    if provider == "torch-compile":
        work.forward, how = _compile(work.forward)
        work.note = "; ".join(filter(None, (how, work.note)))
    fn, outs = _closure(work, cfg.mode)
    if provider == "torch-compile":
        fn()  # the backward compiles on its first call: not in the timed calls
    return Bench(fn, case.nbytes(cfg, cfg.mode), work.out_shape or _shape(outs[0]), work.note)


def _compile(forward: Callable) -> tuple[Callable, str]:
    """``forward`` under ``torch.compile`` (backend and mode from ``BENCH_COMPILE_BACKEND`` / ``BENCH_COMPILE_MODE``).

    Dynamo's caches are reset first: every size point is its own specialised compile, and a
    recompile limit reached across points would silently fall back to eager.
    """
    backend = os.environ.get("BENCH_COMPILE_BACKEND", "inductor")
    mode = os.environ.get("BENCH_COMPILE_MODE") or None
    torch._dynamo.reset()
    return peers.compiled(forward, backend, mode), f"torch.compile(backend={backend}, mode={mode or 'default'})"
