"""Camera model, camera rigs (car, robot, person, mast) and ego motion along a path.

The ego follows a polyline of the layout (a lane, a turn through an intersection, a campus path)
with a speed profile that may stop, start again or reverse; its yaw follows the path's heading
(so the camera turns with curves) plus a small wobble and the rig's mounting offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .layout import Polyline

NEAR = 0.15   # near clipping plane (m)
UP = np.array([0.0, 1.0, 0.0])


@dataclass
class Camera:
    """Pinhole camera: world X right, Y up, Z forward; yaw turns right, pitch looks down."""

    pos: np.ndarray
    yaw: float
    pitch: float
    roll: float
    f: float
    width: int
    height: int
    rot: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        yaw_m = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        pitch_m = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        roll_m = np.array([[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]])
        self.rot = roll_m @ pitch_m @ yaw_m

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
class Rig:
    """Where the camera sits: height (m), pitch down (rad), horizontal field of view (rad)."""

    kind: str
    height: float
    pitch: float
    hfov: float
    yaw_offset: float
    speed: float       # cruise speed (m/s)
    shake: float       # bob and roll amplitude


def sample_rig(rng: np.random.Generator, kind: str) -> Rig:
    """A camera mount: cars drive low and level, masts look steeply down, robots sit low."""
    deg = math.radians
    if kind == "car":
        return Rig(kind, rng.uniform(1.1, 1.9), deg(rng.uniform(0, 8)), deg(rng.uniform(50, 95)),
                   0.0, rng.uniform(4, 12), 0.3)
    if kind == "robot":
        return Rig(kind, rng.uniform(0.3, 1.0), deg(rng.uniform(0, 20)),
                   deg(rng.uniform(60, 120)), deg(rng.normal(0, 5)), rng.uniform(0.6, 2.0), 1.0)
    if kind == "person":
        return Rig(kind, rng.uniform(1.3, 1.8), deg(rng.uniform(0, 25)),
                   deg(rng.uniform(55, 100)), deg(rng.normal(0, 8)), rng.uniform(0.9, 1.6), 1.5)
    # mast: a fixed or slow camera on a pole or a building, often with no sky in view
    return Rig("mast", rng.uniform(2.5, 5.0), deg(rng.uniform(12, 45)), deg(rng.uniform(50, 110)),
               deg(rng.uniform(-35, 35)), rng.uniform(0.0, 1.0), 0.1)


@dataclass
class EgoMotion:
    """Arc length along ``path`` as a function of time (speed knots; may stop and reverse)."""

    path: Polyline
    rig: Rig
    lateral: float
    times: np.ndarray
    arc: np.ndarray
    wobble: np.ndarray  # (4,) yaw amp, yaw freq, phase, bob freq

    def at(self, t: float, f: float, width: int, height: int) -> Camera:
        """The camera at time t (seconds)."""
        s = float(np.interp(t, self.times, self.arc))
        x, z, heading = self.path.at(s)
        nx, nz = math.cos(heading), -math.sin(heading)  # right of the heading
        amp, freq, phase, bob_f = self.wobble
        w = 2 * math.pi
        yaw = heading + self.rig.yaw_offset + amp * math.sin(w * freq * t + phase)
        bob = 0.012 * self.rig.shake * math.sin(w * bob_f * t + phase)
        roll = 0.01 * self.rig.shake * math.sin(w * 0.5 * bob_f * t + 2 * phase)
        pos = np.array([x + nx * self.lateral, self.rig.height + bob, z + nz * self.lateral])
        return Camera(pos, yaw, self.rig.pitch + 0.5 * bob, roll, f, width, height)

    def speed(self, t: float, dt: float = 0.05) -> float:
        """Signed speed (m/s) at time t: drives the motion blur."""
        return float(np.interp(t + dt, self.times, self.arc)
                     - np.interp(t, self.times, self.arc)) / dt


def sample_motion(rng: np.random.Generator, path: Polyline, rig: Rig, lateral: float,
                  duration: float, start: float) -> EgoMotion:
    """A speed profile: cruise, a stop (slow down, wait, go), a reverse, or standing still."""
    mode = rng.choice(["cruise", "cruise", "stop", "reverse", "start"]) if rig.speed > 0.3 \
        else "still"
    n = max(4, int(duration / 0.5) + 2)
    knots_t = np.linspace(0, duration + 0.5, n)
    v = rig.speed * rng.uniform(0.8, 1.2, n)
    u = knots_t / max(duration, 1e-6)
    a, b = sorted(rng.uniform(0.1, 0.9, 2))
    if mode == "stop":
        v *= np.clip(np.abs(u - (a + b) / 2) / max((b - a) / 2, 0.05) - 0.3, 0, 1)
    elif mode == "reverse":
        v *= np.where((u > a) & (u < b), -0.4, 1.0)
    elif mode == "start":
        v *= np.clip((u - a) * 3, 0, 1)
    elif mode == "still":
        v[:] = rig.speed * rng.uniform(0.0, 1.0)
    times = np.arange(0, duration + 0.5, 0.01)
    vel = np.interp(times, knots_t, v)
    arc = start + np.concatenate([[0.0], np.cumsum((vel[1:] + vel[:-1]) / 2 * 0.01)])
    wobble = np.array([rng.uniform(0.002, 0.02) * (1 + rig.shake), rng.uniform(0.05, 0.3),
                       rng.uniform(0, 2 * math.pi), rng.uniform(1.2, 2.2)])
    return EgoMotion(path, rig, lateral, times, arc, wobble)
