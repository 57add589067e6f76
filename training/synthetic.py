"""Procedural street videos with exact per-frame labels, because no labelled video exists here.

A camera drives forward along a street; every frame is rendered with a pinhole projection
(ground by ray casting, everything upright by the painter's algorithm, far to near) and gets an
exact label map in Cityscapes train ids. Colours, textures, lighting, exposure drift, motion
blur and sensor noise vary per sequence and are tuned (``difficulty``) so that a small per-frame
network is imperfect and flickers: the effect ETC training is meant to reduce.

    python -m training.synthetic --out data/synthetic --train 24 --val 4 --test 4
    python -m training.synthetic --video demo.mp4 --video-frames 100

Writes ``ROOT/<split>/<sequence>/images/000000.png`` and ``labels/000000.png`` (uint8 train ids).

``difficulty`` (0..1) turns several knobs together: how often sidewalks are road-grey or asphalt
and facades green-ish (class ambiguity), vegetation desaturation, exposure drift (+-5 % + 30 % * d),
sensor noise (sigma up to 1 + 7 * d), forward motion blur, the chance of JPEG artefacts, ground
shade patches, and the density of trees, poles, cars and people (small distant objects).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from tqdm import tqdm

from etc_ros.labels import CITYSCAPES_CLASSES

ROAD = CITYSCAPES_CLASSES.index("road")
SIDEWALK = CITYSCAPES_CLASSES.index("sidewalk")
BUILDING = CITYSCAPES_CLASSES.index("building")
FENCE = CITYSCAPES_CLASSES.index("fence")
POLE = CITYSCAPES_CLASSES.index("pole")
TRAFFIC_LIGHT = CITYSCAPES_CLASSES.index("traffic light")
TRAFFIC_SIGN = CITYSCAPES_CLASSES.index("traffic sign")
VEGETATION = CITYSCAPES_CLASSES.index("vegetation")
TERRAIN = CITYSCAPES_CLASSES.index("terrain")
SKY = CITYSCAPES_CLASSES.index("sky")
PERSON = CITYSCAPES_CLASSES.index("person")
CAR = CITYSCAPES_CLASSES.index("car")
USED_TRAIN_IDS: tuple[int, ...] = tuple(sorted((
    ROAD, SIDEWALK, BUILDING, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN,
    SKY, PERSON, CAR,
)))

SPLITS = ("train", "val", "test")
_SPLIT_KEYS = {"train": 0, "val": 1, "test": 2, "video": 3}
FPS = 10.0
DEFAULT_DIFFICULTY = 0.7
NEAR = 0.25            # near clipping plane (m)
OBJECT_RANGE = 160.0   # street objects beyond this distance are not drawn (m)
BUILDING_RANGE = 260.0
GROUND_PPM = 16.0      # ground texture resolution (texels per metre)
GROUND_PERIOD = 48.0   # the ground texture repeats every this many metres along the street
FACADE_PPM = 10.0
SHIFT = 3              # fixed-point bits for sub-pixel polygon fills
UP = np.array([0.0, 1.0, 0.0])

Color = np.ndarray  # (3,) float32 RGB in 0..255


# --------------------------------------------------------------------------------------------
# small helpers


def value_noise(rng: np.random.Generator, height: int, width: int, cells: float,
                octaves: int = 3) -> np.ndarray:
    """Smooth fractal noise in about [-1, 1]: the base of every procedural texture."""
    out = np.zeros((height, width), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(octaves):
        c = cells * 2 ** octave
        gh = max(2, int(round(c * height / max(height, width))) + 1)
        gw = max(2, int(round(c * width / max(height, width))) + 1)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        out += amp * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    return out / total


def jitter(rng: np.random.Generator, base: tuple[float, float, float], amount: float) -> Color:
    """A colour near ``base``: per-sequence variation of a material."""
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def mix(a: Color, b: Color, t: float) -> Color:
    """Linear blend between two colours (t=0 -> a)."""
    return np.asarray(a, np.float32) * (1.0 - t) + np.asarray(b, np.float32) * t


def fixed_point(uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2 fixed point (SHIFT fractional bits), clamped to stay in int32."""
    return np.clip(np.round(uv * (1 << SHIFT)), -(2 ** 30), 2 ** 30).astype(np.int32)


def clip_near(poly: np.ndarray) -> np.ndarray | None:
    """Clip a camera-space polygon to z >= NEAR (Sutherland-Hodgman against one plane)."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        a_in, b_in = a[2] >= NEAR, b[2] >= NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            out.append(a + (NEAR - a[2]) / (b[2] - a[2]) * (b - a))
    return np.array(out) if len(out) >= 3 else None


# --------------------------------------------------------------------------------------------
# camera and canvas


@dataclass
class Camera:
    """Pinhole camera: world X right, Y up, Z forward; yaw turns right, pitch looks down."""

    pos: np.ndarray
    yaw: float
    pitch: float
    f: float
    width: int
    height: int
    rot: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        yaw_m = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        pitch_m = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        self.rot = pitch_m @ yaw_m

    @property
    def intrinsics(self) -> np.ndarray:
        """K with the image v axis pointing down (v = cy - f * Y / Z)."""
        return np.array([[self.f, 0, self.width / 2], [0, -self.f, self.height / 2], [0, 0, 1]])

    @property
    def right(self) -> np.ndarray:
        """Horizontal right vector in world coordinates: the axis billboards are drawn along."""
        return np.array([math.cos(self.yaw), 0.0, -math.sin(self.yaw)])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (...,3) into camera coordinates (z = depth)."""
        return (points - self.pos) @ self.rot.T

    def project(self, pc: np.ndarray) -> np.ndarray:
        """Camera points (...,3) to pixel coordinates (...,2); callers clip at NEAR first."""
        inv = self.f / np.maximum(pc[..., 2], 1e-6)
        out = np.empty(pc.shape[:-1] + (2,))
        out[..., 0] = self.width / 2 + pc[..., 0] * inv
        out[..., 1] = self.height / 2 - pc[..., 1] * inv
        return out

    def distance(self, x: float, z: float) -> float:
        """Ground distance to a point: the painter's sort key and the fog distance."""
        return math.hypot(x - self.pos[0], z - self.pos[2])


@dataclass
class Canvas:
    """Image and label being painted together, so every drawn pixel gets its exact class."""

    cam: Camera
    image: np.ndarray
    label: np.ndarray
    haze: Color
    fog_distance: float

    def fogged(self, color: np.ndarray, distance: float) -> np.ndarray:
        """Atmospheric perspective: far objects fade into the haze (small and low-contrast)."""
        a = 1.0 - math.exp(-distance / self.fog_distance)
        return np.asarray(color, np.float32) * (1 - a) + self.haze * a

    def fill(self, polys: np.ndarray | list[np.ndarray], colors: np.ndarray,
             label_id: int | None) -> None:
        """Fill world-space polygons (K,N,3) in order, clipped at the near plane.

        ``colors`` is one colour or one per polygon. Polygons are filled one by one because a
        single multi-polygon fillPoly cancels overlaps (even-odd rule).
        """
        if len(polys) == 0:
            return
        pcs = self.cam.to_camera(np.asarray(polys, np.float64))
        colors = np.broadcast_to(np.asarray(colors, np.float64), (len(pcs), 3))
        uvs = fixed_point(self.cam.project(pcs))
        z_min = pcs[..., 2].min(axis=1)
        for pc, pts, color, zm in zip(pcs, uvs, colors, z_min, strict=True):
            if zm < NEAR:
                clipped = clip_near(pc)
                if clipped is None:
                    continue
                pts = fixed_point(self.cam.project(clipped))
            cv2.fillPoly(self.image, [pts], color.tolist(), cv2.LINE_AA, SHIFT)
            if label_id is not None:
                cv2.fillPoly(self.label, [pts], label_id, cv2.LINE_8, SHIFT)

    def textured_quad(self, origin: np.ndarray, e_a: np.ndarray, e_b: np.ndarray,
                      texture: np.ndarray, label_id: int, gain: float, distance: float) -> None:
        """Map ``texture`` onto the planar quad origin + a*e_a + b*e_b (a, b in [0, 1]).

        The homography comes from the plane itself, so it stays exact when part of the quad
        lies behind the camera; the clipped polygon masks what is visible.
        """
        corners = np.array([origin, origin + e_a, origin + e_a + e_b, origin + e_b])
        pc = self.cam.to_camera(corners)
        if pc[:, 2].min() < NEAR:
            pc = clip_near(pc)
            if pc is None:
                return
        uv = self.cam.project(pc)
        x0, y0 = np.maximum(np.floor(uv.min(0)), 0).astype(int)
        x1 = int(min(math.ceil(uv[:, 0].max()) + 1, self.cam.width))
        y1 = int(min(math.ceil(uv[:, 1].max()) + 1, self.cam.height))
        if x1 <= x0 or y1 <= y0:
            return
        th, tw = texture.shape[:2]
        r = self.cam.rot
        plane = np.column_stack([r @ e_a / tw, r @ e_b / th, r @ (origin - self.cam.pos)])
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        hom = shift @ self.cam.intrinsics @ plane
        warped = cv2.warpPerspective(texture, hom, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        a = 1.0 - math.exp(-distance / self.fog_distance)
        warped = np.clip(warped * np.float32(gain * (1 - a)) + self.haze * a, 0, 255)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = fixed_point(uv - (x0, y0))
        cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, SHIFT)
        sel = mask.astype(bool)
        self.image[y0:y1, x0:x1][sel] = warped[sel]
        self.label[y0:y1, x0:x1][sel] = label_id


def billboard_blob(cam: Camera, center: np.ndarray, radius: float,
                   radii: np.ndarray) -> np.ndarray:
    """An irregular round shape facing the camera (tree crowns, heads, bushes)."""
    angles = np.linspace(0, 2 * math.pi, len(radii), endpoint=False)
    return (center + (radius * radii * np.cos(angles))[:, None] * cam.right
            + (radius * radii * np.sin(angles))[:, None] * UP)


def billboard_quad(cam: Camera, bottom: np.ndarray, top: np.ndarray, width: float) -> np.ndarray:
    """A camera-facing strip from ``bottom`` to ``top`` (poles, trunks, limbs)."""
    half = cam.right * width / 2
    return np.array([bottom - half, bottom + half, top + half, top - half])


def box_faces(cam: Camera, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The faces of an axis-aligned box that face the camera, with their outward normals.

    Visible faces of a convex box never overlap on screen, so their order does not matter.
    """
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    cx, cy, cz = cam.pos
    faces = []
    if cz < z0:
        faces.append((np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]]),
                      np.array([0.0, 0.0, -1.0])))
    if cz > z1:
        faces.append((np.array([[x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]]),
                      np.array([0.0, 0.0, 1.0])))
    if cx < x0:
        faces.append((np.array([[x0, y0, z0], [x0, y0, z1], [x0, y1, z1], [x0, y1, z0]]),
                      np.array([-1.0, 0.0, 0.0])))
    if cx > x1:
        faces.append((np.array([[x1, y0, z0], [x1, y0, z1], [x1, y1, z1], [x1, y1, z0]]),
                      np.array([1.0, 0.0, 0.0])))
    if cy > y1:
        faces.append((np.array([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]]),
                      np.array([0.0, 1.0, 0.0])))
    return faces


# --------------------------------------------------------------------------------------------
# per-sequence style and street layout


@dataclass
class Style:
    """Everything about a sequence's look; the ambiguity between classes is chosen here."""

    road: Color
    sidewalk: Color
    sidewalk_asphalt: bool
    curb: Color
    terrain: Color
    building_colors: list[Color]
    window_colors: list[Color]
    greens: list[Color]
    sky_top: Color
    sky_horizon: Color
    cloud: Color
    cloud_cover: float
    haze: Color
    fog_distance: float
    sun: np.ndarray
    ambient: float
    tint: np.ndarray
    exposure_knots: np.ndarray
    noise_sigma: float
    blur: float
    jpeg_quality: int | None
    shade_strength: float

    def shade(self, normal: np.ndarray) -> float:
        """Lambert lighting from the per-sequence sun, so the two street sides differ."""
        return self.ambient + (1 - self.ambient) * max(0.0, float(normal @ self.sun))


def sample_style(rng: np.random.Generator, difficulty: float, frames: int) -> Style:
    """Random per-sequence look; ``difficulty`` raises class ambiguity, drift, blur and noise."""
    d = difficulty
    time_of_day = rng.choice(["day", "overcast", "dusk"], p=[0.55, 0.3, 0.15])
    g = rng.uniform(65, 120)
    road = jitter(rng, (g, g, g + 3), 6)
    if rng.random() < 0.25 + 0.5 * d:  # grey sidewalk close to the road
        sidewalk = np.clip(road + rng.uniform(-10, 30), 0, 255)
    else:
        sidewalk = jitter(rng, [(150, 150, 150), (160, 120, 105), (175, 165, 135)][
            rng.integers(3)], 15)
    building_families = [(200, 195, 185), (150, 80, 60), (185, 170, 140), (125, 125, 130),
                         (160, 175, 190), (215, 205, 170)]
    building_colors = [jitter(rng, building_families[rng.integers(len(building_families))], 25)
                       for _ in range(6)]
    for i in range(len(building_colors)):
        if rng.random() < 0.1 + 0.3 * d:  # green-ish facades, confusable with vegetation
            building_colors[i] = jitter(rng, (95, 125, 85), 20)
    greens = [jitter(rng, (60, 100, 45), 20) for _ in range(3)]
    if rng.random() < 0.25:
        greens[0] = jitter(rng, (125, 115, 55), 20)  # autumn
    desat = 0.45 * d * rng.random()
    greens = [mix(c, np.full(3, c.mean()), desat) for c in greens]
    skies = {"day": ((65, 125, 205), (175, 205, 230)), "overcast": ((165, 170, 180),
             (205, 205, 210)), "dusk": ((60, 75, 135), (230, 165, 115))}
    top, horizon = skies[time_of_day]
    tints = {"day": (1.0, 1.0, 1.0), "overcast": (0.95, 0.97, 1.03), "dusk": (1.1, 0.88, 0.72)}
    azimuth, elevation = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.0)
    sun = np.array([math.cos(elevation) * math.cos(azimuth), math.sin(elevation),
                    math.cos(elevation) * math.sin(azimuth)])
    amp = 0.05 + 0.3 * d
    knots = rng.uniform(1 - amp, 1 + amp, frames // 8 + 2)
    return Style(
        road=road, sidewalk=sidewalk, sidewalk_asphalt=bool(rng.random() < 0.3 * d),
        curb=jitter(rng, (170, 170, 165), 20), terrain=jitter(rng, (105, 115, 70), 20),
        building_colors=building_colors,
        window_colors=[jitter(rng, c, 15) for c in ((40, 45, 55), (70, 85, 105), (25, 25, 30),
                                                   (120, 140, 160))],
        greens=greens, sky_top=jitter(rng, top, 15), sky_horizon=jitter(rng, horizon, 15),
        cloud=jitter(rng, (235, 235, 240), 15), cloud_cover=rng.uniform(0.0, 0.8),
        haze=jitter(rng, horizon, 10), fog_distance=rng.uniform(150, 500) / (0.5 + d),
        sun=sun, ambient=rng.uniform(0.5, 0.75) if time_of_day == "day" else 0.8,
        tint=np.asarray(tints[time_of_day], np.float32) * rng.uniform(0.94, 1.06, 3),
        exposure_knots=knots * rng.uniform(0.8, 1.15),
        noise_sigma=1.0 + 7.0 * d * rng.uniform(0.4, 1.0), blur=d * rng.uniform(0.0, 1.0),
        jpeg_quality=int(rng.uniform(35, 85)) if rng.random() < d else None,
        shade_strength=rng.uniform(0.0, 0.5) * (0.3 + d),
    )


@dataclass
class Layout:
    """Cross-section of the street: lanes, parking, verge, sidewalk, facade line."""

    lanes: int          # driving lanes per direction
    lane_width: float
    parking: float      # width of the parking lane on each side (0: none)
    verge: float        # grass strip between road and sidewalk (0: none)
    sidewalk: float
    camera_lane: int    # 0 = the lane next to the centre line

    @property
    def road_half(self) -> float:
        return self.lanes * self.lane_width + self.parking

    @property
    def facade_x(self) -> float:
        return self.road_half + self.verge + self.sidewalk

    def lane_center(self, lane: int, direction: int) -> float:
        """X of a lane centre; direction +1 drives with the camera (right-hand traffic)."""
        return direction * (lane + 0.5) * self.lane_width


def sample_layout(rng: np.random.Generator) -> Layout:
    """Random street cross-section: one or two lanes each way, optional parking and verge."""
    lanes = int(rng.integers(1, 3))
    return Layout(lanes=lanes, lane_width=rng.uniform(3.0, 3.7),
                  parking=rng.choice([0.0, 2.3], p=[0.3, 0.7]),
                  verge=rng.choice([0.0, rng.uniform(0.8, 2.5)], p=[0.6, 0.4]),
                  sidewalk=rng.uniform(2.0, 5.0), camera_lane=int(rng.integers(lanes)))


# --------------------------------------------------------------------------------------------
# textures (generated once per sequence, anchored in the world so they move with the scene)


def ground_texture(rng: np.random.Generator, style: Style, layout: Layout,
                   x_ext: float) -> tuple[np.ndarray, np.ndarray]:
    """Ground colours (rows = Z, columns = X) and the per-column class of the ground strip."""
    ht, wt = int(GROUND_PERIOD * GROUND_PPM), int(2 * x_ext * GROUND_PPM)
    xs = (np.arange(wt) + 0.5) / GROUND_PPM - x_ext
    zs = (np.arange(ht) + 0.5) / GROUND_PPM
    ax = np.abs(xs)
    road_half, facade = layout.road_half, layout.facade_x
    col_class = np.full(wt, TERRAIN, np.uint8)
    col_class[ax < facade] = SIDEWALK
    if layout.verge:
        col_class[(ax >= road_half) & (ax < road_half + layout.verge)] = TERRAIN
    col_class[ax < road_half] = ROAD

    noise = value_noise(rng, ht, wt, 40)
    fine = rng.standard_normal((ht, wt)).astype(np.float32)
    tex = np.empty((ht, wt, 3), np.float32)
    is_road = (col_class == ROAD)[None, :]
    is_walk = (col_class == SIDEWALK)[None, :]
    road = style.road * (1 + 0.12 * noise[..., None]) + 6 * fine[..., None]
    # darker oil band in the middle of every lane, lighter wheel tracks
    lane_pos = (ax % layout.lane_width) / layout.lane_width
    road *= (1 - 0.06 * np.exp(-((lane_pos - 0.5) / 0.12) ** 2))[None, :, None]
    walk = style.sidewalk * (1 + 0.08 * noise[..., None]) + 5 * fine[..., None]
    if not style.sidewalk_asphalt:
        tile = rng.uniform(0.3, 1.0)
        tiles = rng.uniform(0.9, 1.1, (int(ht / GROUND_PPM / tile) + 2,
                                       int(wt / GROUND_PPM / tile) + 2)).astype(np.float32)
        ti = (zs / tile).astype(int)[:, None]
        tj = ((xs + x_ext) / tile).astype(int)[None, :]
        walk *= tiles[ti, tj][..., None]
        grout = (((zs % tile) < 0.04)[:, None] | (((xs + x_ext) % tile) < 0.04)[None, :])
        walk[grout] *= 0.8
    grass = style.terrain * (1 + 0.25 * value_noise(rng, ht, wt, 120)[..., None]) \
        + 10 * fine[..., None]
    tex[:] = grass
    tex = np.where(is_walk[..., None], walk, tex)
    tex = np.where(is_road[..., None], road, tex)

    paint = np.array([235, 235, 230], np.float32) * (0.75 + 0.1 * rng.random())
    line_w = 0.15

    def paint_stripe(x_center: float, dashed: bool) -> None:
        cols = np.abs(xs - x_center) < line_w / 2
        rows = (zs % 12.0) < 3.0 if dashed else np.ones(ht, bool)
        tex[np.ix_(rows, cols)] = paint

    paint_stripe(0.0, dashed=bool(rng.random() < 0.5))
    for side in (-1, 1):
        for lane in range(1, layout.lanes):
            paint_stripe(side * lane * layout.lane_width, dashed=True)
        paint_stripe(side * (layout.lanes * layout.lane_width - line_w), dashed=False)
    if rng.random() < 0.5:  # zebra crossing
        z0 = rng.uniform(0, GROUND_PERIOD - 5)
        rows = (zs > z0) & (zs < z0 + 4)
        cols = (ax < road_half) & ((xs % 1.0) < 0.5)
        tex[np.ix_(rows, cols)] = paint
    curb = (ax >= road_half) & (ax < road_half + 0.18)
    if not layout.verge:
        tex[:, curb] = style.curb
    shade = np.clip(value_noise(rng, ht, wt, 12, octaves=2) * 2.0, 0, 1)
    tex *= (1 - style.shade_strength * shade)[..., None]
    return np.clip(tex, 0, 255).astype(np.uint8), col_class


def facade_texture(rng: np.random.Generator, style: Style, width_m: float,
                   height_m: float) -> np.ndarray:
    """Building front: plaster noise, floor bands, a window grid and a shop-front ground floor."""
    th, tw = max(4, int(height_m * FACADE_PPM)), max(4, int(width_m * FACADE_PPM))
    base = style.building_colors[rng.integers(len(style.building_colors))]
    tex = base * (1 + 0.1 * value_noise(rng, th, tw, 16)[..., None])
    floor_h = rng.uniform(2.8, 3.6)
    win_w, win_h = rng.uniform(0.8, 1.6), rng.uniform(1.1, 1.8)
    spacing = rng.uniform(win_w + 0.8, win_w + 2.5)
    ppm = FACADE_PPM
    for row in range(1, int(height_m / floor_h)):
        y_band = int(th - row * floor_h * ppm)
        tex[max(0, y_band - 2):y_band] *= 0.85
        y1 = int(y_band - 0.8 * ppm)
        y0 = int(y1 - win_h * ppm)
        for col in range(int((width_m - 1) / spacing)):
            x0 = int((0.8 + col * spacing) * ppm)
            glass = style.window_colors[rng.integers(len(style.window_colors))]
            tex[max(0, y0):y1, x0:x0 + int(win_w * ppm)] = glass * rng.uniform(0.8, 1.2)
    shop = rng.random() < 0.5
    if shop:
        glass = style.window_colors[rng.integers(len(style.window_colors))]
        tex[int(th - 2.6 * ppm):int(th - 0.3 * ppm), int(0.5 * ppm):int(tw - 0.5 * ppm)] = glass
    tex[: max(1, int(0.4 * ppm))] *= 0.8  # cornice
    tex += rng.normal(0, 4, tex.shape)
    return np.clip(tex, 0, 255).astype(np.uint8)


def hedge_texture(rng: np.random.Generator, style: Style, width_m: float, height_m: float,
                  fence: bool) -> np.ndarray:
    """Gap filler between buildings: leafy hedge or a plank fence."""
    th, tw = max(4, int(height_m * FACADE_PPM)), max(4, int(width_m * FACADE_PPM))
    if fence:
        base = jitter(rng, (130, 105, 80), 30)
        planks = 0.8 + 0.2 * ((np.arange(tw) // 3) % 2)
        tex = base * planks[None, :, None] * np.ones((th, 1, 1))
    else:
        base = style.greens[rng.integers(len(style.greens))]
        tex = base * (1 + 0.35 * value_noise(rng, th, tw, 30)[..., None])
    tex += rng.normal(0, 6, tex.shape)
    return np.clip(tex, 0, 255).astype(np.uint8)


def sky_panorama(rng: np.random.Generator, style: Style, height: int,
                 width: int) -> np.ndarray:
    """Gradient sky with clouds; rows 0..height-1 lie above the horizon (row ``height``)."""
    ph, pw = height + 1, width
    t = (np.arange(ph, dtype=np.float32) / ph) ** 1.5
    grad = style.sky_top[None, :] * (1 - t[:, None]) + style.sky_horizon[None, :] * t[:, None]
    pano = np.repeat(grad[:, None, :], pw, axis=1)
    clouds = value_noise(rng, ph, pw, 6, octaves=4)
    cover = np.clip((clouds - (0.6 - style.cloud_cover)) * 3.0, 0, 1)[..., None]
    pano = pano * (1 - cover * 0.85) + style.cloud * cover * 0.85
    return np.clip(pano, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# scene elements: one dataclass per element, each knowing where it is and how to draw itself


class Element(Protocol):
    """A street object: ``position`` (x, z) at time t sorts it, ``draw`` paints it."""

    def position(self, t: float) -> tuple[float, float]: ...

    def draw(self, canvas: Canvas, style: Style, t: float) -> None: ...


@dataclass
class Building:
    """A box behind the facade line; its front and its near side wall are visible."""

    side: int
    z0: float
    z1: float
    height: float
    depth: float
    facade_x: float
    texture: np.ndarray

    def draw(self, canvas: Canvas, style: Style) -> None:
        s, fx = self.side, self.side * self.facade_x
        dist = canvas.cam.distance(fx, max(self.z0, min(self.z1, canvas.cam.pos[2])))
        top = np.array([fx, self.height, self.z0])
        down = np.array([0.0, -self.height, 0.0])
        if canvas.cam.pos[2] < self.z0:
            canvas.textured_quad(top, np.array([s * self.depth, 0, 0]), down, self.texture,
                                 BUILDING, style.shade(np.array([0.0, 0, -1])), dist)
        canvas.textured_quad(top, np.array([0, 0, self.z1 - self.z0]), down, self.texture,
                             BUILDING, style.shade(np.array([-s, 0.0, 0])), dist)


@dataclass
class GapFill:
    """A hedge or fence in the facade line where two buildings leave a gap."""

    side: int
    z0: float
    z1: float
    height: float
    facade_x: float
    texture: np.ndarray
    label_id: int

    def draw(self, canvas: Canvas, style: Style) -> None:
        fx = self.side * self.facade_x
        dist = canvas.cam.distance(fx, max(self.z0, min(self.z1, canvas.cam.pos[2])))
        canvas.textured_quad(np.array([fx, self.height, self.z0]),
                             np.array([0, 0, self.z1 - self.z0]),
                             np.array([0.0, -self.height, 0]), self.texture, self.label_id,
                             style.shade(np.array([-self.side, 0.0, 0])), dist)


@dataclass
class Tree:
    """Trunk plus an irregular leafy crown; bushes are trees without a trunk."""

    x: float
    z: float
    trunk_height: float
    trunk_width: float
    crown: float
    outline: np.ndarray      # (N,) radius jitter of the crown outline
    clumps: np.ndarray       # (K, 3): offset x, offset y, radius, all in crown radii
    clump_shades: np.ndarray  # (K,)
    green: Color
    bark: Color

    def position(self, t: float) -> tuple[float, float]:
        return self.x, self.z

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        cam = canvas.cam
        dist = cam.distance(self.x, self.z)
        base = np.array([self.x, 0.0, self.z])
        if self.trunk_height > 0:
            top = base + UP * (self.trunk_height + 0.3 * self.crown)
            canvas.fill([billboard_quad(cam, base, top, self.trunk_width)],
                        canvas.fogged(self.bark, dist), VEGETATION)
        center = base + UP * (self.trunk_height + 0.8 * self.crown)
        canvas.fill([billboard_blob(cam, center, self.crown, self.outline)],
                    canvas.fogged(self.green * 0.8, dist), VEGETATION)
        if self.crown * cam.f / max(dist, 1e-3) < 5:  # leaf clumps would be sub-pixel
            return
        ring = np.linspace(0, 2 * math.pi, 8, endpoint=False)
        ox, oy, r = (self.clumps * self.crown).T
        across = ox[:, None] + r[:, None] * np.cos(ring)
        up = oy[:, None] + r[:, None] * np.sin(ring)
        blobs = center + across[..., None] * cam.right + up[..., None] * UP
        canvas.fill(blobs, canvas.fogged(self.green * self.clump_shades[:, None], dist),
                    VEGETATION)


@dataclass
class Pole:
    """Street furniture: a plain pole, a street light, a sign post or a traffic light."""

    x: float
    z: float
    height: float
    width: float
    kind: str                 # "plain" | "light" | "sign" | "traffic_light"
    color: Color
    sign_shape: int           # vertices of the sign plate (3, 4 or 16)
    sign_color: Color
    sign_height: float

    def position(self, t: float) -> tuple[float, float]:
        return self.x, self.z

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        cam = canvas.cam
        dist = cam.distance(self.x, self.z)
        base = np.array([self.x, 0.0, self.z])
        color = canvas.fogged(self.color, dist)
        canvas.fill([billboard_quad(cam, base, base + UP * self.height, self.width)], color,
                    POLE)
        if self.kind == "light":
            inward = -math.copysign(1.0, self.x)
            top = base + UP * self.height
            arm = np.array([top + [0, -0.1, 0], top + [inward * 1.8, -0.1, 0],
                            top + [inward * 1.8, 0.05, 0], top + [0, 0.05, 0]])
            head = np.array([top + [inward * 1.4, -0.25, -0.2], top + [inward * 2.0, -0.25, -0.2],
                             top + [inward * 2.0, -0.05, -0.2], top + [inward * 1.4, -0.05, -0.2]])
            canvas.fill([arm, head], color, POLE)
        elif self.kind == "sign":
            self._plate(canvas, dist)
        elif self.kind == "traffic_light":
            lo = base + np.array([-0.17, self.height - 1.0, -0.35])
            for face, normal in box_faces(cam, lo, lo + [0.34, 0.95, 0.3]):
                shade = style.shade(normal)
                canvas.fill([face], canvas.fogged(np.full(3, 35.0) * shade, dist), TRAFFIC_LIGHT)
            lit = int(t * FPS // 40) % 3  # the light changes every 4 s
            a = np.linspace(0, 2 * math.pi, 8, endpoint=False)
            disc = 0.1 * np.stack([np.cos(a), np.sin(a), 0 * a], 1)
            for i, on in enumerate(((230, 40, 30), (240, 190, 40), (60, 220, 90))):
                center = lo + np.array([0.17, 0.78 - 0.28 * i, -0.01])
                color = np.asarray(on if i == lit else (50, 50, 50), np.float32)
                canvas.fill([center + disc], canvas.fogged(color, dist), None)

    def _plate(self, canvas: Canvas, dist: float) -> None:
        """The sign faces oncoming traffic: a plane of constant Z in front of the pole."""
        n = self.sign_shape
        a = np.linspace(0, 2 * math.pi, n, endpoint=False) + (math.pi / 2 if n == 3 else
                                                               math.pi / 4)
        r = 0.42 if n == 4 else 0.38
        center = np.array([self.x, self.sign_height, self.z - 0.06])
        ring = center + np.stack([r * np.cos(a), r * np.sin(a), 0 * a], 1)
        inner = center + np.stack([0.75 * r * np.cos(a), 0.75 * r * np.sin(a), 0 * a - 0.01], 1)
        canvas.fill([ring], canvas.fogged(self.sign_color, dist), TRAFFIC_SIGN)
        canvas.fill([inner], canvas.fogged(np.full(3, 230.0), dist), None)


@dataclass
class Car:
    """Body, glass cabin and wheels; parked cars have speed 0, traffic keeps its lane."""

    x: float
    z0: float
    speed: float
    length: float
    width: float
    body_top: float
    cabin_top: float
    color: Color
    glass: Color

    def position(self, t: float) -> tuple[float, float]:
        return self.x, self.z0 + self.speed * t

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        cam = canvas.cam
        x, z = self.position(t)
        dist = cam.distance(x, z)
        hw, hl = self.width / 2, self.length / 2
        shadow = np.array([[x - hw - 0.1, 0.01, z - hl], [x + hw + 0.1, 0.01, z - hl],
                           [x + hw + 0.1, 0.01, z + hl], [x - hw - 0.1, 0.01, z + hl]])
        canvas.fill([shadow], canvas.fogged(style.road * 0.35, dist), None)
        faces, colors = [], []
        wheels = (-1, 1) if cam.f * 0.6 / max(dist, 1e-3) > 3 else ()  # skip sub-pixel wheels
        for sx in wheels:
            for sz in (-1, 1):
                wx, wz = x + sx * (hw - 0.25), z + sz * (hl - 0.75)
                for face, _ in box_faces(cam, np.array([wx - 0.12, 0, wz - 0.33]),
                                         np.array([wx + 0.12, 0.62, wz + 0.33])):
                    faces.append(face)
                    colors.append(np.full(3, 22.0))
        cab = 0.28 * self.length
        boxes = [((x - hw, 0.3, z - hl), (x + hw, self.body_top, z + hl), self.color),
                 ((x - hw + 0.1, self.body_top, z - cab),
                  (x + hw - 0.1, self.cabin_top, z + cab * 0.7), self.glass)]
        for lo, hi, sides in boxes:  # body first: the cabin sits on top of it
            for face, normal in box_faces(cam, np.array(lo), np.array(hi)):
                faces.append(face)
                colors.append((self.color if normal[1] > 0 else sides) * style.shade(normal))
        canvas.fill(faces, canvas.fogged(np.array(colors), dist), CAR)


@dataclass
class Pedestrian:
    """A walking person: legs and arms swing with the distance walked.

    People crossing turn around at the far sidewalk instead of walking into a facade.
    """

    x0: float
    z0: float
    vx: float
    vz: float
    x_limit: float
    height: float
    shirt: Color
    pants: Color
    skin: Color
    phase: float

    def position(self, t: float) -> tuple[float, float]:
        span = 2 * self.x_limit
        p = (self.x0 + self.x_limit + self.vx * t) % (2 * span)
        return (p if p < span else 2 * span - p) - self.x_limit, self.z0 + self.vz * t

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        cam = canvas.cam
        x, z = self.position(t)
        dist = cam.distance(x, z)
        h = self.height
        base = np.array([x, 0.0, z])
        stride = self.phase + math.hypot(self.vx, self.vz) * t / (0.4 * h) * math.pi
        swing = 0.18 * h * math.sin(stride)
        lateral = abs(self.vx) / max(1e-6, math.hypot(self.vx, self.vz))
        hip = base + UP * 0.5 * h
        shoulder = base + UP * 0.8 * h
        limbs, colors = [], []
        for sign in (-1, 1):
            foot = base + cam.right * (sign * 0.06 * h + sign * swing * lateral)
            foot = foot + UP * max(0.0, sign * math.sin(stride)) * 0.06 * h * (1 - lateral)
            limbs.append(billboard_quad(cam, foot, hip + cam.right * sign * 0.05 * h, 0.085 * h))
            colors.append(self.pants)
        limbs.append(billboard_quad(cam, hip - UP * 0.03 * h, shoulder + UP * 0.03 * h, 0.2 * h))
        colors.append(self.shirt)
        for sign in (-1, 1):
            s = shoulder + cam.right * sign * 0.11 * h
            hand = s - UP * 0.33 * h + cam.right * (sign * 0.02 * h - sign * swing * 0.5)
            limbs.append(billboard_quad(cam, hand, s, 0.055 * h))
            colors.append(self.shirt)
        canvas.fill(limbs, canvas.fogged(np.array(colors), dist), PERSON)
        canvas.fill([billboard_blob(cam, base + UP * 0.9 * h, 0.065 * h, np.ones(10))],
                    canvas.fogged(self.skin, dist), PERSON)


# --------------------------------------------------------------------------------------------
# world generation


@dataclass
class CameraPath:
    """Forward motion with slight yaw wobble, lateral drift and vertical bob."""

    x: float
    height: float
    speed: float
    yaw_amp: float
    yaw_freq: float
    drift_amp: float
    bob_amp: float
    pitch: float
    phase: float

    def at(self, t: float, f: float, width: int, height: int) -> Camera:
        """The camera at time t (seconds)."""
        w = 2 * math.pi
        yaw = self.yaw_amp * math.sin(w * self.yaw_freq * t + self.phase)
        x = self.x + self.drift_amp * math.sin(w * 0.07 * t + self.phase)
        bob = self.bob_amp * math.sin(w * 1.7 * t + self.phase)
        pos = np.array([x, self.height + bob, self.speed * t])
        return Camera(pos, yaw, self.pitch + 0.3 * bob, f, width, height)


@dataclass
class Scene:
    """One sequence's world; everything random is drawn once here, frames are pure rendering."""

    seed: int
    height: int
    width: int
    focal: float
    style: Style
    path: CameraPath
    ground: np.ndarray
    ground_far: np.ndarray
    ground_classes: np.ndarray
    ground_extent: float
    sky: np.ndarray
    buildings: list[Building]
    gaps: list[GapFill]
    elements: list[Element]
    vignette: np.ndarray


def make_buildings(rng: np.random.Generator, style: Style, layout: Layout, z_end: float
                   ) -> tuple[list[Building], list[GapFill]]:
    """Rows of buildings on both sides, with occasional gaps closed by hedges or fences."""
    buildings, gaps = [], []
    for side in (-1, 1):
        z = -40.0
        while z < z_end:
            width = rng.uniform(8, 30)
            height = rng.uniform(5, 28)
            buildings.append(Building(side, z, z + width, height, rng.uniform(8, 20),
                                      layout.facade_x, facade_texture(rng, style, width, height)))
            z += width
            if rng.random() < 0.35:
                gap = rng.uniform(2, 12)
                fence = bool(rng.random() < 0.4)
                gh = rng.uniform(1.0, 2.0) if fence else rng.uniform(1.2, 3.5)
                gaps.append(GapFill(side, z, z + gap, gh, layout.facade_x,
                                    hedge_texture(rng, style, gap, gh, fence),
                                    FENCE if fence else VEGETATION))
                z += gap
    return buildings, gaps


def make_tree(rng: np.random.Generator, style: Style, x: float, z: float, bush: bool) -> Tree:
    """A tree (or bush) whose crown shape and leaf clumps are fixed, so it stays rigid."""
    k = int(rng.integers(10, 22))
    ang, rad = rng.uniform(0, 2 * math.pi, k), np.sqrt(rng.uniform(0, 1, k)) * 0.65
    clumps = np.stack([rad * np.cos(ang), rad * np.sin(ang), rng.uniform(0.2, 0.45, k)], 1)
    crown = rng.uniform(0.5, 1.2) if bush else rng.uniform(1.5, 3.5)
    return Tree(x, z, 0.0 if bush else rng.uniform(1.8, 4.0), rng.uniform(0.2, 0.45), crown,
                rng.uniform(0.8, 1.15, 14), clumps, rng.uniform(0.6, 1.35, k),
                style.greens[rng.integers(len(style.greens))], jitter(rng, (85, 70, 55), 20))


def make_street_furniture(rng: np.random.Generator, style: Style, layout: Layout,
                          z_end: float, density: float) -> list[Element]:
    """Trees, bushes and poles along both sidewalks."""
    out: list[Element] = []
    edge = layout.road_half + layout.verge
    for side in (-1, 1):
        has_trees = rng.random() < 0.75
        z = rng.uniform(-20, 0)
        while has_trees and z < z_end:
            x = side * (edge + rng.uniform(0.5, 1.2) if rng.random() < 0.7
                        else layout.facade_x - rng.uniform(0.8, 1.5))
            out.append(make_tree(rng, style, x, z, bush=bool(rng.random() < 0.3)))
            z += rng.uniform(6, 20) / density
        z = rng.uniform(-20, 0)
        while z < z_end:
            kind = rng.choice(["plain", "light", "sign", "traffic_light"], p=[0.2, 0.35, 0.35,
                                                                              0.1])
            height = {"light": rng.uniform(6, 9), "traffic_light": rng.uniform(3.5, 5)}.get(
                kind, rng.uniform(2.6, 4.0))
            sign_color = [(200, 30, 30), (30, 70, 170), (230, 190, 30)][rng.integers(3)]
            out.append(Pole(side * (layout.road_half + 0.4), z, height, rng.uniform(0.1, 0.25),
                            kind, jitter(rng, (120, 120, 115), 30),
                            int(rng.choice([3, 4, 16])), jitter(rng, sign_color, 20),
                            height - rng.uniform(0.3, 0.6)))
            z += rng.uniform(10, 35) / density
    return out


def make_traffic(rng: np.random.Generator, style: Style, layout: Layout, path: CameraPath,
                 z_end: float, duration: float, density: float) -> list[Element]:
    """Parked cars along the curbs and moving cars; each lane has one speed, so no collisions."""
    palette = [(235, 235, 235), (30, 30, 32), (160, 162, 165), (110, 110, 115), (150, 25, 25),
               (30, 50, 120), (40, 80, 50), (190, 170, 130)]

    def car(x: float, z: float, speed: float) -> Car:
        body = rng.uniform(0.95, 1.2)
        return Car(x, z, speed, rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.95), body,
                   body + rng.uniform(0.45, 0.75), jitter(rng, palette[rng.integers(8)], 15),
                   jitter(rng, (40, 48, 58), 10))

    out: list[Element] = []
    if layout.parking:
        for side in (-1, 1):
            x = side * (layout.road_half - layout.parking / 2)
            z = rng.uniform(-15, 5)
            while z < z_end:
                if rng.random() < 0.5:
                    out.append(car(x, z, 0.0))
                z += rng.uniform(5.5, 9) / min(density, 1.3)
    for direction in (-1, 1):
        for lane in range(layout.lanes):
            x = layout.lane_center(lane, direction)
            if direction > 0:
                own = lane == layout.camera_lane
                speed = path.speed + (rng.uniform(0.5, 3) if own else rng.uniform(-3, 3))
                z, stop = (rng.uniform(8, 25) if own else rng.uniform(-30, 10)), z_end
            else:
                speed = -rng.uniform(5, 13)
                z, stop = rng.uniform(0, 20), z_end - speed * duration
            while z < stop:
                if rng.random() < 0.5 * density:
                    out.append(car(x, z, speed))
                z += rng.uniform(9, 40)
    return out


def make_pedestrians(rng: np.random.Generator, layout: Layout, z_end: float,
                     density: float) -> list[Element]:
    """People walking along the sidewalks and a few crossing the road."""
    out: list[Element] = []
    for _ in range(int(rng.poisson(density * 0.2 * (z_end + 20)))):
        side = rng.choice([-1, 1])
        x = side * (layout.road_half + layout.verge + rng.uniform(0.4, layout.sidewalk - 0.3))
        crossing = rng.random() < 0.1
        speed = rng.uniform(0.8, 1.7)
        vx = -side * speed if crossing else rng.normal(0, 0.05)
        vz = 0.0 if crossing else rng.choice([-1, 1]) * speed
        out.append(Pedestrian(x, rng.uniform(-10, z_end), vx, vz, layout.facade_x - 0.3,
                              rng.uniform(1.5, 1.95),
                              jitter(rng, tuple(rng.uniform(20, 230, 3)), 0),
                              jitter(rng, tuple(rng.uniform(20, 120, 3)), 0),
                              jitter(rng, (200, 160, 130), 50), rng.uniform(0, 2 * math.pi)))
    return out


def make_scene(seed: int, frames: int, height: int, width: int,
               difficulty: float = DEFAULT_DIFFICULTY) -> Scene:
    """Draw every random choice of one sequence from ``seed``."""
    rng = np.random.default_rng(seed)
    style = sample_style(rng, difficulty, frames)
    layout = sample_layout(rng)
    duration = frames / FPS
    path = CameraPath(x=layout.lane_center(layout.camera_lane, 1), height=rng.uniform(1.3, 1.7),
                      speed=rng.uniform(4, 11), yaw_amp=rng.uniform(0.005, 0.04),
                      yaw_freq=rng.uniform(0.05, 0.3), drift_amp=rng.uniform(0, 0.3),
                      bob_amp=rng.uniform(0.005, 0.03), pitch=rng.uniform(0.0, 0.06),
                      phase=rng.uniform(0, 2 * math.pi))
    z_end = path.speed * duration + OBJECT_RANGE
    density = rng.uniform(0.6, 1.0) * (0.7 + 0.6 * difficulty)
    x_ext = layout.facade_x + 6
    ground, ground_classes = ground_texture(rng, style, layout, x_ext)
    focal = (width / 2) / math.tan(math.radians(rng.uniform(55, 70)) / 2)
    buildings, gaps = make_buildings(rng, style, layout, path.speed * duration + BUILDING_RANGE)
    elements = (make_street_furniture(rng, style, layout, z_end, density)
                + make_traffic(rng, style, layout, path, z_end, duration, density)
                + make_pedestrians(rng, layout, z_end, density))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) ** 2 + (yy - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    vignette = (1 - rng.uniform(0.1, 0.4) * r2)[..., None]
    sky = sky_panorama(rng, style, height, width + int(focal * 0.3) + 64)
    return Scene(seed, height, width, focal, style, path, ground,
                 cv2.GaussianBlur(ground, (0, 0), 2.5), ground_classes, x_ext, sky, buildings,
                 gaps, elements, vignette)


# --------------------------------------------------------------------------------------------
# rendering


def render_background(scene: Scene, cam: Camera, t: float) -> Canvas:
    """Sky, then the ground by casting one ray per pixel (world-anchored texture, exact labels)."""
    h, w = scene.height, scene.width
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    rays = np.stack([(u + 0.5 - w / 2) / cam.f, -(v + 0.5 - h / 2) / cam.f, np.ones_like(u)], -1)
    world = rays @ cam.rot  # camera -> world directions
    dy = world[..., 1]
    ground = dy < -1e-4
    s = np.where(ground, cam.pos[1] / np.maximum(-dy, 1e-4), 0).clip(0, 3000)
    gx = cam.pos[0] + s * world[..., 0]
    gz = cam.pos[2] + s * world[..., 2]
    ext, ppm = scene.ground_extent, GROUND_PPM
    map_x = np.clip((gx + ext) * ppm, 0, scene.ground.shape[1] - 1.001).astype(np.float32)
    map_y = np.mod(gz * ppm, scene.ground.shape[0]).astype(np.float32)
    near_col = cv2.remap(scene.ground, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    far_col = cv2.remap(scene.ground_far, map_x, map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_WRAP)
    dist = s * np.linalg.norm(world, axis=-1)
    blend = np.clip((dist - 10) / 30, 0, 1)[..., None]
    fog = (1 - np.exp(-dist / scene.style.fog_distance))[..., None]
    col = (near_col * (1 - blend) + far_col * blend) * (1 - fog) + scene.style.haze * fog

    horizon = cam.height / 2 - cam.f * math.tan(cam.pitch)
    sky_h, sky_w = scene.sky.shape[:2]
    x0 = int(round(cam.f * cam.yaw + 0.8 * t)) + (sky_w - w) // 2
    rows = np.clip(np.arange(h) - int(round(horizon)) + sky_h - 1, 0, sky_h - 1)
    cols = np.mod(np.arange(w) + x0, sky_w)
    sky = scene.sky[rows][:, cols]

    image = np.where(ground[..., None], col, sky).astype(np.uint8)
    label = np.where(ground, scene.ground_classes[map_x.astype(np.int32)], SKY).astype(np.uint8)
    return Canvas(cam, image, label, scene.style.haze, scene.style.fog_distance)


def exposure(style: Style, frame: int) -> float:
    """Auto-exposure drift: piecewise-linear gain between knots every 8 frames."""
    return float(np.interp(frame / 8.0, np.arange(len(style.exposure_knots)),
                           style.exposure_knots))


def post_process(scene: Scene, cam: Camera, image: np.ndarray, frame: int) -> np.ndarray:
    """Camera effects on the image only (labels stay exact): blur, exposure, tint, noise, JPEG."""
    st = scene.style
    rng = np.random.default_rng([scene.seed, frame])
    x = image.astype(np.float32)
    zoom = st.blur * scene.path.speed / FPS * 0.012
    if zoom > 0.001:  # forward motion blur: average with a slightly zoomed copy
        m = cv2.getRotationMatrix2D((scene.width / 2, cam.height / 2 - cam.f * cam.pitch), 0,
                                    1 + zoom)
        x = 0.5 * x + 0.5 * cv2.warpAffine(x, m, (scene.width, scene.height),
                                           borderMode=cv2.BORDER_REFLECT)
    x *= exposure(st, frame) * st.tint
    x *= scene.vignette
    x += rng.standard_normal(x.shape, dtype=np.float32) * st.noise_sigma
    out = np.clip(x, 0, 255).astype(np.uint8)
    if st.jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, st.jpeg_quality])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


def render_frame(scene: Scene, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame: background, buildings far to near, then street objects far to near."""
    t = frame / FPS
    cam = scene.path.at(t, scene.focal, scene.width, scene.height)
    canvas = render_background(scene, cam, t)
    cz = cam.pos[2]
    buildings = [b for b in scene.buildings if b.z1 > cz - 5 and b.z0 < cz + BUILDING_RANGE]
    for b in sorted(buildings, key=lambda b: -b.z0):
        b.draw(canvas, scene.style)
    for g in scene.gaps:
        if g.z1 > cz - 5 and g.z0 < cz + BUILDING_RANGE:
            g.draw(canvas, scene.style)
    visible = []
    for e in scene.elements:
        x, z = e.position(t)
        if cz - 6 < z < cz + OBJECT_RANGE:
            visible.append((cam.distance(x, z), e))
    for _, e in sorted(visible, key=lambda item: -item[0]):
        e.draw(canvas, scene.style, t)
    return post_process(scene, cam, canvas.image, frame), canvas.label


def render_sequence(seed: int, frames: int, height: int, width: int,
                    difficulty: float = DEFAULT_DIFFICULTY
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (rgb uint8 HxWx3, label uint8 HxW train ids) for each frame of one sequence."""
    scene = make_scene(seed, frames, height, width, difficulty)
    for frame in range(frames):
        yield render_frame(scene, frame)


# --------------------------------------------------------------------------------------------
# writing datasets and videos


def sequence_seed(seed: int, split: str, index: int) -> int:
    """Independent seeds per (split, index): train/val/test never share a sequence."""
    ss = np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEYS[split], index))
    return int(ss.generate_state(1, np.uint64)[0])


def generate_split(root: Path, split: str, count: int, frames: int, height: int, width: int,
                   seed: int = 0, difficulty: float = DEFAULT_DIFFICULTY) -> list[Path]:
    """Write ``count`` sequences of ``split`` in the generic layout; returns their folders."""
    out = []
    with tqdm(total=count * frames, desc=f"synthetic {split}", unit="frame") as bar:
        for index in range(count):
            seq_dir = Path(root) / split / f"{split}_{index:03d}"
            (seq_dir / "images").mkdir(parents=True, exist_ok=True)
            (seq_dir / "labels").mkdir(parents=True, exist_ok=True)
            frames_iter = render_sequence(sequence_seed(seed, split, index), frames, height,
                                          width, difficulty)
            for frame, (rgb, label) in enumerate(frames_iter):
                name = f"{frame:06d}.png"
                cv2.imwrite(str(seq_dir / "images" / name), rgb[..., ::-1])
                cv2.imwrite(str(seq_dir / "labels" / name), label)
                bar.update()
            out.append(seq_dir)
    return out


def generate_dataset(root: Path, counts: dict[str, int], frames: int, height: int, width: int,
                     seed: int = 0, difficulty: float = DEFAULT_DIFFICULTY) -> None:
    """All splits plus ``synthetic.json`` recording how the data was made."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        generate_split(root, split, counts.get(split, 0), frames, height, width, seed, difficulty)
    meta = {"generator": "training.synthetic", "seed": seed, "frames": frames,
            "height": height, "width": width, "difficulty": difficulty, "fps": FPS,
            "sequences": {s: counts.get(s, 0) for s in SPLITS},
            "train_ids": list(USED_TRAIN_IDS)}
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")


def write_video(path: Path, frames: int, height: int, width: int, seed: int = 0,
                difficulty: float = DEFAULT_DIFFICULTY) -> None:
    """One held-out sequence (its own seed stream) as an mp4 for the node demo."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open video writer for {path}")
    try:
        frames_iter = render_sequence(sequence_seed(seed, "video", 0), frames, height, width,
                                      difficulty)
        for rgb, _ in tqdm(frames_iter, total=frames, desc="synthetic video", unit="frame"):
            writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    finally:
        writer.release()


def main(argv: list[str] | None = None) -> int:
    """CLI: a dataset in the generic layout, or one sequence as an mp4 (``--video``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="dataset root to write")
    parser.add_argument("--train", type=int, default=24, help="training sequences")
    parser.add_argument("--val", type=int, default=4, help="validation sequences")
    parser.add_argument("--test", type=int, default=4, help="test sequences")
    parser.add_argument("--frames", type=int, default=30, help="frames per sequence")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=float, default=DEFAULT_DIFFICULTY,
                        help="0..1: class ambiguity, exposure drift, blur, noise, clutter")
    parser.add_argument("--video", type=Path, help="write one sequence as mp4 instead")
    parser.add_argument("--video-frames", type=int, default=100)
    args = parser.parse_args(argv)
    if (args.out is None) == (args.video is None):
        parser.error("give exactly one of --out ROOT or --video FILE.mp4")
    if not 0.0 <= args.difficulty <= 1.0:
        parser.error("--difficulty must lie in [0, 1]")
    if min(args.height, args.width, args.frames, args.video_frames) < 1:
        parser.error("--height, --width, --frames and --video-frames must be positive")
    cv2.setNumThreads(1)
    if args.video is not None:
        write_video(args.video, args.video_frames, args.height, args.width, args.seed,
                    args.difficulty)
    else:
        counts = {"train": args.train, "val": args.val, "test": args.test}
        generate_dataset(args.out, counts, args.frames, args.height, args.width, args.seed,
                         args.difficulty)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
