"""Human-readable evaluation report: markdown tables, plots and a side-by-side overlay video.

`evaluate` owns the numbers (the JSON); this module only presents them, so a team can look at a
run (which model flickers where, how latency is spread) without writing plotting code.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # backend chosen first
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from etc_ros.cli import EXIT_USAGE, Parser, fail
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
    ]
    if len(summarize(models)) < len(models):
        lines += ["## By method", "",
                  "Rows grouped by method (the name without its seed suffix) and keyframe "
                  "interval: mean of the rows, their range in brackets.", "",
                  summary_table(models), ""]
    lines += [
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


# -- grouping: rows of one method (seeds, keyframe variants) are compared as one ---------------

_KF = re.compile(r"@kf(\d+)$")
_SEED = re.compile(r"[_-]s(?:eed)?\d+$")
# Known methods by a word in the row name; their colours stay the same in every plot.
# The teacher first: a "teacher_etc" row is a teacher.
_METHODS = (("teacher", "teacher", "tab:gray"), ("etc", "ETC", "tab:red"),
            ("tl", "TL", "tab:blue"), ("baseline", "baseline", "tab:green"))
_LEGEND_ORDER = ("baseline", "TL", "ETC", "teacher")
# Other names: the rest of tab10, then tab20's light shades (16 before a colour repeats).
_OTHER_COLOURS = ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                  *(matplotlib.colormaps["tab20"](i) for i in range(1, 20, 2)))
_MARKERS = ("o", "s", "^", "D", "v", "P")  # per-frame rows first, then each keyframe interval


def base_name(name: str) -> str:
    """A row's name without its keyframe and seed suffixes: student_etc_s1@kf5 -> student_etc."""
    return _SEED.sub("", _KF.sub("", name))


def method_of(name: str) -> str:
    """The known method a row belongs to by a word of its name (student_etc_s1 -> ETC), else
    its base name."""
    base = base_name(name)
    words = set(re.split(r"[^a-z0-9]+", base.lower()))
    for word, label, _ in _METHODS:
        if word in words:
            return label
    return base


def keyframe_interval(row: dict[str, Any]) -> int:
    """1 for a per-frame row, K for a row that segments every K-th frame (`<name>@kf<K>`)."""
    match = _KF.search(row["name"])
    return int(row.get("keyframe_interval") or (match.group(1) if match else 1))


@dataclass
class MethodSummary:
    """One method at one keyframe interval: the mean over its rows (seeds) and their spread."""

    method: str
    interval: int
    rows: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return self.method if self.interval == 1 else f"{self.method} @kf{self.interval}"

    def values(self, get: Callable[[dict[str, Any]], float | None]) -> list[float]:
        return [v for v in (get(r) for r in self.rows) if v is not None]

    def stat(self, get: Callable[[dict[str, Any]], float | None]) -> tuple[float, float, float]:
        """(mean, min, max) over the rows; NaN when no row has the value."""
        vals = self.values(get)
        if not vals:
            return (np.nan, np.nan, np.nan)
        return (float(np.mean(vals)), float(min(vals)), float(max(vals)))


def _mean_latency(row: dict[str, Any]) -> float | None:
    """Mean per-frame latency in ms, from the JSON's FPS (= 1000 / mean latency)."""
    return 1000.0 / row["fps"] if row.get("fps") else None


def group_names(models: list[dict[str, Any]]) -> dict[str, str]:
    """Row name -> its group: the method (ETC, TL, ...) when each method has one base name in
    the run, else the base name (two releases' ETC students stay apart)."""
    bases = {m["name"]: base_name(m["name"]) for m in models}
    methods = {b: method_of(b) for b in bases.values()}
    unique = len(set(methods.values())) == len(methods)
    return {n: methods[b] if unique else b for n, b in bases.items()}


def summarize(models: list[dict[str, Any]]) -> list[MethodSummary]:
    """Rows grouped by (method, keyframe interval), in order of first appearance."""
    group = group_names(models)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in models:
        groups.setdefault((group[row["name"]], keyframe_interval(row)), []).append(row)
    return [MethodSummary(m, k, rows) for (m, k), rows in groups.items()]


def _colours(groups: list[MethodSummary]) -> dict[str, str]:
    """One colour per method, the known ones in a fixed order (the legend's)."""
    colour = {label: c for _, label, c in _METHODS}
    known = {label: colour[label] for label in _LEGEND_ORDER}
    others = [g.method for g in groups if g.method not in known]
    others = list(dict.fromkeys(others))
    return {**known, **{m: _OTHER_COLOURS[i % len(_OTHER_COLOURS)] for i, m in enumerate(others)}}


def _markers(groups: list[MethodSummary]) -> dict[int, str]:
    intervals = sorted({g.interval for g in groups})
    return {k: _MARKERS[i % len(_MARKERS)] for i, k in enumerate(intervals)}


def _line_styles(groups: list[MethodSummary]) -> dict[int, str]:
    """Solid for per-frame rows, then dashed, dotted, dash-dot for each keyframe interval."""
    intervals = sorted({g.interval for g in groups})
    return {k: ("-", "--", ":", "-.")[i % 4] for i, k in enumerate(intervals)}


def summary_table(models: list[dict[str, Any]]) -> str:
    """Markdown: one line per method and keyframe interval, mean of its rows with their range."""
    lines = ["| method | rows | mIoU % | TC % | pixel TC % | mean latency ms "
             "| p50 / p95 / max ms |", "|---|---:|---:|---:|---:|---:|---|"]

    def cell(g: MethodSummary, key: str) -> str:
        mean, lo, hi = g.stat(lambda r: r.get(key))
        if np.isnan(mean):
            return "–"
        return f"{mean:.2f}" if len(g.rows) == 1 else f"{mean:.2f} ({lo:.2f}–{hi:.2f})"

    for g in summarize(models):
        lat = [f"{g.stat(lambda r, q=q: r['latency_ms'].get(q))[0]:.1f}" for q in
               ("p50", "p95", "max")]
        lines.append(f"| {g.label} | {len(g.rows)} | {cell(g, 'miou')} | {cell(g, 'tc')} | "
                     f"{cell(g, 'tc_pixel')} | {g.stat(_mean_latency)[0]:.1f} | "
                     f"{' / '.join(lat)} |")
    return "\n".join(lines)


def _legend_outside(ax: plt.Axes, handles: list[Any] | None = None, **kw: Any) -> None:
    if handles is None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, **kw)
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False, **kw)


# -- plots -----------------------------------------------------------------------------------------
# Each plot_* saves its PNG and returns the still open figure (tests read it); callers close it.


def _finish(fig: Figure, path: Path) -> Figure:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def chosen_series(models: list[dict[str, Any]], series: list[ModelSeries],
                  limit: int = 6) -> list[tuple[str, ModelSeries]]:
    """A few rows a reader can tell apart: the first row (seed) of each method, per-frame first."""
    by_name = {s.name: s for s in series}
    groups = sorted(summarize(models), key=lambda g: g.interval != 1)
    picked = [(g.label, by_name[g.rows[0]["name"]]) for g in groups
              if g.rows[0]["name"] in by_name]
    return picked[:limit]


def _rolling(points: list[tuple[int, float | None]], window: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling mean over the last `window` scored pairs (pairs without a value are skipped)."""
    pts = [(x, y) for x, y in points if y is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs = np.array([x for x, _ in pts], np.float64)
    ys = np.array([y for _, y in pts], np.float64)
    w = max(1, min(window, len(ys)))
    csum = np.concatenate([[0.0], np.cumsum(ys)])
    counts = np.minimum(np.arange(1, len(ys) + 1), w)
    starts = np.arange(len(ys)) + 1 - counts
    return xs, (csum[1:] - csum[starts]) / counts


def plot_tc_per_frame(models: list[dict[str, Any]], series: list[ModelSeries], path: Path,
                      window: int = 24) -> Figure:
    """Rolling mean of per-pair TC beside pixel TC for a few rows: where a method flickers."""
    picked = chosen_series(models, series)
    group = group_names(models)
    groups = summarize(models)
    colours, styles = _colours(groups), _line_styles(groups)
    interval = {g.label: g.interval for g in groups}
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), sharey=True)
    for ax, attr, title in ((axes[0], "tc_per_pair", "TC % (class set)"),
                            (axes[1], "tc_pixel_per_pair", "pixel TC %")):
        for label, s in picked:
            xs, ys = _rolling(getattr(s, attr), window)
            ax.plot(xs, ys, styles.get(interval[label], "-"), linewidth=1.3,
                    color=colours[group[s.name]], label=f"{label} ({s.name})")
        ax.set_xlabel("frame")
        ax.set_title(f"{title}, rolling mean of {window} pairs", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pair t-1, t")
    _legend_outside(axes[1])
    return _finish(fig, path)


def plot_tradeoff(models: list[dict[str, Any]], path: Path) -> Figure:
    """mIoU (TC without labels) against mean per-frame latency, one point per method.

    Points are the mean of the method's rows (seeds), vertical bars their range; the thin
    horizontal line reaches the rows' mean p95: keyframe methods are cheap on average and slow
    on keyframes, which a mean alone hides.
    """
    metric = "miou" if any(m["miou"] is not None for m in models) else "tc"
    groups = [g for g in summarize(models) if g.values(lambda r: r[metric])
              and g.values(_mean_latency)]
    colours, markers = _colours(groups), _markers(groups)
    methods = list(colours)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for g in groups:
        y, lo, hi = g.stat(lambda r: r[metric])
        # Methods of one network share a latency: nudge them apart (3 % a step on the log axis).
        x = g.stat(_mean_latency)[0] * 1.03 ** (methods.index(g.method) - len(methods) / 2)
        p95 = g.stat(lambda r: r["latency_ms"].get("p95"))[0]
        colour = colours[g.method]
        if not np.isnan(p95) and p95 > x:
            ax.plot([x, p95], [y, y], color=colour, linewidth=0.8, alpha=0.5)
        ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt=markers[g.interval], color=colour,
                    capsize=3, markersize=7)
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25"
                                               else ""))
    ax.set_xlabel("mean per-frame latency (ms, log; methods nudged apart); thin line to p95")
    ax.set_ylabel(("mIoU %" if metric == "miou" else "TC %") + "; bar: range over seeds")
    ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=m)
               for m, c in colours.items() if any(g.method == m for g in groups)]
    handles += [Line2D([], [], color="black", marker=mk, linestyle="",
                       label="per frame" if k == 1 else f"keyframe every {k}")
                for k, mk in markers.items()]
    _legend_outside(ax, handles)
    return _finish(fig, path)


def plot_latency(models: list[dict[str, Any]], series: list[ModelSeries], path: Path) -> Figure:
    """Histogram of per-frame latency for a few rows: the tail matters for a robot."""
    picked = chosen_series(models, series)
    group = group_names(models)
    groups = summarize(models)
    colours, styles = _colours(groups), _line_styles(groups)
    interval = {g.label: g.interval for g in groups}
    fig, ax = plt.subplots(figsize=(8, 3.5))
    values = [v for _, s in picked for v in s.forward_ms if v > 0]
    bins = np.geomspace(min(values), max(values) * 1.01, 40) if values else 10
    for label, s in picked:
        if s.forward_ms:
            ax.hist(s.forward_ms, bins=bins, histtype="step", linewidth=1.3,
                    linestyle=styles[interval[label]], color=colours[group[s.name]],
                    label=f"{label} ({s.name})")
    if values:
        ax.set_xscale("log")
    ax.set_xlabel("per-frame latency (ms, log)")
    ax.set_ylabel("frames")
    _legend_outside(ax)
    return _finish(fig, path)


def plot_per_class(models: list[dict[str, Any]], path: Path) -> Figure:
    """Per-class IoU and recall (when labels exist) and TC: one bar per method, mean of seeds.

    Keyframe rows are left out when per-frame rows exist (they are the same networks).
    """
    groups = summarize(models)
    if any(g.interval == 1 for g in groups):
        groups = [g for g in groups if g.interval == 1]
    colours = _colours(groups)
    groups.sort(key=lambda g: (list(colours).index(g.method), g.interval))  # the legend's order
    names: list[str] = []
    for m in models:
        names += [c for c in m["per_class"] if c not in names]
    metrics = [k for k in ("iou", "recall", "tc") if any(
        e.get(k) is not None for m in models for e in m["per_class"].values())]
    names = [c for c in names if any(
        m["per_class"].get(c, {}).get(k) is not None for m in models for k in metrics)]
    rows = max(len(metrics), 1)
    fig, axes = plt.subplots(rows, 1, figsize=(max(8, 0.55 * len(names) + 3), 3.0 * rows),
                             squeeze=False, sharex=True)
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(names))
    for ax, metric in zip(axes[:, 0], metrics, strict=False):  # 1 axis if no metric
        for i, g in enumerate(groups):
            stats = [g.stat(lambda r, c=c, k=metric: r["per_class"].get(c, {}).get(k))
                     for c in names]
            mean = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
            ax.bar(x + i * width, mean, width, color=colours[g.method], label=g.label,
                   yerr=err if len(g.rows) > 1 else None, error_kw={"linewidth": 0.7})
        ax.set_ylabel({"iou": "IoU %", "recall": "recall %", "tc": "TC %"}[metric])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3, axis="y")
    bottom = axes[-1, 0]
    bottom.set_xticks(x + width * (len(groups) - 1) / 2, names, rotation=45, ha="right",
                      fontsize=8)
    _legend_outside(axes[0, 0], title="mean of seeds; bar: range")
    return _finish(fig, path)


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


def read_tc_csv(path: Path) -> list[ModelSeries]:
    """The per-pair TC that write_tc_csv wrote, back as series (for plots made later)."""
    series: dict[str, ModelSeries] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "model,frame,tc,tc_pixel":
        raise ValueError(f"{path}: not a {TC_CSV} (header model,frame,tc,tc_pixel)")
    for n, line in enumerate(lines[1:], start=2):
        try:
            name, frame, tc, px = line.rsplit(",", 3)
            s = series.setdefault(name, ModelSeries(name))
            s.tc_per_pair.append((int(frame), float(tc) if tc else None))
            s.tc_pixel_per_pair.append((int(frame), float(px) if px else None))
        except ValueError:
            raise ValueError(f"{path}:{n}: expected model,frame,tc,tc_pixel: {line!r}") from None
    return list(series.values())


def write_report(results: dict[str, Any], series: list[ModelSeries], out_dir: Path,
                 video: str | None = None) -> Path:
    """Write plots and report.md into out_dir (the video is written by SideBySideVideo)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    models = results["models"]
    figures = []
    if any(s.tc_per_pair for s in series):
        plt.close(plot_tc_per_frame(models, series, out_dir / TC_PLOT))
        figures.append(TC_PLOT)
    plt.close(plot_latency(models, series, out_dir / LATENCY_PLOT))
    figures.append(LATENCY_PLOT)
    plt.close(plot_per_class(models, out_dir / PER_CLASS_PLOT))
    figures.append(PER_CLASS_PLOT)
    plt.close(plot_tradeoff(models, out_dir / TRADEOFF_PLOT))
    figures.append(TRADEOFF_PLOT)
    write_tc_csv(series, out_dir / TC_CSV)
    path = out_dir / REPORT_NAME
    path.write_text(markdown(results, figures, video), encoding="utf-8")
    return path


def plots_from_json(results: dict[str, Any], out_dir: Path,
                    tc_series: list[ModelSeries] | None = None) -> list[Path]:
    """The plots that need only an evaluate JSON (plus, given, the per-pair TC of its CSV)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    models = results["models"]
    written = [out_dir / TRADEOFF_PLOT, out_dir / PER_CLASS_PLOT]
    plt.close(plot_tradeoff(models, written[0]))
    plt.close(plot_per_class(models, written[1]))
    if tc_series:
        written.append(out_dir / TC_PLOT)
        plt.close(plot_tc_per_frame(models, tc_series, written[-1]))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Plots and the by-method table again from a saved evaluate JSON, without re-running it."""
    parser = Parser("report", prog="python -m etc_ros.tools.report",
                    description=main.__doc__)
    parser.add_argument("results", type=Path, help="evaluate --json output")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--tc-csv", type=Path,
                        help=f"{TC_CSV} of the same run (evaluate --report-dir): adds {TC_PLOT}")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        try:
            results = json.loads(args.results.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{args.results}: not JSON ({e})") from None
        if not isinstance(results, dict) or not isinstance(results.get("models"), list):
            raise ValueError(f"{args.results}: not an evaluate JSON (no 'models' list)")
        series = read_tc_csv(args.tc_csv) if args.tc_csv else None
        written = plots_from_json(results, args.out, series)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return fail("report", e, EXIT_USAGE)
    print(summary_table(results["models"]))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
