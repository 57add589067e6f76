"""Train a segmentation network with the ETC recipe; one script for teacher and students.

    python -m training.train --config training/configs/student_etc.yaml [--data-root R]
        [--max-iters N] [--device cpu|cuda] [--out DIR] [--batch-size B] [--resume]
    torchrun --nproc_per_node G -m training.train --config ...     # DDP + SyncBN, one GPU each

The YAML config becomes a ``TrainConfig`` (training.config: inheritance through ``base:``,
unknown keys are errors). ``build`` prepares the data (with the teacher's cached targets when
the config distils), the model, optimizer and validator; ``loop`` runs SGD with poly LR, AMP on
CUDA, validation (mIoU and TC) every ``val_every`` iterations, metrics to ``<out>/metrics.csv``
and TensorBoard (``<out>/tb``). Checkpoints in ``<out>``:

* ``last.safetensors`` / ``best.safetensors`` (best val mIoU): the node's format
  (``etc_ros.checkpoint``), so export only has to copy and verify;
* ``train_state.safetensors`` + ``train_state.json``: what ``--resume`` needs
  (training.run_state; no pickle anywhere).

``batch_size`` is per process. Under DDP every rank reads the resume state from ``--out`` (a
shared filesystem across nodes) and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from etc_ros.checkpoint import CheckpointError, CheckpointMeta, load_model, save_checkpoint
from etc_ros.errors import one_line
from etc_ros.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from etc_ros.models import BACKBONES, PretrainedWeightsUnavailable, TrainOutput, build_model
from training.config import ConfigError, TrainConfig, as_json, load_config, parse_sets
from training.datasets import ClipDataset, DatasetError, load_sequences
from training.distributed import (
    Dist,
    forward_clip,
    infinite,
    setup_distributed,
    wrap_for_training,
)
from training.losses import ETCLoss
from training.pretrained import BackboneWeightsError, load_backbone_weights
from training.run_state import STATE_JSON, MetricsLog, load_state, save_state
from training.teacher_cache import (
    TeacherGateError,
    TeacherTargetDataset,
    build_cache,
    cache_key,
    check_teacher_gate,
)
from training.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform
from training.validation import Validator

EXIT_TEACHER_GATE = 3
RESUME_MAY_CHANGE = ("iters", "workers", "val_every", "log_every")


class TrainingDiverged(Exception):
    """The loss stopped being finite; the message is one line with what to change."""


# ---------------------------------------------------------------------------------------------
# model, teacher and optimizer


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
        teacher_miou = Validator(val_seqs, cfg.num_classes, meta.input_size, with_tc=False)(
            teacher, device).get("miou")
        reference_miou = Validator(val_seqs, cfg.num_classes, ref_meta.input_size,
                                   with_tc=False)(reference, device).get("miou")
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


# ---------------------------------------------------------------------------------------------
# the cached teacher's targets for a batch


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


# ---------------------------------------------------------------------------------------------
# build, then loop


@dataclass
class Run:
    """What ``build`` prepares and ``loop`` runs."""

    model: nn.Module  # the bare model: checkpoints, validation
    forward: nn.Module  # what the loop calls (DDP-wrapped under torchrun)
    dataset: Dataset  # ClipDataset, or TeacherTargetDataset around it
    batches: Iterator[dict[str, torch.Tensor]]
    loss_fn: ETCLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    validator: Validator | None  # rank 0 only
    step: int = 0
    best: float | None = None


def build_dataset(cfg: TrainConfig, ddp: Dist) -> Dataset:
    """Training clips, with the teacher's targets when the config distils (cached once per
    frame: rank 0 builds the cache, every rank reads it)."""
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
    if cfg.teacher_checkpoint is None:
        return dataset
    cache_dir = Path(cfg.teacher_cache_dir or Path(cfg.data_root) / "teacher_cache"
                     / cfg.train_split)
    if ddp.main:
        teacher, teacher_meta = load_teacher(cfg, ddp.device)
        cache = build_cache(teacher, cfg.teacher_checkpoint, teacher_meta, dataset, cache_dir,
                            cfg.teacher_scales, cfg.teacher_flip, ddp.device)
        del teacher
    else:  # the key hashes every drawn frame's bytes: only where it is not known yet
        cache = cache_dir / cache_key(cfg.teacher_checkpoint, dataset, cfg.teacher_scales,
                                      cfg.teacher_flip)
    ddp.barrier()
    return TeacherTargetDataset(dataset, cache, cfg.crop_size)


def build(cfg: TrainConfig, out: Path, ddp: Dist, resume: bool) -> Run:
    """Data, validator, model, optimizer (restored with ``resume``), DDP and the loader."""
    if not resume and (out / STATE_JSON).exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it "
                          "or choose another --out")
    torch.manual_seed(cfg.seed + ddp.rank)
    dataset = build_dataset(cfg, ddp)
    validator = None
    if cfg.val_split is not None and ddp.main:
        val_seqs = load_sequences(cfg.data_root, cfg.val_split, cfg.dataset)
        validator = Validator(val_seqs[: cfg.val_sequences], cfg.num_classes, cfg.input_size,
                              with_tc=cfg.val_tc,
                              flow_cache_dir=Path(cfg.data_root) / "tc_flow" / cfg.val_split)

    model = build_model(cfg.arch, cfg.num_classes, cfg.pretrained_backbone)
    if cfg.backbone_weights is not None:
        load_backbone_weights(model, cfg.arch, cfg.backbone_weights)
    if cfg.init_checkpoint is not None:
        init, init_meta = load_model(cfg.init_checkpoint)
        if init_meta.architecture != cfg.arch:
            raise ConfigError(f"init_checkpoint {cfg.init_checkpoint} is a "
                              f"{init_meta.architecture}, the config says arch {cfg.arch}")
        model.load_state_dict(init.state_dict())
    model.to(ddp.device)
    loss_fn = ETCLoss(cfg.loss_weights, cfg.aux_weight, cfg.temperature,
                      cfg.affinity_grid).to(ddp.device)
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and ddp.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, best = 0, None
    if resume:
        state = load_state(out, {"model": model}, optimizer, scaler, as_json(cfg),
                           RESUME_MAY_CHANGE)
        step, best = int(state["step"]), state["best_miou"]
    if step >= cfg.iters:
        raise ConfigError(f"the run in {out} is already at step {step} of {cfg.iters}; "
                          "raise --max-iters to continue")

    forward, model, sampler = wrap_for_training(model, dataset, ddp, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ddp.rank * 7919 + step)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=sampler is None,
                        sampler=sampler, num_workers=cfg.workers, drop_last=True,
                        generator=gen, persistent_workers=cfg.workers > 0)
    return Run(model, forward, dataset, infinite(loader, sampler, step // len(loader)),
               loss_fn, optimizer, scaler, use_amp, validator, step, best)


def loop(cfg: TrainConfig, out: Path, ddp: Dist, run: Run) -> dict[str, float]:
    """Train from ``run.step`` to ``cfg.iters``; returns the last validation metrics."""
    log = MetricsLog(out) if ddp.main else None
    metrics: dict[str, float] = {}
    running: dict[str, float] = {}
    key, neighbor = run.dataset.key, run.dataset.neighbor
    set_train_mode(run.model, cfg)
    bar = tqdm(range(run.step, cfg.iters), initial=run.step, total=cfg.iters, desc=out.name,
               disable=not ddp.main)
    for step in bar:
        lr = cfg.lr * (1 - step / cfg.iters) ** cfg.poly_power
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        batch = next(run.batches)
        images = batch["images"].to(ddp.device, non_blocking=True)
        label = batch["label"].to(ddp.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=run.use_amp):
            student = forward_clip(run.forward, run.model, images, key, cfg.grad_frames)
            teacher_out = teacher_valid = None
            if "teacher_logits" in batch:
                teacher_out, teacher_valid = _cached_teacher(batch, ddp.device,
                                                             images.shape[-2:])
            flows = batch["flows"].to(ddp.device) if "flows" in batch else None
            loss, parts = run.loss_fn(
                student, label, teacher=teacher_out, images=list(images.unbind(1)),
                flow_fw=None if flows is None else flows[:, 0],
                flow_bw=None if flows is None else flows[:, 1],
                center=key, neighbor=neighbor, teacher_valid=teacher_valid)
        if not torch.isfinite(loss):
            hint = ("; frozen BN needs a lower backbone LR (e.g. backbone_lr_mult 0.1)"
                    if cfg.freeze_bn and cfg.backbone_lr_mult > 0.1 else "")
            raise TrainingDiverged(f"loss is {loss.item()} at step {step}; lower lr or check "
                                   f"data{hint}")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()

        for k, v in parts.items():
            running[f"train/{k}"] = running.get(f"train/{k}", 0.0) + float(v)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.iters:
            if log is not None:
                count = (done - 1) % cfg.log_every + 1
                log.write(done, {**{k: v / count for k, v in running.items()}, "train/lr": lr})
            running = {}
        if ddp.main:
            bar.set_postfix(loss=f"{float(parts['total']):.3f}", lr=f"{lr:.4f}")
        if done % cfg.val_every == 0 or done == cfg.iters:
            if ddp.main:
                metrics = {} if run.validator is None else run.validator(run.model, ddp.device)
                set_train_mode(run.model, cfg)  # validation switched frozen BN back to train
                metrics["step"] = done
                log.write(done, {f"val/{k}": v for k, v in metrics.items() if k != "step"})
                _save(cfg, out, ddp, run, done, metrics)
                bar.write(f"step {done}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in metrics.items() if k != "step"))
            ddp.barrier()
    bar.close()
    if log is not None:
        log.close()
    return metrics


def _save(cfg: TrainConfig, out: Path, ddp: Dist, run: Run, done: int,
          metrics: dict[str, float]) -> None:
    """last / best checkpoints (best = last without validation) and the resume state."""
    meta = CheckpointMeta(architecture=cfg.arch, class_names=list(CITYSCAPES_CLASSES),
                          palette=CITYSCAPES_PALETTE.tolist(), input_size=cfg.input_size,
                          mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), recipe=as_json(cfg),
                          metrics=metrics)
    save_checkpoint(out / "last.safetensors", run.model.state_dict(), meta)
    score = metrics.get("miou")
    if score is None or run.best is None or score > run.best:
        run.best = score
        save_checkpoint(out / "best.safetensors", run.model.state_dict(), meta)
    save_state(out, done, {"model": run.model}, run.optimizer, run.scaler, as_json(cfg),
               {"world_size": ddp.world, "best_miou": run.best})


def train(cfg: TrainConfig, out: Path, device: str, resume: bool) -> dict[str, float]:
    """Run (or continue) one training run; returns the last validation metrics."""
    ddp = setup_distributed(device)
    try:
        return loop(cfg, out, ddp, build(cfg, out, ddp, resume))
    finally:
        if ddp.world > 1:
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# command line


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from --set and the flags; a flag given wins over --set of its key,
    and one not given leaves the --set value alone."""
    flags = {"data_root": args.data_root, "iters": args.max_iters,
             "batch_size": args.batch_size, "allow_weak_teacher": args.allow_weak_teacher}
    return {**parse_sets(args.set), **{k: v for k, v in flags.items() if v is not None}}


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
