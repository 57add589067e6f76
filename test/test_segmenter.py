"""Segmenter and resolve_device on a tiny random checkpoint (real torch model, CPU)."""
from __future__ import annotations

import numpy as np
import pytest

from etc_ros import backends
from etc_ros.segmenter import Device, Segmenter, resolve_device


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> Segmenter:
    seg = Segmenter(checkpoint, "cpu")
    seg.warmup()
    return seg


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resolve_device_without_cuda(monkeypatch):
    # Test double for the driver's answer: pretend CUDA is absent whatever the machine has.
    monkeypatch.setattr(backends, "cuda_device_count", lambda: 0)
    warnings: list[str] = []
    assert resolve_device("auto", warn=warnings.append) == Device("cpu")
    assert len(warnings) == 1 and "CPU" in warnings[0]
    assert resolve_device(" CPU ") == Device("cpu") and str(Device("cuda", 1)) == "cuda:1"
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available") as err:
            resolve_device(spec)
        assert "\n" not in str(err.value)
    for spec in ("gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="unknown device"):
            resolve_device(spec)


def test_resolve_device_with_two_gpus(monkeypatch):
    monkeypatch.setattr(backends, "cuda_device_count", lambda: 2)
    assert resolve_device("auto") == Device("cuda")
    assert resolve_device("cuda:1") == Device("cuda", 1)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_device("cuda:2")


def test_release_frees_the_model(checkpoint):
    seg = Segmenter(checkpoint, "cpu")
    seg.close()
    assert seg.backend.model is None


def test_labels_at_input_resolution_for_a_mixed_batch(segmenter):
    images = [_rgb(50, 70, 0), _rgb(64, 128, 1), _rgb(200, 300, 2)]
    results = segmenter.segment(images, want_confidence=True)
    assert segmenter.precision == "fp32" and segmenter.last_timings.batch_size == 3
    for img, res in zip(images, results, strict=True):
        assert res.labels.shape == img.shape[:2] and res.labels.dtype == np.uint8
        assert res.labels.max() < len(segmenter.meta.class_names)
        assert res.confidence.shape == img.shape[:2] and res.confidence.dtype == np.float32
        assert 0.0 < res.confidence.min() and res.confidence.max() <= 1.0 + 1e-6
    assert all(r.confidence is None for r in segmenter.segment(images[:1]))
    assert segmenter.segment([]) == []


def test_batching_does_not_change_the_result(segmenter):
    a, b = _rgb(64, 128, 3), _rgb(90, 100, 4)
    alone = segmenter.segment([a])[0].labels
    batched = segmenter.segment([b, a])[1].labels
    assert (alone == batched).mean() > 0.999


def test_model_resolution_output_and_nearest_upscaling(checkpoint):
    small = Segmenter(checkpoint, "cpu", model_resolution_output=True)
    big = Segmenter(checkpoint, "cpu")
    img = _rgb(256, 512, 5)
    low = small.segment([img])[0].labels
    high = big.segment([img])[0].labels
    assert low.shape == (64, 128) and high.shape == (256, 512)
    # Nearest neighbour: every 4x4 block of the input-resolution labels is one model pixel.
    assert (high[1::4, 1::4] == low).all()
    assert set(np.unique(high)) <= set(np.unique(low))


def test_bad_arguments(checkpoint):
    with pytest.raises(ValueError, match="CUDA"):
        Segmenter(checkpoint, "cpu", half=True)
    seg = Segmenter(checkpoint, "cpu")
    with pytest.raises(ValueError, match="uint8"):
        seg.segment([np.zeros((10, 10), np.uint8)])
