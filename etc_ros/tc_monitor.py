"""Live temporal-consistency monitor: rolling TC of one camera's outputs, off the inference path.

The node hands every output (labels + the rgb it came from) to ``submit``, which only swaps a
reference under a lock; a daemon thread computes flow and TC on a downscaled copy. When the
worker falls behind, older pending pairs are dropped (newest pair wins), so the monitor can never
add latency or queue memory to the node.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import numpy as np

from etc_ros.preprocess import resize_image, resize_labels
from etc_ros.temporal import PairCounts, consistency_flow, own_classes, pair_counts, tc_over_classes

_log = logging.getLogger(__name__)

_Frame = tuple[np.ndarray, np.ndarray]


class LiveTCMonitor:
    """Rolling TC (percent) between consecutive outputs of one camera.

    The same definition as ``evaluate``: IoU counts summed over the last ``window`` pairs, averaged
    over the classes the model predicts on >= 0.1 % of their valid pixels (a single model's set).

    Arrays passed to ``submit`` are kept by reference, not copied (copying full frames would cost
    the inference thread); the caller must not modify them afterwards.
    """

    def __init__(self, num_classes: int, scale: float = 0.25, preset: str = "ultrafast",
                 window: int = 30) -> None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.num_classes = num_classes
        self.scale = scale
        self.preset = preset
        self._counts: deque[PairCounts] = deque(maxlen=window)
        self._cond = threading.Condition()
        self._prev: _Frame | None = None
        self._pending: tuple[_Frame, _Frame] | None = None
        self._busy = False
        self._closed = False
        self.pairs_done = 0
        self.pairs_dropped = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="tc-monitor", daemon=True)
        self._thread.start()

    def submit(self, labels: np.ndarray, rgb: np.ndarray) -> None:
        """Offer the newest output; pairs it with the previous one. Never waits for the worker."""
        frame = (labels, rgb)
        with self._cond:
            if self._closed:
                return
            prev, self._prev = self._prev, frame
            if prev is None or prev[0].shape != labels.shape or prev[1].shape != rgb.shape:
                return  # first frame, or the camera changed resolution: no comparable pair
            if self._pending is not None:
                self.pairs_dropped += 1
            self._pending = (prev, frame)
            self._cond.notify_all()

    def value(self) -> float | None:
        """TC over the last ``window`` pairs, or None before the first pair."""
        with self._cond:
            counts = list(self._counts)
        if not counts:
            return None
        inter = np.sum([c.inter for c in counts], axis=0)
        union = np.sum([c.union for c in counts], axis=0)
        area = np.sum([c.area for c in counts], axis=0)
        return tc_over_classes(inter, union, own_classes(area))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until the pending pair (if any) is processed; True if idle (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self) -> None:
        """Stop the worker (a pending pair is discarded) and join it."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                pair, self._pending = self._pending, None
                self._busy = True
            try:
                counts: PairCounts | None = self._pair_tc(*pair)
            except Exception:  # a bad frame must not kill the monitor for the node's lifetime
                _log.exception("live TC monitor: pair failed")
                counts = None
                with self._cond:
                    self.errors += 1
            with self._cond:
                if counts is not None:
                    self._counts.append(counts)
                self.pairs_done += 1
                self._busy = False
                self._cond.notify_all()

    def _pair_tc(self, prev: _Frame, cur: _Frame) -> PairCounts:
        """TC counts of one pair on copies downscaled by ``scale`` (as the segmenter resizes)."""
        h, w = prev[0].shape[:2]
        size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        lab0, lab1 = (resize_labels(f[0], size[::-1]) for f in (prev, cur))
        rgb0, rgb1 = (resize_image(f[1], size[::-1]) for f in (prev, cur))
        flow, valid = consistency_flow(rgb0, rgb1, self.preset)
        return pair_counts(lab0, lab1, flow, valid, self.num_classes)
