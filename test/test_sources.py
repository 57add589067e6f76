"""sources: real rosbag2 files (MCAP and sqlite3), a real mp4, PNG folders and a dataset tree."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from std_msgs.msg import Header, String

from etc_ros import bags, image_io, sources
from etc_ros.bags import BagWriter
from etc_ros.sources import SourceError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
ENCODINGS = image_io.SUPPORTED_ENCODINGS + ("8UC1", "8UC3", "16UC1")


def _rgb(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _header(i: int) -> Header:
    header = Header(frame_id=f"cam{i}")
    header.stamp.sec, header.stamp.nanosec = 100 + i, 1000 * i
    return header


def _stamp_ns(i: int) -> int:
    return (100 + i) * 1_000_000_000 + 1000 * i


def write_camera_bag(path: Path, storage: str, frames: int = 3) -> dict[str, list]:
    """A bag with one Image topic per encoding, jpeg and png topics and a String topic.

    Returns topic -> (rclpy message, CDR bytes) written, to compare with what is read back.
    (The bytes must be kept: rclpy leaves CDR alignment padding uninitialised, so serialising
    the same message twice need not give the same bytes.)
    """
    written: dict[str, list] = {}
    with BagWriter(path, storage) as bag:
        for i in range(frames):
            t = 1_000_000_000 + i * 50_000_000
            for enc in ENCODINGS:
                msg = image_io.rgb8_to_image(_rgb(i), enc, _header(i))
                cdr = serialize_message(msg)
                written.setdefault(f"/{enc}/image_raw", []).append((msg, cdr))
                bag.write(f"/{enc}/image_raw", IMAGE, t, cdr)
            for fmt in ("jpeg", "png"):
                msg = image_io.encode_compressed(_rgb(i), fmt, _header(i))
                topic = f"/{fmt}/image_raw/compressed"
                cdr = serialize_message(msg)
                written.setdefault(topic, []).append((msg, cdr))
                bag.write(topic, COMPRESSED, t, cdr)
            bag.write("/chatter", "std_msgs/msg/String", t, serialize_message(String(data="hi")))
    return written


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def camera_bag(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp(request.param) / "bag"
    return path, write_camera_bag(path, request.param)


def test_bag_every_encoding_and_compressed(camera_bag) -> None:
    path, written = camera_bag
    for topic, msgs in written.items():
        src = bags.open_bag(path, topic)
        frames = list(src)
        assert len(src) == len(frames) == len(msgs), topic
        for i, (frame, (msg, cdr)) in enumerate(zip(frames, msgs, strict=True)):
            assert frame.error is None, (topic, frame.error)
            assert (frame.index, frame.sequence) == (i, topic)
            assert frame.stamp_ns == _stamp_ns(i) and frame.frame_id == f"cam{i}"
            np.testing.assert_array_equal(frame.rgb, image_io.msg_to_rgb8(msg), err_msg=topic)
            assert frame.raw == ("sensor_msgs/msg/" + type(msg).__name__, cdr)
        desc = src.describe()
        assert desc["kind"] == "bag" and desc["topic"] == topic and desc["frames"] == len(msgs)


def test_bag_colour_content_is_right(camera_bag) -> None:
    """Not only equal to image_io's answer: the pixels are the RGB we recorded."""
    path, _ = camera_bag
    for enc in ("rgb8", "bgr8", "bgra8", "8UC3"):
        frame = next(iter(bags.open_bag(path, f"/{enc}/image_raw")))
        np.testing.assert_array_equal(frame.rgb, _rgb(0))
    frame = next(iter(bags.open_bag(path, "/png/image_raw/compressed")))
    np.testing.assert_array_equal(frame.rgb, _rgb(0))


@pytest.mark.parametrize(("storage", "suffix"), [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_bag_single_storage_file(tmp_path: Path, storage: str, suffix: str) -> None:
    write_camera_bag(tmp_path / "bag", storage, frames=2)
    (file,) = (tmp_path / "bag").glob(f"*{suffix}")
    frames = list(bags.open_bag(file, "/rgb8/image_raw"))
    assert [f.stamp_ns for f in frames] == [_stamp_ns(0), _stamp_ns(1)]


def test_bag_writer_bare_mcap_file(tmp_path: Path) -> None:
    out = tmp_path / "out.mcap"
    with BagWriter(out) as bag:
        bag.write("/x", "std_msgs/msg/String", 5, serialize_message(String(data="a")))
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out.mcap"]
    reader = bags.BagReader(out)
    assert reader.topics == {"/x": "std_msgs/msg/String"}
    (msg,) = reader.messages()
    assert (msg.topic, msg.timestamp_ns) == ("/x", 5)
    with pytest.raises(SourceError, match="exists already"):
        BagWriter(out)


def test_corrupt_messages_are_skipped_not_fatal(tmp_path: Path) -> None:
    good = [image_io.rgb8_to_image(_rgb(i), "rgb8", _header(i)) for i in range(4)]
    bad_step = image_io.rgb8_to_image(_rgb(9), "rgb8", _header(9))
    bad_step.step = 5
    cdr = [serialize_message(m) for m in good]
    stream = [cdr[0], cdr[1][:40], serialize_message(bad_step), cdr[2]]
    jpeg = image_io.encode_compressed(_rgb(5), "jpeg", _header(5))
    jpeg.data = jpeg.data[:60]
    with BagWriter(tmp_path / "bag", "sqlite3") as bag:
        for i, data in enumerate(stream):
            bag.write("/cam/image_raw", IMAGE, i, data)
        bag.write("/c/compressed", COMPRESSED, 0, serialize_message(jpeg))
    frames = list(bags.open_bag(tmp_path / "bag", "/cam/image_raw"))
    assert [f.rgb is not None for f in frames] == [True, False, False, True]
    assert frames[1].error.startswith("corrupt Image message")
    assert frames[2].error.startswith("step smaller than width*channels*bytes")
    assert frames[1].raw == (IMAGE, cdr[1][:40]) and frames[1].stamp_ns == 1
    np.testing.assert_array_equal(frames[3].rgb, _rgb(2))
    (broken,) = bags.open_bag(tmp_path / "bag", "/c/compressed")
    assert broken.rgb is None and "corrupt jpeg" in broken.error


def _one_line_error(call, match: str) -> str:
    with pytest.raises(SourceError, match=match) as err:
        call()
    text = str(err.value)
    assert "\n" not in text and text
    return text


def test_bag_errors(tmp_path: Path, camera_bag) -> None:
    path, _ = camera_bag
    _one_line_error(lambda: bags.open_bag(tmp_path / "nope", "/x"), "bag not found")
    text = _one_line_error(lambda: bags.open_bag(path, "/missing"), "topic /missing not in bag")
    assert "/chatter (std_msgs/msg/String)" in text and f"/rgb8/image_raw ({IMAGE})" in text
    _one_line_error(lambda: bags.open_bag(path, "/chatter"),
                    "topic /chatter .* is std_msgs/msg/String, expected sensor_msgs/msg/Image")
    (tmp_path / "notes.txt").write_text("x")
    _one_line_error(lambda: bags.open_bag(tmp_path / "notes.txt", "/x"), "unreadable")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag(tmp_path: Path, storage: str) -> None:
    write_camera_bag(tmp_path / "bag", storage, frames=2)
    (file,) = (p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3"))
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    for target in (tmp_path / "bag", file):
        _one_line_error(lambda t=target: bags.open_bag(t, "/rgb8/image_raw"),
                        "unreadable or truncated bag")


def _write_video(path: Path, frames: int, fps: float = 12.0) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    assert writer.isOpened()
    images = []
    for i in range(frames):
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[:, :, i % 3] = 60 + 40 * i  # flat colour per frame survives lossy coding
        images.append(rgb)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return images


def test_video(tmp_path: Path) -> None:
    images = _write_video(tmp_path / "clip.mp4", 5)
    src = sources.open_video(tmp_path / "clip.mp4")
    frames = list(src)
    assert len(src) == len(frames) == 5 and src.rate_hz == pytest.approx(12.0)
    for i, (frame, rgb) in enumerate(zip(frames, images, strict=True)):
        assert frame.index == i and frame.sequence == "clip" and frame.rgb.shape == (48, 64, 3)
        assert frame.stamp_ns == round(i * 1e9 / 12.0)
        assert np.abs(frame.rgb.astype(int) - rgb).mean() < 6
    assert src.describe() == {"kind": "video", "path": str(tmp_path / "clip.mp4"), "frames": 5,
                              "fps": pytest.approx(12.0), "width": 64, "height": 48}


def test_video_errors(tmp_path: Path) -> None:
    _one_line_error(lambda: sources.open_video(tmp_path / "none.mp4"), "video not found")
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 20)
    _one_line_error(lambda: sources.open_video(tmp_path / "junk.mp4"), "unreadable video")
    empty = tmp_path / "empty.mp4"
    _write_video(empty, 0)
    _one_line_error(lambda: sources.open_video(empty), "(empty|unreadable) video")


def test_image_folder(tmp_path: Path) -> None:
    names = ["f10.png", "f2.jpg", "f1.png", "f3.png"]
    flat = np.empty((24, 32, 3), np.uint8)
    flat[:] = (10, 200, 90)  # jpeg keeps a flat colour, not noise
    for i, name in enumerate(names):
        rgb = flat if name.endswith(".jpg") else _rgb(i)
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / "f3.png").write_bytes(b"broken")
    (tmp_path / "readme.txt").write_text("ignored")
    src = sources.open_images(tmp_path, rate_hz=4.0)
    frames = list(src)
    assert len(src) == 4 and [f.rgb is not None for f in frames] == [True, True, False, True]
    np.testing.assert_array_equal(frames[0].rgb, _rgb(2))   # f1 (natural order)
    assert np.abs(frames[1].rgb.astype(int) - flat).max() <= 4  # f2.jpg
    assert frames[2].error == "unreadable image f3.png"
    np.testing.assert_array_equal(frames[3].rgb, _rgb(0))   # f10
    assert [f.stamp_ns for f in frames] == [0, 250_000_000, 500_000_000, 750_000_000]


def test_image_folder_errors(tmp_path: Path) -> None:
    _one_line_error(lambda: sources.open_images(tmp_path / "nope"), "image folder not found")
    (tmp_path / "a.txt").write_text("x")
    _one_line_error(lambda: sources.open_images(tmp_path), "empty image folder")


def _dataset(root: Path) -> None:
    for seq, count, labelled in (("seq_b", 2, False), ("seq_a", 3, True)):
        (root / "val" / seq / "images").mkdir(parents=True)
        if labelled:
            (root / "val" / seq / "labels").mkdir()
        for i in range(count):
            name = f"{i:06d}.png"
            cv2.imwrite(str(root / "val" / seq / "images" / name),
                        cv2.cvtColor(_rgb(i, 8, 12), cv2.COLOR_RGB2BGR))
            if labelled:
                label = np.full((8, 12), i, np.uint8)
                label[0, 0] = 255
                cv2.imwrite(str(root / "val" / seq / "labels" / name), label)
    (root / "train").mkdir()


def test_dataset(tmp_path: Path) -> None:
    _dataset(tmp_path)
    src = sources.open_dataset(tmp_path, "val")
    frames = list(src)
    assert len(src) == 5
    assert [(f.index, f.sequence) for f in frames] == [
        (0, "seq_a"), (1, "seq_a"), (2, "seq_a"), (3, "seq_b"), (4, "seq_b")]
    for f in frames[:3]:
        assert f.error is None and f.label.dtype == np.uint8 and f.label[0, 0] == 255
        assert f.label[4, 4] == f.stamp_ns // 100_000_000  # label i belongs to frame i
    assert all(f.label is None and f.error is None for f in frames[3:])
    np.testing.assert_array_equal(frames[4].rgb, _rgb(1, 8, 12))
    assert src.describe() == {"kind": "dataset", "path": str(tmp_path), "split": "val",
                              "sequences": 2, "frames": 5, "labels": True}


def test_dataset_errors(tmp_path: Path) -> None:
    _dataset(tmp_path)
    text = _one_line_error(lambda: sources.open_dataset(tmp_path, "test"), "split 'test' not found")
    assert "(splits: train, val)" in text
    _one_line_error(lambda: sources.open_dataset(tmp_path, "train"), "no sequence with images")
    _one_line_error(lambda: sources.open_dataset(tmp_path / "x", "val"), "dataset root not found")
    cv2.imwrite(str(tmp_path / "val" / "seq_a" / "labels" / "000001.png"),
                np.zeros((4, 4), np.uint8))
    frames = list(sources.open_dataset(tmp_path, "val"))
    assert frames[1].label is None and "size (4, 4) != image (8, 12)" in frames[1].error
    assert frames[2].error is None
