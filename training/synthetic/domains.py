"""Domains: the default look, and a shifted one for measuring adaptation where labels exist.

``shifted`` renders the same kinds of places (layouts, objects, rigs, motion) with a look the
default generator never draws, so a model trained on the default data meets a known domain gap:

* time of day and weather: wet late dusk in fog. The sun sits 2-8 degrees above the horizon
  (long shadows, dark ambient 0.25-0.4), the sky runs from deep violet to a sodium-orange
  horizon, fog closes in at 60-160 m and tints everything towards the horizon colour.
* materials: autumn and rain. Grass and foliage turn orange, rust and brown; wet asphalt is dark
  and blue-tinted (values 35-70), pavers and concrete darker; road paint yellow.
* camera pipeline: a cheap night camera. Strong warm white balance (red x1.3-1.5, blue
  x0.55-0.7), flat tone curve (gamma 1.5-1.8, no S-curve), heavy vignette, 2-3x the noise and
  always JPEG at quality 25-50.

The shift draws its own random numbers (from ``(seed, 99)``), after the default draws, so the
scene of a seed (layout, objects, motion) is the same in both domains; only its look changes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .materials import Style, jitter, pick
from .pipeline import Pipeline

DOMAINS = ("default", "shifted")


def shift_rng(seed: int) -> np.random.Generator:
    """The shift's own random stream: the default draws of a seed stay as they are."""
    return np.random.default_rng([seed, 99])


def shift_style(style: Style, rng: np.random.Generator) -> Style:
    """Wet autumn dusk in fog (see the module docstring for every change)."""
    autumn = [(170, 95, 35), (150, 60, 30), (120, 80, 40), (185, 130, 45), (110, 45, 35)]
    grass = jitter(rng, pick(rng, [(120, 90, 45), (140, 105, 50), (105, 75, 40)]), 12)
    wet = rng.uniform(35, 70)
    asphalt = jitter(rng, (wet * 0.9, wet * 0.95, wet * 1.15), 4)
    horizon = jitter(rng, (235, 140, 70), 12)
    elevation = math.radians(rng.uniform(2, 8))
    azimuth = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                    math.cos(elevation) * math.cos(azimuth)])
    return replace(
        style,
        asphalt=asphalt, asphalt2=np.clip(asphalt * rng.uniform(0.85, 1.1), 0, 255),
        pavers=np.clip(style.pavers * 0.6, 0, 255), concrete=np.clip(style.concrete * 0.65, 0, 255),
        grass=grass, grass2=np.clip(grass * rng.uniform(0.8, 1.2), 0, 255),
        greens=[jitter(rng, pick(rng, autumn), 15) for _ in range(4)],
        paint=jitter(rng, (225, 190, 60), 10), curb=np.clip(style.curb * 0.6, 0, 255),
        sky_top=jitter(rng, (55, 40, 95), 10), sky_horizon=horizon,
        cloud=jitter(rng, (120, 100, 120), 10), cloud_cover=rng.uniform(0.5, 1.0),
        haze=horizon * 0.8, fog_distance=rng.uniform(60, 160),
        sun=sun, ambient=rng.uniform(0.25, 0.4),
    )


def shift_pipeline(pipe: Pipeline, rng: np.random.Generator) -> Pipeline:
    """A cheap night camera: warm cast, flat curve, vignette, noise, hard JPEG."""
    wb = np.array([rng.uniform(1.3, 1.5), 1.0, rng.uniform(0.55, 0.7)], np.float32)
    return replace(
        pipe, wb=wb, gamma=rng.uniform(1.5, 1.8), contrast=0.0,
        vignette=rng.uniform(0.45, 0.65), shot=max(pipe.shot, 0.3) * rng.uniform(2, 3),
        read=max(pipe.read, 1.0) * rng.uniform(2, 3), jpeg=int(rng.uniform(25, 50)))
