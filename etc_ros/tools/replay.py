"""Publish a rosbag2, a video or an image folder onto ROS topics: `ros2 bag play` for this repo.

`ros2 bag play` (rosbag2_py) is not installable here, and the demo, the benchmarks and users
without a camera need frames on a topic. Bags are republished unchanged from their stored CDR
bytes; video and image frames become Image (any image_io encoding) or jpeg CompressedImage.
Timing follows the recording, a fixed rate, or the subscriber (--lockstep). --record stores the
node's outputs as received (raw CDR) into a rosbag2 MCAP while playing.

The ROS environment (ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE, ...) is the caller's business.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from etc_ros import bags, image_io, sources
from etc_ros.cli import EXIT_INTERRUPTED, EXIT_USAGE, Parser, fail
from etc_ros.sources import SourceError
from etc_ros.tools.proc import interrupt_on_sigterm

IMAGE_TYPES = sources.IMAGE_TYPES
ACK_TIMEOUT_S = 5.0  # at exit, how long to wait for subscribers to acknowledge the last samples


class ReplayError(Exception):
    """A problem met after start-up (graph, subscribers); str() is one line."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; every default is stated in the help."""
    p = Parser("replay", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, help="rosbag2 directory or .mcap/.db3 file")
    src.add_argument("--video", type=Path, help="video file (anything OpenCV/FFmpeg reads)")
    src.add_argument("--images", type=Path, help="folder of .png/.jpg frames (natural order)")
    p.add_argument("--topic", nargs="+", metavar="T",
                   help="bag: topics to play (default all); video/images: the one output topic "
                        "(default /camera/image_raw, or /camera/image_raw/compressed)")
    p.add_argument("--compressed", action="store_true",
                   help="video/images: publish jpeg CompressedImage instead of Image")
    p.add_argument("--encoding", default="rgb8", choices=image_io.SUPPORTED_ENCODINGS,
                   help="video/images: Image encoding (default rgb8)")
    p.add_argument("--frame-id", default="camera", help="video/images header frame_id")
    p.add_argument("--rate", type=float, metavar="HZ",
                   help="fixed rate in messages/s (default: bag timestamps, video fps, "
                        f"images {sources.DEFAULT_IMAGE_RATE_HZ:g} Hz)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="bag/video: multiplier on the recorded rate (default 1)")
    p.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    p.add_argument("--restamp", action=argparse.BooleanOptionalAction, default=None,
                   help="set header.stamp to now when publishing (default: on for video/images, "
                        "off for bags)")
    p.add_argument("--lockstep", metavar="TOPIC",
                   help="publish the next frame only once TOPIC carried the reply to the "
                        "previous one (same header stamp), or after --lockstep-timeout")
    p.add_argument("--lockstep-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for a lockstep reply (default 5)")
    p.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable",
                   help="reliability of the published topics (default reliable)")
    p.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                   help="before playing, wait until every played topic has N subscribers")
    p.add_argument("--wait-timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for subscribers and for lockstep/record topics to "
                        "appear (default 30)")
    p.add_argument("--record", type=Path, metavar="OUT",
                   help="record --record-topics while playing: OUT.mcap is one MCAP file, "
                        "another name a rosbag2 directory (MCAP storage)")
    p.add_argument("--record-topics", nargs="+", metavar="T", default=[],
                   help="topics to record, e.g. /cam/segmentation/label")
    p.add_argument("--drain", type=float, default=1.0, metavar="S",
                   help="seconds to keep recording after the last message (default 1)")
    return p


@dataclass
class _Outgoing:
    """One message to publish: payload is CDR bytes (sent as is) or an rclpy message."""

    topic: str
    payload: Any
    timing_ns: int          # position on the recording's time line, for pacing
    frame: bool             # an image frame: what lockstep waits on


def _message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy class; a one-line error if its package is missing."""
    pkg, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        raise SourceError(f"message type {msgtype} is not installed here") from None


class _Input:
    """The chosen source, opened and validated before any ROS start-up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if args.rate is not None and args.rate <= 0:
            raise SourceError(f"--rate must be > 0, got {args.rate:g}")
        if args.speed <= 0:
            raise SourceError(f"--speed must be > 0, got {args.speed:g}")
        if args.record_topics and not args.record:
            raise SourceError("--record-topics needs --record OUT")
        if args.record and not args.record_topics:
            raise SourceError("--record needs --record-topics T ...")
        if args.record and args.record.exists():
            raise SourceError(f"{args.record} exists already, not overwriting")
        self.is_bag = args.bag is not None
        self.restamp = (not self.is_bag) if args.restamp is None else args.restamp
        if self.is_bag:
            self.bag = bags.BagReader(args.bag)
            self.topics = list(args.topic) if args.topic else sorted(self.bag.topics)
            self.bag.check_topics(self.topics)
            self.types = {t: self.bag.topics[t] for t in self.topics}
            self.total = sum(self.bag.counts[t] for t in self.topics)
        else:
            if args.topic and len(args.topic) > 1:
                raise SourceError("--video/--images publish one topic; give one --topic")
            default = "/camera/image_raw" + ("/compressed" if args.compressed else "")
            self.topics = [args.topic[0] if args.topic else default]
            self.types = {self.topics[0]: IMAGE_TYPES[1] if args.compressed else IMAGE_TYPES[0]}
            if args.video is not None:
                self.frames: sources.FrameSource = sources.open_video(args.video)
            else:
                self.frames = sources.open_images(
                    args.images, args.rate or sources.DEFAULT_IMAGE_RATE_HZ)
            self.total = len(self.frames)
        self.classes = {t: _message_class(m) for t, m in self.types.items()}

    def messages(self) -> Iterator[_Outgoing]:
        """One pass over the input as messages ready to publish (stamped by the player)."""
        if self.is_bag:
            for i, m in enumerate(self.bag.messages(self.topics)):
                payload: Any = m.data
                if self.restamp:
                    payload = self._decoded(m)
                yield _Outgoing(m.topic, payload, self._timing(i, m.timestamp_ns),
                                m.msgtype in IMAGE_TYPES)
            return
        topic = self.topics[0]
        for frame in self.frames:
            if frame.rgb is None:
                tqdm.write(f"replay: skipping frame {frame.index}: {frame.error}", file=sys.stderr)
                continue
            msg = self._encode(frame.rgb)
            msg.header.frame_id = self.args.frame_id
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(frame.stamp_ns, 1_000_000_000)
            yield _Outgoing(topic, msg, self._timing(frame.index, frame.stamp_ns), True)

    def _timing(self, index: int, recorded_ns: int) -> int:
        if self.args.rate:
            return round(index * 1e9 / self.args.rate)
        return round(recorded_ns / self.args.speed)

    def _encode(self, rgb: np.ndarray) -> Any:
        if self.args.compressed:
            return image_io.encode_compressed(rgb, "jpeg")
        return image_io.rgb8_to_image(rgb, self.args.encoding)

    def _decoded(self, m: bags.BagMessage) -> Any:
        """The rclpy message when it has a header to restamp, else the bytes unchanged."""
        msg = _deserialize(m.data, self.classes[m.topic])
        return msg if hasattr(msg, "header") else m.data


def _deserialize(data: bytes, cls: type) -> Any | None:
    """An rclpy message, or None for corrupt CDR: that message is then sent on as recorded."""
    from rclpy.serialization import deserialize_message

    try:
        return deserialize_message(data, cls)
    except RuntimeError:  # rclpy's RMWError: Fast CDR could not read it
        return None


def _stamp_ns(msg: Any) -> int | None:
    header = getattr(msg, "header", None)
    if header is None:
        return None
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _payload_stamp(out: _Outgoing, cls: type) -> int | None:
    if isinstance(out.payload, bytes):
        return _stamp_ns(_deserialize(out.payload, cls))
    return _stamp_ns(out.payload)


class _Player:
    """The ROS side: publishers, lockstep and record subscriptions, an executor thread."""

    def __init__(self, args: argparse.Namespace, inp: _Input) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.args, self.inp = args, inp
        self.context = rclpy.Context()
        rclpy.init(args=None, context=self.context)
        self.node = rclpy.create_node("etc_replay", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        reliability = (ReliabilityPolicy.RELIABLE if args.qos == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=reliability)
        self.publishers = {t: self.node.create_publisher(inp.classes[t], t, qos)
                           for t in inp.topics}
        self.recorder: bags.BagWriter | None = None
        self._reply = threading.Condition()
        self._replies: set[int | None] = set()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _graph_type(self, topic: str) -> str:
        """The topic's type as seen on the graph, waiting up to --wait-timeout for it."""
        deadline = time.monotonic() + self.args.wait_timeout
        while True:
            types = dict(self.node.get_topic_names_and_types())
            if topic in types:
                return types[topic][0]
            if time.monotonic() > deadline:
                raise ReplayError(
                    f"topic {topic} did not appear within {self.args.wait_timeout:g} s")
            time.sleep(0.05)

    def _subscription_qos(self, topic: str):
        """Reliable unless a publisher is best-effort (a reliable reader would never match it)."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        infos = self.node.get_publishers_info_by_topic(topic)
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                          for i in infos)
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT if best_effort
                          else ReliabilityPolicy.RELIABLE)

    def setup_record(self) -> None:
        """Subscribe raw to the record topics and open the bag."""
        types = {t: self._graph_type(t) for t in self.args.record_topics}
        classes = {t: _message_class(m) for t, m in types.items()}
        self.recorder = bags.BagWriter(self.args.record, "mcap")
        for topic, msgtype in types.items():
            if msgtype not in self.recorder.typestore.types:
                raise ReplayError(f"cannot record {topic}: type {msgtype} unknown to rosbags")
        for topic, msgtype in types.items():
            cls = classes[topic]
            self.node.create_subscription(
                cls, topic, lambda data, t=topic, m=msgtype: self._record(t, m, data),
                self._subscription_qos(topic), raw=True)

    def _record(self, topic: str, msgtype: str, data: bytes) -> None:
        self.recorder.write(topic, msgtype, self.node.get_clock().now().nanoseconds, data)

    def setup_lockstep(self) -> None:
        topic = self.args.lockstep
        cls = _message_class(self._graph_type(topic))
        self.node.create_subscription(cls, topic, self._on_reply, self._subscription_qos(topic))

    def _on_reply(self, msg: Any) -> None:
        with self._reply:
            self._replies.add(_stamp_ns(msg))
            self._reply.notify_all()

    def wait_subscribers(self) -> None:
        deadline = time.monotonic() + self.args.wait_timeout
        for topic, pub in self.publishers.items():
            # our own record/lockstep subscriptions on a played topic do not count
            own = self.args.record_topics.count(topic) + (self.args.lockstep == topic)
            need = self.args.wait_subscribers + own
            while pub.get_subscription_count() < need:
                if time.monotonic() > deadline:
                    raise ReplayError(
                        f"{topic} has {pub.get_subscription_count() - own} of "
                        f"{need - own} subscribers after {self.args.wait_timeout:g} s")
                time.sleep(0.02)

    def play(self) -> tuple[int, int]:
        """Publish every pass of the input; returns (published, lockstep timeouts)."""
        published = timeouts = 0
        bar = tqdm(total=None if self.args.loop else self.inp.total, unit="msg",
                   disable=None, desc="replay")
        start_wall = time.monotonic()
        try:
            while True:
                first_ns = last_ns = None
                count = 0
                for out in self.inp.messages():
                    if first_ns is None:
                        first_ns = out.timing_ns
                    last_ns, count = out.timing_ns, count + 1
                    if not self.args.lockstep:
                        delay = start_wall + (out.timing_ns - first_ns) / 1e9 - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    if self.inp.restamp and not isinstance(out.payload, bytes):
                        # stamped at the last moment: header->publish latency stays honest
                        out.payload.header.stamp = self.node.get_clock().now().to_msg()
                    if self.args.lockstep and out.frame:
                        timeouts += not self._publish_and_wait(out)
                    else:
                        self.publishers[out.topic].publish(out.payload)
                    published += 1
                    bar.update()
                if not self.args.loop or count == 0:
                    return published, timeouts
                start_wall = max(time.monotonic(), start_wall + self._pass_gap(
                    first_ns, last_ns, count))
        finally:
            bar.close()

    def _pass_gap(self, first_ns: int, last_ns: int, count: int) -> float:
        """Seconds from one pass's first message to the next pass's: one more mean period."""
        if count > 1:
            span = (last_ns - first_ns) / 1e9
            return span + span / (count - 1)
        return 1.0 / (self.args.rate or sources.DEFAULT_IMAGE_RATE_HZ)

    def _publish_and_wait(self, out: _Outgoing) -> bool:
        stamp = _payload_stamp(out, self.inp.classes[out.topic])
        with self._reply:
            self._replies.clear()
            self.publishers[out.topic].publish(out.payload)
            got = self._reply.wait_for(
                lambda: stamp in self._replies or (stamp is None and self._replies),
                timeout=self.args.lockstep_timeout)
        if not got:
            tqdm.write(f"replay: no reply on {self.args.lockstep} within "
                       f"{self.args.lockstep_timeout:g} s, going on", file=sys.stderr)
        return bool(got)

    def close(self) -> None:
        """Deliver what is in flight, drain the record topics, stop spinning, finish the bag."""
        from rclpy.duration import Duration

        # Reliable samples published just before exit are otherwise lost when the process ends
        # before a late-matching subscriber has acknowledged them (no-op for best effort).
        for pub in self.publishers.values():
            pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
        if self.recorder is not None:
            time.sleep(max(self.args.drain, 0.0))
        self.executor.shutdown()
        self.context.try_shutdown()
        self._spinner.join(timeout=5)
        if self.recorder is not None:
            self.recorder.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `replay`: returns 0, 1 (runtime failure) or 2 (bad input)."""
    args = build_parser().parse_args(argv)
    try:
        inp = _Input(args)
    except SourceError as exc:
        return fail("replay", exc, EXIT_USAGE)
    previous = interrupt_on_sigterm()  # `timeout`, launch: finish the bag too
    player = _Player(args, inp)
    status = 0
    try:
        if args.record:
            player.setup_record()
        if args.lockstep:
            player.setup_lockstep()
        player.wait_subscribers()
        published, timeouts = player.play()
        print(f"replay: published {published} messages on {', '.join(inp.topics)}"
              f"{f', {timeouts} lockstep timeouts' if timeouts else ''}")
    except (ReplayError, SourceError) as exc:
        status = fail("replay", exc)
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    finally:
        player.close()
        signal.signal(signal.SIGTERM, previous)
        if player.recorder is not None:
            print(f"replay: {player.recorder.count} messages recorded to {args.record}")
    return status


if __name__ == "__main__":
    sys.exit(main())
