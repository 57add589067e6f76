"""`python -m etc_ros.replay`: stable entry point; the tool is etc_ros/tools/replay.py."""

import sys

from etc_ros.tools.replay import main

if __name__ == "__main__":
    sys.exit(main())
