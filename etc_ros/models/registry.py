"""Architecture names -> models. The names are stored in checkpoints: never rename one."""

from collections.abc import Callable

from torch import nn

from etc_ros.models.base import SegmentationModel
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


_BUILDERS: dict[str, Callable[[int, bool], SegmentationModel]] = {
    "pspnet18": _pspnet(18, 256),
    "pspnet34": _pspnet(34, 256),
    "pspnet50": _pspnet(50, 512),
    "lraspp_mobilenetv3": _lraspp,
}
ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)


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
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "set pretrained_backbone: false to train from scratch"
        ) from exc
