"""The robot install path: `colcon build` in a workspace, then the installed node, sourced.

colcon comes from PyPI here (colcon-common-extensions), as on a robot it comes from apt. The
source folder is deleted after the build, so anything the installed package still looked up
next to its source would fail: weights, config, launch file and demo clip must come from the
install prefix through ament_index_python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from etc_ros import image_io

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ("setup.py", "setup.cfg", "package.xml", "resource", "etc_ros", "launch",
                 "config", "assets")
COLCON = Path(sys.executable).with_name("colcon")


def sourced(ws: Path, command: str) -> list[str]:
    """bash running ``command`` in the environment install/setup.bash gives."""
    return ["bash", "-c", f"source {ws}/install/setup.bash && {command}"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "etc_ros"
    src.mkdir(parents=True)
    for name in PACKAGE_FILES:
        item = REPO / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(item, src / name)
    proc = subprocess.run([str(COLCON), "build", "--packages-select", "etc_ros"], cwd=ws,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shutil.rmtree(ws / "src")  # nothing may be found next to the source from here on
    return ws


def test_installed_files_are_found_through_the_ament_index(workspace: Path) -> None:
    share = workspace / "install" / "etc_ros" / "share" / "etc_ros"
    script = ("from ament_index_python.packages import get_package_share_directory as g; "
              "import etc_ros, etc_ros.node as n; from etc_ros.resources import resource; "
              "print(g('etc_ros')); print(etc_ros.__file__); print(n.DEFAULT_MODEL); "
              "print(resource('config', 'segmentation.yaml')); "
              "print(resource('launch', 'segmentation.launch.py')); "
              "print(resource('assets', 'demo_street.mp4'))")
    proc = subprocess.run(sourced(workspace, f'{sys.executable} -c "{script}"'),
                          capture_output=True, text=True, timeout=120, cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert Path(lines[0]) == share
    assert lines[1].startswith(str(workspace / "install")), "imported etc_ros from the checkout"
    for found in lines[2:]:
        assert found.startswith(str(share)), found
        assert Path(found).is_file(), found


def test_installed_node_segments_with_its_default_model(workspace: Path) -> None:
    node_exe = workspace / "install" / "etc_ros" / "lib" / "etc_ros" / "segmentation_node"
    params = workspace / "install" / "etc_ros" / "share" / "etc_ros" / "config" / \
        "segmentation.yaml"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        sourced(workspace, f"exec {node_exe} --ros-args --params-file {params} "
                           "-p image_topics:=[/install_cam/image_raw] -p device:=cpu"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workspace)
    rclpy.init()
    node = Node("install_test_client")
    labels: list[Image] = []
    node.create_subscription(Image, "/install_cam/segmentation/label", labels.append,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    pub = node.create_publisher(Image, "/install_cam/image_raw", 10)
    try:
        rgb = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
        end = time.monotonic() + 120
        while not labels and time.monotonic() < end and proc.poll() is None:
            if pub.get_subscription_count():
                pub.publish(image_io.numpy_to_image(rgb, "rgb8"))
            rclpy.spin_once(node, timeout_sec=0.5)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert labels, "no label from the installed node"
        assert (labels[0].height, labels[0].width) == (96, 160)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        node.destroy_node()
        rclpy.shutdown()
    share = workspace / "install" / "etc_ros" / "share" / "etc_ros"
    assert f"with {share}/weights/student_etc.safetensors" in out, out[-2000:]


# import name -> rosdep key, for everything the installed package (runtime and tools) imports
ROSDEP_KEYS = {
    "rclpy": "rclpy", "lifecycle_msgs": "lifecycle_msgs", "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "rcl_interfaces": "rcl_interfaces",
    "ament_index_python": "ament_index_python", "launch": "launch", "launch_ros": "launch_ros",
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "torch": "python3-torch", "torchvision": "python3-torchvision",
    "safetensors": "python3-safetensors-pip", "onnx": "python3-onnx-pip",
    "onnxruntime": "python3-onnxruntime-pip", "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib", "rosbags": "python3-rosbags-pip",
}


def test_package_xml_declares_every_import() -> None:
    """A module imported by the package but missing from package.xml breaks `rosdep install`."""
    import ast
    import xml.etree.ElementTree as ET

    declared = {e.text for e in ET.parse(REPO / "package.xml").getroot().iter("exec_depend")}
    imported: dict[str, Path] = {}
    for path in [*(REPO / "etc_ros").rglob("*.py"), *(REPO / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and not node.level else [])
            for name in names:
                imported.setdefault(name.split(".")[0], path)
    third_party = {m: p for m, p in imported.items()
                   if m not in sys.stdlib_module_names and m != "etc_ros"}
    unknown = {m: str(p) for m, p in third_party.items() if m not in ROSDEP_KEYS}
    assert not unknown, f"imports without a known rosdep key: {unknown}"
    missing = {m: ROSDEP_KEYS[m] for m in third_party if ROSDEP_KEYS[m] not in declared}
    assert not missing, f"package.xml lacks: {missing}"


def test_unconditional_dependencies_are_the_torch_free_node_s() -> None:
    """What the node imports with a .onnx model (torch blocked) is installed by a plain
    `rosdep install`; torch and everything only the torch path needs waits for
    ETC_ROS_TORCH=true."""
    import xml.etree.ElementTree as ET

    script = ("import sys; sys.path.insert(0, 'test'); from without_torch import block_torch; "
              "block_torch(); import etc_ros.node, etc_ros.tc_monitor, onnxruntime; "
              "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    root = ET.parse(REPO / "package.xml").getroot()
    plain = {e.text for e in root.iter("exec_depend") if not e.get("condition")}
    needed = {ROSDEP_KEYS[m] for m in imported if m in ROSDEP_KEYS}
    assert needed <= plain, f"conditional but imported by the node: {needed - plain}"
    assert not {"python3-torch", "python3-torchvision", "python3-safetensors-pip"} & plain
