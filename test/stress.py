"""`make stress`: the cross-process node tests, N runs in a row, under a CPU hog.

Rare failures (a crash at exit, a traceback while stopping) show up under load, not in one
quiet run. Each run is one pytest process running every selected test (a fresh random ROS
domain each time, as in `make test`) while one busy-looping process per core keeps the machine
saturated. Prints pass/fail counts per test; the output of every failed run is kept in
--log-dir. Exit code 1 if any run failed.

    make stress N=10
    .venv/bin/python test/stress.py --runs 3 test/test_node.py::test_flood_drops_frames_...
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
# The tests that start node processes and stop them with signals, or rely on timing (the
# lifecycle tests whole: every transition and SIGINT in every state).
CROSS_PROCESS_TESTS = (
    "test/test_node_faults.py::test_startup_failures_print_one_line_and_exit_nonzero",
    "test/test_node_faults.py::test_worker_faults_show_error_on_diagnostics_and_serving_resumes",
    "test/test_node.py::test_reliable_and_best_effort_publishers_at_vga_720p_1080p",
    "test/test_node.py::test_node_process_stops_cleanly_while_publishing",
    "test/test_node.py::test_flood_drops_frames_instead_of_queueing",
    "test/test_demo.py::test_demo_end_to_end",
    "test/test_demo.py::test_demo_node_failure_is_one_line",
    "test/test_launch_config.py::test_node_loads_the_profile_by_itself_under_a_bare_ros2_run",
    "test/test_lifecycle_node.py",
    "test/test_camera_info_node.py::test_camera_info_matches_the_labels_at_both_resolutions",
    "test/test_torch_free_node.py::test_node_without_torch_labels_as_the_torch_backend",
)
HOG = "while True: pass"


def _outcomes(junit: Path) -> dict[str, str]:
    """test id (file::name[param]) -> passed | failed | skipped, from pytest's JUnit XML."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        name = f"{module}.py::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[name] = "failed"
        elif case.find("skipped") is not None:
            outcomes[name] = "skipped"
        else:
            outcomes[name] = "passed"
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="*", default=list(CROSS_PROCESS_TESTS),
                        help="pytest node ids (default: the cross-process node tests)")
    parser.add_argument("--runs", type=int, default=10, help="runs in a row (default 10)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1,
                        help="busy-looping processes during the runs (default: one per core)")
    parser.add_argument("--log-dir", type=Path, default=REPO / ".stress",
                        help="where the output of failed runs goes (default .stress/)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.log_dir.mkdir(parents=True, exist_ok=True)

    counts: dict[str, Counter] = {}
    failed_runs = []
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    try:
        for run in tqdm(range(1, args.runs + 1), desc="stress runs", unit="run"):
            junit = args.log_dir / f"run{run}.xml"
            start = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--junitxml={junit}", *args.tests],
                cwd=REPO, capture_output=True, text=True, check=False)
            outcomes = _outcomes(junit) if junit.is_file() else {}
            for test, outcome in outcomes.items():
                counts.setdefault(test, Counter())[outcome] += 1
            failed = sorted(t for t, o in outcomes.items() if o == "failed")
            if proc.returncode != 0:
                log = args.log_dir / f"run{run}.log"
                log.write_text(proc.stdout + proc.stderr)
                failed_runs.append(run)
                what = ", ".join(failed) or f"pytest exit code {proc.returncode}"
                tqdm.write(f"run {run}: FAILED ({what}), output in {log}")
            else:
                tqdm.write(f"run {run}: passed in {time.monotonic() - start:.0f} s")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    width = max(len(t) for t in counts) if counts else 10
    print(f"\n{'test':<{width}}  passed  failed  skipped")
    for test in sorted(counts):
        c = counts[test]
        print(f"{test:<{width}}  {c['passed']:>6}  {c['failed']:>6}  {c['skipped']:>7}")
    print(f"{args.runs - len(failed_runs)}/{args.runs} runs passed under {args.hogs} CPU hogs")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
