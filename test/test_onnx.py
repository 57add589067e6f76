"""ONNX export and the onnxruntime backend: real exports, real ORT sessions, real nodes over DDS.

Tiny random checkpoints keep it fast; nothing here asserts on speed (that is `bench`'s job).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from test_node import Client, exchange, stamped

from etc_ros import image_io
from etc_ros.checkpoint import CheckpointError, load_checkpoint, make_random_checkpoint
from etc_ros.export_onnx import export
from etc_ros.node import SegmentationNode
from etc_ros.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[1]


def _frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random fields: labels vary across the frame instead of one class everywhere."""
    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8), (w, h))
            for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_onnx(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export(checkpoint, out, log=lambda _: None)
    return out


@pytest.mark.parametrize("arch", ["lraspp_mobilenetv3", "pspnet18", "pspnet34", "pspnet50"])
def test_export_each_architecture_round_trips_metadata_and_labels(arch, tmp_path):
    ckpt, out = tmp_path / f"{arch}.safetensors", tmp_path / f"{arch}.onnx"
    make_random_checkpoint(ckpt, arch, input_size=(48, 96))
    export(ckpt, out, log=lambda _: None)
    _, meta = load_checkpoint(ckpt)
    ort_seg, torch_seg = Segmenter(out, "cpu"), Segmenter(ckpt, "cpu")
    assert ort_seg.backend_name == "onnxruntime" and torch_seg.backend_name == "torch"
    assert ort_seg.meta == meta  # classes, palette, mean/std, input size, architecture, recipe
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["etc_ros_onnx"])["precision"] == "fp32"
    # Dynamic batch, frames of other sizes: same labels and confidence as torch.
    frames = _frames(2, 48, 96) + _frames(1, 70, 50, seed=1)
    for a, b in zip(ort_seg.segment(frames, True), torch_seg.segment(frames, True), strict=True):
        assert a.labels.shape == b.labels.shape and a.labels.dtype == b.labels.dtype
        assert (a.labels == b.labels).mean() >= 0.999
        assert np.abs(a.confidence - b.confidence).max() < 1e-3


def test_results_are_not_overwritten_by_the_next_batch(tiny_onnx):
    seg = Segmenter(tiny_onnx, "cpu")
    first = seg.segment(_frames(1, 64, 128))[0].labels
    kept = first.copy()
    seg.segment(_frames(1, 64, 128, seed=5))
    assert (first == kept).all()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("ETC_ROS_CACHE_DIR", str(path))
    return path


def _start_node(context: Context, topic: str, params: dict) -> SegmentationNode:
    return SegmentationNode(context=context, parameter_overrides=[
        Parameter("image_topics", value=[topic]), Parameter("device", value="cpu"),
        *(Parameter(k, value=v) for k, v in params.items())])


@pytest.fixture()
def ros() -> Iterator[tuple[Context, Client, SingleThreadedExecutor]]:
    context = Context()
    rclpy.init(context=context)
    client = Client(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client.node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield context, client, executor
    executor.shutdown()
    client.node.destroy_node()
    rclpy.shutdown(context=context)


def test_node_with_onnx_and_backend_onnxruntime_labels_equal_torch_cache_reused(
        ros, checkpoint, tiny_onnx, cache):
    context, client, executor = ros
    reference = Segmenter(checkpoint, "cpu", backend="torch")
    frames = _frames(2, 96, 160, seed=3)
    expected = [r.labels for r in reference.segment(frames)]
    nodes = {
        "/a/image_raw": _start_node(context, "/a/image_raw", {"model_path": str(tiny_onnx)}),
        "/b/image_raw": _start_node(context, "/b/image_raw", {
            "model_path": str(checkpoint), "backend": "onnxruntime", "cpu_threads": 1}),
    }
    try:
        assert [p.name for p in cache.iterdir()] == [
            f"tiny-{_sha(checkpoint)[:16]}.onnx"]
        for node in nodes.values():
            assert node.segmenter.backend_name == "onnxruntime"
            assert node.segmenter.provider.startswith("CPUExecutionProvider")
            executor.add_node(node)
        for topic in nodes:
            ns = topic.rsplit("/", 1)[0]
            client.listen(f"{ns}/segmentation/label", Image)
            pub = client.node.create_publisher(Image, topic, 10)
            for i, (frame, want) in enumerate(zip(frames, expected, strict=True)):
                msg = stamped(image_io.numpy_to_image(frame, "rgb8"), 100 + i)
                got = exchange(client, pub, msg, f"{ns}/segmentation/label")
                labels = image_io.image_to_numpy(got)
                assert labels.shape == want.shape
                assert (labels == want).mean() >= 0.999, topic
        # A second start with the same checkpoint reuses the cached export (same inode: not
        # rewritten, os.replace would give a new one).
        cached = next(cache.iterdir())
        inode = cached.stat().st_ino
        again = _start_node(context, "/c/image_raw", {"model_path": str(checkpoint),
                                                      "backend": "onnxruntime"})
        again.destroy_node()
        assert cached.stat().st_ino == inode and len(list(cache.iterdir())) == 1
    finally:
        for node in nodes.values():
            executor.remove_node(node)
            node.destroy_node()


def _sha(path: Path) -> str:
    from etc_ros.export_onnx import file_sha256
    return file_sha256(path)


def _foreign(path: Path) -> None:
    """A valid ONNX model that is not ours: float input, no metadata."""
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def _no_metadata(path: Path, good: Path) -> None:
    model = onnx.load(str(good))
    del model.metadata_props[:]
    onnx.save(model, str(path))


def _wrong_input(path: Path, good: Path) -> None:
    """Our metadata on a foreign graph: the input check must catch it."""
    _foreign(path)
    model = onnx.load(str(path))
    for p in onnx.load(str(good)).metadata_props:
        model.metadata_props.add(key=p.key, value=p.value)
    onnx.save(model, str(path))


BAD_ONNX = {
    "truncated": (lambda p, g: p.write_bytes(g.read_bytes()[: g.stat().st_size // 2]),
                  "not a readable ONNX model"),
    "foreign": (lambda p, g: _foreign(p), "no 'etc_ros' metadata"),
    "missing metadata": (_no_metadata, "no 'etc_ros' metadata"),
    "wrong inputs": (_wrong_input, "expected one input 'image' uint8"),
}


@pytest.mark.parametrize("case", list(BAD_ONNX))
def test_bad_onnx_is_one_line_checkpoint_error(case, tiny_onnx, tmp_path):
    path = tmp_path / "bad.onnx"
    BAD_ONNX[case][0](path, tiny_onnx)
    with pytest.raises(CheckpointError, match=BAD_ONNX[case][1]) as err:
        Segmenter(path, "cpu")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ValueError, match="backend 'torch' cannot run"):
        Segmenter(tiny_onnx, "cpu", backend="torch")


def test_node_start_up_with_bad_onnx_prints_one_line(tiny_onnx, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    procs = {}
    for case in ("truncated", "wrong inputs"):
        path = tmp_path / f"{case.replace(' ', '_')}.onnx"
        BAD_ONNX[case][0](path, tiny_onnx)
        procs[case] = subprocess.Popen(
            [sys.executable, "-m", "etc_ros.node", "--ros-args", "-p",
             "image_topics:=['/x/image_raw']", "-p", f"model_path:={path}", "-p", "device:=cpu"],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1, (case, out, err)
        assert lines[0].startswith("segmentation_node: error: checkpoint "), (case, err)
        assert BAD_ONNX[case][1] in lines[0] and "Traceback" not in out + err


def test_int8_export_on_a_tiny_calibration_folder(checkpoint, tmp_path):
    calib = tmp_path / "calib" / "images"
    calib.mkdir(parents=True)
    for i, frame in enumerate(_frames(6, 64, 128, seed=7)):
        cv2.imwrite(str(calib / f"{i}.png"), frame)
    cv2.imwrite(str(calib.parent / "label.png"), np.zeros((64, 128), np.uint8))  # skipped
    out = tmp_path / "tiny_int8.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "etc_ros.export_onnx", "--model", str(checkpoint), "--out",
         str(out), "--int8", "--calibration", str(calib.parent)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    # A random-init net has near-tied logits, so int8 may miss the agreement bar: then the
    # export must refuse with one line instead of writing the file.
    if proc.returncode != 0:
        assert "int8 labels agree with fp32 on only" in proc.stderr.strip().splitlines()[-1]
        assert not out.exists()
        return
    seg = Segmenter(out, "cpu")
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert seg.precision == "int8" and props["etc_ros_onnx"]["calibration_images"] == 6
    assert seg.meta == load_checkpoint(checkpoint)[1]
    assert seg.segment(_frames(1, 64, 128))[0].labels.shape == (64, 128)


def test_int8_needs_a_calibration_folder(checkpoint, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "etc_ros.export_onnx", "--model", str(checkpoint), "--out",
         str(tmp_path / "x.onnx"), "--int8"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "--calibration" in proc.stderr


def test_evaluate_and_bench_run_an_onnx_model(tiny_onnx, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(_frames(4, 64, 128, seed=11)):
        cv2.imwrite(str(images / f"{i:03d}.png"), frame)
    out = tmp_path / "eval.json"
    evaluate = subprocess.Popen(
        [sys.executable, "-m", "etc_ros.evaluate", "--model", str(tiny_onnx), "--images",
         str(images), "--device", "cpu", "--json", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bench = subprocess.run(
        [sys.executable, "-m", "etc_ros.bench", "--model", str(tiny_onnx), "--backends", "ort",
         "--resolutions", "64x128", "--frames", "4", "--warmup", "2", "--device", "cpu",
         "--forward-only", "--json", str(tmp_path / "bench.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    _, err = evaluate.communicate(timeout=300)
    assert evaluate.returncode == 0, err[-2000:]
    (row,) = json.loads(out.read_text())["models"]
    assert row["model_path"] == str(tiny_onnx) and row["frames"] == 4
    assert bench.returncode == 0, bench.stderr[-2000:]
    (brow,) = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert brow["backend"] == "ort" and brow["provider"].startswith("CPUExecutionProvider")
    assert 0 < brow["forward_ms"]["p50"] <= brow["forward_ms"]["p95"]
