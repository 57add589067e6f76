"""The segmentation node: camera frames in, per-frame labels, camera_info and diagnostics out.

A managed (lifecycle) node. `configure` checks the parameters, loads the model and warms it up
and creates the publishers; `activate` subscribes and starts the worker; `deactivate` stops
serving (the model stays loaded); `cleanup` releases the model. With `autostart` (the default)
the node configures and activates itself, so `ros2 run` and the launch file serve at once;
with `autostart:=false` a lifecycle manager drives it.

Data path: subscription callbacks only park the newest message of each camera in a slot
(latest-frame-wins, so latency never queues behind a slow model); one worker thread takes every
ready slot, decodes (image_io), runs one batch (Segmenter) and publishes with the input's header.
The worker is supervised: a batch that raises is counted and reported (ERROR on /diagnostics) and
the next frame is served; a watchdog restarts the thread if it ever dies.

    python -m etc_ros.node --ros-args -p image_topics:="['/cam/image_raw']"
"""
from __future__ import annotations

import array
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float64, Header, String

from etc_ros import image_io, labels
from etc_ros.backends import BACKENDS, resolve_device
from etc_ros.checkpoint import CheckpointError
from etc_ros.diagnostics import CameraStats
from etc_ros.errors import one_line
from etc_ros.resources import DEFAULT_MODEL, use_fastdds_profile
from etc_ros.segmenter import SegmentationResult, Segmenter
from etc_ros.shutdown import StopRequest

__all__ = ["DEFAULT_MODEL", "SegmentationNode", "StartupError", "main"]

# Parameters read at configure: they change only while the node is unconfigured.
RESTART_REQUIRED = frozenset({
    "image_topics", "camera_info_topics", "model_path", "device", "half", "output_resolution",
    "input_reliability", "input_queue_depth", "output_queue_depth", "diagnostics_period_s",
    "diagnostics_window", "tc_monitor", "backend", "cpu_threads", "autostart",
})
CHOICES = {
    "output_resolution": ("input", "model"),
    "input_reliability": ("auto", "reliable", "best_effort"),
    "backend": BACKENDS,
}
RELIABILITY_CHECK_PERIOD_S = 0.5  # how soon `auto` follows a camera publisher appearing
BAD_FRAME_WARNING_PERIOD_S = 5.0  # at most one bad-frame warning per camera in this period
WORKER_CHECK_PERIOD_S = 0.5  # how soon the watchdog restarts a dead inference worker
WORKER_FAILURE_LOG_PERIOD_S = 5.0  # repeated worker failures: at most one log line per period
# What a failed configure can raise; anything else is a bug and is logged with its traceback.
CONFIGURE_ERRORS = (CheckpointError, ParameterException, ValueError, RuntimeError, OSError,
                    ImportError)


class StartupError(ValueError):
    """A parameter that makes start-up impossible; the message is one line naming it."""


def _descriptor(description: str, *, floats: tuple[float, float] | None = None,
                ints: tuple[int, int] | None = None) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        floating_point_range=[FloatingPointRange(from_value=floats[0], to_value=floats[1])]
        if floats else [],
        integer_range=[IntegerRange(from_value=ints[0], to_value=ints[1])] if ints else [],
    )


PARAMETERS = [
    ("image_topics", ["/camera/image_raw"], _descriptor(
        "Input image topics; '.../compressed' topics carry CompressedImage, others "
        "Image. Outputs go to <namespace of the base topic>/segmentation/*.")),
    ("model_path", "", _descriptor(
        "etc_ros checkpoint (.safetensors, or .onnx from etc_ros.export_onnx); "
        "empty = the packaged "
        "etc_ros/weights/student_etc.safetensors.")),
    ("device", "auto", _descriptor(
        "auto | cpu | cuda | cuda:N. auto falls back to the CPU with a warning; an "
        "explicit cuda without CUDA is a start-up error.")),
    ("half", True, _descriptor("Run fp16 on CUDA devices (ignored on the CPU).")),
    ("backend", "auto", _descriptor(
        "auto | torch | onnxruntime. auto: onnxruntime for a .onnx model_path, torch "
        "for .safetensors. onnxruntime with a .safetensors file exports it once into "
        "~/.cache/etc_ros/onnx (keyed by the file's sha256). On cuda, onnxruntime uses "
        "TensorRT (fp16 with half, engine cache) when present, else CUDA.")),
    ("cpu_threads", 0, _descriptor(
        "Intra-op CPU threads of the model (torch and onnxruntime); 0 = one per core "
        "this process may run on.", ints=(0, 1024))),
    ("output_resolution", "input", _descriptor(
        "input: labels at the camera's resolution (nearest neighbour); model: at the "
        "model's input size.")),
    ("overlay_alpha", 0.5, _descriptor(
        "Weight of the class colours in the overlay image.", floats=(0.0, 1.0))),
    ("max_pixels", 16_777_216, _descriptor(
        "Frames with more pixels are skipped as bad input (0 = no limit).",
        ints=(0, 2**31 - 1))),
    ("mono16_bits", 16, _descriptor(
        "Significant bits of mono16/16UC1 input (10 and 12 are common): their top 8 "
        "bits become the model's grey level, larger values saturate.", ints=(8, 16))),
    ("input_reliability", "auto", _descriptor(
        "auto | reliable | best_effort. auto follows the publishers on the graph: "
        "reliable when all of them are reliable, re-checked as publishers come and go.")),
    ("input_queue_depth", 5, _descriptor(
        "Keep-last depth of the input subscriptions. The node only uses the newest "
        "frame; a depth above 1 hands every frame to the callback, so frames replaced "
        "before inference are counted as dropped instead of vanishing inside DDS.",
        ints=(1, 100))),
    ("output_queue_depth", 2, _descriptor(
        "Keep-last depth of the (reliable) output publishers.", ints=(1, 100))),
    ("latency_budget_ms", 100.0, _descriptor(
        "Diagnostics WARN when the p95 header-stamp->publish latency exceeds this.",
        floats=(0.0, 1e6))),
    ("stale_timeout_s", 2.0, _descriptor(
        "Diagnostics WARN when a camera sends nothing for this long.",
        floats=(0.0, 1e6))),
    ("diagnostics_period_s", 1.0, _descriptor(
        "Period of the /diagnostics status.", floats=(0.05, 3600.0))),
    ("diagnostics_window", 100, _descriptor(
        "Number of recent frames the latency percentiles are taken over.",
        ints=(1, 100_000))),
    ("publish_latency", True, _descriptor(
        "Publish <ns>/segmentation/latency_ms (std_msgs/Float64, header stamp to "
        "publish) for every frame.")),
    ("tc_monitor", False, _descriptor(
        "Live temporal-consistency monitor per camera (own thread, downscaled DIS "
        "flow), reported in /diagnostics.")),
    ("camera_info_topics", [""], _descriptor(
        "CameraInfo topic of each image topic, in the same order; '' or a missing entry = "
        "beside the image topic (/cam/image_raw -> /cam/camera_info). Published again, "
        "scaled to the label image, on <ns>/segmentation/camera_info.")),
    ("autostart", True, _descriptor(
        "true: configure and activate on start (ros2 run, the launch file). false: stay "
        "unconfigured until a lifecycle manager (or ros2 lifecycle set) drives it.")),
]


@dataclass
class _Camera:
    """One input topic: its subscriptions, output publishers, stats and latest-frame slot."""

    topic: str
    out_ns: str
    msg_type: type
    info_topic: str
    stats: CameraStats
    label: Publisher
    color: Publisher
    overlay: Publisher
    confidence: Publisher
    latency: Publisher
    classes: Publisher
    camera_info: Publisher
    reliability: ReliabilityPolicy
    subscription: Subscription | None = None
    info_subscription: Subscription | None = None
    info: CameraInfo | None = None  # the newest one received
    info_missing_logged: bool = False
    pending: tuple[Any, float] | None = None  # (message, monotonic receive time)
    last_warning: float = -1e9
    monitor: Any = None


class SegmentationNode(LifecycleNode):
    """Segments every frame of one or more cameras; see the module docstring for the data path."""

    def __init__(self, node_name: str = "segmentation_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        # What destroy_node needs, set before anything can fail: a start-up error destroys the
        # half-built node here, so no rcl handle outlives the context (SIGSEGV at exit).
        self._cond = threading.Condition()
        self._stop = True  # no worker runs while not active
        self._worker: threading.Thread | None = None
        self._active = False
        self.cameras: list[_Camera] = []
        self.segmenter: Segmenter | None = None
        self._configured_timers: list[Timer] = []  # diagnostics: configured states
        self._active_timers: list[Timer] = []  # reliability follower, watchdog: active only
        self._configure_error = ""
        self._autostarting = False  # a failed configure then goes to main's exit line
        self._static_values: dict[str, str] = {}
        self._failure_causes: set[tuple[str, str, int]] = set()
        self._last_failure_log = -1e9
        self._worker_death: BaseException | None = None
        self._worker_restarts = 0
        try:
            self.declare_parameters("", PARAMETERS)
            # /diagnostics in every state: it reports a failed configure and `inactive` too.
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=10,
                reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE))
            self.add_on_set_parameters_callback(self._validate_change)
            self.add_post_set_parameters_callback(self._apply_change)
            if self.get_parameter("autostart").value:
                self._autostart()
        except BaseException:
            self.destroy_node()
            raise

    def _autostart(self) -> None:
        """configure + activate; a failure is a StartupError (the process exits with it)."""
        self._autostarting = True
        try:
            configured = self.trigger_configure()
        finally:
            self._autostarting = False
        if configured != TransitionCallbackReturn.SUCCESS:
            raise StartupError(self._configure_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise StartupError("activate failed")

    # -- lifecycle transitions ------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check the parameters, load and warm up the model, create the publishers."""
        try:
            p = self._read_parameters()
            self._load_model(p)
            self._create_cameras(p)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the node unconfigured
            self._release()
            self._configure_failed(exc)
            return TransitionCallbackReturn.FAILURE
        self._configure_error = ""
        self._configured_timers.append(
            self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics))
        seg = self.segmenter
        self.get_logger().info(
            f"configured: {', '.join(c.topic for c in self.cameras)} with "
            f"{self._static_values['model']} ({seg.meta.architecture}, {seg.input_size[0]}x"
            f"{seg.input_size[1]}) on {seg.device} {seg.precision}, {seg.backend_name} on "
            f"{seg.provider}")
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, exc: Exception) -> None:
        """One line: to main's exit message when autostarting, else to the log and /diagnostics."""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        expected = isinstance(exc, CONFIGURE_ERRORS)
        self._configure_error = reason if expected else f"{type(exc).__name__}: {reason}"
        if self._autostarting:
            return
        details = "" if expected else _traceback(exc)
        self.get_logger().error(f"configure failed: {self._configure_error}{details}")
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status.append(DiagnosticStatus(
            level=DiagnosticStatus.ERROR, name=f"{self.get_name()}: lifecycle",
            message=f"configure failed: {self._configure_error}", hardware_id=self.get_name(),
            values=[KeyValue(key="lifecycle state", value="unconfigured")]))
        self._diag_pub.publish(msg)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and start the worker (and the TC monitors, fresh for this activation)."""
        tc_monitor = self.get_parameter("tc_monitor").value
        now = time.monotonic()
        for cam in self.cameras:
            cam.stats.on_activate(now)
            if tc_monitor:
                from etc_ros.tc_monitor import LiveTCMonitor
                cam.monitor = LiveTCMonitor(self.segmenter.num_classes)
            self._subscribe(cam)
            cam.info_subscription = self.create_subscription(
                CameraInfo, cam.info_topic, lambda msg, cam=cam: setattr(cam, "info", msg),
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.BEST_EFFORT))
        if self._reliability_mode == "auto":
            self._active_timers.append(
                self.create_timer(RELIABILITY_CHECK_PERIOD_S, self._follow_publishers))
        with self._cond:
            self._stop = False
            self._worker = self._start_worker()
        self._active_timers.append(self.create_timer(WORKER_CHECK_PERIOD_S, self._watch_worker))
        self._active = True
        self.get_logger().info(f"segmenting {', '.join(c.topic for c in self.cameras)}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop serving: no subscriptions, no worker, nothing parked; the model stays loaded."""
        self._deactivate()
        self.get_logger().info("inactive: not serving, model kept")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model (GPU memory included) and the publishers."""
        self._release()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured."""
        self._deactivate()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        self._active = False
        for timer in self._active_timers:
            self.destroy_timer(timer)
        self._active_timers.clear()
        for cam in self.cameras:
            for sub in (cam.subscription, cam.info_subscription):
                if sub is not None:
                    self.destroy_subscription(sub)
            cam.subscription = cam.info_subscription = None
        self._stop_worker()
        for cam in self.cameras:
            cam.pending = None
            if cam.monitor is not None:
                cam.monitor.close()
                cam.monitor = None

    def _stop_worker(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
            worker, self._worker = self._worker, None  # the watchdog starts no other now
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def _release(self) -> None:
        """Back to unconfigured: publishers, diagnostics timer and model go."""
        for timer in self._configured_timers:
            self.destroy_timer(timer)
        self._configured_timers.clear()
        for cam in self.cameras:
            for pub in (cam.label, cam.color, cam.overlay, cam.confidence, cam.latency,
                        cam.classes, cam.camera_info):
                self.destroy_publisher(pub)
        self.cameras = []
        segmenter, self.segmenter = self.segmenter, None
        if segmenter is not None:
            segmenter.close()

    # -- configure, in three steps ----------------------------------------------------------------
    def _read_parameters(self) -> dict[str, Any]:
        """Every parameter's value, checked; live ones also go to the attributes they drive."""
        p = {name: self.get_parameter(name).value for name, *_ in PARAMETERS}
        for name, value in p.items():
            reason = _check_value(name, value)
            if reason:
                raise StartupError(f"parameter {name}: {reason}")
        p["image_topics"] = [self.resolve_topic_name(t) for t in p["image_topics"]]
        _check_topics(p["image_topics"])
        infos = list(p["camera_info_topics"])
        if len(infos) > len(p["image_topics"]):
            raise StartupError(f"parameter camera_info_topics: {len(infos)} topics for "
                               f"{len(p['image_topics'])} image topics")
        infos += [""] * (len(p["image_topics"]) - len(infos))
        p["camera_info_topics"] = [self.resolve_topic_name(info or image_io.camera_info_topic(t))
                                   for t, info in zip(p["image_topics"], infos, strict=True)]
        self._alpha: float = p["overlay_alpha"]
        self._max_pixels: int | None = p["max_pixels"] or None
        self._mono16_bits: int = p["mono16_bits"]
        self._budget_ms: float = p["latency_budget_ms"]
        self._stale_s: float = p["stale_timeout_s"]
        self._publish_latency: bool = p["publish_latency"]
        self._reliability_mode: str = p["input_reliability"]
        self._input_depth: int = p["input_queue_depth"]
        return p

    def _load_model(self, p: dict[str, Any]) -> None:
        """Segmenter on the chosen device and backend, warmed up for this many cameras."""
        device = resolve_device(p["device"], warn=self.get_logger().warning)
        model_path = Path(p["model_path"]) if p["model_path"] else DEFAULT_MODEL
        self.segmenter = self._make_segmenter(
            model_path, device, half=p["half"] and device.type == "cuda",
            model_resolution_output=p["output_resolution"] == "model", backend=p["backend"],
            cpu_threads=p["cpu_threads"], log=self.get_logger().info)
        self.segmenter.warmup(batch_sizes=tuple(sorted({1, len(p["image_topics"])})))
        meta = self.segmenter.meta
        self._palette = np.asarray(meta.palette, dtype=np.uint8)
        self._static_values = {
            "device": str(device),
            "precision": self.segmenter.precision,
            "backend": f"{self.segmenter.backend_name} on {self.segmenter.provider}",
            "model": str(model_path),
            "architecture": meta.architecture,
            "model input (HxW)": f"{meta.input_size[0]}x{meta.input_size[1]}",
        }

    def _make_segmenter(self, model_path: Path, device: Any, **kwargs: Any) -> Segmenter:
        """The model the worker runs; a test entry point wraps it (test/fault_node.py)."""
        return Segmenter(model_path, device, **kwargs)

    def _create_cameras(self, p: dict[str, Any]) -> None:
        """Each camera's publishers and stats; the latched class list goes out at once."""
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p["output_queue_depth"],
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        # Images for people (RViz): sensor-data QoS, so a slow viewer never back-pressures the
        # worker or holds old frames; machines read the reliable label.
        viewer_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=ReliabilityPolicy.BEST_EFFORT,
                                durability=DurabilityPolicy.VOLATILE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        meta = self.segmenter.meta
        classes_msg = String(data=labels.classes_yaml(meta.class_names, self._palette))
        for topic, info_topic in zip(p["image_topics"], p["camera_info_topics"], strict=True):
            ns = image_io.output_namespace(topic)
            cam = _Camera(
                topic=topic, out_ns=ns,
                msg_type=CompressedImage if image_io.image_transport_base(topic) != topic
                else Image,
                info_topic=info_topic,
                stats=CameraStats(topic, window=p["diagnostics_window"]),
                label=self.create_publisher(Image, f"{ns}/label", out_qos),
                color=self.create_publisher(Image, f"{ns}/color", viewer_qos),
                overlay=self.create_publisher(Image, f"{ns}/overlay", viewer_qos),
                confidence=self.create_publisher(Image, f"{ns}/confidence", viewer_qos),
                latency=self.create_publisher(Float64, f"{ns}/latency_ms", out_qos),
                classes=self.create_publisher(String, f"{ns}/classes", latched),
                camera_info=self.create_publisher(CameraInfo, f"{ns}/camera_info", out_qos),
                reliability=self._wanted_reliability(topic) or ReliabilityPolicy.BEST_EFFORT,
            )
            self.cameras.append(cam)  # from here on _release destroys its publishers
            cam.classes.publish(classes_msg)


    # -- inputs -------------------------------------------------------------------------------
    def _wanted_reliability(self, topic: str) -> ReliabilityPolicy | None:
        """Reliability to subscribe with; None in auto mode while no publisher is known."""
        if self._reliability_mode == "reliable":
            return ReliabilityPolicy.RELIABLE
        if self._reliability_mode == "best_effort":
            return ReliabilityPolicy.BEST_EFFORT
        infos = self.get_publishers_info_by_topic(topic)
        if not infos:
            return None
        # Like rosbag2: reliable only if every publisher is, since a reliable subscription
        # does not match a best-effort publisher at all.
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        return ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT

    def _subscribe(self, cam: _Camera) -> None:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._input_depth,
                         reliability=cam.reliability, durability=DurabilityPolicy.VOLATILE)
        cam.subscription = self.create_subscription(
            cam.msg_type, cam.topic, lambda msg, cam=cam: self._on_image(cam, msg), qos)

    def _follow_publishers(self) -> None:
        """`auto` reliability: re-subscribe when the publishers' reliability changes."""
        for cam in self.cameras:
            wanted = self._wanted_reliability(cam.topic)
            if wanted is None or wanted == cam.reliability:
                continue
            self.get_logger().info(
                f"{cam.topic}: publishers changed, subscribing {wanted.name.lower()}")
            self.destroy_subscription(cam.subscription)
            cam.reliability = wanted
            self._subscribe(cam)

    def _on_image(self, cam: _Camera, msg: Image | CompressedImage) -> None:
        """Only park the frame: the newest one wins, an unprocessed one it replaces is dropped."""
        now = time.monotonic()
        cam.stats.on_receive(now)
        with self._cond:
            if cam.pending is not None:
                cam.stats.on_drop()
            cam.pending = (msg, now)
            self._cond.notify()

    # -- inference worker ---------------------------------------------------------------------
    def _start_worker(self) -> threading.Thread:
        thread = threading.Thread(target=self._worker_main, name="segmentation_worker",
                                  daemon=True)
        thread.start()
        return thread

    def _worker_main(self) -> None:
        """Thread body: whatever ends the thread is kept for the watchdog to report."""
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - reported and restarted by _watch_worker
            self._worker_death = exc

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop or any(c.pending for c in self.cameras))
                if self._stop:
                    return
                ready = [(c, *c.pending) for c in self.cameras if c.pending]
                for cam, _, _ in ready:
                    cam.pending = None
            try:
                self._process(ready)
            except Exception as exc:  # noqa: BLE001 - supervised: count, report, serve on
                self._worker_failed([cam for cam, *_ in ready], exc)

    def _worker_failed(self, cameras: list[_Camera], exc: BaseException) -> None:
        """A batch raised: ERROR on these cameras' next status; traceback once per cause."""
        if self._stop:
            return  # stopping: destroy_node is about to take the publishers away
        cause = _cause(exc)
        for cam in cameras:
            cam.stats.on_failure(cause)
        now = time.monotonic()
        first = self._first_time(exc)
        if first or now - self._last_failure_log >= WORKER_FAILURE_LOG_PERIOD_S:
            self._last_failure_log = now
            failures = sum(c.stats.failures for c in self.cameras)
            self.get_logger().error(
                f"inference worker failure, serving the next frame: {cause} "
                f"({failures} so far)" + (_traceback(exc) if first else ""))

    def _first_time(self, exc: BaseException) -> bool:
        """True the first time this kind of exception is raised from this line."""
        frames = traceback.extract_tb(exc.__traceback__)
        key = (type(exc).__name__, frames[-1].filename if frames else "",
               frames[-1].lineno or 0 if frames else 0)
        if key in self._failure_causes:
            return False
        self._failure_causes.add(key)
        return True

    def _watch_worker(self) -> None:
        """Watchdog timer: a worker thread that died is reported (ERROR) and restarted."""
        with self._cond:
            if self._stop or self._worker is None or self._worker.is_alive():
                return
            death, self._worker_death = self._worker_death, None
            self._worker_restarts += 1
            self._worker = self._start_worker()
        cause = _cause(death) if death is not None else "the thread ended without an exception"
        for cam in self.cameras:
            cam.stats.on_failure(f"inference worker died ({cause}); restarted")
        details = _traceback(death) if death is not None and self._first_time(death) else ""
        self.get_logger().error(
            f"inference worker died ({cause}); restarted ({self._worker_restarts} restarts)"
            + details)

    def _process(self, ready: list[tuple[_Camera, Any, float]]) -> None:
        batch = []
        for cam, msg, received in ready:
            try:
                batch.append((cam, msg, received, image_io.msg_to_rgb8(
                    msg, self._max_pixels, self._mono16_bits)))
            except image_io.ImageConversionError as exc:
                self._bad_frame(cam, str(exc))
        if not batch:
            return
        want_conf = any(c.confidence.get_subscription_count() > 0 for c, *_ in batch)
        try:
            results = self.segmenter.segment([rgb for *_, rgb in batch], want_conf)
        except (RuntimeError, ValueError) as exc:  # e.g. CUDA out of memory: keep serving
            for cam, *_ in batch:
                self._bad_frame(cam, f"inference failed: {one_line(exc)}")
            return
        timings = self.segmenter.last_timings
        for (cam, msg, received, rgb), result in zip(batch, results, strict=True):
            self._publish(cam, msg.header, rgb, result, received)
            cam.stats.on_timings(timings.preprocess_ms, timings.forward_ms,
                                 timings.postprocess_ms)

    def _bad_frame(self, cam: _Camera, reason: str) -> None:
        cam.stats.on_bad(reason)
        now = time.monotonic()
        if now - cam.last_warning >= BAD_FRAME_WARNING_PERIOD_S:
            cam.last_warning = now
            self.get_logger().warning(
                f"{cam.topic}: skipped bad frame: {reason} ({cam.stats.bad} bad so far)")

    def _publish(self, cam: _Camera, header: Header, rgb: np.ndarray,
                 result: SegmentationResult, received: float) -> None:
        label_enc = "mono8" if result.labels.dtype == np.uint8 else "mono16"
        cam.label.publish(image_io.numpy_to_image(result.labels, label_enc, header))
        self._publish_camera_info(cam, header, rgb.shape[:2], result.labels.shape[:2])
        receive_ms = (time.monotonic() - received) * 1e3
        stamp_ns = header.stamp.sec * 10**9 + header.stamp.nanosec
        stamp_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6 if stamp_ns else None
        cam.stats.on_published(stamp_ms, receive_ms, header.frame_id)
        if self._publish_latency and stamp_ms is not None:
            cam.latency.publish(Float64(data=stamp_ms))
        # Everything below is for people looking at it: computed only while someone looks.
        want_overlay = cam.overlay.get_subscription_count() > 0
        want_color = cam.color.get_subscription_count() > 0
        if want_overlay or want_color:
            color = labels.colorize(result.labels, self._palette)
            if want_color:
                cam.color.publish(image_io.numpy_to_image(color, "rgb8", header))
            if want_overlay:
                if rgb.shape[:2] != color.shape[:2]:
                    rgb = cv2.resize(rgb, (color.shape[1], color.shape[0]),
                                     interpolation=cv2.INTER_AREA)
                blend = labels.overlay(rgb, color, self._alpha)
                cam.overlay.publish(image_io.numpy_to_image(blend, "rgb8", header))
        if result.confidence is not None and cam.confidence.get_subscription_count() > 0:
            cam.confidence.publish(_float_image(result.confidence, header))
        if cam.monitor is not None:
            cam.monitor.submit(result.labels, rgb)

    def _publish_camera_info(self, cam: _Camera, header: Header, image_hw: tuple[int, int],
                             label_hw: tuple[int, int]) -> None:
        """The camera's newest CameraInfo, scaled to the label image, with the label's header."""
        info = cam.info
        if info is None:
            if not cam.info_missing_logged:
                cam.info_missing_logged = True
                self.get_logger().warning(
                    f"{cam.topic}: no CameraInfo on {cam.info_topic}, so "
                    f"{cam.out_ns}/camera_info is not published (logged once)")
            return
        cam.camera_info.publish(image_io.scale_camera_info(info, image_hw, label_hw, header))

    # -- diagnostics and parameters -------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        for cam in self.cameras:
            info = (cam.info_topic if cam.info is not None
                    else f"none received on {cam.info_topic}: {cam.out_ns}/camera_info not "
                    "published")
            if not self._active:
                msg.status.append(DiagnosticStatus(
                    level=DiagnosticStatus.OK, name=f"{self.get_name()}: {cam.topic}",
                    message="inactive: not serving (lifecycle state inactive)",
                    hardware_id=cam.topic, values=[
                        KeyValue(key=k, value=v) for k, v in (
                            ("topic", cam.topic), ("lifecycle state", "inactive"),
                            *self._static_values.items())]))
                continue
            if cam.monitor is not None:
                cam.stats.set_tc(cam.monitor.value())
            extra = dict(self._static_values, **{"input reliability": cam.reliability.name,
                                                 "worker restarts": str(self._worker_restarts),
                                                 "camera_info": info,
                                                 "lifecycle state": "active"})
            msg.status.append(cam.stats.status(
                now, node_name=self.get_name(), latency_budget_ms=self._budget_ms,
                stale_timeout_s=self._stale_s, extra=extra))
        self._diag_pub.publish(msg)

    def _validate_change(self, params: list[Parameter]) -> SetParametersResult:
        """Live parameters change in any state; the others only while unconfigured."""
        for param in params:
            if param.name in RESTART_REQUIRED and self.segmenter is not None:
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} cannot change while configured (restart required: "
                    "cleanup, set it, configure)")
            reason = _check_value(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=f"{param.name}: {reason}")
        return SetParametersResult(successful=True)

    def _apply_change(self, params: list[Parameter]) -> None:
        for param in params:
            if param.name == "overlay_alpha":
                self._alpha = param.value
            elif param.name == "max_pixels":
                self._max_pixels = param.value or None
            elif param.name == "mono16_bits":
                self._mono16_bits = param.value
            elif param.name == "latency_budget_ms":
                self._budget_ms = param.value
            elif param.name == "stale_timeout_s":
                self._stale_s = param.value
            elif param.name == "publish_latency":
                self._publish_latency = param.value

    def destroy_node(self) -> None:
        """Stop the worker and monitors before the publishers they use go away.

        Idempotent: main() calls it before shutting the context down, and rclpy's shutdown
        destroys every node of a context it shuts down (in-process users, tests).
        """
        self._stop_worker()
        for cam in self.cameras:
            if cam.monitor is not None:
                cam.monitor.close()
                cam.monitor = None
        segmenter, self.segmenter = self.segmenter, None
        if segmenter is not None:
            segmenter.close()
        super().destroy_node()


def _check_value(name: str, value: Any) -> str | None:
    """Checks descriptors cannot express; returns the reason a value is refused."""
    if name in CHOICES and value not in CHOICES[name]:
        return f"{value!r} is not one of {', '.join(CHOICES[name])}"
    if name == "device":
        try:
            resolve_device(value, warn=lambda _: None)
        except ValueError as exc:
            return str(exc)
    if name == "image_topics" and not value:
        return "give at least one image topic"
    return None


def _cause(exc: BaseException) -> str:
    """One line naming an exception and where it was raised, for logs and /diagnostics."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"


def _traceback(exc: BaseException) -> str:
    return "\n" + "".join(traceback.format_exception(exc)).rstrip()


def _check_topics(topics: list[str]) -> None:
    """Two inputs must not write to the same outputs."""
    seen: dict[str, str] = {}
    for topic in topics:
        ns = image_io.output_namespace(topic)
        if ns in seen:
            raise StartupError(
                f"parameter image_topics: {seen[ns]} and {topic} would both publish to {ns}")
        seen[ns] = topic


def _float_image(arr: np.ndarray, header: Header) -> Image:
    """(H, W) float32 -> 32FC1 Image; image_io covers camera encodings only."""
    msg = Image(header=header, height=arr.shape[0], width=arr.shape[1], encoding="32FC1",
                is_bigendian=int(sys.byteorder == "big"), step=arr.shape[1] * 4)
    msg.data = array.array("B", np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return msg


def main(argv: list[str] | None = None,
         node_class: type[SegmentationNode] = SegmentationNode) -> int:
    """Console script `segmentation_node`; start-up problems are one line and exit code 1.

    Stopping (SIGINT, SIGTERM, or the context shut down by someone else) is ordered, in every
    lifecycle state: the worker stops, then the node and its publishers go, then the context;
    exit code 0. `node_class` lets a test entry point run a subclass the same way.
    """
    stop = StopRequest()
    use_fastdds_profile()  # also under a bare `ros2 run`, which has no launch file to set it
    rclpy.init(args=sys.argv if argv is None else argv,
               signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        node = node_class()
        # One executor thread is enough (callbacks only park frames; inference has its own
        # thread) and it is required: `auto` reliability destroys and recreates subscriptions,
        # which races with a second executor thread building its wait set (InvalidHandle).
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        stop.spin(executor)
    except (StartupError, CheckpointError, ParameterException, ValueError) as exc:
        print(f"segmentation_node: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except ExternalShutdownException:
        pass
    finally:
        # Explicitly, in this order: nothing rcl may be left for the garbage collector to
        # destroy after the context is gone (that crashes at exit).
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
