"""``OrbitCanonicalizer``: wrap any encoder into an optimization-based canonicalizer (docs/spec.md §3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from canon import _memory, losses, ops, plans
from canon import functional as Fn
from canon._cache import Cache, transient_tensors
from canon._checks import (
    INTERPOLATIONS,
    PADDINGS,
    check_choice,
    check_crop_ratio,
    check_finite,
    check_images,
    check_positive,
    check_size,
    check_views_fit,
)
from canon.groups import Group, as_group
from canon.numerics import orbit_empty

__all__ = ["OrbitCanonicalizer", "CanonicalizationState", "NotCanonicalizedYet"]

_PLANS_KEPT = 16  # input sizes whose plans a module keeps (more: it starts over)


class NotCanonicalizedYet(RuntimeError, AttributeError):
    """What the last-forward attributes (``selection``, ``element``, ``scores``, the losses) raise before a
    first forward. Also an AttributeError, so that introspection — ``hasattr``, ``torch.jit.trace``'s scan
    of a module's attributes — takes them as absent instead of failing."""


class CanonicalizationState(NamedTuple):
    """What the last forward computed (kept for the losses and for ``invert``)."""

    views: torch.Tensor  # (B, N, C, h, w)
    vectors: torch.Tensor  # (B, N, D)
    selection: Fn.Selection


class OrbitCanonicalizer(nn.Module):
    """Canonicalize images with a non-equivariant encoder scoring the group orbit.

    ``forward(x)`` builds all views (:func:`canon.orbit`), encodes them, scores them
    against a reference vector (:func:`canon.select`) and returns the canonical
    images ``T_{g*} x`` (:func:`canon.canonicalize`). In training mode the choice is
    straight-through (gradients reach the encoder through the scores); in eval mode
    it is a hard argmax, and for exact groups (C2, C4, D1, D2, D4 on square inputs) with
    views at the input's size (no ``size``, crop 1) ``forward(T_g x) == forward(x)`` bit for
    bit; resized or cropped views are resampled: bilinear ones keep that up to float32 rounding
    of their coordinates (scores closer than ~1e-7 may choose differently), nearest ones do not.

    Args:
        encoder: φ mapping (M, C, h, w) to (M, D).
        group: ``"C8"``, ``"D4"``, ... or a :class:`canon.Group`.
        size: size of the views fed to the encoder (default: the input size).
        crop_ratio: centre crop of the views, in (0, 1].
        beta: inverse temperature of the score softmax.
        dim: D; taken from ``encoder.out_dim`` when not given.
        learn_reference: make the reference vector a parameter (default: a fixed
            random buffer drawn from ``seed``).
        padding, interpolation: resampling settings (see :func:`canon.orbit`).
        score: ``"cosine"`` or ``"dot"``.
        gumbel, tau: Gumbel-softmax choice in training.
        contrastive: ``"normalized"`` or ``"raw"`` (see :func:`canon.losses.contrastive_loss`).
        prior_beta: inverse temperature of the prior loss.
        check_finite: raise on NaN/Inf inputs and vectors (synchronises the device).
        seed: seed of the reference vector.
        antialias: views that shrink the input are antialiased as torchvision's ``Resize``
            (see :func:`canon.orbit`).
        channels_last: write the views so that the encoder's (B·N, C, h, w) batch is
            ``torch.channels_last`` (for an encoder whose weights are channels-last: tensor-core
            convolutions take NHWC without a conversion).

    Example:
        >>> from canon.networks import ConvEncoder
        >>> canon_net = OrbitCanonicalizer(ConvEncoder(1, out_dim=16), "C4").eval()
        >>> x = torch.rand(2, 1, 12, 12)
        >>> xc = canon_net(x)
        >>> torch.equal(canon_net(torch.rot90(x, 1, dims=(-2, -1))), xc)
        True
    """

    antialias = True  # (the default for modules pickled before the option existed)

    def __init__(
        self,
        encoder: nn.Module,
        group: str | Group,
        size: int | tuple[int, int] | None = None,
        crop_ratio: float = 1.0,
        beta: float = 1.0,
        dim: int | None = None,
        learn_reference: bool = False,
        padding: str = "zeros",
        interpolation: str = "bilinear",
        score: str = "cosine",
        gumbel: bool = False,
        tau: float = 1.0,
        contrastive: str = "normalized",
        prior_beta: float = 1.0,
        check_finite: bool = False,
        seed: int = 0,
        antialias: bool = True,
        channels_last: bool = False,
    ):
        super().__init__()
        fn = "OrbitCanonicalizer"
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"{fn}: encoder must be an nn.Module, got {type(encoder).__name__}")
        self.encoder = encoder
        self.group = as_group(group)
        self.size = None if size is None else check_size(size, (0, 0), fn)
        self.crop_ratio = check_crop_ratio(crop_ratio, fn)
        self.beta = check_positive(beta, "beta", fn)
        self.prior_beta = check_positive(prior_beta, "prior_beta", fn)
        self.tau = check_positive(tau, "tau", fn)
        self.padding = check_choice(padding, PADDINGS, "padding", fn)
        self.interpolation = check_choice(interpolation, INTERPOLATIONS, "interpolation", fn)
        self.score = check_choice(score, ("cosine", "dot"), "score", fn)
        self.contrastive = check_choice(contrastive, ("normalized", "raw"), "contrastive", fn)
        self.gumbel, self.check_finite = bool(gumbel), bool(check_finite)
        if not isinstance(antialias, bool):
            raise TypeError(f"{fn}: antialias must be True or False, got {antialias!r}")
        self.antialias = antialias
        if not isinstance(channels_last, bool):
            raise TypeError(f"{fn}: channels_last must be True or False, got {channels_last!r}")
        self.channels_last = channels_last
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"{fn}: dim must be a positive int (the vector size D), got {dim!r}")
        dim = dim if dim is not None else getattr(encoder, "out_dim", None)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(
                f"{fn}: the vector size D is unknown; pass dim=D (the encoder has no integer out_dim attribute)"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"{fn}: seed must be an int in [0, 2**64), got {seed!r}")
        ref = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
        if learn_reference:
            self.reference = nn.Parameter(ref)
        else:
            self.register_buffer("reference", ref)
        self.learn_reference = bool(learn_reference)
        self.state: CanonicalizationState | None = None
        self._losses: tuple[torch.Tensor, torch.Tensor] | None = None
        self._dtype: torch.dtype | None = None  # the encoder's parameter dtype, looked up once
        self._plan_cache = Cache(_PLANS_KEPT)  # (input size, device, settings) -> the orbit's and the transform's plans

    def _apply(self, fn, *args, **kwargs):
        self._dtype = None  # .to()/.half()/... may change the encoder's dtype
        self._plan_cache = Cache(_PLANS_KEPT)
        self.__dict__["_views_buffer"] = None
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict:
        # The last forward's state (views, vectors and their autograd graph) belongs to that call:
        # copy.deepcopy and pickling (torch.save(module)) leave it out, the copy starts fresh.
        state = super().__getstate__()
        return {**state, "state": None, "_losses": None, "_plan_cache": None, "_views_buffer": None, "_dtype": None}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._plan_cache = Cache(_PLANS_KEPT)  # (a module pickled before plans were a Cache kept a dict here)

    def extra_repr(self) -> str:
        return (
            f"group={self.group.name}, size={self.size}, crop_ratio={self.crop_ratio}, beta={self.beta}, "
            f"dim={self.reference.numel()}, learn_reference={self.learn_reference}, padding={self.padding!r}, "
            f"interpolation={self.interpolation!r}, score={self.score!r}, antialias={self.antialias}"
        )

    # -- forward ----------------------------------------------------------------
    # The module's settings were validated in __init__; the functional API's per-setting
    # plans (tables, effective padding) are looked up once per distinct input size, so a
    # forward checks the input tensor and calls the ops, nothing more.
    def _plans(self, x: torch.Tensor) -> tuple[plans.OrbitPlan, plans.TransformPlan]:
        key = (
            x.shape[-2],
            x.shape[-1],
            x.device,
            self.size,
            self.crop_ratio,
            self.padding,
            self.interpolation,
            self.group,
            self.antialias,
        )
        return self._plan_cache.get(key, lambda: self._build_plans(x))

    def _build_plans(self, x: torch.Tensor) -> tuple[plans.OrbitPlan, plans.TransformPlan]:
        fn = "OrbitCanonicalizer"
        H, W = x.shape[-2:]
        orbit = plans.orbit_plan(
            self.group, (H, W), self.size, self.crop_ratio, self.padding, self.interpolation, None, x.device, fn,
            self.antialias,
        )  # fmt: skip
        transform = plans.transform_plan(self.group, (H, W), self.padding, self.interpolation, x.device, False, fn)
        return orbit, transform

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(views (B, N, C, h, w), vectors (B, N, D)) of ``x``."""
        check_images(x, "OrbitCanonicalizer")
        if self.check_finite:
            check_finite(x, "x", "OrbitCanonicalizer")
        B, N = x.shape[0], self.group.order
        if self._dtype is None:
            self._dtype = next((p.dtype for p in self.encoder.parameters()), None)
        (tables, hw, padding, aa), _ = self._plans(x)
        dtype = self._dtype or x.dtype
        check_views_fit(x, N, hw, dtype, "OrbitCanonicalizer")
        last = self.__dict__.get("channels_last", False)  # (absent on modules pickled before the option)
        reuse = x.device.type == "cpu" and not last and not transient_tensors()
        # only large blocks: a small fresh one costs less than the holder check (and no page faults)
        reuse = reuse and B * N * x.shape[1] * hw[0] * hw[1] * dtype.itemsize >= _memory.MIN_BYTES
        out = self._dead_views(x, (B, N, x.shape[1], *hw), dtype) if reuse else None
        if not reuse:
            self.__dict__["_views_buffer"] = None  # a large block of an earlier input is not kept
        if reuse and out is None and not (torch.is_grad_enabled() and x.requires_grad):
            # a block of its own (kept below), not canon._memory's one shared block
            out = orbit_empty(B, N, x.shape[1], *hw, dtype, x.device, False)
        views = ops.orbit(x, tables, hw, padding, self.interpolation, dtype, last, out=out, antialias=aa)
        if reuse:
            self.__dict__["_views_buffer"] = views.detach()  # a private alias of the storage (see _dead_views)
        vectors = self.encoder(views.flatten(0, 1))
        if not isinstance(vectors, torch.Tensor):
            raise TypeError(
                f"OrbitCanonicalizer: the encoder must return one (M, D) tensor, got a {type(vectors).__name__}; wrap "
                f"it so that it returns the vectors only"
            )
        if vectors.dim() != 2 or vectors.shape[0] != B * N:
            raise ValueError(
                f"OrbitCanonicalizer: the encoder must return (M, D) vectors for M={B * N} views, got shape "
                f"{tuple(vectors.shape)}"
            )
        vectors = vectors.reshape(B, N, -1)
        if self.check_finite:
            check_finite(vectors, "encoder output", "OrbitCanonicalizer")
        if vectors.shape[-1] != self.reference.shape[0]:
            raise ValueError(
                f"OrbitCanonicalizer: the encoder returns D={vectors.shape[-1]} but the reference vector has "
                f"D={self.reference.shape[0]} (pass dim=D)"
            )
        return views, vectors

    def _dead_views(self, x: torch.Tensor, shape: tuple, dtype: torch.dtype) -> torch.Tensor | None:
        """Memory of the last forward's views to write this forward's into, when nothing still uses
        it (CPU only). A fresh tensor of that size costs a page fault per 4 KiB on the CPU (glibc
        maps blocks over 32 MiB anew each time), about as long as computing the views.

        The module keeps a private alias of the last views' storage (``_views_buffer``, never handed
        out). Once the module has dropped its own state, every tensor that still shares that
        storage — the views themselves held in a kept ``CanonicalizationState``, a view of them, a
        tensor saved for backward — holds a reference to it; the memory is reused only when the
        private alias is the one holder left (:func:`canon._memory.sole_holder`)."""
        buf = self.__dict__.get("_views_buffer")
        self.__dict__["state"] = None  # this forward replaces the state; the old views may die here
        self.__dict__["_views_buffer"] = None
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != x.device or buf.is_inference():
            return None
        if not buf.is_contiguous() or not _memory.sole_holder(buf):
            return None
        return _memory.on_memory_of(buf, shape)

    def _remember(self, views, vectors, sel, losses) -> CanonicalizationState:
        # plain attributes (no nn.Module.__setattr__ bookkeeping per forward)
        state = CanonicalizationState(views, vectors, sel)
        self.__dict__["state"] = state
        self.__dict__["_losses"] = losses
        return state

    def _choose(self, views, vectors) -> CanonicalizationState:
        # Training: the selection and both losses from one pass over the vectors (the losses
        # are kept for prior_loss()/contrastive_loss()). Eval: a plain hard choice.
        if self.training:
            sel, l_c, l_p = Fn.select_losses(
                vectors, self.reference, self.beta, self.score, straight_through=True, gumbel=self.gumbel, tau=self.tau,
                contrastive=self.contrastive, prior_beta=self.prior_beta,
            )  # fmt: skip
            return self._remember(views, vectors, sel, (l_c, l_p))
        sel = Fn.select(vectors, self.reference, self.beta, self.score, straight_through=False)
        return self._remember(views, vectors, sel, None)

    def select(self, x: torch.Tensor) -> CanonicalizationState:
        """Orbit, encode and score ``x``; store and return the state (no canonical image)."""
        return self._choose(*self._encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical images (B, C, H, W): ``T_{g*[b]} x[b]``."""
        views, vectors = self._encode(x)
        _, (_, tables, padding) = self._plans(x)
        if self.training:
            sel = self._choose(views, vectors).selection
            return ops.transform(x, sel.onehot, sel.index, tables, padding, self.interpolation)
        # eval: scores, argmax and the chosen transform in one op
        xc, sel = ops.select_transform(
            vectors, self.reference, x, tables, self.beta, self.score, padding, self.interpolation
        )
        self._remember(views, vectors, sel, None)
        return xc

    # -- after a forward --------------------------------------------------------
    def _state(self) -> CanonicalizationState:
        if self.state is None:
            raise NotCanonicalizedYet("OrbitCanonicalizer: call forward(x) first; no canonicalization state yet")
        return self.state

    @property
    def selection(self) -> Fn.Selection:
        return self._state().selection

    @property
    def element(self) -> torch.Tensor:
        """(B,) indices of the chosen elements g*."""
        return self._state().selection.index

    @property
    def scores(self) -> torch.Tensor:
        """(B, N) scores of every orbit copy."""
        return self._state().selection.scores

    def contrastive_loss(self) -> torch.Tensor:
        """Orbit contrastive loss of the last forward's vectors (computed with the selection in training)."""
        st = self._state()
        if self._losses is not None:
            return self._losses[0]
        return losses.contrastive_loss(st.vectors, self.contrastive)

    def prior_loss(self, target: torch.Tensor | None = None) -> torch.Tensor:
        """Prior loss towards ``target`` (default identity); see :func:`canon.losses.prior_target`."""
        st = self._state()
        if target is None and self._losses is not None:
            return self._losses[1]
        return losses.prior_loss(st.selection.scores, target, self.prior_beta)

    def identity_metric(self) -> torch.Tensor:
        return losses.identity_metric(self._state().selection.index)

    def artifact_loss(self, generator: torch.Generator | None = None) -> torch.Tensor:
        st = self._state()
        return losses.artifact_loss(
            self.encoder, st.views, self.group, st.vectors, self.padding, self.interpolation, generator
        )

    def invert(self, y: torch.Tensor, kind: str = "scalar") -> torch.Tensor:
        """Undo the last canonicalization on dense outputs (see :func:`canon.invert`)."""
        return Fn.invert(y, self._state().selection, self.group, kind, self.padding, self.interpolation)
