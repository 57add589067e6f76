"""Checkpoint -> model on a device; preprocess, one batched forward pass, postprocess.

Kept free of ROS so that the node, `bench` and `evaluate` run exactly the same inference path.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from etc_ros.checkpoint import CheckpointMeta, load_model

_LOG = logging.getLogger(__name__)
_CUDA_SPEC = re.compile(r"cuda(:\d+)?")


def resolve_device(spec: str, warn: Callable[[str], None] | None = None) -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N` into a torch device.

    `auto` falls back to the CPU with a warning (a robot without a GPU still works); an explicit
    CUDA request that cannot be met is an error, because silently running 20x slower is not what
    the user asked for. Errors are ValueError with a one-line message.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        (warn or _LOG.warning)("device 'auto': no CUDA device available, running on the CPU")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if _CUDA_SPEC.fullmatch(spec):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device '{spec}' requested but CUDA is not available on this machine "
                "(use device 'auto' or 'cpu')"
            )
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device '{spec}' does not exist ({torch.cuda.device_count()} CUDA device(s))"
            )
        return device
    raise ValueError(f"unknown device '{spec}' (expected auto, cpu, cuda or cuda:N)")


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

    Frames of any size are resized to the checkpoint's input size, normalised and run as one
    batch; labels come back at each frame's own resolution (nearest neighbour, so class ids are
    never blended) unless `model_resolution_output` is set.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str | torch.device = "auto",
        half: bool | None = None,
        model_resolution_output: bool = False,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        on_cuda = self.device.type == "cuda"
        if half is None:
            half = on_cuda
        if half and not on_cuda:
            raise ValueError("half precision (fp16) needs a CUDA device")
        self.model_path = Path(model_path)
        model, meta = load_model(self.model_path, self.device)
        self.meta: CheckpointMeta = meta
        self.precision = "fp16" if half else "fp32"
        self._dtype = torch.float16 if half else torch.float32
        # channels_last lets cuDNN pick its fastest NHWC kernels, fp16 halves memory traffic.
        self._memory_format = torch.channels_last if on_cuda else torch.contiguous_format
        self.model = model.to(device=self.device, dtype=self._dtype,
                              memory_format=self._memory_format).eval()
        self.model_resolution_output = model_resolution_output
        self.num_classes = len(meta.class_names)
        self.label_dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        self.input_size: tuple[int, int] = (int(meta.input_size[0]), int(meta.input_size[1]))
        # (x/255 - mean)/std folded into one multiply-add, done on the device.
        std = torch.tensor(meta.std, dtype=torch.float32)
        mean = torch.tensor(meta.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device, self._dtype)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device, self._dtype)
        self._host = torch.empty(0, dtype=torch.uint8)
        if on_cuda:
            torch.backends.cudnn.benchmark = True
        self.last_timings = BatchTimings()

    def _host_buffer(self, n: int) -> np.ndarray:
        """A reused (pinned on CUDA) uint8 NHWC staging buffer, grown only when the batch grows."""
        if self._host.shape[0] < n:
            h, w = self.input_size
            self._host = torch.empty((n, h, w, 3), dtype=torch.uint8,
                                     pin_memory=self.device.type == "cuda")
        return self._host[:n].numpy()

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
        host = self._host_buffer(len(images))
        for i, img in enumerate(images):
            if img.shape[:2] == (h, w):
                host[i] = img
            else:
                cv2.resize(img, (w, h), dst=host[i], interpolation=cv2.INTER_AREA
                           if img.shape[0] > h else cv2.INTER_LINEAR)
        with torch.inference_mode():
            x = torch.from_numpy(host).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).to(self._dtype).contiguous(memory_format=self._memory_format)
            x = x * self._scale + self._shift
            self._sync()
            t1 = time.perf_counter()
            logits = self.model(x)
            self._sync()
            t2 = time.perf_counter()
            # max() over channels is ~3x faster than argmax() on NCHW CPU tensors.
            top, labels_t = logits.max(dim=1)
            conf = None
            if want_confidence:  # max softmax = exp(max logit - logsumexp), no full softmax
                conf_t = torch.exp(top.float() - torch.logsumexp(logits.float(), dim=1))
                conf = conf_t.cpu().numpy()
            labels = labels_t.to(torch.int32 if self.label_dtype == np.uint16 else torch.uint8)
            labels = labels.cpu().numpy().astype(self.label_dtype, copy=False)
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
            return SegmentationResult(labels, conf)
        dsize = (size[1], size[0])
        # NEAREST_EXACT samples pixel centres; plain NEAREST shifts labels by half a pixel.
        out = cv2.resize(labels, dsize, interpolation=cv2.INTER_NEAREST_EXACT)
        if conf is not None:
            conf = cv2.resize(conf, dsize, interpolation=cv2.INTER_LINEAR)
        return SegmentationResult(out, conf)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
