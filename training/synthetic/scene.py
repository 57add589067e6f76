"""A sequence's world from its seed, and the frames rendered from it.

Every random choice is drawn in ``make_scene`` from one generator seeded by the sequence seed;
frames are then pure functions of (scene, frame index), so output bytes do not depend on the
order or the process in which sequences are made.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from .camera import EgoMotion, sample_motion, sample_rig
from .domains import DOMAINS, shift_pipeline, shift_rng, shift_style
from .layout import Layout, sample_layout
from .materials import Style, detail_tile, paint_ground, sample_style, sky_panorama
from .objects import FPS, Building, Object, make_object
from .pipeline import Pipeline, develop, distort, sample_pipeline
from .render import downsample, render_background

DRAW_RANGE = 260.0
COLOR_DOWN = 2  # the ground colour map has half the resolution of the class map (detail is
# added per pixel from the fine detail tile, so only smooth colour variation lives there)
DEFAULT_DIFFICULTY = 0.7


@dataclass
class Scene:
    """One sequence's world; everything random is drawn once here, frames are pure rendering."""

    seed: int
    height: int
    width: int
    scale: int
    focal: float
    style: Style
    x0: float
    z0: float
    ppm: float
    ground: np.ndarray
    ground_classes: np.ndarray
    ground_material: np.ndarray
    detail: np.ndarray
    sky: np.ndarray
    objects: list[Object]
    motion: EgoMotion
    pipe: Pipeline
    kind: str


def bake_shadows(layout: Layout, ground: np.ndarray, objects: list[Object],
                 style: Style) -> np.ndarray:
    """Ground light: sun everywhere except under the static objects' shadows."""
    mask = np.zeros(ground.shape[:2], np.uint8)
    for obj in objects:
        if obj.dynamic and obj.speed != 0:  # type: ignore[attr-defined]
            continue
        for poly in obj.shadow(style.sun, 0.0):
            cv2.fillPoly(mask, [layout.to_px(poly)], 1, cv2.LINE_AA, 3 + COLOR_DOWN // 2)
    mask = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.6)
    lit = style.ambient + (1 - style.ambient) * max(style.sun[1], 0.0)
    light = lit + (style.ambient - lit) * mask
    return ground * light[..., None]


def collides(obj: Object, motion: EgoMotion, duration: float) -> bool:
    """Whether a moving object comes within reach of the camera during the sequence."""
    if not obj.dynamic:
        return False
    for t in np.linspace(0, duration, 8):
        x, z, _ = obj.pose(t)
        s = float(np.interp(t, motion.times, motion.arc))
        ex, ez, h = motion.path.at(s)
        ex, ez = ex + math.cos(h) * motion.lateral, ez - math.sin(h) * motion.lateral
        if math.hypot(x - ex, z - ez) < obj.radius / 2 + 2.5:
            return True
    return False


def make_scene(seed: int, frames: int, height: int, width: int, render_scale: int = 2,
               difficulty: float = DEFAULT_DIFFICULTY, domain: str = "default") -> Scene:
    """Draw every random choice of one sequence from ``seed``; ``domain`` picks its look."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {DOMAINS}")
    rng = np.random.default_rng(seed)
    style = sample_style(rng)
    shifted = domain == "shifted"
    if shifted:
        style = shift_style(style, shift_rng(seed))
    rig = sample_rig(rng, str(rng.choice(["car", "car", "robot", "person", "mast"])))
    duration = frames / FPS
    density = rng.uniform(0.6, 1.3)
    layout = sample_layout(rng, max(rig.speed * duration * 1.3, 10.0), rig.kind, density)
    objects = [make_object(rng, style, p) for p in layout.placements]
    ground = paint_ground(rng, style, layout.material[::COLOR_DOWN, ::COLOR_DOWN],
                          layout.ppm / COLOR_DOWN)
    ground = bake_shadows(layout, ground, objects, style)
    focal = (width * render_scale / 2) / math.tan(rig.hfov / 2)
    motion = sample_motion(rng, layout.ego_path, rig, layout.ego_lateral, duration,
                           layout.ego_start)
    objects = [o for o in objects if not collides(o, motion, duration)]
    detail, sky = detail_tile(rng, style), sky_panorama(rng, style)
    pipe = sample_pipeline(rng, frames, difficulty)
    if shifted:
        pipe = shift_pipeline(pipe, shift_rng(seed + 1))
    return Scene(seed, height, width, render_scale, focal, style, layout.x0, layout.z0,
                 layout.ppm, ground.astype(np.float32), layout.classes, layout.material,
                 detail, sky, objects, motion, pipe, layout.kind)


def render_frame(scene: Scene, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame: background, dynamic shadows, objects far to near, lens, downsample, camera."""
    t = frame / FPS
    w, h = scene.width * scene.scale, scene.height * scene.scale
    cam = scene.motion.at(t, scene.focal, w, h)
    canvas = render_background(scene, cam)
    style = scene.style
    visible = []
    fwd = cam.rot[2]
    for obj in scene.objects:
        key = obj.sort_key(cam, t)
        if key > DRAW_RANGE:
            continue
        x, z, _ = obj.pose(t) if not isinstance(obj, Building) else (obj.x, obj.z, 0)
        rel = np.array([x - cam.pos[0], -cam.pos[1], z - cam.pos[2]])
        if float(rel @ fwd) < -obj.radius - 2:  # behind the camera
            continue
        visible.append((key, obj))
    lit = style.ambient + (1 - style.ambient) * max(style.sun[1], 0.0)
    polys = []
    for key, obj in visible:
        if obj.dynamic and obj.speed != 0 and key < 80:  # type: ignore[attr-defined]
            polys += [np.column_stack([p[:, 0], np.full(len(p), 0.01), p[:, 1]])
                      for p in obj.shadow(style.sun, t)]
    canvas.shadow(polys, style.ambient / lit)
    for _, obj in sorted(visible, key=lambda item: -item[0]):
        obj.draw(canvas, style, t)
    image, label = distort(scene.pipe, canvas.image, canvas.label)
    image, label = downsample(image, label, scene.scale)
    yaw_rate = (scene.motion.at(t + 0.05, scene.focal, w, h).yaw - cam.yaw) / 0.05
    rgb = develop(scene.pipe, image, frame, scene.seed, yaw_rate, scene.motion.speed(t),
                  scene.focal / scene.scale)
    return rgb, label


def render_sequence(seed: int, frames: int, height: int, width: int, render_scale: int = 2,
                    difficulty: float = DEFAULT_DIFFICULTY, domain: str = "default"
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (rgb uint8 HxWx3, label uint8 HxW train ids) for each frame of one sequence."""
    scene = make_scene(seed, frames, height, width, render_scale, difficulty, domain)
    for frame in range(frames):
        yield render_frame(scene, frame)
