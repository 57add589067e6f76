"""Frame sources shared by replay, evaluate and training: rosbag2, video, image folder, dataset.

One place decides how recordings are opened and what a bad one looks like: every problem with
the input as a whole is a one-line SourceError raised when the source is opened; a single corrupt
message becomes a Frame with rgb=None and an error, and iteration goes on.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from etc_ros.image_io import msg_to_rgb8

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_IMAGE_RATE_HZ = 10.0


class SourceError(Exception):
    """An input that cannot be used at all; str() is one line naming the path and the problem."""


@dataclass
class Frame:
    """One input frame; rgb is None (and error says why) when this message could not be decoded."""

    index: int
    sequence: str
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray | None
    label: np.ndarray | None = None
    error: str | None = None
    raw: tuple[str, bytes] | None = None


@dataclass(frozen=True)
class BagMessage:
    """A serialized message as recorded: what replay republishes unchanged."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _natural_key(path: Path) -> list[Any]:
    """Sort 'img2' before 'img10' as a human (and the recorder) meant."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


class BagReader:
    """A rosbag2 (directory, .mcap or .db3) opened with rosbags; errors become SourceError.

    Types come from the newest ROS 2 typestore rosbags ships: Image and CompressedImage have
    not changed since Humble, so Humble, Jazzy and Kilted bags all read the same.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"bag not found: {self.path}")
        self.typestore = get_typestore(Stores.LATEST)
        try:
            with Reader(self.path) as reader:
                self.topics: dict[str, str] = {
                    name: info.msgtype or "?" for name, info in reader.topics.items()
                }
                self.counts: dict[str, int] = {
                    name: info.msgcount for name, info in reader.topics.items()
                }
        except Exception as exc:  # noqa: BLE001 - rosbags reports corruption with many types
            raise SourceError(
                f"unreadable or truncated bag {self.path}: {_one_line(exc)}"
            ) from None

    def describe_topics(self) -> str:
        """'/a (type), /b (type)' for error messages."""
        return ", ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "none"

    def check_topics(self, topics: Sequence[str]) -> None:
        """Raise a SourceError naming the topics that do exist when one is missing."""
        for topic in topics:
            if topic not in self.topics:
                raise SourceError(
                    f"topic {topic} not in bag {self.path}; it has: {self.describe_topics()}"
                )

    def messages(self, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
        """Messages of `topics` (all when None) in recorded order, as stored CDR bytes."""
        wanted = list(self.topics) if topics is None else list(topics)
        self.check_topics(wanted)
        count = 0
        try:
            with Reader(self.path) as reader:
                conns = [c for c in reader.connections if c.topic in wanted]
                for conn, timestamp, data in reader.messages(connections=conns):
                    count += 1
                    yield BagMessage(conn.topic, conn.msgtype, timestamp, bytes(data))
        except Exception as exc:  # noqa: BLE001 - see __init__
            raise SourceError(
                f"bag {self.path} unreadable after {count} messages: {_one_line(exc)}"
            ) from None


class BagWriter:
    """Writes serialized messages to a rosbag2 as they come: replay's recorder, test fixtures.

    A path ending in .mcap becomes one bare MCAP file (what Foxglove and `ros2 bag play` open);
    any other path becomes a rosbag2 directory with metadata.yaml, in MCAP or sqlite3 storage.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in ("mcap", "sqlite3"):
            raise SourceError(f"unknown bag storage {storage!r} (mcap or sqlite3)")
        self.path = Path(path)
        if self.path.exists():
            raise SourceError(f"{self.path} exists already, not overwriting")
        if not self.path.parent.is_dir():
            raise SourceError(f"cannot write {self.path}: no folder {self.path.parent}")
        self.single_file = storage == "mcap" and self.path.suffix == ".mcap"
        self._dir = (self.path.with_name(f".{self.path.name}.partial") if self.single_file
                     else self.path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.typestore = get_typestore(Stores.LATEST)
        self._writer = Writer(self._dir, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[tuple[str, str], Any] = {}
        self.count = 0

    def write(self, topic: str, msgtype: str, timestamp_ns: int, data: bytes) -> None:
        """Append one CDR-serialized message; the topic's connection is added on first use."""
        conn = self._connections.get((topic, msgtype))
        if conn is None:
            if msgtype not in self.typestore.types:
                raise SourceError(f"cannot record {topic}: type {msgtype} unknown to rosbags")
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
            self._connections[(topic, msgtype)] = conn
        self._writer.write(conn, timestamp_ns, data)
        self.count += 1

    def close(self) -> None:
        """Finish the bag (index, metadata); a single-file MCAP is moved into place."""
        self._writer.close()
        if self.single_file:
            (self._dir / f"{self._dir.name}.mcap").rename(self.path)
            shutil.rmtree(self._dir)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameSource:
    """An iterable of Frames with a length and a description for evaluate's JSON "input"."""

    kind = "source"
    rate_hz: float | None = None  # the recorded frame rate when the input knows one

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What was read, for reports: kind, path, frame count and kind-specific details."""
        raise NotImplementedError


class BagSource(FrameSource):
    """Frames of one Image or CompressedImage topic of a rosbag2."""

    kind = "bag"

    def __init__(self, path: str | Path, topic: str, max_pixels: int | None = None) -> None:
        self.bag = BagReader(path)
        self.bag.check_topics([topic])
        self.topic = topic
        self.msgtype = self.bag.topics[topic]
        if self.msgtype not in IMAGE_TYPES:
            raise SourceError(
                f"topic {topic} in bag {self.bag.path} is {self.msgtype}, "
                f"expected {' or '.join(IMAGE_TYPES)}"
            )
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return self.bag.counts[self.topic]

    def __iter__(self) -> Iterator[Frame]:
        for index, msg in enumerate(self.bag.messages([self.topic])):
            yield self._decode(index, msg)

    def _decode(self, index: int, msg: BagMessage) -> Frame:
        raw = (msg.msgtype, msg.data)
        try:
            ros = self.bag.typestore.deserialize_cdr(msg.data, msg.msgtype)
        except Exception as exc:  # noqa: BLE001 - any undecodable CDR is one bad message
            return Frame(index, self.topic, msg.timestamp_ns, "", None,
                         error=f"corrupt {msg.msgtype.rsplit('/', 1)[-1]} message: "
                               f"{type(exc).__name__}: {_one_line(exc)}", raw=raw)
        stamp = ros.header.stamp.sec * 1_000_000_000 + ros.header.stamp.nanosec
        frame = Frame(index, self.topic, stamp, ros.header.frame_id, None, raw=raw)
        try:
            frame.rgb = msg_to_rgb8(ros, self.max_pixels)
        except ValueError as exc:  # ImageConversionError and numpy shape errors alike
            frame.error = _one_line(exc)
        return frame

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.bag.path), "topic": self.topic,
                "msgtype": self.msgtype, "frames": len(self)}


class VideoSource(FrameSource):
    """Frames of a video file (anything OpenCV's FFmpeg reads); stamps follow the file's fps."""

    kind = "video"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"video not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise SourceError(f"unreadable video {self.path}: OpenCV cannot open it")
            ok, _ = cap.read()
            if not ok:
                raise SourceError(f"empty video {self.path}: no frame could be read")
            self.rate_hz = float(cap.get(cv2.CAP_PROP_FPS)) or DEFAULT_IMAGE_RATE_HZ
            self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        finally:
            cap.release()

    def __len__(self) -> int:
        return self.frame_count

    def __iter__(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                stamp = round(index * 1e9 / self.rate_hz)
                yield Frame(index, self.path.stem, stamp, "",
                            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            cap.release()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "frames": len(self),
                "fps": self.rate_hz, "width": self.size[0], "height": self.size[1]}


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)


class ImageFolderSource(FrameSource):
    """PNG/JPEG files of one folder in natural name order, stamped at `rate_hz`."""

    kind = "images"

    def __init__(self, folder: str | Path, rate_hz: float = DEFAULT_IMAGE_RATE_HZ) -> None:
        self.path = Path(folder)
        if not self.path.is_dir():
            raise SourceError(f"image folder not found: {self.path}")
        self.files = _image_files(self.path)
        if not self.files:
            raise SourceError(f"empty image folder {self.path}: no .png/.jpg/.jpeg files")
        self.rate_hz = rate_hz

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            rgb = _read_rgb(file)
            yield Frame(index, self.path.name, round(index * 1e9 / self.rate_hz), "", rgb,
                        error=None if rgb is not None else f"unreadable image {file.name}")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "frames": len(self)}


class DatasetSource(FrameSource):
    """The generic layout <root>/<split>/<sequence>/images/*.png with optional labels/*.png.

    Frames come sequence by sequence; Frame.sequence tells where temporal pairs break.
    """

    kind = "dataset"

    def __init__(self, root: str | Path, split: str,
                 rate_hz: float = DEFAULT_IMAGE_RATE_HZ) -> None:
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise SourceError(f"dataset root not found: {self.root}")
        split_dir = self.root / split
        if not split_dir.is_dir():
            splits = ", ".join(sorted(p.name for p in self.root.iterdir() if p.is_dir()))
            raise SourceError(f"split {split!r} not found under {self.root} "
                              f"(splits: {splits or 'none'})")
        self.sequences: list[tuple[str, list[Path]]] = []
        for seq in sorted((p for p in split_dir.iterdir() if p.is_dir()), key=_natural_key):
            files = _image_files(seq / "images") if (seq / "images").is_dir() else []
            if files:
                self.sequences.append((seq.name, files))
        if not self.sequences:
            raise SourceError(f"no sequence with images/*.png under {split_dir}")
        self.rate_hz = rate_hz

    def __len__(self) -> int:
        return sum(len(files) for _, files in self.sequences)

    @cached_property
    def has_labels(self) -> bool:
        """Whether any frame has a label file: decides if evaluate can report mIoU."""
        return any(self._label_path(f).is_file() for _, files in self.sequences for f in files)

    @staticmethod
    def _label_path(image: Path) -> Path:
        return image.parent.parent / "labels" / f"{image.stem}.png"

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for name, files in self.sequences:
            for position, file in enumerate(files):
                frame = Frame(index, name, round(position * 1e9 / self.rate_hz), "",
                              _read_rgb(file))
                if frame.rgb is None:
                    frame.error = f"unreadable image {name}/{file.name}"
                else:
                    self._attach_label(frame, file)
                index += 1
                yield frame

    def _attach_label(self, frame: Frame, image: Path) -> None:
        path = self._label_path(image)
        if not path.is_file():
            return
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        rel = f"{frame.sequence}/labels/{path.name}"
        if label is None or label.ndim != 2 or label.dtype != np.uint8:
            frame.error = f"bad label {rel}: expected a single-channel 8-bit PNG"
        elif label.shape != frame.rgb.shape[:2]:
            frame.error = f"bad label {rel}: size {label.shape} != image {frame.rgb.shape[:2]}"
        else:
            frame.label = label

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.root), "split": self.split,
                "sequences": len(self.sequences), "frames": len(self),
                "labels": self.has_labels}


def open_bag(path: str | Path, topic: str, max_pixels: int | None = None) -> BagSource:
    """A rosbag2 directory or .mcap/.db3 file, one Image or CompressedImage topic."""
    return BagSource(path, topic, max_pixels)


def open_video(path: str | Path) -> VideoSource:
    """A video file; frames stamped by the file's fps."""
    return VideoSource(path)


def open_images(folder: str | Path, rate_hz: float = DEFAULT_IMAGE_RATE_HZ) -> ImageFolderSource:
    """A folder of PNG/JPEG frames in natural name order."""
    return ImageFolderSource(folder, rate_hz)


def open_dataset(root: str | Path, split: str) -> DatasetSource:
    """One split of the generic <root>/<split>/<sequence>/images|labels layout."""
    return DatasetSource(root, split)
