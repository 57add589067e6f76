"""demo end to end: replay and node processes over real DDS, outputs read back from disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from etc_ros import image_io
from etc_ros.checkpoint import make_random_checkpoint
from etc_ros.segmenter import Segmenter
from etc_ros.tools.demo import CAMERA_TOPIC, DEFAULT_CLIP, LABEL_TOPIC, OVERLAY_TOPIC

REPO = Path(__file__).resolve().parents[1]
FRAMES = 12


def _demo(*args: str, timeout: float = 170) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "etc_ros.demo", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _stamps(bag: Path) -> dict[str, list[tuple[int, int, int, str]]]:
    """topic -> [(header stamp ns, width, height, frame_id)] read with rosbags."""
    store = get_typestore(Stores.LATEST)
    out: dict[str, list[tuple[int, int, int, str]]] = {}
    with Reader(bag) as reader:
        for conn, _, data in reader.messages():
            msg = store.deserialize_cdr(data, conn.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            out.setdefault(conn.topic, []).append(
                (stamp, msg.width, msg.height, msg.header.frame_id))
    return out


def _images(bag: Path, topic: str) -> dict[int, object]:
    """header stamp ns -> the recorded Image (a rosbags message image_io converts)."""
    store = get_typestore(Stores.LATEST)
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return {(m := store.deserialize_cdr(data, conn.msgtype)).header.stamp.sec * 10**9
                + m.header.stamp.nanosec: m for conn, _, data in reader.messages(conns)}


def test_demo_end_to_end(tmp_path: Path) -> None:
    model = tmp_path / "random.safetensors"
    make_random_checkpoint(model, input_size=(64, 128))
    out = tmp_path / "demo_out"
    proc = _demo("--model", str(model), "--out", str(out), "--max-frames", str(FRAMES),
                 "--device", "cpu", "--strip-frames", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "latency header stamp -> label received: p50" in proc.stdout

    clip = cv2.VideoCapture(str(DEFAULT_CLIP))
    width = int(clip.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(clip.get(cv2.CAP_PROP_FRAME_HEIGHT))
    clip.release()
    topics = _stamps(out / "demo.mcap")
    camera, labels = topics[CAMERA_TOPIC], topics[LABEL_TOPIC]
    assert len(camera) == FRAMES
    camera_stamps = [s for s, *_ in camera]
    assert len(set(camera_stamps)) == FRAMES
    # Latest frame wins: the node may skip frames it could not keep up with (how many depends
    # on the machine), so the count is not the check; every label is checked below instead.
    assert 0 < len(labels) <= FRAMES
    for stamp, w, h, frame_id in labels:  # every label answers a played frame, at its size
        assert stamp in camera_stamps
        assert (w, h, frame_id) == (width, height, "camera")
    assert [s for s, *_ in labels] == sorted(s for s, *_ in labels)
    assert {s for s, *_ in topics[OVERLAY_TOPIC]} <= {s for s, *_ in labels}
    # Each label is the model's answer for the frame it carries the stamp of.
    frames, label_msgs = _images(out / "demo.mcap", CAMERA_TOPIC), _images(out / "demo.mcap",
                                                                          LABEL_TOPIC)
    segmenter = Segmenter(model, "cpu")
    assert len(label_msgs) == len(labels)
    for stamp, label in label_msgs.items():
        expected = segmenter.segment([image_io.msg_to_rgb8(frames[stamp])], False)[0].labels
        np.testing.assert_array_equal(image_io.image_to_numpy(label), expected)
    assert f"{FRAMES} in, {len(labels)} labelled, {FRAMES - len(labels)} dropped" in proc.stdout

    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, frame = video.read()
    assert ok and frame.shape == (height, width, 3)
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(topics[OVERLAY_TOPIC])
    video.release()
    strip = cv2.imread(str(out / "strip.png"))
    assert strip is not None and strip.shape == (3 * height, 2 * width, 3)


def test_demo_node_failure_is_one_line(tmp_path: Path) -> None:
    model = tmp_path / "random.safetensors"
    make_random_checkpoint(model, input_size=(64, 128))
    proc = _demo("--model", str(model), "--out", str(tmp_path / "o"), "--max-frames", "2",
                 "--device", "cuda:7")  # no such device here: the node refuses to start
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("demo: error: the segmentation node failed: ") and "cuda:7" in last
