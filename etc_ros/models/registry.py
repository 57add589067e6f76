"""Architecture names -> models. The names are stored in checkpoints: never rename one."""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from etc_ros.errors import one_line
from etc_ros.models.base import SegmentationModel
from etc_ros.models.effnet_lite import LRASPPEffNetLite0, PSPEffNetLite
from etc_ros.models.lraspp import LRASPPMobileNetV3
from etc_ros.models.pspnet import PSPNet


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet backbone weights could not be downloaded (e.g. an offline machine)."""


def _pspnet(depth: int, feature_channels: int) -> Callable[[int, bool], SegmentationModel]:
    def build(num_classes: int, pretrained_backbone: bool) -> SegmentationModel:
        net = PSPNet(depth, num_classes, pretrained_backbone, feature_channels)
        return SegmentationModel(net, num_classes, feature_channels)

    return build


def _lraspp(num_classes: int, pretrained_backbone: bool) -> SegmentationModel:
    net = LRASPPMobileNetV3(num_classes, pretrained_backbone)
    return SegmentationModel(net, num_classes, net.feature_channels)


def _lite(cls: type, **kwargs: str) -> Callable[[int, bool], SegmentationModel]:
    def build(num_classes: int, pretrained_backbone: bool) -> SegmentationModel:
        if pretrained_backbone:
            raise PretrainedWeightsUnavailable(
                "EfficientNet-Lite has no download: convert the ImageNet weights with "
                "python -m training.pretrained and name the file in backbone_weights")
        net = cls(num_classes, **kwargs)
        return SegmentationModel(net, num_classes, net.feature_channels)

    return build


_BUILDERS: dict[str, Callable[[int, bool], SegmentationModel]] = {
    "pspnet18": _pspnet(18, 256),
    "pspnet34": _pspnet(34, 256),
    "pspnet50": _pspnet(50, 512),
    "pspnet101": _pspnet(101, 512),
    "lraspp_mobilenetv3": _lraspp,
    "lraspp_effnet_lite0": _lite(LRASPPEffNetLite0),
    "pspnet_effnet_lite0": _lite(PSPEffNetLite, variant="lite0"),
    "pspnet_effnet_lite2": _lite(PSPEffNetLite, variant="lite2"),
}
ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)


@dataclass(frozen=True)
class BackboneSpec:
    """Which ImageNet backbone an architecture starts from, and where its tensors live.

    Backbone weight files use the backbone's own key names (torchvision's for ResNet and
    MobileNetV3, ``EfficientNetLite``'s for Lite0/Lite2); ``model_key`` maps one to the segmentation
    model's state-dict key, or None for a tensor the model has no use for (classifier).
    """

    name: str
    prefixes: tuple[str, ...]  # model state-dict keys that belong to the backbone

    def model_key(self, key: str) -> str | None:
        """The model's key for backbone file key ``key`` (None: not part of this model)."""
        if self.name.startswith("efficientnet_lite"):
            return "net.backbone." + key
        if self.name == "mobilenet_v3_large":
            head, _, rest = key.partition(".")
            return f"net.backbone.{rest}" if head == "features" else None
        head, _, rest = key.partition(".")  # resnet
        rename = {"conv1": "net.stem.0", "bn1": "net.stem.1", "layer1": "net.stem.4",
                  "layer2": "net.stem.5", "layer3": "net.layer3", "layer4": "net.layer4"}
        return f"{rename[head]}.{rest}" if head in rename else None


BACKBONES: dict[str, BackboneSpec] = {
    "pspnet18": BackboneSpec("resnet18", ("net.stem.", "net.layer3.", "net.layer4.")),
    "pspnet34": BackboneSpec("resnet34", ("net.stem.", "net.layer3.", "net.layer4.")),
    "pspnet50": BackboneSpec("resnet50", ("net.stem.", "net.layer3.", "net.layer4.")),
    "pspnet101": BackboneSpec("resnet101", ("net.stem.", "net.layer3.", "net.layer4.")),
    "lraspp_mobilenetv3": BackboneSpec("mobilenet_v3_large", ("net.backbone.",)),
    "lraspp_effnet_lite0": BackboneSpec("efficientnet_lite0", ("net.backbone.",)),
    "pspnet_effnet_lite0": BackboneSpec("efficientnet_lite0", ("net.backbone.",)),
    "pspnet_effnet_lite2": BackboneSpec("efficientnet_lite2", ("net.backbone.",)),
}


def build_model(arch: str, num_classes: int, pretrained_backbone: bool = False) -> nn.Module:
    """Build an architecture by name; `pretrained_backbone` downloads torchvision's weights."""
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    try:
        return _BUILDERS[arch](num_classes, pretrained_backbone)
    except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError
        if not pretrained_backbone:
            raise
        raise PretrainedWeightsUnavailable(
            f"could not download ImageNet weights for the {arch} backbone "
            f"({type(exc).__name__}: {one_line(exc)[:120]}); "
            "set pretrained_backbone: false to train from scratch"
        ) from exc
