"""The DeepLabV3+ of the released iMAS and UniMatch code (``model.arch: DeepLabV3PlusReleased``).

Written from the released models' description, not copied: a ResNet-50/101 with the deep stem of
the ImageNet checkpoints those codes link (three 3×3 convolutions instead of one 7×7), dilated to
output stride 16 or 8 (torchvision's rule: a dilated stage's first unit keeps the previous rate;
optionally iMAS's multi-grid, layer4 units at rate × (1, 2, 4)); an ASPP head (1×1, three dilated
3×3, image pooling, 1×1 projection, no dropout); the 1×1 reduction of layer1 to 48 channels; two
dense 3×3 convolutions to fuse; a 1×1 classifier. The network has smp's interface (``encoder``,
``decoder``, ``segmentation_head``), so :class:`ssseg.models.SegModel` wraps it like an smp model.

It takes any input size (``input_multiple = 1``: nothing is padded, as the released code feeds
its crops as they are), and on an input of 4k+1 pixels (the released crops 321, 513, 769, 801)
every resize is the released one: ASPP output resized to layer1's grid, logits resized to the
input, both bilinear with aligned corners.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssseg.errors import UserError

ARCH = "DeepLabV3PlusReleased"
UNITS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}  # bottleneck units per stage
OPTIONS: dict[str, tuple[Any, ...]] = {"output_stride": (16, 8), "multi_grid": (False, True)}
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
MULTI_GRID = (1, 2, 4)
WIDTHS = (64, 128, 256, 512)  # bottleneck width per stage; the stage outputs 4× as many channels
STEM_CHANNELS = 128
LOW_CHANNELS = 48
DECODER_CHANNELS = 256


def conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    """Convolution (no bias; padding keeps the size) → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """A ResNet unit: 1×1 → 3×3 (stride, dilation) → 1×1 to 4×width channels, added to the input
    or to its 1×1 projection (``downsample``, on the first unit of a stage)."""

    def __init__(self, cin: int, width: int, stride: int, dilation: int, project: bool):
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if project else None)

    def forward(self, x: Tensor) -> Tensor:
        """The unit's output, ``relu(branch(x) + shortcut(x))``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def stage_plan(units: tuple[int, ...], output_stride: int, multi_grid: bool) -> list[tuple[int, list[int]]]:
    """(first unit's stride, every unit's 3×3 dilation) of each stage. A stage whose nominal stride
    (4, 8, 16, 32) exceeds ``output_stride`` keeps stride 1 and doubles the rate, its first unit
    at the previous rate (torchvision's rule); ``multi_grid``: layer4's units at its rate × (1, 2, 4)."""
    rate, plan = 1, []
    for index, count in enumerate(units):
        entry, stride = rate, 1 if index == 0 else 2
        if 4 * 2 ** index > output_stride:
            rate, stride = 2 * rate, 1
        plan.append((stride, [entry] + [rate] * (count - 1)))
    if multi_grid:
        plan[-1] = (plan[-1][0], [rate * g for g in MULTI_GRID])
    return plan


class DeepStemResNet(nn.Module):
    """The released codes' ResNet-50/101, with the key names of their ImageNet checkpoints
    (``conv1.{0,1,3,4,6}``, ``bn1``, ``layerN.U.{conv,bn}{1,2,3}``, ``layerN.0.downsample.{0,1}``).

    ``forward`` returns ``[x, c1, c2, c3, c4]``: the input and the four stages' outputs (256, 512,
    1024, 2048 channels at strides 4, 8, 16 or 8, ``output_stride``), like an smp encoder.
    """

    def __init__(self, name: str, output_stride: int, multi_grid: bool):
        super().__init__()
        self.name = name
        self.output_stride = output_stride
        self.out_channels = (3,) + tuple(4 * w for w in WIDTHS)
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, STEM_CHANNELS, 3, padding=1, bias=False))
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        cin = STEM_CHANNELS
        plan = stage_plan(UNITS[name], output_stride, multi_grid)
        for index, (width, (stride, rates)) in enumerate(zip(WIDTHS, plan)):
            units = [Bottleneck(cin if u == 0 else 4 * width, width, stride if u == 0 else 1, rate, u == 0)
                     for u, rate in enumerate(rates)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*units))
            cin = 4 * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[x, c1, c2, c3, c4]`` for images ``x`` ``[B,3,H,W]``."""
        features = [x]
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = stage(out)
            features.append(out)
        return features


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three dilated 3×3 and image pooling, each to ``cout``
    channels with BatchNorm and ReLU, concatenated and projected by 1×1 (no dropout)."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int]):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(cin, cout, 1))
        self.project = conv_bn_relu(5 * cout, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        """The projected pyramid, ``[B,cout,h,w]`` for ``x`` ``[B,cin,h,w]``."""
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], 1))


class ReleasedDecoder(nn.Module):
    """ASPP on c4, resized to c1's grid; c1 reduced to 48 channels; both fused by two dense 3×3
    convolutions to 256 channels (the decoder features, at stride 4)."""

    def __init__(self, encoder_channels: tuple[int, ...], output_stride: int):
        super().__init__()
        self.out_channels = DECODER_CHANNELS
        self.aspp = ASPP(encoder_channels[-1], DECODER_CHANNELS, ASPP_RATES[output_stride])
        self.reduce = conv_bn_relu(encoder_channels[1], LOW_CHANNELS, 1)
        self.fuse = nn.Sequential(conv_bn_relu(LOW_CHANNELS + DECODER_CHANNELS, DECODER_CHANNELS, 3),
                                  conv_bn_relu(DECODER_CHANNELS, DECODER_CHANNELS, 3))

    def forward(self, features: list[Tensor]) -> Tensor:
        """Decoder features ``[B,256,h1,w1]`` from the encoder's ``[x, c1, c2, c3, c4]``."""
        low, high = features[1], features[-1]
        high = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([self.reduce(low), high], 1))


class CornerAlignedUpsample(nn.Module):
    """Bilinear upsampling by ``factor`` with aligned corners: ``m`` rows become ``factor·(m−1)+1``
    (output pixel i reads feature i/factor, the released resize on a 4k+1 input), then the last
    row and column are repeated ``factor − 1`` times, so the output covers ``factor·m`` pixels."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        """``[B,C,f·h,f·w]`` for ``x`` ``[B,C,h,w]``."""
        f = self.factor
        size = (f * (x.shape[-2] - 1) + 1, f * (x.shape[-1] - 1) + 1)
        up = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return F.pad(up, (0, f - 1, 0, f - 1), mode="replicate")


class ReleasedDeepLabV3Plus(nn.Module):
    """Deep-stem ResNet encoder, released decoder, and the head: 1×1 classifier, then the logits
    resized ×4 to the input grid (``segmentation_head``)."""

    input_multiple = 1  # any input size; SegModel pads nothing

    def __init__(self, encoder: str, classes: int, output_stride: int = 16, multi_grid: bool = False):
        super().__init__()
        self.encoder = DeepStemResNet(encoder, output_stride, multi_grid)
        self.decoder = ReleasedDecoder(self.encoder.out_channels, output_stride)
        self.segmentation_head = nn.Sequential(nn.Conv2d(DECODER_CHANNELS, classes, 1), CornerAlignedUpsample(4))


def build(encoder: str, classes: int, options: Mapping[str, Any]) -> ReleasedDeepLabV3Plus:
    """The recipe's ``DeepLabV3PlusReleased``; an unknown encoder, option or option value is a
    UserError naming ``model.encoder`` or ``model.options.<key>`` and the valid values."""
    if encoder not in UNITS:
        raise UserError(f"model.encoder: {ARCH} takes {' or '.join(UNITS)}, not {encoder!r}")
    for key, value in options.items():
        if key not in OPTIONS:
            raise UserError(f"model.options.{key}: not an option of {ARCH}; valid: {', '.join(OPTIONS)}")
        if not any(type(value) is type(v) and value == v for v in OPTIONS[key]):
            valid = " or ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in OPTIONS[key])
            raise UserError(f"model.options.{key}: {ARCH} takes {valid}, not {value!r}")
    return ReleasedDeepLabV3Plus(encoder, classes, **options)


def load_official_weights(encoder: DeepStemResNet, state: Mapping[str, Any], path: Path) -> None:
    """Copy the official ImageNet checkpoint ``state`` (read from ``path``) into ``encoder``.

    The classifier ``fc.*`` is ignored and BatchNorm's ``num_batches_tracked`` may be absent;
    any other missing or unexpected key, or a tensor of another shape, is a UserError naming
    ``path`` and up to 3 of the keys.
    """
    own = encoder.state_dict()
    given = {k: v for k, v in state.items() if not str(k).startswith("fc.")}
    required = [k for k in own if not k.endswith("num_batches_tracked")]
    problems = {
        "lacks": [k for k in required if k not in given],
        "has unexpected": sorted(str(k) for k in given if k not in own),
        "has wrongly shaped": [k for k in own if k in given and (not torch.is_tensor(given[k])
                                                                or given[k].shape != own[k].shape)],
    }
    hint = ("; its conv1.weight is a 7×7 stem (torchvision, timm): this arch needs the deep-stem checkpoint "
            "the iMAS and UniMatch READMEs link (docs/recipes.md)") if "conv1.weight" in given else ""
    for problem, keys in problems.items():
        if keys:
            raise UserError(f"model.encoder_weights: {path} is not the official deep-stem {encoder.name} "
                            f"ImageNet checkpoint: it {problem} keys ({len(keys)}: {', '.join(keys[:3])}){hint}")
    encoder.load_state_dict(given, strict=False)
