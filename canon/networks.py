"""Encoders φ for the canonicalizer: a small non-equivariant CNN, and torchvision backbones when available."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvEncoder", "torchvision_encoder"]


class ConvEncoder(nn.Module):
    """A small plain CNN mapping (M, C, h, w) images to (M, out_dim) vectors.

    Convolutions with ReLU, two stride-2 stages, global average pooling and a linear
    head. Dropout (if any) is element-wise on the vectors; it never drops whole orbit
    copies (unlike ``Dropout1d`` on a 2-D tensor).

    Args:
        in_channels: image channels C.
        out_dim: vector size D.
        hidden: channels of the convolutions.
        num_layers: convolutions (at least 1; the 2nd and 3rd have stride 2).
        kernel_size: odd kernel size.
        dropout: element-wise dropout probability on the vectors.

    Example:
        >>> enc = ConvEncoder(3, out_dim=32)
        >>> enc(torch.rand(5, 3, 28, 28)).shape
        torch.Size([5, 32])
    """

    def __init__(self, in_channels: int = 1, out_dim: int = 64, hidden: int = 32, num_layers: int = 3, kernel_size: int = 5, dropout: float = 0.0):
        super().__init__()
        if in_channels < 1 or out_dim < 1 or hidden < 1 or num_layers < 1:
            raise ValueError(f"ConvEncoder: in_channels, out_dim, hidden and num_layers must be >= 1, got {in_channels}, {out_dim}, {hidden}, {num_layers}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ConvEncoder: kernel_size must be odd and positive, got {kernel_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(num_layers):
            layers += [nn.Conv2d(c, hidden, kernel_size, stride=2 if i in (1, 2) else 1, padding=kernel_size // 2), nn.ReLU(inplace=True)]
            c = hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, out_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.in_channels, self.out_dim = in_channels, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvEncoder: expected (M, {self.in_channels}, h, w) input, got shape {tuple(x.shape)}")
        return self.dropout(self.head(self.features(x).mean(dim=(-2, -1))))


def torchvision_encoder(name: str = "resnet18", out_dim: int | None = None, weights=None) -> nn.Module:
    """A torchvision backbone as encoder (its classifier replaced by a linear map to ``out_dim``).

    Needs torchvision, which is optional: raises ImportError with a hint when it is missing.
    Pretrained ``weights`` must already be in the local cache (nothing is downloaded here
    unless torchvision does so itself).
    """
    try:
        import torchvision
    except Exception as e:  # pragma: no cover - depends on the environment
        raise ImportError("canon.networks.torchvision_encoder needs torchvision, which did not import: " + str(e)) from e
    model = getattr(torchvision.models, name)(weights=weights)
    head_name = "fc" if hasattr(model, "fc") else "classifier"
    head = getattr(model, head_name)
    in_features = head.in_features if isinstance(head, nn.Linear) else head[-1].in_features
    dim = out_dim or in_features
    setattr(model, head_name, nn.Linear(in_features, dim))
    model.out_dim = dim
    return model
