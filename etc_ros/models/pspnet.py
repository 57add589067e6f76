"""PSPNet (Zhao et al. 2017) on a dilated torchvision ResNet, as in the ETC paper's students."""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class PyramidPooling(nn.Module):
    """Pool the feature map to 1x1, 2x2, 3x3 and 6x6 bins and concatenate with the input."""

    def __init__(self, in_ch: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = in_ch // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), _conv_bn_relu(in_ch, reduced)) for b in bins
        )
        self.out_channels = in_ch + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
            for stage in self.stages
        ]
        return torch.cat([x, *pooled], dim=1)


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """Turn a strided ResNet stage into a dilated one (BasicBlock refuses dilation itself)."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride == (2, 2):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


class PSPNet(nn.Module):
    """Dilated ResNet (output stride 8) + pyramid pooling head + auxiliary head on layer3."""

    def __init__(
        self, depth: int, num_classes: int, pretrained_backbone: bool, feature_channels: int
    ) -> None:
        super().__init__()
        factory = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50,
                   101: resnet.resnet101}[depth]
        weights = "IMAGENET1K_V1" if pretrained_backbone else None
        backbone = factory(weights=weights)
        _dilate(backbone.layer3, 2)
        _dilate(backbone.layer4, 4)
        self.stem = nn.Sequential(
            backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool, backbone.layer1,
            backbone.layer2,
        )
        self.layer3 = backbone.layer3
        self.layer4 = backbone.layer4
        layer3_ch = 1024 if depth >= 50 else 256
        layer4_ch = 2048 if depth >= 50 else 512
        self.ppm = PyramidPooling(layer4_ch)
        self.bottleneck = nn.Sequential(
            _conv_bn_relu(self.ppm.out_channels, feature_channels, 3), nn.Dropout2d(0.1)
        )
        self.classifier = nn.Conv2d(feature_channels, num_classes, 1)
        self.aux_head = nn.Sequential(
            _conv_bn_relu(layer3_ch, layer3_ch // 4, 3),
            nn.Dropout2d(0.1),
            nn.Conv2d(layer3_ch // 4, num_classes, 1),
        )

    def forward(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        c3 = self.layer3(self.stem(x))
        features = self.bottleneck(self.ppm(self.layer4(c3)))
        aux = self.aux_head(c3) if with_aux else None
        return self.classifier(features), aux, features
