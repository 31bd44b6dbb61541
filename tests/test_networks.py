"""canon.networks.backbone_encoder: the head found generically, any input channel count, out_dim set.

The families of torchvision and timm run where those packages import (they do not in the
CI environment: PyPI's torchvision needs its own torch build); small stand-ins with the
same head layouts run everywhere.
"""

import doctest

import pytest
import torch
from conftest import assert_close
from torch import nn

import canon
import canon.networks
from canon.networks import BackboneEncoder, backbone_encoder, torchvision_encoder


def _import(name):
    try:
        return __import__(name), ""
    except Exception as e:  # an ImportError, or a binary mismatch with this torch
        return None, f"{name} does not import here ({type(e).__name__}: {e})"


torchvision, TV_REASON = _import("torchvision")
timm, TIMM_REASON = _import("timm")


class VGGLike(nn.Module):
    """Multi-layer classifier (Linear, ReLU, Dropout, Linear) after pooling: the hidden layer stays."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 24), nn.ReLU(), nn.Dropout(0.5), nn.Linear(24, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class ViTLike(nn.Module):
    """Head registered before the blocks (and Linear layers inside the blocks): call order decides."""

    def __init__(self, size=8):
        super().__init__()
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(12, 7))
        self.size = size
        self.patch = nn.Conv2d(3, 12, 4, stride=4)
        self.mlp = nn.Sequential(nn.Linear(12, 12), nn.GELU(), nn.Linear(12, 12))
        self.norm = nn.LayerNorm(12)

    def forward(self, x):
        assert x.shape[-2:] == (self.size, self.size), "fixed input size"
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = t + self.mlp(t)
        return self.heads(self.norm(t[:, 0]))


class TupleInTraining(nn.Module):
    """Returns (logits, aux) in training mode, as Inception/GoogLeNet do."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 4)
        self.aux = nn.Linear(6, 4)

    def forward(self, x):
        f = self.stem(x).mean((-2, -1))
        return (self.fc(f), self.aux(f)) if self.training else self.fc(f)


def test_multi_layer_classifier_keeps_its_hidden_layer():
    model = VGGLike().train()
    enc = backbone_encoder(model, out_dim=5, input_size=8)
    assert isinstance(enc, BackboneEncoder) and enc.backbone is model
    assert (enc.feature_dim, enc.out_dim, enc.stem_channels) == (24, 5, 3)
    assert isinstance(model.classifier[4], nn.Identity) and isinstance(model.classifier[1], nn.Linear)
    assert model.training, "the model's mode is restored after probing"
    assert model.features[1].num_batches_tracked.item() == 0, "probing must not update batch-norm statistics"
    assert enc(torch.rand(3, 3, 16, 16)).shape == (3, 5)


def test_head_is_the_last_linear_to_run_not_the_last_registered():
    enc = backbone_encoder(ViTLike(8), out_dim=None, input_size=8)
    assert isinstance(enc.backbone.heads.head, nn.Identity)
    assert isinstance(enc.backbone.mlp[2], nn.Linear)
    assert enc.feature_dim == enc.out_dim == 12 and isinstance(enc.proj, nn.Identity)
    assert enc.input_size == (8, 8)


def test_tuple_outputs_in_training_use_the_main_output():
    enc = backbone_encoder(TupleInTraining(), out_dim=3, input_size=10).train()
    assert enc.feature_dim == 6 and enc(torch.rand(2, 3, 10, 10)).shape == (2, 3)


def test_one_channel_images_repeat_into_an_rgb_stem():
    enc = backbone_encoder(VGGLike(), out_dim=4, in_channels=1, input_size=8).eval()
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(enc(x), enc.proj(enc.backbone(x.repeat(1, 3, 1, 1))))
        # repeating the grey channel is summing the stem's kernels over colours
        stem = enc.backbone.features[0]
        summed = nn.functional.conv2d(x, stem.weight.sum(1, keepdim=True), stem.bias, padding=1)
        assert_close(summed, stem(x.repeat(1, 3, 1, 1)), case="conv_channel_sum")


def test_other_channel_counts_get_a_1x1_conv_adapter_at_the_channel_mean():
    enc = backbone_encoder(VGGLike(), out_dim=4, in_channels=2, input_size=8).eval()
    assert isinstance(enc.adapter, nn.Conv2d) and enc.adapter.weight.shape == (3, 2, 1, 1)
    x = torch.rand(2, 2, 12, 12)
    with torch.no_grad():
        assert_close(enc.adapter(x), x.mean(1, keepdim=True).expand(2, 3, 12, 12))
    assert any(p is enc.adapter.weight for p in enc.parameters()), "the adapter is trained with the encoder"
    with pytest.raises(ValueError, match="multiple of in_channels"):
        backbone_encoder(VGGLike(), in_channels=2, adapter="repeat", input_size=8)


def test_the_encoder_drives_a_canonicalizer():
    enc = backbone_encoder(VGGLike(), out_dim=8, in_channels=1, input_size=8)
    can = canon.OrbitCanonicalizer(enc, "C4").eval()
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(can(torch.rot90(x, 1, dims=(-2, -1))), can(x))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no nn.Linear classification head"):
        backbone_encoder(nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), input_size=4)
    with pytest.raises(ValueError, match="pass input_size"):
        backbone_encoder(ViTLike(8), input_size=12)
    with pytest.raises(ValueError, match="adapter must be"):
        backbone_encoder(VGGLike(), adapter="sum")
    with pytest.raises(ValueError, match="in_channels must be an int >= 1"):
        backbone_encoder(VGGLike(), in_channels=0)
    with pytest.raises(TypeError, match="need a model name"):
        backbone_encoder(VGGLike(), weights=None)
    with pytest.raises(ValueError, match="'torchvision:NAME'"):
        backbone_encoder("keras:resnet50")
    with pytest.raises(ImportError, match="cannot build 'no_such_model_xyz'"):
        backbone_encoder("no_such_model_xyz")
    enc = backbone_encoder(VGGLike(), input_size=8)
    with pytest.raises(ValueError, match=r"expected \(M, 3, h, w\)"):
        enc(torch.rand(2, 1, 8, 8))


# ----------------------------------------------------------------------------- torchvision and timm
# (name, probing size, feature size): small sizes keep the CPU time down; ViT and timm's Swin and VGG need 224
TORCHVISION = [
    ("resnet18", 64, 512),
    ("convnext_tiny", 64, 768),
    ("vit_b_16", None, 768),
    ("swin_t", 64, 768),
    ("mobilenet_v2", 64, 1280),
    ("mobilenet_v3_small", 64, 1024),
    ("efficientnet_b0", 64, 1280),
    ("vgg11", 64, 4096),
    ("regnet_y_400mf", 64, 440),
    ("googlenet", 64, 1024),
]
TIMM = [
    ("resnet18", 64, 512),
    ("convnext_atto", 64, 320),
    ("vit_tiny_patch16_224", None, 192),
    ("swin_tiny_patch4_window7_224", None, 768),
    ("mobilenetv2_050", 64, 1280),
    ("mobilenetv3_small_050", 64, 1024),
    ("efficientnet_b0", 64, 1280),
    ("vgg11", None, 4096),
]


def _check_family(spec, size, features):
    torch.manual_seed(0)
    enc = backbone_encoder(spec, out_dim=16, in_channels=1, input_size=size)
    assert enc.feature_dim == features and enc.out_dim == 16 and enc.stem_channels == 3
    h, w = enc.input_size
    out = enc.train()(torch.rand(2, 1, h, w))
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    out.sum().backward()
    assert enc.proj.weight.grad is not None


@pytest.mark.skipif(torchvision is None, reason=TV_REASON)
@pytest.mark.parametrize("name, size, features", TORCHVISION, ids=[c[0] for c in TORCHVISION])
def test_torchvision_family(name, size, features):
    _check_family(f"torchvision:{name}", size, features)


@pytest.mark.skipif(timm is None, reason=TIMM_REASON)
@pytest.mark.parametrize("name, size, features", TIMM, ids=[c[0] for c in TIMM])
def test_timm_family(name, size, features):
    _check_family(f"timm:{name}", size, features)


@pytest.mark.skipif(torchvision is None, reason=TV_REASON)
def test_torchvision_encoder_keeps_its_signature():
    enc = torchvision_encoder("resnet18", out_dim=8)
    assert enc.out_dim == 8 and enc(torch.rand(2, 3, 32, 32)).shape == (2, 8)


@pytest.mark.skipif(torchvision is None, reason=TV_REASON)
def test_a_module_instance_and_a_name_build_the_same_encoder():
    torch.manual_seed(0)
    a = backbone_encoder(torchvision.models.resnet18(), out_dim=8, input_size=32)
    torch.manual_seed(0)
    b = backbone_encoder("resnet18", out_dim=8, input_size=32)
    assert a.state_dict().keys() == b.state_dict().keys()


def test_docstring_examples():
    result = doctest.testmod(canon.networks, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
