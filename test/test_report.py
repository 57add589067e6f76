"""The report's grouping and plots: rows become methods (mean of seeds, range as bars), keyframe
rows stay apart, legends sit outside the data, and the CLI replots a saved evaluate JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from etc_ros.tools import report
from etc_ros.tools.report import ModelSeries


def row(name: str, miou: float | None, tc: float, fps: float, p95: float,
        per_class: dict[str, float] | None = None, kf: int | None = None) -> dict[str, Any]:
    """One model row shaped like evaluate's JSON."""
    out = {"name": name, "model_path": f"{name}.safetensors", "frames": 10, "tc": tc,
           "tc_pixel": tc + 30, "tc_classes": ["road", "car"], "miou": miou,
           "per_class": {c: {"iou": v, "recall": v + 5, "tc": v + 10, "mistaken_for": {}}
                         for c, v in (per_class or {"road": 80.0, "car": 40.0}).items()},
           "latency_ms": {"p50": 1000 / fps, "p95": p95, "max": p95 + 5}, "fps": fps}
    if kf:
        out["keyframe_interval"] = kf
    return out


MODELS = [
    row("teacher", 40.0, 60.0, 5.0, 250.0),
    row("student_baseline_s0", 30.0, 50.0, 50.0, 25.0, {"road": 70.0, "car": 30.0}),
    row("student_etc_s0", 31.0, 54.0, 50.0, 26.0, {"road": 72.0, "car": 34.0}),
    row("student_baseline_s1", 32.0, 52.0, 40.0, 27.0, {"road": 74.0, "car": 20.0}),
    row("student_etc_s1", 35.0, 58.0, 40.0, 28.0, {"road": 76.0, "car": 38.0}),
    row("student_etc_s0@kf5", 29.0, 70.0, 200.0, 26.0, kf=5),
    row("student_etc_s1@kf5", 27.0, 72.0, 200.0, 26.0, kf=5),
]


@pytest.mark.parametrize(("name", "method"), [
    ("student_etc_s0", "ETC"), ("student_etc_s12@kf10", "ETC"), ("student_tl_s1", "TL"),
    ("student_baseline", "baseline"), ("teacher@kf5", "teacher"), ("cpu_v2_teacher", "teacher"),
    ("student_etc_teacher", "teacher"), ("my_model_s3", "my_model"), ("etcetera", "etcetera"),
])
def test_method_of(name: str, method: str) -> None:
    assert report.method_of(name) == method


def test_rows_group_by_method_and_keyframe_interval() -> None:
    groups = report.summarize(MODELS)
    assert [(g.label, len(g.rows)) for g in groups] == [
        ("teacher", 1), ("baseline", 2), ("ETC", 2), ("ETC @kf5", 2)]
    etc = groups[2]
    assert etc.stat(lambda r: r["miou"]) == (33.0, 31.0, 35.0)
    assert etc.stat(report._mean_latency) == pytest.approx((22.5, 20.0, 25.0))


def test_two_releases_of_one_method_stay_apart() -> None:
    models = [row("v2_student_etc_s0", 20.0, 50.0, 40.0, 30.0),
              row("student_etc_s0", 30.0, 50.0, 40.0, 30.0),
              row("student_etc_s1", 32.0, 50.0, 40.0, 30.0)]
    assert [(g.label, len(g.rows)) for g in report.summarize(models)] == [
        ("v2_student_etc", 1), ("student_etc", 2)]


def test_summary_table_is_the_mean_of_seeds_with_their_range() -> None:
    lines = report.summary_table(MODELS).splitlines()
    etc = next(line for line in lines if line.startswith("| ETC |"))
    # latency columns are means of the seeds too, not one seed's
    assert etc == ("| ETC | 2 | 33.00 (31.00–35.00) | 56.00 (54.00–58.00) | 86.00 (84.00–88.00) "
                   "| 22.5 | 22.5 / 27.0 / 32.0 |")
    assert lines[2] == "| teacher | 1 | 40.00 | 60.00 | 90.00 | 200.0 | 200.0 / 250.0 / 255.0 |"


def _legend_right_of_axes(fig: plt.Figure, ax: plt.Axes) -> bool:
    fig.canvas.draw()
    legend = ax.get_legend()
    return legend is not None and legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_tradeoff_plots_one_point_per_method_with_the_seed_range(tmp_path: Path) -> None:
    fig = report.plot_tradeoff(MODELS, tmp_path / "t.png")
    try:
        ax = fig.axes[0]
        bars = ax.containers  # one errorbar per (method, interval)
        assert len(bars) == 4 and ax.get_xscale() == "log"
        points = {tuple(np.round(np.asarray(c.lines[0].get_ydata(), float), 3)): c for c in bars}
        assert set(points) == {(40.0,), (31.0,), (33.0,), (28.0,)}
        etc_bar = points[(33.0,)].lines[2][0].get_segments()[0]
        assert etc_bar[:, 1].tolist() == [31.0, 35.0]  # the range over seeds
        markers = {c.lines[0].get_marker() for c in bars}
        assert len(markers) == 2  # per-frame and keyframe rows told apart
        colours = {c.lines[0].get_color() for c in bars}
        assert len(colours) == 3  # teacher, baseline, ETC
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["baseline", "ETC", "teacher", "per frame", "keyframe every 5"]
        assert _legend_right_of_axes(fig, ax)
    finally:
        plt.close(fig)
    assert (tmp_path / "t.png").stat().st_size > 0


def test_per_class_has_one_bar_per_method_not_per_row(tmp_path: Path) -> None:
    fig = report.plot_per_class(MODELS, tmp_path / "c.png")
    try:
        iou_ax = fig.axes[0]
        bars = [c for c in iou_ax.containers if hasattr(c, "patches")]
        assert [c.get_label() for c in bars] == ["baseline", "ETC", "teacher"]  # no kf rows
        etc = bars[1]
        assert [p.get_height() for p in etc.patches] == [74.0, 36.0]  # mean of the seeds
        assert [a.get_ylabel() for a in fig.axes] == ["IoU %", "recall %", "TC %"]
        assert _legend_right_of_axes(fig, iou_ax)
    finally:
        plt.close(fig)


def test_tc_per_frame_is_a_rolling_mean_of_a_few_rows(tmp_path: Path) -> None:
    models = [row(f"student_{kind}_s{seed}", 30.0, 50.0, 40.0, 30.0)
              for seed in range(3) for kind in ("baseline", "tl", "etc")]
    series = []
    for i, m in enumerate(models):
        s = ModelSeries(m["name"])
        s.tc_per_pair = [(t, float(i + t % 2 * 10)) for t in range(1, 41)]
        s.tc_pixel_per_pair = [(t, 90.0) for t in range(1, 41)]
        series.append(s)
    series[0].tc_per_pair[3] = (4, None)  # an unscored pair is skipped, not counted as 0
    fig = report.plot_tc_per_frame(models, series, tmp_path / "tc.png", window=4)
    try:
        lines = fig.axes[0].get_lines()
        assert [ln.get_label() for ln in lines] == [
            "baseline (student_baseline_s0)", "TL (student_tl_s0)", "ETC (student_etc_s0)"]
        y = lines[0].get_ydata()
        assert y[:4].tolist() == [10.0, 5.0, 20 / 3, 7.5]  # 10, 0, 10, (skipped), 10
        assert np.allclose(lines[1].get_ydata()[3:], 1 + 5.0)  # a 0/10 alternation averages 5
        assert _legend_right_of_axes(fig, fig.axes[1])
    finally:
        plt.close(fig)


def test_tc_csv_round_trip(tmp_path: Path) -> None:
    s = ModelSeries("a")
    s.tc_per_pair = [(1, 50.0), (2, None)]
    s.tc_pixel_per_pair = [(1, 90.0), (2, 91.5)]
    report.write_tc_csv([s], tmp_path / "tc.csv")
    back = report.read_tc_csv(tmp_path / "tc.csv")
    assert [(b.name, b.tc_per_pair, b.tc_pixel_per_pair) for b in back] == [
        ("a", [(1, 50.0), (2, None)], [(1, 90.0), (2, 91.5)])]


def test_cli_replots_a_saved_json(tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"models": MODELS, "input": {}}))
    res = subprocess.run([sys.executable, "-m", "etc_ros.tools.report", str(results),
                          "--out", str(tmp_path / "plots")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| ETC | 2 | 33.00 (31.00–35.00)" in res.stdout
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "accuracy_vs_latency.png", "per_class.png"]


@pytest.mark.parametrize(("content", "message"), [
    ("{", "r.json"), ('{"input": {}}', "not an evaluate JSON"),
])
def test_cli_bad_json_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "r.json").write_text(content)
    res = subprocess.run([sys.executable, "-m", "etc_ros.tools.report", str(tmp_path / "r.json"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("report: error:") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
