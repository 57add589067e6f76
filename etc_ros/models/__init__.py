"""Segmentation architectures shared by the node and by training (training imports these)."""

from etc_ros.models.base import SegmentationModel, TrainOutput
from etc_ros.models.registry import (
    ARCHITECTURES,
    BACKBONES,
    BackboneSpec,
    PretrainedWeightsUnavailable,
    build_model,
)

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "BackboneSpec",
    "PretrainedWeightsUnavailable",
    "SegmentationModel",
    "TrainOutput",
    "build_model",
]
