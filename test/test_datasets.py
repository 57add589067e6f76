"""Dataset readers on small generated trees, the clip sampler, and the clip transforms."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from etc_ros.labels import CITYSCAPES_PALETTE, IGNORE_INDEX
from etc_ros.temporal import flow_to_tensor, warp
from training.datasets import (
    ClipDataset,
    DatasetError,
    flow_path,
    load_sequences,
    read_label,
    read_rgb,
)
from training.transforms import (
    Clip,
    TrainTransform,
    crop_clip,
    draw_class_recolour,
    hflip_clip,
    normalize,
    recolour_classes,
    resize_clip,
)

H, W = 16, 32


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _generic_tree(root: Path, frames: int = 5, label_value: int = 3) -> Path:
    seq = root / "train" / "seq_a"
    for t in range(frames):
        _png(seq / "images" / f"{t:06d}.png", _image(t))
        _png(seq / "labels" / f"{t:06d}.png", np.full((H, W), label_value, np.uint8))
    _png(root / "train" / "seq_b" / "images" / "000000.png", _image(9))  # unlabelled
    return seq


# ------------------------------------------------------------------------------ generic


def test_generic_reader_lists_frames_labels_and_flow_dir(tmp_path: Path) -> None:
    seq_dir = _generic_tree(tmp_path)
    seqs = load_sequences(tmp_path, "train", "generic")
    assert [s.name for s in seqs] == ["seq_a", "seq_b"]
    a, b = seqs
    assert [p.name for p in a.frames] == [f"{t:06d}.png" for t in range(5)]
    assert sorted(a.labels) == [0, 1, 2, 3, 4] and b.labels == {}
    assert a.flow_dir == seq_dir
    assert read_label(a.labels[2], a.label_format, 19).tolist() == np.full((H, W), 3).tolist()
    assert np.array_equal(read_rgb(a.frames[1])[..., ::-1], cv2.imread(str(a.frames[1])))


def test_generic_missing_label_file_names_it(tmp_path: Path) -> None:
    seq_dir = _generic_tree(tmp_path)
    (seq_dir / "labels" / "000002.png").unlink()
    with pytest.raises(DatasetError, match=r"missing label file: .*seq_a/labels/000002\.png"):
        load_sequences(tmp_path, "train", "generic")


def test_generic_label_out_of_range_and_ignore(tmp_path: Path) -> None:
    label = np.full((H, W), IGNORE_INDEX, np.uint8)
    label[0, 0] = 18
    ok = _png(tmp_path / "ok.png", label)
    assert read_label(ok, "trainid", 19)[0, 0] == 18
    label[1, 1] = 19
    bad = _png(tmp_path / "bad.png", label)
    with pytest.raises(DatasetError, match=r"class id 19 out of range 0\.\.18 .*bad\.png"):
        read_label(bad, "trainid", 19)


def test_unreadable_image_and_missing_split(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"unreadable image: .*broken\.png"):
        read_rgb(broken)
    with pytest.raises(DatasetError, match="not found"):
        load_sequences(tmp_path, "val", "generic")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_sequences(tmp_path, "train", "kitti")


# ------------------------------------------------------------------------------ Cityscapes


def _cityscapes_tree(root: Path, label_ids: np.ndarray, frames: int = 30) -> Path:
    for f in range(frames):
        _png(root / "leftImg8bit_sequence" / "val" / "aachen" /
             f"aachen_000001_{f:06d}_leftImg8bit.png", _image(f))
    return _png(root / "gtFine" / "val" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png",
                label_ids)


def test_cityscapes_snippet_labelled_on_20th_frame_with_train_ids(tmp_path: Path) -> None:
    ids = np.zeros((H, W), np.uint8)
    ids[:, :8], ids[:, 8:16], ids[:, 16:24] = 7, 26, 33  # road, car, bicycle; rest unlabeled
    _cityscapes_tree(tmp_path, ids)
    (seq,) = load_sequences(tmp_path, "val", "cityscapes")
    assert len(seq.frames) == 30 and list(seq.labels) == [19]
    assert seq.frames[19].name == "aachen_000001_000019_leftImg8bit.png"
    train = read_label(seq.labels[19], seq.label_format, 19)
    assert train[0, 0] == 0 and train[0, 8] == 13 and train[0, 16] == 18
    assert train[0, 24] == IGNORE_INDEX
    assert seq.flow_dir == tmp_path / "flow" / "val" / "aachen_000001_000000"


def test_cityscapes_missing_gtfine_and_bad_label_id(tmp_path: Path) -> None:
    label = _cityscapes_tree(tmp_path, np.full((H, W), 40, np.uint8))
    (seq,) = load_sequences(tmp_path, "val", "cityscapes")
    with pytest.raises(DatasetError, match=r"labelId 40 out of range 0\.\.33"):
        read_label(seq.labels[19], seq.label_format, 19)
    label.unlink()
    with pytest.raises(DatasetError, match=r"missing label file: .*000019_gtFine_labelIds\.png"):
        load_sequences(tmp_path, "val", "cityscapes")


# ------------------------------------------------------------------------------ CamVid


def test_camvid_sparse_index_and_colour_labels(tmp_path: Path) -> None:
    seq = tmp_path / "train" / "0001TP"
    for f in range(6):
        _png(seq / "frames" / f"0001TP_{f:06d}.png", _image(f))
    index = np.array([[0, 3, 8, 11]], np.uint8).repeat(4, 0)  # sky, road, car, void
    _png(seq / "labels" / "0001TP_000000.png", index)
    colour = np.zeros((4, 2, 3), np.uint8)
    colour[:, 0] = (128, 64, 128)  # road (RGB)
    colour[:, 1] = (64, 0, 128)  # car
    _png(seq / "labels" / "0001TP_000005.png", colour[..., ::-1])
    (s,) = load_sequences(tmp_path, "train", "camvid")
    assert len(s.frames) == 6 and sorted(s.labels) == [0, 5]
    assert read_label(s.labels[0], s.label_format, 19)[0].tolist() == [10, 0, 13, IGNORE_INDEX]
    assert read_label(s.labels[5], s.label_format, 19)[0].tolist() == [0, 13]
    colour[0, 0] = (1, 2, 3)
    _png(seq / "labels" / "0001TP_000005.png", colour[..., ::-1])
    with pytest.raises(DatasetError, match=r"colour \(1, 2, 3\) .*0001TP_000005\.png"):
        read_label(s.labels[5], s.label_format, 19)
    _png(seq / "labels" / "0001TP_000099.png", index)
    with pytest.raises(DatasetError, match="label without a frame"):
        load_sequences(tmp_path, "train", "camvid")


# ------------------------------------------------------------------------------ transforms


def _shift_pair(dx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame t and t+1 = t's content moved right by dx, and the exact flow t -> t+1."""
    wide = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (H, W + dx, 3),
                                                              dtype=np.uint8), (5, 5), 1)
    frame_t = wide[:, dx:]
    frame_t1 = wide[:, :W]
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = dx
    return frame_t, frame_t1, flow


def _warp_error(clip: Clip) -> float:
    """Mean |frame0 - warp(frame1, flow 0->1)| over pixels that stay inside the frame."""
    t0 = torch.from_numpy(clip.frames[0]).permute(2, 0, 1)[None].float()
    t1 = torch.from_numpy(clip.frames[1]).permute(2, 0, 1)[None].float()
    warped, inside = warp(t1, flow_to_tensor(clip.flows[(0, 1)]))
    return float((t0 - warped).abs()[inside.expand_as(t0)].mean())


def test_flip_moves_flow_with_images() -> None:
    a, b, flow = _shift_pair(4)
    label = np.arange(H * W, dtype=np.int64).reshape(H, W).astype(np.uint8)
    clip = Clip([a, b], label, 0, {(0, 1): flow})
    assert _warp_error(clip) < 1e-3
    flipped = hflip_clip(clip)
    assert np.all(flipped.flows[(0, 1)][..., 0] == -4)
    assert np.array_equal(flipped.label, label[:, ::-1])
    assert _warp_error(flipped) < 1e-3  # the flipped flow still maps the flipped frames
    twice = hflip_clip(flipped)
    assert np.array_equal(twice.frames[0], a) and np.array_equal(twice.label, label)
    assert np.array_equal(twice.flows[(0, 1)], flow)


def test_resize_and_crop_keep_flow_consistent() -> None:
    a, b, flow = _shift_pair(4)
    clip = Clip([a, b], np.zeros((H, W), np.uint8), 0, {(0, 1): flow})
    big = resize_clip(clip, (2 * H, 2 * W))
    assert np.allclose(big.flows[(0, 1)][..., 0], 8) and np.allclose(big.flows[(0, 1)][..., 1], 0)
    cropped = crop_clip(clip, 2, 3, (H, W))  # leaves the frame: padding
    assert cropped.label[-1, -1] == IGNORE_INDEX and cropped.label[0, 0] == 0
    assert np.all(cropped.flows[(0, 1)][: H - 2, : W - 3, 0] == 4)
    assert np.array_equal(cropped.frames[0][: H - 2, : W - 3], a[2:, 3:])


def test_train_transform_moves_every_frame_and_label_together() -> None:
    rng = np.random.default_rng(1)
    label = rng.integers(0, 19, (H, W)).astype(np.uint8)
    image = CITYSCAPES_PALETTE[label]
    transform = TrainTransform((H, W), (H - 4, W - 6), (1.0, 1.0), flip_prob=0.5, jitter=0.0)
    draws = set()
    for seed in range(8):
        clip = Clip([image, image.copy(), image.copy()], label, 1)
        clip = transform(clip, np.random.default_rng(seed))
        assert clip.frames[0].shape == (H - 4, W - 6, 3)
        assert np.array_equal(clip.frames[0], clip.frames[2])
        assert np.array_equal(clip.frames[1], CITYSCAPES_PALETTE[clip.label])
        draws.add(clip.label.tobytes())
    assert len(draws) > 1  # the crop/flip is random per clip, yet shared by its frames


def test_recolour_changes_each_frames_own_classes_only() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(40, 220, (H, W, 3), dtype=np.uint8) for _ in range(2)]
    labels = [np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)]
    labels[0][:, : W // 2] = 1  # class 1 on the left in frame 0 ...
    labels[1][:, W // 2 :] = 1  # ... and on the right in frame 1 (it moved)
    labels[1][0, 0] = IGNORE_INDEX
    table = draw_class_recolour(19, 0.0, rng)  # nothing drawn: the identity
    table[1] = (0.5, 1.0, 1.0, 0.0, 0.0)  # class 1: half-way round the colour wheel
    clip = Clip(frames, labels[0], 0, frame_labels=labels)
    out = recolour_classes(clip, table)
    for f, o, lab in zip(frames, out.frames, labels, strict=True):
        diff = np.abs(o.astype(int) - f.astype(int)).max(axis=2)
        assert diff[lab != 1].max() <= 1  # other classes and ignore: rounding only
        assert np.mean(diff[lab == 1] > 10) > 0.9
    # a grey surface has no hue to rotate: the tint colours it, at its own brightness
    grey = np.full((H, W, 3), 128, np.uint8)
    table[1] = (0.0, 1.0, 1.0, 0.3, 0.0)  # tint towards red
    red = recolour_classes(Clip([grey], labels[0], 0, frame_labels=labels[:1]), table).frames[0]
    px = red[0, 0].astype(int)
    assert px[0] > 140 and px[1] < 120 and px[2] < 120
    assert abs(float(px @ [0.299, 0.587, 0.114]) - 128) < 2
    # without a label on every frame there is nothing to go by: unchanged
    assert recolour_classes(Clip(frames, labels[0], 0), table).frames is frames


def test_recolour_draws_leave_natural_colours_alone() -> None:
    """Grass is green and the sky blue or grey in the real world too: those keep their colour."""
    identity = np.array([0.0, 1.0, 1.0, 0.0, 0.0])
    tables = [draw_class_recolour(19, 1.0, np.random.default_rng(s)) for s in range(20)]
    for table in tables:
        for natural in (8, 9, 10):  # vegetation, terrain, sky
            assert np.array_equal(table[natural], identity)
        assert not np.array_equal(table[0], identity)  # road: every class drawn at prob 1
    assert len({t[0, 0] for t in tables}) == 20  # a fresh draw per clip


def test_frame_labels_move_with_the_clip() -> None:
    rng = np.random.default_rng(2)
    labels = [rng.integers(0, 19, (H, W)).astype(np.uint8) for _ in range(2)]
    images = [CITYSCAPES_PALETTE[lab] for lab in labels]
    scaled = TrainTransform((H, W), (H - 4, W - 6), (0.8, 1.5), flip_prob=0.5, jitter=0.0)
    cropped = TrainTransform((H, W), (H - 4, W - 6), (1.0, 1.0), flip_prob=0.5, jitter=0.0)
    for seed in range(6):
        clip = scaled(Clip(images, labels[0], 0, frame_labels=labels), np.random.default_rng(seed))
        assert clip.frame_labels is not None and np.array_equal(clip.frame_labels[0], clip.label)
        clip = cropped(Clip(images, labels[0], 0, frame_labels=labels),
                       np.random.default_rng(seed))
        assert clip.frame_labels is not None
        assert np.array_equal(clip.frames[1], CITYSCAPES_PALETTE[clip.frame_labels[1]])


def test_normalize_layout() -> None:
    x = normalize([np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 255, np.uint8)])
    assert x.shape == (2, 3, H, W)
    assert x[0, 0, 0, 0] == pytest.approx(-0.485 / 0.229, rel=1e-5)


# ------------------------------------------------------------------------------ clip sampler


def test_clip_dataset_returns_clip_and_cached_flows(tmp_path: Path) -> None:
    seq_dir = _generic_tree(tmp_path, frames=5)
    (tmp_path / "train" / "seq_b").rename(tmp_path / "seq_b_unused")
    seqs = load_sequences(tmp_path, "train", "generic")
    for t in range(5):
        for s in range(5):
            if t != s:
                path = flow_path(seq_dir, t, s)
                path.parent.mkdir(parents=True, exist_ok=True)
                flow = np.zeros((H, W, 2), np.float16)
                flow[..., 0] = s - t  # encode the pair so the test can check which was loaded
                np.save(path, flow, allow_pickle=False)
    transform = TrainTransform((H, W), (H, W), (1.0, 1.0), flip_prob=0.0, jitter=0.0)
    ds = ClipDataset(seqs, 19, 3, 2, transform, with_flow=True)
    assert len(ds) == 5 and ds.key == 1 and ds.neighbor == 2
    torch.manual_seed(0)
    for i in range(len(ds)):
        item = ds[i]
        assert item["images"].shape == (3, 3, H, W)
        assert item["label"].shape == (H, W) and int(item["label"][0, 0]) == 3
        fw, bw = item["flows"][:, 0, 0, 0].tolist()
        assert fw == -bw and 0 <= fw <= 2  # t -> t+k clipped into the sequence, and back
        assert fw > 0 or i == 4
        neighbour = read_rgb(seqs[0].frames[i + int(fw)])
        assert torch.allclose(item["images"][2], normalize([neighbour])[0])


def test_clip_dataset_hands_every_frames_label_to_the_transform(tmp_path: Path) -> None:
    _generic_tree(tmp_path, frames=4)
    seqs = load_sequences(tmp_path, "train", "generic")
    seen: list[Clip] = []

    def record(clip: Clip, rng: np.random.Generator) -> Clip:
        seen.append(clip)
        return clip

    ClipDataset(seqs, 19, 3, 1, record, with_flow=False, frame_labels=True)[1]
    ClipDataset(seqs, 19, 3, 1, record, with_flow=False)[1]
    with_labels, without = seen
    assert without.frame_labels is None
    assert with_labels.frame_labels is not None and len(with_labels.frame_labels) == 3
    assert all(np.all(lab == 3) for lab in with_labels.frame_labels)


def test_clip_dataset_reports_bad_files(tmp_path: Path) -> None:
    seq_dir = _generic_tree(tmp_path, frames=2, label_value=42)
    seqs = load_sequences(tmp_path, "train", "generic")
    transform = TrainTransform((H, W), (H, W), (1.0, 1.0), jitter=0.0)
    ds = ClipDataset(seqs, 19, 2, 1, transform, with_flow=True)
    with pytest.raises(DatasetError, match="class id 42 out of range"):
        ds[0]
    _png(seq_dir / "labels" / "000000.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match=r"flow cache file missing: .*000000_000001\.npy"):
        ds[0]
    (seq_dir / "images" / "000001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"unreadable image: .*000001\.png"):
        ds[0]
