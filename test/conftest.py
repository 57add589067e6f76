"""Test-session environment: ROS traffic stays on this machine, in a domain of its own."""

import os
import random
import tempfile

# Set before anything imports rclpy; subprocesses (nodes under test) inherit it.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 100)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="etc_ros_test_log_"))
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
