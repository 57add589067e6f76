"""Scene objects, one class per kind, each knowing where it is, how it draws and its shadow.

Boxes (buildings, vehicle bodies) are oriented in the ground plane and draw only the faces that
face the camera (they never overlap on screen); thin things (poles, wheels, bicycle frames) are
strokes; trees are camera-facing RGBA foliage billboards; people are jointed billboards. Every
object gets its own random material (colour, texture) when it is created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import UP, Camera
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
    TRAFFIC_LIGHT,
    TRAFFIC_SIGN,
    TRAIN,
    TRUCK,
    VEGETATION,
    WALL,
)
from .layout import Placement, Polyline, rect
from .materials import (
    Style,
    facade_texture,
    fence_texture,
    foliage_texture,
    jitter,
    pick,
    wall_texture,
)
from .render import Canvas

FPS = 10.0


def box_corners(foot: np.ndarray, y0: float, y1: float) -> np.ndarray:
    """(8, 3) corners of a prism over footprint (4, 2) between heights y0 and y1."""
    lo = np.column_stack([foot[:, 0], np.full(4, y0), foot[:, 1]])
    hi = np.column_stack([foot[:, 0], np.full(4, y1), foot[:, 1]])
    return np.concatenate([lo, hi])


_SIDE = np.array([[0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]])


def visible_faces(cam: Camera, foot: np.ndarray, y0: float, y1: float
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Faces (quad, outward normal) of a footprint prism that face the camera."""
    c = box_corners(foot, y0, y1)
    cx, cy, cz = (float(v) for v in cam.pos)
    mx, mz = float(foot[:, 0].mean()), float(foot[:, 1].mean())
    out = []
    for i in range(4):
        j = (i + 1) % 4
        ax, az = float(foot[i, 0]), float(foot[i, 1])
        nx, nz = (ax + float(foot[j, 0])) / 2 - mx, (az + float(foot[j, 1])) / 2 - mz
        if nx * (cx - ax) + nz * (cz - az) > 0:
            norm = math.hypot(nx, nz) or 1.0
            out.append((c[_SIDE[i]], np.array([nx / norm, 0.0, nz / norm])))
    if cy > y1:
        out.append((c[4:], UP))
    if cy < y0:
        out.append((c[:4], -UP))
    return out


def prism_faces(cam: Camera, style: Style, foot: np.ndarray, y0: float, y1: float,
                color: np.ndarray, top: np.ndarray | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Visible faces and their lit colours, to fill several prisms in one batch."""
    faces = visible_faces(cam, foot, y0, y1)
    return ([f for f, _ in faces],
            [(top if (top is not None and n[1] > 0.5) else color) * style.shade(n)
             for _, n in faces])


def draw_prism(canvas: Canvas, style: Style, foot: np.ndarray, y0: float, y1: float,
               color: np.ndarray, label: int, dist: float, top: np.ndarray | None = None) -> None:
    """Flat-shaded prism (Lambert light from the sun)."""
    faces, colors = prism_faces(canvas.cam, style, foot, y0, y1, color, top)
    if faces:
        canvas.fill(faces, canvas.fogged(np.array(colors), dist), label)


def footprint_distance(cam: Camera, foot: np.ndarray) -> float:
    """Distance from the camera to the nearest point of a footprint (painter's sort key)."""
    p = cam.pos[[0, 2]]
    best = math.inf
    for i in range(len(foot)):
        a, b = foot[i], foot[(i + 1) % len(foot)]
        ab = b - a
        u = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0, 1)
        best = min(best, float(np.hypot(*(a + u * ab - p))))
    return best


def prism_shadow(foot: np.ndarray, height: float, sun: np.ndarray) -> np.ndarray:
    """Ground polygon (N, 2) of a prism's shadow: footprint plus its top cast along the sun."""
    cast = -sun[[0, 2]] / max(sun[1], 0.1) * height
    pts = np.concatenate([foot, foot + cast])
    centre = pts.mean(0)
    ang = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    pts = pts[np.argsort(ang)]
    # convex hull by gift wrapping is overkill: a sorted star polygon of a convex cast is fine
    return pts


class Object:
    """Base: static objects have a fixed place; ``pose`` returns (x, z, heading) at time t."""

    dynamic = False
    radius = 1.0

    def pose(self, t: float) -> tuple[float, float, float]:
        return self.x, self.z, self.heading  # type: ignore[attr-defined]

    def sort_key(self, cam: Camera, t: float) -> float:
        x, z, _ = self.pose(t)
        return cam.distance(x, z)

    def shadow(self, sun: np.ndarray, t: float) -> list[np.ndarray]:
        return []

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        raise NotImplementedError


@dataclass
class Building(Object):
    """A box with textured walls (one facade texture per building) and a flat roof."""

    foot: np.ndarray
    height: float
    texture: np.ndarray
    roof: np.ndarray

    @property
    def x(self) -> float:
        return float(self.foot[:, 0].mean())

    @property
    def z(self) -> float:
        return float(self.foot[:, 1].mean())

    heading = 0.0
    radius = 30.0

    def sort_key(self, cam: Camera, t: float) -> float:
        return footprint_distance(cam, self.foot)

    def shadow(self, sun: np.ndarray, t: float) -> list[np.ndarray]:
        return [prism_shadow(self.foot, self.height, sun)]

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        dist = footprint_distance(canvas.cam, self.foot)
        for quad, n in visible_faces(canvas.cam, self.foot, 0.0, self.height):
            if n[1] > 0.5:
                canvas.fill([quad], canvas.fogged(self.roof * style.shade(n), dist), BUILDING)
                continue
            top_left = quad[3]
            canvas.textured_quad(top_left, quad[2] - quad[3], quad[0] - quad[3], self.texture,
                                 BUILDING, style.shade(n), dist)


@dataclass
class Panel(Object):
    """A wall, fence or hedge segment: a vertical textured slab along ``heading``."""

    x: float
    z: float
    heading: float
    length: float
    height: float
    texture: np.ndarray
    label: int
    thickness: float

    def foot(self) -> np.ndarray:
        return rect(self.x, self.z, self.heading, self.thickness, self.length)

    def sort_key(self, cam: Camera, t: float) -> float:
        return footprint_distance(cam, self.foot())

    def shadow(self, sun: np.ndarray, t: float) -> list[np.ndarray]:
        return [prism_shadow(self.foot(), self.height, sun)] if self.label != FENCE else []

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        dist = self.sort_key(canvas.cam, t)
        foot = self.foot()
        if self.label == FENCE:
            a = np.array([foot[1][0], self.height, foot[1][1]])
            b = np.array([foot[2][0], self.height, foot[2][1]])
            n = np.cross(b - a, UP)
            canvas.textured_quad(a, b - a, -UP * self.height, self.texture, FENCE,
                                 style.shade(n / max(np.linalg.norm(n), 1e-9)), dist,
                                 label_all=True)
            return
        for quad, n in visible_faces(canvas.cam, foot, 0.0, self.height):
            if n[1] > 0.5:
                color = self.texture[:2, :, :3].reshape(-1, 3).mean(0)
                canvas.fill([quad], canvas.fogged(color * style.shade(n), dist), self.label)
                continue
            canvas.textured_quad(quad[3], quad[2] - quad[3], quad[0] - quad[3],
                                 self.texture[..., :3], self.label, style.shade(n), dist)


@dataclass
class Tree(Object):
    """A trunk and a camera-facing foliage billboard with holes (bushes have no trunk)."""

    x: float
    z: float
    trunk: float
    trunk_width: float
    crown: float
    foliage: np.ndarray
    bark: np.ndarray
    heading = 0.0

    def shadow(self, sun: np.ndarray, t: float) -> list[np.ndarray]:
        cy = self.trunk + self.crown
        c = np.array([self.x, self.z]) - sun[[0, 2]] / max(sun[1], 0.1) * cy
        a = np.linspace(0, 2 * math.pi, 12, endpoint=False)
        stretch = 1 / max(sun[1], 0.3)
        d = -sun[[0, 2]] / max(np.hypot(*sun[[0, 2]]), 1e-6)
        r = np.stack([np.cos(a), np.sin(a)], 1) * self.crown * 0.85
        along = (r @ d)[:, None] * d * (stretch - 1)
        out = [c + r + along]
        if self.trunk > 0:
            tip = np.array([self.x, self.z]) - sun[[0, 2]] / max(sun[1], 0.1) * self.trunk
            nrm = np.array([-d[1], d[0]]) * self.trunk_width / 2
            base = np.array([self.x, self.z])
            out.append(np.array([base - nrm, base + nrm, tip + nrm, tip - nrm]))
        return out

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        cam = canvas.cam
        dist = cam.distance(self.x, self.z)
        base = np.array([self.x, 0.0, self.z])
        if self.trunk > 0:
            canvas.stroke(np.array([base, base + UP * (self.trunk + 0.5 * self.crown)]),
                          self.trunk_width, canvas.fogged(self.bark, dist), VEGETATION)
        size = 2.2 * self.crown
        centre = base + UP * (self.trunk + self.crown * 0.9)
        origin = centre - cam.right * size / 2 + UP * size / 2
        canvas.textured_quad(origin, cam.right * size, -UP * size, self.foliage, VEGETATION,
                             style.shade(UP * 0.7 + np.array([0, 0, 0.0])), dist)


@dataclass
class Pole(Object):
    """A plain pole, street light, sign post or traffic light (facing ``heading``)."""

    x: float
    z: float
    heading: float
    kind: str
    height: float
    width: float
    color: np.ndarray
    sign_color: np.ndarray
    sign_shape: int
    radius = 2.0

    def shadow(self, sun: np.ndarray, t: float) -> list[np.ndarray]:
        base = np.array([self.x, self.z])
        tip = base - sun[[0, 2]] / max(sun[1], 0.1) * self.height
        d = tip - base
        nrm = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6) * self.width / 2
        return [np.array([base - nrm, base + nrm, tip + nrm, tip - nrm])]

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        cam = canvas.cam
        dist = cam.distance(self.x, self.z)
        base = np.array([self.x, 0.0, self.z])
        top = base + UP * self.height
        color = canvas.fogged(self.color * style.shade(-cam.rot[2]), dist)
        canvas.stroke(np.array([base, top]), self.width, color, POLE)
        fwd = np.array([math.sin(self.heading), 0.0, math.cos(self.heading)])
        side = np.array([math.cos(self.heading), 0.0, -math.sin(self.heading)])
        if self.kind == "light":
            tip = top + side * -1.6 + UP * 0.1
            canvas.stroke(np.array([top, tip]), self.width * 0.6, color, POLE)
            canvas.fill([np.array([tip - side * 0.3 - fwd * 0.15, tip + side * 0.3 - fwd * 0.15,
                                   tip + side * 0.3 + fwd * 0.15, tip - side * 0.3 + fwd * 0.15])
                         - UP * 0.1], color, POLE)
        elif self.kind == "sign":
            n = self.sign_shape
            a = np.linspace(0, 2 * math.pi, n, endpoint=False) + (math.pi / 2 if n == 3 else
                                                                   math.pi / 4)
            r = 0.45 if n == 4 else 0.38
            centre = top - UP * 0.45 - fwd * 0.06
            ring = centre + r * np.cos(a)[:, None] * side + r * np.sin(a)[:, None] * UP
            face = np.dot(-fwd, cam.pos - centre) > 0
            col = self.sign_color if face else np.full(3, 150.0)
            canvas.fill([ring], canvas.fogged(col * style.shade(-fwd), dist), TRAFFIC_SIGN)
            if face:
                canvas.fill([centre - fwd * 0.01 + 0.7 * (ring - centre)],
                            canvas.fogged(np.full(3, 225.0), dist), TRAFFIC_SIGN)
        elif self.kind == "traffic_light":
            arm = top + side * -2.5
            canvas.stroke(np.array([top - UP * 0.2, arm - UP * 0.2]), self.width * 0.6, color,
                          POLE)
            c = np.array([arm[0], arm[2]])
            foot = rect(c[0], c[1], self.heading, 0.35, 0.3)
            draw_prism(canvas, style, foot, self.height - 1.2, self.height - 0.2,
                       np.full(3, 30.0), TRAFFIC_LIGHT, dist)
            if np.dot(-fwd, cam.pos - arm) > 0:
                lit = int(t * FPS // 40 + self.sign_shape) % 3
                a = np.linspace(0, 2 * math.pi, 8, endpoint=False)
                for i, on in enumerate(((230, 40, 30), (240, 190, 40), (60, 220, 90))):
                    ctr = arm + UP * (-0.45 - 0.27 * i) - fwd * 0.16
                    disc = ctr + 0.09 * np.cos(a)[:, None] * side + 0.09 * np.sin(a)[:, None] * UP
                    col = np.asarray(on if i == lit else (50, 50, 50), np.float32)
                    canvas.fill([disc], canvas.fogged(col, dist), TRAFFIC_LIGHT)


@dataclass
class Mover(Object):
    """Something that follows a path at constant speed (parked things have speed 0)."""

    path: Polyline
    start: float
    speed: float
    flip: bool

    dynamic = True

    def pose(self, t: float) -> tuple[float, float, float]:
        x, z, h = self.path.at(self.start + self.speed * t)
        return x, z, h + (math.pi if self.flip else 0.0)


def static_path(x: float, z: float, heading: float) -> Polyline:
    """A one-segment path for parked vehicles and standing people."""
    d = np.array([math.sin(heading), math.cos(heading)])
    return Polyline(np.array([[x, z] - d, [x, z] + d]))


@dataclass
class Vehicle(Mover):
    """Car, truck, bus, tram (train), or a two-wheeler with an optional rider."""

    kind: str = "car"
    length: float = 4.5
    width: float = 1.8
    height: float = 1.5
    color: np.ndarray = None  # type: ignore[assignment]
    glass: np.ndarray = None  # type: ignore[assignment]
    rider: tuple | None = None  # (shirt, pants, skin)

    @property
    def radius(self) -> float:  # type: ignore[override]
        return self.length

    def shadow(self, sun: np.ndarray, t: float) -> list[np.ndarray]:
        x, z, h = self.pose(t)
        if self.kind in ("bicycle", "motorcycle"):
            return [prism_shadow(rect(x, z, h, 0.5, self.length), 0.8 + (0.8 if self.rider
                                                                           else 0.0), sun)]
        return [prism_shadow(rect(x, z, h, self.width, self.length), self.height * 0.8, sun)]

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        x, z, h = self.pose(t)
        dist = canvas.cam.distance(x, z)
        if self.kind in ("bicycle", "motorcycle"):
            self._two_wheeler(canvas, style, t, x, z, h, dist)
            return
        label = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}[self.kind]
        fwd = np.array([math.sin(h), math.cos(h)])
        if canvas.cam.f * self.height / max(dist, 1e-3) < 8:  # a few pixels: one box
            draw_prism(canvas, style, rect(x, z, h, self.width, self.length), 0.2,
                       self.height * 0.9, self.color * 0.7, label, dist)
            return
        cam = canvas.cam
        faces: list[np.ndarray] = []
        colors: list[np.ndarray] = []

        def part(foot: np.ndarray, y0: float, y1: float, color: np.ndarray,
                 top: np.ndarray | None = None) -> None:
            f, c = prism_faces(cam, style, foot, y0, y1, color, top)
            faces.extend(f)
            colors.extend(c)

        if cam.f * 0.65 / max(dist, 1e-3) > 6:  # wheels only where they span a few pixels
            for s in (-0.5, 0.5) if self.kind != "train" else (-0.42, -0.3, 0.3, 0.42):
                for side in (-1, 1):
                    c = np.array([x, z]) + fwd * s * self.length * 0.72
                    c = c + np.array([fwd[1], -fwd[0]]) * side * (self.width / 2 - 0.2)
                    part(rect(c[0], c[1], h, 0.25, 0.7), 0.0, 0.65, np.full(3, 22.0))
        foot = rect(x, z, h, self.width, self.length)
        hgt = self.height
        if self.kind == "car":
            part(foot, 0.3, hgt * 0.62, self.color)
            c = np.array([x, z]) - fwd * self.length * 0.05
            part(rect(c[0], c[1], h, self.width - 0.15, self.length * 0.5), hgt * 0.62, hgt,
                 self.glass, self.color)
        elif self.kind == "truck":
            c = np.array([x, z]) + fwd * self.length * 0.38
            cab = rect(c[0], c[1], h, self.width, self.length * 0.24)
            part(cab, 0.45, hgt * 0.55, self.color)
            part(cab, hgt * 0.55, hgt * 0.8, self.glass, self.color)
            c = np.array([x, z]) - fwd * self.length * 0.12
            part(rect(c[0], c[1], h, self.width, self.length * 0.74), 0.55, hgt,
                 self.cargo_color())
        else:  # bus or tram: body, window band, roof
            part(foot, 0.35, hgt * 0.45, self.color)
            part(foot, hgt * 0.45, hgt * 0.85, self.glass, self.color)
            part(foot, hgt * 0.85, hgt, self.color)
        if faces:
            canvas.fill(faces, canvas.fogged(np.array(colors), dist), label)
        if self.kind == "train":
            top = np.array([x, hgt, z])
            canvas.stroke(np.array([top, top + UP * 0.9 + np.array([fwd[0], 0, fwd[1]])]),
                          0.06, canvas.fogged(np.full(3, 40.0), dist), TRAIN)

    def cargo_color(self) -> np.ndarray:
        return np.clip(self.color * 0.3 + 170, 0, 255)

    def _two_wheeler(self, canvas: Canvas, style: Style, t: float, x: float, z: float,
                     h: float, dist: float) -> None:
        label = BICYCLE if self.kind == "bicycle" else MOTORCYCLE
        fwd = np.array([math.sin(h), 0.0, math.cos(h)])
        base = np.array([x, 0.0, z])
        if canvas.cam.f * 1.2 / max(dist, 1e-3) < 6:  # a few pixels: rider over a bar
            canvas.stroke(np.array([base - fwd * 0.8 + UP * 0.4, base + fwd * 0.8 + UP * 0.4]),
                          0.6, canvas.fogged(self.color * 0.5, dist), label)
            if self.rider is not None:
                canvas.stroke(np.array([base + UP * 0.9, base + UP * 1.7]), 0.4,
                              canvas.fogged(self.rider[0], dist), RIDER)
            return
        r = 0.34 if label == BICYCLE else 0.32
        half = self.length / 2 - r
        a = np.linspace(0, 2 * math.pi, 14, endpoint=False)
        dark = canvas.fogged(np.full(3, 25.0), dist)
        col = canvas.fogged(self.color * style.shade(UP), dist)
        wheels = [base + fwd * s * half + UP * r for s in (-1, 1)]
        for w in wheels:
            ring = w + r * np.cos(a)[:, None] * fwd + r * np.sin(a)[:, None] * UP
            canvas.stroke(ring, 0.05 if label == BICYCLE else 0.1, dark, label, closed=True)
        seat = base + UP * (0.9 if label == BICYCLE else 0.8) - fwd * 0.15
        bar = base + UP * 1.0 + fwd * (half - 0.1)
        if label == BICYCLE:
            crank = base + UP * r
            canvas.stroke(np.array([wheels[0], crank, seat, wheels[0]]), 0.04, col, label)
            canvas.stroke(np.array([crank, bar - UP * 0.1, seat]), 0.04, col, label)
            canvas.stroke(np.array([bar - UP * 0.1, wheels[1]]), 0.04, col, label)
            canvas.stroke(np.array([bar - fwd * 0.05 - UP * 0.05, bar]), 0.05, dark, label)
        else:
            body = np.array([wheels[0] + UP * 0.15, seat, bar, wheels[1] + UP * 0.1,
                             base + UP * 0.35])
            canvas.fill([body - canvas.cam.right * 0.0], col, label)
            canvas.stroke(np.array([wheels[0] + UP * 0.1, base + UP * 0.45, wheels[1]]), 0.25,
                          col, label)
        if self.rider is not None:
            shirt, pants, skin = self.rider
            hip = seat + UP * 0.05
            shoulder = hip + UP * 0.55 + fwd * 0.2
            phase = (self.start + self.speed * t) / 0.5
            for s in (-1, 1):
                knee = hip + fwd * 0.3 + UP * (-0.2 + 0.1 * s * math.sin(phase))
                foot = base + UP * (0.25 + 0.12 * s * math.sin(phase)) + fwd * 0.05
                canvas.stroke(np.array([hip, knee, foot]), 0.13, canvas.fogged(pants, dist),
                              RIDER)
            canvas.stroke(np.array([hip, shoulder]), 0.32, canvas.fogged(shirt, dist), RIDER)
            canvas.stroke(np.array([shoulder, bar]), 0.09, canvas.fogged(shirt, dist), RIDER)
            head = shoulder + UP * 0.2 + fwd * 0.05
            helmet = label == MOTORCYCLE
            canvas.stroke(np.array([head - UP * 0.05, head + UP * 0.08]), 0.22 if helmet
                          else 0.17, canvas.fogged(np.full(3, 40.0) if helmet else skin, dist),
                          RIDER)


@dataclass
class Person(Mover):
    """A walking (or standing) person: legs and arms swing with the distance walked."""

    height: float = 1.75
    shirt: np.ndarray = None  # type: ignore[assignment]
    pants: np.ndarray = None  # type: ignore[assignment]
    skin: np.ndarray = None  # type: ignore[assignment]
    phase: float = 0.0

    def shadow(self, sun: np.ndarray, t: float) -> list[np.ndarray]:
        x, z, h = self.pose(t)
        return [prism_shadow(rect(x, z, h, 0.45, 0.3), self.height, sun)]

    def draw(self, canvas: Canvas, style: Style, t: float) -> None:
        cam = canvas.cam
        x, z, h = self.pose(t)
        dist = cam.distance(x, z)
        hh = self.height
        base = np.array([x, 0.0, z])
        if cam.f * hh / max(dist, 1e-3) < 10:  # a few pixels tall: one stroke
            canvas.stroke(np.array([base, base + UP * hh * 0.95]), 0.3 * hh,
                          canvas.fogged(self.shirt * 0.6 + self.pants * 0.4, dist), PERSON)
            return
        stride = self.phase + abs(self.speed) * t / (0.4 * hh) * math.pi
        swing = 0.18 * hh * math.sin(stride) * (self.speed != 0)
        fwd = np.array([math.sin(h), 0.0, math.cos(h)])
        lateral = abs(float(np.dot(fwd, cam.right)))
        hip = base + UP * 0.5 * hh
        shoulder = base + UP * 0.8 * hh
        pants, shirt = canvas.fogged(self.pants, dist), canvas.fogged(self.shirt, dist)
        for s in (-1, 1):
            foot = base + cam.right * (s * 0.06 * hh * (1 - lateral)) + fwd * s * swing
            canvas.stroke(np.array([foot + UP * 0.02, hip + cam.right * s * 0.05 * hh]),
                          0.085 * hh, pants, PERSON)
        canvas.stroke(np.array([hip, shoulder + UP * 0.02 * hh]), 0.2 * hh, shirt, PERSON)
        for s in (-1, 1):
            sh = shoulder + cam.right * s * 0.1 * hh * (1 - 0.5 * lateral)
            hand = sh - UP * 0.32 * hh - fwd * s * swing * 0.5
            canvas.stroke(np.array([sh, hand]), 0.05 * hh, shirt, PERSON)
        canvas.stroke(np.array([base + UP * 0.86 * hh, base + UP * 0.96 * hh]), 0.11 * hh,
                      canvas.fogged(self.skin, dist), PERSON)


def make_object(rng: np.random.Generator, style: Style, p: Placement) -> Object:
    """Instantiate one layout placement with its own random material."""
    k = p.kind
    if k == "building":
        width, depth, height = p.size
        roof = jitter(rng, pick(rng, [(90, 90, 95), (150, 145, 140), (120, 70, 55)]), 20)
        return Building(rect(p.x, p.z, p.heading, width, depth), height,
                        facade_texture(rng, max(width, depth), height), roof)
    if k in ("tree", "bush"):
        bush = k == "bush"
        green = style.greens[int(rng.integers(len(style.greens)))] * rng.uniform(0.85, 1.15)
        return Tree(p.x, p.z, 0.0 if bush else rng.uniform(1.5, 4.0), rng.uniform(0.2, 0.45),
                    rng.uniform(0.5, 1.3) if bush else rng.uniform(1.5, 4.0),
                    foliage_texture(rng, green, bush=bush), jitter(rng, (85, 70, 55), 20))
    if k in ("light", "sign", "plain", "traffic_light"):
        height = {"light": rng.uniform(5, 9), "traffic_light": rng.uniform(4.5, 5.5),
                  "sign": rng.uniform(2.5, 3.5)}.get(k, rng.uniform(2.5, 4.5))
        return Pole(p.x, p.z, p.heading, k, height, rng.uniform(0.08, 0.22),
                    jitter(rng, pick(rng, [(120, 120, 115), (60, 65, 60), (150, 150, 150)]), 20),
                    jitter(rng, pick(rng, [(200, 30, 30), (30, 70, 170), (230, 190, 30),
                                           (40, 130, 60)]), 20),
                    int(rng.choice([3, 4, 16, 16])))
    if k in ("wall", "fence", "hedge"):
        length, height = p.size
        if k == "wall":
            return Panel(p.x, p.z, p.heading, length, height, wall_texture(rng, length, height),
                         WALL, rng.uniform(0.2, 0.5))
        if k == "fence":
            return Panel(p.x, p.z, p.heading, length, height, fence_texture(rng, length, height),
                         FENCE, 0.05)
        tex = foliage_texture(rng, style.greens[0] * rng.uniform(0.8, 1.1), size=64)
        tex[..., 3] = 255
        tex = np.tile(tex, (1, max(1, int(length / max(height, 0.5))), 1))
        return Panel(p.x, p.z, p.heading, length, height * 1.2, tex, VEGETATION, 0.9)
    parked = k.startswith("parked_")
    kind = k.removeprefix("parked_")
    path = static_path(p.x, p.z, p.heading) if parked or p.path is None else p.path
    speed = 0.0 if parked else p.speed
    start = 1.0 if parked else p.start
    if kind == "person":
        return Person(path, start, speed, False, rng.uniform(1.5, 1.95),
                      jitter(rng, rng.uniform(20, 230, 3), 0),
                      jitter(rng, rng.uniform(20, 120, 3), 0),
                      jitter(rng, pick(rng, [(225, 185, 160), (190, 140, 110), (120, 85, 60)]),
                             20), rng.uniform(0, 2 * math.pi))
    palette = [(235, 235, 235), (30, 30, 32), (160, 162, 165), (110, 110, 115), (150, 25, 25),
               (30, 50, 120), (40, 80, 50), (190, 170, 130), (200, 160, 30)]
    color = jitter(rng, pick(rng, palette), 15)
    glass = jitter(rng, (40, 48, 58), 12)
    dims = {"car": (rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.65)),
            "truck": (rng.uniform(5.5, 9), rng.uniform(2.0, 2.5), rng.uniform(2.4, 3.6)),
            "bus": (rng.uniform(10, 13), 2.55, rng.uniform(3.0, 3.3)),
            "train": (rng.uniform(20, 32), 2.5, rng.uniform(3.3, 3.6)),
            "motorcycle": (2.1, 0.7, 1.1), "bicycle": (1.75, 0.5, 1.0)}[kind]
    if kind in ("bus", "train"):
        color = jitter(rng, pick(rng, [(220, 200, 40), (200, 30, 30), (235, 235, 235),
                                       (30, 90, 160), (40, 130, 70)]), 20)
    rider = None
    if kind in ("bicycle", "motorcycle") and speed != 0:
        rider = (jitter(rng, rng.uniform(20, 230, 3), 0), jitter(rng, rng.uniform(20, 120, 3), 0),
                 jitter(rng, (200, 160, 130), 40))
    return Vehicle(path, start, speed, False, kind, *dims, color, glass, rider)
