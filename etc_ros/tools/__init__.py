"""Offline tools around the node: replay, evaluate, report, bench, demo (not on the robot)."""
