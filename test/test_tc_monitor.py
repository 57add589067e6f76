"""LiveTCMonitor: static scenes score ~100, random labels score low, submit never blocks."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from etc_ros.tc_monitor import LiveTCMonitor
from etc_ros.temporal import PairCounts


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random rgb texture so DIS has gradients to track."""
    noise = np.random.default_rng(seed).random((h // 4, w // 4)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 255, 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def block_labels(seed: int, h: int = 64, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 19, (h // 16, w // 16)), np.ones((16, 16))).astype(np.uint8)


@pytest.fixture
def monitor():
    mon = LiveTCMonitor(num_classes=19, scale=0.25, preset="ultrafast", window=10)
    yield mon
    mon.close()


def test_static_scene_is_about_100(monitor: LiveTCMonitor) -> None:
    assert monitor.value() is None
    rgb, labels = textured(64, 128, seed=4), block_labels(0)
    for _ in range(4):
        monitor.submit(labels, rgb)
        assert monitor.drain(timeout=60)
    assert monitor.pairs_done == 3 and monitor.errors == 0
    assert monitor.value() == pytest.approx(100.0, abs=1.0)


def test_random_labels_score_low(monitor: LiveTCMonitor) -> None:
    rng = np.random.default_rng(5)
    rgb = textured(64, 128, seed=5)
    for _ in range(4):
        monitor.submit(rng.integers(0, 19, (64, 128)).astype(np.uint8), rgb)
        assert monitor.drain(timeout=60)
    assert monitor.errors == 0
    assert monitor.value() is not None and monitor.value() < 25.0


def test_submit_does_not_block_while_worker_busy(monitor: LiveTCMonitor,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []

    def slow_pair(prev, cur) -> PairCounts:
        seen.append((int(prev[0][0, 0]), int(cur[0][0, 0])))
        started.set()
        release.wait()
        # class 0 on 2 px in each frame, 1 shared: TC 50 % over the model's own class set
        return PairCounts(np.array([1, 0]), np.array([3, 0]) - 1, np.array([2, 0]), 1, 3)

    monkeypatch.setattr(monitor, "_pair_tc", slow_pair)
    rgb = np.zeros((8, 8, 3), np.uint8)
    frames = [np.full((8, 8), i, np.uint8) for i in range(5)]
    monitor.submit(frames[0], rgb)
    monitor.submit(frames[1], rgb)
    assert started.wait(timeout=60)  # the worker is now stuck inside pair (0, 1)

    submitter = threading.Thread(target=lambda: [monitor.submit(f, rgb) for f in frames[2:]])
    submitter.start()
    submitter.join(timeout=60)
    blocked = submitter.is_alive()
    release.set()
    assert not blocked, "submit waited for the busy worker"
    assert monitor.drain(timeout=60)
    # pairs (1,2) and (2,3) were superseded; only the newest pending pair ran
    assert seen == [(0, 1), (3, 4)]
    assert monitor.pairs_dropped == 2 and monitor.value() == pytest.approx(50.0)


def test_numpy_flow_check_and_label_warp_match_the_torch_ones():
    """The monitor's TC runs on numpy (no torch on a robot); evaluate and the training losses
    use the torch warp. On real street frames both give the same mask and warped labels."""
    import torch

    from etc_ros.resources import resource
    from etc_ros.temporal import (
        compute_flow,
        fb_consistent,
        flow_to_tensor,
        forward_backward_mask,
        warp,
        warp_labels,
    )

    cap = cv2.VideoCapture(str(resource("assets", "demo_street.mp4")))
    frames = []
    for _ in range(3):
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(cv2.resize(bgr, (320, 160)), cv2.COLOR_BGR2RGB))
    cap.release()
    labels = block_labels(5, 160, 320)
    for a, b in zip(frames, frames[1:], strict=False):
        fw, bw = compute_flow(a, b, "medium"), compute_flow(b, a, "medium")
        torch_mask = forward_backward_mask(flow_to_tensor(fw), flow_to_tensor(bw))[0, 0].numpy()
        mask = fb_consistent(fw, bw)
        assert 0.2 < mask.mean() < 1.0  # a real mix of consistent and inconsistent pixels
        np.testing.assert_array_equal(mask, torch_mask)
        lab = torch.from_numpy(labels.astype(np.int64))[None, None]
        torch_warped, torch_inside = warp(lab, flow_to_tensor(fw), mode="nearest")
        warped, inside = warp_labels(labels, fw)
        np.testing.assert_array_equal(inside, torch_inside[0, 0].numpy())
        np.testing.assert_array_equal(warped[inside], torch_warped[0, 0].numpy()[inside])
