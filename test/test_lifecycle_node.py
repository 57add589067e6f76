"""The node's managed lifecycle, driven from this process over the real lifecycle services
(lifecycle_msgs/srv/ChangeState, GetState) of a node process started with autostart:=false.

"No label" claims hold by ordering, not by waiting: the label topic is reliable and comes from
one writer, so once a label of a later frame has arrived, a label of an earlier frame would
have arrived before it.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_process import RELIABLE, REPO, NodeProcess, Observer, publish_until, stamp_of
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from etc_ros import image_io

ONNX = REPO / "etc_ros" / "weights" / "student_etc.onnx"  # no torch import: quick to start


class Driven:
    """A node process with autostart:=false and an observer that drives and watches it."""

    def __init__(self, tmp_path, name: str, model: str = str(ONNX)) -> None:
        self.name, self.camera, self.label = name, f"/{name}/image_raw", \
            f"/{name}/segmentation/label"
        self.node = NodeProcess(name, [
            "-p", f"image_topics:=['{self.camera}']", "-p", f"model_path:={model}",
            "-p", "device:=cpu", "-p", "autostart:=false", "-p", "input_reliability:=reliable",
            "-p", "diagnostics_period_s:=0.2"], tmp_path / f"{name}.log")
        self.obs = Observer(f"{name}_observer")
        self.obs.listen(self.label, Image)
        self.obs.listen("/diagnostics", DiagnosticArray)
        self.pub = self.obs.node.create_publisher(Image, self.camera, RELIABLE)
        self.tag = 0

    def change(self, transition: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        return self.obs.call(ChangeState, f"/{self.name}/change_state", request).success

    def state(self) -> str:
        return self.obs.call(GetState, f"/{self.name}/get_state",
                             GetState.Request()).current_state.label

    def set_parameter(self, name: str, value: object) -> tuple[bool, str]:
        request = SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()])
        result = self.obs.call(SetParameters, f"/{self.name}/set_parameters", request).results[0]
        return result.successful, result.reason

    def frame(self) -> Image:
        """The next frame, its stamp's seconds a running tag."""
        self.tag += 1
        msg = image_io.rgb8_to_image(np.full((48, 64, 3), self.tag % 256, np.uint8))
        msg.header.stamp.sec, msg.header.frame_id = self.tag, "camera"
        return msg

    def labelled_tags(self) -> set[int]:
        return {stamp_of(m)[0] for m in self.obs.got(self.label)}

    def serve_one(self) -> int:
        """Send frames until one of them is labelled; its tag."""
        first = self.tag + 1
        publish_until(self.pub, self.frame,
                      lambda: any(t >= first for t in self.labelled_tags()), "a label")
        return first

    def says(self, mark: int, text: str) -> bool:
        """A status of this camera, after the first `mark` diagnostics, with `text` in it."""
        return any(s.name.endswith(f": {self.camera}") and text in s.message
                   for msg in self.obs.got("/diagnostics")[mark:] for s in msg.status)

    def stop(self) -> tuple[int, str]:
        self.obs.close()
        return self.node.stop()


def test_labels_only_while_active_and_again_after_deactivate_activate(tmp_path):
    d = Driven(tmp_path, "lc_serve")
    try:
        assert d.state() == "unconfigured"
        for _ in range(5):
            d.pub.publish(d.frame())
        unconfigured_tags = set(range(1, d.tag + 1))

        assert d.change(Transition.TRANSITION_CONFIGURE) and d.state() == "inactive"
        mark = len(d.obs.got("/diagnostics"))
        wait_for(lambda: d.says(mark, "inactive"), 60, "diagnostics saying inactive")
        inactive_first = d.tag + 1
        for _ in range(5):
            d.pub.publish(d.frame())
        inactive_tags = set(range(inactive_first, d.tag + 1))

        assert d.change(Transition.TRANSITION_ACTIVATE) and d.state() == "active"
        d.serve_one()
        assert not d.labelled_tags() & (unconfigured_tags | inactive_tags)
        # Runtime parameters change while active; the model's only while unconfigured.
        assert d.set_parameter("overlay_alpha", 0.2) == (True, "")
        ok, reason = d.set_parameter("model_path", "/elsewhere.onnx")
        assert not ok and "restart required" in reason

        assert d.change(Transition.TRANSITION_DEACTIVATE) and d.state() == "inactive"
        mark = len(d.obs.got("/diagnostics"))
        wait_for(lambda: d.says(mark, "inactive"), 60, "diagnostics saying inactive again")
        paused_first = d.tag + 1
        for _ in range(5):
            d.pub.publish(d.frame())
        paused_tags = set(range(paused_first, d.tag + 1))

        assert d.change(Transition.TRANSITION_ACTIVATE) and d.state() == "active"
        d.serve_one()
        assert not d.labelled_tags() & paused_tags  # nothing queued while inactive

        assert d.change(Transition.TRANSITION_DEACTIVATE)
        assert d.change(Transition.TRANSITION_CLEANUP) and d.state() == "unconfigured"
        wait_for(lambda: d.obs.node.count_publishers(d.label) == 0, 60,
                 "the label publisher gone after cleanup")
    finally:
        code, out = d.stop()
    assert code == 0 and "Traceback" not in out, out[-3000:]


def test_failed_configure_keeps_the_process_alive_and_reports_why(tmp_path):
    missing = tmp_path / "missing.onnx"
    d = Driven(tmp_path, "lc_fail", model=str(missing))
    try:
        assert not d.change(Transition.TRANSITION_CONFIGURE)
        assert d.state() == "unconfigured" and d.node.alive()
        line = wait_for(lambda: next((ln for ln in d.node.output().splitlines()
                                      if "configure failed" in ln), None), 60, "the log line")
        assert str(missing) in line and "file not found" in line
        # Fixed while unconfigured, then it configures and serves.
        assert d.set_parameter("model_path", str(ONNX)) == (True, "")
        assert d.change(Transition.TRANSITION_CONFIGURE) and d.state() == "inactive"
        assert d.change(Transition.TRANSITION_ACTIVATE)
        d.serve_one()
    finally:
        code, out = d.stop()
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert out.count("configure failed") == 1, out[-3000:]


# How to reach each primary state from unconfigured.
PATHS = {
    "unconfigured": [],
    "inactive": [Transition.TRANSITION_CONFIGURE],
    "active": [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE],
    "finalized": [Transition.TRANSITION_UNCONFIGURED_SHUTDOWN],
}


@pytest.mark.parametrize("state", list(PATHS))
def test_sigint_in_every_state_exits_0_without_traceback(tmp_path, state):
    d = Driven(tmp_path, f"lc_sigint_{state}")
    try:
        for transition in PATHS[state]:
            assert d.change(transition)
        assert d.state() == state
        if state == "active":
            d.serve_one()
            for _ in range(3):  # frames in flight while the signal comes
                d.pub.publish(d.frame())
    finally:
        code, out = d.stop()
    assert code == 0, out[-3000:]
    assert "Traceback" not in out and "Error" not in out, out[-3000:]
