"""`python -m etc_ros.evaluate`: stable entry point; the tool is etc_ros/tools/evaluate.py."""

import sys

from etc_ros.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
