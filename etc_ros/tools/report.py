"""Human-readable evaluation report: markdown tables, plots and a side-by-side overlay video.

`evaluate` owns the numbers (the JSON); this module only presents them, so a team can look at a
run (which model flickers where, how latency is spread) without writing plotting code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # backend chosen first
import numpy as np

from etc_ros.labels import colorize, overlay

REPORT_NAME = "report.md"
TC_PLOT = "tc_per_frame.png"
LATENCY_PLOT = "latency_hist.png"
PER_CLASS_PLOT = "per_class.png"
TRADEOFF_PLOT = "accuracy_vs_latency.png"
VIDEO_NAME = "overlay.mp4"
STRIP_NAME = "strip.png"
TC_CSV = "tc_per_frame.csv"

# Panels wider than this are scaled down so the video stays small enough to share.
_MAX_PANEL_WIDTH = 640
_MAX_VIDEO_WIDTH = 4096
_CAPTION_HEIGHT = 28


@dataclass
class ModelSeries:
    """Per-frame raw data behind one model's summary numbers (not part of the JSON)."""

    name: str
    pair_frames: list[int] = field(default_factory=list)  # frame index t+1 of each scored pair
    tc_per_pair: list[tuple[int, float | None]] = field(default_factory=list)  # (t+1, TC %)
    tc_pixel_per_pair: list[tuple[int, float | None]] = field(default_factory=list)
    forward_ms: list[float] = field(default_factory=list)  # per-frame latency (ms)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any], figures: list[str], video: str | None) -> str:
    """Render the evaluate JSON as markdown: a models x metrics table and a per-class table."""
    models = results["models"]
    inp = results["input"]
    lines = ["# Evaluation report", ""]
    shown = (f"{k}={v}" for k, v in inp.items() if k != "skipped_reasons")
    lines.append("Input: " + ", ".join(shown))
    if inp.get("skipped"):
        reasons = "; ".join(f"{r} (x{n})" for r, n in inp.get("skipped_reasons", {}).items())
        lines.append("")
        lines.append(f"Skipped {inp['skipped']} corrupt frame(s): {reasons}")
    tc_classes = models[0].get("tc_classes", []) if models else []
    lines += [
        "",
        "| model | keyframe interval | frames | mIoU % | TC % | pixel TC % | latency p50 ms "
        "| p95 ms | max ms | FPS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        lat = m["latency_ms"]
        lines.append(
            f"| {m['name']} | {m.get('keyframe_interval') or 1} | {m['frames']} | "
            f"{_fmt(m['miou'])} | {_fmt(m['tc'])} | {_fmt(m.get('tc_pixel'))} | "
            f"{_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat.get('max'))} | "
            f"{_fmt(m['fps'], 1)} |"
        )
    lines += [
        "",
        (f"TC is averaged over the same {len(tc_classes)} classes for every row "
         f"({inp.get('tc_class_rule', 'one class set')}): {', '.join(tc_classes) or 'none'}. "
         "Per class it is the IoU between pred(t) and pred(t+1) warped into t with DIS flow "
         "(nearest neighbour; pixels leaving the frame or failing the forward-backward check "
         "excluded), accumulated over all pairs; a class of the set that a row never predicts "
         "scores 0. Pixel TC is the share of valid pixels whose class survives the warp (no "
         "class set). mIoU is the mean over the classes present in the ground truth. Latency is "
         "per frame, preprocessing + forward + postprocessing; keyframe rows (segment every K-th "
         "frame, carry labels to the others with DIS flow) include the flow time. "
         "FPS = 1000 / mean latency."),
        "",
        "## Per class",
        "",
    ]
    class_names: list[str] = []
    for m in models:
        class_names += [c for c in m["per_class"] if c not in class_names]
    header = "| class | " + " | ".join(f"{m['name']} IoU | {m['name']} TC" for m in models) + " |"
    lines += [header, "|---|" + "---:|---:|" * len(models)]
    for cname in class_names:
        cells = []
        for m in models:
            entry = m["per_class"].get(cname, {})
            cells += [_fmt(entry.get("iou")), _fmt(entry.get("tc"))]
        if any(c != "–" for c in cells):
            lines.append(f"| {cname} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += _mistakes_table(models, class_names)
    if figures:
        lines += ["## Plots", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
        lines += [f"Per-frame TC values: [{TC_CSV}]({TC_CSV})", ""]
    if video:
        lines += [f"Side-by-side overlay video: [{video}]({video})", "",
                  f"![input and overlays of a few frames]({STRIP_NAME})", ""]
    return "\n".join(lines)


def _mistakes_table(models: list[dict[str, Any]], class_names: list[str]) -> list[str]:
    """Per labelled class: what each model predicts instead (recall first, then the mistakes)."""
    rows = []
    for cname in class_names:
        cells = []
        for m in models:
            entry = m["per_class"].get(cname, {})
            if entry.get("mistaken_for") is None:
                cells.append("–")
                continue
            wrong = ", ".join(f"{p} {v:.0f}" for p, v in entry["mistaken_for"].items())
            cells.append(f"{_fmt(entry.get('recall'), 0)} right" + (f"; {wrong}" if wrong else ""))
        if any(c != "–" for c in cells):
            rows.append(f"| {cname} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["## What each labelled class is predicted as", "",
            "% of the class's labelled pixels: predicted right (recall), then the other classes "
            "that take at least 1 % of them (up to three).", "",
            "| class | " + " | ".join(m["name"] for m in models) + " |",
            "|---|" + "---|" * len(models), *rows, ""]


def _broken_line(points: list[tuple[int, float | None]]) -> tuple[list[float], list[float]]:
    """x, y with NaN gaps at sequence boundaries and skipped frames."""
    xs: list[float] = []
    ys: list[float] = []
    for x, y in points:
        if xs and x - xs[-1] > 1:
            xs.append(np.nan)
            ys.append(np.nan)
        xs.append(x)
        ys.append(np.nan if y is None else y)
    return xs, ys


def plot_tc_per_frame(series: list[ModelSeries], path: Path) -> None:
    """Per-pair TC (over the run's class set) beside pixel TC: dips show where a model flickers."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), sharey=True)
    for ax, attr, title in ((axes[0], "tc_per_pair", "TC % (class set)"),
                            (axes[1], "tc_pixel_per_pair", "pixel TC %")):
        for s in series:
            ax.plot(*_broken_line(getattr(s, attr)), label=s.name, linewidth=1.1)
        ax.set_xlabel("frame")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 102)  # a model at exactly 100 stays visible
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pair t-1, t")
    axes[1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_tradeoff(models: list[dict[str, Any]], series: list[ModelSeries], path: Path) -> None:
    """mIoU (TC without labels) against mean per-frame latency, one point per row.

    Error bars reach p95 and max latency: keyframe methods are cheap on average and slow on
    keyframes, which a mean alone hides.
    """
    metric = "miou" if any(m["miou"] is not None for m in models) else "tc"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, s in zip(models, series, strict=True):
        if m[metric] is None or not s.forward_ms:
            continue
        mean = float(np.mean(s.forward_ms))
        ax.errorbar([mean], [m[metric]], xerr=[[0], [m["latency_ms"]["max"] - mean]],
                    fmt="o", capsize=3, label=m["name"])
        ax.annotate(m["name"], (mean, m[metric]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_xlabel("mean per-frame latency (ms); bar to max")
    ax.set_ylabel("mIoU %" if metric == "miou" else "TC %")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency(series: list[ModelSeries], path: Path) -> None:
    """Histogram of per-frame latency: the tail matters for a robot, not just the mean."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = [v for s in series for v in s.forward_ms]
    bins = np.histogram_bin_edges(values, bins=30) if values else 10
    for s in series:
        if s.forward_ms:
            ax.hist(s.forward_ms, bins=bins, alpha=0.6, label=s.name)
    ax.set_xlabel("per-frame latency (ms)")
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_class(models: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars of per-class IoU and recall (when labels exist) and TC, one bar per model."""
    names: list[str] = []
    for m in models:
        names += [c for c in m["per_class"] if c not in names]
    metrics = [k for k in ("iou", "recall", "tc") if any(
        e.get(k) is not None for m in models for e in m["per_class"].values())]
    names = [c for c in names if any(
        m["per_class"].get(c, {}).get(k) is not None for m in models for k in metrics)]
    fig, axes = plt.subplots(max(len(metrics), 1), 1, figsize=(max(6, 0.5 * len(names) + 2), 3.2
                             * max(len(metrics), 1)), squeeze=False)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(names))
    for ax, metric in zip(axes[:, 0], metrics, strict=False):  # 1 axis if no metric
        for i, m in enumerate(models):
            vals = [m["per_class"].get(c, {}).get(metric) for c in names]
            ax.bar(x + i * width, [np.nan if v is None else v for v in vals], width,
                   label=m["name"])
        ax.set_ylabel(f"{metric.upper()} %")
        ax.set_ylim(0, 100)
        ax.set_xticks(x + width * (len(models) - 1) / 2, names, rotation=45, ha="right",
                      fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class SideBySideVideo:
    """Writes `input | model A | model B ...` overlay panels with captions to an mp4.

    The rows of the frames numbered in ``strip_frames`` (0-based, in order of ``add``) are also
    stacked into one image, ``strip.png`` beside the video: a glance at a run in a README.
    """

    def __init__(self, path: Path, captions: list[str], palettes: list[np.ndarray],
                 fps: float = 10.0, alpha: float = 0.5,
                 strip_frames: frozenset[int] = frozenset()) -> None:
        self.path = Path(path)
        self.strip_frames = strip_frames
        self._strip_rows: list[np.ndarray] = []
        self.captions = ["input"] + list(captions)
        self.palettes = palettes
        self.fps = fps
        self.alpha = alpha
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # panel (width, height)
        self.frames = 0

    def add(self, rgb: np.ndarray, labels: list[np.ndarray]) -> None:
        """Append one frame; every model's labels must have the frame's size."""
        if self._size is None:
            h, w = rgb.shape[:2]
            # mp4v refuses frames much wider than 8k: many models share the width.
            scale = min(1.0, _MAX_PANEL_WIDTH / w, _MAX_VIDEO_WIDTH / (w * len(self.captions)))
            # Even sizes keep common codecs and players happy.
            self._size = (max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2))
            pw, ph = self._size
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps,
                                           (pw * len(self.captions), ph + _CAPTION_HEIGHT))
            if not self._writer.isOpened():
                raise OSError(f"cannot open video writer for {self.path}")
        pw, ph = self._size
        panels = [rgb] + [overlay(rgb, colorize(lab, pal), self.alpha)
                          for lab, pal in zip(labels, self.palettes, strict=True)]
        row = []
        for img, caption in zip(panels, self.captions, strict=True):
            panel = cv2.resize(img, (pw, ph), interpolation=cv2.INTER_AREA)
            strip = np.zeros((_CAPTION_HEIGHT, pw, 3), np.uint8)
            cv2.putText(strip, caption[:40], (6, _CAPTION_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX,
                        0.55, (255, 255, 255), 1, cv2.LINE_AA)
            row.append(np.vstack([strip, panel]))
        assert self._writer is not None
        composed = cv2.cvtColor(np.hstack(row), cv2.COLOR_RGB2BGR)
        self._writer.write(composed)
        if self.frames in self.strip_frames:
            self._strip_rows.append(composed)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (the mp4 index is written here) and the strip image."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._strip_rows:
            cv2.imwrite(str(self.path.with_name(STRIP_NAME)), np.vstack(self._strip_rows))
            self._strip_rows = []


def write_tc_csv(series: list[ModelSeries], path: Path) -> None:
    """Per-pair TC numbers behind the plot (frame = index of the later frame of the pair)."""
    rows = ["model,frame,tc,tc_pixel"]
    for s in series:
        for (x, tc), (_, px) in zip(s.tc_per_pair, s.tc_pixel_per_pair, strict=True):
            rows.append(f"{s.name},{x},{'' if tc is None else f'{tc:.4f}'},"
                        f"{'' if px is None else f'{px:.4f}'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_report(results: dict[str, Any], series: list[ModelSeries], out_dir: Path,
                 video: str | None = None) -> Path:
    """Write plots and report.md into out_dir (the video is written by SideBySideVideo)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    if any(s.tc_per_pair for s in series):
        plot_tc_per_frame(series, out_dir / TC_PLOT)
        figures.append(TC_PLOT)
    plot_latency(series, out_dir / LATENCY_PLOT)
    figures.append(LATENCY_PLOT)
    plot_per_class(results["models"], out_dir / PER_CLASS_PLOT)
    figures.append(PER_CLASS_PLOT)
    plot_tradeoff(results["models"], series, out_dir / TRADEOFF_PLOT)
    figures.append(TRADEOFF_PLOT)
    write_tc_csv(series, out_dir / TC_CSV)
    path = out_dir / REPORT_NAME
    path.write_text(markdown(results, figures, video), encoding="utf-8")
    return path
