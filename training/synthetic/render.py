"""Rendering: ground by ray casting, sky by ray direction, objects by the painter's algorithm.

Image and label are painted together, so every drawn pixel carries its exact class. Frames are
rendered at ``render_scale`` times the output size, then the image is area-averaged and the label
is a (thin-class weighted) majority vote of each block, so poles and bicycles survive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .camera import NEAR, Camera
from .classes import IGNORE, NUM_CLASSES, SKY, VOTE_WEIGHT
from .materials import DETAIL_AMP, DETAIL_CHANNEL, DETAIL_PPM, DETAIL_SIZE

SHIFT = 3  # fixed-point bits for sub-pixel polygon fills


def fixed_point(uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2 fixed point (SHIFT fractional bits), clamped to stay in int32."""
    lim = float(2 ** 28)
    return np.minimum(np.maximum(np.rint(uv * (1 << SHIFT)), -lim), lim).astype(np.int32)


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


@dataclass
class Canvas:
    """Image (float32) and label being painted together, plus haze for distant objects."""

    cam: Camera
    image: np.ndarray
    label: np.ndarray
    haze: np.ndarray
    fog_distance: float

    def fogged(self, color: np.ndarray, distance: float) -> np.ndarray:
        """Atmospheric perspective: far objects fade into the haze."""
        a = 1.0 - math.exp(-distance / self.fog_distance)
        return np.asarray(color, np.float32) * (1 - a) + self.haze * a

    def screen(self, poly: np.ndarray) -> np.ndarray | None:
        """World polygon (N,3) -> fixed-point pixel polygon, clipped at the near plane."""
        pc = self.cam.to_camera(poly)
        if pc[:, 2].min() < NEAR:
            pc = clip_near(pc)
            if pc is None:
                return None
        return fixed_point(self.cam.project(pc))

    def fill(self, polys: list[np.ndarray] | np.ndarray, colors: np.ndarray,
             label_id: int | None) -> None:
        """Fill world-space polygons in order (one colour, or one per polygon).

        Polygons of equal size are projected in one batch; only those crossing the near plane
        are clipped one by one.
        """
        if len(polys) == 0:
            return
        colors = np.broadcast_to(np.asarray(colors, np.float64), (len(polys), 3))
        sizes = {len(p) for p in polys}
        if len(sizes) == 1:
            pcs = self.cam.to_camera(np.asarray(polys, np.float64))
            uvs = fixed_point(self.cam.project(pcs))
            z_min = pcs[..., 2].min(axis=1)
        else:
            pcs = [self.cam.to_camera(np.asarray(p, np.float64)) for p in polys]
            uvs = [fixed_point(self.cam.project(pc)) for pc in pcs]
            z_min = [pc[:, 2].min() for pc in pcs]
        for pc, pts, color, zm in zip(pcs, uvs, colors, z_min, strict=True):
            if zm < NEAR:
                clipped = clip_near(pc)
                if clipped is None:
                    continue
                pts = fixed_point(self.cam.project(clipped))
            cv2.fillPoly(self.image, [pts], color.tolist(), cv2.LINE_AA, SHIFT)
            if label_id is not None:
                cv2.fillPoly(self.label, [pts], label_id, cv2.LINE_8, SHIFT)

    def stroke(self, points: np.ndarray, width_m: float, color: np.ndarray, label_id: int,
               closed: bool = False) -> None:
        """A 3-D polyline of ``width_m`` metres (poles, wheels, frames, wires)."""
        pc = self.cam.to_camera(np.asarray(points, np.float64))
        depth = pc[:, 2]
        if depth.min() < NEAR:
            return
        th = min(max(int(round(width_m * self.cam.f * len(depth) / float(depth.sum()))), 1), 400)
        pts = [fixed_point(self.cam.project(pc))]
        cv2.polylines(self.image, pts, closed, np.asarray(color, np.float64).tolist(), th,
                      cv2.LINE_AA, SHIFT)
        cv2.polylines(self.label, pts, closed, label_id, th, cv2.LINE_8, SHIFT)

    def textured_quad(self, origin: np.ndarray, e_a: np.ndarray, e_b: np.ndarray,
                      texture: np.ndarray, label_id: int, gain: float, distance: float,
                      label_all: bool = False) -> None:
        """Map ``texture`` (RGB or RGBA) onto the quad origin + a*e_a + b*e_b (a, b in [0, 1]).

        Where an RGBA texture is transparent the background stays; ``label_all`` labels the
        whole quad anyway (a chain-link fence is fence, holes included, as in Cityscapes).
        """
        corners = np.array([origin, origin + e_a, origin + e_a + e_b, origin + e_b])
        pc = self.cam.to_camera(corners)
        if pc[:, 2].max() < NEAR:
            return
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
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [fixed_point(uv - (x0, y0))], 1, cv2.LINE_8, SHIFT)
        sel = mask.astype(bool)
        if texture.shape[2] == 4:
            opaque = sel & (warped[..., 3] > 127)
            if label_all:
                self.label[y0:y1, x0:x1][sel] = label_id
                sel = opaque
            else:
                sel = opaque
                self.label[y0:y1, x0:x1][sel] = label_id
            warped = warped[..., :3]
        else:
            self.label[y0:y1, x0:x1][sel] = label_id
        a = 1.0 - math.exp(-distance / self.fog_distance)
        px = warped[sel].astype(np.float32) * np.float32(gain * (1 - a)) + self.haze * a
        self.image[y0:y1, x0:x1][sel] = px

    def shadow(self, polys: list[np.ndarray], factor: float) -> None:
        """Darken the ground under world-space shadow polygons (y = 0); labels are untouched."""
        if not polys:
            return
        mask = np.zeros(self.label.shape, np.uint8)
        for poly in polys:
            pts = self.screen(poly)
            if pts is not None:
                cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, SHIFT)
        sel = mask.astype(bool)
        self.image[sel] *= np.float32(factor)


def remap_list(src: np.ndarray, mx: np.ndarray, my: np.ndarray, interp: int,
               border: int) -> np.ndarray:
    """cv2.remap for flat lists of N coordinates (remap wants both sides below 32767)."""
    n = len(mx)
    cols = 1024
    rows = -(-n // cols)
    pad = rows * cols - n
    mx = np.pad(mx.astype(np.float32), (0, pad)).reshape(rows, cols)
    my = np.pad(my.astype(np.float32), (0, pad)).reshape(rows, cols)
    out = cv2.remap(src, mx, my, interp, borderMode=border)
    return out.reshape(rows * cols, -1)[:n]


def render_background(scene: object, cam: Camera) -> Canvas:
    """Sky by ray direction, ground by casting one ray per pixel (world-anchored, exact labels).

    Ground and sky pixels are computed as flat lists (cv2.remap with N x 1 maps), so no work is
    spent on the part of the frame the other one covers.
    """
    h, w = cam.height, cam.width
    xc = ((np.arange(w, dtype=np.float32) + 0.5 - w / 2) / cam.f)[None, :]
    yc = (-(np.arange(h, dtype=np.float32) + 0.5 - h / 2) / cam.f)[:, None]
    r = cam.rot.astype(np.float32)  # world -> camera; its transpose takes rays to the world
    dx = (r[0, 0] * xc + r[1, 0] * yc + r[2, 0]).ravel()
    dy = (r[0, 1] * xc + r[1, 1] * yc + r[2, 1]).ravel()
    dz = (r[0, 2] * xc + r[1, 2] * yc + r[2, 2]).ravel()
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    ground = dy < -1e-4
    g = np.flatnonzero(ground)
    k = np.flatnonzero(~ground)
    image = np.empty((h * w, 3), np.float32)
    label = np.full(h * w, SKY, np.uint8)
    if len(g):
        gdy = dy[g]
        t = np.minimum(cam.pos[1] / -gdy, 5000).astype(np.float32)
        gx = np.float32(cam.pos[0]) + t * dx[g]
        gz = np.float32(cam.pos[2]) + t * dz[g]
        ppm = scene.ppm
        gh, gw = scene.ground_classes.shape
        map_x = np.clip((gx - scene.x0) * ppm, 0, gw - 1.001).astype(np.float32)
        map_y = np.clip((gz - scene.z0) * ppm, 0, gh - 1.001).astype(np.float32)
        down = gh / scene.ground.shape[0]
        col = remap_list(scene.ground, (map_x + 0.5) / down - 0.5, (map_y + 0.5) / down - 0.5,
                         cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
        iy, ix = (map_y + 0.5).astype(np.int32), (map_x + 0.5).astype(np.int32)  # texel centres
        mat = scene.ground_material[iy, ix]
        gnorm = norm[g]
        dist = t * gnorm
        # high-frequency detail near the camera, faded out where a pixel covers several texels
        footprint = dist / cam.f / np.maximum(-gdy / gnorm, 0.05)
        fade = np.clip(1.5 - footprint * (DETAIL_PPM / 2.5), 0, 1)
        near = np.flatnonzero(fade > 0)
        if len(near):
            period = DETAIL_SIZE / DETAIL_PPM
            detail = remap_list(scene.detail, np.mod(gx[near], period) * DETAIL_PPM,
                                np.mod(gz[near], period) * DETAIL_PPM, cv2.INTER_LINEAR,
                                cv2.BORDER_WRAP)
            m = mat[near]
            d = detail[np.arange(len(near)), DETAIL_CHANNEL[m]]
            col[near] *= (1 + DETAIL_AMP[m] * fade[near] * d)[:, None]
        fog = (1 - np.exp(-dist / scene.style.fog_distance))[:, None]
        image[g] = col * (1 - fog) + scene.style.haze * fog
        label[g] = scene.ground_classes[iy, ix]
    if len(k):
        kn = norm[k]
        elev = np.arcsin(np.clip(dy[k] / kn, -1, 1))
        az = np.arctan2(dx[k], dz[k])
        ph, pw = scene.sky.shape[:2]
        sx = (az / (2 * math.pi) + 0.5) * pw
        sy = np.clip((1 - elev / (math.pi / 2)) * (ph - 1), 0, ph - 1)
        image[k] = remap_list(scene.sky, sx, sy, cv2.INTER_LINEAR, cv2.BORDER_WRAP)
    return Canvas(cam, image.reshape(h, w, 3), label.reshape(h, w), scene.style.haze,
                  scene.style.fog_distance)


def downsample(image: np.ndarray, label: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the image and vote the label over k x k blocks (thin classes weighted)."""
    if k == 1:
        return image, label
    h, w = label.shape[0] // k, label.shape[1] // k
    img = cv2.resize(image[:h * k, :w * k], (w, h), interpolation=cv2.INTER_AREA)
    lab = label[:h * k, :w * k].astype(np.int64)
    lab[lab == IGNORE] = NUM_CLASSES
    blocks = lab.reshape(h, k, w, k).transpose(0, 2, 1, 3).reshape(h * w, k * k)
    n = NUM_CLASSES + 1
    idx = (np.arange(h * w)[:, None] * n + blocks).ravel()
    votes = np.bincount(idx, weights=VOTE_WEIGHT[blocks.ravel()], minlength=h * w * n)
    best = votes.reshape(h * w, n).argmax(1)
    best[best == NUM_CLASSES] = IGNORE
    return img, best.reshape(h, w).astype(np.uint8)
