"""The teacher's soft targets and features, computed once per clip frame and reused.

Distillation needs the frozen teacher on every clip frame of every step; running it online makes
ETC training several times the baseline's cost (the teacher is bigger and runs at >= 2x the
student's input). Its outputs depend only on the frame, so they are computed once, multi-scale
and flipped, and stored in float16:

    <cache_dir>/<key>/manifest.json            written last: a cache without it is incomplete
    <cache_dir>/<key>/<sequence index>.safetensors
        logits (F, C, H/4, W/4) and features (F, D, H/16, W/16), one row per frame that a
        training clip can draw (``ClipDataset.frames_drawn``: every frame of the synthetic
        data, 2 x max_offset + 1 of Cityscapes' 30), in frame order; the manifest lists them

(H, W) is the teacher's input size. ``key`` hashes the teacher checkpoint's bytes, those frames'
indices and bytes and the target parameters (scales, flip, strides), so a new teacher,
regenerated data, another max_offset or other scales give a new key and a rebuild; stale entries
are deleted.

Why whole frames and not clips: training draws a random scale, crop and flip per clip, so a
cached *crop* would be reused with the wrong geometry. Targets are cached for the whole frame
before augmentation, and every clip carries the affine map from its pixels to the frame's
(``Clip.geometry``, composed by the transforms). ``TeacherTargetDataset`` samples the cached
maps through that map, so the targets are warped exactly like the images (bilinear, with a
validity mask where the crop leaves the frame). Photometric augmentation does not move pixels
and so does not touch the targets: the teacher's view of the clean frame is the target for the
augmented one, which is what domain-generalising distillation wants.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from etc_ros.checkpoint import CheckpointMeta
from training.datasets import ClipDataset, read_rgb
from training.transforms import normalize

CACHE_VERSION = 2  # 2: only the frames clips draw, listed in the manifest
LOGIT_STRIDE = 4  # cached logits at teacher input / 4 (the teacher's own logits are at / 8)
FEATURE_STRIDE = 16  # cached features at teacher input / 16 (pooled further for affinities)


class TeacherGateError(Exception):
    """The teacher is not good enough to distil from; the message is one line."""


def check_teacher_gate(teacher_miou: float | None, reference_miou: float | None,
                       teacher_path: str, reference: str | None, min_gain: float,
                       allow_weak: bool) -> str:
    """Refuse a teacher whose val mIoU is not ``min_gain`` above the reference student's.

    Both numbers must be measured on the same frames: training.train evaluates the teacher and
    the reference on this run's val split (metrics stored in checkpoints may come from other
    data). Returns a one-line verdict for the log; raises TeacherGateError otherwise.
    """
    override = "set allow_weak_teacher: true (or --allow-weak-teacher) to distil anyway"
    if allow_weak:
        return f"teacher gate skipped (allow_weak_teacher) for {teacher_path}"
    if reference is None:
        raise TeacherGateError("distillation needs teacher_gate_reference (the checkpoint of the "
                               f"student trained without the teacher, e.g. student_tl), or "
                               f"{override}")
    if teacher_miou is None or reference_miou is None:
        raise TeacherGateError(f"the teacher gate needs a labelled val split to measure "
                               f"{teacher_path} and {reference} on (val_split), or {override}")
    gain = teacher_miou - reference_miou
    if gain < min_gain:
        raise TeacherGateError(
            f"teacher {teacher_path} val mIoU {teacher_miou:.1f} is only {gain:+.1f} over the "
            f"reference student {reference} ({reference_miou:.1f}) on this run's val split; "
            f"distilling needs >= +{min_gain:.1f} ({override})")
    return (f"teacher gate passed: teacher {teacher_miou:.1f} vs reference {reference_miou:.1f} "
            f"val mIoU (+{gain:.1f}) on this run's val split")


def cache_key(teacher_path: str | Path, clips: ClipDataset, scales: Sequence[float],
              flip: bool) -> str:
    """Hash of the teacher file, the drawn frames' indices and bytes (in order) and the target
    parameters."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": CACHE_VERSION, "scales": list(scales), "flip": flip,
                         "strides": [LOGIT_STRIDE, FEATURE_STRIDE]}).encode())
    h.update(Path(teacher_path).read_bytes())
    for seq, drawn in zip(clips.sequences, clips.frames_drawn(), strict=True):
        h.update(seq.name.encode())
        for i in drawn:
            h.update(f"{i}:{seq.frames[i].name}".encode())
            h.update(seq.frames[i].read_bytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def teacher_targets(teacher: nn.Module, frames: torch.Tensor, input_size: tuple[int, int],
                    scales: Sequence[float], flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale (+ flip) teacher outputs of normalised frames (N, 3, h, w) of any size.

    Returns log of the averaged class probabilities (N, C, H/4, W/4), usable as logits, and the
    averaged head features (N, D, H/16, W/16), where (H, W) is the teacher's ``input_size``.
    """
    h, w = input_size
    logit_size = (max(1, h // LOGIT_STRIDE), max(1, w // LOGIT_STRIDE))
    feat_size = (max(1, h // FEATURE_STRIDE), max(1, w // FEATURE_STRIDE))
    probs = feats = None
    passes = 0
    for s in scales:
        x = F.interpolate(frames, size=(round(h * s), round(w * s)), mode="bilinear",
                          align_corners=False)
        for flipped in (False, True) if flip else (False,):
            out = teacher.forward_train(x.flip(-1) if flipped else x)
            logits, feat = out.logits.float(), out.features.float()
            if flipped:
                logits, feat = logits.flip(-1), feat.flip(-1)
            p = F.interpolate(logits, size=logit_size, mode="bilinear",
                              align_corners=False).softmax(1)
            f = F.adaptive_avg_pool2d(feat, feat_size)
            probs = p if probs is None else probs + p
            feats = f if feats is None else feats + f
            passes += 1
    return (probs / passes).clamp_min(1e-4).log(), feats / passes


def build_cache(teacher: nn.Module, teacher_path: str | Path, meta: CheckpointMeta,
                clips: ClipDataset, cache_dir: str | Path, scales: Sequence[float], flip: bool,
                device: torch.device, batch_size: int = 4) -> Path:
    """The cache folder for this teacher + clips' frames + parameters, built now if missing."""
    cache_dir = Path(cache_dir)
    key = cache_key(teacher_path, clips, scales, flip)
    out = cache_dir / key
    if (out / "manifest.json").is_file():
        return out
    tmp = cache_dir / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    teacher.eval()
    sizes = []
    frames = clips.frames_drawn()
    with tqdm(total=sum(map(len, frames)), desc="teacher targets", leave=False) as bar:
        for i, (seq, drawn) in enumerate(zip(clips.sequences, frames, strict=True)):
            if not drawn:  # an unlabelled sequence: no clip comes from it
                sizes.append(None)
                continue
            logits, feats, size = [], [], None
            for start in range(0, len(drawn), batch_size):
                rgb = [read_rgb(seq.frames[f]) for f in drawn[start : start + batch_size]]
                size = rgb[0].shape[:2]
                x = normalize(rgb).to(device)
                lg, ft = teacher_targets(teacher, x, meta.input_size, scales, flip)
                logits.append(lg.half().cpu())
                feats.append(ft.half().cpu())
                bar.update(len(rgb))
            sizes.append(list(size))
            save_file({"logits": torch.cat(logits).contiguous(),
                       "features": torch.cat(feats).contiguous()},
                      str(tmp / f"{i:05d}.safetensors"))
    manifest = {"key": key, "version": CACHE_VERSION, "teacher": str(teacher_path),
                "sequences": [s.name for s in clips.sequences], "frames": frames,
                "frame_sizes": sizes,
                "scales": list(scales), "flip": flip, "teacher_input_size": list(meta.input_size)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for stale in cache_dir.iterdir():  # other keys: an older teacher or older data
        if stale.is_dir() and stale != tmp and (stale / "manifest.json").is_file():
            shutil.rmtree(stale)
    os.replace(tmp, out)
    return out


def _pixel_map(out_size: tuple[int, int], region: tuple[int, int]) -> np.ndarray:
    """3x3: pixel of an (oh, ow) map -> pixel of the (h, w) region it covers (centres aligned)."""
    (oh, ow), (h, w) = out_size, region
    return np.array([[w / ow, 0, 0.5 * w / ow - 0.5], [0, h / oh, 0.5 * h / oh - 0.5], [0, 0, 1]])


def sample_cached(cached: torch.Tensor, frame_size: tuple[int, int], geometry: np.ndarray,
                  crop_size: tuple[int, int], out_size: tuple[int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp a whole-frame map (C, he, we) into a crop's (C, *out_size), and its validity mask.

    ``geometry`` maps crop pixels to frame pixels (``Clip.geometry``); ``crop_size`` is the
    crop's pixel size, ``out_size`` the resolution wanted for it.
    """
    he, we = cached.shape[-2:]
    to_cache = np.linalg.inv(_pixel_map((he, we), frame_size))
    m = to_cache @ geometry @ _pixel_map(out_size, crop_size)
    ys, xs = np.mgrid[0 : out_size[0], 0 : out_size[1]].astype(np.float64)
    px = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    py = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    valid = (px >= -0.5) & (px <= we - 0.5) & (py >= -0.5) & (py <= he - 0.5)
    grid = torch.from_numpy(np.stack([(px + 0.5) / we * 2 - 1, (py + 0.5) / he * 2 - 1],
                                     axis=-1)).float()[None]
    warped = F.grid_sample(cached.float()[None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[0]
    return warped, torch.from_numpy(valid)[None].float()


class TeacherTargetDataset(Dataset):
    """A ClipDataset whose items also carry the cached teacher outputs, warped like the clip:
    ``teacher_logits`` (T, C, h/4, w/4), ``teacher_valid`` (T, 1, h/4, w/4) and
    ``teacher_features`` (T, D, h/8, w/8) for a (h, w) crop."""

    def __init__(self, clips: Dataset, cache: Path, crop_size: tuple[int, int]) -> None:
        self.clips = clips
        self.cache = Path(cache)
        manifest: dict[str, Any] = json.loads((self.cache / "manifest.json").read_text())
        self.frame_sizes = [None if s is None else tuple(s) for s in manifest["frame_sizes"]]
        # frame index -> row of its sequence's file
        self.rows = [{f: row for row, f in enumerate(drawn)} for drawn in manifest["frames"]]
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.clips)

    def __getattr__(self, name: str) -> Any:  # key, neighbor, ... of the wrapped dataset
        if name == "clips":
            raise AttributeError(name)
        return getattr(self.clips, name)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.clips[index]
        seq, *frames = item["source"].tolist()
        geometry = item["geometry"].numpy()
        h, w = self.crop_size
        logits, valid, feats = [], [], []
        with safe_open(str(self.cache / f"{seq:05d}.safetensors"), framework="pt") as f:
            for i in frames:
                row = self.rows[seq][i]
                lg, ok = sample_cached(f.get_slice("logits")[row], self.frame_sizes[seq], geometry,
                                       self.crop_size, (max(1, h // 4), max(1, w // 4)))
                ft, _ = sample_cached(f.get_slice("features")[row], self.frame_sizes[seq],
                                      geometry, self.crop_size, (max(1, h // 8), max(1, w // 8)))
                logits.append(lg)
                valid.append(ok)
                feats.append(ft)
        item["teacher_logits"] = torch.stack(logits)
        item["teacher_valid"] = torch.stack(valid)
        item["teacher_features"] = torch.stack(feats)
        return item
