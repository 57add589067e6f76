"""Cityscapes train ids of every class the generator draws, and the thin classes' vote weight."""

from __future__ import annotations

import numpy as np

from etc_ros.labels import CITYSCAPES_CLASSES, IGNORE_INDEX

ROAD = CITYSCAPES_CLASSES.index("road")
SIDEWALK = CITYSCAPES_CLASSES.index("sidewalk")
BUILDING = CITYSCAPES_CLASSES.index("building")
WALL = CITYSCAPES_CLASSES.index("wall")
FENCE = CITYSCAPES_CLASSES.index("fence")
POLE = CITYSCAPES_CLASSES.index("pole")
TRAFFIC_LIGHT = CITYSCAPES_CLASSES.index("traffic light")
TRAFFIC_SIGN = CITYSCAPES_CLASSES.index("traffic sign")
VEGETATION = CITYSCAPES_CLASSES.index("vegetation")
TERRAIN = CITYSCAPES_CLASSES.index("terrain")
SKY = CITYSCAPES_CLASSES.index("sky")
PERSON = CITYSCAPES_CLASSES.index("person")
RIDER = CITYSCAPES_CLASSES.index("rider")
CAR = CITYSCAPES_CLASSES.index("car")
TRUCK = CITYSCAPES_CLASSES.index("truck")
BUS = CITYSCAPES_CLASSES.index("bus")
TRAIN = CITYSCAPES_CLASSES.index("train")
MOTORCYCLE = CITYSCAPES_CLASSES.index("motorcycle")
BICYCLE = CITYSCAPES_CLASSES.index("bicycle")
IGNORE = IGNORE_INDEX

USED_TRAIN_IDS: tuple[int, ...] = tuple(range(len(CITYSCAPES_CLASSES)))
NUM_CLASSES = len(CITYSCAPES_CLASSES)

# In the down-sampling vote a thin-class sub-pixel counts this much more than a wide-class one,
# so a pole that covers half of a 2x2 block keeps its pixel (a plain majority would erase it).
VOTE_WEIGHT = np.ones(NUM_CLASSES + 1, np.float32)
for _c in (POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, PERSON, RIDER, MOTORCYCLE, BICYCLE):
    VOTE_WEIGHT[_c] = 1.6
VOTE_WEIGHT[NUM_CLASSES] = 0.5  # ignore loses ties
