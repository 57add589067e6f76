"""Adapt the segmenter to a camera's own unlabelled footage (rosbags, videos, image folders).

    python -m training.adapt --bag BAG --topic /cam/image_raw [--video F] [--images DIR] ...
        [--data-root data/synthetic] [--student S.safetensors] [--teacher T.safetensors]
        [--config training/configs/adapt/default.yaml] [--set KEY=VALUE] [--exclude 0-50,...]
        [--out runs/adapt] [--report-dir DIR] [--device cpu|cuda] [--resume]

Self-training with temporal pseudo-supervision, guarded:

1. A labeller predicts frame t-k of the footage (weak view); its probabilities, carried to frame t
   by DIS flow (forward-backward checked), are the pseudo-label of frame t under a strong
   photometric view, kept where confident (per-class thresholds, so rare classes keep labels).
   The labeller (``pseudo_source``) is the student's own mean teacher (``student``), the large
   teacher adapted first in the same way and then distilled (``teacher``: pixel KD, PF and
   structured terms on the target clips), or both where they agree (``agree``).
2. ClassMix pastes half of a labelled source image's classes into the target frame; the source
   cross-entropy runs at every step; the temporal loss ties the student's own predictions of t
   and t-k (the ETC recipe's TL, on the target clips).
3. The share of each class in the predictions on a held-out part of the footage is checked every
   ``check_every`` steps: a class that vanishes or swallows the frame stops the run, and the last
   healthy checkpoint is the result. Model selection reads no target labels: it is the latest
   healthy checkpoint.

Writes ``<out>/student_adapted.safetensors`` (+ ``.onnx``), ``<out>/teacher_adapted.safetensors``
when the teacher was adapted, and a report (``--report-dir``, default ``<out>/report``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from etc_ros.checkpoint import CheckpointError, CheckpointMeta, load_model, save_checkpoint
from etc_ros.errors import one_line
from etc_ros.export_onnx import export as export_onnx
from etc_ros.preprocess import resize_image
from etc_ros.resources import DEFAULT_MODEL, resource
from etc_ros.sources import SourceError, open_dataset
from etc_ros.temporal import DIS_PRESETS, occlusion_mask
from training.adapt_method import (
    ClassThresholds,
    CollapseGuard,
    MeanTeacher,
    StrongAugment,
    TargetPairs,
    class_shares,
    classmix,
    pseudo_ce,
    warped_pseudo_labels,
)
from training.adapt_report import evaluate_labelled, write_report
from training.config import ConfigError, as_json, coerce_config, load_yaml, parse_sets
from training.datasets import LAYOUTS, ClipDataset, DatasetError, load_sequences, read_rgb
from training.footage import (
    FootageClip,
    FootageError,
    FootageSpec,
    cache_footage_flows,
    check_sources,
    parse_ranges,
    prepare_footage,
)
from training.losses import (
    pf_loss,
    pixel_kd_loss,
    segmentation_loss,
    structured_loss,
    temporal_loss,
)
from training.run_state import STATE_JSON, MetricsLog, load_state, save_state
from training.transforms import TrainTransform, normalize

PSEUDO_SOURCES = ("student", "teacher", "agree")
ADAPT_TERMS = ("source_ce", "pseudo", "temporal", "kd", "pf", "structured")
DISTILL_TERMS = ("kd", "pf", "structured")
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "adapt" / "default.yaml"
HELDOUT_FRAMES = 48  # guard monitor: evenly spaced held-out frames per source, at most


@dataclass(frozen=True)
class AdaptConfig:
    """Every knob of an adaptation run (sizes are (height, width))."""

    student_checkpoint: str = str(DEFAULT_MODEL)
    teacher_checkpoint: str | None = str(resource("weights", "teacher.safetensors"))
    pseudo_source: str = "student"  # student | teacher | agree
    # labelled source data (any layout training.train reads)
    dataset: str = "generic"
    data_root: str = "data/synthetic"
    train_split: str = "train"
    scale_range: tuple[float, float] = (0.75, 1.5)
    color_jitter: float = 0.3
    # footage
    max_frames: int | None = 600  # per source, after --exclude and frame_stride
    frame_stride: int = 1
    holdout_share: float = 0.1  # the last part of each source: the guard's monitor frames
    max_offset: int = 2  # pseudo-labels come from t-k, k in 1..max_offset
    flow_preset: str = "medium"
    # method
    loss_weights: dict[str, float] = field(default_factory=lambda: {
        "source_ce": 1.0, "pseudo": 1.0, "temporal": 0.1, "kd": 0.1, "pf": 1.0,
        "structured": 1.0})
    pseudo_threshold: float = 0.9
    class_quantile: float = 0.5  # per-class threshold: min(pseudo_threshold, this quantile)
    classmix_prob: float = 0.5
    ema_decay: float = 0.99
    strong_jitter: float = 0.4
    strong_hue: float = 0.05
    strong_grayscale_prob: float = 0.2
    strong_blur_prob: float = 0.5
    strong_noise_std: float = 6.0
    temperature: float = 1.0
    affinity_grid: tuple[int, int] = (8, 16)
    aux_weight: float = 0.4
    # optimisation
    source_batch: int = 4
    target_batch: int = 4
    teacher_batch: int = 2  # source and target batch of the teacher's phase
    # the teacher's input size during adaptation (None: its checkpoint's); the CPU recipe runs
    # it at the student's 128x256, a quarter of its own pixels
    teacher_size: tuple[int, int] | None = None
    iters: int = 300
    teacher_iters: int = 100
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 0.0005
    poly_power: float = 0.9
    workers: int = 1  # data loader processes per loader
    flow_workers: int = 2  # processes computing the footage's DIS flow
    seed: int = 0
    # the collapse guard (training.adapt_method.CollapseGuard)
    check_every: int = 50
    guard_min_share: float = 0.01
    guard_vanish_ratio: float = 0.1
    guard_swallow_share: float = 0.6
    guard_swallow_growth: float = 0.25

    @property
    def adapts_teacher(self) -> bool:
        return self.pseudo_source in ("teacher", "agree")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: AdaptConfig) -> None:
    """Cross-field checks before any work."""
    _check(cfg.pseudo_source in PSEUDO_SOURCES,
           f"pseudo_source must be one of {list(PSEUDO_SOURCES)}, got {cfg.pseudo_source!r}")
    _check(not cfg.adapts_teacher or cfg.teacher_checkpoint is not None,
           f"pseudo_source {cfg.pseudo_source} needs teacher_checkpoint (--teacher)")
    _check(cfg.dataset in LAYOUTS, f"dataset {cfg.dataset!r} unknown; choose one of {LAYOUTS}")
    unknown = sorted(set(cfg.loss_weights) - set(ADAPT_TERMS))
    _check(not unknown, f"unknown loss_weights key(s) {unknown}; valid: {list(ADAPT_TERMS)}")
    _check(all(v >= 0 for v in cfg.loss_weights.values()), "loss weights must be >= 0")
    _check(cfg.max_offset >= 1 and cfg.frame_stride >= 1, "max_offset, frame_stride must be >= 1")
    _check(cfg.max_frames is None or cfg.max_frames >= cfg.max_offset + 2,
           "max_frames must leave room for a clip")
    _check(0 < cfg.holdout_share < 0.5, "holdout_share must be in (0, 0.5)")
    _check(0 < cfg.pseudo_threshold <= 1 and 0 <= cfg.class_quantile <= 1,
           "pseudo_threshold must be in (0, 1], class_quantile in [0, 1]")
    _check(0 <= cfg.classmix_prob <= 1 and 0 <= cfg.ema_decay < 1,
           "classmix_prob must be in [0, 1], ema_decay in [0, 1)")
    _check(min(cfg.source_batch, cfg.target_batch, cfg.teacher_batch) >= 1,
           "source_batch, target_batch and teacher_batch must be >= 1")
    _check(cfg.iters >= 1 and cfg.teacher_iters >= 1 and cfg.check_every >= 1,
           "iters, teacher_iters and check_every must be >= 1")
    _check(cfg.lr > 0 and cfg.workers >= 0 and cfg.flow_workers >= 1,
           "lr must be > 0, workers >= 0 and flow_workers >= 1")
    _check(cfg.flow_preset in DIS_PRESETS,
           f"flow_preset must be one of {sorted(DIS_PRESETS)}, got {cfg.flow_preset!r}")
    _check(cfg.temperature > 0, "temperature must be > 0")


def load_adapt_config(path: Path, overrides: dict[str, Any]) -> AdaptConfig:
    """The YAML (with its ``base`` chain) and the overrides, checked."""
    raw = {**load_yaml(path), **overrides}
    cfg = coerce_config(AdaptConfig, raw, str(path))
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# one self-training phase (the teacher's, then the student's)


@dataclass
class Phase:
    """A model being adapted and where its labels and distillation targets come from."""

    name: str  # "teacher" | "student"
    model: nn.Module
    meta: CheckpointMeta
    iters: int
    labeller: str  # "ema" | "teacher" | "agree"
    teacher: nn.Module | None = None  # the adapted, frozen teacher (labels and/or distillation)
    teacher_size: tuple[int, int] | None = None
    distill: bool = False


@dataclass
class PhaseResult:
    """What a phase leaves: the selected weights and the guard's record."""

    checkpoint: Path
    selected_step: int
    stopped: str | None
    history: list[dict[str, Any]]
    base_shares: list[float]
    seconds: float


def _infinite(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def _heldout_frames(clips: list[FootageClip], size: tuple[int, int]) -> torch.Tensor:
    frames = []
    for clip in clips:
        idx = clip.heldout
        if len(idx) > HELDOUT_FRAMES:
            idx = [idx[i] for i in np.linspace(0, len(idx) - 1, HELDOUT_FRAMES).round().astype(int)]
        frames += [resize_image(read_rgb(clip.files[i]), size) for i in idx]
    return normalize(frames)


def _split(out: Any, sizes: list[int]) -> list[Any]:
    parts = [x.split(sizes) if x is not None else [None] * len(sizes) for x in out]
    return [type(out)(*p) for p in zip(*parts, strict=True)]


class Adapter:
    """Runs the phases of one adaptation: shared data, device, logging and the guard."""

    def __init__(self, cfg: AdaptConfig, clips: list[FootageClip], out: Path,
                 device: torch.device, resume: bool) -> None:
        self.cfg, self.clips, self.out, self.device, self.resume = cfg, clips, out, device, resume
        self.guard = CollapseGuard(cfg.guard_min_share, cfg.guard_vanish_ratio,
                                   cfg.guard_swallow_share, cfg.guard_swallow_growth)
        self.strong = StrongAugment(cfg.strong_jitter, cfg.strong_hue, cfg.strong_grayscale_prob,
                                    cfg.strong_blur_prob, cfg.strong_noise_std)
        self.source_seqs = load_sequences(cfg.data_root, cfg.train_split, cfg.dataset)

    def _loaders(self, phase: Phase) -> tuple[Iterator, Iterator]:
        cfg, size = self.cfg, tuple(phase.meta.input_size)
        transform = TrainTransform(size, size, cfg.scale_range, 0.5, cfg.color_jitter)
        source = ClipDataset(self.source_seqs, phase.meta.num_classes, 1, 1, transform, False)
        target = TargetPairs(self.clips, cfg.max_offset, size, self.strong, phase.teacher_size)
        gen = torch.Generator().manual_seed(cfg.seed)
        kw = {"num_workers": cfg.workers, "drop_last": True, "generator": gen,
              "persistent_workers": cfg.workers > 0}
        batches = ((cfg.teacher_batch, cfg.teacher_batch) if phase.name == "teacher"
                   else (cfg.source_batch, cfg.target_batch))
        if len(target) < batches[1]:
            raise FootageError(f"only {len(target)} target clips for a batch of {batches[1]}")
        return (_infinite(DataLoader(source, batches[0], shuffle=True, **kw)),
                _infinite(DataLoader(target, batches[1], shuffle=True, **kw)))

    @torch.no_grad()
    def _pseudo_labels(self, phase: Phase, ema: MeanTeacher | None, tgt: dict,
                       teacher_s: torch.Tensor | None, thresholds: ClassThresholds
                       ) -> torch.Tensor:
        """Labels of frame t from the labeller's view of t-k (``teacher_s``: the adapted
        teacher's logits of t-k at the student's size)."""
        fw, bw = tgt["flow_fw"], tgt["flow_bw"]
        labels = []
        if phase.labeller in ("ema", "agree"):
            labels.append(warped_pseudo_labels(ema.model(tgt["weak_s"]).softmax(1), fw, bw))
        if phase.labeller in ("teacher", "agree"):
            labels.append(warped_pseudo_labels(teacher_s.softmax(1), fw, bw))
        conf, label, valid = labels[0]
        if len(labels) == 2:  # agree: both labellers name the same class
            conf2, label2, valid2 = labels[1]
            valid = valid & valid2 & (label == label2)
            conf = torch.minimum(conf, conf2)
        thresholds.update(conf.cpu(), label.cpu(), valid.cpu())
        return thresholds.apply(conf, label, valid)

    def _step_loss(self, phase: Phase, ema: MeanTeacher | None, src: dict, tgt: dict,
                   thresholds: ClassThresholds, gen: torch.Generator
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, w = self.cfg, self.cfg.loss_weights
        teacher = None  # the adapted teacher on t and t-k, once for labels and distillation
        if phase.teacher is not None:
            with torch.no_grad():
                t_out = phase.teacher.forward_train(torch.cat([tgt["teacher_t"],
                                                               tgt["teacher_s"]]))
            size = tuple(phase.meta.input_size)
            teacher = [(F.interpolate(x.logits, size=size, mode="bilinear",
                                      align_corners=False), x.features)
                       for x in _split(t_out, [len(tgt["teacher_t"])] * 2)]
        pseudo = self._pseudo_labels(phase, ema, tgt, None if teacher is None
                                     else teacher[1][0], thresholds)
        src_img, src_label = src["images"][:, 0], src["label"]
        mixed, pseudo, pasted = classmix(tgt["strong_t"], pseudo, src_img, src_label, gen,
                                         cfg.classmix_prob)
        b_src, b_tgt = src_img.shape[0], mixed.shape[0]
        out = phase.model.forward_train(torch.cat([src_img, mixed, tgt["weak_s"]]))
        o_src, o_t, o_s = _split(out, [b_src, b_tgt, b_tgt])
        parts: dict[str, torch.Tensor] = {}
        if w.get("source_ce", 0) > 0:
            parts["source_ce"] = segmentation_loss(o_src.logits, src_label, o_src.aux_logits,
                                                   cfg.aux_weight)
        if w.get("pseudo", 0) > 0:
            parts["pseudo"] = pseudo_ce(o_t.logits, pseudo)
        keep = (~pasted)[:, None].float()
        if w.get("temporal", 0) > 0:
            mask = occlusion_mask(tgt["weak_t"], tgt["weak_s"], tgt["flow_fw"], tgt["flow_bw"])
            parts["temporal"] = temporal_loss(o_t.logits, o_s.logits, tgt["flow_fw"],
                                              mask=mask * keep)
        if phase.distill and teacher is not None:
            (t_logits, t_feat), (s_logits, s_feat) = teacher
            if w.get("kd", 0) > 0:
                parts["kd"] = 0.5 * (pixel_kd_loss(o_t.logits, t_logits, cfg.temperature, keep)
                                     + pixel_kd_loss(o_s.logits, s_logits, cfg.temperature))
            if w.get("pf", 0) > 0:
                parts["pf"] = pf_loss(o_t.features, o_s.features, t_feat, s_feat,
                                      cfg.affinity_grid)
            if w.get("structured", 0) > 0:
                parts["structured"] = 0.5 * (
                    structured_loss(o_t.features, t_feat, cfg.affinity_grid)
                    + structured_loss(o_s.features, s_feat, cfg.affinity_grid))
        total = sum(w[k] * v for k, v in parts.items())
        logged = {k: float(v.detach()) for k, v in parts.items()}
        logged["pseudo_kept"] = float((pseudo != 255).float().mean())
        return total, logged

    def run(self, phase: Phase) -> PhaseResult:
        """Self-train ``phase.model``; returns the latest healthy checkpoint (the guard's pick)."""
        cfg, device = self.cfg, self.device
        run_dir = self.out / phase.name
        run_dir.mkdir(parents=True, exist_ok=True)
        done = run_dir / "result.json"
        if done.is_file() and self.resume:
            saved = json.loads(done.read_text())
            return PhaseResult(**{**saved, "checkpoint": Path(saved["checkpoint"])})
        if not self.resume and (run_dir / STATE_JSON).exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it "
                              "or choose another --out")
        start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        model = phase.model.to(device)
        names = phase.meta.class_names
        heldout = _heldout_frames(self.clips, tuple(phase.meta.input_size))
        base = class_shares(model, heldout, len(names), device)
        healthy = run_dir / "healthy.safetensors"
        ema = MeanTeacher(model, cfg.ema_decay) if phase.labeller in ("ema", "agree") else None
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        thresholds = ClassThresholds(len(names), cfg.pseudo_threshold, cfg.class_quantile)
        modules = {"model": model, **({"ema": ema.model} if ema else {})}
        config = {**as_json(cfg), "phase": phase.name}
        step, selected, history = 0, 0, [{"step": 0, "shares": base.tolist()}]
        if self.resume and (run_dir / STATE_JSON).exists():
            state = load_state(run_dir, modules, optimizer, scaler, config)
            step, selected, history = state["step"], state["selected_step"], state["history"]
            thresholds.values = torch.tensor(state["thresholds"])
        else:
            save_checkpoint(healthy, model.state_dict(), phase.meta)
        sources, targets = self._loaders(phase)
        gen = torch.Generator().manual_seed(cfg.seed + 17)
        log = MetricsLog(run_dir)
        stopped = None
        model.train()
        if phase.teacher is not None:
            phase.teacher.to(device).eval()
        bar = tqdm(range(step, phase.iters), initial=step, total=phase.iters,
                   desc=f"adapt {phase.name}")
        for step in bar:
            lr = cfg.lr * (1 - step / phase.iters) ** cfg.poly_power
            for group in optimizer.param_groups:
                group["lr"] = lr
            src = {k: v.to(device) for k, v in next(sources).items()}
            tgt = {k: v.to(device) for k, v in next(targets).items()}
            loss, parts = self._step_loss(phase, ema, src, tgt, thresholds, gen)
            if not torch.isfinite(loss):
                stopped = f"loss is {loss.item()} at step {step}"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            bar.set_postfix(loss=f"{loss.item():.3f}", kept=f"{parts['pseudo_kept']:.2f}")
            log.write(step + 1, {f"train/{k}": v for k, v in parts.items()})
            if (step + 1) % cfg.check_every == 0 or step + 1 == phase.iters:
                shares = class_shares(model, heldout, len(names), device)
                history.append({"step": step + 1, "shares": shares.tolist()})
                log.write(step + 1, {f"share/{names[c]}": float(s) for c, s in enumerate(shares)})
                stopped = self.guard.check(base, shares, names)
                if stopped is not None:
                    stopped = f"step {step + 1}: {stopped}"
                    break
                selected = step + 1
                save_checkpoint(healthy, model.state_dict(), phase.meta)
                save_state(run_dir, step + 1, modules, optimizer, scaler, config,
                           {"selected_step": selected, "history": history,
                            "thresholds": thresholds.values.tolist()})
        bar.close()
        log.close()
        if stopped is not None:
            bar.write(f"adapt {phase.name}: stopped at {stopped}; keeping step {selected}")
        result = PhaseResult(healthy, selected, stopped, history, base.tolist(),
                             time.perf_counter() - start)
        done.write_text(json.dumps({**dataclasses.asdict(result), "checkpoint": str(healthy)}))
        return result


def _adapted_meta(meta: CheckpointMeta, cfg: AdaptConfig, clips: list[FootageClip],
                  result: PhaseResult, name: str) -> CheckpointMeta:
    """The unadapted model's metadata plus what adaptation used and chose."""
    adaptation = {"config": as_json(cfg), "footage": [c.describe() for c in clips],
                  "selected_step": result.selected_step, "stopped": result.stopped,
                  "selection": "latest checkpoint the collapse guard passed (no target labels)"}
    recipe = {**meta.recipe, "adaptation": adaptation, "adapted_from": name}
    return dataclasses.replace(meta, recipe=recipe)


def adapt(cfg: AdaptConfig, specs: list[FootageSpec], exclude: list[tuple[int, int | None]],
          out: Path, report_dir: Path, device: str, resume: bool,
          eval_data: tuple[str, str] | None = None) -> dict[str, Any]:
    """The whole run: footage, flows, phases, export, report. Returns the report's dict."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    check_sources(specs, cfg.max_offset + 2)  # bad footage is an error before any work
    student, student_meta = load_model(cfg.student_checkpoint, "cpu")
    teacher = teacher_meta = None
    if cfg.adapts_teacher:
        teacher, teacher_meta = load_model(cfg.teacher_checkpoint, "cpu")
        if teacher_meta.class_names != student_meta.class_names:
            raise ConfigError(f"teacher {cfg.teacher_checkpoint} and student "
                              f"{cfg.student_checkpoint} have different classes")
        if cfg.teacher_size is not None:
            teacher_meta = dataclasses.replace(teacher_meta, input_size=cfg.teacher_size)
    sizes = [tuple(student_meta.input_size)] + ([tuple(teacher_meta.input_size)]
                                                if teacher_meta else [])
    work_size = max(sizes, key=lambda s: s[0] * s[1])
    clips = prepare_footage(specs, out, work_size, exclude, cfg.holdout_share, cfg.max_frames,
                            cfg.frame_stride, cfg.max_offset)
    timings["footage"] = time.perf_counter() - start
    t0 = time.perf_counter()
    cache_footage_flows(clips, cfg.max_offset, cfg.flow_workers, cfg.flow_preset)
    timings["flow"] = time.perf_counter() - t0
    dev = torch.device(device)
    adapter = Adapter(cfg, clips, out, dev, resume)
    phases: dict[str, PhaseResult] = {}
    adapted_teacher = None
    if cfg.adapts_teacher:
        result = adapter.run(Phase("teacher", teacher, teacher_meta, cfg.teacher_iters, "ema"))
        phases["teacher"] = result
        timings["teacher"] = result.seconds
        adapted_teacher, _ = load_model(result.checkpoint, dev)
        save_checkpoint(out / "teacher_adapted.safetensors", adapted_teacher.state_dict(),
                        _adapted_meta(teacher_meta, cfg, clips, result, cfg.teacher_checkpoint),
                        half=True)
        adapted_teacher.requires_grad_(False)
    labeller = {"student": "ema", "teacher": "teacher", "agree": "agree"}[cfg.pseudo_source]
    result = adapter.run(Phase(
        "student", student, student_meta, cfg.iters, labeller, adapted_teacher,
        tuple(teacher_meta.input_size) if teacher_meta else None,
        distill=cfg.adapts_teacher and any(cfg.loss_weights.get(k, 0) > 0
                                           for k in DISTILL_TERMS)))
    phases["student"] = result
    timings["student"] = result.seconds
    adapted, _ = load_model(result.checkpoint, "cpu")
    final = out / "student_adapted.safetensors"
    save_checkpoint(final, adapted.state_dict(),  # fp16 on disk, as the shipped weights
                    _adapted_meta(student_meta, cfg, clips, result, cfg.student_checkpoint),
                    half=True)
    t0 = time.perf_counter()
    export_onnx(final, final.with_suffix(".onnx"), log=lambda *_: None)
    timings["export"] = time.perf_counter() - t0
    evaluation = None
    if eval_data is not None:
        before, _ = load_model(cfg.student_checkpoint, "cpu")
        evaluation = {"data_root": eval_data[0], "split": eval_data[1],
                      "before": evaluate_labelled(before, student_meta, *eval_data),
                      "after": evaluate_labelled(adapted, student_meta, *eval_data)}
    timings["total"] = time.perf_counter() - start
    report = {"student": str(final), "teacher": str(out / "teacher_adapted.safetensors")
              if cfg.adapts_teacher else None, "config": as_json(cfg),
              "footage": [c.describe() for c in clips], "class_names": student_meta.class_names,
              "phases": {k: {**dataclasses.asdict(v), "checkpoint": str(v.checkpoint)}
                         for k, v in phases.items()},
              "timings_s": timings, "evaluation": evaluation}
    write_report(report_dir, report, clips, cfg.student_checkpoint, final)
    return report


def _footage_specs(args: argparse.Namespace) -> list[FootageSpec]:
    bags, topics = args.bag, args.topic
    if bags and not topics:
        raise ConfigError("--bag needs --topic (the Image or CompressedImage topic)")
    if topics and not bags:
        raise ConfigError("--topic given without --bag")
    if len(topics) not in (1, len(bags)):
        raise ConfigError(f"give one --topic for all bags or one per --bag ({len(bags)} bags, "
                          f"{len(topics)} topics)")
    topics = topics * len(bags) if len(topics) == 1 else topics
    return ([FootageSpec("bag", b, t) for b, t in zip(bags, topics, strict=True)]
            + [FootageSpec("video", v) for v in args.video]
            + [FootageSpec("images", d) for d in args.images])


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; bad footage, config or data is one line and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m training.adapt",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bag", action="append", default=[], metavar="PATH",
                        help="rosbag2 (MCAP or sqlite3) with the camera's images; repeatable")
    parser.add_argument("--topic", action="append", default=[], metavar="T",
                        help="Image or CompressedImage topic: one for all bags or one per bag")
    parser.add_argument("--video", action="append", default=[], metavar="FILE",
                        help="video file; repeatable")
    parser.add_argument("--images", action="append", default=[], metavar="DIR",
                        help="folder of frames in time order (sorted by name); repeatable")
    parser.add_argument("--exclude", default="", metavar="RANGES",
                        help="source frame indices never used, e.g. 0-50,350-450,700- (kept "
                             "for evaluation)")
    parser.add_argument("--data-root", help="labelled source data (overrides data_root)")
    parser.add_argument("--student", help="student checkpoint to adapt (default: shipped)")
    parser.add_argument("--teacher", help="teacher checkpoint (default: shipped)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="YAML config (default training/configs/adapt/default.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, VALUE read as YAML (e.g. "
                             "pseudo_source=teacher, iters=300)")
    parser.add_argument("--max-iters", type=int, help="override iters")
    parser.add_argument("--out", type=Path, default=Path("runs/adapt"), help="run folder")
    parser.add_argument("--report-dir", type=Path, help="report folder (default <out>/report)")
    parser.add_argument("--eval-data-root", metavar="ROOT",
                        help="labelled target data: per-class IoU/recall before and after in "
                             "the report (never used for training or selection)")
    parser.add_argument("--eval-split", default="test", help="split of --eval-data-root")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    args = parser.parse_args(argv)
    try:
        overrides = parse_sets(args.set)
        for key, value in (("data_root", args.data_root), ("iters", args.max_iters),
                           ("student_checkpoint", args.student),
                           ("teacher_checkpoint", args.teacher)):
            if value is not None:
                overrides[key] = value
        cfg = load_adapt_config(args.config, overrides)
        if args.eval_data_root:  # a wrong path is found now, not after the training
            open_dataset(args.eval_data_root, args.eval_split)
        specs = _footage_specs(args)
        exclude = parse_ranges(args.exclude)
        args.out.mkdir(parents=True, exist_ok=True)
        report = adapt(cfg, specs, exclude, args.out, args.report_dir or args.out / "report",
                       args.device, args.resume,
                       (args.eval_data_root, args.eval_split) if args.eval_data_root else None)
    except (ConfigError, DatasetError, FootageError, CheckpointError, SourceError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    student = report["phases"]["student"]
    note = f" (stopped: {student['stopped']})" if student["stopped"] else ""
    print(f"adapted student: {report['student']} (step {student['selected_step']}{note}); "
          f"report: {args.report_dir or args.out / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
