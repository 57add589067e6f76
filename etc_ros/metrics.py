"""Scores shared by evaluate, bench, demo and training validation: confusion-matrix IoU and
latency percentiles. (Temporal consistency lives in etc_ros.temporal, with the flow it needs.)

numpy only: training imports this without ROS or the tools' other dependencies.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from etc_ros.labels import IGNORE_INDEX


def new_confusion(num_classes: int) -> np.ndarray:
    """An empty (ground truth x prediction) confusion matrix."""
    return np.zeros((num_classes, num_classes), np.int64)


def accumulate_confusion(confusion: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> None:
    """Add one frame (same-shape class-id maps) in place; ignore and unknown gt ids left out."""
    if gt.shape != pred.shape:
        raise ValueError(f"label {gt.shape} and prediction {pred.shape} differ in size")
    n = confusion.shape[0]
    keep = (gt != IGNORE_INDEX) & (gt < n)
    idx = gt[keep].astype(np.int64) * n + pred[keep].astype(np.int64)
    confusion += np.bincount(idx, minlength=n * n)[: n * n].reshape(n, n)


def gt_classes(confusion: np.ndarray) -> np.ndarray:
    """Ids of the classes present in the ground truth (confusion row sum > 0)."""
    return np.flatnonzero(confusion.sum(1) > 0)


def class_iou(confusion: np.ndarray) -> list[float | None]:
    """Per-class IoU in %, None where the class is in neither ground truth nor prediction."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return [float(tp[c] / union[c] * 100.0) if union[c] > 0 else None
            for c in range(confusion.shape[0])]


def class_recall(confusion: np.ndarray) -> list[float | None]:
    """Per-class recall in %: the share of a class's labelled pixels predicted as it (None where
    the class is not in the ground truth). On sparsely labelled images (regions drawn inside
    objects) this is "how much of each region the model gets right"."""
    tp = np.diag(confusion).astype(np.float64)
    total = confusion.sum(1)
    return [float(tp[c] / total[c] * 100.0) if total[c] > 0 else None
            for c in range(confusion.shape[0])]


def class_mistakes(confusion: np.ndarray, top: int = 3,
                   min_share: float = 1.0) -> list[list[tuple[int, float]] | None]:
    """Per ground-truth class, the other classes its labelled pixels are predicted as: up to
    `top` (class id, % of the class's labelled pixels) pairs of at least `min_share` %, largest
    first (None where the class is not in the ground truth). Recall says how much of a region
    is right; this says what the rest became (on real images: road read as sky or sidewalk)."""
    total = confusion.sum(1)
    out: list[list[tuple[int, float]] | None] = []
    for c in range(confusion.shape[0]):
        if total[c] == 0:
            out.append(None)
            continue
        share = confusion[c].astype(np.float64) / total[c] * 100.0
        share[c] = 0.0
        order = np.argsort(-share, kind="stable")[:top]
        out.append([(int(p), float(share[p])) for p in order if share[p] >= min_share])
    return out


def mean_iou(confusion: np.ndarray) -> float | None:
    """mIoU in %: the mean IoU over the classes present in the ground truth, None if none is.

    A ground-truth class the model never predicts counts as 0; a class predicted but absent from
    the ground truth does not count, so every model is scored over the same class set.
    """
    present = gt_classes(confusion)
    if present.size == 0:
        return None
    ious = class_iou(confusion)
    return float(np.mean([ious[c] for c in present]))


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Correct labelled pixels in %."""
    return float(np.trace(confusion) / max(int(confusion.sum()), 1) * 100.0)


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """p50, p95 and max (ms or whatever unit came in); NaN when nothing was measured."""
    arr = np.fromiter(values, dtype=np.float64)
    if arr.size == 0:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan}
    p50, p95 = np.percentile(arr, (50, 95))
    return {"p50": float(p50), "p95": float(p95), "max": float(arr.max())}
