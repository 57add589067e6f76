"""Hand-computable checks of the ETC losses in training.losses."""

from __future__ import annotations

import math

import pytest
import torch

from etc_ros.models import TrainOutput
from training import losses


def const_flow(n: int, h: int, w: int, fx: float, fy: float) -> torch.Tensor:
    flow = torch.zeros(n, 2, h, w)
    flow[:, 0], flow[:, 1] = fx, fy
    return flow


def test_ce_ignores_255_and_adds_aux() -> None:
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 0] = 2.0  # pixel 0 leans to class 0
    target = torch.tensor([[[0, 255]]])
    ce = losses.segmentation_loss(logits, target)
    assert ce.item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-4)
    # pixel 1 (uniform logits, loss log 2) is ignored; relabelling it counts it
    assert losses.segmentation_loss(logits, torch.tensor([[[0, 1]]])).item() > 0.3
    aux = torch.zeros(1, 2, 1, 2)
    with_aux = losses.segmentation_loss(logits, target, aux, aux_weight=0.4)
    assert with_aux.item() == pytest.approx(ce.item() + 0.4 * math.log(2), rel=1e-4)


def test_temporal_loss_zero_for_identical_frames_and_zero_flow() -> None:
    q = torch.randn(2, 4, 8, 10)
    img = torch.randn(2, 3, 8, 10)
    flow = const_flow(2, 8, 10, 0, 0)
    loss = losses.temporal_loss(q, q.clone(), flow, img_t=img, img_tk=img, flow_tk_to_t=flow)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_temporal_loss_shift_exact_flow_vs_wrong_flow() -> None:
    torch.manual_seed(0)
    base_q = torch.randn(1, 4, 12, 16)
    base_i = torch.randn(1, 3, 12, 16)
    q_tk = torch.roll(base_q, shifts=(1, 2), dims=(2, 3))  # content moves by (+2, +1)
    i_tk = torch.roll(base_i, shifts=(1, 2), dims=(2, 3))
    exact = const_flow(1, 12, 16, 2, 1)
    back = const_flow(1, 12, 16, -2, -1)
    good = losses.temporal_loss(base_q, q_tk, exact, img_t=base_i, img_tk=i_tk,
                                flow_tk_to_t=back)
    assert good.item() == pytest.approx(0.0, abs=1e-8)
    # a hard mask that keeps the valid region, with a wrong flow
    ones = torch.ones(1, 1, 12, 16)
    wrong = losses.temporal_loss(base_q, q_tk, const_flow(1, 12, 16, 0, 0), mask=ones)
    assert wrong.item() > 0.5
    # the provided mask is still clipped to the in-frame region: exact flow -> 0
    assert losses.temporal_loss(base_q, q_tk, exact, mask=ones).item() == pytest.approx(0.0,
                                                                                          abs=1e-8)


def test_temporal_loss_requires_mask_or_images() -> None:
    q = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="mask"):
        losses.temporal_loss(q, q, const_flow(1, 4, 4, 0, 0))


def test_kd_pf_structured_mf_zero_for_identical_student_and_teacher() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 8, 8)
    assert losses.pixel_kd_loss(logits, logits.clone(), 2.0).item() == pytest.approx(0, abs=1e-6)
    f_t, f_tk, f_tmk = (torch.randn(2, 6, 16, 16) for _ in range(3))
    grid = (4, 4)
    assert losses.pf_loss(f_t, f_tk, f_t.clone(), f_tk.clone(), grid).item() == pytest.approx(0)
    assert losses.structured_loss(f_t, f_t.clone(), grid).item() == pytest.approx(0)
    mf = losses.MultiFrameDependencyLoss(grid, hidden_channels=4, seed=0)
    assert mf([f_tmk, f_t, f_tk], [f_tmk, f_t, f_tk]).item() == pytest.approx(0)


def test_distillation_terms_positive_for_different_teacher_with_other_width() -> None:
    torch.manual_seed(2)
    grid = (4, 4)
    s = [torch.randn(1, 6, 16, 16) for _ in range(3)]
    t = [torch.randn(1, 10, 16, 16) for _ in range(3)]  # teacher is wider: affinities still P x P
    assert losses.pf_loss(s[1], s[2], t[1], t[2], grid).item() > 1e-4
    assert losses.structured_loss(s[1], t[1], grid).item() > 1e-4
    assert losses.MultiFrameDependencyLoss(grid, 4)(s, t).item() > 0
    kd = losses.pixel_kd_loss(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4))
    assert kd.item() > 0


def test_affinity_is_cosine_similarity_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)  # positions (1,0) and (0,1)
    b = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).reshape(1, 2, 1, 2)  # positions (1,1) and (1,0)
    aff = losses.affinity(a, b, (1, 2))
    s = 1 / math.sqrt(2)
    assert torch.allclose(aff[0], torch.tensor([[s, 1.0], [s, 0.0]]))


def test_mf_lstm_is_frozen_and_seeded() -> None:
    a = losses.MultiFrameDependencyLoss((2, 2), 4, seed=3)
    b = losses.MultiFrameDependencyLoss((2, 2), 4, seed=3)
    assert list(a.parameters()) == []
    assert torch.equal(a.lstm.weight, b.lstm.weight)
    assert not torch.equal(a.lstm.weight, losses.MultiFrameDependencyLoss((2, 2), 4, 4).lstm.weight)


def make_outputs(n_frames: int, requires_grad: bool, channels: int, seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(n_frames):
        logits = torch.randn(1, 3, 16, 16, generator=gen).requires_grad_(requires_grad)
        aux = torch.randn(1, 3, 16, 16, generator=gen).requires_grad_(requires_grad)
        feats = torch.randn(1, channels, 4, 8, generator=gen).requires_grad_(requires_grad)
        outs.append(TrainOutput(logits, aux, feats))
    return outs


def test_etc_loss_gradients_reach_student_only() -> None:
    student = make_outputs(3, True, 6, seed=0)
    teacher = make_outputs(3, True, 10, seed=1)  # even with grad enabled, must get none
    weights = {"ce": 1.0, "temporal": 1.0, "kd": 1.0, "pf": 1.0, "structured": 1.0, "mf": 1.0}
    crit = losses.ETCLoss(weights, grid=(2, 4), mf_hidden_channels=4)
    target = torch.randint(0, 3, (1, 16, 16))
    target[0, 0] = 255
    images = [torch.randn(1, 3, 16, 16) for _ in range(3)]
    flow = const_flow(1, 16, 16, 1, 0)
    total, parts = crit(student, target, teacher=teacher, images=images, flow_fw=flow,
                        flow_bw=-flow, center=1, neighbor=2)
    assert set(parts) == set(losses.LOSS_TERMS) | {"total"}
    assert all(v.item() > 0 for v in parts.values())
    total.backward()
    for out in student:
        assert out.logits.grad is not None and out.features.grad is not None
        assert out.features.grad.abs().sum() > 0
    assert student[1].aux_logits.grad is not None
    for out in teacher:
        assert out.logits.grad is None and out.features.grad is None


def test_etc_loss_weights_and_errors() -> None:
    student = make_outputs(2, False, 6, seed=0)
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    total, parts = losses.ETCLoss()(student, target)  # baseline: CE only
    assert set(parts) == {"ce", "total"} and total.item() == pytest.approx(parts["ce"].item())
    doubled, _ = losses.ETCLoss({"ce": 2.0})(student, target)
    assert doubled.item() == pytest.approx(2 * total.item())
    with pytest.raises(ValueError, match="unknown loss weight"):
        losses.ETCLoss({"temporl": 1.0})
    with pytest.raises(ValueError, match="teacher"):
        losses.ETCLoss({"kd": 1.0})(student, target)
    with pytest.raises(ValueError, match="flow"):
        losses.ETCLoss({"temporal": 1.0})(student, target)
