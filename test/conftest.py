"""Test-session environment: ROS traffic stays on this machine, in a domain of its own."""

import os
import random
import tempfile

# Set before anything imports rclpy; subprocesses (nodes under test) inherit it.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 100)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="etc_ros_test_log_"))
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from etc_ros.checkpoint import make_random_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random LR-ASPP checkpoint in the real format (64x128 model input)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    make_random_checkpoint(path, input_size=(64, 128))
    return path


def wait_for(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition"):
    """Poll until cond() is truthy; the timeout only guards against a hang."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
