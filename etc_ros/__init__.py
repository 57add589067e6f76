"""etc_ros: temporally consistent per-frame semantic segmentation for ROS 2 cameras."""
