"""Drop-in replacement for equiadapt's ``OptimizedGroupEquivariantImageCanonicalization``.

Change one import line::

    # from equiadapt.images.canonicalization.discrete_group import OptimizedGroupEquivariantImageCanonicalization
    from canon.compat import OptimizedGroupEquivariantImageCanonicalization

and keep the rest: same constructor, methods, attributes and
``canonicalization_info_dict`` keys, computed by canon's single-resampling ops.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from canon import functional as Fn
from canon import losses
from canon._checks import check_choice, check_positive
from canon.geometry import transform_boxes
from canon.groups import Group

__all__ = ["OptimizedGroupEquivariantImageCanonicalization"]

_REQUIRED = ("beta", "group_type", "num_rotations", "artifact_err_wt", "resize_shape", "learn_ref_vec")


def _get(hp: Any, name: str, default: Any = ...) -> Any:
    if isinstance(hp, Mapping):
        if name in hp:
            return hp[name]
    elif hasattr(hp, name):
        return getattr(hp, name)
    if default is ...:
        raise ValueError(
            f"OptimizedGroupEquivariantImageCanonicalization: canonicalization_hyperparams has no '{name}' "
            f"(needs {', '.join(_REQUIRED)}, and input_crop_ratio for colour images)"
        )
    return default


class EdgePad(nn.Module):
    """``torchvision.transforms.Pad(pad, padding_mode="edge")`` on (B, C, H, W) tensors: every side grows by
    ``pad`` pixels that repeat the edge."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = int(pad)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        return F.pad(x, (p, p, p, p), mode="replicate")


class CenterCrop(nn.Module):
    """``torchvision.transforms.CenterCrop(size)`` on (..., H, W) tensors: the centre ``size`` window, the
    top-left corner rounded as torchvision rounds it; a side larger than the image is zero-padded first."""

    def __init__(self, size):
        super().__init__()
        self.size = (int(size), int(size)) if isinstance(size, numbers.Integral) else tuple(int(s) for s in size)

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (H, W) = self.size, x.shape[-2:]
        if h > H or w > W:
            ph, pw = max(h - H, 0), max(w - W, 0)
            x = F.pad(x, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2))
            H, W = x.shape[-2:]
        top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
        return x[..., top : top + h, left : left + w]


class Resize(nn.Module):
    """``torchvision.transforms.Resize(size)`` on (B, C, H, W) float tensors: bilinear, antialiased when
    shrinking (torchvision's default); an int ``size`` is the short side (the long side keeps the aspect
    ratio, rounded down), a pair is (h, w)."""

    def __init__(self, size):
        super().__init__()
        self.size = int(size) if isinstance(size, numbers.Integral) else tuple(int(s) for s in size)

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def output_size(self, H: int, W: int) -> tuple[int, int]:
        if not isinstance(self.size, int):
            return self.size
        short, long = (W, H) if W <= H else (H, W)
        new_short, new_long = self.size, int(self.size * long / short)
        return (new_long, new_short) if W <= H else (new_short, new_long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            x, size=self.output_size(*x.shape[-2:]), mode="bilinear", align_corners=False, antialias=True
        )


def _check_targets(targets, B: int, hw: tuple[int, int]) -> None:
    """One dict per image, boxes (K, 4) xyxy, masks (K, H, W) at the image size: a clear message otherwise."""
    fn = "OptimizedGroupEquivariantImageCanonicalization.canonicalize"
    if not isinstance(targets, (list, tuple)) or len(targets) != B:
        n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"{fn}: targets must be a list of one dict per image (B={B}), got {n}")
    for b, t in enumerate(targets):
        if not isinstance(t, Mapping):
            raise TypeError(f"{fn}: targets[{b}] must be a dict with 'boxes' and/or 'masks', got {type(t).__name__}")
        boxes, masks = t.get("boxes"), t.get("masks")
        if boxes is not None and not (isinstance(boxes, torch.Tensor) and boxes.dim() == 2 and boxes.shape[1] == 4):
            got = f"shape {tuple(boxes.shape)}" if isinstance(boxes, torch.Tensor) else type(boxes).__name__
            raise ValueError(f"{fn}: targets[{b}]['boxes'] must be (K, 4) xyxy boxes, got {got}")
        if masks is not None and not (
            isinstance(masks, torch.Tensor) and masks.dim() == 3 and tuple(masks.shape[-2:]) == tuple(hw)
        ):
            got = f"shape {tuple(masks.shape)}" if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise ValueError(f"{fn}: targets[{b}]['masks'] must be (K, {hw[0]}, {hw[1]}) masks, got {got}")


class OptimizedGroupEquivariantImageCanonicalization(nn.Module):
    """equiadapt-compatible optimization-based image canonicalizer.

    Args:
        canonicalization_network: φ, (M, C, h, w) → (M, D), with attribute
            ``out_vector_size`` (equiadapt's convention) or ``out_dim``.
        canonicalization_hyperparams: an omegaconf DictConfig, a dict or any object with
            ``beta``, ``input_crop_ratio`` (colour only), ``resize_shape`` (int),
            ``group_type`` (``"rotation"`` | ``"roto-reflection"``), ``num_rotations``,
            ``artifact_err_wt``, ``learn_ref_vec``. Optional extras (not in equiadapt):
            ``contrastive_kind`` (``"raw"`` default, equiadapt's loss; or ``"normalized"``),
            ``gradient_trick`` (``"straight_through"`` default, or ``"gumbel_softmax"``),
            ``antialias`` (True default: views that shrink the input are antialiased, as
            equiadapt's torchvision ``Resize`` is; False: one bilinear tap per pixel).
        in_shape: (C, H, W) of the inputs.

    Same forward semantics as equiadapt 0.1.2: grayscale inputs (C = 1) are scored at
    full resolution with zero padding; colour inputs are centre-cropped to
    ``ceil(H·input_crop_ratio)``, resized so the short side is ``resize_shape``, cut to
    ``resize_shape²`` and padded by edge replication. Element ``g`` of
    ``group_activations``/``vector_out`` is equiadapt's: a *clockwise* rotation by
    ``360·g/N`` degrees for ``g < N`` and, for ``g ≥ N``, that rotation followed by a
    horizontal flip; ``vector_out`` is group-major (row ``g·B + b``).

    Deliberate differences from equiadapt 0.1.2 (docs/spec.md §6):
        1. D_n: the canonical image is the copy that was scored (equiadapt scores
           flip∘rotate but canonicalizes with rotate∘flip), so roto-reflection is exact.
           ``group_element`` keeps equiadapt's keys; the canonical image is
           ``hflip(rotate_clockwise(x, rotation))`` when ``reflection`` is 1.
        2. ``invert_canonicalization`` undoes exactly the applied element (equiadapt's
           reflection blend is swapped there, and on D_n its regular action is not e2cnn's),
           and targets (boxes, masks) are flipped per sample, not for the whole batch.
        3. Each view is one resampling of the full input (no crop → resize → pad →
           rotate → crop chain, no Python loop). So at angles other than multiples of
           90° the corners of a colour view show the real image outside the crop, where
           equiadapt shows the edge-replicated crop; resizing is antialiased as torchvision's
           ``Resize`` (its triangle filter, rotated with the view), which equals equiadapt's
           resize away from the crop's edges.
        4. Internally the orbit is batch-major; the info dict is laid out as equiadapt's.
        5. The network is yours; canon's own encoders never apply ``Dropout1d`` to vectors.

    Example:
        >>> from canon.networks import ConvEncoder
        >>> hp = dict(beta=1.0, input_crop_ratio=0.8, resize_shape=28, group_type="rotation",
        ...           num_rotations=4, artifact_err_wt=0.0, learn_ref_vec=False)
        >>> net = ConvEncoder(1, out_dim=16)
        >>> canon_layer = OptimizedGroupEquivariantImageCanonicalization(net, hp, (1, 28, 28))
        >>> canon_layer(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, canonicalization_network: nn.Module, canonicalization_hyperparams: Any, in_shape: tuple):
        super().__init__()
        fn = "OptimizedGroupEquivariantImageCanonicalization"
        hp = canonicalization_hyperparams
        if not isinstance(canonicalization_network, nn.Module):
            raise TypeError(
                f"{fn}: canonicalization_network must be an nn.Module, got {type(canonicalization_network).__name__}"
            )
        if not (
            isinstance(in_shape, (tuple, list, torch.Size))
            and len(in_shape) == 3
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in in_shape)
        ):
            raise ValueError(f"{fn}: in_shape must be (C, H, W) with positive integers, got {in_shape!r}")
        self.canonicalization_network = canonicalization_network
        self.in_shape = tuple(int(s) for s in in_shape)
        self.beta = check_positive(_get(hp, "beta"), "beta", fn)
        group_type = _get(hp, "group_type")
        if group_type not in ("rotation", "roto-reflection"):
            raise ValueError(f"{fn}: group_type must be 'rotation' or 'roto-reflection', got {group_type!r}")
        self.group_type = group_type
        self.num_rotations = _get(hp, "num_rotations")
        if (
            isinstance(self.num_rotations, bool)
            or not isinstance(self.num_rotations, numbers.Integral)
            or self.num_rotations < 1
        ):
            raise ValueError(f"{fn}: num_rotations must be an integer >= 1, got {self.num_rotations!r}")
        self.num_rotations = int(self.num_rotations)
        self.group = Group(self.num_rotations, reflections=group_type == "roto-reflection")
        self.num_group = self.group.order
        self.group_info_dict = {"num_rotations": self.num_rotations, "num_group": self.num_group}
        wt = _get(hp, "artifact_err_wt")
        wt = 0.0 if wt is None else wt
        if isinstance(wt, bool) or not isinstance(wt, numbers.Real) or not (math.isfinite(wt) and wt >= 0):
            raise ValueError(f"{fn}: artifact_err_wt must be a finite number >= 0 (or None), got {wt!r}")
        self.artifact_err_wt = float(wt)
        self.resize_shape = _get(hp, "resize_shape")
        learn = _get(hp, "learn_ref_vec")
        if not isinstance(learn, (bool, np.bool_)):
            raise TypeError(f"{fn}: learn_ref_vec must be True or False, got {learn!r} ({type(learn).__name__})")
        self.learn_ref_vec = bool(learn)
        self.contrastive_kind = check_choice(
            _get(hp, "contrastive_kind", "raw"), ("raw", "normalized"), "contrastive_kind", fn
        )
        self.antialias = _get(hp, "antialias", True)
        if not isinstance(self.antialias, (bool, np.bool_)):
            raise TypeError(f"{fn}: antialias must be True or False, got {self.antialias!r}")
        self.antialias = bool(self.antialias)
        self.gradient_trick = _get(hp, "gradient_trick", "straight_through")
        if self.gradient_trick not in ("straight_through", "gumbel_softmax"):
            raise ValueError(
                f"{fn}: gradient_trick must be 'straight_through' or 'gumbel_softmax', got {self.gradient_trick!r}"
            )
        C, H, W = self.in_shape
        self.is_grayscale = C == 1
        if self.is_grayscale:
            self._view_size, self._crop, self.padding = (H, W), 1.0, "zeros"
        else:
            ratio = _get(hp, "input_crop_ratio")
            if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 < ratio <= 1.0:
                raise ValueError(f"{fn}: input_crop_ratio must be a number in (0, 1], got {ratio!r}")
            if (
                isinstance(self.resize_shape, bool)
                or not isinstance(self.resize_shape, numbers.Integral)
                or self.resize_shape < 1
            ):
                raise ValueError(f"{fn}: resize_shape must be a positive int, got {self.resize_shape!r}")
            self.resize_shape = int(self.resize_shape)
            # crop ceil(H·r) × ceil(W·r), resize short side to rs, centre-cut rs × rs:
            # a square window of side m = min(ceil(H·r), ceil(W·r)) input pixels.
            m = min(math.ceil(H * ratio), math.ceil(W * ratio))
            self._view_size, self._crop, self.padding = (self.resize_shape, self.resize_shape), (m / H, m / W), "border"
        # equiadapt's own transforms, as modules with its names (identity for grayscale inputs): for code
        # that calls them; the layer's views themselves are one resampling of the input (difference 3)
        identity = nn.Identity
        rs = self.resize_shape
        colour = not self.is_grayscale
        self.pad = EdgePad(math.ceil(W * 0.5)) if colour else identity()
        self.crop = CenterCrop((H, W)) if colour else identity()
        self.crop_canonization = CenterCrop((math.ceil(H * ratio), math.ceil(W * ratio))) if colour else identity()
        self.resize_canonization = Resize(rs) if colour else identity()
        self.crop_group_augment = CenterCrop(rs) if colour else identity()
        self.pad_group_augment = EdgePad(math.ceil(rs * 0.5)) if colour else identity()
        D = getattr(canonicalization_network, "out_vector_size", None) or getattr(
            canonicalization_network, "out_dim", None
        )
        if not isinstance(D, int):
            raise ValueError(f"{fn}: the network needs an int attribute out_vector_size (or out_dim)")
        self.out_vector_size = D
        self.reference_vector = nn.Parameter(torch.randn(1, D), requires_grad=self.learn_ref_vec)
        # equiadapt element e → canon element: clockwise turns are canon's (-e) mod N;
        # flip∘R(-θ_k) = R(θ_k)∘flip is canon's (k, r=1).
        N = self.num_rotations
        e2c = [(-e) % N for e in range(N)] + ([k + N for k in range(N)] if self.group.reflections else [])
        self.register_buffer("_e2c", torch.tensor(e2c, dtype=torch.int64), persistent=False)
        self.register_buffer("_c2e", torch.argsort(self._e2c), persistent=False)
        self.canonicalization_info_dict: dict[str, Any] = {}
        self._onehot: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        # the last call's tensors (and autograd graph) stay out of copy.deepcopy and torch.save(module)
        return {**super().__getstate__(), "canonicalization_info_dict": {}, "_onehot": None}

    def extra_repr(self) -> str:
        return (
            f"group={self.group.name} ({self.group_type}, N={self.num_rotations}), in_shape={self.in_shape}, "
            f"view={self._view_size}, beta={self.beta}"
        )

    # -- orbit and scores ---------------------------------------------------------
    def _views(self, x: torch.Tensor) -> torch.Tensor:
        """(B, G, C, h, w) in equiadapt's element order."""
        views = Fn.orbit(x, self.group, self._view_size, self._crop, self.padding, antialias=self.antialias)
        return views[:, self._e2c]

    def transformations_before_canonicalization_network_forward(self, x: torch.Tensor) -> torch.Tensor:
        """equiadapt's input of :meth:`group_augment`: ``x`` centre-cropped to ``ceil(H·input_crop_ratio)``
        and resized (short side ``resize_shape``, antialiased as torchvision's ``Resize``); unchanged for
        grayscale inputs. (The layer's own views skip it: one resampling of ``x``, difference 3.)"""
        return self.resize_canonization(self.crop_canonization(x))

    def _elements(self, degrees, reflect: bool) -> list[int]:
        """canon's element of each clockwise rotation by ``degrees`` (then the flip when ``reflect``):
        equiadapt's element ``k`` (or ``N + k``) in canon's order."""
        N, out = self.num_rotations, []
        if reflect and not self.group.reflections:
            raise ValueError(
                f"rotate_and_maybe_reflect: reflect=True needs group_type 'roto-reflection', got {self.group_type!r}"
            )
        for d in torch.as_tensor(degrees, dtype=torch.float64).reshape(-1).tolist():
            k = d * N / 360.0
            if not math.isfinite(k) or abs(k - round(k)) > 1e-6:
                raise ValueError(
                    f"rotate_and_maybe_reflect: degrees must be multiples of 360/{N} (the layer's group "
                    f"{self.group.name}), got {d}"
                )
            out.append(int(self._e2c[round(k) % N + (N if reflect else 0)]))
        return out

    def rotate_and_maybe_reflect(self, x: torch.Tensor, degrees, reflect: bool = False) -> list[torch.Tensor]:
        """``x`` turned clockwise by each of ``degrees`` (then flipped horizontally when ``reflect``), as
        equiadapt: one (B, C, h, w) tensor per angle, edge-replicated corners for colour inputs (zeros for
        grayscale), centre-cut to ``resize_shape`` for colour inputs. The angles must be elements of the
        layer's group (multiples of 360/num_rotations)."""
        out = [Fn.transform(x, e, self.group, self.padding) for e in self._elements(degrees, reflect)]
        return [self.crop_group_augment(t) for t in out]

    def group_augment(self, x: torch.Tensor) -> torch.Tensor:
        """Every rotation (and reflection) of ``x``, as equiadapt lays them out: (G·B, C, h, w), row
        ``g·B + b``. ``x`` is what :meth:`transformations_before_canonicalization_network_forward`
        returns, as in equiadapt (the layer's own views are one resampling of the raw input instead)."""
        degrees = torch.arange(self.num_rotations, dtype=torch.float64) * (360.0 / self.num_rotations)
        views = self.rotate_and_maybe_reflect(x, degrees)
        if self.group.reflections:
            views += self.rotate_and_maybe_reflect(x, degrees, reflect=True)
        return torch.cat(views, dim=0)

    def add_prior_regularizer(self, loss: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        """``loss + weight · get_prior_regularization_loss()``: the call equiadapt's README shows (its
        0.1.2 class lacks it)."""
        return loss + weight * self.get_prior_regularization_loss()

    def get_group_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every view's vector with the reference, (B, G)."""
        B = x.shape[0]
        views = self._views(x)  # (B, G, C, h, w)
        G = views.shape[1]
        flat = views.transpose(0, 1).flatten(0, 1)  # group-major, as equiadapt
        vector_out = self.canonicalization_network(flat)
        if not isinstance(vector_out, torch.Tensor) or vector_out.dim() != 2 or vector_out.shape[0] != G * B:
            got = (
                f"shape {tuple(vector_out.shape)}"
                if isinstance(vector_out, torch.Tensor)
                else f"a {type(vector_out).__name__}"
            )
            raise ValueError(
                f"OptimizedGroupEquivariantImageCanonicalization: canonicalization_network must return a (G·B, D) = "
                f"({G * B}, D) tensor, got {got}"
            )
        self.canonicalization_info_dict = {"vector_out": vector_out}
        if self.artifact_err_wt:
            k = torch.randint(0, self.num_rotations, (flat.shape[0],), device=flat.device)
            there = Fn.transform(flat, k, self.group, self.padding)
            back = Fn.transform(there, self.group.inverse_table.to(k.device)[k], self.group, self.padding)
            self.canonicalization_info_dict["vector_out_dummy"] = self.canonicalization_network(back)
        acts = F.cosine_similarity(self.reference_vector.expand(G * B, -1), vector_out, dim=1)
        return acts.reshape(G, B).T

    def groupactivations_to_groupelementonehot(self, group_activations: torch.Tensor) -> torch.Tensor:
        if self.gradient_trick == "gumbel_softmax":
            return F.gumbel_softmax(group_activations, tau=1, hard=True)
        hard = F.one_hot(group_activations.argmax(-1), self.num_group).to(group_activations.dtype)
        if self.training:
            soft = torch.softmax(self.beta * group_activations, dim=-1)
            return hard + (soft - soft.detach())
        return hard

    def groupactivations_to_groupelement(self, group_activations: torch.Tensor) -> dict:
        onehot = self.groupactivations_to_groupelementonehot(group_activations)
        N = self.num_rotations
        angles = torch.linspace(0.0, 360.0, N + 1, device=onehot.device, dtype=onehot.dtype)[:N]
        if self.group.reflections:
            angles = torch.cat([angles, angles])
        ged = {"rotation": (onehot * angles).sum(-1)}
        if self.group.reflections:
            refl = torch.cat([torch.zeros(N), torch.ones(N)]).to(onehot)
            ged["reflection"] = (onehot * refl).sum(-1)
        self._onehot = onehot
        return ged

    def get_groupelement(self, x: torch.Tensor) -> dict:
        acts = self.get_group_activations(x)
        ged = self.groupactivations_to_groupelement(acts)
        self.canonicalization_info_dict["group_element"] = ged
        self.canonicalization_info_dict["group_activations"] = acts
        return ged

    def _last(self, key: str, method: str):
        """An entry of the last canonicalization's info dict, or a clear error when there was none."""
        if key not in self.canonicalization_info_dict:
            raise RuntimeError(f"{method}: nothing canonicalized yet; call canonicalize(x) (or forward) first")
        return self.canonicalization_info_dict[key]

    def _selection(self, method: str = "_selection") -> Fn.Selection:
        """The last choice in canon's element order (gradient flows through the one-hot)."""
        acts = self._last("group_activations", method)[:, self._c2e]
        onehot = self._onehot[:, self._c2e]
        index = self._e2c[self._onehot.detach().argmax(-1)]
        return Fn.Selection(acts, torch.softmax(self.beta * acts, -1), index, onehot)

    # -- canonicalize / invert ----------------------------------------------------
    def canonicalize(self, x: torch.Tensor, targets: list | None = None, **kwargs):
        """Canonical images (B, C, H, W); with ``targets`` also the moved boxes/masks."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"OptimizedGroupEquivariantImageCanonicalization: expected (B, {', '.join(map(str, self.in_shape))}) "
                f"input, got {tuple(x.shape)}"
            )
        self.device = x.device
        self.get_groupelement(x)
        sel = self._selection("canonicalize")
        xc = Fn.canonicalize(x, sel, self.group, self.padding)
        if targets:
            H, W = x.shape[-2:]
            _check_targets(targets, x.shape[0], (H, W))
            for b, t in enumerate(targets):
                idx = sel.index[b : b + 1]
                if "boxes" in t:
                    t["boxes"] = transform_boxes(t["boxes"][None].float(), idx, self.group, (H, W))[0]
                if "masks" in t and t["masks"].numel():
                    m = t["masks"]
                    moved = Fn.transform(m[None].float(), idx, self.group, "zeros", "nearest")[0]
                    t["masks"] = moved.to(m.dtype)
            return xc, targets
        return xc

    def forward(self, x: torch.Tensor, targets: list | None = None, **kwargs):
        return self.canonicalize(x, targets, **kwargs)

    def invert_canonicalization(self, x_canonicalized_out: torch.Tensor, **kwargs) -> torch.Tensor:
        """Undo the last canonicalization on dense outputs (B, C, H', W').

        ``induced_rep_type``: ``"regular"`` (default, as equiadapt: channels grouped as
        (C/G, G), the group axis labelled as e2cnn's regular representation of
        ``Rot2dOnR2(N)`` / ``FlipRot2dOnR2(N)`` labels it) or ``"scalar"``. Regular
        features get e2cnn's ``GeometricTensor.transform`` by the inverse of the applied
        element: equiadapt's result on C_n; on D_n equiadapt's is not that action
        (docs/spec.md §6.6).
        """
        kind = kwargs.get("induced_rep_type", "regular")
        if kind == "vector":
            raise NotImplementedError("induced_rep_type='vector' is not implemented (as in equiadapt)")
        if kind not in ("regular", "scalar"):
            raise ValueError(f"invert_canonicalization: induced_rep_type must be 'regular' or 'scalar', got {kind!r}")
        y = x_canonicalized_out
        sel = self._selection("invert_canonicalization")
        if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.shape[0] != sel.index.shape[0]:
            got = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else f"a {type(y).__name__}"
            raise ValueError(
                f"invert_canonicalization: x_canonicalized_out must be (B, C, H, W) outputs of the last "
                f"canonicalization's B={sel.index.shape[0]} images, got {got}"
            )
        if kind == "scalar":
            return Fn.invert(y, sel, self.group, "scalar", "zeros")
        G = self.num_group
        if y.shape[1] % G:
            raise ValueError(
                f"invert_canonicalization: regular features need channels divisible by {G}, got {y.shape[1]}"
            )
        # The group axis of regular features is labelled as e2cnn/escnn label their regular
        # representation (element k: counter-clockwise by 360·k/N; k + N: that after the flip),
        # which is canon's order, not the clockwise order of group_activations: no relabelling.
        return Fn.invert(y, sel, self.group, "regular", "zeros")

    # -- losses and metrics -------------------------------------------------------
    def get_optimization_specific_loss(self) -> torch.Tensor:
        """Orbit orthogonality loss (equiadapt's raw dot products by default) plus the artifact term."""
        v = self._last("vector_out", "get_optimization_specific_loss")
        info = self.canonicalization_info_dict
        G = self.num_group
        vectors = v.reshape(G, -1, v.shape[-1]).transpose(0, 1)  # (B, G, D)
        loss = losses.contrastive_loss(vectors, self.contrastive_kind)
        if self.artifact_err_wt:
            loss = loss + self.artifact_err_wt * F.mse_loss(info["vector_out_dummy"], v)
        return loss

    def get_prior_regularization_loss(self) -> torch.Tensor:
        acts = self._last("group_activations", "get_prior_regularization_loss")
        return F.cross_entropy(acts, torch.zeros(acts.shape[0], dtype=torch.long, device=acts.device))

    def get_identity_metric(self) -> torch.Tensor:
        acts = self._last("group_activations", "get_identity_metric")
        return (acts.argmax(dim=-1) == 0).float().mean()
