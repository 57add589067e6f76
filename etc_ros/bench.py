"""`python -m etc_ros.bench`: stable entry point; the tool is etc_ros/tools/bench.py."""

import sys

from etc_ros.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
