"""training.real_set: hand-drawn regions -> label images in the generic layout, and its errors."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from etc_ros.labels import CITYSCAPES_CLASSES, IGNORE_INDEX
from etc_ros.sources import open_dataset
from training.real_set import REGIONS_FILE, RealSetError, build, load_regions, main, rasterize

ROAD, SKY, PERSON = (CITYSCAPES_CLASSES.index(c) for c in ("road", "sky", "person"))


def samples(tmp_path: Path) -> Path:
    """A samples folder with one still and a 3-frame video (frame t has brightness 60 t)."""
    root = tmp_path / "examples"
    (root / "data").mkdir(parents=True)
    cv2.imwrite(str(root / "data" / "still.png"), np.full((40, 60, 3), 200, np.uint8))
    writer = cv2.VideoWriter(str(root / "data" / "vtest.avi"), cv2.VideoWriter.fourcc(*"MJPG"),
                             10, (60, 40))
    for t in range(3):
        writer.write(np.full((40, 60, 3), 60 * t, np.uint8))
    writer.release()
    return root


def regions_file(tmp_path: Path, images: list[dict], shared: dict | None = None) -> Path:
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"shared": shared or {}, "images": images}))
    return path


def test_rasterize_draws_in_order_and_ignores_the_rest() -> None:
    label = rasterize([{"class": "road", "box": [0, 20, 60, 40]},
                       {"class": "sky", "polygon": [[0, 0], [60, 0], [60, 10], [0, 10]]},
                       {"class": "ignore", "box": [10, 25, 20, 35]},
                       {"class": "person", "box": [40, 25, 50, 35]}], 60, 40, "t")
    assert (label[20:25] == ROAD).all()
    assert (label[0:10, 0:59] == SKY).all()  # fillPoly includes the polygon's edge
    assert (label[12:18] == IGNORE_INDEX).all()  # between the regions: not labelled
    assert (label[25:35, 10:20] == IGNORE_INDEX).all()  # a hole cut by 'ignore'
    assert (label[25:35, 40:50] == PERSON).all()


@pytest.mark.parametrize("region, message", [
    ({"class": "lawn", "box": [0, 0, 5, 5]}, "unknown class 'lawn'"),
    ({"class": "road", "box": [0, 0, 70, 5]}, "outside 60x40"),
    ({"class": "road", "polygon": [[0, 0], [5, 5]]}, "at least 3"),
    ({"class": "road", "polygon": [[0, 0], [5, 50], [9, 0]]}, "leaves the 60x40"),
    ({"class": "road"}, "needs a 'box' or a 'polygon'"),
])
def test_rasterize_errors_name_the_region(region: dict, message: str) -> None:
    with pytest.raises(RealSetError, match=message) as err:
        rasterize([region], 60, 40, "img")
    assert "img region 0" in str(err.value)


def test_build_writes_a_labelled_split_from_stills_and_video_frames(tmp_path: Path) -> None:
    spec = regions_file(tmp_path, [
        {"name": "still", "file": "data/still.png", "size": [60, 40],
         "regions": [{"class": "road", "box": [0, 20, 60, 40]}]},
        {"name": "clip_2", "file": "data/vtest.avi", "frame": 2, "size": [60, 40],
         "shared": ["static"], "regions": [{"class": "person", "box": [0, 0, 10, 10]}]},
    ], shared={"static": [{"class": "sky", "box": [0, 0, 60, 20]}]})
    out = tmp_path / "real"
    assert build(samples(tmp_path), out, spec) == 2
    source = open_dataset(out, "test")
    frames = list(source)
    assert len(frames) == 2
    by_seq = {f.sequence: f for f in frames}
    assert abs(float(by_seq["clip_2"].rgb.mean()) - 120) < 8  # frame 2 of the video, not 0
    clip_label = by_seq["clip_2"].label
    assert (clip_label[0:10, 0:10] == PERSON).all() and (clip_label[15:20] == SKY).all()
    assert (clip_label[20:] == IGNORE_INDEX).all()
    assert (by_seq["still"].label[20:] == ROAD).all()
    assert (out / "vtest.avi").is_file()  # copied for the real-video TC run


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "file": "data/missing.png", "size": [60, 40], "regions": []}, "not found"),
    ({"name": "a", "file": "data/still.png", "size": [64, 40], "regions": []},
     "drawn on 64x40"),
    ({"name": "a", "file": "data/vtest.avi", "frame": 9, "size": [60, 40], "regions": []},
     "has no frame 9"),
    ({"name": "a", "file": "data/still.png", "size": [60, 40], "regions": [],
      "shared": ["nope"]}, "unknown shared regions 'nope'"),
])
def test_build_errors_are_one_line(tmp_path: Path, entry: dict, message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = regions_file(tmp_path, [entry])
    assert main(["--samples", str(samples(tmp_path)), "--out", str(tmp_path / "o"),
                 "--regions", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("real_set: ") and message in err and "\n" not in err


def test_shipped_regions_file_is_valid() -> None:
    """Every shipped region names a known class and fits its image (no samples needed)."""
    spec = load_regions(REGIONS_FILE)
    classes = set()
    for entry in spec["images"]:
        width, height = entry["size"]
        regions = [r for s in entry.get("shared", []) for r in spec["shared"][s]]
        label = rasterize(regions + entry["regions"], width, height, entry["name"])
        classes |= set(np.unique(label).tolist()) - {IGNORE_INDEX}
    names = {CITYSCAPES_CLASSES[c] for c in classes}
    # the classes the real-image target names: sky, road/pavement, grass, trees, buildings,
    # people, cars
    assert {"sky", "road", "sidewalk", "terrain", "vegetation", "building", "person",
            "car"} <= names
