"""config/ and launch/ agree with the node: params file, launch arguments, DDS profile, RViz."""
from __future__ import annotations

import ast
import importlib.util
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.context import Context
from rclpy.parameter import Parameter

from etc_ros.checkpoint import make_random_checkpoint
from etc_ros.node import SegmentationNode

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "config" / "segmentation.yaml"
LAUNCH_FILE = REPO / "launch" / "segmentation.launch.py"
# Declared by every rclpy node, not by ours.
ROS_BUILTIN = {"use_sim_time", "start_type_description_service"}


@pytest.fixture(scope="module")
def declared(tmp_path_factory) -> dict[str, object]:
    """The node's declared parameters and defaults (only model_path overridden)."""
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    make_random_checkpoint(ckpt, input_size=(64, 128))
    context = Context()
    rclpy.init(context=context)
    try:
        node = SegmentationNode(context=context, parameter_overrides=[
            Parameter("model_path", value=str(ckpt))])
        names = set(node.list_parameters([], 0).names) - ROS_BUILTIN
        values = {name: node.get_parameter(name).value for name in names}
        values["image_topics"] = list(values["image_topics"])
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return values


def test_params_file_lists_every_parameter_with_its_default_and_a_comment(declared):
    params = yaml.safe_load(PARAMS_FILE.read_text())["segmentation_node"]["ros__parameters"]
    assert set(params) == set(declared)
    for name, value in params.items():
        if name != "model_path":  # overridden above; the file keeps "" = packaged weights
            assert value == declared[name], name
    assert params["model_path"] == ""
    lines = PARAMS_FILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().split(":")[0] in params and line.startswith("    "):
            assert lines[i - 1].strip().startswith("#"), f"{line.strip()} has no comment"


def test_launch_overrides_are_node_parameters(declared):
    tree = ast.parse(LAUNCH_FILE.read_text())
    overrides = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", "") == "OVERRIDES")
    names = {key.value for key in overrides.keys}
    assert {"image_topics", "model_path", "device"} <= names <= set(declared)


def test_launch_description_builds():
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros has no PyPI wheel here; runs where ROS 2 is sourced")
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument
    spec = importlib.util.spec_from_file_location("segmentation_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    args = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"image_topics", "params_file", "model_path", "device", "namespace",
            "rviz"} <= args


def test_fastdds_profile_has_a_32mb_shared_memory_segment():
    root = ET.parse(REPO / "config" / "fastdds_shm.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    sizes = [int(e.text) for e in root.iterfind(".//d:transport_descriptor/d:segment_size", ns)]
    assert sizes and max(sizes) >= 32 * 1024 * 1024
    default = root.find(".//d:participant[@is_default_profile='true']", ns)
    assert default is not None


# A node's process: which Fast DDS threads does its participant run?
_THREADS = """
import os, rclpy
from rclpy.node import Node
rclpy.init()
node = Node("profile_probe")
names = {open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")}
print(",".join(sorted(names)))
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.parametrize("profile", [True, False], ids=["with profile", "Fast DDS default"])
def test_fastdds_profile_turns_the_type_lookup_service_off(profile):
    """No TypeLookup threads with our profile (they race with participant teardown: SIGSEGV).

    The run without the profile shows that Fast DDS starts them by default, so the check is
    looking at the right threads ("dds.tls.*").
    """
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
    out = subprocess.run([sys.executable, "-c", _THREADS], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    threads = out.strip().splitlines()[-1].split(",")
    assert any(t.startswith("dds.") for t in threads), threads  # a participant is running
    assert any(t.startswith("dds.tls") for t in threads) is not profile, threads


def _thread_names(pid: int) -> set[str]:
    names = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.add((task / "comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names


def test_node_loads_the_profile_by_itself_under_a_bare_ros2_run(checkpoint: Path):
    """`ros2 run etc_ros segmentation_node` sets no FASTDDS_DEFAULT_PROFILES_FILE; the node then
    loads ours itself (no TypeLookup threads), so it is safe without the launch file too."""
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    node = subprocess.Popen([sys.executable, "-m", "etc_ros.node", "--ros-args", "-p",
                             f"model_path:={checkpoint}", "-p", "device:=cpu"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The node logs "segmenting ..." once built; its participant (rclpy.init) came before.
        for line in node.stderr:
            if "segmenting" in line:
                break
        assert node.poll() is None, "the node exited before it was serving"
        threads = _thread_names(node.pid)
        assert any(t.startswith("dds.") for t in threads), threads  # a participant is running
        assert not any(t.startswith("dds.tls") for t in threads), threads
    finally:
        node.send_signal(signal.SIGINT)
        _, err = node.communicate(timeout=60)
    assert node.returncode == 0, err[-2000:]


def test_rviz_config_shows_input_overlay_and_color():
    config = yaml.safe_load((REPO / "config" / "etc_ros.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"]}
    assert topics == {"/camera/image_raw", "/camera/segmentation/overlay",
                      "/camera/segmentation/color"}
