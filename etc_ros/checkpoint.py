"""The node's weight format: safetensors tensors + JSON metadata in the safetensors header.

No pickle anywhere: `torch.load` would execute code from the file. Everything the node needs to
run a checkpoint (architecture, classes, palette, normalisation, input size) travels in the file,
and every field is validated on load so a bad file stops start-up with one line naming it.

torch and safetensors are imported inside the functions that need them: the metadata
(CheckpointMeta, `meta_from_json`) is also what a `.onnx` model carries, and a robot running
ONNX Runtime reads it without torch installed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from etc_ros.errors import one_line
from etc_ros.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from etc_ros.models import ARCHITECTURES

if TYPE_CHECKING:
    import torch

METADATA_KEY = "etc_ros"
FORMAT_VERSION = 1
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file."""


class TorchUnavailable(CheckpointError):
    """PyTorch is needed for what was asked (a .safetensors model) but is not installed."""


TORCH_HINT = ("pip install torch, or run a .onnx model (python -m etc_ros.export_onnx) on "
              "backend onnxruntime, which needs no torch")


def import_torch(purpose: str) -> ModuleType:
    """`import torch`, or a one-line TorchUnavailable saying what needs it and what to install."""
    try:
        import torch
    except ImportError:
        raise TorchUnavailable(f"{purpose} needs PyTorch, which is not installed "
                               f"({TORCH_HINT})") from None
    return torch


@dataclass
class CheckpointMeta:
    """What a checkpoint carries besides its tensors."""

    architecture: str
    class_names: list[str]
    palette: list[list[int]]
    input_size: tuple[int, int]  # (height, width) the model runs at
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def save_checkpoint(
    path: str | Path, state_dict: dict[str, torch.Tensor], meta: CheckpointMeta,
    half: bool = False,
) -> None:
    """Write tensors and metadata; `half` stores float tensors as fp16 (half the size)."""
    from safetensors.torch import save_file

    _validate_meta(meta, Path(path))
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        tensors[name] = tensor
    meta_json = json.dumps(asdict(meta))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: meta_json})


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Read and validate a checkpoint; raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    import_torch(f"checkpoint {path}: a .safetensors checkpoint")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: not a readable safetensors file ({one_line(exc)})"
        ) from None
    if METADATA_KEY not in header:
        raise CheckpointError(
            f"checkpoint {path}: no '{METADATA_KEY}' metadata (not an etc_ros checkpoint; "
            "export it with python -m training.export)"
        )
    return tensors, meta_from_json(header[METADATA_KEY], path)


def meta_from_json(text: str, path: Path) -> CheckpointMeta:
    """The validated metadata of `path` from its JSON (a safetensors header or ONNX props)."""
    try:
        raw = json.loads(text)
        raw["input_size"] = tuple(raw["input_size"])
        meta = CheckpointMeta(**raw)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: malformed metadata ({exc})") from None
    _validate_meta(meta, path)
    return meta


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, CheckpointMeta]:
    """Build the checkpoint's architecture, load its weights strictly, eval mode, on device."""
    from etc_ros.models import build_model

    tensors, meta = load_checkpoint(path)
    model = build_model(meta.architecture, meta.num_classes)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise CheckpointError(
            f"checkpoint {path}: weights do not match architecture {meta.architecture} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {detail})"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"checkpoint {path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"architecture {meta.architecture} with {meta.num_classes} classes expects "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.eval().to(device), meta


def make_random_checkpoint(
    path: str | Path, arch: str = "lraspp_mobilenetv3", input_size: tuple[int, int] = (64, 128)
) -> CheckpointMeta:
    """A randomly initialised checkpoint in the real format, for tests and benchmarks."""
    import torch

    from etc_ros.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, len(CITYSCAPES_CLASSES))
    meta = CheckpointMeta(
        architecture=arch,
        class_names=list(CITYSCAPES_CLASSES),
        palette=CITYSCAPES_PALETTE.tolist(),
        input_size=input_size,
        recipe={"name": "random-init"},
    )
    save_checkpoint(path, model.state_dict(), meta)
    return meta


def _validate_meta(meta: CheckpointMeta, path: Path) -> None:
    def fail(reason: str) -> None:
        raise CheckpointError(f"checkpoint {path}: {reason}")

    if meta.format_version != FORMAT_VERSION:
        fail(f"format_version {meta.format_version} is not supported (expected {FORMAT_VERSION})")
    if meta.architecture not in ARCHITECTURES:
        fail(f"unknown architecture {meta.architecture!r} (known: {', '.join(ARCHITECTURES)})")
    if not meta.class_names:
        fail("no class names")
    if len(meta.palette) != len(meta.class_names):
        fail(f"{len(meta.class_names)} classes but {len(meta.palette)} palette colours")
    if any(len(c) != 3 or not all(0 <= int(v) <= 255 for v in c) for c in meta.palette):
        fail("palette entries must be three values in 0..255")
    if len(meta.mean) != 3 or len(meta.std) != 3 or any(s <= 0 for s in meta.std):
        fail("mean and std must have three values each, std > 0")
    if len(meta.input_size) != 2 or any(int(v) < 16 for v in meta.input_size):
        fail(f"input_size must be (height, width) >= 16, got {meta.input_size}")
