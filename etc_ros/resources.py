"""Where the package's files live: the ament share directory once installed, else the checkout.

On a robot the package is built with colcon and sourced (``install/setup.bash``), and its
weights, config, launch files and demo clip are found through the ament resource index, never
next to the source. Off-robot (``pip install -e .`` in .venv) nothing is installed under a share
directory and the checkout holds the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "etc_ros"
_CHECKOUT = Path(__file__).resolve().parents[1]
# share/<pkg>/<folder> once installed -> where the same folder sits in the checkout
_CHECKOUT_FOLDERS = {"weights": _CHECKOUT / PACKAGE / "weights", "config": _CHECKOUT / "config",
                     "launch": _CHECKOUT / "launch", "assets": _CHECKOUT / "assets"}


def share_dir() -> Path | None:
    """The installed package's share directory, or None when the package is not installed."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, LookupError, ValueError, OSError):  # OSError: no prefix path
        return None


def resource(folder: str, name: str) -> Path:
    """``<share>/<folder>/<name>`` when installed, else the checkout's copy of it."""
    if folder not in _CHECKOUT_FOLDERS:
        raise ValueError(f"unknown resource folder {folder!r}; one of {sorted(_CHECKOUT_FOLDERS)}")
    share = share_dir()
    base = share / folder if share is not None else _CHECKOUT_FOLDERS[folder]
    return base / name


# The model the node, the demo and the bench run when none is given: one path for all of them.
DEFAULT_MODEL = resource("weights", "student_etc.safetensors")


def use_fastdds_profile() -> None:
    """Make Fast DDS load our profile (``config/fastdds_shm.xml``) unless one is already set.

    It carries camera-sized frames whole over shared memory and turns off the TypeLookup service
    (whose teardown race crashes a participant destroyed while answering a peer). Call it before
    ``rclpy.init``: Fast DDS reads the variable when the first participant is created.
    """
    profile = resource("config", "fastdds_shm.xml")
    if profile.is_file():
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
