"""Validation during training: mIoU and temporal consistency on val sequences, scored as
``python -m etc_ros.evaluate`` scores them, so the number a run picks checkpoints by is the one
evaluate reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from etc_ros.metrics import (
    accumulate_confusion,
    gt_classes,
    mean_iou,
    new_confusion,
    pixel_accuracy,
)
from etc_ros.preprocess import resize_image, resize_labels
from etc_ros.temporal import TemporalConsistency, shared_class_set
from training.datasets import VideoSequence, read_label, read_rgb
from training.flow_cache import shared_tc_flows
from training.transforms import normalize


def model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame as the model sees it, resized exactly like the node's Segmenter does."""
    return resize_image(rgb, size)


class Validator:
    """mIoU on labelled val frames and TC over consecutive val frames, scored as evaluate does.

    Frames are resized to the model's ``input_size`` exactly as the node's Segmenter does
    (etc_ros.preprocess); predictions go back to each label's own resolution the same way, so
    val mIoU is the number ``python -m etc_ros.evaluate`` reports on these frames (mean over the
    classes present in the ground truth). TC is taken at ``input_size`` (the teacher gate passes
    each model's own). Frames, labels and the DIS flow between consecutive frames are prepared
    once, on construction (the flow through ``flow_cache_dir`` when given, shared with other
    runs: ``training.flow_cache.shared_tc_flows``); ``with_tc=False`` (the gate and the
    teachers, which need mIoU alone) skips the flow and TC.
    """

    def __init__(self, sequences: list[VideoSequence], num_classes: int,
                 input_size: tuple[int, int], with_tc: bool = True,
                 flow_cache_dir: Path | None = None) -> None:
        self.num_classes = num_classes
        self.with_tc = with_tc
        size = tuple(input_size)
        self.sequences: list[tuple[torch.Tensor, dict[int, np.ndarray], list]] = []
        total = sum(len(s.frames) if with_tc else len(s.labels) for s in sequences)
        desc = "val frames + flow" if with_tc else "val frames"
        with tqdm(total=total, desc=desc, leave=False) as bar:
            for seq in sequences:
                # without TC only the labelled frames are needed (1 in 30 on Cityscapes)
                kept = range(len(seq.frames)) if with_tc else sorted(seq.labels)
                rgb, labels = [], {}
                for i in kept:
                    if i in seq.labels:
                        labels[len(rgb)] = read_label(seq.labels[i], seq.label_format,
                                                      num_classes)
                    rgb.append(model_input(read_rgb(seq.frames[i]), size))
                    bar.update()
                if not rgb:
                    continue
                flows = shared_tc_flows(rgb, flow_cache_dir, seq.name) if with_tc else []
                self.sequences.append((normalize(rgb), labels, flows))

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Evaluate ``model`` (switched to eval mode and back)."""
        was_training = model.training
        model.eval()
        conf = new_confusion(self.num_classes)
        tc = TemporalConsistency(self.num_classes)
        label_dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        for images, labels, flows in self.sequences:
            preds = torch.cat([model(chunk.to(device)).argmax(1).cpu()
                               for chunk in images.split(8)]).numpy().astype(label_dtype)
            for i, label in labels.items():
                accumulate_confusion(conf, label, resize_labels(preds[i], label.shape))
            for i, (flow, valid) in enumerate(flows):
                tc.update(preds[i], preds[i + 1], flow, valid)
        model.train(was_training)
        # mIoU and TC over the classes present in the ground truth
        metrics: dict[str, float] = {}
        if self.with_tc:
            result = tc.result(shared_class_set(gt_classes(conf), [tc]))
            metrics = {"tc": result["tc"] or 0.0, "tc_pixel": result["tc_pixel"] or 0.0}
        miou = mean_iou(conf)
        if miou is not None:
            metrics["miou"] = miou
            metrics["pixel_acc"] = pixel_accuracy(conf)
        return metrics
