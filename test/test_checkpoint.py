"""Checkpoints: round trip, and every way a file can be wrong gives one line naming it."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from etc_ros.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    load_model,
    make_random_checkpoint,
    save_checkpoint,
)
from etc_ros.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from etc_ros.models import build_model


def _meta(**overrides) -> CheckpointMeta:
    fields = dict(
        architecture="lraspp_mobilenetv3",
        class_names=list(CITYSCAPES_CLASSES),
        palette=CITYSCAPES_PALETTE.tolist(),
        input_size=(64, 128),
    )
    fields.update(overrides)
    return CheckpointMeta(**fields)


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    torch.manual_seed(1)
    model = build_model("lraspp_mobilenetv3", 19).eval()
    save_checkpoint(path, model.state_dict(), _meta(recipe={"k": 1}, metrics={"miou": 1.5}))
    loaded, meta = load_model(path)
    assert meta.input_size == (64, 128) and meta.recipe == {"k": 1} and meta.num_classes == 19
    x = torch.randn(1, 3, 64, 128)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_half_storage_halves_size_and_loads_as_float32(tmp_path: Path) -> None:
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    state = build_model("lraspp_mobilenetv3", 19).state_dict()
    save_checkpoint(full, state, _meta())
    save_checkpoint(half, state, _meta(), half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model, _ = load_model(half)
    assert next(model.parameters()).dtype == torch.float32


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "file not found" in _error(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    make_random_checkpoint(path)
    path.write_bytes(path.read_bytes()[:1000])
    assert "not a readable safetensors file" in _error(path)


def test_foreign_safetensors_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    assert "not an etc_ros checkpoint" in _error(path)


def test_unknown_architecture(tmp_path: Path) -> None:
    path = tmp_path / "arch.safetensors"
    meta = json.dumps({**_meta().__dict__, "architecture": "unet9000"})
    save_file({"w": torch.zeros(3)}, str(path), metadata={"etc_ros": meta})
    assert "unknown architecture 'unet9000'" in _error(path)


def test_palette_class_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "palette.safetensors"
    meta = json.dumps({**_meta().__dict__, "palette": [[0, 0, 0]] * 3})
    save_file({"w": torch.zeros(3)}, str(path), metadata={"etc_ros": meta})
    assert "19 classes but 3 palette colours" in _error(path)


def test_weights_for_another_class_count(tmp_path: Path) -> None:
    path = tmp_path / "classes.safetensors"
    state = build_model("lraspp_mobilenetv3", 5).state_dict()
    # Metadata says 19 classes, tensors were made for 5.
    save_checkpoint(path, state, _meta())
    assert "expects" in _error(path)


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_checkpoint(path, build_model("pspnet18", 19).state_dict(), _meta())
    assert "do not match architecture lraspp_mobilenetv3" in _error(path)


def test_load_checkpoint_validates_input_size(tmp_path: Path) -> None:
    path = tmp_path / "size.safetensors"
    meta = json.dumps({**_meta().__dict__, "input_size": [4, 4]})
    save_file({"w": torch.zeros(3)}, str(path), metadata={"etc_ros": meta})
    with pytest.raises(CheckpointError, match="input_size"):
        load_checkpoint(path)
