"""The contract every architecture keeps: logits for the node, more for training."""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class TrainOutput(NamedTuple):
    """What the losses need: logits and auxiliary logits at input size, and the head features."""

    logits: torch.Tensor
    aux_logits: torch.Tensor | None
    features: torch.Tensor


class SegmentationModel(nn.Module):
    """Wraps a network whose forward(x, with_aux) returns (logits, aux, features) at low res."""

    def __init__(self, net: nn.Module, num_classes: int, feature_channels: int) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.feature_channels = feature_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) at the input's resolution: the only thing the node computes."""
        logits, _, _ = self.net(x, with_aux=False)
        return _upsample(logits, x)

    def forward_train(self, x: torch.Tensor) -> TrainOutput:
        """Logits, auxiliary logits (in training mode, if the net has an aux head), features."""
        logits, aux, features = self.net(x, with_aux=self.training)
        return TrainOutput(
            _upsample(logits, x), None if aux is None else _upsample(aux, x), features
        )


def _upsample(logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if logits.shape[-2:] == like.shape[-2:]:
        return logits
    return F.interpolate(logits, size=like.shape[-2:], mode="bilinear", align_corners=False)
