"""Encoders φ for the canonicalizer: a small non-equivariant CNN, and any classification backbone.

Backbones come from torchvision, timm or your own code.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvEncoder", "BackboneEncoder", "backbone_encoder", "torchvision_encoder"]


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

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 64,
        hidden: int = 32,
        num_layers: int = 3,
        kernel_size: int = 5,
        dropout: float = 0.0,
    ):
        super().__init__()
        if in_channels < 1 or out_dim < 1 or hidden < 1 or num_layers < 1:
            raise ValueError(
                "ConvEncoder: in_channels, out_dim, hidden and num_layers must be >= 1, "
                f"got {in_channels}, {out_dim}, {hidden}, {num_layers}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ConvEncoder: kernel_size must be odd and positive, got {kernel_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(num_layers):
            layers += [
                nn.Conv2d(c, hidden, kernel_size, stride=2 if i in (1, 2) else 1, padding=kernel_size // 2),
                nn.ReLU(inplace=True),
            ]
            c = hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, out_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.in_channels, self.out_dim = in_channels, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ConvEncoder: expected (M, {self.in_channels}, h, w) input, got shape {tuple(x.shape)}")
        return self.dropout(self.head(self.features(x).mean(dim=(-2, -1))))


class BackboneEncoder(nn.Module):
    """A classification backbone without its head, as an encoder (M, C, h, w) → (M, out_dim).

    ``adapter`` maps the ``in_channels`` of the images to the channels of the backbone's
    stem, ``backbone`` returns (M, feature_dim) features, ``proj`` (a Linear, or Identity
    when ``out_dim`` is the feature size) sets the vector size. Built by
    :func:`backbone_encoder`.

    Attributes:
        in_channels, out_dim, feature_dim, stem_channels: the sizes above.
        input_size: the (h, w) the backbone was probed with (fixed-size backbones such as
            ViT accept only this size: build the canonicalizer with ``size=input_size``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        adapter: nn.Module,
        proj: nn.Module,
        in_channels: int,
        stem_channels: int,
        feature_dim: int,
        out_dim: int,
        input_size,
    ):
        super().__init__()
        self.adapter, self.backbone, self.proj = adapter, backbone, proj
        self.in_channels, self.stem_channels, self.feature_dim, self.out_dim = (
            in_channels,
            stem_channels,
            feature_dim,
            out_dim,
        )
        self.input_size = tuple(input_size)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, stem_channels={self.stem_channels}, "
            f"feature_dim={self.feature_dim}, out_dim={self.out_dim}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"BackboneEncoder: expected (M, {self.in_channels}, h, w) input, got shape {tuple(x.shape)}"
            )
        return self.proj(_features(self.backbone(self.adapter(x))))


class _RepeatChannels(nn.Module):
    """Repeat the input channels to fill the stem (1 → 3: a grey image as RGB)."""

    def __init__(self, times: int):
        super().__init__()
        self.times = times

    def extra_repr(self) -> str:
        return f"times={self.times}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, self.times, 1, 1)


def _features(out) -> torch.Tensor:
    # Inception/GoogLeNet return (logits, aux) tuples in training mode: the first entry is the main output.
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"BackboneEncoder: the backbone without its head must return (M, D) features, got {shape}")
    return out


def _build(spec: str, kwargs: dict) -> nn.Module:
    """``"torchvision:NAME"``, ``"timm:NAME"`` or ``"NAME"`` (torchvision first, then timm).

    Built without downloads unless asked.
    """
    fn = "canon.networks.backbone_encoder"
    source, _, name = spec.rpartition(":")
    if source not in ("", "torchvision", "timm"):
        raise ValueError(f"{fn}: model must be 'torchvision:NAME', 'timm:NAME' or 'NAME', got {spec!r}")
    errors = []
    if source in ("", "torchvision"):
        try:
            import torchvision
        except Exception as e:
            errors.append(f"torchvision did not import ({type(e).__name__}: {e})")
        else:
            if name in torchvision.models.list_models():
                return torchvision.models.get_model(name, **{"weights": None, **kwargs})
            errors.append(f"torchvision has no model {name!r}")
    if source in ("", "timm"):
        try:
            import timm
        except Exception as e:
            errors.append(f"timm did not import ({type(e).__name__}: {e})")
        else:
            if timm.is_model(name):
                return timm.create_model(name, **{"pretrained": False, **kwargs})
            errors.append(f"timm has no model {name!r}")
    raise ImportError(f"{fn}: cannot build {spec!r}: " + "; ".join(errors) + f"; {_INSTALL_HINT}")


# What works: each torchvision wheel imports beside the one torch release (and build) it was made with; a bare
# `pip install torchvision` (or timm, which requires it) replaces a CPU torch with the newest CUDA build, and
# PyPI's torchvision does not import beside a CPU-only torch wheel ("operator torchvision::nms does not exist").
_INSTALL_HINT = (
    "torchvision (which timm needs too) must be the release made for the very torch build installed: install them "
    "as a pair from the same index, e.g. `pip install torch==2.14.1 torchvision==0.29.1` (PyPI's CUDA builds, "
    "several GB; a bare `pip install torchvision` also swaps your torch for the newest CUDA build), or pass any "
    "nn.Module as the encoder (canon.networks.ConvEncoder needs nothing more)"
)


def _default_input_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(model, "image_size", None)  # torchvision's VisionTransformer
    if isinstance(size, int):
        return size, size
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)  # timm
    if isinstance(cfg, dict) and len(cfg.get("input_size", ())) == 3:
        return tuple(cfg["input_size"][1:])
    return 224, 224


def _probe(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, nn.Module]], list[nn.Conv2d], torch.Tensor]:
    """One forward of ``x`` recording, in call order, the Linear and Conv2d modules that ran."""
    names = {m: n for n, m in model.named_modules()}
    linears: list[tuple[str, nn.Module]] = []
    convs: list[nn.Conv2d] = []

    def hook(module, args, output):
        if isinstance(module, nn.Linear):
            linears.append((names[module], module))
        else:
            convs.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return linears, convs, out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def backbone_encoder(
    model: nn.Module | str,
    out_dim: int | None = None,
    in_channels: int = 3,
    adapter: str = "auto",
    input_size: int | tuple[int, int] | None = None,
    **model_kwargs,
) -> BackboneEncoder:
    """An encoder φ from any classification model: its head removed, any input channel count, ``out_dim`` vectors.

    The head is found generically: timm models drop theirs with ``reset_classifier(0)``;
    for any other model one forward of a dummy input (in eval mode, without gradients)
    records the ``nn.Linear`` layers in the order they run, and the last one, the
    classifier, becomes ``nn.Identity``. Everything before it stays: pooling and
    normalisation of ConvNeXt, ViT and Swin heads, and the hidden classifier layers of
    VGG and MobileNetV3 (their pretrained features). A second dummy forward gives the
    feature size. This covers torchvision's ResNet, ConvNeXt, ViT, Swin, MobileNetV2/V3,
    EfficientNet, VGG, RegNet, DenseNet, ... and timm's families. A model without a
    Linear head (e.g. SqueezeNet's convolutional classifier) is refused with a
    ValueError: pass a module that returns (M, D) features.

    Channels: ``in_channels`` may differ from the stem's (the first convolution to run):
    ``adapter="repeat"`` repeats the channels (1 → 3: a grey image given to an RGB
    network, equal to summing the stem's kernels over colours, so pretrained weights
    keep their meaning); ``"conv"`` puts a learnable 1×1 convolution in front,
    initialised to the channel mean; ``"auto"`` (default) picks ``repeat`` when the
    stem's channels are a multiple of ``in_channels``, else ``conv``.

    Args:
        model: an ``nn.Module``, or a name: ``"torchvision:resnet18"``,
            ``"timm:convnext_atto"`` or ``"resnet18"`` (torchvision first, then timm).
            Names build randomly initialised models (torchvision ``weights=None``, timm
            ``pretrained=False``) unless ``model_kwargs`` ask otherwise; pretrained
            weights must already be in the local cache.
        out_dim: vector size D (a Linear from the features); None keeps the feature size.
        in_channels: channels C of the images the canonicalizer feeds.
        adapter: ``"auto"``, ``"repeat"`` or ``"conv"``.
        input_size: (h, w) of the probing forward; default: the model's declared size
            (torchvision ViT ``image_size``, timm ``pretrained_cfg``) or 224.
        **model_kwargs: passed to the torchvision/timm constructor.

    Returns:
        a :class:`BackboneEncoder` with ``out_dim`` set (what :class:`canon.OrbitCanonicalizer` reads).

    Example:
        >>> backbone = nn.Sequential(
        ...     nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...     nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10),
        ... )
        >>> enc = backbone_encoder(backbone, out_dim=32, in_channels=1, input_size=16)
        >>> enc.feature_dim, enc.out_dim, enc(torch.rand(4, 1, 20, 20)).shape
        (16, 32, torch.Size([4, 32]))
    """
    fn = "canon.networks.backbone_encoder"
    if isinstance(model, str):
        model = _build(model, model_kwargs)
    elif model_kwargs:
        raise TypeError(f"{fn}: constructor arguments {sorted(model_kwargs)} need a model name, got an nn.Module")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be an nn.Module or a model name, got {type(model).__name__}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{fn}: in_channels must be an int >= 1, got {in_channels!r}")
    if out_dim is not None and (isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1):
        raise ValueError(f"{fn}: out_dim must be an int >= 1 or None, got {out_dim!r}")
    if adapter not in ("auto", "repeat", "conv"):
        raise ValueError(f"{fn}: adapter must be one of ('auto', 'repeat', 'conv'), got {adapter!r}")
    if input_size is None:
        input_size = _default_input_size(model)
    elif isinstance(input_size, int):
        input_size = (input_size, input_size)
    h, w = (int(s) for s in input_size)

    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    stem, feature_dim = _remove_head(model, h, w, device, dtype, fn)
    adapt = _channel_adapter(in_channels, stem, adapter, fn).to(device=device, dtype=dtype)
    proj: nn.Module = (
        nn.Identity() if out_dim is None else nn.Linear(feature_dim, out_dim).to(device=device, dtype=dtype)
    )
    return BackboneEncoder(model, adapt, proj, in_channels, stem, feature_dim, out_dim or feature_dim, (h, w))


def _remove_head(model: nn.Module, h: int, w: int, device, dtype, fn: str) -> tuple[int, int]:
    """Replace ``model``'s classification head by the identity, in place; (stem channels, feature size).

    A forward of a dummy (2, stem, h, w) input in eval mode (batch-norm statistics untouched)
    finds the head (the last ``nn.Linear`` to run, or timm's ``reset_classifier``), the first
    convolution that runs, and the feature size.
    """
    was_training = model.training
    model.eval()
    try:
        # the stem's channels: a first guess from the first convolution registered (else 3, RGB),
        # then the first convolution that actually runs
        stem = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
        dummy = torch.zeros(2, stem, h, w, device=device, dtype=dtype)
        try:
            if hasattr(model, "reset_classifier") and hasattr(model, "num_features"):  # timm
                model.reset_classifier(0)
                _, convs, _ = _probe(model, dummy)
            else:
                linears, convs, _ = _probe(model, dummy)
                if not linears:
                    raise ValueError(
                        f"{fn}: found no nn.Linear classification head in {type(model).__name__}; "
                        "pass a module that returns (M, D) features"
                    )
                _replace(model, linears[-1][0], nn.Identity())
            with torch.no_grad():
                feats = _features(model(dummy))
        except (RuntimeError, TypeError, AssertionError) as e:
            raise ValueError(
                f"{fn}: a forward of a dummy input of shape {tuple(dummy.shape)} through {type(model).__name__} failed "
                f"({type(e).__name__}: {e}); pass input_size=(h, w) that the model accepts"
            ) from e
        if convs and convs[0].in_channels != stem:
            raise ValueError(
                f"{fn}: the first convolution to run takes {convs[0].in_channels} channels, the first registered "
                f"{stem}; pass a model whose stem runs first"
            )
    finally:
        model.train(was_training)
    return stem, feats.shape[1]


def _channel_adapter(in_channels: int, stem: int, adapter: str, fn: str) -> nn.Module:
    """``in_channels`` → the stem's channels: identity, repeated channels, or a 1×1 convolution (channel mean)."""
    if in_channels == stem:
        return nn.Identity()
    if adapter == "repeat" or (adapter == "auto" and stem % in_channels == 0):
        if stem % in_channels:
            raise ValueError(
                f"{fn}: adapter='repeat' needs the stem's {stem} channels to be a multiple of "
                f"in_channels={in_channels}; use adapter='conv'"
            )
        return _RepeatChannels(stem // in_channels)
    adapt = nn.Conv2d(in_channels, stem, 1, bias=False)
    nn.init.constant_(adapt.weight, 1.0 / in_channels)
    return adapt


def torchvision_encoder(
    name: str = "resnet18", out_dim: int | None = None, weights=None, in_channels: int = 3
) -> BackboneEncoder:
    """A torchvision classifier as encoder: :func:`backbone_encoder` of ``"torchvision:<name>"``.

    Needs torchvision (optional): raises ImportError with a hint when it is missing.
    Pretrained ``weights`` (e.g. ``"DEFAULT"``) must already be in the local cache.
    """
    return backbone_encoder(f"torchvision:{name}", out_dim=out_dim, in_channels=in_channels, weights=weights)
