"""Optical flow, warping, occlusion masks and the temporal-consistency (TC) metric.

One place for all of it, so the node's live monitor, ``evaluate`` and the training losses warp
and mask exactly the same way.

Flow convention everywhere: ``flow[y, x] = (fx, fy)`` such that ``src[y, x] ~ dst[y + fy, x + fx]``
(numpy layout (H, W, 2); torch layout (N, 2, H, W) with channel 0 = x, channel 1 = y). Warping a
tensor of frame ``dst`` with the flow ``src -> dst`` brings it into the pixel grid of ``src``.

The TC metric (``consistency_flow``, ``pair_counts``, ``TemporalConsistency``) runs on numpy and
OpenCV, so the node's live monitor needs no torch; the tensor functions the training losses use
(``warp``, ``occlusion_mask``, ...) import torch when called, and sample exactly as the numpy
ones do (grid_sample, align_corners, zero padding; tested against each other).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

DIS_PRESETS: Mapping[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _to_gray(img: np.ndarray) -> np.ndarray:
    """DIS needs single-channel uint8; accept RGB, RGBA or gray uint8 input."""
    if img.dtype != np.uint8:
        raise ValueError(f"compute_flow needs uint8 images, got {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.ascontiguousarray(img[:, :, 0])
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"compute_flow needs (H,W), (H,W,1), (H,W,3) or (H,W,4) images, "
                     f"got {img.shape}")


def compute_flow(src: np.ndarray, dst: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense DIS optical flow src -> dst as float32 (H, W, 2).

    DIS because no learned flow weights are available offline; a new DIS object per call because
    OpenCV's instances are not thread-safe and the live monitor runs in its own thread.
    """
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
    a, b = _to_gray(src), _to_gray(dst)
    if a.shape != b.shape:
        raise ValueError(f"compute_flow: image shapes differ ({a.shape} vs {b.shape})")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    flow = dis.calc(a, b, None)
    return np.ascontiguousarray(flow, dtype=np.float32)


def flow_to_tensor(flow: np.ndarray) -> torch.Tensor:
    """(H, W, 2) numpy flow -> (1, 2, H, W) float32 tensor (the layout ``warp`` takes)."""
    import torch

    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {flow.shape}")
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)[None]


def warp(t: torch.Tensor, flow: torch.Tensor,
         mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``t`` at ``x + flow(x)``; returns (warped, valid) with valid (N,1,H,W) bool.

    ``valid`` is False where the sample point lies outside the frame (those pixels have no
    counterpart). Integer tensors (labels) are only allowed with ``mode="nearest"`` and keep their
    dtype, because interpolating class ids produces nonsense ids.
    """
    import torch
    import torch.nn.functional as F

    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"warp mode must be 'bilinear' or 'nearest', got {mode!r}")
    if t.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"warp needs t (N,C,H,W) and flow (N,2,H,W), got {tuple(t.shape)}, "
                         f"{tuple(flow.shape)}")
    n, _, h, w = t.shape
    if flow.shape[0] != n or flow.shape[2:] != t.shape[2:]:
        raise ValueError(f"warp: flow {tuple(flow.shape)} does not match tensor {tuple(t.shape)}")
    is_float = t.is_floating_point()
    if not is_float and mode != "nearest":
        raise ValueError("warp: integer tensors (labels) must be warped with mode='nearest'")
    # sample in float32 (float64 if given): a half-precision grid is off by up to ~0.5 px at
    # typical widths, and AMP logits or float16 cached flows would otherwise bring one
    work = torch.float64 if t.dtype == torch.float64 else torch.float32
    src = t.to(work)
    flow = flow.to(device=t.device, dtype=work)
    ys = torch.arange(h, device=t.device, dtype=work).view(1, h, 1)
    xs = torch.arange(w, device=t.device, dtype=work).view(1, 1, w)
    px = xs + flow[:, 0]
    py = ys + flow[:, 1]
    valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    grid = torch.stack((2.0 * px / max(w - 1, 1) - 1.0, 2.0 * py / max(h - 1, 1) - 1.0), dim=-1)
    out = F.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=True)
    out = out.to(t.dtype) if is_float else out.round().to(t.dtype)
    return out, valid[:, None]


def forward_backward_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha: float = 0.01,
                          beta: float = 0.5) -> torch.Tensor:
    """(N,1,H,W) bool: True where the forward and backward flows agree and the target is in frame.

    Standard check ``|fw + warp(bw)|^2 < alpha (|fw|^2 + |warp(bw)|^2) + beta``: pixels occluded in
    the other frame (or badly tracked) have no consistent round trip. Pixels whose forward flow
    leaves the frame are excluded as well, since zero padding would make them look consistent.
    ``fb_consistent`` is the same check on numpy flows.
    """
    fw = flow_fw.float()
    bw_warped, inside = warp(flow_bw.float(), fw, mode="bilinear")
    lhs = (fw + bw_warped).pow(2).sum(1, keepdim=True)
    rhs = alpha * (fw.pow(2).sum(1, keepdim=True) + bw_warped.pow(2).sum(1, keepdim=True)) + beta
    return (lhs < rhs) & inside


def photometric_mask(img_t: torch.Tensor, warped_img_tk: torch.Tensor) -> torch.Tensor:
    """The paper's soft occlusion weight ``exp(-|sum_c (I_t - warp(I_{t+k}))|)``, (N,1,H,W).

    Expects normalised images (mean/std), as in the paper; brightness mismatches after warping
    mean the flow is wrong there, so those pixels get little weight.
    """
    import torch

    return torch.exp(-(img_t - warped_img_tk).sum(1, keepdim=True).abs())


def occlusion_mask(img_t: torch.Tensor, img_tk: torch.Tensor, flow_fw: torch.Tensor,
                   flow_bw: torch.Tensor | None = None) -> torch.Tensor:
    """Temporal-loss weight M for frame t vs t+k, (N,1,H,W) float in [0, 1].

    photometric term x forward-backward check (when ``flow_bw`` is given) x in-frame validity.
    """
    warped, inside = warp(img_tk, flow_fw, mode="bilinear")
    mask = photometric_mask(img_t, warped) * inside.to(warped.dtype)
    if flow_bw is not None:
        mask = mask * forward_backward_mask(flow_fw, flow_bw).to(mask.dtype)
    return mask


def consistency_flow(rgb_t: np.ndarray, rgb_t1: np.ndarray,
                     preset: str = "medium") -> tuple[np.ndarray, np.ndarray]:
    """Flow t -> t+1 and its (H, W) bool validity (fw-bw consistent, inside the frame) for TC.

    Computed once per frame pair so several models can be scored on the same flow.
    """
    fw = compute_flow(rgb_t, rgb_t1, preset)
    bw = compute_flow(rgb_t1, rgb_t, preset)
    return fw, fb_consistent(fw, bw)


def _sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(px, py, inside) for sampling at x + flow(x): float32 as ``warp`` computes them."""
    h, w = flow.shape[:2]
    px = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0].astype(np.float32, copy=False)
    py = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1].astype(np.float32, copy=False)
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    return px, py, inside


def _bilinear(img: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 sampled at (px, py), zero outside: grid_sample's bilinear, numpy."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(px), np.floor(py)
    wx1, wy1 = px - x0, py - y0
    wx0, wy0 = np.float32(1) - wx1, np.float32(1) - wy1
    out = np.zeros(px.shape + img.shape[2:], np.float32)
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            xi, yi = x0.astype(np.intp) + dx, y0.astype(np.intp) + dy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            value = img[np.where(ok, yi, 0), np.where(ok, xi, 0)] * ok[..., None]
            out += value * (wx * wy)[..., None]
    return out


def fb_consistent(flow_fw: np.ndarray, flow_bw: np.ndarray, alpha: float = 0.01,
                  beta: float = 0.5) -> np.ndarray:
    """``forward_backward_mask`` on (H, W, 2) numpy flows: (H, W) bool, no torch needed."""
    fw = flow_fw.astype(np.float32, copy=False)
    px, py, inside = _sample_points(fw)
    bw = _bilinear(flow_bw.astype(np.float32, copy=False), px, py)
    lhs = ((fw + bw) ** 2).sum(-1)
    rhs = np.float32(alpha) * ((fw ** 2).sum(-1) + (bw ** 2).sum(-1)) + np.float32(beta)
    return (lhs < rhs) & inside


def warp_labels(labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour warp of an (H, W) integer label map; returns (warped, inside) numpy.

    Sampling at x + flow(x) rounded half to even, as ``warp(..., mode="nearest")`` does.
    """
    if labels.ndim != 2 or labels.shape != flow.shape[:2]:
        raise ValueError(f"warp_labels: labels {labels.shape} and flow {flow.shape} do not match")
    h, w = labels.shape
    px, py, inside = _sample_points(flow)
    xi, yi = np.rint(px).astype(np.intp), np.rint(py).astype(np.intp)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    out = labels[np.where(ok, yi, 0), np.where(ok, xi, 0)]
    out[~ok] = 0
    return out, inside


MIN_CLASS_SHARE = 0.001
"""A class counts as "predicted" by a model when it covers >= 0.1 % of the valid pixels."""


@dataclass
class PairCounts:
    """What one consecutive pair contributes to TC: per-class counts over its valid pixels.

    ``inter``/``union``: IoU counts of pred_t vs warped pred_{t+1}; ``area``: pixels of each class
    in pred_t; ``agree``: pixels whose class survives the warp; ``valid``: pixels compared.
    """

    inter: np.ndarray
    union: np.ndarray
    area: np.ndarray
    agree: int
    valid: int


def pair_counts(pred_t: np.ndarray, pred_t1: np.ndarray, flow: np.ndarray,
                valid: np.ndarray | None, num_classes: int) -> PairCounts:
    """Counts between pred_t and pred_{t+1} warped into t (nearest neighbour).

    Pixels whose flow leaves the frame, that fail ``valid`` (the fw-bw check) or that carry an id
    outside 0..num_classes-1 (e.g. ignore 255) in either map are left out.
    """
    if pred_t.shape != pred_t1.shape:
        raise ValueError(f"TC: prediction shapes differ ({pred_t.shape} vs {pred_t1.shape})")
    warped, keep = warp_labels(pred_t1, flow)
    if valid is not None:
        if valid.shape != pred_t.shape:
            raise ValueError(f"TC: valid mask {valid.shape} does not match labels {pred_t.shape}")
        keep &= valid.astype(bool)
    a = pred_t.astype(np.int64)
    b = warped.astype(np.int64)
    keep &= (a >= 0) & (a < num_classes) & (b >= 0) & (b < num_classes)
    a, b = a[keep], b[keep]
    same = a == b
    inter = np.bincount(a[same], minlength=num_classes)[:num_classes]
    area_a = np.bincount(a, minlength=num_classes)[:num_classes]
    area_b = np.bincount(b, minlength=num_classes)[:num_classes]
    return PairCounts(inter, area_a + area_b - inter, area_a, int(same.sum()), int(a.size))


def own_classes(area: np.ndarray, min_share: float = MIN_CLASS_SHARE) -> list[int]:
    """Classes covering >= ``min_share`` of the valid pixels counted in ``area``."""
    total = int(area.sum())
    if total == 0:
        return []
    return [int(c) for c in np.flatnonzero(area >= min_share * total)]


def tc_over_classes(inter: np.ndarray, union: np.ndarray,
                    classes: Sequence[int]) -> float | None:
    """Mean IoU in percent over exactly ``classes``; None when the set is empty.

    A class of the set that the model never predicts on a valid pixel (union 0) scores 0, as a
    ground-truth class that is never predicted does in mIoU: every model is scored over the same
    set, so stray pixels of a rare class neither drag one model down nor lift another.
    """
    if len(classes) == 0:
        return None
    idx = np.asarray(classes, dtype=np.int64)
    u = union[idx].astype(np.float64)
    iou = np.divide(inter[idx], u, out=np.zeros_like(u), where=u > 0)
    return float(iou.mean() * 100.0)


def shared_class_set(ground_truth: Sequence[int] | None,
                     models: Sequence[TemporalConsistency]) -> list[int]:
    """The one class set every model of a run is scored over.

    With labels: the classes present in the ground truth. Without: the classes that every model
    predicts on >= 0.1 % of valid pixels (one model alone: its own such classes).
    """
    if ground_truth is not None:
        return sorted(int(c) for c in ground_truth)
    sets = [set(m.predicted_classes()) for m in models]
    return sorted(set.intersection(*sets)) if sets else []


class TemporalConsistency:
    """Accumulates the TC metric over consecutive prediction pairs (no ground truth needed).

    Per-class intersection and union are summed over all pairs, so TC weighs every pixel equally
    rather than every frame. The class set is chosen at the end (``shared_class_set``), when every
    compared model has been seen; per-pair counts are kept for per-frame plots.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self._inter = np.zeros(num_classes, dtype=np.int64)
        self._union = np.zeros(num_classes, dtype=np.int64)
        self._area = np.zeros(num_classes, dtype=np.int64)
        self._agree = 0
        self._valid = 0
        self._pairs: list[PairCounts] = []

    def update(self, pred_t: np.ndarray, pred_t1: np.ndarray, flow_t_to_t1: np.ndarray,
               valid: np.ndarray | None = None) -> PairCounts:
        """Add one consecutive pair; returns its counts."""
        counts = pair_counts(pred_t, pred_t1, flow_t_to_t1, valid, self.num_classes)
        self._inter += counts.inter
        self._union += counts.union
        self._area += counts.area
        self._agree += counts.agree
        self._valid += counts.valid
        self._pairs.append(counts)
        return counts

    @property
    def pairs(self) -> int:
        return len(self._pairs)

    def predicted_classes(self, min_share: float = MIN_CLASS_SHARE) -> list[int]:
        """Classes this model predicts on >= ``min_share`` of the valid pixels of all pairs."""
        return own_classes(self._area, min_share)

    def _name(self, c: int) -> str | int:
        return self.class_names[c] if self.class_names is not None else int(c)

    def result(self, classes: Sequence[int] | None = None) -> dict:
        """TC over ``classes`` (default: this model's own, ``predicted_classes()``).

        ``{"tc", "tc_pixel", "tc_classes", "per_class", "per_frame", "per_frame_pixel"}``; ``tc``
        and ``tc_pixel`` in percent (None without pairs); ``per_class`` holds every class with
        pixels in either frame of any pair; ``per_frame`` is each pair's TC over the set (classes
        of the set absent from that pair left out), ``per_frame_pixel`` its pixel TC.
        """
        classes = self.predicted_classes() if classes is None else [int(c) for c in classes]
        per_class = {self._name(c): float(self._inter[c] / self._union[c] * 100.0)
                     for c in np.flatnonzero(self._union > 0)}
        per_frame: list[float | None] = []
        per_frame_pixel: list[float | None] = []
        idx = np.asarray(classes, dtype=np.int64)
        for p in self._pairs:
            present = [int(c) for c in idx if p.union[c] > 0]
            per_frame.append(tc_over_classes(p.inter, p.union, present))
            per_frame_pixel.append(p.agree / p.valid * 100.0 if p.valid else None)
        return {
            "tc": tc_over_classes(self._inter, self._union, classes) if self._pairs else None,
            "tc_pixel": self._agree / self._valid * 100.0 if self._valid else None,
            "tc_classes": [self._name(c) for c in classes],
            "per_class": per_class,
            "per_frame": per_frame,
            "per_frame_pixel": per_frame_pixel,
        }


def propagate_labels(labels: np.ndarray, flow_to_prev: np.ndarray) -> np.ndarray:
    """Carry the previous frame's labels into the current frame (keyframe propagation).

    ``flow_to_prev`` is the flow current -> previous, so each pixel takes the label found where it
    was in the previous frame (nearest neighbour; ids are never blended). Pixels whose source
    lies outside the previous frame take the nearest border pixel's label, as a keyframe method
    has nothing better to offer there.
    """
    if labels.ndim != 2 or labels.shape != flow_to_prev.shape[:2]:
        raise ValueError(f"propagate_labels: labels {labels.shape} and flow "
                         f"{flow_to_prev.shape} do not match")
    h, w = labels.shape
    xs = np.arange(w, dtype=np.float32)[None, :] + flow_to_prev[..., 0]
    ys = np.arange(h, dtype=np.float32)[:, None] + flow_to_prev[..., 1]
    xi = np.clip(np.rint(xs), 0, w - 1).astype(np.intp)
    yi = np.clip(np.rint(ys), 0, h - 1).astype(np.intp)
    return labels[yi, xi]
