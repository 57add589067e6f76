"""Checkpoint -> model on a device; preprocess, one batched forward pass, postprocess.

Kept free of ROS so that the node, `bench` and `evaluate` run exactly the same inference path,
and free of torch at import: only the torch backend (or exporting a .safetensors for ONNX
Runtime) imports it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from etc_ros.backends import (
    ONNX_SUFFIX,
    Backend,
    Device,
    OrtBackend,
    TorchBackend,
    as_device,
    cached_onnx,
    choose_backend,
    default_cpu_threads,
    resolve_device,
)
from etc_ros.checkpoint import CheckpointMeta
from etc_ros.preprocess import resize_image, resize_labels

__all__ = ["BatchTimings", "Device", "SegmentationResult", "Segmenter", "resolve_device"]


@dataclass
class SegmentationResult:
    """Per-image output: class ids (255 = ignore) and, when asked for, max softmax probability."""

    labels: np.ndarray
    confidence: np.ndarray | None = None


@dataclass
class BatchTimings:
    """Wall-clock cost of the last batch, split where the time goes."""

    preprocess_ms: float = 0.0
    forward_ms: float = 0.0
    postprocess_ms: float = 0.0
    batch_size: int = 0


class Segmenter:
    """A loaded segmentation model ready to label RGB frames.

    Frames of any size are resized to the checkpoint's input size (etc_ros.preprocess, exactly
    as training validation does) and run as one batch on the backend (eager torch, or ONNX
    Runtime for `.onnx` files and `backend="onnxruntime"`); labels come back at each frame's own
    resolution (nearest neighbour, so class ids are never blended) unless
    `model_resolution_output` is set. `cpu_threads` 0 = one per usable core; `tensorrt` False
    keeps ONNX Runtime on its CUDA provider even where TensorRT is present.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str | Device | Any = "auto",
        half: bool | None = None,
        model_resolution_output: bool = False,
        backend: str = "auto",
        cpu_threads: int = 0,
        log: Callable[[str], None] | None = None,
        tensorrt: bool = True,
    ) -> None:
        self.device = as_device(device)
        on_cuda = self.device.type == "cuda"
        if half is None:
            half = on_cuda
        if half and not on_cuda:
            raise ValueError("half precision (fp16) needs a CUDA device")
        if cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0 = auto), got {cpu_threads}")
        self.model_path = Path(model_path)
        self.backend_name = choose_backend(self.model_path, backend)
        self.cpu_threads = cpu_threads or default_cpu_threads()
        if self.backend_name == "torch":
            self.backend: Backend = TorchBackend(self.model_path, self.device, half,
                                                 self.cpu_threads)
        else:
            onnx_path = self.model_path
            if onnx_path.suffix.lower() != ONNX_SUFFIX:
                onnx_path = cached_onnx(self.model_path, log)
            self.backend = OrtBackend(onnx_path, self.device, half, self.cpu_threads, log,
                                      tensorrt)
        self.meta: CheckpointMeta = self.backend.meta
        self.precision = self.backend.precision
        self.provider = self.backend.provider
        self.model_resolution_output = model_resolution_output
        self.num_classes = len(self.meta.class_names)
        self.label_dtype = self.backend.label_dtype
        self.input_size: tuple[int, int] = (int(self.meta.input_size[0]),
                                            int(self.meta.input_size[1]))
        self.last_timings = BatchTimings()

    def close(self) -> None:
        """Release the model (GPU memory included); the Segmenter cannot segment afterwards."""
        self.backend.close()

    def warmup(self, batch_sizes: tuple[int, ...] = (1,), iterations: int = 2) -> None:
        """Run dummy batches so allocator, kernels and cuDNN autotuning are ready for frame one."""
        h, w = self.input_size
        frame = np.zeros((h, w, 3), np.uint8)
        for n in batch_sizes:
            for _ in range(iterations):
                self.segment([frame] * n, want_confidence=True)
        self.last_timings = BatchTimings()

    def segment(self, images: list[np.ndarray], want_confidence: bool = False
                ) -> list[SegmentationResult]:
        """Label a batch of (H, W, 3) uint8 RGB frames, which may differ in size."""
        if not images:
            return []
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
        t0 = time.perf_counter()
        h, w = self.input_size
        host = self.backend.staging(len(images))
        for i, img in enumerate(images):
            resize_image(img, (h, w), dst=host[i])
        t1 = time.perf_counter()
        labels, conf = self.backend.run(host, want_confidence)
        t2 = time.perf_counter()
        results = [self._restore(img, labels[i], None if conf is None else conf[i])
                   for i, img in enumerate(images)]
        t3 = time.perf_counter()
        self.last_timings = BatchTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                                         len(images))
        return results

    def _restore(self, img: np.ndarray, labels: np.ndarray, conf: np.ndarray | None
                 ) -> SegmentationResult:
        """Bring one result back to the frame's resolution (or keep the model's)."""
        size = img.shape[:2]
        if self.model_resolution_output or labels.shape == size:
            # The backend's buffers are reused by the next batch: hand out copies.
            return SegmentationResult(labels.copy(), None if conf is None else conf.copy())
        out = resize_labels(labels, size)
        if conf is not None:
            conf = cv2.resize(conf, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        return SegmentationResult(out, conf)
