"""One preprocessing path for serving and training validation; shared metrics, errors, CLI.

Real torch model (tiny random checkpoint), real image files, real Segmenter and Validator.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from etc_ros.checkpoint import load_model
from etc_ros.cli import EXIT_USAGE, Parser, fail
from etc_ros.errors import one_line
from etc_ros.metrics import (
    accumulate_confusion,
    class_iou,
    mean_iou,
    new_confusion,
    percentiles,
)
from etc_ros.preprocess import resize_image, resize_labels
from etc_ros.segmenter import Segmenter
from training.datasets import VideoSequence
from training.transforms import Clip, resize_clip
from training.validation import Validator

NUM_CLASSES = 19


def _frames(h: int, w: int, n: int, seed: int) -> list[np.ndarray]:
    """Smooth random frames (fine detail where INTER_AREA and INTER_LINEAR differ)."""
    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_CUBIC) for _ in range(n)]


def _sequence(folder: Path, frames: list[np.ndarray], labels: dict[int, np.ndarray]
              ) -> VideoSequence:
    folder.mkdir(parents=True)
    paths, label_paths = [], {}
    for i, rgb in enumerate(frames):
        paths.append(folder / f"{i:04d}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if i in labels:
            label_paths[i] = folder / f"{i:04d}_label.png"
            cv2.imwrite(str(label_paths[i]), labels[i])
    return VideoSequence(folder.name, paths, label_paths, "trainid", folder / "flow")


def _model_inputs(seg: Segmenter, frame: np.ndarray) -> torch.Tensor:
    """The tensor the Segmenter's network receives for `frame` (a forward pre-hook)."""
    seen: list[torch.Tensor] = []
    hook = seg.backend.model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        seg.segment([frame])
    finally:
        hook.remove()
    return seen[0][0].float()


@pytest.mark.parametrize("size", [(150, 200), (40, 100), (64, 128)])
def test_validation_feeds_the_model_what_the_node_does(checkpoint: Path, tmp_path: Path,
                                                       size: tuple[int, int]) -> None:
    seg = Segmenter(checkpoint, "cpu")
    frames = _frames(*size, n=2, seed=sum(size))
    validator = Validator([_sequence(tmp_path / "seq", frames, {})], NUM_CLASSES, seg.input_size)
    val_images = validator.sequences[0][0]
    for frame, val in zip(frames, val_images, strict=True):
        torch.testing.assert_close(val, _model_inputs(seg, frame), atol=1e-5, rtol=0)
    if size[0] > seg.input_size[0]:  # the old validation resize (bilinear) is not what serves
        h, w = seg.input_size
        old = cv2.resize(frames[0], (w, h), interpolation=cv2.INTER_LINEAR)
        assert not np.array_equal(old, resize_image(frames[0], (h, w)))


def test_val_miou_is_evaluates_miou_at_label_resolution(checkpoint: Path, tmp_path: Path) -> None:
    """Validator's mIoU = mIoU of the Segmenter's frame-resolution labels (what evaluate does)."""
    seg = Segmenter(checkpoint, "cpu")
    frames = _frames(96, 160, n=3, seed=7)
    served = [seg.segment([f])[0].labels for f in frames]
    rng = np.random.default_rng(1)
    gts = {}
    for i in (0, 2):  # ground truth: mostly the served labels, a few wrong, some ignored
        gt = served[i].copy()
        wrong = rng.random(gt.shape) < 0.3
        gt[wrong] = rng.integers(0, 5, int(wrong.sum()))
        gt[:4] = 255
        gts[i] = gt
    conf = new_confusion(NUM_CLASSES)
    for i, gt in gts.items():
        accumulate_confusion(conf, gt, served[i])
    validator = Validator([_sequence(tmp_path / "seq", frames, gts)], NUM_CLASSES, seg.input_size)
    model, _ = load_model(checkpoint, torch.device("cpu"))
    metrics = validator(model, torch.device("cpu"))
    assert 0.0 < metrics["miou"] < 100.0
    assert metrics["miou"] == pytest.approx(mean_iou(conf), abs=1e-9)
    assert "tc" in metrics
    # flows shared through a cache folder (what training runs do): same metrics, a second run reads
    seq3 = _sequence(tmp_path / "seq3", frames, gts)
    for _ in range(2):
        shared = Validator([seq3], NUM_CLASSES, seg.input_size, flow_cache_dir=tmp_path / "tc_flow")
        assert shared(model, torch.device("cpu")) == metrics
    assert len(list((tmp_path / "tc_flow").glob("*.npz"))) == 1
    # the teacher gate's validator: same mIoU, no flow prepared, no TC
    gate = Validator([_sequence(tmp_path / "seq2", frames, gts)], NUM_CLASSES, seg.input_size,
                     with_tc=False)
    assert all(flows == [] for _, _, flows in gate.sequences)
    assert [len(images) for images, _, _ in gate.sequences] == [2]  # the labelled frames only
    gate_metrics = gate(model, torch.device("cpu"))
    assert "tc" not in gate_metrics
    assert gate_metrics["miou"] == metrics["miou"]


def test_labels_resize_at_pixel_centres_in_training_too() -> None:
    label = np.random.default_rng(0).integers(0, NUM_CLASSES, (7, 9), dtype=np.uint8)
    size = (10, 13)
    exact = cv2.resize(label, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
    shifted = cv2.resize(label, size[::-1], interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(exact, shifted)  # the sizes tell the two apart
    np.testing.assert_array_equal(resize_labels(label, size), exact)
    clip = Clip([np.zeros((7, 9, 3), np.uint8)], label, 0)
    np.testing.assert_array_equal(resize_clip(clip, size).label, exact)
    wide = label.astype(np.int64)  # argmax output: no OpenCV support, same result
    np.testing.assert_array_equal(resize_labels(wide, size), exact)


def test_miou_is_over_the_classes_in_the_ground_truth() -> None:
    conf = new_confusion(4)
    gt = np.array([[0, 0, 1, 1, 255, 7]])
    pred = np.array([[0, 1, 1, 3, 2, 2]])  # class 3 predicted, absent from the ground truth
    accumulate_confusion(conf, gt, pred)
    assert conf.sum() == 4  # ignore (255) and unknown ids (7) left out
    ious = class_iou(conf)
    assert ious[0] == pytest.approx(50.0) and ious[1] == pytest.approx(100 / 3)
    assert ious[2] is None and ious[3] == 0.0
    assert mean_iou(conf) == pytest.approx((50.0 + 100 / 3) / 2)
    assert mean_iou(new_confusion(4)) is None
    with pytest.raises(ValueError, match="differ in size"):
        accumulate_confusion(conf, gt, pred[:, :3])


def test_percentiles() -> None:
    p = percentiles([float(v) for v in range(1, 101)])
    assert p == {"p50": pytest.approx(50.5), "p95": pytest.approx(95.05), "max": 100.0}
    assert all(np.isnan(v) for v in percentiles([]).values())


def test_one_line_error_text() -> None:
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(KeyError()) == "KeyError"

    class Wrapped(Exception):
        pass

    wrapped = Wrapped("Caught Wrapped in DataLoader worker process 0.\nOriginal Traceback "
                      "(most recent call last):\n  File x\n"
                      f"{Wrapped.__module__}.{Wrapped.__name__}: unreadable image: a.png")
    assert one_line(wrapped) == "unreadable image: a.png"


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    parser = Parser("evaluate")
    parser.add_argument("--model", required=True)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args([])
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("evaluate: error: ") and "--model" in err and err.count("\n") == 1
    assert parser.prog == "python -m etc_ros.evaluate"
    assert fail("bench", RuntimeError("node died\n  details")) == 1
    assert capsys.readouterr().err == "bench: error: node died\n"
