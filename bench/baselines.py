"""Baselines the benchmarks compare against: equiadapt itself, and a faithful loop of its operations.

``EquiadaptLoop`` reproduces, with plain torch ops, the sequence of tensor operations of
equiadapt 0.1.2's ``OptimizedGroupEquivariantImageCanonicalization`` (its optimized
discrete-group image canonicalizer), so the comparison runs where equiadapt, kornia or
torchvision do not import:

* scoring view: centre crop to ``ceil(H·r) × ceil(W·r)`` → resize (short side to
  ``resize_shape``, bilinear, antialiased, as torchvision's tensor ``Resize``);
* orbit (``group_augment``): a Python loop over the group elements, each one
  edge-pad by ``ceil(resize_shape/2)`` → rotate by ``-θ_k`` (kornia ``rotate``) →
  (flip, for roto-reflections) → centre crop to ``resize_shape²``; ``torch.cat`` of the
  results in group-major layout (row ``g·B + b``);
* scores: ``cosine_similarity`` of every vector with the reference vector repeated
  ``G·B`` times, reshaped ``(G, B)`` and transposed;
* choice: one-hot of the argmax plus the straight-through softmax, turned into a
  differentiable rotation angle (degrees) and reflection flag;
* canonical image: edge-pad by ``ceil(W/2)`` → reflection blend → rotate by ``-angle``
  (one matrix per sample, differentiable in the angle: that is equiadapt's
  straight-through path) → centre crop;
* losses: equiadapt's raw-dot-product orthogonality loss and its prior cross-entropy;
* invert ("scalar"): rotate by ``+angle`` and its reflection blend.

Grayscale inputs (C = 1) skip every crop, resize and pad, as equiadapt does.

``rotate`` below re-implements the documented semantics of ``kornia.geometry.rotate``
(counter-clockwise angle in degrees about ``((W−1)/2, (H−1)/2)``; the pixel-space
rotation matrix is normalized to ``[-1, 1]`` coordinates with pixel centres at the
ends (align_corners semantics), inverted, and sampled with ``F.affine_grid`` +
``F.grid_sample``, bilinear, zero padding, ``align_corners=True``). It was written from
that description; no code of kornia, torchvision or equiadapt is copied here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "rotate",
    "hflip",
    "pad_edge",
    "center_crop",
    "resize_short_side",
    "EquiadaptLoop",
    "equiadapt_status",
    "load_equiadapt",
    "equiadapt_canonicalizer",
    "EQUIADAPT_PRIOR_WEIGHT",
    "EQUIADAPT_CONTRAST_WEIGHT",
]

# equiadapt's example configuration (examples/images/classification/configs/experiment/default.yaml):
# prior_weight 100, and the group_contrast_weight its comment gives for the optimized canonicalizer
EQUIADAPT_PRIOR_WEIGHT, EQUIADAPT_CONTRAST_WEIGHT = 100.0, 1e-4


# -- kornia / torchvision semantics with torch ops ------------------------------------------


def _pixel_to_normalized(h: int, w: int, device, dtype) -> torch.Tensor:
    """3×3 map from pixel coordinates (0..W-1, 0..H-1) to [-1, 1] (pixel centres at ±1)."""
    sx = 2.0 / (w - 1) if w > 1 else 2.0
    sy = 2.0 / (h - 1) if h > 1 else 2.0
    return torch.tensor([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]], device=device, dtype=dtype)


def _rotation_matrix(angle: torch.Tensor, cx: float, cy: float) -> torch.Tensor:
    """(B, 3, 3) pixel-space map source → destination: translate by −c, rotate by ``angle`` (degrees, CCW on
    screen), translate back."""
    B = angle.shape[0]
    rad = angle * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([cos, sin, zero, -sin, cos, zero, zero, zero, one], -1).reshape(B, 3, 3)
    to_origin = torch.eye(3, device=angle.device, dtype=angle.dtype).repeat(B, 1, 1)
    to_origin[:, 0, 2], to_origin[:, 1, 2] = -cx, -cy
    back = torch.eye(3, device=angle.device, dtype=angle.dtype).repeat(B, 1, 1)
    back[:, 0, 2], back[:, 1, 2] = cx, cy
    return back @ rot @ to_origin


def _inv_no_sync(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv_ex(m)[0]


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``kornia.geometry.rotate(x, angle)`` with its defaults, in torch ops.

    Args:
        x: (B, C, H, W).
        angle: degrees, counter-clockwise on screen; a 0-d tensor (expanded to the batch)
            or (B,). Differentiable.

    Returns:
        (B, C, H, W): bilinear, zeros outside, ``align_corners=True``.
    """
    B, C, H, W = x.shape
    angle = angle.to(torch.float32) if angle.dtype not in (torch.float32, torch.float64) else angle
    angle = angle.expand(B)
    dst_from_src = _rotation_matrix(angle, (W - 1) / 2.0, (H - 1) / 2.0)
    norm = _pixel_to_normalized(H, W, x.device, dst_from_src.dtype)
    # torch.linalg.inv checks for singular input, which synchronizes a GPU and breaks CUDA-graph
    # capture; while capturing, the same inverse without the check (inv_ex) is used instead.
    inv = _inv_no_sync if x.is_cuda and torch.cuda.is_current_stream_capturing() else torch.linalg.inv
    dst_norm_from_src_norm = norm @ dst_from_src @ inv(norm)
    src_norm_from_dst_norm = inv(dst_norm_from_src_norm)
    grid = F.affine_grid(src_norm_from_dst_norm[:, :2, :], [B, C, H, W], align_corners=True)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def pad_edge(x: torch.Tensor, p: int) -> torch.Tensor:
    """torchvision ``Pad(p, padding_mode="edge")`` on a tensor: replicate ``p`` pixels on all four sides."""
    return F.pad(x, [p, p, p, p], mode="replicate")


def center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """torchvision ``CenterCrop((h, w))`` for a crop no larger than the image (a slice, no copy)."""
    H, W = x.shape[-2:]
    top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
    return x[..., top : top + h, left : left + w]


def resize_short_side(x: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """torchvision ``Resize(size)`` (int) on a tensor: short side to ``size``, aspect kept, bilinear."""
    H, W = x.shape[-2:]
    short, long = (H, W) if H <= W else (W, H)
    new_short, new_long = size, int(size * long / short)
    oh, ow = (new_short, new_long) if H <= W else (new_long, new_short)
    if (oh, ow) == (H, W):
        return x
    return F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False, antialias=antialias)


# -- equiadapt's optimized canonicalizer, operation for operation ---------------------------


class EquiadaptLoop(nn.Module):
    """equiadapt 0.1.2's optimized discrete-group image canonicalizer as a torch-only loop.

    Args:
        network: φ, (M, C, h, w) → (M, D).
        out_dim: D.
        in_shape: (C, H, W) of the inputs.
        num_rotations: N.
        group_type: ``"rotation"`` (C_N) or ``"roto-reflection"`` (D_N).
        input_crop_ratio, resize_shape: the scoring view of colour inputs.
        beta: softmax inverse temperature of the straight-through estimator.
        seed: seed of the reference vector (a frozen parameter, as ``learn_ref_vec=False``).

    Example:
        >>> from canon.networks import ConvEncoder
        >>> loop = EquiadaptLoop(ConvEncoder(3, out_dim=8), 8, (3, 32, 32), 4, resize_shape=24)
        >>> loop.group_augment(loop.scoring_view(torch.rand(2, 3, 32, 32))).shape
        torch.Size([8, 3, 24, 24])
    """

    def __init__(
        self,
        network: nn.Module,
        out_dim: int,
        in_shape: tuple[int, int, int],
        num_rotations: int,
        group_type: str = "rotation",
        input_crop_ratio: float = 0.8,
        resize_shape: int = 96,
        beta: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if group_type not in ("rotation", "roto-reflection"):
            raise ValueError(f"EquiadaptLoop: group_type must be 'rotation' or 'roto-reflection', got {group_type!r}")
        self.network = network
        self.in_shape = tuple(in_shape)
        self.num_rotations = N = int(num_rotations)
        self.group_type = group_type
        self.num_group = N if group_type == "rotation" else 2 * N
        self.beta = float(beta)
        C, H, W = self.in_shape
        self.grayscale = C == 1
        self.input_crop = (math.ceil(H * input_crop_ratio), math.ceil(W * input_crop_ratio))
        self.resize_shape = int(resize_shape)
        self.pad_full = math.ceil(W * 0.5)
        self.pad_view = math.ceil(self.resize_shape * 0.5)
        ref = torch.randn(1, out_dim, generator=torch.Generator().manual_seed(seed))
        self.reference_vector = nn.Parameter(ref, requires_grad=False)
        self.info: dict = {}

    # scoring view: crop → resize (colour only)
    def scoring_view(self, x: torch.Tensor) -> torch.Tensor:
        if self.grayscale:
            return x
        return resize_short_side(center_crop(x, *self.input_crop), self.resize_shape)

    def _rotate_and_maybe_reflect(self, x: torch.Tensor, degrees: torch.Tensor, reflect: bool) -> list[torch.Tensor]:
        out = []
        for degree in degrees:  # the per-element Python loop
            xr = x if self.grayscale else pad_edge(x, self.pad_view)
            xr = rotate(xr, -degree)
            if reflect:
                xr = hflip(xr)
            if not self.grayscale:
                xr = center_crop(xr, self.resize_shape, self.resize_shape)
            out.append(xr)
        return out

    def group_augment(self, x: torch.Tensor) -> torch.Tensor:
        """(G·B, C, h, w), row ``g·B + b``; element ``k`` turns clockwise by ``360·k/N`` degrees."""
        N = self.num_rotations
        degrees = torch.linspace(0, 360, N + 1, device=x.device)[:-1]
        views = self._rotate_and_maybe_reflect(x, degrees, False)
        if self.group_type == "roto-reflection":
            views += self._rotate_and_maybe_reflect(x, degrees, True)
        return torch.cat(views, dim=0)

    def activations(self, vector_out: torch.Tensor) -> torch.Tensor:
        """(B, G) cosine of every group-major vector (G·B, D) with the reference."""
        GB = vector_out.shape[0]
        ref = self.reference_vector.to(vector_out.dtype)
        scalar_out = F.cosine_similarity(ref.repeat(GB, 1), vector_out)
        return scalar_out.reshape(self.num_group, -1).T

    def get_group_activations(self, x: torch.Tensor) -> torch.Tensor:
        x_augmented = self.group_augment(self.scoring_view(x))
        vector_out = self.network(x_augmented)
        self.info = {"vector_out": vector_out}
        return self.activations(vector_out)

    def group_element(self, acts: torch.Tensor) -> dict:
        """One-hot (straight-through in training) → ``{"rotation": degrees (B,), "reflection": (B,)}``."""
        one_hot = F.one_hot(torch.argmax(acts, dim=-1), self.num_group).float()
        if self.training:
            soft = F.softmax(self.beta * acts, dim=-1)
            one_hot = one_hot + soft - soft.detach()
        N = self.num_rotations
        angles = torch.linspace(0.0, 360.0, N + 1)[:N].to(acts.device)
        rot = torch.cat([angles, angles]) if self.group_type == "roto-reflection" else angles
        ged = {"rotation": torch.sum(one_hot * rot, dim=-1)}
        if self.group_type == "roto-reflection":
            refl = torch.cat([torch.zeros(N), torch.ones(N)]).to(acts.device)
            ged["reflection"] = torch.sum(one_hot * refl, dim=-1)
        self.info["group_element"] = ged
        self.info["group_activations"] = acts
        return ged

    def apply_group_element(self, x: torch.Tensor, ged: dict) -> torch.Tensor:
        """The canonical image for a chosen element: pad → reflection blend → rotate(−angle) → crop."""
        H, W = x.shape[-2:]
        if not self.grayscale:
            x = pad_edge(x, self.pad_full)
        if "reflection" in ged:
            r = ged["reflection"][:, None, None, None]
            x = (1 - r) * x + r * hflip(x)
        x = rotate(x, -ged["rotation"])
        if not self.grayscale:
            x = center_crop(x, H, W)
        return x

    def canonicalize(self, x: torch.Tensor) -> torch.Tensor:
        ged = self.group_element(self.get_group_activations(x))
        return self.apply_group_element(x, ged)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.canonicalize(x)

    def invert_scalar(self, y: torch.Tensor, ged: dict) -> torch.Tensor:
        """equiadapt's "scalar" inverse: rotate by +angle, then its reflection blend (as written there)."""
        y = rotate(y, ged["rotation"])
        if "reflection" in ged:
            r = ged["reflection"][:, None, None, None]
            y = y * r + hflip(y) * (1 - r)
        return y

    def get_optimization_specific_loss(self) -> torch.Tensor:
        v = self.info["vector_out"]
        G = self.num_group
        v = v.reshape(G, -1, v.shape[-1]).permute(1, 0, 2)
        distances = v @ v.permute(0, 2, 1)
        mask = 1.0 - torch.eye(G, device=v.device, dtype=v.dtype)
        return torch.abs(distances * mask).mean()

    def get_prior_regularization_loss(self) -> torch.Tensor:
        acts = self.info["group_activations"]
        return nn.CrossEntropyLoss()(acts, torch.zeros(acts.shape[0], dtype=torch.long, device=acts.device))


# -- equiadapt itself, where it imports -------------------------------------------------------


def equiadapt_status() -> tuple[bool, str]:
    """(importable, note). equiadapt needs torchvision, kornia, e2cnn and omegaconf."""
    try:
        load_equiadapt()
    except Exception as e:  # any import failure means "unavailable", reported as such
        return False, f"equiadapt does not import here: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return True, ""


def load_equiadapt():
    """(OptimizedGroupEquivariantImageCanonicalization, OmegaConf) or an ImportError."""
    from equiadapt.images.canonicalization.discrete_group import OptimizedGroupEquivariantImageCanonicalization
    from omegaconf import OmegaConf

    return OptimizedGroupEquivariantImageCanonicalization, OmegaConf


def equiadapt_canonicalizer(
    network: nn.Module,
    out_dim: int,
    in_shape: tuple[int, int, int],
    num_rotations: int,
    group_type: str = "rotation",
    input_crop_ratio: float = 0.8,
    resize_shape: int = 96,
    beta: float = 1.0,
):
    """equiadapt's own optimized canonicalizer around ``network``, configured as :class:`EquiadaptLoop`
    with the same arguments (fixed reference vector, no artifact term); ImportError where it does not import."""
    cls, OmegaConf = load_equiadapt()
    network.out_vector_size = out_dim
    hp = dict(beta=beta, input_crop_ratio=input_crop_ratio, resize_shape=resize_shape, group_type=group_type)
    hp.update(num_rotations=num_rotations, artifact_err_wt=0, learn_ref_vec=False)
    return cls(network, OmegaConf.create(hp), tuple(in_shape))
