"""Video segmentation datasets: Cityscapes, CamVid and the generic layout, plus the clip sampler.

Every reader turns its on-disk layout into the same thing, a list of ``VideoSequence`` (ordered
frame files, which of them are labelled, how to decode their labels), so the clip sampler, the
flow cache and validation never care where the data came from.

Layouts (``<split>`` is e.g. train / val / test):

* generic: ``<root>/<split>/<sequence>/images/*.png`` and optionally ``labels/<same name>.png``
  (uint8 train ids, 255 = ignore). A ``labels`` folder, when present, must cover every image;
  a sequence without one is unlabelled (fine for val TC, an error if a training split has no
  labels at all). This is what ``training.synthetic`` writes.
* cityscapes: ``<root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``
  and ``<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``. Each 30-frame
  snippet is labelled on its 20th frame; labelIds are mapped to the 19 train ids.
* camvid: ``<root>/<split>/<sequence>/frames/*.png`` (every video frame) and
  ``<root>/<split>/<sequence>/labels/<frame name>.png`` for the labelled frames (every 30th in
  CamVid). Labels are either the 11-class index PNGs of the SegNet release (0..10, 11 = void) or
  the original RGB colour PNGs; both are mapped to Cityscapes train ids (tables below).

Flows come from the flow cache (``<sequence dir>/flow/<t>_<s>.npy``, ``training.flow_cache``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from etc_ros.labels import IGNORE_INDEX
from etc_ros.sources import SourceError, open_dataset
from etc_ros.sources import read_rgb as decode_rgb
from training.transforms import Clip, normalize

LAYOUTS = ("generic", "cityscapes", "camvid")


class DatasetError(Exception):
    """A data problem the user must fix; the message is one line naming the file."""


# Cityscapes labelIds (0..33) -> train ids; everything not listed is ignored.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_NUM_IDS = 34

# CamVid 11-class index labels (SegNet release) -> Cityscapes train ids; 11 = void.
CAMVID_INDEX_TO_TRAINID: tuple[int, ...] = (
    10,  # 0 sky
    2,  # 1 building
    5,  # 2 pole
    0,  # 3 road
    1,  # 4 pavement -> sidewalk
    8,  # 5 tree -> vegetation
    7,  # 6 sign/symbol -> traffic sign
    4,  # 7 fence
    13,  # 8 car
    11,  # 9 pedestrian -> person
    12,  # 10 bicyclist -> rider
    IGNORE_INDEX,  # 11 void
)
# CamVid colour labels (RGB) of the same 11 classes plus void.
CAMVID_COLOR_TO_TRAINID: dict[tuple[int, int, int], int] = {
    (128, 128, 128): 10,
    (128, 0, 0): 2,
    (192, 192, 128): 5,
    (128, 64, 128): 0,
    (0, 0, 192): 1,
    (128, 128, 0): 8,
    (192, 128, 128): 7,
    (64, 64, 128): 4,
    (64, 0, 128): 13,
    (64, 64, 0): 11,
    (0, 128, 192): 12,
    (0, 0, 0): IGNORE_INDEX,
}


def _lut(table: dict[int, int], size: int) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in table.items():
        lut[src] = dst
    lut[size:] = IGNORE_INDEX
    return lut


_CITYSCAPES_LUT = _lut(CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_NUM_IDS)
_CAMVID_LUT = _lut(dict(enumerate(CAMVID_INDEX_TO_TRAINID)), len(CAMVID_INDEX_TO_TRAINID))


@dataclass
class VideoSequence:
    """One continuous video: ordered frame files, labels for some of them, where flows live."""

    name: str
    frames: list[Path]
    labels: dict[int, Path]
    label_format: str  # "trainid" | "cityscapes" | "camvid"
    flow_dir: Path
    frame_ids: list[int] = field(default_factory=list)  # flow-cache index of each frame

    def __post_init__(self) -> None:
        if not self.frame_ids:
            self.frame_ids = list(range(len(self.frames)))


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; DatasetError names an unreadable file."""
    img = decode_rgb(path)
    if img is None:
        raise DatasetError(f"unreadable image: {path}")
    return img


def flow_path(flow_dir: str | Path, t: int, s: int) -> Path:
    """Where the flow from frame t to frame s of a sequence is cached."""
    return Path(flow_dir) / "flow" / f"{t:06d}_{s:06d}.npy"


def load_flow(seq_dir: str | Path, t: int, s: int) -> np.ndarray:
    """Cached flow t -> s as float32 (H, W, 2); a missing or bad file raises naming it."""
    path = flow_path(seq_dir, t, s)
    if not path.is_file():
        raise FileNotFoundError(f"flow cache file missing: {path} "
                                f"(run python -m training.flow_cache with a large enough "
                                f"--max-offset)")
    try:
        flow = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"unreadable flow cache file {path}: {e}") from e
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow cache file {path} has shape {flow.shape}, expected (H, W, 2)")
    return flow.astype(np.float32)


def read_label(path: Path, label_format: str, num_classes: int) -> np.ndarray:
    """Read a label file and map it to train ids (H, W) uint8, checking every id is legal."""
    if not path.is_file():
        raise DatasetError(f"missing label file: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"unreadable label image: {path}")
    if label_format == "camvid" and raw.ndim == 3:
        return _camvid_colors(raw, path)
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise DatasetError(f"label must be a single-channel 8-bit PNG: {path} "
                           f"(got shape {raw.shape}, {raw.dtype})")
    if label_format == "cityscapes":
        _check_range(raw, CITYSCAPES_NUM_IDS, path, "Cityscapes labelId")
        return _CITYSCAPES_LUT[raw]
    if label_format == "camvid":
        _check_range(raw, len(CAMVID_INDEX_TO_TRAINID), path, "CamVid class id")
        return _CAMVID_LUT[raw]
    _check_range(raw, num_classes, path, "class id")
    return raw


def _check_range(raw: np.ndarray, limit: int, path: Path, what: str) -> None:
    ids = np.unique(raw)
    bad = ids[(ids >= limit) & (ids != IGNORE_INDEX)]
    if bad.size:
        raise DatasetError(f"{what} {int(bad[0])} out of range 0..{limit - 1} "
                           f"(or {IGNORE_INDEX} = ignore) in {path}")


def _camvid_colors(bgr: np.ndarray, path: Path) -> np.ndarray:
    rgb = cv2.cvtColor(bgr[..., :3], cv2.COLOR_BGR2RGB).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(code.shape, dtype=bool)
    for (r, g, b), train_id in CAMVID_COLOR_TO_TRAINID.items():
        hit = code == ((r << 16) | (g << 8) | b)
        out[hit] = train_id
        known |= hit
    if not known.all():
        y, x = np.argwhere(~known)[0]
        raise DatasetError(f"CamVid colour {tuple(int(v) for v in rgb[y, x])} at ({x},{y}) "
                           f"is not a known class colour in {path}")
    return out


def _split_dir(root: Path, split: str) -> Path:
    """The split folder, or DatasetError naming where it was expected."""
    d = root / split
    if not d.is_dir():
        raise DatasetError(f"split folder not found: {d}")
    return d


def generic_sequences(root: Path, split: str) -> list[VideoSequence]:
    """Sequences of the generic layout, listed by ``etc_ros.sources`` (the same order evaluate
    and the flow cache use); a ``labels`` folder must cover every image."""
    try:
        source = open_dataset(root, split)
    except SourceError as exc:
        raise DatasetError(str(exc)) from None
    seqs = []
    for name, images in source.sequences:
        seq_dir = images[0].parent.parent
        labels: dict[int, Path] = {}
        if (seq_dir / "labels").is_dir():
            for i, img in enumerate(images):
                lab = seq_dir / "labels" / f"{img.stem}.png"
                if not lab.is_file():
                    raise DatasetError(f"missing label file: {lab}")
                labels[i] = lab
        seqs.append(VideoSequence(name, images, labels, "trainid", seq_dir))
    return seqs


_CS_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")
CITYSCAPES_SNIPPET = 30
CITYSCAPES_LABELLED = 19  # the 20th frame of each snippet


def cityscapes_sequences(root: Path, split: str) -> list[VideoSequence]:
    """30-frame snippets of leftImg8bit_sequence, each labelled on its 20th frame from gtFine.

    Flows are cached under ``<root>/flow/<split>/<city>_<seq>_<first frame>/``, since the
    Cityscapes tree has no per-snippet folder.
    """
    seq_root = _split_dir(root / "leftImg8bit_sequence", split)
    groups: dict[tuple[str, str], list[tuple[int, Path]]] = defaultdict(list)
    for path in sorted(seq_root.glob("*/*_leftImg8bit.png")):
        m = _CS_NAME.match(path.name)
        if m is None:
            raise DatasetError(f"unexpected Cityscapes file name: {path}")
        groups[(m["city"], m["seq"])].append((int(m["frame"]), path))
    if not groups:
        raise DatasetError(f"no *_leftImg8bit.png under {seq_root}")
    flow_base = root / "flow" / split
    seqs = []
    for (city, seq), frames in sorted(groups.items()):
        frames.sort()
        for start in range(0, len(frames), CITYSCAPES_SNIPPET):
            chunk = frames[start : start + CITYSCAPES_SNIPPET]
            if len(chunk) <= CITYSCAPES_LABELLED:
                raise DatasetError(f"snippet {city}_{seq} starting at frame {chunk[0][0]} has "
                                   f"{len(chunk)} frames; the labelled 20th frame is missing")
            number = chunk[CITYSCAPES_LABELLED][0]
            label = (root / "gtFine" / split / city /
                     f"{city}_{seq}_{number:06d}_gtFine_labelIds.png")
            if not label.is_file():
                raise DatasetError(f"missing label file: {label}")
            name = f"{city}_{seq}_{chunk[0][0]:06d}"
            seqs.append(VideoSequence(name, [p for _, p in chunk], {CITYSCAPES_LABELLED: label},
                                      "cityscapes", flow_base / name))
    return seqs


def camvid_sequences(root: Path, split: str) -> list[VideoSequence]:
    """CamVid videos: every frame in frames/, labels/ for the (sparse) labelled frames."""
    seqs = []
    for seq_dir in sorted(p for p in _split_dir(root, split).iterdir() if p.is_dir()):
        frames = sorted((seq_dir / "frames").glob("*.png"))
        if not frames:
            raise DatasetError(f"no frames/*.png in CamVid sequence folder {seq_dir}")
        index = {p.name: i for i, p in enumerate(frames)}
        labels = {}
        for lab in sorted((seq_dir / "labels").glob("*.png")):
            if lab.name not in index:
                raise DatasetError(f"label without a frame: {lab} "
                                   f"(expected {seq_dir / 'frames' / lab.name})")
            labels[index[lab.name]] = lab
        seqs.append(VideoSequence(seq_dir.name, frames, labels, "camvid", seq_dir))
    return seqs


def load_sequences(root: str | Path, split: str, layout: str) -> list[VideoSequence]:
    """Read one split of a dataset in the given layout; DatasetError if it holds no frames."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root not found: {root}")
    if layout == "generic":
        seqs = generic_sequences(root, split)
    elif layout == "cityscapes":
        seqs = cityscapes_sequences(root, split)
    elif layout == "camvid":
        seqs = camvid_sequences(root, split)
    else:
        raise DatasetError(f"unknown dataset layout {layout!r}; choose one of {LAYOUTS}")
    if not seqs:
        raise DatasetError(f"no sequences in {root} split {split!r} ({layout} layout)")
    return seqs


def clip_offsets(num_frames: int) -> tuple[int, ...]:
    """Clip frames as multiples of k: 1 frame (t), 2 (t, t+k) or 3 (t-k, t, t+k), time order."""
    offsets = {1: (0,), 2: (0, 1), 3: (-1, 0, 1)}
    if num_frames not in offsets:
        raise ValueError(f"clips have 1, 2 or 3 frames, not {num_frames}")
    return offsets[num_frames]


class ClipDataset(Dataset):
    """Labelled frame t with neighbours t±k (k random in 1..max_offset, clipped to the sequence).

    Items are dicts: ``images`` (T, 3, H, W) normalised in time order, ``label`` (H, W) int64 of
    frame ``self.key`` and, when ``with_flow``, ``flows`` (2, 2, H, W): the flow from t to its
    neighbour ``self.neighbor`` (t+k) and back, as the temporal loss needs (zero when the
    neighbour was clipped onto t itself). One random transform is drawn per clip.
    With ``frame_labels``, a clip whose every frame is labelled carries those labels to the
    transform (per-class recolouring needs them); the item's label is still frame t's.
    """

    def __init__(self, sequences: Sequence[VideoSequence], num_classes: int, num_frames: int,
                 max_offset: int, transform: Callable[[Clip, np.random.Generator], Clip],
                 with_flow: bool, frame_labels: bool = False) -> None:
        self.sequences = list(sequences)
        self.items = [(s, t) for s, seq in enumerate(self.sequences) for t in sorted(seq.labels)]
        if not self.items:
            raise DatasetError(f"no labelled frames in {len(self.sequences)} sequences "
                               f"(starting {self.sequences[0].frames[0].parent})")
        self.num_classes = num_classes
        self.offsets = clip_offsets(num_frames)
        self.key = self.offsets.index(0)
        self.neighbor = len(self.offsets) - 1
        if with_flow and num_frames < 2:
            raise ValueError("flow needs a clip of at least 2 frames")
        self.max_offset = max_offset
        self.transform = transform
        self.with_flow = with_flow
        self.frame_labels = frame_labels

    def __len__(self) -> int:
        return len(self.items)

    def _clip_indices(self, seq: VideoSequence, t: int, k: int) -> list[int]:
        last = len(seq.frames) - 1
        return [min(max(t + o * k, 0), last) for o in self.offsets]

    def frames_drawn(self) -> list[list[int]]:
        """Per sequence, every frame index a clip can contain (all k in 1..max_offset).

        Cityscapes labels one frame in 30, so its clips touch 2 x max_offset + 1 of them: what
        the teacher cache needs, and no more.
        """
        drawn: list[set[int]] = [set() for _ in self.sequences]
        for s, t in self.items:
            for k in range(1, self.max_offset + 1):
                drawn[s].update(self._clip_indices(self.sequences[s], t, k))
        return [sorted(d) for d in drawn]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # Seeded from torch's RNG, which DataLoader seeds distinctly per worker and epoch.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        s, t = self.items[index]
        seq = self.sequences[s]
        k = int(rng.integers(1, self.max_offset + 1))
        idx = self._clip_indices(seq, t, k)
        frames = [read_rgb(seq.frames[i]) for i in idx]
        label = read_label(seq.labels[t], seq.label_format, self.num_classes)
        key_shape = frames[self.key].shape[:2]
        if label.shape != key_shape:
            raise DatasetError(f"label {seq.labels[t]} is {label.shape[1]}x{label.shape[0]} but "
                               f"its image is {key_shape[1]}x{key_shape[0]}")
        pairs = [(self.key, self.neighbor), (self.neighbor, self.key)] if self.with_flow else []
        flows = {(a, b): _cached_flow(seq, idx[a], idx[b], key_shape) for a, b in pairs}
        frame_labels = None
        if self.frame_labels and all(i in seq.labels for i in idx):
            frame_labels = [label if i == t else
                            read_label(seq.labels[i], seq.label_format, self.num_classes)
                            for i in idx]
        clip = self.transform(Clip(frames, label, self.key, flows, frame_labels=frame_labels),
                              rng)
        item = {
            "images": normalize(clip.frames),
            "label": torch.from_numpy(clip.label.astype(np.int64)),
            # sequence + frame indices and the clip's warp, for the teacher cache
            "source": torch.tensor([s, *idx]),
            "geometry": torch.from_numpy(clip.geometry),
        }
        if self.with_flow:
            item["flows"] = torch.stack(
                [torch.from_numpy(clip.flows[p]).permute(2, 0, 1) for p in pairs]
            )
        return item


def _cached_flow(seq: VideoSequence, a: int, b: int, shape: tuple[int, int]) -> np.ndarray:
    if a == b:
        return np.zeros((*shape, 2), dtype=np.float32)
    try:
        flow = load_flow(seq.flow_dir, seq.frame_ids[a], seq.frame_ids[b])
    except (OSError, ValueError) as exc:
        raise DatasetError(str(exc)) from None
    if flow.shape != (*shape, 2):
        path = flow_path(seq.flow_dir, seq.frame_ids[a], seq.frame_ids[b])
        raise DatasetError(f"cached flow {path} is {flow.shape[1]}x{flow.shape[0]}, its frames "
                           f"{shape[1]}x{shape[0]}; rebuild the flow cache")
    return flow
