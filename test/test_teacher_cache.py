"""Teacher gate, teacher-target cache reuse/invalidation, and targets warped like the clip."""

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from etc_ros.checkpoint import (
    load_checkpoint,
    load_model,
    make_random_checkpoint,
    save_checkpoint,
)
from training.datasets import ClipDataset, VideoSequence, generic_sequences, read_rgb
from training.teacher_cache import (
    TeacherGateError,
    TeacherTargetDataset,
    build_cache,
    cache_key,
    check_teacher_gate,
    sample_cached,
    teacher_targets,
)
from training.transforms import Clip, crop_clip, hflip_clip, normalize, resize_clip


def test_gate_refuses_a_weak_teacher_unless_overridden() -> None:
    with pytest.raises(TeacherGateError, match=r"42.0 is only \+2.0 .*allow_weak_teacher"):
        check_teacher_gate(42.0, 40.0, "t.safetensors", "ref.safetensors", 3.0, False)
    assert "skipped" in check_teacher_gate(None, None, "t.safetensors", "ref.safetensors", 3.0,
                                           True)
    assert "passed" in check_teacher_gate(43.5, 40.0, "t.safetensors", "ref.safetensors", 3.0,
                                          False)
    with pytest.raises(TeacherGateError, match="teacher_gate_reference"):
        check_teacher_gate(43.5, 40.0, "t.safetensors", None, 3.0, False)
    with pytest.raises(TeacherGateError, match="labelled val split"):
        check_teacher_gate(None, 40.0, "t.safetensors", "ref.safetensors", 3.0, False)


def _teacher(path: Path) -> Path:
    make_random_checkpoint(path, "lraspp_mobilenetv3", input_size=(64, 128))
    return path


def _data(root: Path, seed: int, frames: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    for s in range(2):
        d = root / "train" / f"seq{s}"
        (d / "images").mkdir(parents=True)
        (d / "labels").mkdir()
        for i in range(frames):
            cv2.imwrite(str(d / "images" / f"{i:04d}.png"),
                        rng.integers(0, 255, (48, 96, 3), dtype=np.uint8))
            cv2.imwrite(str(d / "labels" / f"{i:04d}.png"), np.zeros((48, 96), np.uint8))
    return root


def _clips(seqs: list[VideoSequence], max_offset: int = 1, frames: int = 2,
           transform=lambda c, r: c) -> ClipDataset:
    return ClipDataset(seqs, 19, frames, max_offset, transform, False)


def test_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", 0)
    clips = _clips(generic_sequences(data, "train"))
    teacher_path = _teacher(tmp_path / "t.safetensors")
    teacher, meta = load_model(teacher_path)
    cache = tmp_path / "cache"
    first = build_cache(teacher, teacher_path, meta, clips, cache, (1.0,), True,
                        torch.device("cpu"))
    stamp = (first / "00000.safetensors").stat().st_mtime_ns
    assert build_cache(teacher, teacher_path, meta, clips, cache, (1.0,), True,
                       torch.device("cpu")) == first
    assert (first / "00000.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    # other parameters, other data, other teacher: new keys; stale entries go
    assert cache_key(teacher_path, clips, (0.75, 1.0), True) != first.name
    cv2.imwrite(str(clips.sequences[1].frames[2]), np.zeros((48, 96, 3), np.uint8))
    second = build_cache(teacher, teacher_path, meta, clips, cache, (1.0,), True,
                         torch.device("cpu"))
    assert second != first and not first.exists()
    tensors, meta = load_checkpoint(teacher_path)
    save_checkpoint(teacher_path, {k: v + 1 if v.is_floating_point() else v
                                   for k, v in tensors.items()}, meta)
    assert cache_key(teacher_path, clips, (1.0,), True) != second.name
    with safe_open(str(second / "00001.safetensors"), framework="pt") as f:
        logits = f.get_tensor("logits")
        assert logits.dtype == torch.float16 and logits.shape == (3, 19, 16, 32)
        assert f.get_tensor("features").shape[-2:] == (4, 8)


def test_cached_targets_follow_the_clip_geometry() -> None:
    # A map that encodes x and y; warping it through a resized, cropped, flipped clip must
    # give the same values as applying those transforms to a full-resolution copy.
    h, w = 48, 96
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    full = np.stack([xs, ys], axis=-1)
    clip = Clip([full.copy()], np.zeros((h, w), np.uint8), 0)
    clip = hflip_clip(crop_clip(resize_clip(clip, (72, 144)), 10, 30, (32, 64)))
    cached = torch.from_numpy(full).permute(2, 0, 1)
    warped, valid = sample_cached(cached, (h, w), clip.geometry, (32, 64), (32, 64))
    expected = torch.from_numpy(clip.frames[0]).permute(2, 0, 1)
    assert valid.all()
    assert torch.allclose(warped, expected, atol=0.05)
    # a crop past the frame's edge is marked invalid there
    edge = crop_clip(Clip([full], np.zeros((h, w), np.uint8), 0), 0, 80, (16, 32))
    _, valid = sample_cached(cached, (h, w), edge.geometry, (16, 32), (16, 32))
    assert valid[0, :, :16].all() and not valid[0, :, 17:].any()


def test_dataset_items_carry_warped_teacher_targets(tmp_path: Path) -> None:
    data = _data(tmp_path / "data", 1)
    clips = _clips(generic_sequences(data, "train"),
                   transform=lambda c, r: crop_clip(c, 8, 16, (32, 64)))
    teacher_path = _teacher(tmp_path / "t.safetensors")
    teacher, meta = load_model(teacher_path)
    cache = build_cache(teacher, teacher_path, meta, clips, tmp_path / "c", (1.0,), False,
                        torch.device("cpu"))
    item = TeacherTargetDataset(clips, cache, (32, 64))[0]
    assert item["teacher_logits"].shape == (2, 19, 8, 16)
    assert item["teacher_features"].shape[-2:] == (4, 8)
    assert item["teacher_valid"].all()


def test_sparse_labels_cache_only_the_frames_clips_draw(tmp_path: Path) -> None:
    """Cityscapes-like: one labelled frame per sequence; the cache holds t +- max_offset only,
    and the clips read their targets from the right rows."""
    data = _data(tmp_path / "data", 2, frames=9)
    seqs = generic_sequences(data, "train")
    sparse = [replace(seqs[0], labels={4: seqs[0].labels[4]}), replace(seqs[1], labels={})]
    clips = _clips(sparse, max_offset=2, frames=3)
    assert clips.frames_drawn() == [[2, 3, 4, 5, 6], []]
    teacher_path = _teacher(tmp_path / "t.safetensors")
    teacher, meta = load_model(teacher_path)
    cache = build_cache(teacher, teacher_path, meta, clips, tmp_path / "c", (1.0,), False,
                        torch.device("cpu"))
    with safe_open(str(cache / "00000.safetensors"), framework="pt") as f:
        cached = f.get_tensor("logits").float()
    assert cached.shape[0] == 5 and not (cache / "00001.safetensors").exists()
    frame_6 = normalize([read_rgb(sparse[0].frames[6])])
    expected, _ = teacher_targets(teacher, frame_6, meta.input_size, (1.0,), False)
    assert torch.allclose(cached[4], expected[0], atol=2e-2)  # row 4 is frame 6
    for _ in range(4):  # k drawn at random: every clip's targets come from its frames' rows
        item = TeacherTargetDataset(clips, cache, (48, 96))[0]
        rows = [f - 2 for f in item["source"][1:].tolist()]
        for got, row in zip(item["teacher_logits"], rows, strict=True):
            want, _ = sample_cached(cached[row], (48, 96), item["geometry"].numpy(), (48, 96),
                                    (12, 24))
            assert torch.allclose(got.float(), want, atol=1e-3)
