"""`make demo`: the shipped street clip through real DDS into the node, with nothing else needed.

Two processes, as on a robot: `python -m etc_ros.replay` plays assets/demo_street.mp4 as a camera
at its own frame rate and records the camera, label and overlay topics to an MCAP while playing;
`python -m etc_ros.node` segments it. Afterwards the MCAP is read back (rosbags) for the latency
summary (label receive time - frame header stamp), an overlay video and an image strip.

    python -m etc_ros.demo [--out demo_out] [--model PATH] [--max-frames N]
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

from etc_ros import image_io
from etc_ros.bags import BagReader
from etc_ros.checkpoint import CheckpointError, load_checkpoint
from etc_ros.cli import EXIT_INTERRUPTED, EXIT_USAGE, Parser, fail
from etc_ros.metrics import percentiles
from etc_ros.resources import DEFAULT_MODEL, resource
from etc_ros.sources import SourceError, open_video
from etc_ros.tools.proc import child, interrupt_on_sigterm, node_command, setup_ros_env

DEFAULT_CLIP = resource("assets", "demo_street.mp4")
CAMERA_TOPIC = "/demo/camera/image_raw"
OUT_NS = image_io.output_namespace(CAMERA_TOPIC)
LABEL_TOPIC, OVERLAY_TOPIC = f"{OUT_NS}/label", f"{OUT_NS}/overlay"
STARTUP_TIMEOUT_S = 120.0


class DemoError(Exception):
    """Something that stops the demo; str() is one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser("demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path,
                        help="checkpoint (default: etc_ros/weights/student_etc.safetensors)")
    parser.add_argument("--video", type=Path, default=DEFAULT_CLIP, help="clip to play")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--max-frames", type=int, help="play only the first N frames")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--strip-frames", type=int, default=4,
                        help="frames in the input | overlay image strip")
    return parser


def resolve_model(given: Path | None) -> Path:
    """The model to run: --model, else the shipped default; CheckpointError when missing."""
    model = given if given is not None else DEFAULT_MODEL
    if not model.is_file():
        raise CheckpointError(f"no model at {model}; train and export it (make data train)")
    return model


def trim_clip(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames of `src` as a new mp4 (replay plays whole files)."""
    source = open_video(src)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), source.rate_hz,
                             source.size)
    try:
        for frame in source:
            if frame.index >= frames:
                break
            writer.write(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return dst


def run_pipeline(args: argparse.Namespace, model: Path, clip: Path, bag: Path) -> None:
    """Node and replay as children; returns once the replay finished and the node stopped."""
    logs = args.out / "logs"
    node_cmd = node_command(CAMERA_TOPIC, model, args.device,
                            extra=["-p", "input_reliability:=reliable"])
    replay_cmd = [sys.executable, "-m", "etc_ros.replay", "--video", str(clip),
                  "--topic", CAMERA_TOPIC, "--wait-subscribers", "1",  # the node
                  "--wait-timeout", str(STARTUP_TIMEOUT_S), "--record", str(bag),
                  "--record-topics", CAMERA_TOPIC, LABEL_TOPIC, OVERLAY_TOPIC, "--drain", "2"]
    with ExitStack() as stack:
        node = stack.enter_context(child("segmentation_node", node_cmd, logs))
        replay = stack.enter_context(child("replay", replay_cmd, logs, stderr_to_terminal=True))
        while replay.alive():
            if not node.alive():
                raise DemoError(f"the segmentation node failed: {node.last_line()}")
            time.sleep(0.2)
        if replay.proc.returncode != 0:
            raise DemoError(f"replay failed (exit {replay.proc.returncode}), "
                             f"see {replay.log_path}")


def summarise(bag: Path, out: Path, fps: float, strip_frames: int) -> dict:
    """Read the MCAP back: latency numbers, overlay video and image strip."""
    reader = BagReader(bag)
    inputs: dict[int, np.ndarray] = {}
    overlays: list[tuple[int, np.ndarray]] = []
    latencies: list[float] = []
    for m in reader.messages([CAMERA_TOPIC, LABEL_TOPIC, OVERLAY_TOPIC]):
        msg = reader.typestore.deserialize_cdr(m.data, m.msgtype)
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if m.topic == CAMERA_TOPIC:
            inputs[stamp] = image_io.msg_to_rgb8(msg)
        elif m.topic == LABEL_TOPIC:
            latencies.append((m.timestamp_ns - stamp) / 1e6)  # recorded at receive time
        else:
            overlays.append((stamp, image_io.msg_to_rgb8(msg)))
    if not overlays:
        raise DemoError(f"the node published no overlay (see {out / 'logs'})")
    video = out / "overlay.mp4"
    h, w = overlays[0][1].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _, rgb in overlays:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    paired = [(inputs[s], o) for s, o in overlays if s in inputs]
    if not paired:
        raise DemoError(f"no overlay in {bag} matches a recorded camera frame")
    picks = np.linspace(0, len(paired) - 1, min(strip_frames, len(paired))).round().astype(int)
    rows = [np.hstack([cv2.resize(paired[i][0], (w, h), interpolation=cv2.INTER_AREA),
                       paired[i][1]]) for i in picks]
    strip = out / "strip.png"
    cv2.imwrite(str(strip), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    return {"frames_in": len(inputs), "frames_out": len(latencies),
            "dropped": len(inputs) - len(latencies), "latency_ms": percentiles(latencies),
            "bag": bag, "video": video, "strip": strip}


def main(argv: list[str] | None = None) -> int:
    """Console entry of `make demo`; one line and exit 2 (bad model/clip) or 1 on failure."""
    args = build_parser().parse_args(argv)
    interrupt_on_sigterm()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    setup_ros_env(42, args.out / "ros_log")
    bag = args.out / "demo.mcap"
    bag.unlink(missing_ok=True)  # our own output of an earlier run; replay never overwrites
    try:
        model = resolve_model(args.model)
        meta = load_checkpoint(model)[1]
        source = open_video(args.video)
        clip = args.video
        if args.max_frames is not None and args.max_frames < len(source):
            clip = trim_clip(args.video, args.out / "clip.mp4", max(args.max_frames, 1))
        print(f"demo: {clip.name} ({min(len(source), args.max_frames or len(source))} frames, "
              f"{source.size[0]}x{source.size[1]} @ {source.rate_hz:g} fps) -> {CAMERA_TOPIC} "
              f"-> node ({model.name}, {meta.architecture} {meta.input_size[0]}x"
              f"{meta.input_size[1]}) -> {OUT_NS}/*", flush=True)
        run_pipeline(args, model, clip, bag)
        result = summarise(bag, args.out, source.rate_hz, args.strip_frames)
    except (CheckpointError, SourceError) as exc:  # bad --model / --video
        return fail("demo", exc, EXIT_USAGE)
    except DemoError as exc:
        return fail("demo", exc)
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    lat = result["latency_ms"]
    print(f"\nframes: {result['frames_in']} in, {result['frames_out']} labelled, "
          f"{result['dropped']} dropped (latest-frame-wins)\n"
          f"latency header stamp -> label received: p50 {lat['p50']:.1f} ms, "
          f"p95 {lat['p95']:.1f} ms\n"
          f"rosbag2 MCAP (camera, label, overlay): {result['bag']}\n"
          f"overlay video: {result['video']}\nimage strip (input | overlay): {result['strip']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
