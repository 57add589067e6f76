"""Segmentation architectures shared by the node and by training (training imports these)."""

from etc_ros.models.base import SegmentationModel, TrainOutput
from etc_ros.models.registry import ARCHITECTURES, PretrainedWeightsUnavailable, build_model

__all__ = [
    "ARCHITECTURES",
    "PretrainedWeightsUnavailable",
    "SegmentationModel",
    "TrainOutput",
    "build_model",
]
