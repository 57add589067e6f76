"""On a robot without torch: the shipped .onnx on ONNX Runtime, in a process where torch and
torchvision cannot be imported (test/without_torch.py), labels as the torch backend does."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from node_process import RELIABLE, REPO, NodeProcess, Observer, publish_until, stamp_of
from sensor_msgs.msg import Image

from etc_ros import image_io
from etc_ros.models import ARCHITECTURES
from etc_ros.segmenter import Segmenter

ONNX = REPO / "etc_ros" / "weights" / "student_etc.onnx"
SAFETENSORS = REPO / "etc_ros" / "weights" / "student_etc.safetensors"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Consecutive real street frames (RGB), so labels and TC mean something."""
    cap = cv2.VideoCapture(str(REPO / "assets" / "demo_street.mp4"))
    out = []
    while len(out) < 4:
        ok, bgr = cap.read()
        assert ok, "assets/demo_street.mp4 has fewer than 4 frames"
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


@pytest.fixture(scope="module")
def torch_reference() -> Segmenter:
    """The same weights on the torch backend, in this (torch-enabled) process."""
    return Segmenter(SAFETENSORS, "cpu", backend="torch")


def _status(obs: Observer, camera: str, key: str) -> dict[str, str] | None:
    for msg in reversed(obs.got("/diagnostics")):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith(f": {camera}") and values.get(key):
                return values
    return None


@pytest.mark.parametrize("tc_monitor", [False, True], ids=["plain", "tc_monitor"])
def test_node_without_torch_labels_as_the_torch_backend(tmp_path, frames, torch_reference,
                                                        tc_monitor):
    camera = f"/torchfree{int(tc_monitor)}/image_raw"
    node = NodeProcess(f"torch_free_{int(tc_monitor)}", [
        "-p", f"image_topics:=['{camera}']", "-p", f"model_path:={ONNX}",
        "-p", "device:=cpu", "-p", "backend:=onnxruntime", "-p", "input_reliability:=reliable",
        "-p", f"tc_monitor:={str(tc_monitor).lower()}", "-p", "diagnostics_period_s:=0.2",
    ], tmp_path / "node.log", without_torch=True)
    obs = Observer(f"torch_free_observer_{int(tc_monitor)}")
    label_topic = f"/torchfree{int(tc_monitor)}/segmentation/label"
    try:
        obs.listen(label_topic, Image)
        obs.listen("/diagnostics", DiagnosticArray)
        pub = obs.node.create_publisher(Image, camera, RELIABLE)
        sent = {}
        count = iter(range(1, 10**6))

        def frame() -> Image:
            i = next(count)
            msg = image_io.rgb8_to_image(frames[i % len(frames)])
            msg.header.stamp.sec, msg.header.frame_id = i, "camera"
            sent[i] = frames[i % len(frames)]
            return msg

        def labelled() -> list:
            return [m for m in obs.got(label_topic) if stamp_of(m)[0] in sent]
        publish_until(pub, frame, lambda: len(labelled()) >= len(frames), "labels", 0.3)
        for msg in labelled():
            got = image_io.image_to_numpy(msg)
            expected = torch_reference.segment([sent[msg.header.stamp.sec]])[0].labels
            assert got.shape == expected.shape
            # fp32 ONNX Runtime vs eager torch: the export's own check (>= 99.9 % of pixels).
            assert (got == expected).mean() >= 0.999
        values = wait_for(lambda: _status(obs, camera, "backend"), 60, "diagnostics")
        assert values["backend"].startswith("onnxruntime on CPUExecutionProvider")
        assert int(values["frames published"]) >= len(frames)
        if tc_monitor:
            values = publish_until(pub, frame, lambda: _status(
                obs, camera, "temporal consistency (%)"), "TC in diagnostics", 0.3)
            assert 0.0 <= float(values["temporal consistency (%)"]) <= 100.0
    finally:
        obs.close()
        code, out = node.stop()
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


def test_safetensors_without_torch_is_a_one_line_error_saying_what_to_install(tmp_path):
    node = NodeProcess("torch_free_safetensors", [
        "-p", f"model_path:={SAFETENSORS}", "-p", "device:=cpu",
    ], tmp_path / "node.log", without_torch=True)
    code = node.proc.wait(timeout=300)
    _, out = node.stop()
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 1, out
    assert len(lines) == 1 and lines[0].startswith("segmentation_node: error: "), out
    assert "needs PyTorch" in lines[0] and "pip install torch" in lines[0], out
    assert SAFETENSORS.name in lines[0]


def test_runtime_modules_import_and_score_tc_without_torch():
    """The node's modules and the live TC metric, with torch blocked in a fresh interpreter."""
    script = """
import sys
sys.path.insert(0, "test")
from without_torch import block_torch
block_torch()
import numpy as np
import etc_ros.node, etc_ros.tc_monitor, etc_ros.checkpoint, etc_ros.segmenter  # noqa
from etc_ros.temporal import consistency_flow, pair_counts
rng = np.random.default_rng(0)
rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
flow, valid = consistency_flow(rgb, np.roll(rgb, 2, axis=1), "ultrafast")
labels = rng.integers(0, 3, (48, 64)).astype(np.uint8)
print(pair_counts(labels, labels, flow, valid, 3).valid > 0)
try:
    from etc_ros.models import build_model  # noqa: F401
except ModuleNotFoundError as exc:
    print("blocked", exc.name)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "blocked", "torch"], out.stdout + out.stderr


def test_architecture_names_match_the_model_builders():
    """etc_ros.models lists the names without torch; the registry builds each of them."""
    from etc_ros.models import registry
    assert ARCHITECTURES == tuple(registry._BUILDERS)
