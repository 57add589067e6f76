"""The adaptation report: the JSON behind every number, the collapse monitor plot, a strip of
held-out frames before and after, and per-class IoU/recall on labelled target data if given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from etc_ros.checkpoint import CheckpointMeta, load_model  # noqa: E402
from etc_ros.labels import colorize  # noqa: E402
from etc_ros.metrics import (  # noqa: E402
    accumulate_confusion,
    class_iou,
    class_recall,
    mean_iou,
    new_confusion,
)
from etc_ros.preprocess import resize_image, resize_labels  # noqa: E402
from etc_ros.sources import open_dataset  # noqa: E402
from training.datasets import read_rgb  # noqa: E402
from training.footage import FootageClip  # noqa: E402
from training.transforms import normalize  # noqa: E402

STRIP_FRAMES = 4


@torch.no_grad()
def predict(model: nn.Module, meta: CheckpointMeta, rgb: np.ndarray) -> np.ndarray:
    """Labels at the frame's own size, preprocessed as the node does."""
    x = normalize([resize_image(rgb, tuple(meta.input_size))], meta.mean, meta.std)
    pred = model(x).argmax(1)[0].numpy().astype(np.uint8)
    return resize_labels(pred, rgb.shape[:2])


def evaluate_labelled(model: nn.Module, meta: CheckpointMeta, root: str, split: str
                      ) -> dict[str, Any]:
    """mIoU, per-class IoU and recall (in %) on a labelled dataset in the generic layout."""
    model = model.float().eval()
    conf = new_confusion(meta.num_classes)
    for frame in open_dataset(root, split):
        if frame.rgb is None or frame.label is None:
            continue
        accumulate_confusion(conf, frame.label, predict(model, meta, frame.rgb))
    names = meta.class_names
    return {"miou": mean_iou(conf),
            "iou": dict(zip(names, class_iou(conf), strict=True)),
            "recall": dict(zip(names, class_recall(conf), strict=True))}


def _plot_shares(report: dict[str, Any], path: Path) -> None:
    """Per-class share of held-out predictions through each phase (the collapse monitor)."""
    names = report["class_names"]
    phases = report["phases"]
    fig, axes = plt.subplots(1, len(phases), figsize=(6.5 * len(phases), 4), squeeze=False)
    for ax, (name, phase) in zip(axes[0], phases.items(), strict=True):
        steps = [h["step"] for h in phase["history"]]
        shares = np.array([h["shares"] for h in phase["history"]]) * 100
        shown = [c for c in range(len(names)) if shares[:, c].max() >= 1.0]
        cmap = plt.get_cmap("tab20")
        for i, c in enumerate(shown):
            ax.plot(steps, shares[:, c], marker="o", ms=3, color=cmap(i % 20), label=names[c])
        if phase["stopped"]:
            ax.axvline(phase["selected_step"], color="k", ls="--", lw=1)
            ax.set_title(f"{name}: stopped, kept step {phase['selected_step']}", fontsize=10)
        else:
            ax.set_title(f"{name}: kept step {phase['selected_step']}", fontsize=10)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("% of held-out pixels")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _strip(clips: list[FootageClip], before: Path, after: Path, path: Path) -> None:
    """Held-out frames: image | unadapted | adapted, one row each."""
    models = [load_model(p, "cpu") for p in (before, after)]
    heldout = [(c, i) for c in clips for i in c.heldout]
    picks = [heldout[int(j)] for j in np.linspace(0, len(heldout) - 1,
                                                  min(STRIP_FRAMES, len(heldout))).round()]
    rows = []
    for clip, i in picks:
        rgb = read_rgb(clip.files[i])
        h, w = rgb.shape[:2]
        scale = 256 / w
        size = (max(1, round(h * scale)), 256)
        tiles = [resize_image(rgb, size)]
        for model, meta in models:
            pred = predict(model.float().eval(), meta, rgb)
            tiles.append(colorize(resize_labels(pred, size), np.asarray(meta.palette, np.uint8)))
        rows.append(np.hstack(tiles))
    fig, ax = plt.subplots(figsize=(9, 1 + 1.1 * len(rows)))
    ax.imshow(np.vstack(rows))
    ax.set_title("held-out frames: image | unadapted | adapted", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report_dir: Path, report: dict[str, Any], clips: list[FootageClip],
                 before: str | Path, after: Path) -> None:
    """report.json, shares.png, strip.png and report.md (a readable summary of the JSON)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    _plot_shares(report, report_dir / "shares.png")
    _strip(clips, Path(before), after, report_dir / "strip.png")
    lines = ["# Adaptation report", ""]
    for name, phase in report["phases"].items():
        state = f"stopped ({phase['stopped']})" if phase["stopped"] else "ran to the end"
        lines.append(f"- {name}: {state}; kept step {phase['selected_step']} "
                     f"({phase['seconds'] / 60:.1f} min)")
    lines.append("- time per stage (min): " + ", ".join(
        f"{k} {v / 60:.1f}" for k, v in report["timings_s"].items()))
    for f in report["footage"]:
        lines.append(f"- footage {f['path']}{' ' + f['topic'] if f['topic'] else ''}: "
                     f"{f['frames_train']} training, {f['frames_heldout']} held-out frames")
    evaluation = report.get("evaluation")
    if evaluation:
        lines += ["", f"## {evaluation['data_root']} ({evaluation['split']})", "",
                  f"mIoU {_fmt(evaluation['before']['miou'])} -> "
                  f"{_fmt(evaluation['after']['miou'])}", "",
                  "| class | IoU before | IoU after | recall before | recall after |",
                  "|---|---|---|---|---|"]
        for c in report["class_names"]:
            b, a = evaluation["before"], evaluation["after"]
            if b["recall"][c] is None and b["iou"][c] is None and a["iou"][c] is None:
                continue
            lines.append(f"| {c} | {_fmt(b['iou'][c])} | {_fmt(a['iou'][c])} | "
                         f"{_fmt(b['recall'][c])} | {_fmt(a['recall'][c])} |")
    lines += ["", "![class shares](shares.png)", "", "![held-out frames](strip.png)", ""]
    (report_dir / "report.md").write_text("\n".join(lines))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
