"""The pieces of adaptation that are not bookkeeping: target clips, temporal pseudo-labels with
class-balanced thresholds, ClassMix, the mean teacher and the collapse guard.

Kept apart from the loop (``training.adapt``) so each can be tested on a hand-made case.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from etc_ros.labels import IGNORE_INDEX
from etc_ros.preprocess import resize_image
from etc_ros.temporal import forward_backward_mask, warp
from training.datasets import load_flow, read_rgb
from training.footage import FootageClip
from training.transforms import Clip, jitter_clip, normalize, style_clip


@dataclass(frozen=True)
class StrongAugment:
    """Photometric-only strong view (geometry stays, so the warped pseudo-label still fits)."""

    jitter: float = 0.4
    hue: float = 0.05
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    noise_std: float = 6.0

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clip = Clip([rgb], np.zeros(rgb.shape[:2], np.uint8), 0)
        b, c, s = rng.uniform(1 - self.jitter, 1 + self.jitter, size=3)
        clip = jitter_clip(clip, float(b), float(c), float(s))
        clip = style_clip(clip, float(rng.uniform(-self.hue, self.hue)),
                          bool(rng.random() < self.grayscale_prob),
                          float(rng.uniform(0.3, 1.5)) if rng.random() < self.blur_prob else 0.0,
                          float(rng.uniform(0, self.noise_std)), rng)
        return clip.frames[0]


def _resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = flow.shape[:2]
    if (h, w) == tuple(size):
        return flow
    out = cv2.resize(flow, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out * np.array([size[1] / w, size[0] / h], np.float32)


class TargetPairs(Dataset):
    """Frame t and its neighbour s = t-k of the footage's training part, as the loop needs them.

    Items: ``weak_t``/``weak_s`` (3, H, W) normalised at the student's input size, ``strong_t``
    (a photometric strong view of t), ``flow_fw`` t -> s and ``flow_bw`` s -> t (2, H, W) and,
    with ``teacher_size``, ``teacher_t``/``teacher_s`` at the teacher's input size. One random
    horizontal flip for the whole item.
    """

    def __init__(self, clips: Sequence[FootageClip], max_offset: int, input_size: tuple[int, int],
                 strong: StrongAugment, teacher_size: tuple[int, int] | None = None,
                 flip_prob: float = 0.5) -> None:
        self.clips = list(clips)
        self.items = [(c, t, s) for c, clip in enumerate(self.clips)
                      for t, s, _ in clip.pairs(max_offset)]
        self.input_size = tuple(input_size)
        self.teacher_size = None if teacher_size is None else tuple(teacher_size)
        self.strong = strong
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        c, t, s = self.items[index]
        clip = self.clips[c]
        full = [read_rgb(clip.files[t]), read_rgb(clip.files[s])]
        flows = [_resize_flow(load_flow(clip.folder, a, b), self.input_size)
                 for a, b in ((t, s), (s, t))]
        frames = [resize_image(f, self.input_size) for f in full]
        teacher = ([resize_image(f, self.teacher_size) for f in full]
                   if self.teacher_size is not None else [])
        if rng.random() < self.flip_prob:
            frames = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
            teacher = [np.ascontiguousarray(f[:, ::-1]) for f in teacher]
            flows = [np.ascontiguousarray(f[:, ::-1]) * np.array([-1, 1], np.float32)
                     for f in flows]
        weak = normalize(frames)
        item = {"weak_t": weak[0], "weak_s": weak[1],
                "strong_t": normalize([self.strong(frames[0], rng)])[0],
                "flow_fw": torch.from_numpy(flows[0]).permute(2, 0, 1).float(),
                "flow_bw": torch.from_numpy(flows[1]).permute(2, 0, 1).float()}
        if teacher:
            tt = normalize(teacher)
            item["teacher_t"], item["teacher_s"] = tt[0], tt[1]
        return item


@torch.no_grad()
def warped_pseudo_labels(probs_s: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The labeller's class probabilities on frame s, carried to frame t by the flow t -> s.

    Returns (confidence, label, valid), each (N, H, W): valid pixels stay inside frame s and pass
    the forward-backward flow check (``etc_ros.temporal``, the one warping module).
    """
    warped, inside = warp(probs_s, flow_fw, mode="bilinear")
    valid = (inside[:, 0] > 0.5) & (forward_backward_mask(flow_fw, flow_bw)[:, 0] > 0.5)
    conf, label = warped.max(1)
    return conf, label, valid


class ClassThresholds:
    """Per-class confidence thresholds: ``min(threshold, running quantile of the class's own
    confidences)``, so a class the labeller is never very sure of (the rare, small ones) still
    gets pseudo-labels, while frequent classes keep only their confident pixels (CBST-style)."""

    def __init__(self, num_classes: int, threshold: float, quantile: float,
                 momentum: float = 0.9) -> None:
        self.threshold = threshold
        self.quantile = quantile
        self.momentum = momentum
        self.values = torch.full((num_classes,), threshold)

    def update(self, conf: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        for c in label[valid].unique().tolist():
            q = torch.quantile(conf[valid & (label == c)].float().flatten()[:100_000],
                               self.quantile).item()
            self.values[c] = self.momentum * self.values[c] + (1 - self.momentum) * q

    def apply(self, conf: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Labels with ignored (255) where invalid or below the class's threshold."""
        limit = torch.clamp(self.values.to(conf.device), max=self.threshold)[label]
        keep = valid & (conf >= limit)
        return torch.where(keep, label, torch.full_like(label, IGNORE_INDEX))


def classmix(target: torch.Tensor, target_label: torch.Tensor, source: torch.Tensor,
             source_label: torch.Tensor, generator: torch.Generator, prob: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste half of each source image's classes, pixels and labels, into the target image.

    (N, 3, H, W) images, (N, H, W) labels. Returns (image, label, pasted mask (N, H, W) bool).
    A sample is mixed with probability ``prob``; ignored source pixels are never pasted.
    """
    mask = torch.zeros_like(target_label, dtype=torch.bool)
    for i in range(target.shape[0]):
        if torch.rand((), generator=generator).item() >= prob:
            continue
        classes = source_label[i].unique()
        classes = classes[classes != IGNORE_INDEX]
        if classes.numel() == 0:
            continue
        order = torch.randperm(classes.numel(), generator=generator)
        chosen = classes[order[: max(1, (classes.numel() + 1) // 2)]]
        mask[i] = torch.isin(source_label[i], chosen.to(source_label.device))
    image = torch.where(mask[:, None], source, target)
    label = torch.where(mask, source_label.to(target_label.dtype), target_label)
    return image, label, mask


class MeanTeacher:
    """An exponential moving average of a model's weights (BN statistics copied), eval mode."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, live in zip(self.model.parameters(), model.parameters(), strict=True):
            ema.mul_(self.decay).add_(live.detach(), alpha=1 - self.decay)
        for ema, live in zip(self.model.buffers(), model.buffers(), strict=True):
            ema.copy_(live)


@torch.no_grad()
def class_shares(model: nn.Module, frames: torch.Tensor, num_classes: int,
                 device: torch.device, batch: int = 8) -> np.ndarray:
    """Share of pixels predicted as each class over ``frames`` (N, 3, H, W), in eval mode."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for chunk in frames.split(batch):
        pred = model(chunk.to(device)).argmax(1).cpu()
        counts += torch.bincount(pred.flatten(), minlength=num_classes).double()
    model.train(was_training)
    return (counts / counts.sum().clamp(min=1)).numpy()


@dataclass(frozen=True)
class CollapseGuard:
    """Stops self-training that erodes what is rare or lets one class take the frame.

    A class the unadapted model predicted on >= ``min_share`` of the held-out pixels has vanished
    when its share falls below ``vanish_ratio`` x that; a class swallows the frame when its share
    reaches ``swallow_share`` and grew by more than ``swallow_growth`` over the unadapted share.
    """

    min_share: float = 0.01
    vanish_ratio: float = 0.1
    swallow_share: float = 0.6
    swallow_growth: float = 0.25

    def check(self, base: np.ndarray, now: np.ndarray, names: Sequence[str]) -> str | None:
        """None while healthy, else one line saying which class did what."""
        for c in np.flatnonzero(base >= self.min_share):
            if now[c] < self.vanish_ratio * base[c]:
                return (f"class {names[c]} vanished: {100 * base[c]:.1f} % of held-out pixels "
                        f"before adaptation, {100 * now[c]:.2f} % now")
        c = int(now.argmax())
        if now[c] >= self.swallow_share and now[c] - base[c] > self.swallow_growth:
            return (f"class {names[c]} swallows the frame: {100 * now[c]:.0f} % of held-out "
                    f"pixels (was {100 * base[c]:.0f} %)")
        return None


def pseudo_ce(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the kept pseudo-labels; zero (with a graph) when none is kept."""
    if not (label != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, label.long(), ignore_index=IGNORE_INDEX)
