"""Colours people see: palette lookup, ignore handling, blending, the latched class YAML."""

import numpy as np
import yaml

from etc_ros.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    classes_yaml,
    colorize,
    overlay,
)


def test_colorize_uses_palette_and_blacks_out_ignore() -> None:
    labels = np.array([[0, 13], [IGNORE_INDEX, 10]], dtype=np.uint8)
    color = colorize(labels, CITYSCAPES_PALETTE)
    assert color.shape == (2, 2, 3) and color.dtype == np.uint8
    assert tuple(color[0, 0]) == (128, 64, 128)  # road
    assert tuple(color[0, 1]) == (0, 0, 142)  # car
    assert tuple(color[1, 0]) == (0, 0, 0)
    wide = colorize(labels.astype(np.uint16), CITYSCAPES_PALETTE)
    assert np.array_equal(wide, color)


def test_overlay_blends_by_alpha() -> None:
    rgb = np.full((2, 2, 3), 100, np.uint8)
    color = np.full((2, 2, 3), 200, np.uint8)
    assert overlay(rgb, color, 0.0)[0, 0, 0] == 100
    assert overlay(rgb, color, 1.0)[0, 0, 0] == 200
    assert overlay(rgb, color, 0.5)[0, 0, 0] == 150


def test_classes_yaml_round_trips() -> None:
    data = yaml.safe_load(classes_yaml(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE))
    assert data["ignore_index"] == 255
    assert [c["name"] for c in data["classes"]] == list(CITYSCAPES_CLASSES)
    assert data["classes"][13]["color"] == [0, 0, 142]
