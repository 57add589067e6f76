"""Class sets, palettes and the images people look at (color, overlay).

The shipped models use the 19 Cityscapes train ids so that weights trained on the synthetic
streets and on Cityscapes are interchangeable downstream.
"""

from collections.abc import Sequence

import numpy as np
import yaml

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map class ids to palette colours; ignore and unknown ids become black."""
    lut = np.zeros((max(256, len(palette) + 1), 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    if labels.dtype != np.uint8:
        labels = np.clip(labels, 0, len(lut) - 1)
    return lut[labels]


def overlay(rgb: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """Blend the colour image over the camera image; alpha is the colour's weight."""
    if rgb.shape != color.shape:
        raise ValueError(f"overlay: image {rgb.shape} and color {color.shape} differ in shape")
    blended = rgb.astype(np.float32) * (1.0 - alpha) + color.astype(np.float32) * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def classes_yaml(names: Sequence[str], palette: np.ndarray) -> str:
    """YAML for the latched `classes` topic: id, name and colour of every class."""
    entries = [
        {"id": i, "name": str(name), "color": [int(c) for c in palette[i]]}
        for i, name in enumerate(names)
    ]
    return yaml.safe_dump({"ignore_index": IGNORE_INDEX, "classes": entries}, sort_keys=False)
