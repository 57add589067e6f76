"""Optical flow, warping, occlusion masks and the temporal-consistency (TC) metric.

One place for all of it, so the node's live monitor, ``evaluate`` and the training losses warp
and mask exactly the same way.

Flow convention everywhere: ``flow[y, x] = (fx, fy)`` such that ``src[y, x] ~ dst[y + fy, x + fx]``
(numpy layout (H, W, 2); torch layout (N, 2, H, W) with channel 0 = x, channel 1 = y). Warping a
tensor of frame ``dst`` with the flow ``src -> dst`` brings it into the pixel grid of ``src``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

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
    valid = forward_backward_mask(flow_to_tensor(fw), flow_to_tensor(bw))
    return fw, valid[0, 0].numpy()


def warp_labels(labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour warp of an (H, W) integer label map; returns (warped, inside) numpy."""
    if labels.ndim != 2 or labels.shape != flow.shape[:2]:
        raise ValueError(f"warp_labels: labels {labels.shape} and flow {flow.shape} do not match")
    lab = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64, copy=False))[None, None]
    out, inside = warp(lab, flow_to_tensor(flow), mode="nearest")
    return out[0, 0].numpy().astype(labels.dtype), inside[0, 0].numpy()


def pair_iou_counts(pred_t: np.ndarray, pred_t1: np.ndarray, flow: np.ndarray,
                    valid: np.ndarray | None, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (intersection, union) pixel counts between pred_t and pred_{t+1} warped into t.

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
    inter = np.bincount(a[a == b], minlength=num_classes)[:num_classes]
    area_a = np.bincount(a, minlength=num_classes)[:num_classes]
    area_b = np.bincount(b, minlength=num_classes)[:num_classes]
    return inter, area_a + area_b - inter


def tc_from_counts(inter: np.ndarray, union: np.ndarray) -> float | None:
    """Mean IoU in percent over classes present (union > 0); None when nothing is comparable."""
    present = union > 0
    if not present.any():
        return None
    return float(np.mean(inter[present] / union[present]) * 100.0)


class TemporalConsistency:
    """Accumulates the TC metric over consecutive prediction pairs (no ground truth needed).

    Per-class intersection and union are summed over all pairs, so TC weighs every pixel equally
    rather than every frame; the per-pair values are kept for per-frame plots.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self._inter = np.zeros(num_classes, dtype=np.int64)
        self._union = np.zeros(num_classes, dtype=np.int64)
        self._per_frame: list[float | None] = []

    def update(self, pred_t: np.ndarray, pred_t1: np.ndarray, flow_t_to_t1: np.ndarray,
               valid: np.ndarray | None = None) -> float | None:
        """Add one consecutive pair; returns its TC in percent (None if no class present)."""
        inter, union = pair_iou_counts(pred_t, pred_t1, flow_t_to_t1, valid, self.num_classes)
        self._inter += inter
        self._union += union
        tc = tc_from_counts(inter, union)
        self._per_frame.append(tc)
        return tc

    def result(self) -> dict:
        """``{"tc": percent | None, "per_class": {name_or_id: percent}, "per_frame": [...]}``."""
        per_class = {}
        for c in np.flatnonzero(self._union > 0):
            key = self.class_names[c] if self.class_names is not None else int(c)
            per_class[key] = float(self._inter[c] / self._union[c] * 100.0)
        return {
            "tc": tc_from_counts(self._inter, self._union),
            "per_class": per_class,
            "per_frame": list(self._per_frame),
        }
