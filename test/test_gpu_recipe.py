"""training/recipes/synthetic_gpu.sh end to end, shrunk to run on this CPU.

The script is what trains the shipped weights on a lent GPU, where a broken stage costs scarce
device time; here it runs every stage for one seed with two iterations per run (real data
generation, flow cache, teacher, baseline / TL / ETC students with the gate, export). It checks
the wiring and the files, not learning.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "recipes" / "synthetic_gpu.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PY": sys.executable, "DEVICE": "cpu", "OUT": str(tmp_path / "runs"),
            "DATA": str(tmp_path / "data"), **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=900)


def _meta(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["etc_ros"])


def test_recipe_runs_every_stage_and_exports_the_node_weights(tmp_path: Path) -> None:
    proc = _run(tmp_path, SEEDS="0", TRAIN_SEQS="2", VAL_SEQS="1", FRAMES="6",
                TEACHER_ITERS="2", STUDENT_ITERS="2", TEACHER_BATCH="2", STUDENT_BATCH="2",
                VAL_EVERY="2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    export = tmp_path / "runs" / "export"
    assert sorted(p.name for p in export.iterdir()) == [
        "student_baseline_s0.safetensors", "student_etc_s0.safetensors",
        "student_tl_s0.safetensors", "teacher.safetensors"]
    teacher = _meta(export / "teacher.safetensors")
    assert teacher["architecture"] == "pspnet_effnet_lite0"
    assert teacher["input_size"] == [256, 512]
    etc = _meta(export / "student_etc_s0.safetensors")
    assert etc["architecture"] == "lraspp_effnet_lite0"
    recipe = etc["recipe"]
    # the defaults the shipped students were trained with (README, "Training")
    assert recipe["teacher_scales"] == [1.0] and recipe["teacher_flip"] is True
    assert recipe["teacher_checkpoint"].endswith("runs/teacher/best.safetensors")
    assert recipe["batch_size"] == 2 and recipe["iters"] == 2
    # a gate refusal (likely after two iterations) is logged and the student distilled anyway
    gate_log = tmp_path / "runs" / "gate.log"
    assert recipe["allow_weak_teacher"] is gate_log.exists()
    if gate_log.exists():
        assert "\r" not in gate_log.read_text()
        assert "val mIoU" in gate_log.read_text()


def test_a_given_teacher_and_config_overrides_reach_the_students(tmp_path: Path) -> None:
    """TEACHER distils from an existing export (no teacher is trained or exported);
    STUDENT_SETS reaches every student, ETC_SETS the ETC students only."""
    teacher = REPO / "etc_ros" / "weights" / "teacher.safetensors"
    kd1 = "{ce: 1.0, temporal: 0.1, kd: 1.0, pf: 1.0, structured: 1.0, mf: 1.0}"
    proc = _run(tmp_path, TEACHER=str(teacher), SEEDS="0", TRAIN_SEQS="2", VAL_SEQS="1",
                FRAMES="6", STUDENT_ITERS="2", STUDENT_BATCH="2", VAL_EVERY="2",
                STUDENT_SETS="scale_range=[0.75, 2.5]; ", ETC_SETS=f"loss_weights={kd1}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = tmp_path / "runs"
    assert not (runs / "teacher").exists() and not (runs / "teacher.log").exists()
    assert sorted(p.name for p in (runs / "export").iterdir()) == [
        "student_baseline_s0.safetensors", "student_etc_s0.safetensors",
        "student_tl_s0.safetensors"]
    recipes = {kind: _meta(runs / "export" / f"student_{kind}_s0.safetensors")["recipe"]
               for kind in ("baseline", "tl", "etc")}
    assert all(r["scale_range"] == [0.75, 2.5] for r in recipes.values())
    assert recipes["etc"]["teacher_checkpoint"] == str(teacher)
    assert recipes["etc"]["loss_weights"]["kd"] == 1.0
    assert recipes["tl"]["loss_weights"] == {"ce": 1.0, "temporal": 0.1}


def test_a_missing_teacher_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _run(tmp_path, TEACHER=str(tmp_path / "nope.safetensors"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"synthetic_gpu.sh: TEACHER {tmp_path / 'nope.safetensors'} is not a file"]
    assert not (tmp_path / "data").exists()


def test_unknown_stage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _run(tmp_path, STAGES="data train")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "synthetic_gpu.sh: unknown stage 'train' in STAGES (data students etc export)"]
    assert not (tmp_path / "data").exists()


def test_data_size_and_configs_pick_the_2x_variant(tmp_path: Path) -> None:
    """DATA_SIZE sets the generated frames; CONFIGS the config files every run reads,
    TEACHER_CONFIG the teacher's."""
    proc = _run(tmp_path, STAGES="data", DATA_SIZE="64 128", TRAIN_SEQS="1", VAL_SEQS="1",
                FRAMES="3")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    frame = next((tmp_path / "data" / "train").rglob("images/*.png"))
    assert cv2.imread(str(frame)).shape == (64, 128, 3)
    proc = _run(tmp_path, STAGES="students", CONFIGS="gpu/nonexistent_", SEEDS="0")
    assert proc.returncode != 0
    log = (tmp_path / "runs" / "teacher.log").read_text()
    assert "training/configs/gpu/nonexistent_teacher.yaml" in log
    (tmp_path / "runs" / "teacher.log").unlink()
    # the students stop at once too: 3 training frames cannot fill the default batch of 16
    proc = _run(tmp_path, STAGES="students", TEACHER_CONFIG="teacher_nonexistent", SEEDS="0")
    assert proc.returncode != 0
    log = (tmp_path / "runs" / "teacher.log").read_text()
    assert "training/configs/teacher_nonexistent.yaml" in log
