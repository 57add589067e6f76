"""evaluate on real inputs: rosbag2 files written here with rosbags, an mp4, an image folder and a
labelled split, with two real (random, tiny) checkpoints; bad inputs through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from etc_ros.checkpoint import make_random_checkpoint
from etc_ros.labels import CITYSCAPES_CLASSES
from etc_ros.segmenter import Segmenter
from etc_ros.tools.evaluate import main

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 96
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"


def scene(t: int) -> np.ndarray:
    """Textured street-ish frame with a square moving 3 px per frame (so flow has work to do)."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8), (W, H),
                      interpolation=cv2.INTER_CUBIC)
    base[:, :, 2] = np.linspace(0, 255, W, dtype=np.uint8)[None, :]
    x = 10 + 3 * t
    base[20:44, x:x + 20] = (250, 240, 30)
    return base


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("ckpt")
    paths = [d / "student_a.safetensors", d / "student_b.safetensors"]
    make_random_checkpoint(paths[0], arch="pspnet18", input_size=(64, 128))
    make_random_checkpoint(paths[1], arch="lraspp_mobilenetv3", input_size=(64, 128))
    return [str(p) for p in paths]


def image_msg(rgb: np.ndarray, encoding: str, stamp_ns: int):
    """sensor_msgs/Image in the given encoding, laid out as a camera driver would."""
    header = TYPESTORE.types["std_msgs/msg/Header"](
        stamp=TYPESTORE.types["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="cam")
    if encoding.startswith("jpeg") or encoding == "png":
        ext = ".png" if encoding == "png" else ".jpg"
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        return TYPESTORE.types[COMPRESSED](header=header, format=encoding,
                                           data=buf.reshape(-1).astype(np.uint8))
    arr = {
        "rgb8": lambda: rgb,
        "bgr8": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
        "bgra8": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
        "mono8": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
        "mono16": lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype("<u2") * 257,
    }[encoding]()
    arr = np.ascontiguousarray(arr)
    return TYPESTORE.types[IMAGE](header=header, height=arr.shape[0], width=arr.shape[1],
                                  encoding=encoding, is_bigendian=0, step=arr.strides[0],
                                  data=np.frombuffer(arr.tobytes(), np.uint8))


def write_bag(path: Path, storage: str, encoding: str, frames: list[np.ndarray],
              corrupt: dict[int, str] | None = None) -> str:
    """Write a rosbag2 with one camera topic (plus a String topic); returns the camera topic."""
    corrupt = corrupt or {}
    compressed = encoding.startswith("jpeg") or encoding == "png"
    msgtype = COMPRESSED if compressed else IMAGE
    topic = "/cam/image_raw/compressed" if compressed else "/cam/image_raw"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conn = w.add_connection(topic, msgtype, typestore=TYPESTORE)
        chatter = w.add_connection("/chatter", "std_msgs/msg/String", typestore=TYPESTORE)
        w.write(chatter, 1, TYPESTORE.serialize_cdr(
            TYPESTORE.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
        for i, rgb in enumerate(frames):
            stamp = 10**9 + i * 10**8
            msg = image_msg(rgb, encoding, stamp)
            if corrupt.get(i) == "short":  # data shorter than step * height
                msg.data = msg.data[: len(msg.data) // 2]
            data = TYPESTORE.serialize_cdr(msg, msgtype)
            if corrupt.get(i) == "garbage":  # not deserializable at all
                data = b"\x00\x01\x00\x00garbage"
            w.write(conn, stamp, data)
    return topic


def run_eval(tmp_path: Path, models: list[str], *args: str) -> dict:
    out = tmp_path / "out.json"
    assert main(["--model", models[0], "--model", models[1], "--device", "cpu",
                 "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def check_schema(res: dict, frames: int, labelled: bool) -> None:
    assert set(res) == {"models", "input"}
    assert isinstance(res["input"], dict)
    assert [m["name"] for m in res["models"]] == ["student_a", "student_b"]
    for m in res["models"]:
        assert set(m) == {"name", "model_path", "frames", "tc", "tc_pixel", "tc_classes",
                          "miou", "per_class", "latency_ms", "fps"}
        assert m["tc_classes"] == res["models"][0]["tc_classes"]  # one class set per run
        assert set(m["tc_classes"]) <= set(CITYSCAPES_CLASSES)
        assert isinstance(m["tc_pixel"], float) and 0.0 <= m["tc_pixel"] <= 100.0
        assert Path(m["model_path"]).is_file()
        assert m["frames"] == frames
        assert isinstance(m["tc"], float) and 0.0 <= m["tc"] <= 100.0
        if labelled:
            assert isinstance(m["miou"], float) and 0.0 <= m["miou"] <= 100.0
        else:
            assert m["miou"] is None
        assert len(m["per_class"]) == 19 and "road" in m["per_class"]
        for entry in m["per_class"].values():
            assert set(entry) == {"iou", "recall", "mistaken_for", "tc"}
            for k, v in entry.items():
                if k != "mistaken_for":
                    assert v is None or (isinstance(v, float) and 0.0 <= v <= 100.0)
            if not labelled:
                assert entry["iou"] is None and entry["recall"] is None
                assert entry["mistaken_for"] is None
            elif entry["recall"] is not None:  # right + the largest mistakes never exceed 100
                shares = list(entry["mistaken_for"].values())
                assert len(shares) <= 3 and all(v >= 1.0 for v in shares)
                assert shares == sorted(shares, reverse=True)
                assert entry["recall"] + sum(shares) <= 100.0 + 1e-3
        assert any(e["tc"] is not None for e in m["per_class"].values())
        lat = m["latency_ms"]
        assert set(lat) == {"p50", "p95", "max"}
        assert 0.0 < lat["p50"] <= lat["p95"] <= lat["max"]
        assert m["fps"] > 0


@pytest.mark.parametrize("storage,encoding", [
    ("mcap", "rgb8"), ("sqlite3", "bgr8"), ("mcap", "mono8"), ("sqlite3", "mono16"),
    ("mcap", "bgra8"), ("sqlite3", "jpeg"), ("mcap", "png"),
])
def test_bag(tmp_path: Path, models: list[str], storage: str, encoding: str) -> None:
    topic = write_bag(tmp_path / "bag", storage, encoding, [scene(t) for t in range(4)])
    res = run_eval(tmp_path, models, "--bag", str(tmp_path / "bag"), "--topic", topic)
    check_schema(res, frames=4, labelled=False)
    assert res["input"]["skipped"] == 0
    assert res["input"]["pairs"] == 3


def test_bag_with_corrupt_messages(tmp_path: Path, models: list[str]) -> None:
    frames = [scene(t) for t in range(7)]
    topic = write_bag(tmp_path / "bag", "mcap", "rgb8", frames, corrupt={2: "short", 4: "garbage"})
    res = run_eval(tmp_path, models, "--bag", str(tmp_path / "bag"), "--topic", topic,
                   "--report-dir", str(tmp_path / "rep"))
    check_schema(res, frames=5, labelled=False)
    assert res["input"]["skipped"] == 2
    assert sum(res["input"]["skipped_reasons"].values()) == 2
    # Good frames 0 1 _ 3 _ 5 6: only (0,1) and (5,6) are consecutive pairs.
    assert res["input"]["pairs"] == 2
    assert "Skipped 2 corrupt frame(s)" in (tmp_path / "rep" / "report.md").read_text()


def test_static_content_gives_tc_100(tmp_path: Path, models: list[str]) -> None:
    topic = write_bag(tmp_path / "bag", "sqlite3", "rgb8", [scene(0)] * 4)
    res = run_eval(tmp_path, models, "--bag", str(tmp_path / "bag"), "--topic", topic)
    for m in res["models"]:
        assert m["tc"] == pytest.approx(100.0)
    # Not trivially 100 because a model predicts one class everywhere: several classes compared.
    present = [e["tc"] for e in res["models"][0]["per_class"].values() if e["tc"] is not None]
    assert len(present) >= 2 and all(v == pytest.approx(100.0) for v in present)


def test_video_and_report(tmp_path: Path, models: list[str]) -> None:
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (W, H))
    for t in range(5):
        writer.write(cv2.cvtColor(scene(t), cv2.COLOR_RGB2BGR))
    writer.release()
    rep = tmp_path / "rep"
    res = run_eval(tmp_path, models, "--video", str(video), "--report-dir", str(rep))
    check_schema(res, frames=5, labelled=False)
    assert res["input"]["pairs"] == 4
    text = (rep / "report.md").read_text()
    assert "| student_a | 1 | 5 |" in text and "| student_b | 1 | 5 |" in text
    for png in ("tc_per_frame.png", "latency_hist.png", "per_class.png"):
        img = cv2.imread(str(rep / png))
        assert img is not None and img.shape[0] > 100, png
        assert png in text
    rows = (rep / "tc_per_frame.csv").read_text().splitlines()
    assert rows[0] == "model,frame,tc,tc_pixel" and len(rows) == 1 + 2 * 4  # 2 models x 4 pairs
    strip = cv2.imread(str(rep / "strip.png"))  # 5 frames: all of them, one row each
    assert strip is not None and strip.shape[:2] == (5 * (H + 28), 3 * W) and "strip.png" in text
    cap = cv2.VideoCapture(str(rep / "overlay.mp4"))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        assert frame.shape[1] == 3 * W  # input | student_a | student_b
    cap.release()
    assert n == 5


def test_image_folder_max_frames(tmp_path: Path, models: list[str]) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    for t in range(5):
        cv2.imwrite(str(d / f"{t:04d}.png"), cv2.cvtColor(scene(t), cv2.COLOR_RGB2BGR))
    res = run_eval(tmp_path, models, "--images", str(d), "--max-frames", "3")
    check_schema(res, frames=3, labelled=False)
    assert res["input"]["pairs"] == 2


def test_labelled_split(tmp_path: Path, models: list[str]) -> None:
    for seq in ("seq_a", "seq_b"):
        (tmp_path / "ds" / "test" / seq / "images").mkdir(parents=True)
        (tmp_path / "ds" / "test" / seq / "labels").mkdir(parents=True)
        for t in range(3):
            cv2.imwrite(str(tmp_path / "ds" / "test" / seq / "images" / f"{t:06d}.png"),
                        cv2.cvtColor(scene(t), cv2.COLOR_RGB2BGR))
            label = np.zeros((H, W), np.uint8)  # road
            label[:20] = 10  # sky
            label[20:44, 10 + 3 * t:30 + 3 * t] = 13  # car
            label[-2:] = 255  # ignored
            cv2.imwrite(str(tmp_path / "ds" / "test" / seq / "labels" / f"{t:06d}.png"), label)
    res = run_eval(tmp_path, models, "--dataset", str(tmp_path / "ds"), "--split", "test",
                   "--report-dir", str(tmp_path / "rep"))
    check_schema(res, frames=6, labelled=True)
    assert res["input"]["pairs"] == 4  # no pair across the sequence boundary
    for m in res["models"]:
        # TC and mIoU are both over the classes present in the ground truth
        assert m["tc_classes"] == ["road", "sky", "car"]
        for cname in ("road", "sky", "car"):
            assert m["per_class"][cname]["iou"] is not None
        ious = [m["per_class"][c]["iou"] for c in ("road", "sky", "car")]
        assert m["miou"] == pytest.approx(sum(ious) / len(ious), abs=1e-3)
    # Independent IoU over all frames (pixels summed, 255 ignored) from the same model's output.
    seg = Segmenter(models[0], device="cpu")
    inter = np.zeros(19)
    union = np.zeros(19)
    labelled = np.zeros(19)
    gt_to_pred = np.zeros((19, 19))
    for label_file in sorted((tmp_path / "ds" / "test").glob("*/labels/*.png")):
        bgr = cv2.imread(str(label_file.parent.parent / "images" / label_file.name))
        pred = seg.segment([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])[0].labels
        gt = cv2.imread(str(label_file), cv2.IMREAD_UNCHANGED)
        for c in range(19):
            inter[c] += ((gt == c) & (pred == c)).sum()
            union[c] += (((gt == c) | (pred == c)) & (gt != 255)).sum()
            labelled[c] += (gt == c).sum()
            for p in range(19):
                gt_to_pred[c, p] += ((gt == c) & (pred == p)).sum()
    got = res["models"][0]["per_class"]
    for c, name in enumerate(CITYSCAPES_CLASSES):
        if union[c]:
            assert got[name]["iou"] == pytest.approx(100 * inter[c] / union[c], abs=1e-3), name
        else:
            assert got[name]["iou"] is None, name
        if labelled[c]:  # recall: share of the class's labelled pixels predicted as it
            assert got[name]["recall"] == pytest.approx(100 * inter[c] / labelled[c],
                                                        abs=1e-3), name
            # mistaken_for: the other classes that took >= 1 % of them, largest three
            share = 100 * gt_to_pred[c] / labelled[c]
            share[c] = 0
            want = {CITYSCAPES_CLASSES[p]: share[p] for p in np.argsort(-share, kind="stable")[:3]
                    if share[p] >= 1.0}
            assert list(got[name]["mistaken_for"]) == list(want), name
            assert list(got[name]["mistaken_for"].values()) == pytest.approx(
                list(want.values()), abs=1e-3), name
        else:
            assert got[name]["recall"] is None, name
            assert got[name]["mistaken_for"] is None, name
    assert any(got[n]["mistaken_for"] for n in ("road", "sky", "car"))  # a random net errs
    # the report shows the same: per labelled class, recall then the mistakes, one cell a model
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## What each labelled class is predicted as" in text
    road = next(ln for ln in text.splitlines() if ln.startswith("| road |") and "right" in ln)
    cell = road.split(" | ")[1]
    assert cell.startswith(f"{got['road']['recall']:.0f} right")
    for other, v in got["road"]["mistaken_for"].items():
        assert f"{other} {v:.0f}" in cell


def test_keyframe_rows(tmp_path: Path, models: list[str]) -> None:
    """--keyframe-interval adds <name>@kf<K> rows on the same frames, with their own latency."""
    for t in range(5):
        cv2.imwrite(str(tmp_path / f"{t:03d}.png"), cv2.cvtColor(scene(t), cv2.COLOR_RGB2BGR))
    report = tmp_path / "report"
    res = run_eval(tmp_path, models, "--images", str(tmp_path), "--keyframe-interval", "2",
                   "--keyframe-interval", "4", "--report-dir", str(report))
    names = [m["name"] for m in res["models"]]
    assert names == ["student_a", "student_b", "student_a@kf2", "student_b@kf2",
                     "student_a@kf4", "student_b@kf4"]
    rows = {m["name"]: m for m in res["models"]}
    for name, m in rows.items():
        assert m["frames"] == 5
        assert m["tc_classes"] == rows["student_a"]["tc_classes"]
        assert m.get("keyframe_interval") == (int(name[-1]) if "@kf" in name else None)
        assert set(m["latency_ms"]) == {"p50", "p95", "max"}
    # propagated frames carry flow labels from the keyframe: more steady pixels than chance
    assert rows["student_a@kf4"]["tc_pixel"] > 50.0
    text = (report / "report.md").read_text()
    assert "student_a@kf4" in text and "same" in text
    assert "predicted as" not in text  # no labels, no mistakes table
    assert (report / "accuracy_vs_latency.png").stat().st_size > 0
    assert (report / "tc_per_frame.csv").read_text().startswith("model,frame,tc,tc_pixel")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "etc_ros.evaluate", "--device", "cpu", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "good"
    write_bag(path, "mcap", "rgb8", [scene(t) for t in range(3)])
    return path


def test_cli_missing_topic_lists_topics(good_bag: Path, models: list[str]) -> None:
    proc = cli("--model", models[0], "--bag", str(good_bag), "--topic", "/nope")
    assert_one_line_error(proc, "/nope", "/cam/image_raw", "/chatter")


def test_cli_wrong_topic_type(good_bag: Path, models: list[str]) -> None:
    assert_one_line_error(cli("--model", models[0], "--bag", str(good_bag), "--topic", "/chatter"),
                          "/chatter")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_cli_truncated_bag(tmp_path: Path, models: list[str], storage: str) -> None:
    write_bag(tmp_path / "bag", storage, "rgb8", [scene(t) for t in range(3)])
    (data,) = [p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3")]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    assert_one_line_error(cli("--model", models[0], "--bag", str(tmp_path / "bag"),
                              "--topic", "/cam/image_raw"))


def test_cli_unreadable_bag(tmp_path: Path, models: list[str]) -> None:
    bag = tmp_path / "junk.mcap"
    bag.write_bytes(b"this is not a bag" * 10)
    assert_one_line_error(cli("--model", models[0], "--bag", str(bag), "--topic", "/cam"))


def test_cli_empty_video(tmp_path: Path, models: list[str]) -> None:
    video = tmp_path / "empty.mp4"
    video.write_bytes(b"")
    assert_one_line_error(cli("--model", models[0], "--video", str(video)), "empty.mp4")


def test_cli_missing_model(good_bag: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("--model", str(tmp_path / "none.safetensors"), "--bag",
                              str(good_bag), "--topic", "/cam/image_raw"), "none.safetensors")


def test_cli_bad_checkpoint(good_bag: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    assert_one_line_error(cli("--model", str(bad), "--bag", str(good_bag), "--topic",
                              "/cam/image_raw"), "bad.safetensors")


def test_cli_usage_errors(good_bag: Path, models: list[str]) -> None:
    assert_one_line_error(cli("--model", models[0], "--bag", str(good_bag)), "--topic")
    assert_one_line_error(cli("--bag", str(good_bag), "--topic", "/cam/image_raw"), "--model")


def test_side_by_side_video_with_many_models(tmp_path: Path) -> None:
    """13 models beside a wide frame once made a frame too wide for mp4v and lost the run."""
    from etc_ros.labels import CITYSCAPES_PALETTE
    from etc_ros.tools.report import SideBySideVideo
    video = SideBySideVideo(tmp_path / "overlay.mp4", [f"model_{i}" for i in range(13)],
                            [CITYSCAPES_PALETTE] * 13, strip_frames=frozenset({0}))
    rgb = np.zeros((600, 868, 3), np.uint8)
    for _ in range(3):
        video.add(rgb, [np.zeros((600, 868), np.uint8)] * 13)
    video.close()
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    width = cap.get(cv2.CAP_PROP_FRAME_WIDTH)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert 0 < width <= 4096
    assert cv2.imread(str(tmp_path / "strip.png")).shape[1] == width
