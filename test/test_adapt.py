"""training.adapt: footage in every form (MCAP Image and CompressedImage, video, image folder),
end to end on tiny models, and its parts on hand-made cases (ClassMix, the warped pseudo-label,
the collapse guard, one-line errors, metadata, report)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from etc_ros import image_io
from etc_ros.bags import BagWriter
from etc_ros.checkpoint import load_checkpoint, make_random_checkpoint
from training import adapt
from training.adapt_method import (
    ClassThresholds,
    CollapseGuard,
    classmix,
    warped_pseudo_labels,
)
from training.footage import FootageError, parse_ranges, sha256_of
from training.synthetic import generate_dataset, render_sequence

SIZE = (64, 128)
FRAMES = 12
IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Labelled source data, a shifted-style clip as bag / video / folder, tiny checkpoints."""
    root = tmp_path_factory.mktemp("adapt")
    generate_dataset(root / "source", {"train": 2}, frames=3, height=SIZE[0], width=SIZE[1])
    frames = [rgb for rgb, _ in render_sequence(7, FRAMES, SIZE[0], SIZE[1], 1, 0.7, "shifted")]
    images = root / "images"
    images.mkdir()
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(images / f"{i:04d}.png"), rgb[..., ::-1])
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE[::-1])
    for rgb in frames:
        writer.write(rgb[..., ::-1].copy())
    writer.release()
    with BagWriter(root / "bag", "mcap") as bag:
        for i, rgb in enumerate(frames):
            header = Header(frame_id="cam")
            header.stamp.sec = 10 + i
            t = (10 + i) * 1_000_000_000
            bag.write("/cam/image_raw", IMAGE, t,
                      serialize_message(image_io.rgb8_to_image(rgb, "bgr8", header)))
            bag.write("/cam/image_raw/compressed", COMPRESSED, t,
                      serialize_message(image_io.encode_compressed(rgb, "jpeg", header)))
    make_random_checkpoint(root / "student.safetensors", "lraspp_mobilenetv3", SIZE)
    make_random_checkpoint(root / "teacher.safetensors", "pspnet18", SIZE)
    return {"root": root, "images": images, "video": video, "bag": root / "bag",
            "source": root / "source", "student": root / "student.safetensors",
            "teacher": root / "teacher.safetensors"}


def _args(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--data-root", str(world["source"]), "--student", str(world["student"]),
            "--teacher", str(world["teacher"]), "--out", str(out), "--device", "cpu",
            "--set", "iters=3", "--set", "teacher_iters=2", "--set", "check_every=1",
            "--set", "source_batch=2", "--set", "target_batch=2", "--set", "workers=0",
            "--set", "flow_workers=1",
            "--set", "holdout_share=0.2", "--set", "guard_min_share=1.0", *extra]


def test_adapt_on_bag_video_and_folder(world: dict[str, Path], tmp_path: Path) -> None:
    """Both bag topics (Image and CompressedImage), the video and the folder in one run; the
    adapted student, its ONNX export, metadata naming the footage, and the report."""
    out = tmp_path / "run"
    argv = _args(world, out, "--bag", str(world["bag"]), "--topic", "/cam/image_raw",
                 "--bag", str(world["bag"]), "--topic", "/cam/image_raw/compressed",
                 "--video", str(world["video"]), "--images", str(world["images"]),
                 "--exclude", "0-1")
    assert adapt.main(argv) == 0
    tensors, meta = load_checkpoint(out / "student_adapted.safetensors")
    before, _ = load_checkpoint(world["student"])
    assert any(not torch.equal(tensors[k].float(), before[k].float())
               for k in before if before[k].is_floating_point())
    assert (out / "student_adapted.onnx").stat().st_size > 0
    footage = meta.recipe["adaptation"]["footage"]
    assert [f["kind"] for f in footage] == ["bag", "bag", "video", "images"]
    assert [f["topic"] for f in footage[:2]] == ["/cam/image_raw", "/cam/image_raw/compressed"]
    assert footage[0]["sha256"] == sha256_of(world["bag"])
    assert footage[2]["sha256"] == sha256_of(world["video"])
    for f in footage:  # 12 frames, 0-1 excluded, last 20 % held out
        assert f["frames_train"] + f["frames_heldout"] == FRAMES - 2
        assert f["frames_heldout"] == 2
        assert f["train_ranges"] == [[2, 9]]
    assert meta.recipe["adaptation"]["config"]["pseudo_source"] == "student"
    assert meta.recipe["adaptation"]["selected_step"] == 3
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report) >= {"student", "config", "footage", "class_names", "phases",
                           "timings_s", "evaluation"}
    student = report["phases"]["student"]
    assert [h["step"] for h in student["history"]] == [0, 1, 2, 3]
    assert all(abs(sum(h["shares"]) - 1) < 1e-6 for h in student["history"])
    assert set(report["timings_s"]) >= {"footage", "flow", "student", "export", "total"}
    for name in ("shares.png", "strip.png", "report.md"):
        assert (out / "report" / name).stat().st_size > 0


def test_teacher_path_adapts_and_distils(world: dict[str, Path], tmp_path: Path) -> None:
    """pseudo_source=agree adapts the teacher first, writes it, then distils into the student;
    a labelled eval set gives per-class numbers before and after."""
    out = tmp_path / "run"
    argv = _args(world, out, "--images", str(world["images"]), "--set", "pseudo_source=agree",
                 "--eval-data-root", str(world["source"]), "--eval-split", "train")
    assert adapt.main(argv) == 0
    _, meta = load_checkpoint(out / "teacher_adapted.safetensors")
    assert meta.architecture == "pspnet18"
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["phases"]) == {"teacher", "student"}
    evaluation = report["evaluation"]
    assert evaluation["before"]["miou"] is not None and evaluation["after"]["miou"] is not None
    assert set(evaluation["after"]["iou"]) == set(report["class_names"])


def test_collapse_guard_stops_and_keeps_last_healthy(world: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """A guard that calls any class share a collapse fires at the first check: the run stops
    and the result is the unadapted weights, bit for bit."""
    out = tmp_path / "run"
    argv = _args(world, out, "--images", str(world["images"]), "--set", "guard_min_share=0.0",
                 "--set", "guard_vanish_ratio=2.0")
    assert adapt.main(argv) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    student = report["phases"]["student"]
    assert student["stopped"].startswith("step 1: class ")
    assert student["selected_step"] == 0
    tensors, _ = load_checkpoint(out / "student_adapted.safetensors")
    before, _ = load_checkpoint(world["student"])
    for k in before:  # the result is stored in fp16, like the shipped weights
        expected = before[k].half() if before[k].is_floating_point() else before[k]
        assert torch.equal(tensors[k], expected), k


def test_guard_rules() -> None:
    names = ["road", "car", "sky"]
    guard = CollapseGuard()
    base = np.array([0.5, 0.05, 0.45])
    assert guard.check(base, np.array([0.45, 0.04, 0.51]), names) is None
    assert "car vanished" in guard.check(base, np.array([0.5, 0.004, 0.496]), names)
    assert "road swallows" in guard.check(base, np.array([0.8, 0.05, 0.15]), names)
    # a class under min_share before adaptation may disappear without stopping the run
    assert guard.check(np.array([0.5, 0.005, 0.495]), np.array([0.5, 0.0, 0.5]), names) is None


def test_classmix_keeps_image_and_label_aligned() -> None:
    """Pasted pixels carry their source labels; ignored source pixels are never pasted."""
    target = torch.zeros(1, 3, 4, 4)
    source = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(1, 3, 1, 1) + 1
    source_label = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 255, 255],
                                  [3, 3, 255, 255]]])
    target_label = torch.full((1, 4, 4), 7)
    image, label, pasted = classmix(target, target_label, source, source_label,
                                    torch.Generator().manual_seed(0))
    chosen = label[pasted].unique()
    assert 1 <= len(chosen) <= 2 and 255 not in chosen.tolist()
    assert torch.equal(pasted, torch.isin(source_label, chosen))
    assert torch.equal(image[:, :, pasted[0]], source[:, :, pasted[0]])
    assert (image[:, :, ~pasted[0]] == 0).all() and (label[~pasted] == 7).all()


def test_pseudo_label_follows_a_shifted_square() -> None:
    """Frame s has a square of class 3 at x 10..17; frame t sees it 5 px to the left (flow t->s
    is +5 in x): the pseudo-label of t has the square at x 5..12, and the band whose source
    lies outside frame s is invalid."""
    h, w, c = 16, 32, 4
    probs = torch.full((1, c, h, w), 0.1)
    probs[0, 0] = 0.7
    probs[0, :, 4:12, 10:18] = 0.1
    probs[0, 3, 4:12, 10:18] = 0.7
    fw = torch.zeros(1, 2, h, w)
    fw[0, 0] = 5.0
    bw = torch.zeros(1, 2, h, w)
    bw[0, 0] = -5.0
    conf, label, valid = warped_pseudo_labels(probs, fw, bw)
    expected = torch.zeros(h, w, dtype=torch.long)
    expected[4:12, 5:13] = 3
    assert torch.equal(label[0][valid[0]], expected[valid[0]])
    assert not valid[0, :, w - 5:].any() and valid[0, :, : w - 5].all()
    thresholds = ClassThresholds(c, threshold=0.9, quantile=0.5, momentum=0.0)
    thresholds.update(conf, label, valid)
    kept = thresholds.apply(conf, label, valid)
    assert (kept[0][valid[0]] != 255).all()  # class thresholds came down to 0.7 from 0.9


@pytest.mark.parametrize(("extra", "message"), [
    (["--bag", "{root}/nope"], "not found"),
    (["--bag", "{bag}", "--topic", "/other"], "/other"),
    (["--video", "{root}/short.avi"], "frames"),
    (["--images", "{images}", "--exclude", "0-9"], "too short"),
    (["--images", "{images}", "--exclude", "3-x"], "--exclude"),
    (["--images", "{images}", "--set", "pseudo_source=oracle"], "pseudo_source"),
    ([], "no footage"),
])
def test_bad_input_is_one_line(world: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str], extra: list[str],
                               message: str) -> None:
    short = world["root"] / "short.avi"
    if not short.exists():
        writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE[::-1])
        for _ in range(2):
            writer.write(np.zeros((*SIZE, 3), np.uint8))
        writer.release()
    if extra[:1] == ["--bag"] and "--topic" not in extra:
        extra = [*extra, "--topic", "/cam/image_raw"]
    fmt = {k: str(v) for k, v in world.items()}
    argv = _args(world, tmp_path / "run", *[e.format(**fmt) for e in extra])
    assert adapt.main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # progress bars of the frames read may come before it
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in err


def test_parse_ranges() -> None:
    assert parse_ranges("0-50, 350-450,700-,9") == [(0, 50), (350, 450), (700, None), (9, 9)]
    with pytest.raises(FootageError):
        parse_ranges("5-2")
