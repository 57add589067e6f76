"""Camera pipeline: lens distortion, motion blur, exposure, white balance, tone curve, vignette,
noise and JPEG, so the network sees camera images rather than clean renders.

Lens distortion moves pixels, so it is applied to the render-resolution image and label alike
(labels with nearest neighbour); everything else touches the image only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Pipeline:
    """Per-sequence camera settings; per-frame noise comes from the (seed, frame) stream."""

    k1: float
    k2: float
    wb: np.ndarray
    exposure_knots: np.ndarray
    gamma: float
    contrast: float
    white: float
    shutter: float
    vignette: float
    shot: float
    read: float
    jpeg: int | None
    ae_key: float            # auto-exposure target: log-average linear luminance of the frame
    maps: tuple[np.ndarray, np.ndarray] | None = None


def sample_pipeline(rng: np.random.Generator, frames: int, strength: float) -> Pipeline:
    """Random camera: ``strength`` (0..1) scales drift, blur, noise and compression."""
    s = strength
    distort = rng.random() < 0.6
    return Pipeline(
        k1=rng.uniform(-0.3, 0.05) if distort else 0.0, k2=rng.uniform(-0.05, 0.08) * distort,
        wb=np.exp(rng.normal(0, 0.07, 3)).astype(np.float32),
        exposure_knots=(rng.uniform(0.75, 1.3) * rng.uniform(1 - 0.25 * s, 1 + 0.25 * s,
                                                             frames // 8 + 2)),
        gamma=rng.uniform(1.9, 2.4), contrast=rng.uniform(-0.1, 0.35),
        white=rng.uniform(1.2, 4.0), shutter=rng.uniform(1 / 500, 1 / 25) * s,
        vignette=rng.uniform(0.05, 0.45), shot=rng.uniform(0.1, 1.0) * s,
        read=rng.uniform(0.5, 4.0) * s,
        jpeg=int(rng.uniform(35, 92)) if rng.random() < 0.6 * s + 0.1 else None,
        ae_key=rng.uniform(0.14, 0.36))  # drawn last: every other choice of a seed stays as it was


def distortion_maps(pipe: Pipeline, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Remap tables for radial distortion, scaled so the output has no empty border."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, norm = width / 2, height / 2, math.hypot(width / 2, height / 2)
    x, y = (u + 0.5 - cx) / norm, (v + 0.5 - cy) / norm
    r2 = x * x + y * y
    f = 1 + pipe.k1 * r2 + pipe.k2 * r2 * r2
    corner = 1 + pipe.k1 + pipe.k2
    if corner > 1:  # pincushion would sample outside the render at the corners: zoom in
        f = f / corner
    return (x * f * norm + cx - 0.5).astype(np.float32), (y * f * norm + cy - 0.5).astype(
        np.float32)


def distort(pipe: Pipeline, image: np.ndarray, label: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Apply the lens to the render-resolution image and label (no-op without distortion)."""
    if pipe.k1 == 0.0 and pipe.k2 == 0.0:
        return image, label
    if pipe.maps is None:
        pipe.maps = distortion_maps(pipe, *label.shape)
    mx, my = pipe.maps
    image = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    label = cv2.remap(label, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    return image, label


def auto_exposure(lin: np.ndarray, key: float) -> float:
    """Gain that brings the frame's log-average luminance to ``key``, as camera metering does.

    The log average (not the mean) and a weight that grows towards the bottom of the frame keep
    a bright sky from setting the exposure: real cameras expose for the scene, so pavement and
    walls come out mid-grey and the sky often near white. Metering on the plain mean left the
    ground of the synthetic frames about half as bright as in photos (median frame 84 against
    116 of 255), and the only pale grey in training was the sky.
    """
    sub = lin[::4, ::4]
    lum = sub @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    weight = np.linspace(0.5, 1.5, lum.shape[0], dtype=np.float32)[:, None]
    log_avg = math.exp(float((np.log(lum + 1e-4) * weight).sum() / (weight.sum() * lum.shape[1])))
    return float(np.clip(key / log_avg, 0.5, 8.0))


def develop(pipe: Pipeline, image: np.ndarray, frame: int, seed: int, yaw_rate: float,
            speed: float, focal: float) -> np.ndarray:
    """Scene radiance (float32 RGB 0..255) -> the uint8 picture a camera would deliver."""
    h, w = image.shape[:2]
    rng = np.random.default_rng([seed, frame, 7])
    x = image
    length = abs(yaw_rate) * pipe.shutter * focal
    if length > 1.0:  # panning blur
        k = int(min(length, 25)) | 1
        x = cv2.blur(x, (k, 1))
    zoom = abs(speed) * pipe.shutter * 0.05
    if zoom > 0.002:  # forward motion blur: average with a slightly zoomed copy
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, 1 + zoom)
        x = 0.5 * x + 0.5 * cv2.warpAffine(x, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    gain = float(np.interp(frame / 8.0, np.arange(len(pipe.exposure_knots)),
                           pipe.exposure_knots))
    lin = (np.maximum(x, 0) / 255.0) ** 2.2
    lin = lin * (gain * auto_exposure(lin, pipe.ae_key) * pipe.wb)
    lin = lin * (1 + lin / pipe.white ** 2) / (1 + lin)  # Reinhard with a white point
    y = lin ** (1 / pipe.gamma)
    y = y + pipe.contrast * y * (1 - y) * (2 * y - 1)  # S-curve
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    y = y * (1 - pipe.vignette * r2)[..., None] * 255
    sigma = np.sqrt(pipe.shot * np.maximum(y, 0) + pipe.read ** 2)
    y = y + rng.standard_normal(y.shape, dtype=np.float32) * sigma
    out = np.clip(y + 0.5, 0, 255).astype(np.uint8)
    if pipe.jpeg is not None:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, pipe.jpeg])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)
