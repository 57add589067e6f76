"""Child processes for the tools: the ROS environment they get, SIGINT/SIGTERM, clean stops.

bench and demo start `python -m etc_ros.node`, replay and relay processes; this is the one place
that says how (output to a log file, stopped with SIGINT first so rclpy shuts down cleanly,
always reaped) and which environment they see (localhost DDS, our domain, the SHM profile).
No rclpy import here: children import ROS, we only start them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from etc_ros.resources import use_fastdds_profile


def setup_ros_env(default_domain: int, log_dir: Path) -> None:
    """Keep ROS traffic on this machine, in our domain, with the SHM profile: for us and children.

    Values the caller set (e.g. the Makefile) win; children inherit os.environ.
    """
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(default_domain))
    os.environ.setdefault("ROS_LOG_DIR", str(log_dir))
    use_fastdds_profile()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def interrupt_on_sigterm() -> Callable[..., Any] | int | None:
    """Treat SIGTERM like Ctrl-C, so `kill`/`timeout` also stop and reap our children.

    Returns the previous handler, for callers that restore it.
    """
    return signal.signal(signal.SIGTERM, _raise_interrupt)


class Child:
    """A child process with its output in a log file, so a failure can be shown in one line.

    `stderr_to_terminal` leaves the child's stderr (progress bars, its own one-line errors) on
    ours instead.
    """

    def __init__(self, name: str, args: Sequence[str], log_dir: Path,
                 stderr_to_terminal: bool = False) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                list(args), stdout=log, stderr=None if stderr_to_terminal else subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=os.environ.copy())

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def last_line(self) -> str:
        """The last non-empty log line: the child's one-line error when it failed to start."""
        lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return lines[-1] if lines else f"{self.name} exited with code {self.proc.returncode}"

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (clean rclpy shutdown), then terminate, then kill; always reaps the process."""
        for action in (lambda: self.proc.send_signal(signal.SIGINT), self.proc.terminate,
                       self.proc.kill):
            if self.proc.poll() is not None:
                break
            action()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait()


@contextmanager
def child(name: str, args: Sequence[str], log_dir: Path,
          stderr_to_terminal: bool = False) -> Iterator[Child]:
    """Run a child for the duration of a with-block; it is stopped even on Ctrl-C or errors."""
    proc = Child(name, args, log_dir, stderr_to_terminal)
    try:
        yield proc
    finally:
        proc.stop()


def node_command(image_topic: str, model: Path, device: str, tc_monitor: bool = False,
                 extra: Sequence[str] = ()) -> list[str]:
    """`python -m etc_ros.node` with the parameters bench and demo need."""
    return [sys.executable, "-m", "etc_ros.node", "--ros-args",
            "-p", f"image_topics:=['{image_topic}']", "-p", f"model_path:={model}",
            "-p", f"device:={device}", "-p", f"tc_monitor:={str(tc_monitor).lower()}",
            *extra]
