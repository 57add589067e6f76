"""<ns>/segmentation/camera_info over real DDS: two node processes, labels at the camera's and
at the model's resolution, fed real sensor_msgs/CameraInfo; a 3D point projected with each
published K (and P) lands on the same label as on the camera image."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from node_process import RELIABLE, REPO, NodeProcess, Observer, publish_until, stamp_of
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from etc_ros import image_io

ONNX = REPO / "etc_ros" / "weights" / "student_etc.onnx"  # 128x256 model input
W, H = 640, 480
K = [520.5, 0.0, 322.3, 0.0, 515.0, 241.7, 0.0, 0.0, 1.0]
D = [-0.28, 0.07, 0.001, -0.0005, 0.0]
# A right stereo camera's rectified projection (Tx = -fx * baseline).
P = [510.0, 0.0, 318.0, -61.2, 0.0, 510.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _info() -> CameraInfo:
    info = CameraInfo(width=W, height=H, distortion_model="plumb_bob", d=D, k=K, p=P)
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.header.frame_id = "camera_optical"
    return info


@pytest.fixture(scope="module")
def street() -> np.ndarray:
    cap = cv2.VideoCapture(str(REPO / "assets" / "demo_street.mp4"))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return cv2.cvtColor(cv2.resize(bgr, (W, H), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def _points_through(pixels: np.ndarray, rng: np.random.Generator, k: np.ndarray,
                    t: np.ndarray) -> np.ndarray:
    """3D points (N, 3) that `k` (3x3) plus translation column `t` projects onto `pixels`."""
    z = rng.uniform(2.0, 30.0, len(pixels))
    x = ((pixels[:, 0] - k[0, 2]) * z - t[0]) / k[0, 0]
    y = ((pixels[:, 1] - k[1, 2]) * z - t[1]) / k[1, 1]
    return np.stack([x, y, z], 1)


def _project(points: np.ndarray, k: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Nearest pixel (column, row) of each point; pixel centres are integers (ROS convention)."""
    uvw = points @ k.T + t
    return np.floor(uvw[:, :2] / uvw[:, 2:] + 0.5).astype(int)


def _check_projection(info: CameraInfo, labels: np.ndarray, camera_labels: np.ndarray,
                      use_p: bool) -> None:
    """Points through integer camera pixels must hit the same label through the published
    matrices as the camera pixel has at the camera's resolution."""
    rng = np.random.default_rng(0)
    cols, rows = np.meshgrid(np.arange(3, W - 3, 7), np.arange(3, H - 3, 7))
    pixels = np.stack([cols.ravel(), rows.ravel()], 1)
    # Leave out camera pixels whose centre lies exactly on the border of two label pixels:
    # either label is right there (OpenCV's fixed-point nearest resize picks the left one).
    scale = np.array([labels.shape[1] / W, labels.shape[0] / H])
    edge = (pixels + 0.5) * scale
    pixels = pixels[(np.abs(edge - np.round(edge)) > 1e-6).all(1)]
    if use_p:
        src_k, src_t = np.array(P).reshape(3, 4)[:, :3], np.array(P).reshape(3, 4)[:, 3]
        out = np.array(info.p).reshape(3, 4)
        out_k, out_t = out[:, :3], out[:, 3]
    else:
        src_k, src_t = np.array(K).reshape(3, 3), np.zeros(3)
        out_k, out_t = np.array(info.k).reshape(3, 3), np.zeros(3)
    points = _points_through(pixels.astype(float), rng, src_k, src_t)
    assert (_project(points, src_k, src_t) == pixels).all()
    hit = _project(points, out_k, out_t)
    h, w = labels.shape
    assert (hit >= 0).all() and (hit[:, 0] < w).all() and (hit[:, 1] < h).all()
    expected = camera_labels[pixels[:, 1], pixels[:, 0]]
    assert len(np.unique(expected)) > 1  # the street frame has several classes to tell apart
    np.testing.assert_array_equal(labels[hit[:, 1], hit[:, 0]], expected)


def test_camera_info_matches_the_labels_at_both_resolutions(tmp_path, street):
    base = ["-p", f"model_path:={ONNX}", "-p", "device:=cpu", "-p",
            "input_reliability:=reliable", "-p", "diagnostics_period_s:=0.2"]
    at_input = NodeProcess("ci_input", [
        *base, "-p", "image_topics:=['/ci_in/image_raw', '/ci_none/image_raw']"],
        tmp_path / "input.log")
    at_model = NodeProcess("ci_model", [  # its camera_info comes from an overridden topic
        *base, "-p", "image_topics:=['/ci_model/image_raw']", "-p", "output_resolution:=model",
        "-p", "camera_info_topics:=['/calib/ci_model_info']"], tmp_path / "model.log")
    obs = Observer("camera_info_observer")
    outputs = {"/ci_in": "/ci_in/segmentation", "/ci_model": "/ci_model/segmentation",
               "/ci_none": "/ci_none/segmentation"}
    try:
        for out in outputs.values():
            obs.listen(f"{out}/label", Image)
            obs.listen(f"{out}/camera_info", CameraInfo)
        obs.listen("/diagnostics", DiagnosticArray)
        images = {cam: obs.node.create_publisher(Image, f"{cam}/image_raw", RELIABLE)
                  for cam in outputs}
        infos = [obs.node.create_publisher(CameraInfo, topic, RELIABLE)
                 for topic in ("/ci_in/camera_info", "/calib/ci_model_info")]
        tag = iter(range(1, 10**6))

        class Feed:
            """Every camera gets the same street frame; two of them its CameraInfo first."""

            def publish(self, _: object) -> None:
                header = Header(frame_id="camera_optical")
                header.stamp.sec = next(tag)
                for pub in infos:
                    info = _info()
                    info.header = header
                    pub.publish(info)
                for pub in images.values():
                    pub.publish(image_io.rgb8_to_image(street, header=header))

        def both_with_info() -> int | None:
            """A stamp for which both nodes' labels and camera_infos have arrived."""
            have = [{stamp_of(m) for m in obs.got(f"{outputs[c]}/{kind}")}
                    for c in ("/ci_in", "/ci_model") for kind in ("label", "camera_info")]
            common = set.intersection(*have)
            return min(common) if common else None
        stamp = publish_until(Feed(), lambda: None, both_with_info, "labels with camera_info")

        def pick(topic: str):
            return next(m for m in obs.got(topic) if stamp_of(m) == stamp)
        label_in = pick("/ci_in/segmentation/label")
        info_in = pick("/ci_in/segmentation/camera_info")
        label_m = pick("/ci_model/segmentation/label")
        info_m = pick("/ci_model/segmentation/camera_info")
        camera_labels = image_io.image_to_numpy(label_in)
        model_labels = image_io.image_to_numpy(label_m)
        assert camera_labels.shape == (H, W) and model_labels.shape == (128, 256)
        for label, info in ((label_in, info_in), (label_m, info_m)):
            assert info.header == label.header
            assert (info.width, info.height) == (label.width, label.height)
            assert info.distortion_model == "plumb_bob" and list(info.d) == D
            assert list(info.r) == list(_info().r)
        assert list(info_in.k) == K and list(info_in.p) == P  # same size: unchanged
        for use_p in (False, True):
            _check_projection(info_in, camera_labels, camera_labels, use_p)
            _check_projection(info_m, model_labels, camera_labels, use_p)

        # Once a camera_info has arrived, every label image has its own.
        later = {stamp_of(m) for m in obs.got("/ci_model/segmentation/label")
                 if stamp_of(m) >= stamp}
        wait_for(lambda: later <= {stamp_of(m) for m in obs.got(
            "/ci_model/segmentation/camera_info")}, 60, "a camera_info per label")

        # No CameraInfo publisher: labels, no camera_info, and diagnostics say why.
        wait_for(lambda: any(stamp_of(m) >= stamp for m in obs.got(
            "/ci_none/segmentation/label")), 60, "labels of the camera without camera_info")

        def says_none() -> bool:
            return any(s.name.endswith(": /ci_none/image_raw") and "none received" in
                       {kv.key: kv.value for kv in s.values}.get("camera_info", "")
                       for msg in obs.got("/diagnostics") for s in msg.status)
        wait_for(says_none, 60, "diagnostics on the missing camera_info")
        assert obs.got("/ci_none/segmentation/camera_info") == []
    finally:
        obs.close()
        results = [at_input.stop(), at_model.stop()]
    for code, out in results:
        assert code == 0 and "Traceback" not in out, out[-3000:]
    input_log = results[0][1]
    assert input_log.count("no CameraInfo on /ci_none/camera_info") == 1, input_log[-3000:]


def test_scaling_keeps_distortion_and_scales_the_roi():
    info = _info()
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 40, 400, 300
    info.roi.do_rectify = True
    info.binning_x = info.binning_y = 1
    header = Header(frame_id="other")
    out = image_io.scale_camera_info(info, (H, W), (120, 160), header)
    assert out.header == header and (out.width, out.height) == (160, 120)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (25, 10, 100, 75)
    assert out.roi.do_rectify and list(out.d) == D and out.distortion_model == "plumb_bob"
    assert out.k[0] == pytest.approx(K[0] / 4) and out.k[4] == pytest.approx(K[4] / 4)
    # Pixel centres: the camera's (0, 0) is the resized image's (-3/8, -3/8).
    k = np.array(out.k).reshape(3, 3)
    corner = k @ np.linalg.solve(np.array(K).reshape(3, 3), [0.0, 0.0, 1.0])
    assert corner[:2] == pytest.approx([-0.375, -0.375])
