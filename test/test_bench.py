"""bench: one tiny real run (node and relay processes over real DDS); numbers sane, no timing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from etc_ros.checkpoint import make_random_checkpoint
from etc_ros.tools.bench import TARGET_MARGIN_MS

REPO = Path(__file__).resolve().parents[1]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_bench_tiny_run_prints_complete_table(tmp_path: Path) -> None:
    model = tmp_path / "random.safetensors"
    make_random_checkpoint(model, input_size=(64, 128))
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "etc_ros.bench", "--model", str(model), "--resolutions",
         "64x128", "--frames", "6", "--warmup", "2", "--device", "cpu",
         "--tc-monitor-compare", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    header, rows = _cells(lines[0]), [_cells(ln) for ln in lines[2:]]
    assert header[:5] == ["model input (HxW)", "backend", "forward ms", "node e2e ms",
                          "relay (DDS floor) ms"]
    assert header[7] == "of which pre+post ms" and "TC monitor on" in header[9]
    assert len(rows) == 1 and rows[0][:2] == ["64x128", "torch"]
    row = rows[0][:1] + rows[0][2:]  # the columns after "backend", as before it was added
    for cell in row[1:4] + [row[6], row[8]]:  # "p50 / p95" pairs
        p50, p95 = (float(v) for v in cell.split("/"))
        assert 0 < p50 <= p95 and math.isfinite(p95)
    assert all(0 < float(v) < math.inf for v in row[7].split("/"))  # node's recv->pub / fwd
    assert math.isfinite(float(row[4]))  # overhead may be negative when the CPU is noisy
    assert f"{model}" in proc.stdout and "given" in proc.stdout

    data = json.loads(out.read_text())
    (jrow,) = data["rows"]
    # The verdict and the overhead follow from the row's own p50s (target: e2e - fwd <= relay + 3)
    e2e, fwd, relay = (jrow[k]["p50"] for k in ("node_e2e_ms", "forward_ms", "relay_ms"))
    verdict = "PASS" if e2e - fwd <= relay + TARGET_MARGIN_MS else "MISS"
    assert row[5] == jrow["target"] == verdict, (row, e2e, fwd, relay)
    assert row[4] == f"{e2e - fwd - relay:.1f}"
    for key in ("forward_ms", "pre_post_ms", "node_e2e_ms", "relay_ms", "node_e2e_tc_ms"):
        assert all(math.isfinite(v) and v > 0 for v in jrow[key].values()), key
    for key in ("node_e2e_lost", "relay_lost", "node_e2e_tc_lost"):
        assert 0 <= jrow[key] < 6
    assert jrow["frames"] == 6
    assert set(jrow["node_self_ms"]) == {"receive_to_publish_p50", "preprocess_mean",
                                         "forward_mean", "postprocess_mean"}


def test_bench_bad_model_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "not_a_model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [sys.executable, "-m", "etc_ros.bench", "--model", str(bad), "--resolutions", "64x128",
         "--frames", "2"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2  # bad input (etc_ros.cli exit-code policy)
    assert proc.stderr.strip().splitlines()[-1].startswith("bench: error: checkpoint ")
