"""rosbag2 (MCAP and sqlite3) reading and writing with ``rosbags``, for replay, evaluate and demo.

Every problem with a bag as a whole is a one-line SourceError; one corrupt message becomes a Frame
with rgb=None and an error, and iteration goes on.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from etc_ros.errors import one_line
from etc_ros.image_io import msg_to_rgb8
from etc_ros.sources import IMAGE_TYPES, Frame, FrameSource, SourceError


@dataclass(frozen=True)
class BagMessage:
    """A serialized message as recorded: what replay republishes unchanged."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


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
                f"unreadable or truncated bag {self.path}: {one_line(exc)}"
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
                f"bag {self.path} unreadable after {count} messages: {one_line(exc)}"
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
                               f"{type(exc).__name__}: {one_line(exc)}", raw=raw)
        stamp = ros.header.stamp.sec * 1_000_000_000 + ros.header.stamp.nanosec
        frame = Frame(index, self.topic, stamp, ros.header.frame_id, None, raw=raw)
        try:
            frame.rgb = msg_to_rgb8(ros, self.max_pixels)
        except ValueError as exc:  # ImageConversionError and numpy shape errors alike
            frame.error = one_line(exc)
        return frame

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.bag.path), "topic": self.topic,
                "msgtype": self.msgtype, "frames": len(self)}


def open_bag(path: str | Path, topic: str, max_pixels: int | None = None) -> BagSource:
    """A rosbag2 directory or .mcap/.db3 file, one Image or CompressedImage topic."""
    return BagSource(path, topic, max_pixels)


