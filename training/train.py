"""Train a segmentation network with the ETC recipe; one script for teacher and students.

    python -m training.train --config training/configs/student_etc.yaml [--data-root R]
        [--max-iters N] [--device cpu|cuda] [--out DIR] [--batch-size B] [--resume]
    torchrun --nproc_per_node G -m training.train --config ...     # DDP + SyncBN, one GPU each

The YAML config is parsed once, here, into ``TrainConfig`` (unknown keys are errors). The loop:
SGD with poly LR, AMP on CUDA, validation (mIoU and TC) every ``val_every`` iterations, metrics to
``<out>/metrics.csv`` and TensorBoard (``<out>/tb``). Checkpoints in ``<out>``:

* ``last.safetensors`` / ``best.safetensors`` (best val mIoU): the node's format
  (``etc_ros.checkpoint``), so export only has to copy and verify;
* ``train_state.safetensors`` + ``train_state.json``: what ``--resume`` needs. Tensors (model,
  flattened optimizer state, torch RNG) go to safetensors, everything else (step, config,
  optimizer hyper-parameters, AMP scaler, best score) to the JSON sidecar. No pickle anywhere.

``batch_size`` is per process. Under DDP every rank reads the resume state from ``--out`` (a
shared filesystem across nodes) and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from etc_ros.checkpoint import CheckpointError, CheckpointMeta, load_model, save_checkpoint
from etc_ros.errors import one_line
from etc_ros.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from etc_ros.models import (
    ARCHITECTURES,
    BACKBONES,
    PretrainedWeightsUnavailable,
    TrainOutput,
    build_model,
)
from etc_ros.preprocess import resize_image, resize_labels
from etc_ros.temporal import TemporalConsistency, shared_class_set
from etc_ros.metrics import (
    accumulate_confusion,
    gt_classes,
    mean_iou,
    new_confusion,
    pixel_accuracy,
)
from training.datasets import (
    LAYOUTS,
    ClipDataset,
    DatasetError,
    VideoSequence,
    load_sequences,
    read_label,
    read_rgb,
)
from training.flow_cache import shared_tc_flows
from training.losses import LOSS_TERMS, ETCLoss
from training.pretrained import BackboneWeightsError, load_backbone_weights
from training.teacher_cache import (
    TeacherGateError,
    TeacherTargetDataset,
    build_cache,
    cache_key,
    check_teacher_gate,
)
from training.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainTransform,
    normalize,
)

DISTILL_TERMS = ("kd", "pf", "structured", "mf")
GRAD_FRAMES = ("all", "labelled")
STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


EXIT_TEACHER_GATE = 3


class TrainingDiverged(Exception):
    """The loss stopped being finite; the message is one line with what to change."""


class ConfigError(Exception):
    """A bad config file or command line; the message is one line."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run. Sizes are (height, width); ``batch_size`` is per process."""

    arch: str
    num_classes: int = len(CITYSCAPES_CLASSES)
    pretrained_backbone: bool = False
    backbone_weights: str | None = None  # ImageNet backbone safetensors (training.pretrained)
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
    _check(not (cfg.backbone_weights and cfg.pretrained_backbone),
           "set either backbone_weights (a converted file) or pretrained_backbone (download)")
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
    """Parse and validate a YAML config; ``overrides`` (non-None) replace its values."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in {path}")
    if "arch" not in raw:
        raise ConfigError(f"config {path} must set 'arch'")
    cfg = TrainConfig(**{k: _coerce(k, v, hints[k]) for k, v in raw.items()})
    validate_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# distributed helpers


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: str) -> Dist:
    """Join the torchrun job when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    return Dist(dist.get_rank(), world, dev)


class _TrainForward(nn.Module):
    """Routes ``forward`` to ``forward_train`` so DDP's gradient hooks see the training pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> TrainOutput:
        return self.model.forward_train(x)


def _cached_teacher(batch: dict[str, torch.Tensor], device: torch.device, size: torch.Size
                    ) -> tuple[list[TrainOutput], list[torch.Tensor]]:
    """Per clip frame: the cached teacher logits at the student's input size, its features,
    and where the logits are valid."""
    logits = batch["teacher_logits"].to(device, non_blocking=True)
    valid = batch["teacher_valid"].to(device, non_blocking=True)
    feats = batch["teacher_features"].to(device, non_blocking=True)
    outs, masks = [], []
    for i in range(logits.shape[1]):
        outs.append(TrainOutput(
            F.interpolate(logits[:, i], size=size, mode="bilinear", align_corners=False),
            None, feats[:, i]))
        masks.append(F.interpolate(valid[:, i], size=size, mode="nearest"))
    return outs, masks


def _forward_clip(forward: nn.Module, model: nn.Module, images: torch.Tensor, key: int,
                  grad_frames: str) -> list[TrainOutput]:
    """The student on every clip frame (N, T, 3, H, W) -> one TrainOutput per frame.

    ``grad_frames="labelled"`` runs the labelled frame ``key`` with gradients and its
    neighbours once more without (``model.forward_train``, outside DDP), so the temporal and
    distillation terms pull the labelled frame towards fixed neighbours and backward costs one
    frame, not T.
    """
    n, t = images.shape[:2]
    if grad_frames == "all" or t == 1:
        return _split_frames(forward(images.flatten(0, 1)), n, t)
    keyed = forward(images[:, key])
    others = [i for i in range(t) if i != key]
    with torch.no_grad():
        frames = _split_frames(model.forward_train(images[:, others].flatten(0, 1)), n, t - 1)
    frames.insert(key, keyed)
    return frames


def _split_frames(out: TrainOutput, n: int, t: int) -> list[TrainOutput]:
    """(N*T, ...) outputs of a flattened clip batch -> one TrainOutput per clip frame."""

    def part(x: torch.Tensor | None, i: int) -> torch.Tensor | None:
        return None if x is None else x.unflatten(0, (n, t))[:, i]

    return [TrainOutput(*(part(x, i) for x in out)) for i in range(t)]


# ---------------------------------------------------------------------------------------------
# validation


class Validator:
    """mIoU on labelled val frames and TC over consecutive val frames, scored as evaluate does.

    Frames are resized to the model's input size exactly as the node's Segmenter does
    (etc_ros.preprocess); predictions go back to each label's own resolution the same way, so
    val mIoU is the number ``python -m etc_ros.evaluate`` reports on these frames (mean over the
    classes present in the ground truth). TC is taken at the model's input size (``input_size``,
    the student's by default; the teacher gate passes the teacher's). Frames, labels and the DIS
    flow between consecutive frames are prepared once, on construction (the flow through
    ``flow_cache_dir`` when given, shared with other runs: ``training.flow_cache.shared_tc_flows``);
    ``with_tc=False`` (the gate and the teachers, which need mIoU alone) skips the flow and TC.
    """

    def __init__(self, sequences: list[VideoSequence], cfg: TrainConfig,
                 input_size: tuple[int, int] | None = None, with_tc: bool = True,
                 flow_cache_dir: Path | None = None) -> None:
        self.num_classes = cfg.num_classes
        self.with_tc = with_tc
        size = tuple(input_size or cfg.input_size)
        self.sequences: list[tuple[torch.Tensor, dict[int, np.ndarray], list]] = []
        total = sum(len(s.frames) if with_tc else len(s.labels) for s in sequences)
        desc = "val frames + flow" if with_tc else "val frames"
        with tqdm(total=total, desc=desc, leave=False) as bar:
            for seq in sequences:
                # without TC only the labelled frames are needed (1 in 30 on Cityscapes)
                kept = range(len(seq.frames)) if with_tc else sorted(seq.labels)
                rgb, labels = [], {}
                for i in kept:
                    if i in seq.labels:
                        labels[len(rgb)] = read_label(seq.labels[i], seq.label_format,
                                                      cfg.num_classes)
                    rgb.append(model_input(read_rgb(seq.frames[i]), size))
                    bar.update()
                if not rgb:
                    continue
                flows = shared_tc_flows(rgb, flow_cache_dir, seq.name) if with_tc else []
                self.sequences.append((normalize(rgb), labels, flows))

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Evaluate ``model`` (switched to eval mode and back)."""
        was_training = model.training
        model.eval()
        conf = new_confusion(self.num_classes)
        tc = TemporalConsistency(self.num_classes)
        label_dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        for images, labels, flows in self.sequences:
            preds = torch.cat([model(chunk.to(device)).argmax(1).cpu()
                               for chunk in images.split(8)]).numpy().astype(label_dtype)
            for i, label in labels.items():
                accumulate_confusion(conf, label, resize_labels(preds[i], label.shape))
            for i, (flow, valid) in enumerate(flows):
                tc.update(preds[i], preds[i + 1], flow, valid)
        model.train(was_training)
        # mIoU and TC over the classes present in the ground truth
        metrics: dict[str, float] = {}
        if self.with_tc:
            result = tc.result(shared_class_set(gt_classes(conf), [tc]))
            metrics = {"tc": result["tc"] or 0.0, "tc_pixel": result["tc_pixel"] or 0.0}
        miou = mean_iou(conf)
        if miou is not None:
            metrics["miou"] = miou
            metrics["pixel_acc"] = pixel_accuracy(conf)
        return metrics


def model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame as the model sees it, resized exactly like the node's Segmenter does."""
    return resize_image(rgb, size)


# ---------------------------------------------------------------------------------------------
# resume state (safetensors + JSON, never pickle)


def save_train_state(out: Path, step: int, cfg: TrainConfig, model: nn.Module,
                     optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     best: float | None, world_size: int = 1) -> None:
    """Write everything ``--resume`` needs; the JSON is replaced last and names the step."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            elif value is not None:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    tmp = out / (STATE_TENSORS + ".tmp")
    save_file(tensors, str(tmp), metadata={"step": str(step)})
    os.replace(tmp, out / STATE_TENSORS)
    meta = {"step": step, "world_size": world_size, "config": _jsonable(cfg), "best_miou": best,
            "param_groups": opt["param_groups"], "optim_scalars": scalars,
            "scaler": scaler.state_dict()}
    tmp = out / (STATE_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / STATE_JSON)


def load_train_state(out: Path, cfg: TrainConfig, model: nn.Module,
                     optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler) -> tuple[int, float | None]:
    """Restore a run from ``out``; returns (step, best mIoU). ConfigError if it cannot."""
    tensor_path, json_path = out / STATE_TENSORS, out / STATE_JSON
    if not (tensor_path.is_file() and json_path.is_file()):
        raise ConfigError(f"--resume: no {STATE_TENSORS} + {STATE_JSON} in {out}")
    meta = json.loads(json_path.read_text())
    with safe_open(str(tensor_path), framework="pt") as f:
        if (f.metadata() or {}).get("step") != str(meta["step"]):
            raise ConfigError(f"--resume: {tensor_path} and {json_path} are from different steps")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    changed = sorted(k for k, v in _jsonable(cfg).items()
                     if k not in ("iters", "workers", "val_every", "log_every")
                     and meta["config"].get(k) != v)
    if changed:
        raise ConfigError(f"--resume: config differs from the run in {out} in {changed}")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, values in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return int(meta["step"]), meta["best_miou"]


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg)))


# ---------------------------------------------------------------------------------------------
# the loop


class MetricsLog:
    """Long-format CSV (step, name, value) plus TensorBoard scalars; rank 0 only."""

    def __init__(self, out: Path) -> None:
        path = out / "metrics.csv"
        new = not path.exists()
        self._file = path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value"])
        self._tb = SummaryWriter(str(out / "tb"))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._csv.writerow([step, name, f"{value:.6g}"])
            self._tb.add_scalar(name, value, step)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def _infinite(loader: DataLoader, sampler: DistributedSampler | None,
              epoch: int) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _checkpoint_meta(cfg: TrainConfig, metrics: dict[str, float]) -> CheckpointMeta:
    return CheckpointMeta(
        architecture=cfg.arch,
        class_names=list(CITYSCAPES_CLASSES),
        palette=CITYSCAPES_PALETTE.tolist(),
        input_size=cfg.input_size,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        recipe=_jsonable(cfg),
        metrics=metrics,
    )


def load_teacher(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, CheckpointMeta]:
    """The frozen teacher (eval mode, no gradients) from its exported checkpoint, once it has
    passed the gate (``training.teacher_cache.check_teacher_gate``; config mismatches are
    reported before the gate spends time on the val frames)."""
    teacher, meta = load_model(cfg.teacher_checkpoint, device)
    if cfg.teacher_arch is not None and meta.architecture != cfg.teacher_arch:
        raise ConfigError(f"teacher checkpoint {cfg.teacher_checkpoint} is a "
                          f"{meta.architecture}, the config says teacher_arch {cfg.teacher_arch}")
    if meta.num_classes != cfg.num_classes:
        raise ConfigError(f"teacher checkpoint {cfg.teacher_checkpoint} has {meta.num_classes} "
                          f"classes, the student {cfg.num_classes}")
    teacher_miou = reference_miou = None
    if not cfg.allow_weak_teacher and cfg.teacher_gate_reference is not None and cfg.val_split:
        # both on this run's val frames, each at its own input size
        val_seqs = load_sequences(cfg.data_root, cfg.val_split, cfg.dataset)[: cfg.val_sequences]
        reference, ref_meta = load_model(cfg.teacher_gate_reference, device)
        teacher_miou = Validator(val_seqs, cfg, meta.input_size, with_tc=False)(
            teacher, device).get("miou")
        reference_miou = Validator(val_seqs, cfg, ref_meta.input_size, with_tc=False)(
            reference, device).get("miou")
        del reference
    print(check_teacher_gate(teacher_miou, reference_miou, cfg.teacher_checkpoint,
                             cfg.teacher_gate_reference, cfg.teacher_min_gain,
                             cfg.allow_weak_teacher), file=sys.stderr)
    teacher.requires_grad_(False)
    return teacher, meta


def _backbone_modules(model: nn.Module, cfg: TrainConfig) -> dict[str, nn.Module]:
    prefixes = BACKBONES[cfg.arch].prefixes if cfg.arch in BACKBONES else ()
    return {name: m for name, m in model.named_modules()
            if name and (name + ".").startswith(prefixes)}


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Backbone and head parameter groups; ``lr_mult`` scales the poly LR per group.

    A lower backbone LR keeps more of the ImageNet features, a habit of domain-generalisation
    recipes; frozen BN parameters are left out (they never change).
    """
    backbone = {id(p) for m in _backbone_modules(model, cfg).values()
                for p in m.parameters(recurse=False)}
    frozen = ({id(p) for m in _backbone_modules(model, cfg).values()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
              if cfg.freeze_bn else set())
    groups = [{"params": [], "lr_mult": cfg.backbone_lr_mult},
              {"params": [], "lr_mult": 1.0}]
    for p in model.parameters():
        if id(p) in frozen:
            p.requires_grad_(False)
        else:
            groups[0 if id(p) in backbone else 1]["params"].append(p)
    return [g for g in groups if g["params"]]


def set_train_mode(model: nn.Module, cfg: TrainConfig) -> None:
    """Training mode, with the backbone's BN kept in eval mode (ImageNet statistics) when
    ``freeze_bn`` is set: batches of a few street crops are a poor estimate of them."""
    model.train()
    if cfg.freeze_bn:
        for m in _backbone_modules(model, cfg).values():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def train(cfg: TrainConfig, out: Path, device: str, resume: bool) -> dict[str, float]:
    """Run (or continue) one training run; returns the last validation metrics."""
    ddp = setup_distributed(device)
    try:
        return _train(cfg, out, ddp, resume)
    finally:
        if ddp.world > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, out: Path, ddp: Dist, resume: bool) -> dict[str, float]:
    if not resume and (out / STATE_JSON).exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it "
                          "or choose another --out")
    torch.manual_seed(cfg.seed + ddp.rank)
    train_seqs = load_sequences(cfg.data_root, cfg.train_split, cfg.dataset)
    transform = TrainTransform(cfg.input_size, cfg.crop_size, cfg.scale_range, cfg.flip_prob,
                               cfg.color_jitter, cfg.hue_jitter, cfg.grayscale_prob,
                               cfg.blur_prob, cfg.noise_std, cfg.class_recolour_prob,
                               cfg.num_classes)
    dataset = ClipDataset(train_seqs, cfg.num_classes, cfg.clip_frames, cfg.max_offset,
                          transform, cfg.needs_flow, frame_labels=cfg.class_recolour_prob > 0)
    if len(dataset) < cfg.batch_size * ddp.world:
        raise ConfigError(f"only {len(dataset)} labelled training frames for batch size "
                          f"{cfg.batch_size} x {ddp.world} processes")
    if cfg.teacher_checkpoint is not None:
        # Teacher outputs for every frame a clip can draw, once (rank 0 builds, all read).
        cache_dir = Path(cfg.teacher_cache_dir or Path(cfg.data_root) / "teacher_cache"
                         / cfg.train_split)
        if ddp.main:
            teacher, teacher_meta = load_teacher(cfg, ddp.device)
            cache = build_cache(teacher, cfg.teacher_checkpoint, teacher_meta, dataset,
                                cache_dir, cfg.teacher_scales, cfg.teacher_flip, ddp.device)
            del teacher
        else:  # the key hashes every drawn frame's bytes: only where it is not known yet
            cache = cache_dir / cache_key(cfg.teacher_checkpoint, dataset, cfg.teacher_scales,
                                          cfg.teacher_flip)
        ddp.barrier()
        dataset = TeacherTargetDataset(dataset, cache, cfg.crop_size)
    validator = None
    if cfg.val_split is not None and ddp.main:
        val_seqs = load_sequences(cfg.data_root, cfg.val_split, cfg.dataset)
        validator = Validator(val_seqs[: cfg.val_sequences], cfg, with_tc=cfg.val_tc,
                              flow_cache_dir=Path(cfg.data_root) / "tc_flow" / cfg.val_split)

    model = build_model(cfg.arch, cfg.num_classes, cfg.pretrained_backbone)
    if cfg.backbone_weights is not None:
        load_backbone_weights(model, cfg.arch, cfg.backbone_weights)
    model.to(ddp.device)
    loss_fn = ETCLoss(cfg.loss_weights, cfg.aux_weight, cfg.temperature,
                      cfg.affinity_grid).to(ddp.device)
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and ddp.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, best = 0, None
    if resume:
        step, best = load_train_state(out, cfg, model, optimizer, scaler)
    if step >= cfg.iters:
        raise ConfigError(f"the run in {out} is already at step {step} of {cfg.iters}; "
                          "raise --max-iters to continue")

    forward: nn.Module = _TrainForward(model)
    sampler = None
    if ddp.world > 1:
        if ddp.device.type == "cuda":  # SyncBatchNorm has no CPU implementation
            forward = nn.SyncBatchNorm.convert_sync_batchnorm(forward)
            model = forward.model
        forward = DistributedDataParallel(
            forward, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None)
        sampler = DistributedSampler(dataset, ddp.world, ddp.rank, shuffle=True, seed=cfg.seed,
                                     drop_last=True)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ddp.rank * 7919 + step)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=sampler is None,
                        sampler=sampler, num_workers=cfg.workers, drop_last=True,
                        generator=gen, persistent_workers=cfg.workers > 0)
    batches = _infinite(loader, sampler, step // len(loader))

    log = MetricsLog(out) if ddp.main else None
    metrics: dict[str, float] = {}
    running: dict[str, float] = {}
    set_train_mode(model, cfg)
    bar = tqdm(range(step, cfg.iters), initial=step, total=cfg.iters, desc=out.name,
               disable=not ddp.main)
    for step in bar:
        lr = cfg.lr * (1 - step / cfg.iters) ** cfg.poly_power
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        batch = next(batches)
        images = batch["images"].to(ddp.device, non_blocking=True)
        label = batch["label"].to(ddp.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            student = _forward_clip(forward, model, images, dataset.key, cfg.grad_frames)
            teacher_out = teacher_valid = None
            if "teacher_logits" in batch:
                teacher_out, teacher_valid = _cached_teacher(batch, ddp.device,
                                                             images.shape[-2:])
            flows = batch["flows"].to(ddp.device) if "flows" in batch else None
            loss, parts = loss_fn(
                student, label, teacher=teacher_out, images=list(images.unbind(1)),
                flow_fw=None if flows is None else flows[:, 0],
                flow_bw=None if flows is None else flows[:, 1],
                center=dataset.key, neighbor=dataset.neighbor, teacher_valid=teacher_valid)
        if not torch.isfinite(loss):
            hint = ("; frozen BN needs a lower backbone LR (e.g. backbone_lr_mult 0.1)"
                    if cfg.freeze_bn and cfg.backbone_lr_mult > 0.1 else "")
            raise TrainingDiverged(f"loss is {loss.item()} at step {step}; lower lr or check "
                                   f"data{hint}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        for k, v in parts.items():
            running[f"train/{k}"] = running.get(f"train/{k}", 0.0) + float(v)
        done = step + 1
        if ddp.main:
            bar.set_postfix(loss=f"{float(parts['total']):.3f}", lr=f"{lr:.4f}")
            if done % cfg.log_every == 0 or done == cfg.iters:
                count = (done - 1) % cfg.log_every + 1
                log.write(done, {**{k: v / count for k, v in running.items()}, "train/lr": lr})
        if done % cfg.log_every == 0 or done == cfg.iters:
            running = {}
        if done % cfg.val_every == 0 or done == cfg.iters:
            if ddp.main:
                metrics = validator(model, ddp.device) if validator is not None else {}
                set_train_mode(model, cfg)  # validation switched frozen BN back to train
                metrics["step"] = done
                log.write(done, {f"val/{k}": v for k, v in metrics.items() if k != "step"})
                meta = _checkpoint_meta(cfg, metrics)
                save_checkpoint(out / "last.safetensors", model.state_dict(), meta)
                score = metrics.get("miou")  # None without validation: best = last
                if score is None or best is None or score > best:
                    best = score
                    save_checkpoint(out / "best.safetensors", model.state_dict(), meta)
                save_train_state(out, done, cfg, model, optimizer, scaler, best, ddp.world)
                bar.write(f"step {done}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in metrics.items() if k != "step"))
            ddp.barrier()
    bar.close()
    if log is not None:
        log.close()
    return metrics


def _parse_sets(items: list[str]) -> dict[str, Any]:
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


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from --set and the flags; a flag given wins over --set of its key,
    and one not given leaves the --set value alone."""
    flags = {"data_root": args.data_root, "iters": args.max_iters,
             "batch_size": args.batch_size, "allow_weak_teacher": args.allow_weak_teacher}
    return {**_parse_sets(args.set), **{k: v for k, v in flags.items() if v is not None}}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; config and data errors and a diverged loss print one line and exit 2,
    a teacher refused by the gate exits 3."""
    parser = argparse.ArgumentParser(prog="python -m training.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file (training/configs/*.yaml)")
    parser.add_argument("--data-root", help="override the config's data_root")
    parser.add_argument("--max-iters", type=int, help="override the config's iters")
    parser.add_argument("--batch-size", type=int, help="override batch_size (per process)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path,
                        help="run folder (default runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last saved state")
    parser.add_argument("--allow-weak-teacher", action="store_true", default=None,
                        help="distil even if the teacher is not teacher_min_gain mIoU better")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, VALUE read as YAML (e.g. seed=1, "
                             "workers=4, teacher_checkpoint=runs/t/best.safetensors)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, **_overrides(args))
        out = args.out or Path("runs") / Path(args.config).stem
        out.mkdir(parents=True, exist_ok=True)
        train(cfg, out, args.device, args.resume)
    except TeacherGateError as exc:  # its own code: `make train` distils anyway on this one
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_TEACHER_GATE
    except (ConfigError, DatasetError, CheckpointError, PretrainedWeightsUnavailable,
            BackboneWeightsError, TrainingDiverged) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
