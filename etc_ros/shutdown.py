"""Stopping a ROS process in order on SIGINT/SIGTERM (the node, and the bench's relay).

rclpy's own signal handlers shut the context down from their signal thread while another
thread (or a callback) may be publishing: that publish fails with a traceback at exit. Here the
handlers only set a flag; the process spins in short slices, then stops what it runs in order.
Initialise rclpy with `signal_handler_options=SignalHandlerOptions.NO` to use it.
"""
from __future__ import annotations

import signal
from typing import Protocol

SIGNAL_CHECK_PERIOD_S = 0.2  # a stop request is acted on at least this often


class _Executor(Protocol):
    def spin_once(self, timeout_sec: float | None = None) -> None: ...


class StopRequest:
    """SIGINT/SIGTERM set a flag: no lock, no exception, so a second signal is harmless."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def spin(self, executor: _Executor) -> None:
        """Run the executor's callbacks until a stop is requested."""
        while not self.requested:
            executor.spin_once(timeout_sec=SIGNAL_CHECK_PERIOD_S)
