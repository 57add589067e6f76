"""Frame sources shared by replay, evaluate and training: video, image folder, dataset (bags:
``etc_ros.bags``, kept apart so that training needs no rosbags).

One place decides how recordings are opened and what a bad one looks like: every problem with
the input as a whole is a one-line SourceError raised when the source is opened; a single corrupt
message becomes a Frame with rgb=None and an error, and iteration goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

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


def _natural_key(path: Path) -> list[Any]:
    """Sort 'img2' before 'img10' as a human (and the recorder) meant."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


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


def read_rgb(path: Path) -> np.ndarray | None:
    """An image file as (H, W, 3) uint8 RGB, or None when OpenCV cannot decode it."""
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
            rgb = read_rgb(file)
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
                              read_rgb(file))
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


def open_video(path: str | Path) -> VideoSource:
    """A video file; frames stamped by the file's fps."""
    return VideoSource(path)


def open_images(folder: str | Path, rate_hz: float = DEFAULT_IMAGE_RATE_HZ) -> ImageFolderSource:
    """A folder of PNG/JPEG frames in natural name order."""
    return ImageFolderSource(folder, rate_hz)


def open_dataset(root: str | Path, split: str) -> DatasetSource:
    """One split of the generic <root>/<split>/<sequence>/images|labels layout."""
    return DatasetSource(root, split)
