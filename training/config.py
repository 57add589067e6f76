"""Training configs: the ``TrainConfig`` schema, YAML files that inherit, ``--set`` overrides.

A config file is a YAML mapping of ``TrainConfig`` keys. ``base: other.yaml`` (a path relative to
the file) makes it start from another config, recursively; the file's own keys replace the
base's, whole: a mapping such as ``loss_weights`` is replaced, not merged key by key, so a
variant's loss terms are exactly the ones it lists (a merge could never drop a term). Values are
checked against the dataclass types by ``coerce_config``, which works for any frozen dataclass
(the training and adaptation configs share it); unknown keys and wrong types are one-line
``ConfigError``s.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from etc_ros.errors import one_line
from etc_ros.labels import CITYSCAPES_CLASSES
from etc_ros.models import ARCHITECTURES
from training.datasets import LAYOUTS
from training.losses import LOSS_TERMS

DISTILL_TERMS = ("kd", "pf", "structured", "mf")
GRAD_FRAMES = ("all", "labelled")
BASE_KEY = "base"

C = TypeVar("C")


class ConfigError(Exception):
    """A bad config file or command line; the message is one line."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. Sizes are (height, width); ``batch_size`` is per process."""

    arch: str
    num_classes: int = len(CITYSCAPES_CLASSES)
    pretrained_backbone: bool = False
    backbone_weights: str | None = None  # ImageNet backbone safetensors (training.pretrained)
    # start from a trained checkpoint of the same architecture instead (fine-tuning; the
    # adaptation experiment's oracle)
    init_checkpoint: str | None = None
    backbone_lr_mult: float = 1.0  # backbone LR = lr x this (domain generalisation ablation)
    freeze_bn: bool = False  # backbone BN: ImageNet statistics and affine kept fixed
    # data
    dataset: str = "generic"
    data_root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str | None = "val"
    val_sequences: int | None = None  # use the first N val sequences; None = all
    # val TC too (DIS flow between consecutive val frames, shared through <data_root>/tc_flow/);
    # checkpoints are picked by val mIoU, so the teachers skip it
    val_tc: bool = True
    input_size: tuple[int, int] = (128, 256)  # the resolution the model runs at (node, val)
    crop_size: tuple[int, int] = (128, 256)
    scale_range: tuple[float, float] = (0.75, 1.5)
    flip_prob: float = 0.5
    color_jitter: float = 0.2
    hue_jitter: float = 0.0  # style augmentation (training.transforms.style_clip)
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    noise_std: float = 0.0
    # share of clips recoloured class by class (training.transforms.recolour_classes); needs a
    # label on every clip frame (the synthetic data has them), other clips are left as they are
    class_recolour_prob: float = 0.0
    max_offset: int = 3  # neighbours t±k with k random in 1..max_offset
    workers: int = 2
    # optimisation
    batch_size: int = 8
    iters: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    amp: bool = True  # CUDA only; ignored on CPU
    seed: int = 0
    # which clip frames the student trains through: "all", or "labelled" (the neighbours run
    # without gradients, as fixed targets for TL/PF/MF; on the CPU recipe ETC then took 1.9x
    # the baseline's time instead of 3.2x, and lost accuracy: docs/EXPERIMENTS.md)
    grad_frames: str = "all"
    # losses
    aux_weight: float = 0.4
    loss_weights: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})
    temperature: float = 1.0
    affinity_grid: tuple[int, int] = (8, 16)
    teacher_checkpoint: str | None = None
    teacher_arch: str | None = None
    # the gate: the teacher's val mIoU must beat this reference student's by teacher_min_gain
    teacher_gate_reference: str | None = None
    teacher_min_gain: float = 3.0
    allow_weak_teacher: bool = False
    teacher_scales: tuple[float, ...] = (0.75, 1.0, 1.25)  # multi-scale + flip soft targets
    teacher_flip: bool = True
    teacher_cache_dir: str | None = None  # default <data_root>/teacher_cache/<train_split>
    # bookkeeping
    val_every: int = 200  # validate, write checkpoints and resume state every N iterations
    log_every: int = 10

    @property
    def clip_frames(self) -> int:
        """Frames per clip the losses need: 3 for MF (t-k, t, t+k), 2 for TL/PF, else 1."""
        if self.loss_weights.get("mf", 0) > 0:
            return 3
        if any(self.loss_weights.get(k, 0) > 0 for k in ("temporal", "pf")):
            return 2
        return 1

    @property
    def needs_flow(self) -> bool:
        """Only the temporal loss warps with optical flow."""
        return self.loss_weights.get("temporal", 0) > 0


# ---------------------------------------------------------------------------------------------
# YAML -> dataclass


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a dict, its ``base`` chain resolved (the file's keys win)."""
    return _load_yaml(Path(path), ())


def _load_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        loop = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"config base chain loops: {loop}")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        what = f"base {path} of {chain[-1]}" if chain else f"config {path}"
        raise ConfigError(f"cannot read {what}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: {BASE_KEY!r} must be a file name, got {base!r}")
    return {**_load_yaml(path.parent / base, (*chain, resolved)), **raw}


def coerce_config(cls: type[C], raw: Mapping[str, Any], source: str) -> C:
    """``cls`` (a dataclass) from a YAML mapping: unknown keys, missing required keys and values
    of the wrong type are ConfigErrors naming the key; ints become floats where a float is due,
    lists tuples."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    unknown = sorted(set(raw) - {f.name for f in fields})
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in {source}")
    for f in fields:
        if (f.name not in raw and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise ConfigError(f"config {source} must set {f.name!r}")
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in raw.items()})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check/convert one YAML value against its dataclass type; ConfigError names the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {name!r} must be a list, got {value!r}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key {name!r} must be a list of {len(args)} values, "
                              f"got {value!r}")
        return tuple(_coerce(name, v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {name!r} must be a mapping, got {value!r}")
        return {str(k): _coerce(f"{name}.{k}", v, args[1]) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key {name!r} must be {hint.__name__}, got {value!r}")
    return value


def as_json(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON values (tuples become lists), as checkpoints and the
    resume state store it."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` command-line overrides, values parsed as YAML like the config file's."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value {value!r} is not valid YAML") from None
    return out


# ---------------------------------------------------------------------------------------------
# the training config


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate_config(cfg: TrainConfig) -> None:
    """Cross-field checks, so a run never fails late on a config mistake."""
    _check(cfg.arch in ARCHITECTURES, f"arch {cfg.arch!r} unknown; choose one of {ARCHITECTURES}")
    _check(cfg.num_classes == len(CITYSCAPES_CLASSES),
           f"num_classes must be {len(CITYSCAPES_CLASSES)}: every reader maps to the Cityscapes "
           f"train ids, got {cfg.num_classes}")
    _check(cfg.dataset in LAYOUTS, f"dataset {cfg.dataset!r} unknown; choose one of {LAYOUTS}")
    _check(all(v >= 16 for v in cfg.input_size + cfg.crop_size),
           "input_size and crop_size must be at least 16 pixels")
    lo, hi = cfg.scale_range
    _check(0 < lo <= hi, f"scale_range must be 0 < min <= max, got {cfg.scale_range}")
    _check(0 <= cfg.flip_prob <= 1 and 0 <= cfg.color_jitter < 1,
           "flip_prob must be in 0..1 and color_jitter in 0..1")
    _check(0 <= cfg.hue_jitter <= 0.5 and 0 <= cfg.grayscale_prob <= 1
           and 0 <= cfg.blur_prob <= 1 and cfg.noise_std >= 0,
           "hue_jitter must be in 0..0.5, grayscale_prob and blur_prob in 0..1, noise_std >= 0")
    _check(0 <= cfg.class_recolour_prob <= 1, "class_recolour_prob must be in 0..1")
    _check(cfg.backbone_lr_mult >= 0, "backbone_lr_mult must be >= 0")
    _check(sum(map(bool, (cfg.backbone_weights, cfg.pretrained_backbone,
                          cfg.init_checkpoint))) <= 1,
           "set at most one of backbone_weights (a converted file), pretrained_backbone "
           "(download) and init_checkpoint (a trained checkpoint)")
    _check(cfg.teacher_min_gain >= 0 and len(cfg.teacher_scales) >= 1
           and all(s > 0 for s in cfg.teacher_scales),
           "teacher_min_gain must be >= 0 and teacher_scales a non-empty list of scales > 0")
    _check(cfg.max_offset >= 1, "max_offset must be >= 1")
    _check(cfg.grad_frames in GRAD_FRAMES,
           f"grad_frames must be one of {list(GRAD_FRAMES)}, got {cfg.grad_frames!r}")
    _check(cfg.batch_size >= 1 and cfg.iters >= 1 and cfg.workers >= 0,
           "batch_size and iters must be >= 1, workers >= 0")
    frames_with_grad = cfg.clip_frames if cfg.grad_frames == "all" else 1
    _check(cfg.batch_size * frames_with_grad >= 2,
           "batch_size x clip frames with gradients must be >= 2 (batch norm needs two "
           "samples)")
    _check(cfg.lr > 0 and cfg.momentum >= 0 and cfg.weight_decay >= 0 and cfg.poly_power >= 0,
           "lr must be > 0; momentum, weight_decay and poly_power >= 0")
    _check(cfg.val_every >= 1 and cfg.log_every >= 1, "val_every and log_every must be >= 1")
    _check(cfg.val_sequences is None or cfg.val_sequences >= 1, "val_sequences must be >= 1")
    _check(cfg.temperature > 0, "temperature must be > 0")
    unknown = sorted(set(cfg.loss_weights) - set(LOSS_TERMS))
    _check(not unknown, f"unknown loss_weights key(s) {unknown}; valid: {list(LOSS_TERMS)}")
    _check(all(v >= 0 for v in cfg.loss_weights.values()), "loss weights must be >= 0")
    _check(any(v > 0 for v in cfg.loss_weights.values()), "all loss weights are zero")
    distill = any(cfg.loss_weights.get(k, 0) > 0 for k in DISTILL_TERMS)
    _check(distill == (cfg.teacher_checkpoint is not None),
           "teacher_checkpoint is required exactly when a distillation weight "
           f"({'/'.join(DISTILL_TERMS)}) is > 0")
    _check(cfg.teacher_arch is None or cfg.teacher_arch in ARCHITECTURES,
           f"teacher_arch {cfg.teacher_arch!r} unknown; choose one of {ARCHITECTURES}")


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Parse and validate a YAML config (its ``base`` chain resolved); ``overrides``
    (non-None) replace its values."""
    raw = load_yaml(path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    cfg = coerce_config(TrainConfig, raw, str(path))
    validate_config(cfg)
    return cfg
