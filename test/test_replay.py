"""replay: real subprocesses publishing over real DDS to subscribers in this test process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from etc_ros import image_io
from etc_ros.bags import BagWriter
from etc_ros.tools import replay

REPO = Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def _replay(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m etc_ros.replay` as its own process; the ROS env comes from conftest."""
    return subprocess.run([sys.executable, "-m", "etc_ros.replay", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


class Ros:
    """A node of this test process, spun in a thread, with a way to wait for conditions."""

    def __init__(self) -> None:
        # topics of their own: no stale or foreign (same-domain) subscriber can count for replay
        self.ns = f"/t{uuid.uuid4().hex[:10]}"
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("replay_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def collect(self, cls: type, topic: str, raw: bool = False) -> list:
        got: list = []
        self.node.create_subscription(cls, topic, got.append, RELIABLE, raw=raw)
        return got

    @staticmethod
    def wait_for(cond: Callable[[], bool], bound: float = 10.0) -> None:
        """Give late DDS deliveries a bounded chance; the assertions come after."""
        end = time.monotonic() + bound
        while not cond() and time.monotonic() < end:
            time.sleep(0.02)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def ros() -> Iterator[Ros]:
    r = Ros()
    yield r
    r.close()


def _rgb(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _header(i: int) -> Header:
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 50 + i, 7 * i
    return header


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _write_bag(path: Path, storage: str, frames: int = 5, ns: str = "") -> dict[str, list[bytes]]:
    cam, chatter = f"{ns}/cam/image_raw", f"{ns}/chatter"
    written: dict[str, list[bytes]] = {cam: [], chatter: []}
    with BagWriter(path, storage) as bag:
        for i in range(frames):
            cdr = serialize_message(image_io.rgb8_to_image(_rgb(i), "bgr8", _header(i)))
            written[cam].append(cdr)
            bag.write(cam, "sensor_msgs/msg/Image", 10**9 + i * 20_000_000, cdr)
            if i % 2 == 0:
                cdr = serialize_message(String(data=f"note {i}"))
                written[chatter].append(cdr)
                bag.write(chatter, "std_msgs/msg/String", 10**9 + i * 20_000_000 + 1, cdr)
    return written


def _same_cdr(received: list[bytes], written: list[bytes]) -> bool:
    """Byte for byte, in order; DDS may only zero-pad a payload to a multiple of 4 bytes."""
    return len(received) == len(written) and all(
        r[: len(w)] == w and len(r) - len(w) < 4 and not any(r[len(w):])
        for r, w in zip(received, written, strict=True))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_replayed_unchanged(ros: Ros, tmp_path: Path, storage: str) -> None:
    cam, chatter = f"{ros.ns}/cam/image_raw", f"{ros.ns}/chatter"
    written = _write_bag(tmp_path / "bag", storage, ns=ros.ns)
    images = ros.collect(Image, cam, raw=True)
    notes = ros.collect(String, chatter, raw=True)
    proc = _replay("--bag", tmp_path / "bag", "--wait-subscribers", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"published 8 messages on {cam}, {chatter}" in proc.stdout
    ros.wait_for(lambda: len(images) >= 5 and len(notes) >= 3)
    assert _same_cdr(images, written[cam])
    assert _same_cdr(notes, written[chatter])
    stamps = [_ns(deserialize_message(b, Image).header.stamp) for b in images]
    assert stamps == [_ns(_header(i).stamp) for i in range(5)]


def test_bag_topic_selection_and_restamp(ros: Ros, tmp_path: Path) -> None:
    _write_bag(tmp_path / "bag", "mcap", frames=3, ns=ros.ns)
    images = ros.collect(Image, f"{ros.ns}/cam/image_raw")
    notes = ros.collect(String, f"{ros.ns}/chatter")
    before = ros.node.get_clock().now().nanoseconds
    proc = _replay("--bag", tmp_path / "bag", "--topic", f"{ros.ns}/cam/image_raw", "--restamp",
                   "--wait-subscribers", "1")
    assert proc.returncode == 0, proc.stderr
    ros.wait_for(lambda: len(images) >= 3)
    assert len(images) == 3 and notes == []
    assert all(_ns(m.header.stamp) > before for m in images)  # now, not the recorded 50 s
    np.testing.assert_array_equal(image_io.msg_to_rgb8(images[2]), _rgb(2))


def test_restamp_sends_corrupt_messages_as_recorded(ros: Ros, tmp_path: Path) -> None:
    good = serialize_message(image_io.rgb8_to_image(_rgb(0), "rgb8", _header(0)))
    corrupt = good[:40]
    with BagWriter(tmp_path / "bag", "mcap") as bag:
        for i, data in enumerate((good, corrupt, good)):
            bag.write(f"{ros.ns}/cam/image_raw", "sensor_msgs/msg/Image", i, data)
    got = ros.collect(Image, f"{ros.ns}/cam/image_raw", raw=True)
    proc = _replay("--bag", tmp_path / "bag", "--restamp", "--wait-subscribers", "1")
    assert proc.returncode == 0, proc.stderr
    ros.wait_for(lambda: len(got) >= 3)
    assert len(got) == 3 and _same_cdr([got[1]], [corrupt])
    stamps = [_ns(deserialize_message(got[i], Image).header.stamp) for i in (0, 2)]
    assert all(s != _ns(_header(0).stamp) for s in stamps)  # the good ones were restamped


def test_images_at_given_rate(ros: Ros, tmp_path: Path) -> None:
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.cvtColor(_rgb(i), cv2.COLOR_RGB2BGR))
    got = ros.collect(Image, f"{ros.ns}/front/image_raw")
    proc = _replay("--images", tmp_path, "--topic", f"{ros.ns}/front/image_raw", "--rate", "20",
                   "--no-restamp", "--frame-id", "front", "--encoding", "bgra8",
                   "--wait-subscribers", "1")
    assert proc.returncode == 0, proc.stderr
    ros.wait_for(lambda: len(got) >= 4)
    assert [m.encoding for m in got] == ["bgra8"] * 4
    assert [m.header.frame_id for m in got] == ["front"] * 4
    # without restamping the stamps are the frames' places on a 20 Hz time line
    assert [_ns(m.header.stamp) for m in got] == [0, 50_000_000, 100_000_000, 150_000_000]
    for i, m in enumerate(got):
        np.testing.assert_array_equal(image_io.msg_to_rgb8(m), _rgb(i))


def test_video_as_compressed(ros: Ros, tmp_path: Path) -> None:
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                             (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 40 * (i + 1), np.uint8))
    writer.release()
    got = ros.collect(CompressedImage, f"{ros.ns}/camera/image_raw/compressed")
    before = ros.node.get_clock().now().nanoseconds
    proc = _replay("--video", tmp_path / "clip.mp4", "--compressed", "--topic",
                   f"{ros.ns}/camera/image_raw/compressed", "--wait-subscribers", "1")
    assert proc.returncode == 0, proc.stderr
    ros.wait_for(lambda: len(got) >= 3)
    assert len(got) == 3 and all("jpeg" in m.format for m in got)
    stamps = [_ns(m.header.stamp) for m in got]
    assert stamps == sorted(stamps) and stamps[0] > before  # restamped with now by default
    levels = [int(image_io.msg_to_rgb8(m).mean()) for m in got]
    assert [abs(v - 40 * (i + 1)) <= 6 for i, v in enumerate(levels)] == [True] * 3


def test_loop_until_terminated_keeps_the_recording(ros: Ros, tmp_path: Path) -> None:
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.cvtColor(_rgb(i), cv2.COLOR_RGB2BGR))
    topic = f"{ros.ns}/loop/image_raw"
    got = ros.collect(Image, topic)
    out = tmp_path / "loop.mcap"
    proc = subprocess.Popen(
        [sys.executable, "-m", "etc_ros.replay", "--images", tmp_path, "--topic",
         topic, "--rate", "50", "--no-restamp", "--loop", "--wait-subscribers", "1",
         "--record", out, "--record-topics", topic],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ros.wait_for(lambda: len(got) >= 5, bound=60)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert len(got) >= 5
    # pass after pass, frame 0 then frame 1, each pass on the same 50 Hz time line
    assert [_ns(m.header.stamp) for m in got[:5]] == [0, 20_000_000] * 2 + [0]
    with Reader(out) as reader:  # finished properly: indexed and readable
        count = sum(1 for _ in reader.messages())
    assert count >= 1 and f"{count} messages recorded to {out}" in stdout


class Echo:
    """A stand-in for the segmentation node: answers each frame on the label topic, later.

    It records how many answers it had sent when each frame arrived, which is what lockstep
    promises: frame i arrives only after the answer to frame i-1 (or a timeout).
    """

    def __init__(self, ros: Ros, skip: frozenset[int] = frozenset()) -> None:
        self.ros, self.skip = ros, skip
        self.pub = ros.node.create_publisher(Image, f"{ros.ns}/cam/segmentation/label", RELIABLE)
        self.sent = 0
        self.answered_at_arrival: list[int] = []
        self.lock = threading.Lock()
        ros.node.create_subscription(Image, f"{ros.ns}/cam/image_raw", self._on_frame, RELIABLE)

    def _on_frame(self, msg: Image) -> None:
        with self.lock:
            index = len(self.answered_at_arrival)
            self.answered_at_arrival.append(self.sent)
        if index not in self.skip:
            threading.Timer(0.15, self._answer, (msg,)).start()

    def _answer(self, msg: Image) -> None:
        label = np.full((msg.height, msg.width), 7, np.uint8)
        self.pub.publish(image_io.numpy_to_image(label, "mono8", msg.header))
        with self.lock:
            self.sent += 1


def test_lockstep_waits_for_each_answer(ros: Ros, tmp_path: Path) -> None:
    _write_bag(tmp_path / "bag", "mcap", frames=4, ns=ros.ns)
    echo = Echo(ros, skip=frozenset({1}))
    proc = _replay("--bag", tmp_path / "bag", "--topic", f"{ros.ns}/cam/image_raw", "--rate",
                   "1000", "--lockstep", f"{ros.ns}/cam/segmentation/label",
                   "--lockstep-timeout", "1",
                   "--wait-subscribers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "4 messages" in proc.stdout and "1 lockstep timeouts" in proc.stdout
    # frame 1 got no answer: frame 2 came after the timeout, with one answer sent so far
    assert echo.answered_at_arrival == [0, 1, 1, 2]


def test_record_outputs_to_mcap(ros: Ros, tmp_path: Path) -> None:
    _write_bag(tmp_path / "bag", "sqlite3", frames=3, ns=ros.ns)
    Echo(ros)
    out = tmp_path / "run.mcap"
    label = f"{ros.ns}/cam/segmentation/label"
    proc = _replay("--bag", tmp_path / "bag", "--topic", f"{ros.ns}/cam/image_raw",
                   "--lockstep", label, "--record", out,
                   "--record-topics", label, "--drain", "0.5",
                   "--wait-subscribers", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"3 messages recorded to {out}" in proc.stdout
    assert out.is_file()
    with Reader(out) as reader:
        assert {t: i.msgtype for t, i in reader.topics.items()} == {
            label: "sensor_msgs/msg/Image"}
        msgs = [deserialize_message(data, Image) for _, _, data in reader.messages()]
    assert [_ns(m.header.stamp) for m in msgs] == [_ns(_header(i).stamp) for i in range(3)]
    assert all(m.encoding == "mono8" and (image_io.image_to_numpy(m) == 7).all() for m in msgs)


def _bad_inputs(tmp: Path) -> list[tuple[list, str]]:
    ns = f"/t{uuid.uuid4().hex[:10]}"  # no foreign subscriber can match (wait-subscribers case)
    _write_bag(tmp / "bag", "mcap", frames=1, ns=ns)
    (tmp / "empty").mkdir()
    (tmp / "junk.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(40))
    (tmp / "exists.mcap").write_bytes(b"")
    return [
        (["--bag", tmp / "missing"], "bag not found"),
        (["--bag", tmp / "junk.mcap"], "unreadable or truncated bag"),
        (["--bag", tmp / "bag", "--topic", "/nope"], f"it has: {ns}/cam/image_raw (sensor_msgs"),
        (["--images", tmp / "empty"], "empty image folder"),
        (["--video", tmp / "none.mp4"], "video not found"),
        (["--images", tmp / "empty", "--rate", "-1"], "--rate must be > 0"),
        (["--bag", tmp / "bag", "--record", tmp / "exists.mcap", "--record-topics", "/a"],
         "exists already"),
        (["--bag", tmp / "bag", "--record-topics", "/a"], "needs --record"),
        (["--bag", tmp / "bag", "--wait-subscribers", "1", "--wait-timeout", "0.3"],
         "has 0 of 1 subscribers"),
    ]


def test_bad_inputs_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """In process, through main(): the console script's return code and stderr."""
    for args, reason in _bad_inputs(tmp_path):
        code = replay.main([str(a) for a in args])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code != 0, args
        assert len(lines) == 1 and lines[0].startswith("replay: error:"), (args, lines)
        assert reason in lines[0], (args, lines[0])


@pytest.mark.parametrize(("args", "reason"), [
    (["--bag", "/nonexistent/bag"], "bag not found"),
    (["--qos", "fast"], "invalid choice"),
])
def test_bad_inputs_as_a_program(args: list[str], reason: str) -> None:
    """`python -m etc_ros.replay`: exit code != 0, one line, no traceback."""
    proc = _replay(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replay: error:") and reason in lines[0]
