"""Scene layout: where roads, walks, lawns and every object go, as a top-down world map.

Four kinds of places: streets (straight, curved or S-shaped, some with tram tracks),
intersections (the ego goes straight or turns), campus (lawns, plazas, footpaths, big buildings)
and parking lots. The ground is a raster (rows = Z, cols = X, ``ppm`` texels per metre) of
classes and materials; objects are placed on it with an occupancy map so nothing overlaps the
roads, the ego's corridor or each other.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .classes import ROAD, SIDEWALK, TERRAIN
from .materials import ASPHALT, CONCRETE, CURB, DIRT, GRASS, GRAVEL, PAINT, PAVERS, RAIL

GROUND_PPM = 10.0
MARGIN = 75.0  # metres of world around the ego's path
SHIFT = 3


class Polyline:
    """A 2-D path in the ground plane (x, z) with arc-length lookup; extended straight at ends."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.asarray(points, np.float64)
        seg = np.diff(self.points, axis=0)
        self.lengths = np.hypot(seg[:, 0], seg[:, 1])
        self.cum = np.concatenate([[0.0], np.cumsum(self.lengths)])
        self.headings = np.arctan2(seg[:, 0], seg[:, 1])  # yaw: 0 = +Z, positive towards +X
        self._cum = self.cum.tolist()
        self._pts = self.points.tolist()
        self._len = self.lengths.tolist()
        self._head = self.headings.tolist()

    @property
    def length(self) -> float:
        return float(self.cum[-1])

    def at(self, s: float) -> tuple[float, float, float]:
        """(x, z, heading) at arc length s."""
        i = min(max(bisect.bisect_left(self._cum, s) - 1, 0), len(self._len) - 1)
        u = (s - self._cum[i]) / max(self._len[i], 1e-9)
        (ax, az), (bx, bz) = self._pts[i], self._pts[i + 1]
        return ax + u * (bx - ax), az + u * (bz - az), self._head[i]

    def offset(self, d: float) -> Polyline:
        """The parallel path ``d`` metres to the right."""
        h = np.concatenate([self.headings, self.headings[-1:]])
        h[1:-1] = np.arctan2(np.sin(self.headings[1:]) + np.sin(self.headings[:-1]),
                             np.cos(self.headings[1:]) + np.cos(self.headings[:-1]))
        normal = np.stack([np.cos(h), -np.sin(h)], 1)
        return Polyline(self.points + d * normal)


def curvy_path(rng: np.random.Generator, start: tuple[float, float], heading: float,
               length: float, max_curv: float, straight_p: float, step: float = 1.0) -> Polyline:
    """A path of random constant-curvature pieces (straight with probability ``straight_p``)."""
    pts = [np.array(start, np.float64)]
    s = 0.0
    while s < length:
        piece = rng.uniform(15, 60)
        k = 0.0 if rng.random() < straight_p else rng.uniform(-max_curv, max_curv)
        for _ in range(int(piece / step)):
            heading += k * step
            pts.append(pts[-1] + step * np.array([math.sin(heading), math.cos(heading)]))
        s += piece
    return Polyline(np.array(pts))


@dataclass
class Road:
    """A street: centreline, lanes per direction, parking, verge, sidewalk, tram tracks."""

    line: Polyline
    lanes: int
    lane_width: float
    parking: float
    verge: float
    sidewalk: float
    tram: bool = False

    @property
    def half(self) -> float:
        return self.lanes * self.lane_width + self.parking

    @property
    def outer(self) -> float:
        return self.half + self.verge + self.sidewalk

    def lane(self, lane: int, direction: int) -> Polyline:
        """Lane centre; direction +1 along the line (right-hand traffic), -1 reversed."""
        line = self.line.offset(direction * (lane + 0.5) * self.lane_width)
        return line if direction > 0 else Polyline(line.points[::-1])


@dataclass
class Placement:
    """An object to create: kind, ground position, heading, and kind-specific numbers."""

    kind: str
    x: float
    z: float
    heading: float = 0.0
    size: tuple[float, ...] = ()
    path: Polyline | None = None
    speed: float = 0.0
    start: float = 0.0


@dataclass
class Layout:
    """The top-down world: ground rasters, the ego's path and everything to place on it."""

    kind: str
    x0: float
    z0: float
    ppm: float
    classes: np.ndarray
    material: np.ndarray
    ego_path: Polyline
    ego_lateral: float
    ego_start: float
    roads: list[Road] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)
    occupied: np.ndarray | None = None

    def to_px(self, xz: np.ndarray) -> np.ndarray:
        """World (x, z) -> fixed-point raster coordinates for cv2 drawing."""
        xz = np.asarray(xz, np.float64)
        px = np.stack([(xz[..., 0] - self.x0) * self.ppm, (xz[..., 1] - self.z0) * self.ppm], -1)
        return np.round(px * (1 << SHIFT)).astype(np.int32)

    def band(self, line: Polyline, width: float, cls: int | None, mat: int | None) -> None:
        """Paint a band of ``width`` metres along ``line`` into the class/material rasters."""
        pts = [self.to_px(line.points)]
        th = max(1, int(round(width * self.ppm)))
        if cls is not None:
            cv2.polylines(self.classes, pts, False, cls, th, cv2.LINE_8, SHIFT)
        if mat is not None:
            cv2.polylines(self.material, pts, False, mat, th, cv2.LINE_8, SHIFT)

    def poly(self, corners: np.ndarray, cls: int | None, mat: int | None) -> None:
        """Paint a filled polygon (world x, z corners)."""
        pts = [self.to_px(corners)]
        if cls is not None:
            cv2.fillPoly(self.classes, pts, cls, cv2.LINE_8, SHIFT)
        if mat is not None:
            cv2.fillPoly(self.material, pts, mat, cv2.LINE_8, SHIFT)

    def free(self, corners: np.ndarray, allowed: tuple[int, ...] = (TERRAIN,)) -> bool:
        """Whether a footprint lies on allowed ground, inside the map and clear of others."""
        pts = self.to_px(corners) >> SHIFT
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0) + 1
        h, w = self.classes.shape
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            return False
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [pts - (x0, y0)], 1)
        sel = mask.astype(bool)
        if self.occupied[y0:y1, x0:x1][sel].any():
            return False
        return bool(np.isin(self.classes[y0:y1, x0:x1][sel], allowed).all())

    def occupy(self, corners: np.ndarray) -> None:
        cv2.fillPoly(self.occupied, [self.to_px(corners)], 1, cv2.LINE_8, SHIFT)

    def place_box(self, kind: str, x: float, z: float, heading: float, width: float,
                  depth: float, size: tuple[float, ...],
                  allowed: tuple[int, ...] = (TERRAIN,)) -> bool:
        """Place an oriented footprint (width across, depth along ``heading``) if it is free."""
        c = rect(x, z, heading, width, depth)
        if not self.free(c, allowed):
            return False
        self.occupy(c)
        self.placements.append(Placement(kind, x, z, heading, (width, depth, *size)))
        return True


def rect(x: float, z: float, heading: float, width: float, depth: float) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at (x, z), ``depth`` along ``heading``."""
    f = np.array([math.sin(heading), math.cos(heading)]) * depth / 2
    r = np.array([math.cos(heading), -math.sin(heading)]) * width / 2
    c = np.array([x, z])
    return np.array([c - f - r, c - f + r, c + f + r, c + f - r])


def sample_road(rng: np.random.Generator, line: Polyline, urban: bool) -> Road:
    """A street cross-section: 1-3 lanes each way, optional parking, verge and tram."""
    lanes = int(rng.choice([1, 1, 2, 2, 3]))
    return Road(line, lanes, rng.uniform(2.9, 3.7), float(rng.choice([0.0, 2.3], p=[0.4, 0.6])),
                float(rng.choice([0.0, rng.uniform(1.0, 4.0)], p=[0.55 if urban else 0.2,
                                                                    0.45 if urban else 0.8])),
                rng.uniform(1.8, 5.0), bool(rng.random() < 0.5))


def paint_road(layout: Layout, rng: np.random.Generator, road: Road, walk_mat: int) -> None:
    """Sidewalks, verges, curbs, asphalt and markings of one street."""
    line = road.line
    layout.band(line, 2 * road.outer, SIDEWALK, walk_mat)
    if road.verge:
        layout.band(line, 2 * (road.half + road.verge), TERRAIN, GRASS)
    layout.band(line, 2 * road.half + 0.4, None, CURB)
    layout.band(line, 2 * road.half, ROAD, ASPHALT)
    pts = line.points
    dash = (np.arange(len(pts) - 1) * np.mean(line.lengths) % 9.0) < 3.0
    for i in range(-road.lanes + 1, road.lanes):
        d = i * road.lane_width
        off = line.offset(d).points
        if i == 0 and rng.random() < 0.5:  # solid centre line
            layout.band(Polyline(off), 0.15, None, PAINT)
            continue
        for j in np.flatnonzero(dash):
            layout.band(Polyline(off[j:j + 2]), 0.13, None, PAINT)
    for side in (-1, 1):
        layout.band(line.offset(side * (road.lanes * road.lane_width - 0.2)), 0.13, None, PAINT)
    if road.tram:
        for d in (-0.7, 0.7, -2.3, 2.3):
            layout.band(line.offset(d * road.lane_width / 3.2), 0.12, None, RAIL)


def street_objects(layout: Layout, rng: np.random.Generator, road: Road, urban: bool,
                   s_range: tuple[float, float]) -> None:
    """Buildings, front walls/fences/hedges, trees and poles along both sides of a street."""
    line = road.line
    s0, s1 = s_range
    for side in (-1, 1):
        s = s0 + rng.uniform(0, 10)
        setback = 0.0 if urban and rng.random() < 0.7 else rng.uniform(2, 12)
        while s < s1:
            width, depth = rng.uniform(8, 30), rng.uniform(8, 20)
            x, z, h = line.at(s + width / 2)
            off = road.outer + setback + depth / 2
            nx, nz = math.cos(h) * side, -math.sin(h) * side
            height = rng.uniform(4, 30) if urban else rng.uniform(3, 10)
            layout.place_box("building", x + nx * off, z + nz * off, h, depth, width,
                             (height,))
            if setback > 1.0:  # front yards: lawn behind a wall, fence or hedge
                fx, fz = x + nx * (road.outer + 0.3), z + nz * (road.outer + 0.3)
                kind = rng.choice(["wall", "fence", "hedge", "none"], p=[0.35, 0.3, 0.2, 0.15])
                if kind != "none":
                    layout.placements.append(Placement(
                        str(kind), fx, fz, h, (width * 0.95, rng.uniform(0.6, 2.2))))
            s += width + (rng.uniform(2, 15) if rng.random() < 0.25 else 0.0)
        s = s0 + rng.uniform(0, 8)
        has_trees = rng.random() < 0.7
        while has_trees and s < s1:
            x, z, h = line.at(s)
            d = road.half + (road.verge / 2 if road.verge else rng.uniform(0.6, 1.0))
            nx, nz = math.cos(h) * side, -math.sin(h) * side
            layout.placements.append(Placement("bush" if rng.random() < 0.2 else "tree",
                                               x + nx * d, z + nz * d))
            s += rng.uniform(6, 18)
        s = s0 + rng.uniform(0, 10)
        while s < s1:
            x, z, h = line.at(s)
            d = road.half + 0.45
            nx, nz = math.cos(h) * side, -math.sin(h) * side
            kind = str(rng.choice(["light", "sign", "plain", "sign"]))
            layout.placements.append(Placement(kind, x + nx * d, z + nz * d,
                                               h + (0 if side > 0 else math.pi)))
            s += rng.uniform(8, 30)


def street_agents(layout: Layout, rng: np.random.Generator, road: Road, length: float,
                  density: float) -> None:
    """Parked and moving vehicles, trams, riders and pedestrians of one street."""
    kinds = ["car"] * 8 + ["truck"] * 2 + ["bus"] * 2 + ["motorcycle"] * 2 + ["bicycle"] * 2
    for direction in (-1, 1):
        if road.parking:
            park = road.line.offset(direction * (road.half - road.parking / 2))
            s = rng.uniform(-20, 5)
            while s < length:
                if rng.random() < 0.6:
                    x, z, h = park.at(s)
                    kind = str(rng.choice(["car"] * 8 + ["truck", "motorcycle", "bicycle"]))
                    layout.placements.append(Placement(
                        f"parked_{kind}", x, z, h + (0 if rng.random() < 0.8 else math.pi)))
                s += rng.uniform(5.5, 9)
        for lane in range(road.lanes):
            path = road.lane(lane, direction)
            if road.tram and lane == 0:
                if rng.random() < 0.9:
                    layout.placements.append(Placement(
                        "train", 0, 0, path=path, speed=rng.uniform(3, 10),
                        start=rng.uniform(0, 60)))
                continue
            speed = rng.uniform(3, 13)
            s = rng.uniform(-20, 20)
            while s < length + 60:
                if rng.random() < 0.5 * density:
                    kind = str(rng.choice(kinds))
                    lat = rng.uniform(0.7, 1.2) if kind == "bicycle" else 0.0
                    layout.placements.append(Placement(
                        kind, lat, 0, path=path.offset(lat) if lat else path,
                        speed=speed if kind != "bicycle" else rng.uniform(3, 6), start=s))
                s += rng.uniform(12, 40)
        walk = road.line.offset(direction * (road.half + road.verge + road.sidewalk / 2))
        for _ in range(int(rng.poisson(density * 0.12 * length))):
            lat = rng.uniform(-0.4, 0.4) * road.sidewalk
            path = walk.offset(lat)
            if rng.random() < 0.5:
                path = Polyline(path.points[::-1])
            layout.placements.append(Placement(
                "person", 0, 0, path=path, speed=rng.uniform(0.0, 1.7) * (rng.random() < 0.85),
                start=rng.uniform(0, path.length)))


def campus_objects(layout: Layout, rng: np.random.Generator, paths: list[Polyline],
                   density: float) -> None:
    """Big buildings, trees in lawns, lamps, walls and fences, bikes and people on the paths."""
    h, w = layout.classes.shape
    span = (w / layout.ppm, h / layout.ppm)
    for _ in range(150):
        x = layout.x0 + rng.uniform(0, span[0])
        z = layout.z0 + rng.uniform(0, span[1])
        layout.place_box("building", x, z, rng.uniform(-0.3, 0.3) + rng.choice([0, math.pi / 2]),
                         rng.uniform(15, 50), rng.uniform(12, 40), (rng.uniform(6, 25),),
                         allowed=(TERRAIN, SIDEWALK))
    for _ in range(int(span[0] * span[1] / 250 * density)):
        x = layout.x0 + rng.uniform(0, span[0])
        z = layout.z0 + rng.uniform(0, span[1])
        if layout.place_box("tree", x, z, 0, 1.5, 1.5, (), allowed=(TERRAIN,)):
            if rng.random() < 0.3:
                layout.placements[-1].kind = "bush"
    for path in paths:
        s = rng.uniform(0, 10)
        while s < path.length:
            x, z, hd = path.at(s)
            side = rng.choice([-1, 1])
            d = rng.uniform(2.0, 3.5) * side
            px, pz = x + math.cos(hd) * d, z - math.sin(hd) * d
            r = rng.random()
            if r < 0.3:
                layout.placements.append(Placement("light", px, pz, hd))
            elif r < 0.45:
                layout.placements.append(Placement("sign", px, pz, hd + math.pi))
            elif r < 0.65:
                for k in range(int(rng.integers(2, 7))):  # bike rack
                    layout.placements.append(Placement(
                        "parked_bicycle", px + math.sin(hd) * 0.7 * k, pz + math.cos(hd) * 0.7 * k,
                        hd + math.pi / 2))
            elif r < 0.85:
                kind = str(rng.choice(["wall", "fence", "hedge"]))
                layout.placements.append(Placement(kind, px + math.cos(hd) * side,
                                                   pz - math.sin(hd) * side, hd,
                                                   (rng.uniform(5, 20), rng.uniform(0.5, 1.6))))
            s += rng.uniform(6, 20)
        for _ in range(int(rng.poisson(density * 0.15 * path.length))):
            p = path.offset(rng.uniform(-1.2, 1.2))
            if rng.random() < 0.5:
                p = Polyline(p.points[::-1])
            kind = "bicycle" if rng.random() < 0.15 else "person"
            layout.placements.append(Placement(
                kind, 0, 0, path=p, speed=(rng.uniform(2.5, 5) if kind == "bicycle"
                                           else rng.uniform(0, 1.6) * (rng.random() < 0.8)),
                start=rng.uniform(0, p.length)))


def new_layout(kind: str, ego: Polyline, lateral: float, start: float, ppm: float,
               background: int, background_mat: int) -> Layout:
    """Empty rasters covering the ego's path plus MARGIN metres."""
    lo = ego.points.min(0) - MARGIN
    hi = ego.points.max(0) + MARGIN
    w, h = int((hi[0] - lo[0]) * ppm), int((hi[1] - lo[1]) * ppm)
    layout = Layout(kind, float(lo[0]), float(lo[1]), ppm, np.full((h, w), background, np.uint8),
                    np.full((h, w), background_mat, np.uint8), ego, lateral, start)
    layout.occupied = np.zeros((h, w), np.uint8)
    return layout


def reserve_corridor(layout: Layout, width: float) -> None:
    """Keep the ego's way clear of buildings and parked objects."""
    cv2.polylines(layout.occupied, [layout.to_px(layout.ego_path.offset(layout.ego_lateral)
                                                 .points)], False, 1,
                  max(1, int(width * layout.ppm)), cv2.LINE_8, SHIFT)


def sample_layout(rng: np.random.Generator, travel: float, camera_kind: str,
                  density: float) -> Layout:
    """A random place for a camera rig that travels about ``travel`` metres."""
    kinds = ["street", "intersection", "campus", "parking"]
    weights = [0.4, 0.25, 0.23, 0.12] if camera_kind == "car" else [0.2, 0.2, 0.45, 0.15]
    kind = str(rng.choice(kinds, p=weights))
    heading = rng.uniform(-math.pi, math.pi)
    length = travel + 2 * MARGIN
    if kind in ("street", "intersection"):
        urban = bool(rng.random() < 0.75)
        main = curvy_path(rng, (0.0, 0.0), heading, length, 1 / 60, 0.5 if kind == "street"
                          else 1.0)
        road = sample_road(rng, main, urban)
        lane = int(rng.integers(road.lanes))
        sidewalk_cam = camera_kind in ("robot", "person")
        lateral = (road.half + road.verge + road.sidewalk * rng.uniform(0.3, 0.7)
                   if sidewalk_cam else (lane + 0.5) * road.lane_width)
        start = MARGIN * 0.5
        ego = main
        cross = None
        if kind == "intersection":
            sj = start + travel * rng.uniform(0.3, 0.7) + 10
            xj, zj, hj = main.at(sj)
            turn = rng.choice([-1, 0, 1]) if not sidewalk_cam else 0
            ch = hj + math.pi / 2
            cross_line = Polyline(np.array([[xj - math.sin(ch) * length / 2,
                                             zj - math.cos(ch) * length / 2],
                                            [xj + math.sin(ch) * length / 2,
                                             zj + math.cos(ch) * length / 2]]))
            cross = sample_road(rng, cross_line, urban)
            cross.tram = False
            if turn:
                # quarter circle from our lane into the cross street's lane (right-hand traffic)
                r = rng.uniform(4, 8) if turn > 0 else 2 * lateral + rng.uniform(2, 5)
                f0 = -(lateral + r) if turn > 0 else lateral - r
                fwd = np.array([math.sin(hj), math.cos(hj)])
                n = np.array([math.cos(hj), -math.sin(hj)])
                a0 = np.array([xj, zj]) + f0 * fwd + lateral * n
                base = main.offset(lateral)
                pts = [base.points[i] for i in range(len(base.points)) if main.cum[i] < sj + f0]
                pts.append(a0)
                n = n * turn
                centre = a0 + n * r
                for a in np.linspace(0, math.pi / 2, 12)[1:]:
                    pts.append(centre - n * r * math.cos(a) + fwd * r * math.sin(a))
                hd = hj + turn * math.pi / 2
                for _ in range(1, int(length / 2)):
                    pts.append(pts[-1] + 2.0 * np.array([math.sin(hd), math.cos(hd)]))
                ego = Polyline(np.array(pts))
                lateral = 0.0
        layout = new_layout(kind, Polyline(ego.points[: int((start + travel + 20) / 1.0)]
                                           if kind == "street" else ego.points),
                            lateral, start, GROUND_PPM, TERRAIN,
                            GRASS if rng.random() < 0.7 else DIRT)
        layout.ego_path = ego
        walk_mat = int(rng.choice([PAVERS, CONCRETE, ASPHALT, PAVERS]))
        roads = [road] + ([cross] if cross else [])
        for r in roads:
            paint_road(layout, rng, r, walk_mat)
        if cross:  # re-paint the junction so the main road crosses cleanly
            paint_road(layout, rng, Road(main, road.lanes, road.lane_width, road.parking, 0, 0),
                       walk_mat)
            x, z, h = main.at(sj)
            for d in (-1, 1):  # zebra crossings
                for k in np.arange(-road.half, road.half, 1.0):
                    cx = x + math.cos(h) * k + math.sin(h) * d * (cross.outer - 2)
                    cz = z - math.sin(h) * k + math.cos(h) * d * (cross.outer - 2)
                    layout.poly(rect(cx, cz, h, 0.5, 3.0), None, PAINT)
            for dx in (-1, 1):
                for dz in (-1, 1):
                    px = x + math.cos(h) * dx * (road.half + 0.6) + math.sin(h) * dz * (
                        cross.half + 1.0)
                    pz = z - math.sin(h) * dx * (road.half + 0.6) + math.cos(h) * dz * (
                        cross.half + 1.0)
                    layout.placements.append(Placement("traffic_light", px, pz,
                                                       h + (math.pi if dz > 0 else 0)))
        if not cross and rng.random() < 0.6:  # a signalled pedestrian crossing ahead
            x, z, h = main.at(start + travel * rng.uniform(0.5, 1.0) + rng.uniform(15, 40))
            for k in np.arange(-road.half, road.half, 1.0):
                layout.poly(rect(x + math.cos(h) * k, z - math.sin(h) * k, h, 0.5, 3.0), None,
                            PAINT)
            for side in (-1, 1):
                d = side * (road.half + 0.6)
                layout.placements.append(Placement("traffic_light", x + math.cos(h) * d,
                                                   z - math.sin(h) * d, h))
        layout.roads = roads
        reserve_corridor(layout, 3.0)
        for r in roads:
            street_objects(layout, rng, r, urban, (0.0, r.line.length))
            street_agents(layout, rng, r, r.line.length, density)
        return layout

    if kind == "parking":
        ego = curvy_path(rng, (0.0, 0.0), heading, length, 1 / 25, 0.6)
        layout = new_layout(kind, Polyline(ego.points[: int(MARGIN * 0.5 + travel + 20)]),
                            0.0, MARGIN * 0.5, GROUND_PPM, TERRAIN, GRASS)
        layout.ego_path = ego
        lot = np.array([[layout.x0 + 30, layout.z0 + 30], [layout.x0 + 30, -layout.z0 * 0 +
                        layout.z0 + layout.classes.shape[0] / GROUND_PPM - 30]])
        xs = layout.x0 + layout.classes.shape[1] / GROUND_PPM
        corners = np.array([lot[0], [xs - 30, lot[0][1]], [xs - 30, lot[1][1]], lot[1]])
        layout.poly(corners + [[-4, -4], [4, -4], [4, 4], [-4, 4]], SIDEWALK, CONCRETE)
        layout.poly(corners, ROAD, ASPHALT)
        layout.band(ego, 7.0, ROAD, ASPHALT)
        reserve_corridor(layout, 6.5)
        a = rng.uniform(0, math.pi)
        step = rng.uniform(2.4, 2.8)
        for row in np.arange(-45, 45, 14.0):
            for k in np.arange(-45, 45, step):
                for side in (-1, 1):
                    x = float(np.mean(ego.points[:, 0])) + math.cos(a) * k + math.sin(a) * (
                        row + side * 2.6)
                    z = float(np.mean(ego.points[:, 1])) - math.sin(a) * k + math.cos(a) * (
                        row + side * 2.6)
                    c = rect(x, z, a, step, 5.0)
                    if not layout.free(c, (ROAD,)):
                        continue
                    layout.poly(rect(x - math.cos(a) * step / 2, z + math.sin(a) * step / 2, a,
                                     0.12, 4.8), None, PAINT)
                    if rng.random() < 0.45 * density:
                        kind_v = str(rng.choice(["car"] * 8 + ["truck"] * 2 + ["motorcycle"]))
                        layout.occupy(c)
                        layout.placements.append(Placement(
                            f"parked_{kind_v}", x, z, a + side * math.pi / 2 + math.pi / 2))
        for _ in range(int(rng.poisson(8 * density))):
            p = curvy_path(rng, tuple(ego.points[rng.integers(len(ego.points))] +
                                      rng.uniform(-20, 20, 2)), rng.uniform(-3, 3), 60, 0.05, 0.5)
            layout.placements.append(Placement("person", 0, 0, path=p,
                                               speed=rng.uniform(0.5, 1.5)))
        for _ in range(int(rng.poisson(3 * density))):
            layout.placements.append(Placement(str(rng.choice(["car", "truck", "motorcycle"])),
                                               0, 0, path=ego.offset(rng.choice([-1.7, 1.7])),
                                               speed=rng.uniform(1, 5),
                                               start=rng.uniform(0, 80)))
        h, w = layout.classes.shape
        xa, za = layout.x0 + 25, layout.z0 + 25
        xb, zb = layout.x0 + w / GROUND_PPM - 25, layout.z0 + h / GROUND_PPM - 25
        edge = Polyline(np.array([[xa, za], [xb, za], [xb, zb], [xa, zb], [xa, za]]))
        fence = str(rng.choice(["fence", "wall", "hedge"]))
        for s in np.arange(0, edge.length, 12.0):
            x, z, hd = edge.at(s + 6)
            layout.placements.append(Placement(fence, x, z, hd,
                                               (12.0, rng.uniform(1.0, 2.2))))
        campus_objects(layout, rng, [], density * 0.5)
        return layout

    # campus: lawns, a plaza, footpaths, a service road
    ego = curvy_path(rng, (0.0, 0.0), heading, length, 1 / 15, 0.4, step=0.5)
    layout = new_layout(kind, Polyline(ego.points[: int((MARGIN * 0.5 + travel + 20) * 2)]),
                        0.0, MARGIN * 0.5, GROUND_PPM, TERRAIN, GRASS)
    layout.ego_path = ego
    h, w = layout.classes.shape
    path_mat = int(rng.choice([PAVERS, ASPHALT, CONCRETE, GRAVEL]))
    paths = [ego]
    for _ in range(int(rng.integers(3, 8))):
        x0 = layout.x0 + rng.uniform(0, w / GROUND_PPM)
        z0 = layout.z0 + rng.uniform(0, h / GROUND_PPM)
        paths.append(curvy_path(rng, (x0, z0), rng.uniform(-math.pi, math.pi), 200, 1 / 20, 0.5))
    for _ in range(int(rng.integers(0, 3))):  # plazas
        cx, cz, _h = ego.at(rng.uniform(0, MARGIN + travel))
        layout.poly(rect(cx + rng.uniform(-25, 25), cz + rng.uniform(-25, 25),
                         rng.uniform(0, math.pi), rng.uniform(15, 45), rng.uniform(15, 45)),
                    SIDEWALK, int(rng.choice([PAVERS, CONCRETE])))
    widths = [rng.uniform(2.0, 5.0) for _ in paths]
    for p, wd in zip(paths, widths, strict=True):
        layout.band(p, wd + 0.3, None, CURB if path_mat != GRAVEL else GRASS)
    for p, wd in zip(paths, widths, strict=True):
        layout.band(p, wd, SIDEWALK, path_mat)
    if rng.random() < 0.5:  # a service road
        x0 = layout.x0 + rng.uniform(0, w / GROUND_PPM)
        line = curvy_path(rng, (x0, layout.z0), rng.uniform(-0.5, 0.5), h / GROUND_PPM, 1 / 80,
                          0.7)
        road = Road(line, 1, rng.uniform(2.8, 3.3), 0.0, rng.uniform(0.5, 3), rng.uniform(1.5, 3),
                    tram=bool(rng.random() < 0.3))  # some campuses have a light-rail line
        paint_road(layout, rng, road, path_mat)
        layout.roads = [road]
        street_agents(layout, rng, road, line.length, density * 0.5)
    reserve_corridor(layout, 4.0)
    campus_objects(layout, rng, paths, density)
    return layout
