"""Inference backends behind one small interface: uint8 NHWC batch in, labels/confidence out.

- TorchBackend: the checkpoint's network in eager PyTorch (fp16 + channels_last on CUDA).
- OrtBackend: an ONNX model made by `etc_ros.export_onnx` on ONNX Runtime; normalisation and
  argmax are in the graph. Providers follow the device: CPU -> CPUExecutionProvider; CUDA ->
  TensorRT (fp16, engine cache) when present, else CUDA.

A `.safetensors` checkpoint asked to run on ONNX Runtime is exported once into a cache folder
keyed by the file's sha256 (`ETC_ROS_CACHE_DIR`, else `$XDG_CACHE_HOME/etc_ros/onnx`, else
`~/.cache/etc_ros/onnx`) and reused on the next start.

torch is imported by TorchBackend and the export only: a `.onnx` model on ONNX Runtime runs on a
machine without torch (devices are resolved through the CUDA driver, not torch).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from etc_ros.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    CheckpointMeta,
    import_torch,
    load_model,
    meta_from_json,
)
from etc_ros.errors import one_line

_LOG = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_SUFFIX = ".onnx"
# The ONNX model's contract with OrtBackend (etc_ros.export_onnx writes it).
INPUT_NAME = "image"
OUTPUTS = ("labels", "confidence")
ONNX_KEY = "etc_ros_onnx"  # how the file was made: source hash, precision, I/O contract
_CUDA_SPEC = re.compile(r"cuda(:\d+)?")


@dataclass(frozen=True)
class Device:
    """Where a model runs, without torch: `type` cpu | cuda, `index` the CUDA ordinal or None.

    Prints like torch.device ("cpu", "cuda", "cuda:1"); TorchBackend turns it into one.
    """

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def cuda_device_count() -> int:
    """CUDA devices this process can use (CUDA_VISIBLE_DEVICES applies), asked of the driver.

    0 where the driver library is missing or reports no device, as on a machine without a GPU.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def resolve_device(spec: str, warn: Callable[[str], None] | None = None) -> Device:
    """Turn `auto|cpu|cuda|cuda:N` into a Device.

    `auto` falls back to the CPU with a warning (a robot without a GPU still works); an explicit
    CUDA request that cannot be met is an error, because silently running 20x slower is not what
    the user asked for. Errors are ValueError with a one-line message.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if cuda_device_count() > 0:
            return Device("cuda")
        (warn or _LOG.warning)("device 'auto': no CUDA device available, running on the CPU")
        return Device("cpu")
    if spec == "cpu":
        return Device("cpu")
    if _CUDA_SPEC.fullmatch(spec):
        count = cuda_device_count()
        if count == 0:
            raise ValueError(
                f"device '{spec}' requested but CUDA is not available on this machine "
                "(use device 'auto' or 'cpu')"
            )
        index = int(spec.partition(":")[2]) if ":" in spec else None
        if index is not None and index >= count:
            raise ValueError(f"device '{spec}' does not exist ({count} CUDA device(s))")
        return Device("cuda", index)
    raise ValueError(f"unknown device '{spec}' (expected auto, cpu, cuda or cuda:N)")


def as_device(device: str | Any) -> Device:
    """A spec string (resolved) or anything with .type/.index (a torch.device) as a Device."""
    if isinstance(device, str):
        return resolve_device(device)
    return Device(device.type, device.index)


def default_cpu_threads() -> int:
    """Intra-op threads for `cpu_threads: 0`: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_backend(model_path: Path, backend: str) -> str:
    """`auto` -> onnxruntime for a .onnx file, torch otherwise; torch cannot run a .onnx file."""
    backend = backend.strip().lower()
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}' (expected {', '.join(BACKENDS)})")
    is_onnx = model_path.suffix.lower() == ONNX_SUFFIX
    if backend == "auto":
        return "onnxruntime" if is_onnx else "torch"
    if backend == "torch" and is_onnx:
        raise ValueError(f"backend 'torch' cannot run {model_path.name} (an ONNX model); "
                         "use backend 'onnxruntime' or the .safetensors checkpoint")
    return backend


class Backend(Protocol):
    """What Segmenter needs from an inference engine."""

    meta: CheckpointMeta
    name: str  # torch | onnxruntime
    provider: str  # where it runs, for the start-up log and diagnostics
    precision: str  # fp32 | fp16 | int8
    label_dtype: type

    def run(self, batch: np.ndarray, want_confidence: bool
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, H, W, 3) uint8 at the input size -> labels (N, H, W), confidence or None."""

    def staging(self, n: int) -> np.ndarray:
        """A reused (n, H, W, 3) uint8 buffer the batch is resized into."""

    def close(self) -> None:
        """Release the model and its (GPU) memory now, not at garbage collection."""


class TorchBackend:
    """Eager PyTorch; normalise, forward and argmax on the device."""

    name = "torch"

    def __init__(self, model_path: Path, device: Device, half: bool,
                 cpu_threads: int) -> None:
        torch = import_torch(f"checkpoint {model_path}: backend 'torch'")
        on_cuda = device.type == "cuda"
        if half and not on_cuda:
            raise ValueError("half precision (fp16) needs a CUDA device")
        if on_cuda and not torch.cuda.is_available():
            raise ValueError(f"device '{device}': this PyTorch has no CUDA support "
                             "(install a CUDA build of torch, or use backend onnxruntime)")
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        self._torch = torch
        device = torch.device(str(device))
        self.device = device
        model, meta = load_model(model_path, device)
        self.meta = meta
        self.precision = "fp16" if half else "fp32"
        self.provider = f"torch {device} ({torch.get_num_threads()} CPU threads)" \
            if not on_cuda else f"torch {device}"
        self._dtype = torch.float16 if half else torch.float32
        # channels_last lets cuDNN pick its fastest NHWC kernels, fp16 halves memory traffic.
        self._memory_format = torch.channels_last if on_cuda else torch.contiguous_format
        self.model = model.to(device=device, dtype=self._dtype,
                              memory_format=self._memory_format).eval()
        self.label_dtype = np.uint8 if meta.num_classes <= 255 else np.uint16
        std = torch.tensor(meta.std, dtype=torch.float32)
        mean = torch.tensor(meta.mean, dtype=torch.float32)
        # (x/255 - mean)/std folded into one multiply-add, done on the device.
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device, self._dtype)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(device, self._dtype)
        if on_cuda:
            torch.backends.cudnn.benchmark = True
        self._host = torch.empty(0, dtype=torch.uint8)

    def staging(self, n: int) -> np.ndarray:
        """Pinned on CUDA (faster, asynchronous copies); grown only when the batch grows."""
        if self._host.shape[0] < n:
            h, w = self.meta.input_size
            self._host = self._torch.empty((n, h, w, 3), dtype=self._torch.uint8,
                                           pin_memory=self.device.type == "cuda")
        return self._host[:n].numpy()

    def close(self) -> None:
        self.model = self._scale = self._shift = None
        self._host = self._torch.empty(0, dtype=self._torch.uint8)
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()  # hand the cached blocks back to the driver

    def run(self, batch: np.ndarray, want_confidence: bool
            ) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).to(self._dtype).contiguous(memory_format=self._memory_format)
            logits = self.model(x * self._scale + self._shift)
            # max() over channels is ~3x faster than argmax() on NCHW CPU tensors.
            top, labels_t = logits.max(dim=1)
            conf = None
            if want_confidence:  # max softmax = exp(max logit - logsumexp), no full softmax
                conf = torch.exp(top.float() - torch.logsumexp(logits.float(), dim=1))
                conf = conf.cpu().numpy()
            labels_t = labels_t.to(torch.int32 if self.label_dtype == np.uint16 else torch.uint8)
            labels = labels_t.cpu().numpy().astype(self.label_dtype, copy=False)
        return labels, conf


class OrtBackend:
    """ONNX Runtime session on an exported model, outputs written into reused buffers."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, device: Device, half: bool, cpu_threads: int,
                 log: Callable[[str], None] | None = None, tensorrt: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError(f"checkpoint {onnx_path}: backend 'onnxruntime' needs ONNX "
                                  "Runtime, which is not installed (pip install onnxruntime, "
                                  "or onnxruntime-gpu for CUDA/TensorRT)") from None

        self._input, self._outputs = INPUT_NAME, OUTPUTS
        providers, self.provider, self.precision = _providers(ort, device, half, tensorrt)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = cpu_threads if cpu_threads > 0 else default_cpu_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings from graph fusion are noise for a user
        if not onnx_path.is_file():
            raise CheckpointError(f"checkpoint {onnx_path}: file not found")
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise CheckpointError(f"checkpoint {onnx_path}: not a readable ONNX model "
                                  f"({one_line(exc)[:200]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise CheckpointError(
                f"checkpoint {onnx_path}: no '{METADATA_KEY}' metadata (not made by "
                "python -m etc_ros.export_onnx)")
        self.meta = meta_from_json(props[METADATA_KEY], onnx_path)
        info = json.loads(props.get(ONNX_KEY, "{}"))
        if info.get("precision") == "int8":
            self.precision = "int8"
        self._check_io(onnx_path)
        self.label_dtype = np.uint8 if self.meta.num_classes <= 255 else np.uint16
        self.provider += f" ({options.intra_op_num_threads} CPU threads)" \
            if device.type == "cpu" else ""
        self._binding = self.session.io_binding()
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._host = np.empty((0, *self.meta.input_size, 3), np.uint8)
        (log or _LOG.info)(f"onnxruntime: {onnx_path.name} on {self.provider}")

    def _check_io(self, path: Path) -> None:
        h, w = self.meta.input_size
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        ok = (len(inputs) == 1 and inputs[0].name == self._input
              and inputs[0].type == "tensor(uint8)" and list(inputs[0].shape[1:]) == [h, w, 3])
        if not ok:
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise CheckpointError(
                f"checkpoint {path}: expected one input '{self._input}' uint8 [N, {h}, {w}, 3], "
                f"got {got} (export it with python -m etc_ros.export_onnx)")
        if outputs[:2] != list(self._outputs):
            raise CheckpointError(f"checkpoint {path}: expected outputs "
                                  f"{list(self._outputs)}, got {outputs}")

    def staging(self, n: int) -> np.ndarray:
        """Grown only when the batch grows."""
        if self._host.shape[0] < n:
            self._host = np.empty((n, *self.meta.input_size, 3), np.uint8)
        return self._host[:n]

    def close(self) -> None:
        """Dropping the session frees its arena and, on CUDA, its device memory."""
        self.session = self._binding = None
        self._buffers.clear()

    def _out(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Output buffers per batch size, allocated once: no per-frame allocation in ORT."""
        if n not in self._buffers:
            h, w = self.meta.input_size
            dtype = np.uint8 if self.meta.num_classes <= 255 else np.int32
            self._buffers[n] = (np.empty((n, h, w), dtype), np.empty((n, h, w), np.float32))
        return self._buffers[n]

    def run(self, batch: np.ndarray, want_confidence: bool
            ) -> tuple[np.ndarray, np.ndarray | None]:
        labels, conf = self._out(batch.shape[0])
        b = self._binding
        b.bind_cpu_input(self._input, batch)
        for name, buf in zip(self._outputs, (labels, conf), strict=True):
            b.bind_output(name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
        self.session.run_with_iobinding(b)
        if labels.dtype != self.label_dtype:
            labels = labels.astype(self.label_dtype)
        return labels, conf if want_confidence else None


def _providers(ort: Any, device: Device, half: bool, tensorrt: bool
               ) -> tuple[list, str, str]:
    """ORT providers for a device: (providers list, description, precision)."""
    if device.type == "cpu":
        if half:
            raise ValueError("half precision (fp16) needs a CUDA device")
        return ["CPUExecutionProvider"], "CPUExecutionProvider", "fp32"
    available = ort.get_available_providers()
    index = device.index or 0
    cuda = ("CUDAExecutionProvider", {"device_id": index})
    if tensorrt and "TensorrtExecutionProvider" in available:
        cache = cache_dir() / "trt_engines"
        cache.mkdir(parents=True, exist_ok=True)
        trt = ("TensorrtExecutionProvider", {
            "device_id": index, "trt_fp16_enable": half, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache)})
        return [trt, cuda, "CPUExecutionProvider"], f"TensorrtExecutionProvider:{index}", \
            "fp16" if half else "fp32"
    if "CUDAExecutionProvider" in available:
        return [cuda, "CPUExecutionProvider"], f"CUDAExecutionProvider:{index}", "fp32"
    raise ValueError(f"device '{device}' requested but onnxruntime has no CUDA provider "
                     f"(available: {', '.join(available)}; install onnxruntime-gpu)")


def cache_dir() -> Path:
    """Where exported models and TensorRT engines are cached (see the module docstring)."""
    if os.environ.get("ETC_ROS_CACHE_DIR"):
        return Path(os.environ["ETC_ROS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "etc_ros" / "onnx"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_onnx(model_path: Path, log: Callable[[str], None] | None = None) -> Path:
    """The ONNX export of a .safetensors checkpoint, made once per file content (sha256)."""
    if not model_path.is_file():
        raise CheckpointError(f"checkpoint {model_path}: file not found")
    digest = file_sha256(model_path)
    target = cache_dir() / f"{model_path.stem}-{digest[:16]}.onnx"
    if target.is_file():
        (log or _LOG.info)(f"onnxruntime: using cached export {target}")
        return target
    import_torch(f"checkpoint {model_path}: exporting a .safetensors checkpoint for ONNX "
                 "Runtime")
    from etc_ros.export_onnx import ExportError, export

    (log or _LOG.info)(f"onnxruntime: exporting {model_path.name} once to {target}")
    try:
        export(model_path, target, log=log or _LOG.info)
    except ExportError as exc:
        raise CheckpointError(f"checkpoint {model_path}: ONNX export failed ({exc})") from None
    return target
