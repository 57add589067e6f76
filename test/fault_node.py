"""The segmentation node with a fault-injecting model: the entry point of the worker-fault test.

    python test/fault_node.py --ros-args -p image_topics:="['/sup/image_raw']" ...

A frame whose every pixel is FAULT_VALUE makes its batch raise InjectedFault; one whose every
pixel is KILL_VALUE ends the worker thread with an exception that escapes the worker's
catch-all, as an unforeseen fault would (the watchdog's test). The production node has no such
hook: this file only wraps the Segmenter it builds.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from etc_ros.node import SegmentationNode, main
from etc_ros.segmenter import SegmentationResult, Segmenter

FAULT_VALUE = 13
KILL_VALUE = 66


class InjectedFault(Exception):
    """Raised inside a batch, like a bug in inference would be."""


class _InjectedWorkerDeath(BaseException):
    """Escapes the worker's `except Exception`: the thread dies."""


class FaultySegmenter:
    """A Segmenter that fails on the marker frames and otherwise labels as the real one."""

    def __init__(self, inner: Segmenter) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def segment(self, images: list[np.ndarray], want_confidence: bool = False
                ) -> list[SegmentationResult]:
        for img in images:
            if (img == FAULT_VALUE).all():
                raise InjectedFault(f"injected fault for a frame of {FAULT_VALUE}s")
            if (img == KILL_VALUE).all():
                raise _InjectedWorkerDeath(f"injected worker death, a frame of {KILL_VALUE}s")
        return self._inner.segment(images, want_confidence)


class FaultyNode(SegmentationNode):
    def _make_segmenter(self, model_path: Path, device: Any, **kwargs: Any) -> Segmenter:
        return FaultySegmenter(super()._make_segmenter(model_path, device, **kwargs))


if __name__ == "__main__":
    sys.exit(main(node_class=FaultyNode))
