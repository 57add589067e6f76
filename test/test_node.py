"""The segmentation node over real rclpy/DDS: formats, headers, lazy outputs, drops, QoS.

The node runs in-process on its own executor thread (a second participant in this process,
talking to the test client over DDS) or, for the cross-process QoS test, as
`python -m etc_ros.node`. test/conftest.py keeps all traffic on localhost in a random domain.
Waits have generous timeouts only as hang guards; nothing here asserts on speed (that is
`etc_ros.bench`'s job).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64, String

from etc_ros import image_io
from etc_ros import node as node_module
from etc_ros.checkpoint import make_random_checkpoint
from etc_ros.labels import CITYSCAPES_CLASSES
from etc_ros.node import SegmentationNode
from etc_ros.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)



class Client:
    """A test node in the same context that records every message per topic."""

    def __init__(self, context: Context) -> None:
        self.node = Node("test_client", context=context)
        self.msgs: dict[str, list] = defaultdict(list)
        self.lock = threading.Lock()
        self.subs: dict[str, object] = {}

    def listen(self, topic: str, msg_type: type, qos: QoSProfile = RELIABLE) -> None:
        if topic in self.subs:
            return

        def store(msg, topic=topic):
            with self.lock:
                self.msgs[topic].append(msg)
        self.subs[topic] = self.node.create_subscription(msg_type, topic, store, qos)

    def unlisten(self, topic: str) -> None:
        self.node.destroy_subscription(self.subs.pop(topic))

    def got(self, topic: str) -> list:
        with self.lock:
            return list(self.msgs[topic])


def stamped(msg, sec: int, frame_id: str = "camera"):
    msg.header.stamp.sec = sec
    msg.header.frame_id = frame_id
    return msg


def exchange(client: Client, pub, msg, label_topic: str, tries: int = 60,
             also: tuple[str, ...] = ()):
    """Publish until the label (and every `also` topic) with msg's stamp arrived.

    Republishing covers the auto-QoS re-subscribe and best-effort outputs that may lose a sample.
    """
    want = (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def found(topic: str):
        return next((m for m in client.got(topic)
                     if (m.header.stamp.sec, m.header.stamp.nanosec) == want), None)
    for _ in range(tries):
        pub.publish(msg)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            if all(found(t) is not None for t in (label_topic, *also)):
                return found(label_topic)
            time.sleep(0.01)
    raise AssertionError(f"no output with stamp {want} on {label_topic} {also}")


@pytest.fixture(scope="module")
def ros(checkpoint) -> Iterator[tuple[SegmentationNode, Client, SingleThreadedExecutor]]:
    context = Context()
    rclpy.init(context=context)
    seg = SegmentationNode(context=context, parameter_overrides=[
        Parameter("image_topics", value=["/enc/image_raw", "/cmp/image_raw/compressed"]),
        Parameter("model_path", value=str(checkpoint)),
        Parameter("device", value="cpu"),
        Parameter("diagnostics_period_s", value=0.2),
        Parameter("overlay_alpha", value=0.0),  # the overlay is then the decoded input
    ])
    client = Client(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(seg)
    executor.add_node(client.node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield seg, client, executor
    executor.shutdown()
    seg.destroy_node()
    client.node.destroy_node()
    rclpy.shutdown(context=context)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(checkpoint) -> Segmenter:
    """The same checkpoint outside the node: what the labels of a decoded frame must be."""
    return Segmenter(checkpoint, "cpu")


def _pattern(h: int, w: int) -> np.ndarray:
    """A smooth colour pattern, as a camera sees (noise would be ruined by 4:2:x chroma)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([40 + 3 * x, 30 + 4 * y, 230 - 1.5 * x - 1.5 * y], -1).clip(
        0, 255).astype(np.uint8)


@pytest.mark.parametrize("encoding", image_io.SUPPORTED_ENCODINGS + ("8UC1", "8UC3", "16UC1"))
def test_every_encoding_gives_correct_label_with_input_header_and_size(ros, reference,
                                                                       encoding):
    _, client, _ = ros
    client.listen("/enc/segmentation/label", Image)
    client.listen("/enc/segmentation/overlay", Image, BEST_EFFORT)
    pub = client.node.create_publisher(Image, "/enc/image_raw", RELIABLE)
    sec = 100 + list(image_io.SUPPORTED_ENCODINGS + ("8UC1", "8UC3", "16UC1")).index(encoding)
    msg = stamped(image_io.rgb8_to_image(_pattern(50, 70), encoding), sec, f"cam_{encoding}")
    msg.header.stamp.nanosec = 123_456_789
    label = exchange(client, pub, msg, "/enc/segmentation/label",
                     also=("/enc/segmentation/overlay",))
    assert label.header.frame_id == f"cam_{encoding}"
    assert (label.header.stamp.sec, label.header.stamp.nanosec) == (sec, 123_456_789)
    assert (label.height, label.width, label.encoding) == (50, 70, "mono8")
    # overlay_alpha 0: the overlay is the node's decoded input, which must be image_io's
    # (checked against OpenCV's own conversions in test_image_io) ...
    decoded = image_io.msg_to_rgb8(msg)
    overlay = next(m for m in client.got("/enc/segmentation/overlay")
                   if m.header.stamp.sec == sec)
    np.testing.assert_array_equal(image_io.image_to_numpy(overlay), decoded)
    # ... and the label is the model's answer for that picture.
    expected = reference.segment([decoded], False)[0].labels
    np.testing.assert_array_equal(image_io.image_to_numpy(label), expected)
    client.node.destroy_publisher(pub)


def test_mono16_bits_parameter_scales_twelve_bit_input(ros):
    seg, client, _ = ros
    client.listen("/enc/segmentation/label", Image)
    client.listen("/enc/segmentation/overlay", Image, BEST_EFFORT)
    pub = client.node.create_publisher(Image, "/enc/image_raw", RELIABLE)
    twelve = (np.linspace(0, 4095, 40 * 60).reshape(40, 60)).astype(np.uint16)
    for sec, bits, top in ((150, 16, 15), (151, 12, 255)):
        assert seg.set_parameters([Parameter("mono16_bits", value=bits)])[0].successful
        msg = stamped(image_io.numpy_to_image(twelve, "mono16"), sec)
        exchange(client, pub, msg, "/enc/segmentation/label", also=("/enc/segmentation/overlay",))
        seen = image_io.image_to_numpy(next(m for m in client.got("/enc/segmentation/overlay")
                                            if m.header.stamp.sec == sec))
        assert seen.max() == top, bits  # 12-bit data read as 16-bit is nearly black
        np.testing.assert_array_equal(seen, image_io.msg_to_rgb8(msg, mono16_bits=bits))
    assert not seg.set_parameters([Parameter("mono16_bits", value=17)])[0].successful
    assert seg.set_parameters([Parameter("mono16_bits", value=16)])[0].successful
    client.node.destroy_publisher(pub)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_gives_label_with_input_header_and_size(ros, fmt):
    _, client, _ = ros
    client.listen("/cmp/segmentation/label", Image)
    pub = client.node.create_publisher(CompressedImage, "/cmp/image_raw/compressed", RELIABLE)
    sec = 200 + ["jpeg", "png"].index(fmt)
    msg = stamped(image_io.encode_compressed(_rgb(48, 80), fmt), sec, f"cam_{fmt}")
    label = exchange(client, pub, msg, "/cmp/segmentation/label")
    assert label.header.frame_id == f"cam_{fmt}"
    assert (label.height, label.width, label.encoding) == (48, 80, "mono8")
    client.node.destroy_publisher(pub)


def test_lazy_outputs_only_with_subscribers(ros, monkeypatch):
    seg, client, _ = ros
    client.listen("/enc/segmentation/label", Image)
    lazy = {"color": "rgb8", "overlay": "rgb8", "confidence": "32FC1"}
    cam = seg.cameras[0]
    for name in lazy:  # earlier tests of this module may still watch the overlay
        if f"/enc/segmentation/{name}" in client.subs:
            client.unlisten(f"/enc/segmentation/{name}")
    wait_for(lambda: not any(getattr(cam, n).get_subscription_count() for n in lazy),
             what="no lazy subscribers at the start")
    # Counting wrappers around the real functions: they show what work the node did.
    colorize_calls: list[int] = []
    real_colorize = node_module.labels.colorize
    monkeypatch.setattr(node_module.labels, "colorize",
                        lambda *a: colorize_calls.append(1) or real_colorize(*a))
    confidence_asked: list[bool] = []
    real_segment = seg.segmenter.segment
    monkeypatch.setattr(seg.segmenter, "segment", lambda imgs, want:
                        confidence_asked.append(want) or real_segment(imgs, want))
    pub = client.node.create_publisher(Image, "/enc/image_raw", RELIABLE)

    exchange(client, pub, stamped(image_io.rgb8_to_image(_rgb(40, 60)), 300),
             "/enc/segmentation/label")
    assert colorize_calls == [] and not any(confidence_asked)

    for name in lazy:
        client.listen(f"/enc/segmentation/{name}", Image, BEST_EFFORT)
    wait_for(lambda: all(getattr(cam, n).get_subscription_count() for n in lazy),
             what="node to see the lazy subscribers")
    msg = stamped(image_io.rgb8_to_image(_rgb(40, 60)), 301)
    exchange(client, pub, msg, "/enc/segmentation/label",
             also=tuple(f"/enc/segmentation/{n}" for n in lazy))
    for name, encoding in lazy.items():
        out = [m for m in client.got(f"/enc/segmentation/{name}") if m.header.stamp.sec == 301][0]
        assert (out.height, out.width, out.encoding) == (40, 60, encoding)
    conf = np.frombuffer(bytes(out.data), np.float32)
    assert conf.size == 40 * 60 and conf.min() > 0.0 and conf.max() <= 1.0 + 1e-6
    assert colorize_calls and confidence_asked[-1]

    for name in lazy:
        client.unlisten(f"/enc/segmentation/{name}")
    wait_for(lambda: not any(getattr(cam, n).get_subscription_count() for n in lazy),
             what="node to see the lazy subscribers leave")
    n_colorize = len(colorize_calls)
    exchange(client, pub, stamped(image_io.rgb8_to_image(_rgb(40, 60)), 302),
             "/enc/segmentation/label")
    assert len(colorize_calls) == n_colorize and not confidence_asked[-1]
    client.node.destroy_publisher(pub)


def test_qos_people_best_effort_machines_reliable(ros):
    """Viewer images are sensor-data QoS (best effort, depth 1); label/classes reliable."""
    seg, client, _ = ros
    client.listen("/enc/segmentation/overlay", Image, BEST_EFFORT)

    def qos(name: str):
        infos = wait_for(lambda: client.node.get_publishers_info_by_topic(
            f"/enc/segmentation/{name}"), what=f"{name} publisher on the graph")
        assert len(infos) == 1 and infos[0].node_name == "segmentation_node"
        return infos[0].qos_profile
    for name in ("color", "overlay", "confidence"):
        profile = qos(name)  # as other participants see it on the graph
        assert profile.reliability == ReliabilityPolicy.BEST_EFFORT, name
        assert profile.durability == DurabilityPolicy.VOLATILE, name
        # discovery does not carry the history depth: read it from the publisher itself
        assert getattr(seg.cameras[0], name).qos_profile.depth == 1, name
    assert qos("label").reliability == ReliabilityPolicy.RELIABLE
    assert qos("classes").reliability == ReliabilityPolicy.RELIABLE
    assert qos("classes").durability == DurabilityPolicy.TRANSIENT_LOCAL
    # a best-effort subscriber (RViz's default for images) receives the overlay
    pub = client.node.create_publisher(Image, "/enc/image_raw", RELIABLE)
    exchange(client, pub, stamped(image_io.rgb8_to_image(_rgb(30, 40)), 400),
             "/enc/segmentation/label", also=("/enc/segmentation/overlay",))
    client.node.destroy_publisher(pub)


def test_classes_latched_and_latency_published(ros):
    _, client, _ = ros
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    client.listen("/enc/segmentation/classes", String, latched)
    client.listen("/enc/segmentation/latency_ms", Float64)
    text = wait_for(lambda: client.got("/enc/segmentation/classes"), what="classes")[0].data
    for name in CITYSCAPES_CLASSES:
        assert name in text
    pub = client.node.create_publisher(Image, "/enc/image_raw", RELIABLE)
    msg = image_io.rgb8_to_image(_rgb(30, 40))
    msg.header.stamp = client.node.get_clock().now().to_msg()
    client.listen("/enc/segmentation/label", Image)
    exchange(client, pub, msg, "/enc/segmentation/label")
    value = wait_for(lambda: client.got("/enc/segmentation/latency_ms"), what="latency")[-1]
    assert value.data > 0.0
    client.node.destroy_publisher(pub)


def test_diagnostics_contain_the_fields(ros):
    _, client, _ = ros
    client.listen("/diagnostics", DiagnosticArray)

    def enc_status():
        for arr in reversed(client.got("/diagnostics")):
            for status in arr.status:
                if status.name.endswith("/enc/image_raw"):
                    return status
        return None

    status = wait_for(enc_status, what="diagnostics")
    keys = {kv.key: kv.value for kv in status.values}
    for key in ("input rate (Hz)", "output rate (Hz)", "dropped frames", "bad frames",
                "last bad frame reason", "latency stamp->publish p50 (ms)",
                "latency stamp->publish p95 (ms)", "latency stamp->publish max (ms)",
                "latency receive->publish p50 (ms)", "latency receive->publish p95 (ms)",
                "latency receive->publish max (ms)", "preprocess (ms)", "forward (ms)",
                "postprocess (ms)", "device", "precision", "model", "input reliability"):
        assert key in keys, key
    assert keys["device"] == "cpu" and keys["precision"] == "fp32"
    assert int(keys["frames published"]) > 0
    assert float(keys["forward (ms)"]) > 0.0
    assert status.name.startswith("segmentation_node: ")
    assert status.hardware_id
    assert {s.name for s in client.got("/diagnostics")[-1].status} == {
        "segmentation_node: /enc/image_raw", "segmentation_node: /cmp/image_raw/compressed"}


def test_flood_drops_frames_instead_of_queueing(tmp_path):
    """A camera four times faster than the model: newest frame wins, no backlog.

    The camera's rate is derived from the forward time measured here, on this machine, so the
    node is flooded however fast or loaded the machine is.
    """
    ckpt = tmp_path / "slow.safetensors"
    make_random_checkpoint(ckpt, arch="pspnet18", input_size=(128, 256))
    context = Context()
    rclpy.init(context=context)
    try:
        seg = SegmentationNode(context=context, parameter_overrides=[
            Parameter("image_topics", value=["/flood/image_raw"]),
            Parameter("model_path", value=str(ckpt)), Parameter("device", value="cpu"),
            Parameter("input_reliability", value="reliable"),
            # Deep enough that DDS never overwrites a frame before the callback sees it (a
            # starved executor would otherwise lose frames uncounted): every replaced frame
            # must then show up as dropped.
            Parameter("input_queue_depth", value=100),
            Parameter("diagnostics_period_s", value=0.2)])
        client = Client(context)
        client.listen("/flood/segmentation/label", Image)
        client.listen("/diagnostics", DiagnosticArray)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(seg)
        executor.add_node(client.node)
        threading.Thread(target=executor.spin, daemon=True).start()
        pub = client.node.create_publisher(Image, "/flood/image_raw", RELIABLE)
        exchange(client, pub, stamped(image_io.rgb8_to_image(_rgb(64, 96)), 1),
                 "/flood/segmentation/label")
        # The fastest of a few forwards (the least disturbed by other load): the node needs at
        # least this per frame, so a camera at 4x that rate must make it drop.
        forwards = []
        for _ in range(5):
            start = time.perf_counter()
            seg.segmenter.segment([_rgb(64, 96)], False)
            forwards.append(time.perf_counter() - start)
        interval = min(forwards) / 4
        sent = list(range(1000, 1200))
        frame = image_io.rgb8_to_image(_rgb(64, 96))
        next_send = time.perf_counter()
        for sec in sent:
            pub.publish(stamped(frame, sec))
            next_send += interval
            time.sleep(max(0.0, next_send - time.perf_counter()))
        # The last frame is never dropped, so its label must come; then nothing is queued.
        wait_for(lambda: any(m.header.stamp.sec == sent[-1]
                             for m in client.got("/flood/segmentation/label")), 120, "last")
        time.sleep(1.0)
        # Leave out the warm-up frame's labels (exchange may have sent it more than once).
        stamps = [m.header.stamp.sec for m in client.got("/flood/segmentation/label")
                  if m.header.stamp.sec != 1]
        assert stamps[-1] == sent[-1]
        assert stamps == sorted(set(stamps)) and set(stamps) <= set(sent)
        assert len(stamps) < len(sent) / 2

        def counters() -> dict[str, int] | None:
            # /diagnostics is global: other nodes of this test module publish there too.
            for arr in reversed(client.got("/diagnostics")):
                for status in arr.status:
                    if status.name.endswith("/flood/image_raw"):
                        values = {kv.key: kv.value for kv in status.values}
                        return {k: int(values[k]) for k in
                                ("frames received", "frames published", "dropped frames")}
            return None

        # At rest every frame the node took in was either segmented or counted as dropped.
        final = wait_for(lambda: (c := counters()) and c["frames received"] ==
                         c["frames published"] + c["dropped frames"] and c, what="counters")
        assert final["dropped frames"] > 0, (final, len(stamps))
        # Outputs are reliable but keep-last (depth 2): a starved client may miss a label, so
        # the node can have published more than the client saw, never fewer.
        assert final["frames published"] >= len(client.got("/flood/segmentation/label"))
        executor.shutdown()
        seg.destroy_node()
    finally:
        rclpy.shutdown(context=context)


CHECKER = r"""
import json, sys, time
import numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from etc_ros import image_io

rclpy.init()
node = rclpy.create_node("qos_checker")
qos = {"rel": ReliabilityPolicy.RELIABLE, "be": ReliabilityPolicy.BEST_EFFORT}
pubs = {k: node.create_publisher(Image, f"/{k}/image_raw", QoSProfile(depth=1, reliability=r))
        for k, r in qos.items()}
labels = {k: [] for k in qos}
for k in qos:
    node.create_subscription(Image, f"/{k}/segmentation/label", labels[k].append,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
# A viewer as RViz subscribes: best effort (a reliable one would not match the overlay at all).
labels["overlay"] = []
node.create_subscription(Image, "/rel/segmentation/overlay", labels["overlay"].append,
                         QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
result = {}
for res, (h, w) in enumerate([(480, 640), (720, 1280), (1080, 1920)]):
    frame = image_io.rgb8_to_image(np.full((h, w, 3), 90, np.uint8))
    frame.header.stamp.sec = res
    end = time.monotonic() + 120
    seen = {k: 0 for k in labels}
    while time.monotonic() < end and not all(seen.values()):
        for k, pub in pubs.items():
            pub.publish(frame)
        t = time.monotonic()
        while time.monotonic() - t < 0.1:
            rclpy.spin_once(node, timeout_sec=0.02)
        for k in labels:
            seen[k] = sum(1 for m in labels[k] if m.header.stamp.sec == res
                          and (m.height, m.width) == (h, w))
    result[f"{w}x{h}"] = seen
print(json.dumps(result), flush=True)
"""


def test_reliable_and_best_effort_publishers_at_vga_720p_1080p(checkpoint, tmp_path):
    """Across processes, both loading the shipped Fast DDS profile (as the launch file does):
    reliable and best-effort cameras get labels, a best-effort viewer gets the overlay."""
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config/fastdds_shm.xml"))
    node = subprocess.Popen(
        [sys.executable, "-m", "etc_ros.node", "--ros-args",
         "-p", "image_topics:=['/rel/image_raw', '/be/image_raw']",
         "-p", f"model_path:={checkpoint}", "-p", "device:=cpu"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        checker = subprocess.run([sys.executable, "-c", CHECKER], env=env, cwd=REPO,
                                 capture_output=True, text=True, timeout=400)
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node_out, _ = node.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node_out, _ = node.communicate()
    assert checker.returncode == 0, checker.stderr + node_out
    result = json.loads(checker.stdout.strip().splitlines()[-1])
    for size in ("640x480", "1280x720", "1920x1080"):
        assert all(result[size][k] > 0 for k in ("rel", "be", "overlay")), (result, node_out)
    assert node.returncode == 0, node_out
    assert "Traceback" not in node_out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_node_process_stops_cleanly_while_publishing(checkpoint, sig):
    """Ctrl-C or `kill` while the worker is busy publishing 720p outputs: exit 0, no traceback.

    The camera keeps sending until the node has exited, so the signal lands mid-stream.
    """
    node = subprocess.Popen(
        [sys.executable, "-m", "etc_ros.node", "--ros-args",
         "-p", "image_topics:=['/stop/image_raw']", "-p", f"model_path:={checkpoint}",
         "-p", "device:=cpu", "-p", "input_reliability:=reliable"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context)
    try:
        client = Client(context)
        client.listen("/stop/segmentation/label", Image)
        client.listen("/stop/segmentation/overlay", Image, BEST_EFFORT)  # more to publish
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(client.node)
        threading.Thread(target=executor.spin, daemon=True).start()
        pub = client.node.create_publisher(Image, "/stop/image_raw", RELIABLE)
        frame = image_io.rgb8_to_image(_rgb(720, 1280))
        wait = time.monotonic() + 300
        while len(client.got("/stop/segmentation/label")) < 5:  # serving, many frames in
            assert node.poll() is None and time.monotonic() < wait, node.communicate()[0]
            pub.publish(frame)
            time.sleep(0.02)
        node.send_signal(sig)
        stop_by = time.monotonic() + 60
        while node.poll() is None and time.monotonic() < stop_by:
            pub.publish(frame)
            time.sleep(0.02)
        executor.shutdown()
    finally:
        if node.poll() is None:
            node.kill()
        out, _ = node.communicate()
        rclpy.shutdown(context=context)
    assert node.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


def test_context_shutdown_stops_the_worker_before_its_publishers_go(checkpoint):
    """Someone else shuts the context down mid-stream (an in-process user): the worker is
    stopped before the node is destroyed, so nothing fails and nothing is counted."""
    context = Context()
    rclpy.init(context=context)
    seg = SegmentationNode(context=context, parameter_overrides=[
        Parameter("image_topics", value=["/ext/image_raw"]),
        Parameter("model_path", value=str(checkpoint)), Parameter("device", value="cpu"),
        Parameter("input_reliability", value="reliable")])
    client = Client(context)
    client.listen("/ext/segmentation/label", Image)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(seg)
    executor.add_node(client.node)

    def spin() -> None:
        with contextlib.suppress(ExternalShutdownException):  # how spin() learns of it
            executor.spin()
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    pub = client.node.create_publisher(Image, "/ext/image_raw", RELIABLE)
    frame = image_io.rgb8_to_image(_rgb(480, 640))
    wait = time.monotonic() + 120
    while len(client.got("/ext/segmentation/label")) < 3:
        assert time.monotonic() < wait, "no labels"
        pub.publish(frame)
        time.sleep(0.02)
    worker = seg._worker
    pub.publish(frame)  # in flight while the context goes
    rclpy.shutdown(context=context)
    spinner.join(30)
    assert not spinner.is_alive()
    assert worker is not None and not worker.is_alive()
    assert seg.cameras[0].stats.failures == 0
    executor.shutdown()
