"""A small labelled set of real photos and real video frames, for reading sim-to-real transfer.

No labelled real street data can be had offline, but OpenCV's sample data (packaged by Debian
and Ubuntu as ``opencv-doc``) holds real outdoor photos and a real fixed-camera video
(``vtest.avi``: paths, lawns, a road, buildings, people). ``training/real_regions.json`` draws
class regions on some of them by hand, well inside each object; every other pixel is ignored
(255). This module rasterises those regions and writes the generic dataset layout, so
``python -m etc_ros.evaluate --dataset ROOT --split test`` scores models on real pixels (per-class
recall = how much of each region is right), and copies ``vtest.avi`` for a real-video TC run::

    apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb deb
    python -m training.real_set --samples deb/usr/share/doc/opencv-doc/examples --out data/real
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from etc_ros.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, colorize, overlay

REGIONS_FILE = Path(__file__).with_name("real_regions.json")
SPLIT = "test"
VIDEO = "data/vtest.avi"  # copied next to the dataset for `evaluate --video`


class RealSetError(Exception):
    """A problem with the samples or the regions file; the message is one line naming it."""


def _class_id(name: str, where: str) -> int:
    if name == "ignore":
        return IGNORE_INDEX
    if name not in CITYSCAPES_CLASSES:
        raise RealSetError(f"{where}: unknown class {name!r} (Cityscapes names or 'ignore')")
    return CITYSCAPES_CLASSES.index(name)


def rasterize(regions: Sequence[dict[str, Any]], width: int, height: int, where: str) -> np.ndarray:
    """Label image of the regions, drawn in order (later ones overwrite); the rest is 255."""
    label = np.full((height, width), IGNORE_INDEX, np.uint8)
    for i, region in enumerate(regions):
        here = f"{where} region {i}"
        value = _class_id(str(region.get("class")), here)
        if "box" in region:
            x0, y0, x1, y1 = (int(v) for v in region["box"])
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise RealSetError(f"{here}: box {region['box']} is empty or outside "
                                   f"{width}x{height}")
            label[y0:y1, x0:x1] = value
        elif "polygon" in region:
            pts = np.asarray(region["polygon"], np.int32)
            if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] != 2:
                raise RealSetError(f"{here}: a polygon needs at least 3 [x, y] points")
            if pts.min() < 0 or pts[:, 0].max() > width or pts[:, 1].max() > height:
                raise RealSetError(f"{here}: polygon leaves the {width}x{height} image")
            cv2.fillPoly(label, [pts], int(value))
        else:
            raise RealSetError(f"{here}: needs a 'box' or a 'polygon'")
    return label


def _read_image(samples: Path, entry: dict[str, Any]) -> np.ndarray:
    """The entry's image as BGR (a still, or one frame of a video)."""
    path = samples / entry["file"]
    if not path.is_file():
        raise RealSetError(f"sample not found: {path}")
    if "frame" not in entry:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise RealSetError(f"cannot decode image: {path}")
        return image
    cap = cv2.VideoCapture(str(path))
    frame = None
    for _ in range(int(entry["frame"]) + 1):  # read through: seeking is not exact in every codec
        ok, frame = cap.read()
        if not ok:
            cap.release()
            raise RealSetError(f"{path} has no frame {entry['frame']}")
    cap.release()
    return frame


def load_regions(path: Path) -> dict[str, Any]:
    """The regions file, checked for the fields every entry needs."""
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RealSetError(f"cannot read regions file {path}: {e}") from e
    names = set()
    for entry in spec.get("images", []):
        for key in ("name", "file", "size", "regions"):
            if key not in entry:
                raise RealSetError(f"{path}: an image entry lacks {key!r}")
        if entry["name"] in names:
            raise RealSetError(f"{path}: image name {entry['name']!r} appears twice")
        names.add(entry["name"])
        for shared in entry.get("shared", []):
            if shared not in spec.get("shared", {}):
                raise RealSetError(f"{path}: {entry['name']} uses unknown shared regions "
                                   f"{shared!r}")
    if not names:
        raise RealSetError(f"{path}: no images")
    return spec


def build(samples: Path, out: Path, regions_file: Path = REGIONS_FILE,
          preview: Path | None = None) -> int:
    """Write ``out/test/<name>/{images,labels}/000000.png`` per entry; returns the image count."""
    if not samples.is_dir():
        raise RealSetError(f"samples folder not found: {samples}")
    spec = load_regions(regions_file)
    for entry in spec["images"]:
        image = _read_image(samples, entry)
        width, height = (int(v) for v in entry["size"])
        if image.shape[:2] != (height, width):
            raise RealSetError(f"{samples / entry['file']}: {image.shape[1]}x{image.shape[0]}, "
                               f"the regions were drawn on {width}x{height}")
        regions = [r for s in entry.get("shared", []) for r in spec["shared"][s]]
        label = rasterize(regions + list(entry["regions"]), width, height, entry["name"])
        seq = out / SPLIT / entry["name"]
        for sub in ("images", "labels"):
            (seq / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(seq / "images" / "000000.png"), image)
        cv2.imwrite(str(seq / "labels" / "000000.png"), label)
        if preview is not None:
            preview.mkdir(parents=True, exist_ok=True)
            rgb = image[:, :, ::-1]
            shown = overlay(rgb, colorize(label, CITYSCAPES_PALETTE), 0.5)
            shown[label == IGNORE_INDEX] = rgb[label == IGNORE_INDEX] // 2
            cv2.imwrite(str(preview / f"{entry['name']}.png"), shown[:, :, ::-1])
    video = samples / VIDEO
    if video.is_file():
        shutil.copyfile(video, out / video.name)
    return len(spec["images"])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; one-line error and exit code 2 on a bad sample or regions file."""
    ap = argparse.ArgumentParser(prog="python -m training.real_set", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, required=True,
                    help="opencv-doc's examples folder (holds data/, hfs/, text/)")
    ap.add_argument("--out", type=Path, default=Path("data/real"), help="dataset root to write")
    ap.add_argument("--regions", type=Path, default=REGIONS_FILE, help="hand-drawn regions")
    ap.add_argument("--preview", type=Path, help="also write each image with its regions drawn")
    args = ap.parse_args(argv)
    try:
        n = build(args.samples, args.out, args.regions, args.preview)
    except RealSetError as e:
        print(f"real_set: {e}", file=sys.stderr)
        return 2
    print(f"real_set: wrote {n} labelled real image(s) to {args.out / SPLIT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
