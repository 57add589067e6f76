"""Synthetic streets v2: deterministic (whatever the worker count), all 19 classes, labels that
match the pixels, the generic layout and the CLI, rigs and ego motion in their ranges."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synthetic import (
    POLE,
    ROAD,
    SKY,
    SPLITS,
    USED_TRAIN_IDS,
    main,
    render_sequence,
    sequence_seed,
)
from training.synthetic.camera import sample_motion, sample_rig
from training.synthetic.layout import curvy_path
from training.synthetic.render import downsample

H, W = 64, 128
ARGS = ["--train", "2", "--val", "1", "--test", "1", "--frames", "3", "--height", str(H),
        "--width", str(W), "--seed", "3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    assert main(["--out", str(root / "a"), *ARGS, "--workers", "1"]) == 0
    assert main(["--out", str(root / "b"), *ARGS, "--workers", "2"]) == 0
    return root


@pytest.fixture(scope="module")
def sample() -> list[tuple[np.ndarray, np.ndarray]]:
    """Two frames of 18 sequences: the small set every class must appear in."""
    out = []
    for i in range(18):
        clip = list(render_sequence(sequence_seed(0, "train", i), 2, H, W))
        out += clip
    return out


def test_cli_writes_generic_layout(dataset: Path) -> None:
    root = dataset / "a"
    for split, count in zip(SPLITS, (2, 1, 1), strict=True):
        seqs = sorted(p.name for p in (root / split).iterdir())
        assert seqs == [f"{split}_{i:03d}" for i in range(count)]
        for seq in seqs:
            images = sorted(p.name for p in (root / split / seq / "images").iterdir())
            labels = sorted(p.name for p in (root / split / seq / "labels").iterdir())
            assert images == labels == ["000000.png", "000001.png", "000002.png"]
            rgb = cv2.imread(str(root / split / seq / "images" / "000001.png"), cv2.IMREAD_COLOR)
            label = cv2.imread(str(root / split / seq / "labels" / "000001.png"),
                               cv2.IMREAD_UNCHANGED)
            assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
            assert label.shape == (H, W) and label.dtype == np.uint8
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["sequences"] == {"train": 2, "val": 1, "test": 1}
    assert meta["train_ids"] == list(range(19)) and meta["render_scale"] == 2


def test_same_seed_gives_byte_identical_pngs_whatever_the_workers(dataset: Path) -> None:
    files_a = sorted(p.relative_to(dataset / "a") for p in (dataset / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(dataset / "b") for p in (dataset / "b").rglob("*.png"))
    assert files_a == files_b and len(files_a) == 2 * 4 * 3
    for rel in files_a:
        assert (dataset / "a" / rel).read_bytes() == (dataset / "b" / rel).read_bytes(), rel


def test_splits_and_seeds_hold_different_sequences(dataset: Path) -> None:
    first = [cv2.imread(str(dataset / "a" / split / f"{split}_000" / "images" / "000000.png"))
             for split in SPLITS]
    first.append(cv2.imread(str(dataset / "a" / "train" / "train_001" / "images" / "000000.png")))
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            assert np.abs(first[i].astype(int) - first[j].astype(int)).mean() > 5
    assert len({sequence_seed(0, split, i) for split in SPLITS for i in range(50)}) == 150


def test_all_19_classes_appear(sample: list) -> None:
    labels = np.stack([label for _, label in sample])
    assert set(np.unique(labels).tolist()) - {255} == set(USED_TRAIN_IDS)
    assert len(USED_TRAIN_IDS) == 19


def test_labels_align_with_pixels(sample: list) -> None:
    """Sky is brighter/bluer than road, and label boundaries sit on image edges."""
    sky_minus_road = []
    edge_ratio = []
    for rgb, label in sample:
        img = rgb.astype(np.float32)
        if (label == SKY).sum() > 50 and (label == ROAD).sum() > 50:
            sky, road = img[label == SKY].mean(0), img[label == ROAD].mean(0)
            sky_minus_road.append(float(sky[2] - road[2]))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        boundary = (label != np.roll(label, 1, 0)) | (label != np.roll(label, 1, 1))
        boundary[0], boundary[:, 0] = False, False
        boundary = cv2.dilate(boundary.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
        if boundary.sum() > 20 and (~boundary).sum() > 20:
            edge_ratio.append(grad[boundary].mean() / max(grad[~boundary].mean(), 1e-6))
    assert len(sky_minus_road) >= 3 and np.median(sky_minus_road) > 20
    assert np.median(edge_ratio) > 1.5
    shifted = []  # the same statistic with labels moved by 4 pixels is clearly weaker
    for rgb, label in sample:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        lab = np.roll(label, 4, 1)
        boundary = (lab != np.roll(lab, 1, 0)) | (lab != np.roll(lab, 1, 1))
        if boundary.sum() > 20:
            shifted.append(grad[boundary].mean() / max(grad[~boundary].mean(), 1e-6))
    assert np.median(shifted) < np.median(edge_ratio)


def test_frames_have_valid_shapes_and_ids(sample: list) -> None:
    for rgb, label in sample:
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        assert label.shape == (H, W) and label.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= set(USED_TRAIN_IDS) | {255}


def test_consecutive_frames_are_similar_but_differ() -> None:
    clip = list(render_sequence(sequence_seed(0, "val", 0), 3, H, W))
    for (rgb0, lab0), (rgb1, lab1) in zip(clip, clip[1:], strict=False):
        assert np.abs(rgb0.astype(np.float32) - rgb1).mean() > 0
        assert (lab0 == lab1).mean() > 0.6


def test_vote_keeps_thin_poles() -> None:
    """A 1-pixel pole in a 2x render keeps its output pixel; the image is area-averaged."""
    label = np.full((8, 8), ROAD, np.uint8)
    label[:, 3] = POLE
    image = np.zeros((8, 8, 3), np.float32)
    image[:, 3] = 200
    img, lab = downsample(image, label, 2)
    assert lab.shape == (4, 4) and (lab[:, 1] == POLE).all() and (lab[:, [0, 2, 3]] == ROAD).all()
    assert np.allclose(img[:, 1], 100)


def test_rigs_cover_heights_pitches_and_fields_of_view() -> None:
    rigs = [sample_rig(np.random.default_rng(i), kind) for i in range(60)
            for kind in ("car", "robot", "person", "mast")]
    heights = [r.height for r in rigs]
    pitches = [math.degrees(r.pitch) for r in rigs]
    fovs = [math.degrees(r.hfov) for r in rigs]
    assert 0.3 <= min(heights) < 0.5 and 4.5 < max(heights) <= 5.0
    assert 0 <= min(pitches) < 3 and 40 < max(pitches) <= 45
    assert 50 <= min(fovs) < 55 and 115 < max(fovs) <= 120


def test_ego_motion_turns_stops_and_reverses() -> None:
    path = curvy_path(np.random.default_rng(0), (0.0, 0.0), 0.0, 300, 1 / 20, 0.0)
    speeds, yaws = [], []
    for i in range(40):
        rng = np.random.default_rng(i)
        motion = sample_motion(rng, path, sample_rig(rng, "car"), 0.0, 3.0, 50.0)
        speeds.append([motion.speed(t) for t in np.linspace(0, 2.9, 30)])
        yaws.append([motion.at(t, 100.0, 64, 32).yaw for t in (0.0, 2.9)])
    assert min(min(s) for s in speeds) < -0.5                      # some reverse
    assert any(min(abs(v) for v in s) < 0.2 < max(s) for s in speeds)  # some stop or start
    assert max(abs(b - a) for a, b in yaws) > 0.05                   # the camera turns


def test_video_option_writes_readable_mp4(tmp_path: Path) -> None:
    path = tmp_path / "demo.mp4"
    assert main(["--video", str(path), "--video-frames", "4", "--height", str(H), "--width",
                 str(W)]) == 0
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 4 and frames[0].shape == (H, W, 3)


@pytest.mark.parametrize("bad", [[], ["--workers", "0"], ["--render-scale", "0"],
                                 ["--difficulty", "2"], ["--frames", "0"]])
def test_cli_rejects_bad_arguments(tmp_path: Path, bad: list[str]) -> None:
    extra = [] if not bad else ["--out", str(tmp_path)]
    with pytest.raises(SystemExit) as err:
        main(extra + bad)
    assert err.value.code == 2


def test_cli_rejects_out_and_video_together(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--video", str(tmp_path / "v.mp4")])


def test_auto_exposure_meters_the_scene_not_the_sky() -> None:
    """A bright sky over dark ground: the gain brings the ground up (a mean-metering camera
    would darken it), and a frame already at the key value keeps its exposure."""
    from training.synthetic.pipeline import auto_exposure
    frame = np.full((64, 64, 3), 0.02, np.float32)  # dark ground (linear)
    frame[:24] = 0.9  # bright sky in the top third
    gain = auto_exposure(frame, 0.2)
    assert gain > 2.0
    assert frame.mean() * gain > 0.2  # the plain mean lands above the key: the sky is ignored
    flat = np.full((64, 64, 3), 0.2, np.float32)
    assert auto_exposure(flat, 0.2) == pytest.approx(1.0, rel=1e-3)
    assert auto_exposure(np.zeros((64, 64, 3), np.float32), 0.2) == 8.0  # clamped in the dark


def test_shifted_domain_changes_the_look_not_the_scene() -> None:
    """--domain shifted renders a seed's same places (labels equal to the default domain's)
    with another look (darker, warmer images), and never changes the default output."""
    seed = sequence_seed(0, "train", 3)
    default = list(render_sequence(seed, 2, 48, 96))
    again = list(render_sequence(seed, 2, 48, 96, domain="default"))
    shifted = list(render_sequence(seed, 2, 48, 96, domain="shifted"))
    for (rgb, label), (rgb2, label2), (rgb_s, label_s) in zip(default, again, shifted,
                                                              strict=True):
        assert np.array_equal(rgb, rgb2) and np.array_equal(label, label2)
        assert np.array_equal(label, label_s)
        assert rgb_s.mean() < rgb.mean()  # dusk in fog
        r, b = rgb_s[..., 0].astype(float).mean(), rgb_s[..., 2].astype(float).mean()
        assert r > b  # the warm night camera
    with pytest.raises(ValueError, match="unknown domain"):
        next(render_sequence(seed, 1, 48, 96, domain="mars"))
