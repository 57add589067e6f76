"""Launch etc_ros's segmentation node (and optionally RViz) with the large-frame DDS profile.

    ros2 launch etc_ros segmentation.launch.py image_topics:="['/cam/image_raw']" rviz:=true
    ros2 launch etc_ros segmentation.launch.py autostart:=false   # a lifecycle manager drives it

Arguments left empty keep the value from `params_file` (config/segmentation.yaml by default).
"""
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

NODE_NAME = "segmentation_node"
# Launch arguments that override the parameter of the same name when given (not empty).
OVERRIDES = {
    "image_topics": "Input image topics, a YAML list, e.g. \"['/cam/image_raw']\".",
    "model_path": "etc_ros checkpoint (.safetensors or .onnx).",
    "device": "auto | cpu | cuda | cuda:N.",
    "backend": "auto | torch | onnxruntime (auto: onnxruntime for a .onnx model).",
    "cpu_threads": "Intra-op CPU threads of the model; 0 = one per usable core.",
    "output_resolution": "input | model: resolution of the label image.",
    "input_reliability": "auto | reliable | best_effort.",
    "overlay_alpha": "Weight of the class colours in the overlay, 0..1.",
    "mono16_bits": "Significant bits of mono16/16UC1 input (8..16, e.g. 12).",
    "latency_budget_ms": "Diagnostics WARN above this p95 latency (ms).",
    "tc_monitor": "true: live temporal-consistency monitor in /diagnostics.",
    "camera_info_topics": "CameraInfo topic per image topic, a YAML list ('' = beside it).",
    "autostart": "true: configure + activate at start; false: a lifecycle manager does.",
}


def _segmentation_node(context: LaunchContext) -> list[Node]:
    """Params file first, then the non-empty arguments; loaded here so any namespace works."""
    params_file = LaunchConfiguration("params_file").perform(context)
    data = yaml.safe_load(Path(params_file).read_text()) or {}
    params = dict(data.get(NODE_NAME, {}).get("ros__parameters", {}))
    for name in OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value:
            params[name] = value if name == "model_path" else yaml.safe_load(value)
    for name in ("image_topics", "camera_info_topics"):
        if isinstance(params.get(name), str):  # image_topics:=/cam/image_raw
            params[name] = [params[name]]
    return [Node(
        package="etc_ros", executable=NODE_NAME, name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"), parameters=[params],
        output="screen", emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("etc_ros"))
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(share / "config" /
                                                               "segmentation.yaml"),
                              description="Node parameters (YAML)."),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
        *(DeclareLaunchArgument(name, default_value="", description=f"{text} Empty: from "
                                "params_file.") for name, text in OVERRIDES.items()),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=str(share / "config" / "fastdds_shm.xml"),
                              description="Fast DDS XML profile for large frames (32 MB shared "
                              "memory); the camera's process must load it too."),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz."),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               LaunchConfiguration("fastdds_profile")),
        OpaqueFunction(function=_segmentation_node),
        Node(package="rviz2", executable="rviz2", name="rviz2",
             arguments=["-d", str(share / "config" / "etc_ros.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
