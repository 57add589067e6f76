"""The synthetic street generator: exact, deterministic, moving, and in the generic layout."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synthetic import (
    CAR,
    PERSON,
    ROAD,
    SKY,
    SPLITS,
    USED_TRAIN_IDS,
    main,
    render_sequence,
    sequence_seed,
)

H, W = 64, 128


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    args = ["--train", "2", "--val", "1", "--test", "1", "--frames", "3", "--height", str(H),
            "--width", str(W), "--seed", "3"]
    assert main(["--out", str(root / "a"), *args]) == 0
    assert main(["--out", str(root / "b"), *args]) == 0
    return root


@pytest.fixture(scope="module")
def clips() -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [list(render_sequence(sequence_seed(0, "train", i), 4, H, W)) for i in range(4)]


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
    assert (root / "synthetic.json").is_file()


def test_same_seed_gives_byte_identical_pngs(dataset: Path) -> None:
    files_a = sorted(p.relative_to(dataset / "a") for p in (dataset / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(dataset / "b") for p in (dataset / "b").rglob("*.png"))
    assert files_a == files_b and len(files_a) == 2 * 4 * 3
    for rel in files_a:
        assert (dataset / "a" / rel).read_bytes() == (dataset / "b" / rel).read_bytes(), rel


def test_splits_hold_different_sequences(dataset: Path) -> None:
    first = [cv2.imread(str(dataset / "a" / split / f"{split}_000" / "images" / "000000.png"))
             for split in SPLITS]
    first.append(cv2.imread(str(dataset / "a" / "train" / "train_001" / "images" / "000000.png")))
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            assert np.abs(first[i].astype(int) - first[j].astype(int)).mean() > 5
    seeds = {sequence_seed(0, split, i) for split in SPLITS for i in range(50)}
    assert len(seeds) == 150


def test_different_seeds_differ() -> None:
    a = next(render_sequence(1, 1, H, W))
    b = next(render_sequence(2, 1, H, W))
    assert not np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])


def test_labels_use_only_the_street_classes(clips: list) -> None:
    for clip in clips:
        assert len(clip) == 4
        for rgb, label in clip:
            assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
            assert label.shape == (H, W) and label.dtype == np.uint8
            assert set(np.unique(label).tolist()) <= set(USED_TRAIN_IDS)


def test_street_geometry_is_plausible(clips: list) -> None:
    """Road right below the camera, sky only in the upper half, never road at the top."""
    for clip in clips:
        for _, label in clip:
            assert (label[-1, W // 2 - 8:W // 2 + 8] == ROAD).mean() > 0.5
            assert not (label[H // 2 + 4:] == SKY).any()
            assert not (label[0] == ROAD).any()


def test_consecutive_frames_are_similar_but_move(clips: list) -> None:
    other = clips[1][0][0].astype(np.float32)
    for clip in clips:
        for (rgb0, lab0), (rgb1, lab1) in zip(clip, clip[1:], strict=False):
            step = np.abs(rgb0.astype(np.float32) - rgb1).mean()
            assert step > 0
            assert not np.array_equal(lab0, lab1)
            assert (lab0 == lab1).mean() > 0.7
            if clip is not clips[1]:
                assert step < np.abs(rgb0.astype(np.float32) - other).mean()


def test_cars_and_people_appear(clips: list) -> None:
    labels = np.stack([label for clip in clips for _, label in clip])
    assert (labels == CAR).sum() > 50
    assert (labels == PERSON).sum() > 0


def test_video_option_writes_readable_mp4(tmp_path: Path) -> None:
    path = tmp_path / "demo.mp4"
    assert main(["--video", str(path), "--video-frames", "5", "--height", str(H), "--width",
                 str(W)]) == 0
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 5
    assert frames[0].shape == (H, W, 3)
    assert np.abs(frames[0].astype(int) - frames[4].astype(int)).mean() > 0


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main([])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--video", str(tmp_path / "v.mp4")])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--difficulty", "2"])
