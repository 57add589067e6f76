"""The segmentation node as its own process, watched and driven over DDS from the test process.

Used by the lifecycle, camera_info and torch-free tests: `NodeProcess` starts
`python -m etc_ros.node` (or it under test/without_torch.py) with its output in a file, and
stops it with SIGINT; `Observer` is a test node in its own context, spinning in a thread, that
records what it subscribes to and calls services. Waits are hang guards, never timings.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import rclpy
from conftest import wait_for
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

REPO = Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


class NodeProcess:
    """One node process; `args` are its --ros-args, its stdout and stderr go to `log`."""

    def __init__(self, name: str, args: list[str], log: Path, without_torch: bool = False) -> None:
        self.name = name
        self.log = log
        entry = [str(REPO / "test" / "without_torch.py")] if without_torch else []
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, *entry, "-m", "etc_ros.node", "--ros-args", "-r",
             f"__node:={name}", *args],
            cwd=REPO, stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> tuple[int, str]:
        """SIGINT, then the exit code and everything the process printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        return self.proc.returncode, self.output()


class Observer:
    """A test node in its own context: records messages per topic, publishes, calls services."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.lock = threading.Lock()
        self.msgs: dict[str, list] = defaultdict(list)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def listen(self, topic: str, msg_type: type, qos: QoSProfile = RELIABLE) -> None:
        def store(msg: Any, topic: str = topic) -> None:
            with self.lock:
                self.msgs[topic].append(msg)
        self.node.create_subscription(msg_type, topic, store, qos)

    def got(self, topic: str) -> list:
        with self.lock:
            return list(self.msgs[topic])

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 120.0) -> Any:
        """Call a service once it is there; the response (a hang guard only on the wait)."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"no service {name}"
            future = client.call_async(request)
            wait_for(future.done, timeout, f"a response from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def stamp_of(msg: Any) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def publish_until(pub: Any, make: Any, cond: Any, what: str, period: float = 0.1,
                  timeout: float = 180.0) -> Any:
    """Publish make() every `period` s until cond() is truthy; returns its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pub.publish(make())
        deadline = time.monotonic() + period
        while time.monotonic() < deadline:
            if value := cond():
                return value
            time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
