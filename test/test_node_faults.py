"""Bad input, start-up failures and refused parameter changes, over real rclpy/DDS."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fault_node import FAULT_VALUE, KILL_VALUE
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from safetensors.torch import load_file, save_file
from sensor_msgs.msg import CompressedImage, Image

from etc_ros import image_io
from etc_ros.checkpoint import METADATA_KEY
from etc_ros.diagnostics import ERROR_AFTER_BAD_FRAMES, CameraStats
from etc_ros.node import SegmentationNode

REPO = Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
MAX_PIXELS = 10_000



@pytest.fixture(scope="module")
def ros(checkpoint) -> Iterator[tuple[SegmentationNode, Node]]:
    context = Context()
    rclpy.init(context=context)
    seg = SegmentationNode(context=context, parameter_overrides=[
        Parameter("image_topics", value=["/bad/image_raw", "/badc/image_raw/compressed"]),
        Parameter("model_path", value=str(checkpoint)), Parameter("device", value="cpu"),
        Parameter("input_reliability", value="reliable"),
        Parameter("max_pixels", value=MAX_PIXELS),
        Parameter("diagnostics_period_s", value=0.2)])
    client = Node("fault_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(seg)
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    yield seg, client
    executor.shutdown()
    seg.destroy_node()
    client.destroy_node()
    rclpy.shutdown(context=context)


def _raw(h: int, w: int, encoding: str = "rgb8", step: int | None = None,
         size: int | None = None) -> Image:
    msg = Image(height=h, width=w, encoding=encoding, step=w * 3 if step is None else step)
    msg.data = bytes(h * w * 3 if size is None else size)
    return msg


def _compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8")
    msg.data = data
    return msg


GOOD_RGB = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
_JPEG = bytes(image_io.encode_compressed(GOOD_RGB, "jpeg").data)
_PNG = bytes(image_io.encode_compressed(GOOD_RGB, "png").data)
BAD_FRAMES = {
    "data shorter than step*height": (0, _raw(10, 10, size=100)),
    "step < width*channels": (0, _raw(10, 10, step=20, size=200)),
    "zero size": (0, _raw(0, 0, size=0)),
    "unknown encoding": (0, _raw(10, 10, encoding="yuv_weird")),
    "over max_pixels": (0, _raw(100, 120)),
    "corrupt JPEG": (1, _compressed("jpeg", _JPEG[:40] + bytes(200))),
    "corrupt PNG": (1, _compressed("png", _PNG[:30] + b"\x13" * 200)),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_input_is_counted_and_node_keeps_serving(ros, case):
    seg, client = ros
    cam_index, bad = BAD_FRAMES[case]
    cam = seg.cameras[cam_index]
    is_compressed = cam_index == 1
    pub = client.create_publisher(CompressedImage if is_compressed else Image, cam.topic,
                                  RELIABLE)
    labels: list[Image] = []
    sub = client.create_subscription(Image, f"{cam.out_ns}/label", labels.append, RELIABLE)
    wait_for(lambda: cam.subscription.get_publisher_count() > 0 and
             cam.label.get_subscription_count() > 0, what="matching")
    before = cam.stats.bad
    bad.header.stamp.sec = 1
    pub.publish(bad)
    wait_for(lambda: cam.stats.bad == before + 1, what=f"{case} counted")
    assert cam.stats.last_bad_reason
    good = (image_io.encode_compressed(GOOD_RGB, "png") if is_compressed
            else image_io.rgb8_to_image(GOOD_RGB))
    good.header.stamp.sec = 2
    pub.publish(good)
    label = wait_for(lambda: [m for m in labels if m.header.stamp.sec == 2], what="label")[0]
    assert (label.height, label.width) == GOOD_RGB.shape[:2]
    assert not any(m.header.stamp.sec == 1 for m in labels)
    status = cam.stats.status(time.monotonic(), node_name="n", latency_budget_ms=1e9,
                              stale_timeout_s=1e9, extra={})
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["bad frames"]) == before + 1 and values["last bad frame reason"]
    client.destroy_subscription(sub)
    client.destroy_publisher(pub)


def test_frames_that_keep_failing_turn_diagnostics_to_error(ros):
    """Observed on /diagnostics, as an operator sees it."""
    seg, client = ros
    cam = seg.cameras[0]
    statuses: list[DiagnosticStatus] = []
    diag = client.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda m: statuses.extend(s for s in m.status if s.name.endswith(f": {cam.topic}")),
        RELIABLE)
    pub = client.create_publisher(Image, cam.topic, RELIABLE)
    wait_for(lambda: cam.subscription.get_publisher_count() > 0, what="matching")
    for _ in range(ERROR_AFTER_BAD_FRAMES):
        before = cam.stats.bad
        pub.publish(_raw(10, 10, size=5))
        wait_for(lambda b=before: cam.stats.bad == b + 1, what="bad frame counted")
    mark = len(statuses)
    error = wait_for(lambda: [s for s in statuses[mark:] if s.level == DiagnosticStatus.ERROR],
                     what="ERROR on /diagnostics")[0]
    assert "frames were bad" in error.message and "data shorter" in error.message
    published = cam.stats.published
    pub.publish(image_io.rgb8_to_image(GOOD_RGB))
    wait_for(lambda: cam.stats.published == published + 1, what="good frame")
    # the first status that counts the good frame: earlier frames stamped 1970 may still WARN
    # on latency, but ERROR must be gone
    after = wait_for(lambda: [s for s in statuses if int(_values(s)["frames published"]) >
                              published], what="a status counting the good frame")[0]
    assert after.level != DiagnosticStatus.ERROR, after.message
    client.destroy_publisher(pub)
    client.destroy_subscription(diag)


def test_diagnostics_warn_on_latency_budget_and_silence():
    stats = CameraStats("/cam/image_raw", now=0.0)
    stats.on_receive(1.0)
    stats.on_published(250.0, 5.0, "cam")

    def status(now: float, budget: float, stale: float) -> DiagnosticStatus:
        return stats.status(now, node_name="n", latency_budget_ms=budget,
                            stale_timeout_s=stale, extra={})
    assert status(1.5, 1000.0, 5.0).level == DiagnosticStatus.OK
    warn = status(1.5, 100.0, 5.0)
    assert warn.level == DiagnosticStatus.WARN and "latency" in warn.message
    stale = status(10.0, 1000.0, 5.0)
    assert stale.level == DiagnosticStatus.WARN and "no frames" in stale.message


def test_runtime_parameter_changes_are_validated(ros):
    seg, client = ros
    params = AsyncParameterClient(client, seg.get_fully_qualified_name())
    assert params.wait_for_services(timeout_sec=30.0)

    def set_one(name: str, value) -> tuple[bool, str]:
        future = params.set_parameters([Parameter(name, value=value)])
        result = wait_for(lambda: future.done() and future.result(), what="set_parameters")
        return result.results[0].successful, result.results[0].reason

    ok, reason = set_one("overlay_alpha", 1.5)
    assert not ok and "overlay_alpha" in reason
    ok, reason = set_one("device", "gpu")
    assert not ok and "restart required" in reason
    ok, reason = set_one("image_topics", ["/other/image_raw"])
    assert not ok and "restart required" in reason
    ok, _ = set_one("overlay_alpha", 0.25)
    assert ok and seg.get_parameter("overlay_alpha").value == 0.25


def _foreign(path: Path, checkpoint: Path) -> None:
    save_file(load_file(str(checkpoint)), str(path))  # weights without our metadata


def _unknown_arch(path: Path, checkpoint: Path) -> None:
    from safetensors import safe_open
    with safe_open(str(checkpoint), framework="pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    meta["architecture"] = "resnet9000"
    save_file(load_file(str(checkpoint)), str(path), metadata={METADATA_KEY: json.dumps(meta)})


def _truncated(path: Path, checkpoint: Path) -> None:
    path.write_bytes(checkpoint.read_bytes()[:5000])


STARTUP_FAILURES = {
    # case: (checkpoint maker or None for a missing file, extra args, word the line must name)
    "missing file": (None, [], "missing.safetensors"),
    "truncated file": (_truncated, [], "bad.safetensors"),
    "foreign safetensors": (_foreign, [], "bad.safetensors"),
    "unknown architecture": (_unknown_arch, [], "resnet9000"),
    "cuda without CUDA": ("good", ["-p", "device:=cuda"], "cuda"),
    "alpha out of range": ("good", ["-p", "overlay_alpha:=2.0"], "overlay_alpha"),
    "unknown output_resolution": ("good", ["-p", "output_resolution:=huge"],
                                  "output_resolution"),
    "parameter of the wrong type": ("good", ["-p", "max_pixels:=lots"], "max_pixels"),
    "two topics, one output": ("good", ["-p", "image_topics:=['/a/image_raw', "
                                        "'/a/image_raw/compressed']"], "image_topics"),
    "camera_info for no camera": ("good", ["-p", "camera_info_topics:=['/a/info', '/b/info']"],
                                  "camera_info_topics"),
}


def test_startup_failures_print_one_line_and_exit_nonzero(checkpoint, tmp_path):
    # CUDA_VISIBLE_DEVICES hides any GPU: the real torch then has no CUDA, as on this machine.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    cases = list(STARTUP_FAILURES.items())
    # Three at a time: nine torch imports at once can starve a loaded 2-core machine.
    for start in range(0, len(cases), 3):
        procs = {}
        for case, (make, extra, _) in cases[start:start + 3]:
            if make is None:
                path = tmp_path / "missing.safetensors"
            elif make == "good":
                path = checkpoint
            else:
                path = tmp_path / case.replace(" ", "_") / "bad.safetensors"
                path.parent.mkdir()
                make(path, checkpoint)
            device = [] if any("device" in a for a in extra) else ["-p", "device:=cpu"]
            procs[case] = subprocess.Popen(
                [sys.executable, "-m", "etc_ros.node", "--ros-args", "-p",
                 "image_topics:=['/x/image_raw']", "-p", f"model_path:={path}", *device, *extra],
                env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for case, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            lines = [line for line in err.splitlines() if line.strip()]
            assert proc.returncode == 1, (case, out, err)
            assert "Traceback" not in err + out, (case, err)
            assert len(lines) == 1, (case, err)
            assert lines[0].startswith("segmentation_node: error: "), (case, err)
            assert STARTUP_FAILURES[case][2] in lines[0], (case, err)


class _Observer:
    """A client node in this test process watching a node process over DDS."""

    def __init__(self, context: Context, camera: str, out_ns: str) -> None:
        self.node = Node("supervision_observer", context=context)
        self.lock = threading.Lock()
        self.statuses: list[DiagnosticStatus] = []
        self.labels: list[Image] = []
        self.camera = camera
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, RELIABLE)
        self.node.create_subscription(Image, f"{out_ns}/label", self._label, RELIABLE)
        self.pub = self.node.create_publisher(Image, camera, RELIABLE)

    def _diag(self, msg: DiagnosticArray) -> None:
        with self.lock:  # /diagnostics is global: keep only this camera's statuses
            self.statuses += [s for s in msg.status if s.name.endswith(f": {self.camera}")]

    def _label(self, msg: Image) -> None:
        with self.lock:
            self.labels.append(msg)

    def send(self, tag: int, rgb: np.ndarray = GOOD_RGB) -> None:
        """A frame stamped now (the latency stays in budget), tagged in the nanoseconds."""
        msg = image_io.rgb8_to_image(rgb)
        msg.header.stamp.sec = int(time.time())
        msg.header.stamp.nanosec, msg.header.frame_id = tag, "camera"
        self.pub.publish(msg)

    def status_after(self, mark: int, level: bytes, text: str) -> DiagnosticStatus | None:
        with self.lock:
            return next((s for s in self.statuses[mark:]
                         if s.level == level and text in s.message), None)

    def sending_until(self, cond, tag: int, rgb: np.ndarray = GOOD_RGB,
                      what: str = "") -> object:
        """A 10 Hz camera sending `tag` frames until cond() holds (the hang guard is long)."""
        end = time.monotonic() + 120
        while time.monotonic() < end:
            self.send(tag, rgb)
            deadline = time.monotonic() + 0.1
            while time.monotonic() < deadline:
                if value := cond():
                    return value
                time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")

    def label_with(self, tag: int) -> bool:
        with self.lock:
            return any(m.header.stamp.nanosec == tag for m in self.labels)


def test_worker_faults_show_error_on_diagnostics_and_serving_resumes(checkpoint):
    """The node as its own process, seen only through /diagnostics and its labels: OK while
    serving, WARN when the camera goes silent, ERROR for a failing batch and for a dead worker
    thread (injected by the model test/fault_node.py wraps, on marker frames), then labels
    again."""
    camera = "/sup/image_raw"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "test" / "fault_node.py"), "--ros-args",
         "-p", f"image_topics:=['{camera}']", "-p", f"model_path:={checkpoint}",
         "-p", "device:=cpu", "-p", "input_reliability:=reliable",
         "-p", "diagnostics_period_s:=0.2", "-p", "stale_timeout_s:=1.0",
         "-p", "latency_budget_ms:=1000000.0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        obs = _Observer(context, camera, "/sup/segmentation")
        executor.add_node(obs.node)
        threading.Thread(target=executor.spin, daemon=True).start()

        # OK: frames come in and labels go out.
        obs.sending_until(lambda: obs.label_with(1), 1, what="first label")
        mark = len(obs.statuses)
        ok = obs.sending_until(lambda: obs.status_after(mark, DiagnosticStatus.OK, ""), 2,
                               what="OK")
        assert int(_values(ok)["frames published"]) > 0
        # WARN: the camera goes silent.
        mark = len(obs.statuses)
        wait_for(lambda: obs.status_after(mark, DiagnosticStatus.WARN, "no frames"), 60, "WARN")

        # ERROR: a batch raises; it is reported, and the next frames are served.
        mark = len(obs.statuses)
        error = obs.sending_until(
            lambda: obs.status_after(mark, DiagnosticStatus.ERROR, "InjectedFault"), 3,
            np.full_like(GOOD_RGB, FAULT_VALUE),
            what="ERROR for a failing batch")
        assert int(_values(error)["worker failures"]) >= 1
        assert "InjectedFault" in _values(error)["last worker failure"]
        assert not obs.label_with(3)  # the failing frame's batch published nothing
        obs.sending_until(lambda: obs.label_with(4), 4, what="labels after the failure")
        mark = len(obs.statuses)
        obs.sending_until(lambda: obs.status_after(mark, DiagnosticStatus.OK, ""), 5,
                          what="OK again")

        # ERROR: the worker thread dies; the watchdog reports it and starts a new one.
        mark = len(obs.statuses)
        died = obs.sending_until(
            lambda: obs.status_after(mark, DiagnosticStatus.ERROR, "inference worker died"), 6,
            np.full_like(GOOD_RGB, KILL_VALUE), what="ERROR for a dead worker")
        assert "_InjectedWorkerDeath" in died.message
        obs.sending_until(lambda: obs.label_with(7), 7, what="labels from the new worker")
        assert int(_values(obs.statuses[-1])["worker restarts"]) >= 1
    finally:
        executor.shutdown()
        rclpy.shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    # Many failing frames, one traceback per cause (the batch fault, the thread's death).
    assert out.count("Traceback") == 2, out[-5000:]
    assert out.count("raise InjectedFault") == 1 and out.count("raise _InjectedWorkerDeath") == 1


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}
