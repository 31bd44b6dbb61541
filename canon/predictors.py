"""Predictors f for the training loop: small plain (non-equivariant) classifiers.

Both take (B, C, H, W) images of any size and return (B, num_classes) logits.

Example:
    >>> f = SmallCNN(1, 10)
    >>> f(torch.rand(4, 1, 28, 28)).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from canon.networks import ConvEncoder

__all__ = ["SmallCNN", "MLP", "PREDICTORS", "ENCODERS", "build_predictor", "build_encoder"]


class SmallCNN(nn.Module):
    """Three 3×3 convolution stages (two max-pools), adaptive 4×4 average pool, linear head.

    Args:
        in_channels: image channels C.
        num_classes: number of logits.
        width: channels of the first stage (the others use 2·width).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        if in_channels < 1 or num_classes < 1 or width < 1:
            raise ValueError(
                f"SmallCNN: in_channels, num_classes and width must be >= 1, got {in_channels}, {num_classes}, {width}"
            )
        w2 = 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, w2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, w2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * w2, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )
        self.in_channels, self.num_classes = in_channels, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[-2:]) < 4:
            raise ValueError(
                f"SmallCNN: expected (B, {self.in_channels}, H, W) input with H, W >= 4, got shape {tuple(x.shape)}"
            )
        return self.head(self.features(x))


class MLP(nn.Module):
    """Flatten, two hidden layers with ReLU, linear head (for a fixed image size)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 256):
        super().__init__()
        self.shape = (in_channels, *image_size)
        d = in_channels * image_size[0] * image_size[1]
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"MLP: expected (B, {', '.join(map(str, self.shape))}) input, got shape {tuple(x.shape)}")
        return self.net(x)


PREDICTORS = ("cnn", "mlp")
ENCODERS = ("conv", "torchvision:<name>", "timm:<name>")


def build_predictor(
    name: str, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 32
) -> nn.Module:
    """``"cnn"`` (:class:`SmallCNN`) or ``"mlp"`` (:class:`MLP`)."""
    if name == "cnn":
        return SmallCNN(in_channels, num_classes, width)
    if name == "mlp":
        return MLP(in_channels, num_classes, image_size, 8 * width)
    raise ValueError(f"unknown predictor {name!r}; choose one of {PREDICTORS}")


def build_encoder(
    name: str, in_channels: int, out_dim: int, width: int = 16, kernel_size: int = 5, input_size: int | None = None
) -> nn.Module:
    """The canonicalizer's encoder φ: ``"conv"`` (:class:`canon.networks.ConvEncoder`), or a classifier backbone
    ``"torchvision:<name>"`` / ``"timm:<name>"`` (:func:`canon.networks.backbone_encoder`: head removed, any
    ``in_channels``, probed at ``input_size``, randomly initialised).

    Raises:
        ValueError: an unknown name, or a backbone that cannot run at ``input_size``.
        ImportError: torchvision/timm is not installed (the message says which and how to install it).
    """
    if name == "conv":
        return ConvEncoder(in_channels, out_dim=out_dim, hidden=width, num_layers=3, kernel_size=kernel_size)
    source, _, model = name.partition(":")
    if source in ("torchvision", "timm") and model:
        from canon.networks import backbone_encoder

        return backbone_encoder(name, out_dim, in_channels=in_channels, input_size=input_size)
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")
