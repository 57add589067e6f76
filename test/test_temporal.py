"""Hand-computable checks of flow, warping, masks and the TC metric in etc_ros.temporal."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from etc_ros import temporal


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture: DIS needs gradients at several scales to lock on."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h // 4, w // 4)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = cv2.GaussianBlur(img, (5, 5), 1.0)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.repeat(img[:, :, None], 3, axis=2).astype(np.uint8)


def const_flow(h: int, w: int, fx: float, fy: float) -> np.ndarray:
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = fx, fy
    return flow


def test_warp_shifted_tensor_with_exact_flow_reproduces_it() -> None:
    torch.manual_seed(0)
    base = torch.randn(1, 3, 20, 30)
    # dst is src moved right by 3 and down by 2: src[y, x] == dst[y + 2, x + 3]
    dst = torch.roll(base, shifts=(2, 3), dims=(2, 3))
    flow = temporal.flow_to_tensor(const_flow(20, 30, 3, 2))
    warped, valid = temporal.warp(dst, flow)
    assert valid.shape == (1, 1, 20, 30) and valid.dtype == torch.bool
    assert not valid[0, 0, -2:, :].any() and not valid[0, 0, :, -3:].any()
    assert valid[0, 0, :-2, :-3].all()
    assert torch.allclose(warped[..., :-2, :-3], base[..., :-2, :-3], atol=1e-5)


def test_warp_bilinear_half_pixel_interpolates() -> None:
    t = torch.tensor([[[[0.0, 2.0, 4.0]]]])
    warped, valid = temporal.warp(t, temporal.flow_to_tensor(const_flow(1, 3, 0.5, 0)))
    assert torch.allclose(warped[0, 0, 0, :2], torch.tensor([1.0, 3.0]))
    assert valid[0, 0, 0].tolist() == [True, True, False]


def test_warp_half_precision_input_samples_on_exact_grid() -> None:
    ramp = torch.arange(1001, dtype=torch.float16).view(1, 1, 1, 1001)
    warped, valid = temporal.warp(ramp, torch.zeros(1, 2, 1, 1001, dtype=torch.float16))
    assert warped.dtype == torch.float16 and valid.all()
    assert torch.equal(warped, ramp)


def test_warp_labels_nearest_keeps_ids_and_rejects_bilinear() -> None:
    labels = np.array([[1, 7, 3, 9]], np.uint8)
    warped, inside = temporal.warp_labels(labels, const_flow(1, 4, 0.6, 0))
    assert warped.dtype == np.uint8
    assert warped[0, :3].tolist() == [7, 3, 9]  # 0.6 rounds to the next pixel, never a blend
    assert inside.tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="nearest"):
        temporal.warp(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.zeros(1, 2, 2, 2))


def test_dis_recovers_known_shift_in_interior() -> None:
    h, w = 96, 128
    big = textured(h + 20, w + 20, seed=1)
    src = big[10:10 + h, 10:10 + w]
    dst = big[10 - 2:10 - 2 + h, 10 - 3:10 - 3 + w]  # content moves by (+3, +2)
    flow = temporal.compute_flow(src, dst, "medium")
    assert flow.shape == (h, w, 2) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16].reshape(-1, 2)
    assert np.allclose(np.median(interior, axis=0), [3.0, 2.0], atol=0.25)
    assert np.mean(np.linalg.norm(interior - [3.0, 2.0], axis=1) < 0.5) > 0.9


def test_compute_flow_rejects_bad_preset_and_dtype() -> None:
    img = textured(32, 32)
    with pytest.raises(ValueError, match="preset"):
        temporal.compute_flow(img, img, "slowest")
    with pytest.raises(ValueError, match="uint8"):
        temporal.compute_flow(img.astype(np.float32), img)


def test_forward_backward_mask_flags_occluded_region() -> None:
    h, w = 16, 24
    fw = const_flow(h, w, 2, 0)
    bw = const_flow(h, w, -2, 0)
    bw[4:10, 8:14] = 0.0  # target region sees a different motion backwards: occlusion
    mask = temporal.forward_backward_mask(temporal.flow_to_tensor(fw), temporal.flow_to_tensor(bw))
    m = mask[0, 0].numpy()
    assert m.dtype == bool
    # pixels whose forward target lands in the inconsistent region fail
    assert not m[5:9, 7:11].any()
    # consistent pixels inside the frame pass; those leaving the frame fail
    assert m[12:, :20].all()
    assert not m[:, -2:].any()


def test_photometric_mask_is_one_for_identical_and_small_for_different() -> None:
    a = torch.randn(1, 3, 4, 4)
    assert torch.allclose(temporal.photometric_mask(a, a), torch.ones(1, 1, 4, 4))
    m = temporal.photometric_mask(a, a + 2.0)
    assert torch.allclose(m, torch.full((1, 1, 4, 4), float(np.exp(-6.0))))


def pair_tc(counts: temporal.PairCounts) -> float | None:
    """TC of one pair over the classes present in it."""
    return temporal.tc_over_classes(counts.inter, counts.union, np.flatnonzero(counts.union > 0))


def test_tc_shifted_labels_with_exact_flow_is_100() -> None:
    rng = np.random.default_rng(0)
    h, w = 24, 32
    big = np.kron(rng.integers(0, 5, (h // 4 + 2, w // 4 + 2)), np.ones((4, 4), np.int64))
    pred_t = big[4:4 + h, 4:4 + w].astype(np.uint8)
    pred_t1 = big[4 - 1:4 - 1 + h, 4 - 3:4 - 3 + w].astype(np.uint8)  # moves by (+3, +1)
    tc = temporal.TemporalConsistency(5)
    assert pair_tc(tc.update(pred_t, pred_t1, const_flow(h, w, 3, 1))) == pytest.approx(100.0)
    # the same pair with zero flow is clearly worse: the metric does depend on the warp
    assert pair_tc(tc.update(pred_t, pred_t1, const_flow(h, w, 0, 0))) < 90.0
    res = tc.result()
    assert len(res["per_frame"]) == 2 and res["per_frame"][0] == pytest.approx(100.0)
    assert res["per_frame_pixel"][0] == pytest.approx(100.0)
    assert set(res["per_class"]) <= set(range(5))


def test_tc_random_labels_is_low_and_per_class_names() -> None:
    rng = np.random.default_rng(1)
    tc = temporal.TemporalConsistency(3, class_names=["road", "car", "sky"])
    for _ in range(3):
        a = rng.integers(0, 3, (20, 20)).astype(np.uint8)
        b = rng.integers(0, 3, (20, 20)).astype(np.uint8)
        tc.update(a, b, const_flow(20, 20, 0, 0))
    res = tc.result()
    assert res["tc"] < 40.0  # chance level for 3 balanced classes is 20%
    assert set(res["per_class"]) == {"road", "car", "sky"}
    assert res["tc_classes"] == ["road", "car", "sky"]


def test_tc_ignores_invalid_pixels_and_ignore_ids() -> None:
    a = np.array([[0, 1], [1, 255]], np.uint8)
    b = np.array([[0, 0], [1, 255]], np.uint8)
    valid = np.array([[True, False], [True, True]])
    tc = temporal.TemporalConsistency(2)
    # only pixels (0,0) -> class 0 agrees and (1,0) -> class 1 agrees are counted
    assert pair_tc(tc.update(a, b, const_flow(2, 2, 0, 0), valid)) == pytest.approx(100.0)
    assert pair_tc(tc.update(a, b, const_flow(2, 2, 0, 0))) == pytest.approx((50.0 + 50.0) / 2)


def test_pixel_tc_on_a_hand_made_pair() -> None:
    """4x4, zero flow: 3 of the 16 pixels change class -> pixel TC 13/16; per class by hand."""
    a = np.zeros((4, 4), np.uint8)
    a[:, 2:] = 1
    b = a.copy()
    b[0, 0] = 1
    b[1, 0] = 1
    b[0, 3] = 0
    tc = temporal.TemporalConsistency(2)
    counts = tc.update(a, b, const_flow(4, 4, 0, 0))
    assert (counts.agree, counts.valid) == (13, 16)
    res = tc.result([0, 1])
    assert res["tc_pixel"] == pytest.approx(13 / 16 * 100)
    # class 0: a has 8 px, b has 7 px, 6 shared -> 6 / 9; class 1: 8 and 9 px, 7 shared -> 7 / 10
    assert res["tc"] == pytest.approx((6 / 9 + 7 / 10) / 2 * 100)


def test_one_class_set_for_models_where_one_predicts_a_stray_class() -> None:
    """A few stray pixels of class 2 must not decide which model is steadier."""
    h, w = 40, 40
    steady = np.zeros((h, w), np.uint8)
    steady[:, 20:] = 1
    stray = steady.copy()
    stray[:2, :2] = 2  # 4 of 1600 px (0.25 %) in frame t only: gone in t+1
    flow = const_flow(h, w, 0, 0)
    a, b = temporal.TemporalConsistency(3), temporal.TemporalConsistency(3)
    for _ in range(3):
        a.update(steady, steady, flow)
        b.update(stray, steady, flow)
    # each model's own set: the stray class counts for b with IoU 0 -> far lower TC
    assert a.predicted_classes() == [0, 1] and b.predicted_classes() == [0, 1, 2]
    assert b.result()["tc"] < 70.0 < a.result()["tc"]
    # the shared set (classes every model predicts on >= 0.1 % of pixels) scores them alike
    shared = temporal.shared_class_set(None, [a, b])
    assert shared == [0, 1]
    assert b.result(shared)["tc"] == pytest.approx(99.75)  # road loses 4 of 800 px: 99.5
    assert a.result(shared)["tc"] == pytest.approx(100.0)
    # with labels the ground truth decides, and a class the model never predicts scores 0
    assert temporal.shared_class_set([0, 1, 2], [a, b]) == [0, 1, 2]
    assert a.result([0, 1, 2])["tc"] == pytest.approx(200 / 3)


def test_propagate_labels_follows_a_shifted_square() -> None:
    """A square moving (+2, +1) px per frame: propagation from the keyframe keeps it on target."""
    h, w = 32, 48

    def frame(t: int) -> np.ndarray:
        lab = np.zeros((h, w), np.uint8)
        lab[4 + t:12 + t, 6 + 2 * t:14 + 2 * t] = 1
        return lab

    labels = frame(0)
    for t in range(1, 5):
        labels = temporal.propagate_labels(labels, const_flow(h, w, -2, -1))  # current -> previous
        assert np.array_equal(labels, frame(t))
    # pixels whose source lies outside the frame take the border's label, never garbage
    edge = temporal.propagate_labels(frame(0), const_flow(h, w, 100, 0))
    assert set(np.unique(edge)) <= {0, 1}


def test_consistency_flow_on_static_scene() -> None:
    img = textured(48, 64, seed=3)
    flow, valid = temporal.consistency_flow(img, img, "ultrafast")
    assert flow.shape == (48, 64, 2) and valid.shape == (48, 64) and valid.dtype == bool
    assert np.abs(flow).max() < 0.5 and valid.mean() > 0.95
