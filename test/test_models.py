"""Architectures keep the contract the node and the losses rely on."""

import pytest
import torch

from etc_ros.models import ARCHITECTURES, PretrainedWeightsUnavailable, build_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_at_input_resolution_and_train_outputs(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5)
    x = torch.randn(2, 3, 64, 96)
    model.eval()
    with torch.inference_mode():
        logits = model(x)
    assert logits.shape == (2, 5, 64, 96)
    model.train()
    out = model.forward_train(x)
    assert out.logits.shape == (2, 5, 64, 96)
    assert out.features.shape[:2] == (2, model.feature_channels)
    if arch.startswith("pspnet"):
        assert out.aux_logits is not None and out.aux_logits.shape == (2, 5, 64, 96)
    out.logits.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_eval_mode_has_no_aux_and_matches_forward() -> None:
    model = build_model("pspnet18", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out = model.forward_train(x)
        assert out.aux_logits is None
        assert torch.allclose(out.logits, model(x))


def test_unknown_architecture_and_bad_class_count() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'"):
        build_model("resnet9000", 19)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("pspnet18", 0)


def test_pretrained_backbone_offline_is_one_clear_error(monkeypatch) -> None:
    # This machine has no network: torchvision's download fails, and so must we, clearly.
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained_backbone: false"):
        build_model("pspnet18", 19, pretrained_backbone=True)
