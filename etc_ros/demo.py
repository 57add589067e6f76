"""`python -m etc_ros.demo`: stable entry point; the tool is etc_ros/tools/demo.py."""

import sys

from etc_ros.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
