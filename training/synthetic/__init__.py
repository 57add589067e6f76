"""Procedural street, campus and parking-lot videos with exact per-frame labels (v3).

A camera (on a car, a small robot, a person or a mast: 0.3-5 m high, 0-45 degrees down,
50-120 degrees wide) moves through a generated place (straight and curved streets,
intersections, campus lawns and plazas, parking lots) and may turn, stop or reverse. Each frame
is rendered at ``render_scale`` times the output size (ground by ray casting, objects by the
painter's algorithm, sun-cast shadows, high-frequency materials), then area-downsampled with a
thin-class weighted majority vote for the label, and passed through a camera pipeline (lens
distortion, motion blur, scene-metered auto exposure, white balance, tone curve, vignette, noise,
JPEG). v3 meters exposure on the scene rather than the sky (``pipeline.auto_exposure``): same
scenes as v2 for a seed, brighter ground, as in photos. Labels are
the 19 Cityscapes train ids (255 = ignore).

    python -m training.synthetic --out data/synthetic --train 24 --val 4 --test 4 --workers 2
    python -m training.synthetic --video demo.mp4 --video-frames 100

Writes ``ROOT/<split>/<sequence>/images/000000.png`` and ``labels/000000.png`` plus
``ROOT/synthetic.json``. The same seed gives byte-identical files whatever ``--workers`` is.

Modules: ``layout`` (places and object placement), ``objects`` (what is drawn, per class),
``materials`` (palette, textures), ``camera`` (rigs, ego motion), ``render`` (ray casting,
painter, downsampling), ``pipeline`` (camera effects), ``scene`` (a sequence from its seed),
``generate`` (parallel writing, metadata), ``cli`` / ``__main__`` (command line).
"""

from .classes import (
                      BICYCLE,
                      BUILDING,
                      BUS,
                      CAR,
                      FENCE,
                      MOTORCYCLE,
                      PERSON,
                      POLE,
                      RIDER,
                      ROAD,
                      SIDEWALK,
                      SKY,
                      TERRAIN,
                      TRAFFIC_LIGHT,
                      TRAFFIC_SIGN,
                      TRAIN,
                      TRUCK,
                      USED_TRAIN_IDS,
                      VEGETATION,
                      WALL,
)
from .cli import main
from .generate import SPLITS, generate_dataset, generate_split, sequence_seed, write_video
from .scene import DEFAULT_DIFFICULTY, make_scene, render_frame, render_sequence

__all__ = [
    "BICYCLE", "BUILDING", "BUS", "CAR", "DEFAULT_DIFFICULTY", "FENCE", "MOTORCYCLE", "PERSON",
    "POLE", "RIDER", "ROAD", "SIDEWALK", "SKY", "SPLITS", "TERRAIN", "TRAFFIC_LIGHT",
    "TRAFFIC_SIGN", "TRAIN", "TRUCK", "USED_TRAIN_IDS", "VEGETATION", "WALL", "generate_dataset",
    "generate_split", "main", "make_scene", "render_frame", "render_sequence", "sequence_seed",
    "write_video",
]
