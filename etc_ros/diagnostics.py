"""Rolling per-camera statistics -> diagnostic_msgs/DiagnosticStatus.

One `CameraStats` per input topic. It is written from the subscription callbacks (receive,
drop) and the inference worker (bad frame, publish, timings) and read by the diagnostics timer,
so every method takes the same lock.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from etc_ros.metrics import percentiles

# This many bad frames in a row, with no good one between, means the camera is broken: ERROR.
ERROR_AFTER_BAD_FRAMES = 10


class CameraStats:
    """Counters and latency windows of one camera, summarised as a DiagnosticStatus."""

    def __init__(self, topic: str, window: int = 100, now: float | None = None) -> None:
        self.topic = topic
        self._lock = threading.Lock()
        self._stamp_latency: deque[float] = deque(maxlen=window)
        self._receive_latency: deque[float] = deque(maxlen=window)
        self._timings: deque[tuple[float, float, float]] = deque(maxlen=window)
        self.received = 0
        self.published = 0
        self.dropped = 0
        self.bad = 0
        self.consecutive_bad = 0
        self.last_bad_reason = ""
        self.failures = 0
        self.last_failure = ""
        self._failures_since_report = 0
        self.frame_id = ""
        self.tc: float | None = None
        start = time.monotonic() if now is None else now
        self._last_receive = start
        self._last_report = (start, 0, 0)  # (time, received, published) at the last status

    def on_receive(self, now: float) -> None:
        with self._lock:
            self.received += 1
            self._last_receive = now

    def on_activate(self, now: float) -> None:
        """Serving (again): silence is counted from now, not from before an inactive spell."""
        with self._lock:
            self._last_receive = now
            self._last_report = (now, self.received, self.published)

    def on_drop(self) -> None:
        """A frame was replaced by a newer one before the worker got to it."""
        with self._lock:
            self.dropped += 1

    def on_bad(self, reason: str) -> None:
        with self._lock:
            self.bad += 1
            self.consecutive_bad += 1
            self.last_bad_reason = reason

    def on_failure(self, reason: str) -> None:
        """The node failed serving this camera (a worker fault, not bad input): ERROR until the
        next status, so a fault between two statuses is still reported."""
        with self._lock:
            self.failures += 1
            self._failures_since_report += 1
            self.last_failure = reason

    def on_published(self, stamp_latency_ms: float | None, receive_latency_ms: float,
                     frame_id: str) -> None:
        """Record one published result; stamp latency is None for frames stamped zero."""
        with self._lock:
            self.published += 1
            self.consecutive_bad = 0
            self.frame_id = frame_id
            if stamp_latency_ms is not None:
                self._stamp_latency.append(stamp_latency_ms)
            self._receive_latency.append(receive_latency_ms)

    def on_timings(self, preprocess_ms: float, forward_ms: float, postprocess_ms: float) -> None:
        with self._lock:
            self._timings.append((preprocess_ms, forward_ms, postprocess_ms))

    def set_tc(self, tc: float | None) -> None:
        with self._lock:
            self.tc = tc

    def status(self, now: float, *, node_name: str, latency_budget_ms: float,
               stale_timeout_s: float, extra: dict[str, str]) -> DiagnosticStatus:
        """Summarise since the previous call (rates) and over the window (latencies)."""
        with self._lock:
            t_prev, rx_prev, tx_prev = self._last_report
            dt = max(now - t_prev, 1e-6)
            in_rate = (self.received - rx_prev) / dt
            out_rate = (self.published - tx_prev) / dt
            self._last_report = (now, self.received, self.published)
            failures_now, self._failures_since_report = self._failures_since_report, 0
            stamp = percentiles(self._stamp_latency)
            recv = percentiles(self._receive_latency)
            timings = np.array(self._timings).mean(axis=0) if self._timings else None
            silent_s = now - self._last_receive
            values: dict[str, str] = {
                "topic": self.topic,
                "input rate (Hz)": f"{in_rate:.2f}",
                "output rate (Hz)": f"{out_rate:.2f}",
                "frames received": str(self.received),
                "frames published": str(self.published),
                "dropped frames": str(self.dropped),
                "bad frames": str(self.bad),
                "last bad frame reason": self.last_bad_reason,
                "worker failures": str(self.failures),
                "last worker failure": self.last_failure,
            }
            for name, stats in (("stamp->publish", stamp), ("receive->publish", recv)):
                for key, value in stats.items():  # NaN: nothing measured yet
                    values[f"latency {name} {key} (ms)"] = "" if math.isnan(value) \
                        else f"{value:.2f}"
            for i, name in enumerate(("preprocess", "forward", "postprocess")):
                values[f"{name} (ms)"] = "" if timings is None else f"{timings[i]:.2f}"
            if self.tc is not None:
                values["temporal consistency (%)"] = f"{self.tc:.2f}"
            values.update(extra)
            level, message = DiagnosticStatus.OK, "ok"
            if stamp["p95"] > latency_budget_ms:  # False for NaN
                level = DiagnosticStatus.WARN
                message = (f"p95 latency {stamp['p95']:.1f} ms over budget "
                           f"{latency_budget_ms:g} ms")
            if silent_s > stale_timeout_s:
                level = DiagnosticStatus.WARN
                message = f"no frames for {silent_s:.1f} s"
            if self.consecutive_bad >= ERROR_AFTER_BAD_FRAMES:
                level = DiagnosticStatus.ERROR
                message = (f"last {self.consecutive_bad} frames were bad: "
                           f"{self.last_bad_reason}")
            if failures_now:
                level = DiagnosticStatus.ERROR
                message = (f"{failures_now} worker failure(s) since the last status: "
                           f"{self.last_failure}")
            frame_id = self.frame_id
        return DiagnosticStatus(
            level=level,
            name=f"{node_name}: {self.topic}",
            message=message,
            hardware_id=frame_id or self.topic,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
