"""Clip transforms: one random draw per clip, applied to every frame, the label and the flows.

Temporal losses compare frames through optical flow, so augmentation must keep the clip
geometrically coherent: the same scale, crop and flip for every frame, and each flow field moved
with its images (resampled, its vectors rescaled, its x component negated on a flip).
Modelled on torchvision's references/segmentation transforms, which move image and target
together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from etc_ros.labels import IGNORE_INDEX
from etc_ros.preprocess import resize_labels

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class Clip:
    """Frames of one training sample in time order, with the labelled frame at ``key``.

    ``label`` belongs to ``frames[key]``; ``flows[(i, j)]`` is the (H, W, 2) flow from frame i to
    frame j (indices into ``frames``), in pixels, ``flow[y, x] = (dx, dy)``.
    """

    frames: list[np.ndarray]
    label: np.ndarray
    key: int
    flows: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    # 3x3 affine: pixel (x, y, 1) of the current arrays -> pixel of the clip as first read. The
    # teacher cache holds targets of whole frames and samples them through this matrix.
    geometry: np.ndarray = field(default_factory=lambda: np.eye(3))
    # Labels of every frame, where the dataset has them (the synthetic data labels all frames):
    # per-class recolouring needs each frame's own classes to recolour the clip consistently.
    frame_labels: list[np.ndarray] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) shared by every array of the clip."""
        return self.frames[0].shape[0], self.frames[0].shape[1]


def resize_clip(clip: Clip, size: tuple[int, int]) -> Clip:
    """Random-scale augmentation: resize every array to (height, width), bilinear images and
    flows, labels as the node does (etc_ros.preprocess: INTER_NEAREST_EXACT, no half-pixel shift).

    Validation does not come here: it resizes with etc_ros.preprocess alone, like the node.
    Flow vectors are pixel displacements, so they are multiplied by the per-axis scale.
    """
    h, w = size
    oh, ow = clip.size
    if (h, w) == (oh, ow):
        return clip
    frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in clip.frames]
    label = resize_labels(clip.label, (h, w))
    frame_labels = (None if clip.frame_labels is None
                    else [resize_labels(x, (h, w)) for x in clip.frame_labels])
    gain = np.array([w / ow, h / oh], dtype=np.float32)
    flows = {
        k: cv2.resize(v.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) * gain
        for k, v in clip.flows.items()
    }
    sx, sy = ow / w, oh / h  # pixel centres: x_old + 0.5 = (x_new + 0.5) * sx
    step = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    return replace(clip, frames=frames, label=label, flows=flows, geometry=clip.geometry @ step,
                   frame_labels=frame_labels)


def hflip_clip(clip: Clip) -> Clip:
    """Mirror left-right; a mirrored flow field also points the other way in x."""
    frames = [np.ascontiguousarray(f[:, ::-1]) for f in clip.frames]
    label = np.ascontiguousarray(clip.label[:, ::-1])
    frame_labels = (None if clip.frame_labels is None
                    else [np.ascontiguousarray(x[:, ::-1]) for x in clip.frame_labels])
    flows = {}
    for k, v in clip.flows.items():
        flipped = np.array(v[:, ::-1], dtype=np.float32)
        flipped[..., 0] *= -1.0
        flows[k] = flipped
    step = np.array([[-1.0, 0, clip.size[1] - 1], [0, 1, 0], [0, 0, 1]])
    return replace(clip, frames=frames, label=label, flows=flows, geometry=clip.geometry @ step,
                   frame_labels=frame_labels)


def crop_clip(clip: Clip, top: int, left: int, size: tuple[int, int]) -> Clip:
    """Crop a window, padding where it leaves the clip (images 0, label ignore, flow 0).

    Cropping translates both ends of every flow vector equally, so vectors are unchanged.
    """
    h, w = size
    oh, ow = clip.size
    pad_b, pad_r = max(0, top + h - oh), max(0, left + w - ow)

    def cut(a: np.ndarray, fill: float) -> np.ndarray:
        if pad_b or pad_r:
            pads = ((0, pad_b), (0, pad_r)) + ((0, 0),) * (a.ndim - 2)
            a = np.pad(a, pads, constant_values=fill)
        return np.ascontiguousarray(a[top : top + h, left : left + w])

    return replace(
        clip,
        frames=[cut(f, 0) for f in clip.frames],
        label=cut(clip.label, IGNORE_INDEX),
        flows={k: cut(v.astype(np.float32), 0.0) for k, v in clip.flows.items()},
        geometry=clip.geometry @ np.array([[1.0, 0, left], [0, 1, top], [0, 0, 1]]),
        frame_labels=(None if clip.frame_labels is None
                      else [cut(x, IGNORE_INDEX) for x in clip.frame_labels]),
    )


def jitter_clip(
    clip: Clip, brightness: float, contrast: float, saturation: float
) -> Clip:
    """One photometric change (factors around 1) for every frame; labels and flows untouched."""
    out = []
    for f in clip.frames:
        x = f.astype(np.float32) * brightness
        x = (x - x.mean()) * contrast + x.mean()
        gray = x.mean(axis=2, keepdims=True)
        x = (x - gray) * saturation + gray
        out.append(np.clip(x, 0, 255).astype(np.uint8))
    return replace(clip, frames=out)


def style_clip(clip: Clip, hue: float, gray: bool, blur_sigma: float, noise_std: float,
               rng: np.random.Generator) -> Clip:
    """Hue rotation (fraction of the colour wheel), greyscale, Gaussian blur and sensor noise,
    the same draw for every frame (noise excepted: it is independent per frame, as on a camera).

    Why: the synthetic world's colours and clean edges are the easiest cues to overfit; these
    cost nothing at run time and push the network towards shape and context.
    """
    out = []
    for f in clip.frames:
        x = f
        if hue:
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # uint8 hue is 0..179
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(hue * 180)) % 180).astype(
                np.uint8)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if gray:
            x = np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        if blur_sigma > 0:
            x = cv2.GaussianBlur(x, (0, 0), blur_sigma)
        if noise_std > 0:
            x = np.clip(x + rng.normal(0, noise_std, x.shape), 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(x))
    return replace(clip, frames=out)


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_IDENTITY_RECOLOUR = (0.0, 1.0, 1.0, 0.0, 0.0)
# Cityscapes train ids whose colour is not a cue: everything made (paint, brick, asphalt,
# clothes, car bodies). Vegetation (8), terrain (9) and sky (10) keep their colours: real
# grass is green and real sky is blue or grey, and recolouring them taught the models otherwise.
RECOLOURED_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


def draw_class_recolour(num_classes: int, class_prob: float,
                        rng: np.random.Generator) -> np.ndarray:
    """One recolouring per class: (num_classes, 5) rows of hue shift (fraction of the wheel),
    saturation gain, value gain, tint strength and tint hue; a class outside
    RECOLOURED_CLASSES, or not drawn, gets the identity (0, 1, 1, 0, 0)."""
    table = np.tile(np.array(_IDENTITY_RECOLOUR), (num_classes, 1))
    drawn = rng.random(num_classes) < class_prob
    drawn &= np.isin(np.arange(num_classes), RECOLOURED_CLASSES)
    n = int(drawn.sum())
    table[drawn] = np.stack([rng.uniform(-0.5, 0.5, n), rng.uniform(0.5, 1.5, n),
                             rng.uniform(0.6, 1.4, n), rng.uniform(0.0, 0.3, n),
                             rng.uniform(0.0, 1.0, n)], axis=1)
    return table


def recolour_classes(clip: Clip, table: np.ndarray) -> Clip:
    """Recolour each class's pixels by its row of ``table`` (see draw_class_recolour), every
    frame through its own label, so the clip stays photometrically consistent over time.

    Hue and saturation move coloured surfaces; the tint (a blend towards one colour at the
    pixel's own luminance) reaches grey ones, whose hue is only noise.
    Why: the synthetic world gives each class a narrow range of colours, and the models learn
    them (pale grey read as sky, pale walls as pavement on real photos); shifting the colours of
    whole classes, one draw per clip, pushes them towards shape, texture and context. Measured,
    it did not: the real-image scores fell (docs/EXPERIMENTS.md), so every config leaves it off.
    Ignored pixels (255) and clips without a label on every frame are left as they are.
    """
    if clip.frame_labels is None:
        return clip
    lut = np.tile(np.array(_IDENTITY_RECOLOUR, dtype=np.float32), (256, 1))
    lut[: len(table)] = table
    tint_hsv = np.stack([lut[:, 4] * 360.0, np.ones(256), np.ones(256)], 1).astype(np.float32)
    tints = cv2.cvtColor(tint_hsv[None], cv2.COLOR_HSV2RGB)[0]
    tints /= tints @ _LUMA[:, None]  # unit luminance: a tint keeps the pixel's brightness
    out = []
    for frame, label in zip(clip.frames, clip.frame_labels, strict=True):
        hsv = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in 0..360
        row = lut[label]
        hsv[..., 0] = (hsv[..., 0] + 360.0 * row[..., 0]) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * row[..., 1], 0.0, 1.0)
        hsv[..., 2] = np.clip(hsv[..., 2] * row[..., 2], 0.0, 1.0)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        amount = row[..., 3:4]
        rgb = (1.0 - amount) * rgb + amount * (rgb @ _LUMA)[..., None] * tints[label]
        out.append(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return replace(clip, frames=out)


@dataclass(frozen=True)
class TrainTransform:
    """Random scale, crop to ``crop_size``, horizontal flip, colour jitter and style changes,
    one draw per clip.

    ``base_size`` is the resolution the model runs at; random scales are relative to it.
    ``hue`` (max hue rotation, fraction of the wheel), ``grayscale_prob``, ``blur_prob`` and
    ``noise_std`` (in 0..255 units) are the domain-generalisation augmentations; 0 turns each off.
    ``class_recolour_prob`` is the share of clips whose classes are recoloured (each class with
    probability 0.5; see recolour_classes), for clips whose every frame is labelled.
    """

    base_size: tuple[int, int]
    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    flip_prob: float = 0.5
    jitter: float = 0.2
    hue: float = 0.0
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    noise_std: float = 0.0
    class_recolour_prob: float = 0.0
    num_classes: int = 19

    def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
        scale = rng.uniform(*self.scale_range)
        size = (
            max(1, round(self.base_size[0] * scale)),
            max(1, round(self.base_size[1] * scale)),
        )
        clip = resize_clip(clip, size)
        ch, cw = self.crop_size
        top = int(rng.integers(0, max(0, size[0] - ch) + 1))
        left = int(rng.integers(0, max(0, size[1] - cw) + 1))
        clip = crop_clip(clip, top, left, self.crop_size)
        if rng.random() < self.flip_prob:
            clip = hflip_clip(clip)
        if self.class_recolour_prob and rng.random() < self.class_recolour_prob:
            clip = recolour_classes(clip, draw_class_recolour(self.num_classes, 0.5, rng))
        if self.jitter > 0:
            b, c, s = rng.uniform(1 - self.jitter, 1 + self.jitter, size=3)
            clip = jitter_clip(clip, float(b), float(c), float(s))
        if self.hue or self.grayscale_prob or self.blur_prob or self.noise_std:
            hue = float(rng.uniform(-self.hue, self.hue)) if self.hue else 0.0
            gray = bool(rng.random() < self.grayscale_prob)
            sigma = float(rng.uniform(0.3, 1.5)) if rng.random() < self.blur_prob else 0.0
            noise = float(rng.uniform(0, self.noise_std)) if self.noise_std else 0.0
            clip = style_clip(clip, hue, gray, sigma, noise, rng)
        return clip


def normalize(
    frames: list[np.ndarray],
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB uint8 frames (H, W, 3) -> normalised float tensor (T, 3, H, W)."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s
