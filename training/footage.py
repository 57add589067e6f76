"""Unlabelled target footage for adaptation: rosbags, videos and image folders -> frames on disk.

Every source is read once through the runtime's frame sources (``etc_ros.sources`` /
``etc_ros.bags``: the same decoding as ``evaluate`` and the node), resized to the working size
and written as PNG under ``<work>/footage/<n>_<name>/images/`` so that the flow cache and the
adaptation loop read plain files. What was used is recorded for the checkpoint's metadata:
file, topic, sha256, frames kept.

Frame indices are those of the source (0 = its first message or frame). ``exclude`` ranges drop
frames (e.g. those near labelled frames used for evaluation); the last ``holdout_share`` of each
source's remaining frames is held out from training, as the collapse guard's monitor set. Clips
never span a gap: a frame pairs only with neighbours that were consecutive in the source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from etc_ros.preprocess import resize_image
from etc_ros.sources import FrameSource, SourceError, open_images, open_video
from training.datasets import flow_path
from training.flow_cache import cache_pairs, sequence_jobs


class FootageError(Exception):
    """Footage that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class FootageSpec:
    """One input: ``kind`` bag | video | images, its path and (bags) the image topic."""

    kind: str
    path: str
    topic: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path} topic {self.topic}" if self.topic else self.path


@dataclass
class FootageClip:
    """One source's frames as written: file per kept frame, source index, train/held-out."""

    spec: FootageSpec
    folder: Path
    files: list[Path] = field(default_factory=list)
    source_index: list[int] = field(default_factory=list)
    train: list[int] = field(default_factory=list)  # positions into files
    heldout: list[int] = field(default_factory=list)
    sha256: str = ""
    skipped: int = 0  # undecodable messages

    def pairs(self, max_offset: int) -> list[tuple[int, int, int]]:
        """(t, t-k, k) positions of training frames whose neighbour k back was consecutive in the
        source and is a training frame too."""
        train = set(self.train)
        out = []
        for t in self.train:
            for k in range(1, max_offset + 1):
                s = t - k
                if s in train and self.source_index[t] - self.source_index[s] == k:
                    out.append((t, s, k))
        return out

    def describe(self) -> dict[str, Any]:
        """What the checkpoint's metadata and the report say about this footage."""
        return {"kind": self.spec.kind, "path": self.spec.path, "topic": self.spec.topic,
                "sha256": self.sha256, "frames_read": len(self.files) + self.skipped,
                "undecodable": self.skipped, "frames_train": len(self.train),
                "frames_heldout": len(self.heldout),
                "train_ranges": _ranges([self.source_index[i] for i in self.train]),
                "heldout_ranges": _ranges([self.source_index[i] for i in self.heldout])}


def parse_ranges(text: str) -> list[tuple[int, int | None]]:
    """``"0-50,350-450,700-"`` -> [(0, 50), (350, 450), (700, None)]; inclusive, None = open."""
    out: list[tuple[int, int | None]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            start = int(lo)
            end = (int(hi) if hi else None) if sep else start
        except ValueError:
            raise FootageError(f"--exclude: {part!r} is not N, N-M or N-") from None
        if start < 0 or (end is not None and end < start):
            raise FootageError(f"--exclude: range {part!r} is empty or negative")
        out.append((start, end))
    return out


def _excluded(index: int, ranges: Sequence[tuple[int, int | None]]) -> bool:
    return any(lo <= index and (hi is None or index <= hi) for lo, hi in ranges)


def _ranges(indices: Sequence[int]) -> list[list[int]]:
    """Sorted indices as inclusive [start, end] runs, for a readable record."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, sorted), read in chunks."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def open_source(spec: FootageSpec) -> FrameSource:
    """The runtime's frame source for ``spec``; FootageError (one line) if it cannot be read."""
    try:
        if spec.kind == "bag":
            from etc_ros.bags import open_bag  # rosbags only when a bag is given

            return open_bag(spec.path, spec.topic or "")
        if spec.kind == "video":
            return open_video(spec.path)
        if spec.kind == "images":
            return open_images(spec.path)
    except SourceError as exc:
        raise FootageError(str(exc)) from None
    raise FootageError(f"unknown footage kind {spec.kind!r}")


def _frames(source: FrameSource, spec: FootageSpec) -> Iterator[tuple[int, np.ndarray | None]]:
    try:
        for frame in source:
            yield frame.index, frame.rgb
    except SourceError as exc:
        raise FootageError(f"{spec.label}: {exc}") from None


def check_sources(specs: Sequence[FootageSpec], min_frames: int) -> list[FrameSource]:
    """Open every source before any work; each must hold at least ``min_frames`` frames."""
    if not specs:
        raise FootageError("no footage given: pass --bag PATH --topic T, --video FILE or "
                           "--images DIR (each repeatable)")
    sources = []
    for spec in specs:
        source = open_source(spec)
        if len(source) == 0:
            raise FootageError(f"footage {spec.label} has no frames")
        if len(source) < min_frames:
            raise FootageError(f"footage {spec.label} has {len(source)} frames; adaptation "
                               f"needs at least {min_frames} (the clip length plus held-out "
                               f"frames)")
        sources.append(source)
    return sources


def prepare_footage(specs: Sequence[FootageSpec], work: Path, size: tuple[int, int],
                    exclude: Sequence[tuple[int, int | None]], holdout_share: float,
                    max_frames: int | None, stride: int, max_offset: int) -> list[FootageClip]:
    """Decode, filter, resize to ``size`` and write every source; split train / held-out.

    Already written frames are reused (a resumed run decodes nothing twice). A source left with
    too few consecutive frames for one clip is a FootageError.
    """
    sources = check_sources(specs, max_offset + 2)
    clips = []
    for n, (spec, source) in enumerate(zip(specs, sources, strict=True)):
        folder = work / "footage" / f"{n:02d}_{Path(spec.path).stem or 'footage'}"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        clip = FootageClip(spec, folder, sha256=sha256_of(Path(spec.path)))
        for index, rgb in tqdm(_frames(source, spec), total=len(source), unit="frame",
                               desc=f"footage {n}"):
            if index % stride or _excluded(index, exclude):
                continue
            if max_frames is not None and len(clip.files) >= max_frames:
                break
            if rgb is None:
                clip.skipped += 1
                continue
            path = folder / "images" / f"{index:06d}.png"
            if not path.is_file():
                cv2.imwrite(str(path), resize_image(rgb, size)[..., ::-1])
            clip.files.append(path)
            clip.source_index.append(index // stride)
        held = int(round(len(clip.files) * holdout_share))
        held = max(held, 1) if holdout_share > 0 else 0
        clip.train = list(range(len(clip.files) - held))
        clip.heldout = list(range(len(clip.files) - held, len(clip.files)))
        if not clip.pairs(max_offset):
            raise FootageError(f"footage {spec.label}: {len(clip.train)} training frames left "
                               f"after --exclude and the held-out share, none with a "
                               f"consecutive neighbour; it is too short for adaptation")
        clips.append(clip)
    return clips


def cache_footage_flows(clips: Sequence[FootageClip], max_offset: int, workers: int,
                        preset: str = "medium") -> int:
    """DIS flow t -> t-k and back for every training pair, cached like the training flows."""
    jobs = []
    for clip in clips:
        pairs = sorted({p for t, s, _ in clip.pairs(max_offset) for p in ((t, s), (s, t))})
        jobs += sequence_jobs(clip.files, clip.folder, list(range(len(clip.files))), pairs,
                              preset)
    return cache_pairs(jobs, workers, "footage flow")


def footage_flow_path(clip: FootageClip, a: int, b: int) -> Path:
    """Where ``cache_footage_flows`` put the flow from position a to position b."""
    return flow_path(clip.folder, a, b)
