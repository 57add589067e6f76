"""Segmentation architectures shared by the node and by training (training imports these).

The names are plain data, so that checking a checkpoint's architecture (a `.onnx` model on a
robot without torch) imports no torch; the models and their builders load torch on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

# The names stored in checkpoints: never rename one (registry._BUILDERS has one builder each).
ARCHITECTURES: tuple[str, ...] = (
    "pspnet18", "pspnet34", "pspnet50", "pspnet101", "lraspp_mobilenetv3",
    "lraspp_effnet_lite0", "pspnet_effnet_lite0", "pspnet_effnet_lite2",
)
_LAZY = {
    "SegmentationModel": "etc_ros.models.base",
    "TrainOutput": "etc_ros.models.base",
    "BACKBONES": "etc_ros.models.registry",
    "BackboneSpec": "etc_ros.models.registry",
    "PretrainedWeightsUnavailable": "etc_ros.models.registry",
    "build_model": "etc_ros.models.registry",
}

__all__ = ["ARCHITECTURES", *_LAZY]


def __getattr__(name: str) -> Any:
    """`from etc_ros.models import build_model` imports torch here, not at package import."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
