"""ament_python package: `colcon build` on a robot, `pip install -e .` off-robot (make venv)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "etc_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/weights", glob(f"{PACKAGE}/weights/*.safetensors")
         + glob(f"{PACKAGE}/weights/*.onnx")),
        (f"share/{PACKAGE}/assets", glob("assets/*.mp4")),
    ],
    # ROS and system packages come from rosdep (package.xml); pip users pick an extra. The
    # node's runtime is torch-free: a .onnx model on ONNX Runtime ("robot", or "robot-gpu" for
    # CUDA/TensorRT). torch only for the torch backend, .safetensors checkpoints and export.
    install_requires=["setuptools"],
    extras_require={
        "robot": ["numpy", "opencv-python-headless", "pyyaml", "onnxruntime"],
        "robot-gpu": ["numpy", "opencv-python-headless", "pyyaml", "onnxruntime-gpu"],
        "torch": ["torch", "torchvision", "safetensors", "onnx"],
        "tools": ["tqdm", "matplotlib", "rosbags"],
    },
    zip_safe=False,
    maintainer="etc_ros team",
    maintainer_email="team@etc-ros.invalid",
    description="Temporally consistent per-frame semantic segmentation node (ETC, ECCV 2020).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"segmentation_node = {PACKAGE}.node:main",
            f"replay = {PACKAGE}.tools.replay:main",
            f"evaluate = {PACKAGE}.tools.evaluate:main",
            f"bench = {PACKAGE}.tools.bench:main",
            f"export_onnx = {PACKAGE}.export_onnx:main",
        ],
    },
)
