"""Materials and textures: per-sequence palette and light, ground materials, facades, foliage, sky.

Everything is generated once per sequence from its random stream and anchored in the world (or on
an object), so textures move with the scene and optical flow sees real structure. Ground detail
(asphalt grain, grass blades, paver joints) lives in a small tiling ``detail`` texture sampled at
high resolution close to the camera; the coarse ground map carries colour variation and shadows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Color = np.ndarray  # (3,) float32 RGB 0..255

# ground materials (the class of a ground pixel is stored separately: an asphalt footpath is
# sidewalk, a paved plaza is sidewalk, a parking lot is road)
ASPHALT, PAVERS, CONCRETE, GRASS, DIRT, PAINT, CURB, GRAVEL, RAIL = range(9)
N_MATERIALS = 9
DETAIL_PPM = 64.0      # detail texels per metre
DETAIL_SIZE = 256      # the detail tile repeats every DETAIL_SIZE / DETAIL_PPM metres
# detail channel (0 grain, 1 blades, 2 joints) and strength per ground material
DETAIL_CHANNEL = np.array([0, 2, 2, 1, 0, 0, 0, 0, 0], np.int64)
DETAIL_AMP = np.array([0.16, 0.22, 0.14, 0.45, 0.3, 0.05, 0.1, 0.4, 0.2], np.float32)


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


def jitter(rng: np.random.Generator, base: tuple[float, ...] | np.ndarray, amount: float) -> Color:
    """A colour near ``base``: per-sequence or per-object variation of a material."""
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-amount, amount, 3), 0, 255
                   ).astype(np.float32)


def pick(rng: np.random.Generator, options: list) -> object:
    """One of ``options`` (lists of tuples confuse ``rng.choice``)."""
    return options[int(rng.integers(len(options)))]


@dataclass
class Style:
    """A sequence's palette and light. Class ambiguity (pale asphalt, dry lawns) is chosen here."""

    asphalt: Color
    asphalt2: Color
    pavers: Color
    concrete: Color
    grass: Color
    grass2: Color
    dirt: Color
    curb: Color
    paint: Color
    greens: list[Color]
    sky_top: Color
    sky_horizon: Color
    cloud: Color
    cloud_cover: float
    haze: Color
    fog_distance: float
    sun: np.ndarray          # unit vector towards the sun (world)
    ambient: float           # light in shadow relative to full sun
    paver_size: float
    gravel: Color

    def shade(self, normal: np.ndarray) -> float:
        """Lambert light of a face: ambient plus direct sun."""
        return self.ambient + (1 - self.ambient) * max(0.0, float(np.dot(normal, self.sun)))


def sample_style(rng: np.random.Generator) -> Style:
    """Random per-sequence look, wide enough that real streets and campuses fall inside it."""
    weather = pick(rng, ["clear", "clear", "hazy", "overcast", "overcast", "dusk"])
    g = rng.uniform(60, 120) if rng.random() < 0.7 else rng.uniform(120, 175)  # pale asphalt
    asphalt = jitter(rng, (g, g, g * rng.uniform(0.97, 1.06)), 6)
    pavers = jitter(rng, pick(rng, [(165, 160, 155), (150, 100, 85), (190, 180, 150),
                                    (120, 120, 125), (200, 195, 190)]), 18)
    grass = pick(rng, [(70, 110, 40), (95, 130, 55), (120, 135, 65), (60, 90, 35),
                       (140, 140, 80), (85, 120, 60)])
    grass = jitter(rng, grass, 15)
    greens = [jitter(rng, pick(rng, [(55, 85, 35), (70, 100, 45), (45, 70, 40), (90, 110, 50),
                                     (110, 105, 50)]), 15) for _ in range(4)]
    skies = {"clear": ((60, 120, 205), (170, 200, 230)), "hazy": ((140, 170, 210), (215, 220, 225)),
             "overcast": ((175, 180, 188), (215, 215, 218)),
             "dusk": ((60, 75, 135), (235, 170, 120))}
    top, horizon = skies[weather]
    elevation = math.radians(rng.uniform(12, 70) if weather != "dusk" else rng.uniform(4, 15))
    azimuth = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                    math.cos(elevation) * math.cos(azimuth)])
    ambient = {"clear": rng.uniform(0.35, 0.55), "hazy": rng.uniform(0.5, 0.7),
               "overcast": rng.uniform(0.8, 0.92), "dusk": rng.uniform(0.5, 0.7)}[weather]
    horizon_c = jitter(rng, horizon, 12)
    return Style(
        asphalt=asphalt, asphalt2=np.clip(asphalt * rng.uniform(0.8, 1.15), 0, 255),
        pavers=pavers, concrete=jitter(rng, (175, 172, 165), 20), grass=grass,
        grass2=np.clip(grass * rng.uniform(0.8, 1.25) + rng.uniform(-10, 15, 3), 0, 255),
        dirt=jitter(rng, pick(rng, [(125, 105, 80), (150, 135, 110), (100, 85, 65)]), 15),
        curb=jitter(rng, (170, 170, 165), 20), paint=jitter(rng, (230, 230, 225), 12),
        greens=greens, sky_top=jitter(rng, top, 15), sky_horizon=horizon_c,
        cloud=jitter(rng, (238, 238, 242), 10),
        cloud_cover=rng.uniform(0.0, 0.7) if weather != "overcast" else 1.0,
        haze=horizon_c, fog_distance=rng.uniform(250, 900) * (0.5 if weather == "hazy" else 1.0),
        sun=sun, ambient=ambient, paver_size=rng.uniform(0.2, 0.6),
        gravel=jitter(rng, (175, 165, 145), 15),
    )


def paint_ground(rng: np.random.Generator, style: Style, material: np.ndarray,
                 ppm: float) -> np.ndarray:
    """Coarse ground colour (float32 RGB, rows = Z, cols = X) from the material map."""
    h, w = material.shape
    metres = max(h, w) / ppm
    blotch = value_noise(rng, h, w, metres / 12.0)
    mid = value_noise(rng, h, w, metres / 2.0, octaves=2)
    fine = rng.standard_normal((h, w), dtype=np.float32)
    stripes = np.sin(np.arange(w, dtype=np.float32) / ppm * math.pi / rng.uniform(1.5, 3.0))
    lut = np.zeros((N_MATERIALS, 3), np.float32)
    coarse = np.zeros(N_MATERIALS, np.float32)
    grain = np.zeros(N_MATERIALS, np.float32)
    for m, (color, c, g) in {
        ASPHALT: (style.asphalt, 0.10, 0.06), PAVERS: (style.pavers, 0.08, 0.08),
        CONCRETE: (style.concrete, 0.08, 0.05), GRASS: (style.grass, 0.22, 0.12),
        DIRT: (style.dirt, 0.15, 0.1), PAINT: (style.paint, 0.04, 0.04),
        CURB: (style.curb, 0.05, 0.05), GRAVEL: (style.gravel, 0.08, 0.15),
        RAIL: (np.array([95, 90, 85], np.float32), 0.05, 0.1),
    }.items():
        lut[m], coarse[m], grain[m] = color, c, g
    c, g = coarse[material], grain[material]
    tex = lut[material] * (1 + c * blotch + 0.5 * c * mid + g * fine)[..., None]
    patch = (material == ASPHALT) & (mid > 0.45)  # patched asphalt in a second shade
    tex[patch] = style.asphalt2 * (1 + 0.06 * fine[patch])[:, None]
    grass = material == GRASS  # dry patches and mowing stripes
    dry = np.clip(blotch[grass] * 1.5, 0, 1)[:, None]
    stripe = np.broadcast_to(stripes[None, :], (h, w))[grass][:, None]
    tex[grass] = (tex[grass] * (1 - dry) + style.grass2 * (1 + 0.1 * fine[grass])[:, None] * dry
                  ) * (1 + 0.05 * stripe)
    return tex


def blur_wrap(x: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Gaussian blur of a tiling texture (its edges wrap around)."""
    s = x.shape[0]
    big = cv2.GaussianBlur(np.tile(x, (3, 3)), (0, 0), sx, sigmaY=sy)
    return big[s:2 * s, s:2 * s]


def detail_tile(rng: np.random.Generator, style: Style) -> np.ndarray:
    """Tiling (S,S,3) float32 detail in about [-1, 1]: asphalt grain, grass blades, paver joints."""
    s = DETAIL_SIZE
    grain = rng.standard_normal((s, s)).astype(np.float32)
    grain = 0.6 * grain + 0.4 * blur_wrap(grain, 1.2, 1.2) * 2
    grain += (rng.random((s, s)) < 0.01) * 2.0  # bright stones
    blades = rng.standard_normal((s, s)).astype(np.float32)
    blades = blur_wrap(blades, 0.6, 2.5) * 2.5
    blades += 0.5 * rng.standard_normal((s, s)).astype(np.float32)
    size = style.paver_size * DETAIL_PPM
    per = max(2, int(round(s / size)))
    size = s / per
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    row = (yy // size).astype(int)
    xx_off = xx + (row % 2) * size / 2  # running bond
    joint = ((yy % size) < 2) | ((xx_off % size) < 2)
    stones = rng.uniform(-0.5, 0.5, (per + 2, per + 2)).astype(np.float32)
    joints = stones[row, (xx_off // size).astype(int) % per] - 1.8 * joint
    joints += 0.3 * rng.standard_normal((s, s)).astype(np.float32)
    return np.stack([np.clip(grain, -3, 3), np.clip(blades, -3, 3), joints], -1)


def facade_texture(rng: np.random.Generator, width_m: float, height_m: float,
                   ppm: float = 10.0) -> np.ndarray:
    """A building front with a random material: plaster, brick, concrete or a glass curtain."""
    th, tw = max(4, int(height_m * ppm)), max(4, int(width_m * ppm))
    kind = pick(rng, ["plaster", "plaster", "brick", "concrete", "glass"])
    if kind == "brick":
        tex = brick(rng, th, tw, ppm, jitter(rng, pick(rng, [(150, 75, 55), (170, 110, 80),
                                                             (120, 60, 50)]), 20))
    else:
        base = {"plaster": pick(rng, [(210, 200, 185), (190, 170, 140), (220, 215, 200),
                                      (170, 180, 190), (200, 160, 120), (150, 150, 150)]),
                "concrete": (150, 150, 145), "glass": (70, 90, 110)}[kind]
        base = jitter(rng, base, 25)
        tex = base * (1 + 0.08 * value_noise(rng, th, tw, max(2, width_m / 3))[..., None])
    glass = jitter(rng, pick(rng, [(40, 48, 60), (75, 95, 120), (30, 30, 35), (120, 140, 160)]),
                   15)
    floor_h = rng.uniform(2.8, 3.8)
    win_w, win_h = rng.uniform(0.8, 2.0), rng.uniform(1.1, 2.0)
    spacing = rng.uniform(win_w + 0.6, win_w + 2.5)
    frame = jitter(rng, (200, 200, 200), 50)
    for r in range(1, int(height_m / floor_h)):
        y_band = int(th - r * floor_h * ppm)
        if kind == "glass":
            tex[max(0, y_band - 2):y_band] = frame * 0.6
            continue
        tex[max(0, y_band - 2):y_band] *= 0.85
        y1 = int(y_band - 0.8 * ppm)
        y0 = max(0, int(y1 - win_h * ppm))
        for c in range(int((width_m - 1) / spacing)):
            x0 = int((0.8 + c * spacing) * ppm)
            x1 = x0 + int(win_w * ppm)
            tex[y0:y1, x0:x1] = frame
            tex[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = glass * rng.uniform(0.7, 1.3)
    if kind == "glass":
        tex += 25 * value_noise(rng, th, tw, 3)[..., None]  # reflections
    if rng.random() < 0.5:  # shop front
        tex[int(th - 2.8 * ppm):int(th - 0.3 * ppm), int(0.5 * ppm):int(tw - 0.5 * ppm)] = \
            glass * 1.2
    tex[: max(1, int(0.3 * ppm))] *= 0.8  # cornice
    tex += rng.normal(0, 5, tex.shape)
    return np.clip(tex, 0, 255).astype(np.uint8)


def brick(rng: np.random.Generator, th: int, tw: int, ppm: float, color: Color) -> np.ndarray:
    """Running-bond brickwork (float32 RGB) with mortar joints and per-brick shade."""
    bh, bw = max(1.0, 0.075 * ppm), max(2.0, 0.22 * ppm)
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32)
    row = (yy // bh).astype(int)
    xo = xx + (row % 2) * bw / 2
    col = (xo // bw).astype(int)
    shade = rng.uniform(0.8, 1.15, (row.max() + 2, col.max() + 2)).astype(np.float32)
    tex = color * shade[row, col][..., None]
    if ppm >= 20:
        mortar = ((yy % bh) < 1) | ((xo % bw) < 1)
        tex[mortar] = (200, 195, 185)
    return tex


def wall_texture(rng: np.random.Generator, width_m: float, height_m: float,
                 ppm: float = 24.0) -> np.ndarray:
    """A free-standing wall: brick, concrete with stains, or rendered stone."""
    th, tw = max(4, int(height_m * ppm)), max(4, int(width_m * ppm))
    if rng.random() < 0.45:
        tex = brick(rng, th, tw, ppm, jitter(rng, pick(rng, [(150, 75, 55), (175, 120, 90),
                                                             (130, 110, 95)]), 20))
    else:
        base = jitter(rng, pick(rng, [(160, 158, 150), (190, 185, 170), (130, 128, 125),
                                      (175, 160, 135)]), 20)
        tex = base * (1 + 0.12 * value_noise(rng, th, tw, max(2, width_m), 4)[..., None])
        if rng.random() < 0.5:  # panel joints
            tex[:, (np.arange(tw) % int(rng.uniform(1.5, 3) * ppm)) < 2] *= 0.7
    tex[: max(1, int(0.08 * ppm))] *= 1.15  # coping
    tex += rng.normal(0, 6, tex.shape)
    return np.clip(tex, 0, 255).astype(np.uint8)


def fence_texture(rng: np.random.Generator, width_m: float, height_m: float,
                  ppm: float = 30.0) -> np.ndarray:
    """RGBA fence: chain link, railings or planks; alpha 0 where the background shows through."""
    th, tw = max(4, int(height_m * ppm)), max(4, int(width_m * ppm))
    kind = pick(rng, ["mesh", "rails", "planks"])
    color = jitter(rng, pick(rng, [(120, 125, 120), (60, 65, 60), (40, 60, 45), (140, 110, 80),
                                   (190, 190, 185)]), 20)
    yy, xx = np.mgrid[0:th, 0:tw]
    if kind == "planks":
        alpha = ((xx % int(0.15 * ppm)) < int(0.12 * ppm)).astype(np.uint8)
        color = jitter(rng, (135, 105, 75), 30)
    elif kind == "rails":
        gap = int(rng.uniform(0.1, 0.2) * ppm)
        alpha = ((xx % gap) < 2) | (yy < 3) | (np.abs(yy - th + int(0.15 * ppm)) < 2)
    else:
        cell = int(0.06 * ppm) + 2
        alpha = (((xx + yy) % cell) < 1) | (((xx - yy) % cell) < 1) | (yy < 2)
    alpha = alpha.astype(bool)
    alpha |= (xx % int(2.5 * ppm)) < 3  # posts
    tex = np.empty((th, tw, 4), np.uint8)
    tex[..., :3] = np.clip(color * (1 + 0.1 * rng.standard_normal((th, tw, 1))), 0, 255)
    tex[..., 3] = alpha * 255
    return tex


def foliage_texture(rng: np.random.Generator, green: Color, size: int = 96,
                    bush: bool = False) -> np.ndarray:
    """RGBA crown: clumps of leaves with light from above, ragged outline and gaps."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size * 2 - 1
    leaves = value_noise(rng, size, size, 10, octaves=3)
    shape = value_noise(rng, size, size, 3, octaves=2)
    r = np.sqrt(xx ** 2 + (yy * (1.2 if bush else 1.0)) ** 2)
    alpha = (r + 0.25 * shape - 0.1 * leaves) < 0.82
    alpha &= leaves > -0.75  # a few holes where the sky shows through
    if bush:
        alpha &= yy < 0.95
    light = 1.0 - 0.35 * yy + 0.35 * leaves  # lit top, dark clumps
    hue = green * (1 + 0.1 * value_noise(rng, size, size, 2, 1)[..., None])
    rgb = hue * light[..., None] * (1 + 0.18 * rng.standard_normal((size, size, 1)))
    out = np.empty((size, size, 4), np.uint8)
    out[..., :3] = np.clip(rgb, 0, 255)
    out[..., 3] = alpha * 255
    return out


def sky_panorama(rng: np.random.Generator, style: Style, width: int = 1024,
                 height: int = 256) -> np.ndarray:
    """Clouds over 360 degrees of azimuth (cols) and 0..90 degrees of elevation (rows, top=90)."""
    t = (np.arange(height, dtype=np.float32) / (height - 1)) ** 2.5
    grad = style.sky_top[None, :] * (1 - t[:, None]) + style.sky_horizon[None, :] * t[:, None]
    pano = np.repeat(grad[:, None, :], width, axis=1)
    clouds = value_noise(rng, height, width, 10, octaves=5)
    clouds = np.concatenate([clouds, clouds[:, :1]], 1)[:, :width]  # seam is hidden by blending
    cover = np.clip((clouds - (0.55 - style.cloud_cover)) * 2.5, 0, 1)[..., None]
    shade = 1 - 0.25 * np.clip(clouds[..., None] - 0.3, 0, 1)
    pano = pano * (1 - cover * 0.9) + style.cloud * shade * cover * 0.9
    return pano.astype(np.float32)
