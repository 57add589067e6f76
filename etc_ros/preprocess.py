"""How a frame becomes model input and labels go back to the frame: one definition for the node's
Segmenter, training validation and evaluation, so a model is trained, validated and served on
identically resized pixels.

Images: INTER_AREA when shrinking (it averages, where bilinear would alias fine detail such as
poles and fences), INTER_LINEAR when enlarging. Labels: INTER_NEAREST_EXACT, which samples pixel
centres; plain INTER_NEAREST shifts class maps by half a pixel. numpy + OpenCV only.
"""
from __future__ import annotations

import cv2
import numpy as np


def image_interpolation(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """The OpenCV interpolation for resizing an image from src to dst (height, width)."""
    shrinking = src_hw[0] > dst_hw[0] or src_hw[1] > dst_hw[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def resize_image(img: np.ndarray, size: tuple[int, int],
                 dst: np.ndarray | None = None) -> np.ndarray:
    """(H, W, C) image -> `size` (height, width) as the model sees it; a copy-free no-op at size.

    `dst`, when given, is a preallocated (height, width, C) buffer written in place (the
    Segmenter's pinned staging buffer).
    """
    h, w = size
    if img.shape[:2] == (h, w):
        if dst is None:
            return img
        dst[...] = img
        return dst
    interp = image_interpolation(img.shape[:2], (h, w))
    if dst is None:
        return cv2.resize(img, (w, h), interpolation=interp)
    cv2.resize(img, (w, h), dst=dst, interpolation=interp)
    return dst


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) class-id map -> `size` (height, width); ids are never blended.

    Used for ground truth going to the model's size and predictions going back to the frame's.
    """
    h, w = size
    if labels.shape[:2] == (h, w):
        return labels
    if labels.dtype not in (np.uint8, np.uint16):  # OpenCV has no NEAREST_EXACT for int64
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
            raise ValueError(f"class ids outside 0..65535 in a {labels.dtype} label map")
        return cv2.resize(labels.astype(np.uint16), (w, h),
                          interpolation=cv2.INTER_NEAREST_EXACT).astype(labels.dtype)
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
