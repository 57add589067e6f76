"""Where the node's latency goes: model forward alone vs the node through DDS vs a bare relay.

One run, the same frames for every measurement, per model input size:
  (a) forward ms of the Segmenter alone (after warm-up);
  (b) node end to end: frames published (rgb8, camera size = model input size, reliable) to a
      `python -m etc_ros.node` process, one at a time (the next after its label arrives), latency =
      label receive time - frame header stamp;
  (c) the same through a pass-through relay process (no model) as the transport floor;
  (d) optionally (b) again with the live TC monitor on.
The derived node overhead is e2e - forward - relay (p50); target: e2e - forward <= relay + 3 ms.
`--backends` repeats (a)-(c) per backend on the same frames: torch (fp32), ort (ONNX Runtime
fp32), ort-int8 (static int8, calibrated on the bench frames), and on a GPU torch-fp16, ort-cuda,
ort-trt. `--forward-only` measures (a) alone and imports nothing from ROS (GPU machines).

    python -m etc_ros.bench --resolutions 256x512,512x1024 --frames 60 --tc-monitor-compare
    python -m etc_ros.bench --backends torch,ort,ort-int8 --resolutions 128x256,512x1024
    python -m etc_ros.bench --forward-only --device cuda --backends torch-fp16,ort-cuda,ort-trt \
        --resolutions 1024x2048 --json gpu.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from etc_ros.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    make_random_checkpoint,
    save_checkpoint,
)
from etc_ros.cli import EXIT_INTERRUPTED, EXIT_USAGE, Parser, fail
from etc_ros.metrics import percentiles
from etc_ros.resources import DEFAULT_MODEL, resource
from etc_ros.tools.proc import Child, child, interrupt_on_sigterm, node_command, setup_ros_env

DEMO_CLIP = resource("assets", "demo_street.mp4")
DEFAULT_ARCH = "lraspp_effnet_lite0"  # the shipped students' network, for the random fallback
TARGET_MARGIN_MS = 3.0
READY_TIMEOUT_S = 120.0  # node start-up: imports, model load and warm-up on a busy CPU
BACKEND_CHOICES = ("torch", "ort", "ort-int8", "torch-fp16", "ort-cuda", "ort-trt")
GPU_BACKENDS = ("torch-fp16", "ort-cuda", "ort-trt")


# -- relay: the transport floor ------------------------------------------------------------------
def run_relay(input_topic: str, output_topic: str) -> int:
    """Republish every Image unchanged (same header) with the node's QoS: DDS cost, no model."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from etc_ros.shutdown import StopRequest

    stop = StopRequest()  # no publish racing a context shut down by a signal thread
    rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node = Node("bench_relay")
    executor = SingleThreadedExecutor()
    pub = node.create_publisher(Image, output_topic, _qos(2))
    node.create_subscription(Image, input_topic, pub.publish, _qos(1))
    try:
        executor.add_node(node)
        stop.spin(executor)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _qos(depth: int):  # noqa: ANN202 - rclpy imported lazily so `--help` stays fast
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE)


# -- the probe: publishes frames, times the answers ----------------------------------------------
class Link:
    """One measured path: our Image publisher -> a child process -> its label topic back to us."""

    def __init__(self, probe: Probe, proc: Child, image_topic: str, label_topic: str) -> None:
        from sensor_msgs.msg import Image

        self.probe, self.proc = probe, proc
        self.image_topic, self.label_topic = image_topic, label_topic
        self.pub = probe.node.create_publisher(Image, image_topic, _qos(1))
        self.sub = probe.node.create_subscription(Image, label_topic, probe.on_label, _qos(2))
        self.latencies_ms: list[float] = []
        self.lost = 0

    def wait_ready(self, warmup: list, timeout_s: float) -> None:
        """Wait for the child's graph entities, then until `len(warmup)` frames got answers."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (self.pub.get_subscription_count() < 1
               or self.probe.node.count_publishers(self.label_topic) < 1):
            if not self.proc.alive():
                raise RuntimeError(f"{self.proc.name} failed to start: {self.proc.last_line()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.proc.name} not ready after {READY_TIMEOUT_S:.0f} s")
            self.probe.executor.spin_once(timeout_sec=0.1)
        answered = 0
        for i in range(len(warmup) * 10):  # the first frames also let discovery settle
            answered += self.send(warmup[i % len(warmup)], timeout_s) is not None
            if answered >= len(warmup):
                return
        raise RuntimeError(f"{self.proc.name}: no answers to {len(warmup) * 10} warm-up frames")

    def send(self, msg: object, timeout_s: float) -> float | None:
        """Publish one frame stamped now; its latency in ms, or None if no label came in time."""
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        self.pub.publish(msg)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.probe.executor.spin_once(timeout_sec=0.01)
            received = self.probe.arrived.pop(stamp, None)
            if received is not None:
                return (received - stamp) / 1e6
        if not self.proc.alive():
            raise RuntimeError(f"{self.proc.name} died: {self.proc.last_line()}")
        return None

    def measure(self, msg: object, timeout_s: float) -> None:
        latency = self.send(msg, timeout_s)
        if latency is None:
            self.lost += 1
        else:
            self.latencies_ms.append(latency)

    def close(self) -> None:
        self.probe.node.destroy_subscription(self.sub)
        self.probe.node.destroy_publisher(self.pub)


class Probe:
    """The bench's own rclpy node; label receive times are taken in its subscription callback."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        rclpy.init(args=[])
        self.node = Node("bench_probe")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.arrived: dict[int, int] = {}  # header stamp -> receive time, both ns since epoch
        self.diagnostics: dict[str, tuple[float, dict[str, str]]] = {}  # name -> (when, values)
        from diagnostic_msgs.msg import DiagnosticArray
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                      _qos(10))

    def on_label(self, msg: object) -> None:
        self.arrived[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = time.time_ns()

    def _on_diagnostics(self, msg: object) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = (time.monotonic(), {v.key: v.value
                                                                for v in status.values})

    def node_report(self, link: Link, timeout_s: float = 5.0) -> dict[str, float]:
        """The node's own view of the frames just measured, from its next /diagnostics status.

        Splits e2e into receive->publish inside the node and its pre/forward/post (window means).
        Empty when no status came in time.
        """
        since, deadline = time.monotonic(), time.monotonic() + timeout_s
        keys = {"receive_to_publish_p50": "latency receive->publish p50 (ms)",
                "preprocess_mean": "preprocess (ms)", "forward_mean": "forward (ms)",
                "postprocess_mean": "postprocess (ms)"}
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
            for name, (when, values) in self.diagnostics.items():
                if when > since and name.endswith(f": {link.image_topic}"):
                    return {k: float(values[v]) for k, v in keys.items() if values.get(v)}
        return {}

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


# -- the benchmark -------------------------------------------------------------------------------
def parse_resolution(text: str) -> tuple[int, int]:
    """'256x512' -> (256, 512) as (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is not HEIGHTxWIDTH") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be at least 16x16")
    return h, w


def with_input_size(model: Path, size: tuple[int, int], out: Path) -> Path:
    """The same weights with another input size: benchmark any size without editing the file.

    A .onnx model has its input size in the graph: it is used as is, at that size only.
    """
    if model.suffix.lower() == ".onnx":
        h, w = model_meta(model).input_size
        if (int(h), int(w)) != tuple(size):
            raise ValueError(f"{model.name} runs at its own input size {h}x{w} only; give "
                             f"--resolutions {h}x{w} or the .safetensors checkpoint")
        return model
    tensors, meta = load_checkpoint(model)
    meta.input_size = size
    save_checkpoint(out, tensors, meta)
    return out


def model_meta(model: Path) -> CheckpointMeta:
    """Metadata of a .safetensors or .onnx model (the latter read by ONNX Runtime)."""
    if model.suffix.lower() == ".onnx":
        from etc_ros.segmenter import Segmenter
        return Segmenter(model, "cpu").meta
    return load_checkpoint(model)[1]


def skip_reason(backend: str, device: str) -> str | None:
    """Why a backend cannot run here (printed, not an error), or None."""
    if backend not in GPU_BACKENDS:
        return None
    import torch
    if not torch.cuda.is_available():
        return "no CUDA device"
    if backend == "torch-fp16":
        return None
    import onnxruntime as ort
    wanted = "TensorrtExecutionProvider" if backend == "ort-trt" else "CUDAExecutionProvider"
    if wanted not in ort.get_available_providers():
        return f"onnxruntime has no {wanted} (install onnxruntime-gpu; TensorRT libraries)"
    return None


def prepare_backend(backend: str, model: Path, size: tuple[int, int], work: Path,
                    frames: list[np.ndarray], device: str) -> tuple[Path, dict, list[str]]:
    """Model file, Segmenter keyword arguments and node parameters for one backend and size."""
    from etc_ros.export_onnx import export, export_int8

    res = f"{size[0]}x{size[1]}"
    ckpt = with_input_size(model, size, work / f"model_{res}.safetensors")
    gpu = "cuda" if device in ("auto", "cpu") else device
    if backend in ("torch", "torch-fp16"):
        if ckpt.suffix == ".onnx":
            raise ValueError(f"backend {backend} needs a .safetensors model, not {ckpt.name}")
        half = backend == "torch-fp16"
        dev = gpu if half else device
        return ckpt, {"device": dev, "half": half, "backend": "torch"}, [
            "-p", "backend:=torch", "-p", f"device:={dev}", "-p", f"half:={str(half).lower()}"]
    onnx = ckpt
    if backend == "ort-int8":
        if ckpt.suffix == ".onnx":
            raise ValueError("backend ort-int8 needs a .safetensors model to quantise")
        onnx = work / f"model_{res}_int8.onnx"
        if not onnx.is_file():
            calib = work / f"calibration_{res}"
            calib.mkdir(exist_ok=True)
            for i, f in enumerate(frames):
                cv2.imwrite(str(calib / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            # Speed is measured whatever the agreement; the agreement goes into the row.
            # 16 frames: percentile calibration keeps every activation histogram, and at
            # 512x1024 the default 64 frames exhausted 24 GB here.
            agreement = export_int8(ckpt, onnx, calib, max_images=16, log=lambda _: None,
                                    min_agreement=0.0)
            (work / f"model_{res}_int8.agreement").write_text(f"{agreement:.6f}")
    elif ckpt.suffix != ".onnx":
        onnx = work / f"model_{res}.onnx"
        if not onnx.is_file():
            export(ckpt, onnx, log=lambda _: None)
    dev = gpu if backend in GPU_BACKENDS else device
    kwargs = {"device": dev, "backend": "onnxruntime", "half": backend == "ort-trt",
              "tensorrt": backend != "ort-cuda"}
    return onnx, kwargs, ["-p", "backend:=onnxruntime", "-p", f"device:={dev}"]


def bench_frames(count: int, size: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    """`count` frames at (h, w): the shipped street clip when present, else seeded noise."""
    h, w = size
    frames: list[np.ndarray] = []
    cap = cv2.VideoCapture(str(DEMO_CLIP)) if DEMO_CLIP.is_file() else None
    while cap is not None and len(frames) < count:
        ok, bgr = cap.read()
        if not ok:
            if not frames:
                break
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w, h),
                                 interpolation=cv2.INTER_AREA))
    if cap is not None:
        cap.release()
    if frames:
        return frames, f"{DEMO_CLIP.name} (resized)"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)], "noise"


def run_resolution(args: argparse.Namespace, work: Path, probe: Probe, model: Path,
                   size: tuple[int, int], backend: str = "torch") -> dict:
    """All measurements for one model input size.

    Forward, node and relay take turns frame by frame, so load from other work on a shared CPU
    hits all three alike; the TC-monitor node is measured afterwards on its own (its background
    flow work would otherwise leak into the other measurements).
    """
    from etc_ros.image_io import numpy_to_image
    from etc_ros.segmenter import Segmenter

    res = f"{size[0]}x{size[1]}"
    frames, frames_from = bench_frames(args.frames, size)
    ckpt, seg_kwargs, backend_args = prepare_backend(backend, model, size, work, frames,
                                                     args.device)
    msgs = [numpy_to_image(f, "rgb8") for f in frames]  # converted before any timing
    for m in msgs:
        m.header.frame_id = "bench_camera"
    warm = msgs[:args.warmup]
    row: dict = {"resolution": res, "backend": backend, "frames": len(frames),
                 "frames_from": frames_from}
    res = f"{res}_{backend.replace('-', '_')}"

    with ExitStack() as stack:
        # All children start together (start-up overlaps) and are warm before any timing.
        # Our publisher is reliable; the diagnostics window covers the measured frames.
        node_args = ["-p", "input_reliability:=reliable", *backend_args,
                     "-p", f"diagnostics_window:={args.frames}"]
        node = _start(stack, probe, work, "node", res, lambda ns: node_command(
            f"{ns}/image_raw", ckpt, args.device, False, node_args))
        relay = _start(stack, probe, work, "relay", res, lambda ns: [
            sys.executable, "-m", "etc_ros.bench", "--relay", f"{ns}/image_raw",
            f"{ns}/segmentation/label"])
        links = {"node_e2e": node, "relay": relay}
        if args.tc_monitor_compare:
            links["node_e2e_tc"] = _start(stack, probe, work, "node_tc", res, lambda ns:
                                          node_command(f"{ns}/image_raw", ckpt, args.device,
                                                       True, node_args))
        # Inference on a worker thread, as in the node, so both run torch's threads alike.
        worker = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="bench_forward"))
        seg = worker.submit(Segmenter, ckpt, **seg_kwargs).result()
        row["provider"] = seg.provider
        row["int8_agreement"] = _int8_agreement(work, backend, size)
        worker.submit(seg.warmup, iterations=args.warmup).result()
        for link in links.values():
            link.wait_ready(warm, args.timeout)
        forward, pre_post = [], []
        for frame, msg in tqdm(list(zip(frames, msgs, strict=True)), desc=f"{res} fwd/node/relay",
                               unit="frame", leave=False):
            worker.submit(seg.segment, [frame]).result()
            forward.append(seg.last_timings.forward_ms)
            pre_post.append(seg.last_timings.preprocess_ms + seg.last_timings.postprocess_ms)
            node.measure(msg, args.timeout)
            relay.measure(msg, args.timeout)
        row["node_self_ms"] = probe.node_report(node)
        if "node_e2e_tc" in links:
            for msg in tqdm(msgs, desc=f"{res} node+TC", unit="frame", leave=False):
                links["node_e2e_tc"].measure(msg, args.timeout)
    row["forward_ms"] = percentiles(forward)
    row["pre_post_ms"] = percentiles(pre_post)  # Segmenter pre/postprocess: part of the overhead
    for key, link in links.items():
        row[f"{key}_ms"], row[f"{key}_lost"] = percentiles(link.latencies_ms), link.lost
    e2e, fwd, relay_p50 = (row[k]["p50"] for k in ("node_e2e_ms", "forward_ms", "relay_ms"))
    row["overhead_ms"] = e2e - fwd - relay_p50
    row["target"] = "PASS" if e2e - fwd <= relay_p50 + TARGET_MARGIN_MS else "MISS"
    return row


def _start(stack: ExitStack, probe: Probe, work: Path, key: str, res: str,
           command: Callable[[str], list[str]]) -> Link:
    """Start a child under `stack` on its own topics and connect a Link to it."""
    ns = f"/bench/{key}_{res}"
    proc = stack.enter_context(child(f"{key}_{res}", command(ns), work))
    link = Link(probe, proc, f"{ns}/image_raw", f"{ns}/segmentation/label")
    stack.callback(link.close)
    return link


def run_benchmark(args: argparse.Namespace, work: Path, model: Path) -> list[dict]:
    """Every measurement for every resolution, in one process run, on the same frames."""
    probe = Probe()
    rows = []
    try:
        for size in args.resolutions:
            for backend in args.backends:
                reason = skip_reason(backend, args.device)
                if reason:
                    print(f"bench: skipping {backend}: {reason}", file=sys.stderr)
                    continue
                rows.append(run_resolution(args, work, probe, model, size, backend))
        return rows
    finally:
        probe.close()


def run_forward_only(args: argparse.Namespace, work: Path, model: Path) -> list[dict]:
    """Forward p50/p95 per backend and size with no ROS at all (a GPU machine without ROS).

    Forward = the backend's run on a batch of one (normalise, network, argmax, confidence),
    synchronised, as the node's worker calls it; frames are the same for every backend.
    """
    from etc_ros.segmenter import Segmenter

    rows = []
    for size in args.resolutions:
        frames, frames_from = bench_frames(args.frames, size)
        for backend in args.backends:
            res = f"{size[0]}x{size[1]}"
            reason = skip_reason(backend, args.device)
            if reason:
                print(f"bench: skipping {backend} at {res}: {reason}", file=sys.stderr)
                rows.append({"resolution": res, "backend": backend, "skipped": reason})
                continue
            ckpt, kwargs, _ = prepare_backend(backend, model, size, work, frames, args.device)
            seg = Segmenter(ckpt, **kwargs)
            seg.warmup(iterations=args.warmup)
            forward = []
            for frame in tqdm(frames, desc=f"{res} {backend}", unit="frame", leave=False):
                seg.segment([frame])
                forward.append(seg.last_timings.forward_ms)
            p = percentiles(forward)
            rows.append({"resolution": res, "backend": backend, "provider": seg.provider,
                         "int8_agreement": _int8_agreement(work, backend, size),
                         "precision": seg.precision, "frames": len(frames),
                         "frames_from": frames_from, "forward_ms": p,
                         "fps_p50": 1000.0 / p["p50"] if p["p50"] > 0 else math.nan})
            del seg
    return rows


def _int8_agreement(work: Path, backend: str, size: tuple[int, int]) -> float | None:
    """int8 vs fp32 torch pixel agreement on the bench frames (None for other backends)."""
    path = work / f"model_{size[0]}x{size[1]}_int8.agreement"
    return float(path.read_text()) if backend == "ort-int8" and path.is_file() else None


def forward_table(rows: Sequence[dict]) -> str:
    """Markdown table of a --forward-only run."""
    lines = ["| model input (HxW) | backend | provider | forward p50 / p95 ms | FPS (p50) |",
             "|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['resolution']} | {r['backend']} | skipped: {r['skipped']} | "
                         "– | – |")
        else:
            lines.append(f"| {r['resolution']} | {r['backend']} | {r['provider']} "
                         f"{r['precision']} | {_pair(r['forward_ms'])} | {r['fps_p50']:.0f} |")
    return "\n".join(lines)


def _pair(p: dict[str, float]) -> str:
    return f"{p['p50']:.1f} / {p['p95']:.1f}"


def _self_report(report: dict[str, float]) -> str:
    if "receive_to_publish_p50" not in report or "forward_mean" not in report:
        return "n/a"
    return f"{report['receive_to_publish_p50']:.1f} / {report['forward_mean']:.1f}"


def markdown_table(rows: Sequence[dict]) -> str:
    """The README table: one line per model input size, p50 / p95 in ms.

    Node overhead = e2e - forward - relay (p50); the Segmenter's pre/postprocess (resize,
    normalise, argmax), measured with the forward pass, is shown as the part of it that is not
    ROS.
    """
    tc = any("node_e2e_tc_ms" in r for r in rows)
    head = ["model input (HxW)", "backend", "forward ms", "node e2e ms", "relay (DDS floor) ms",
            "node overhead p50 ms", f"e2e − fwd ≤ relay + {TARGET_MARGIN_MS:g} ms",
            "of which pre+post ms", "node's own recv→pub p50 / fwd mean ms"]
    if tc:
        head.append("node e2e, TC monitor on, ms")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["resolution"], r["backend"], _pair(r["forward_ms"]), _pair(r["node_e2e_ms"]),
                 _pair(r["relay_ms"]), f"{r['overhead_ms']:.1f}", r["target"],
                 _pair(r["pre_post_ms"]), _self_report(r["node_self_ms"])]
        if tc:
            cells.append(_pair(r["node_e2e_tc_ms"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        "bench", description=__doc__.split("\n\n")[0],
        epilog="Latencies are p50 / p95 in ms; frames go one at a time (lockstep).")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped "
                        "student_etc, else a random one of the same architecture)")
    parser.add_argument("--resolutions", default=[(256, 512), (512, 1024)],
                        type=lambda s: [parse_resolution(r) for r in s.split(",") if r],
                        help="model input sizes HxW, comma-separated (default 256x512,512x1024)")
    parser.add_argument("--frames", type=int, default=60, help="measured frames per run")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured frames per run")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (GPU "
                        "backends use cuda when this is auto or cpu)")
    parser.add_argument("--backends", default=["torch"], type=_backends,
                        help=f"comma-separated, from {', '.join(BACKEND_CHOICES)} (default "
                        "torch); GPU ones are skipped with a reason when unavailable")
    parser.add_argument("--forward-only", action="store_true",
                        help="only the standalone forward pass, no ROS (e.g. a GPU machine)")
    parser.add_argument("--tc-monitor-compare", action="store_true",
                        help="also run the node with its live TC monitor on")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for one label before counting the frame lost")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--relay", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    return parser


def _backends(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKEND_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {', '.join(bad) or text!r} (from {', '.join(BACKEND_CHOICES)})")
    return names


def main(argv: list[str] | None = None) -> int:
    """Console script `bench`: the markdown table; one line and exit 2 (bad input) or 1."""
    args = build_parser().parse_args(argv)
    if args.relay:
        return run_relay(*args.relay)
    interrupt_on_sigterm()
    if args.frames < 1 or args.warmup < 1:
        return fail("bench", "--frames and --warmup must be at least 1", EXIT_USAGE)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="etc_ros_bench_")))
        setup_ros_env(43, work / "ros_log")
        if args.model is not None:
            model, source = args.model, "given"
        elif DEFAULT_MODEL.is_file():
            model, source = DEFAULT_MODEL, "shipped"
        else:
            model, source = work / "random.safetensors", "random-init (no shipped weights yet)"
            make_random_checkpoint(model, DEFAULT_ARCH, args.resolutions[0])
        try:
            arch = model_meta(model).architecture
        except (CheckpointError, ValueError) as exc:  # a bad --model is bad input
            return fail("bench", exc, EXIT_USAGE)
        try:
            rows = (run_forward_only if args.forward_only else run_benchmark)(args, work, model)
            if not [r for r in rows if "skipped" not in r]:
                raise ValueError("no backend could run here (see the reasons above)")
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:  # one line for the user; children are already stopped
            return fail("bench", exc)
    ran = [r for r in rows if "skipped" not in r]
    print(f"\nmodel: {model} ({arch}, {source}); device: {args.device}; "
          f"{args.frames} frames per run ({ran[0]['frames_from']}), lockstep, reliable QoS; "
          f"RMW profile: {os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', 'default')}\n")
    print(forward_table(rows) if args.forward_only else markdown_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "model_source": source,
                                         "device": args.device, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
