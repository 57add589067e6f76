"""Precompute DIS optical flow between labelled frames and their neighbours, once, as float16.

``python -m training.flow_cache --data-root ROOT --split train [--max-offset 3] [--preset medium]
[--workers N] [--label-stride S] [--layout generic|cityscapes|camvid]``

For every labelled frame t (every S-th frame index only, with ``--label-stride S``) and every
neighbour s = t±k, k = 1..K inside the sequence, both t -> s and s -> t are stored, so the
training loss can run the forward-backward check. Files: ``<flow dir>/flow/<t:06d>_<s:06d>.npy``
(H, W, 2) float16, where the flow dir is the sequence folder in the generic and CamVid layouts
and t, s are frame indices in the sequence's sorted frame list. Existing files are skipped and
new ones are written atomically, so an interrupted run just resumes. K must be at least the
training config's maximum offset.

``shared_tc_flows`` is the validation side: the flow between consecutive val frames at a model's
input size, which val TC needs, computed by the first run that asks and read by the others.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from etc_ros.temporal import DIS_PRESETS, compute_flow, consistency_flow
from training.datasets import LAYOUTS, DatasetError, flow_path, load_sequences, read_rgb

PAIRS_PER_JOB = 8


def neighbour_pairs(num_frames: int, labelled: Sequence[int], max_offset: int,
                    label_stride: int = 1) -> list[tuple[int, int]]:
    """(a, b) index pairs to cache, both directions, for labelled frames t with t % stride == 0."""
    pairs: set[tuple[int, int]] = set()
    for t in labelled:
        if t % label_stride:
            continue
        for k in range(1, max_offset + 1):
            for s in (t - k, t + k):
                if 0 <= s < num_frames:
                    pairs.update({(t, s), (s, t)})
    return sorted(pairs)


def shared_tc_flows(frames: Sequence[np.ndarray], cache_dir: Path | None, name: str
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``consistency_flow`` between consecutive ``frames`` (RGB, at a model's input size), shared.

    Runs that validate on the same frames at the same size (the GPU recipe trains four students
    side by side; ``make train`` one after the other) would each compute the same DIS flows at
    start, which took minutes on a shared machine. The first run computes them under a file lock
    and writes ``<cache_dir>/<H>x<W>_<name>_<hash of the frames>.npz``; the others wait and read
    it. A file of the same size and name with another hash (regenerated data) is deleted. Without
    ``cache_dir``, or where it cannot be written, the flows are computed and not kept.
    """
    def compute() -> list[tuple[np.ndarray, np.ndarray]]:
        return [consistency_flow(a, b) for a, b in zip(frames, frames[1:], strict=False)]

    if cache_dir is None:
        return compute()
    height, width = frames[0].shape[:2]
    digest = hashlib.sha1()
    for frame in frames:
        digest.update(np.ascontiguousarray(frame).tobytes())
    stem = f"{height}x{width}_{name.replace(os.sep, '_')}_"
    path = cache_dir / f"{stem}{digest.hexdigest()[:16]}.npz"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = open(cache_dir / f"{stem}lock", "w")  # noqa: SIM115 (held across the block)
    except OSError:
        return compute()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            with np.load(path, allow_pickle=False) as stored:
                return list(zip(stored["flow"], stored["valid"], strict=True))
        flows = compute()
        for stale in cache_dir.glob(f"{stem}*.npz"):
            if len(stale.stem) == len(path.stem):  # not another sequence's ("<name>_2_<hash>")
                stale.unlink()
        tmp = path.with_name(f"{path.stem}.tmp.npz")
        np.savez(tmp, flow=np.stack([f for f, _ in flows]), valid=np.stack([v for _, v in flows]))
        os.replace(tmp, path)
        return flows


def _save_atomic(path: Path, flow: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, flow.astype(np.float16), allow_pickle=False)
    os.replace(tmp, path)


def _run_job(job: tuple[list[str], str, list[int], list[tuple[int, int]], str]) -> int:
    """Compute and save one chunk of pairs of one sequence; returns the number of pairs done."""
    frames, flow_dir, frame_ids, pairs, preset = job
    cache: dict[int, np.ndarray] = {}
    for a, b in pairs:
        for i in (a, b):
            if i not in cache:
                cache[i] = read_rgb(Path(frames[i]))
        _save_atomic(flow_path(flow_dir, frame_ids[a], frame_ids[b]),
                     compute_flow(cache[a], cache[b], preset))
    return len(pairs)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; nested OpenCV threads only contend


def build_cache(data_root: str | Path, split: str, layout: str = "generic", max_offset: int = 3,
                preset: str = "medium", workers: int = 1, label_stride: int = 1) -> int:
    """Compute every missing flow of one split; returns how many files were written."""
    if max_offset < 1 or label_stride < 1 or workers < 1:
        raise ValueError("--max-offset, --label-stride and --workers must be >= 1")
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
    jobs = []
    for seq in load_sequences(data_root, split, layout):
        pairs = neighbour_pairs(len(seq.frames), sorted(seq.labels), max_offset, label_stride)
        jobs += sequence_jobs(seq.frames, seq.flow_dir, seq.frame_ids, pairs, preset)
    return cache_pairs(jobs, workers, f"flow {split}")


def sequence_jobs(frames: Sequence[Path], flow_dir: Path, frame_ids: Sequence[int],
                  pairs: Sequence[tuple[int, int]], preset: str = "medium") -> list[tuple]:
    """Work items for ``cache_pairs``: the missing flows of ``pairs`` (indices into ``frames``)."""
    todo = [(a, b) for a, b in pairs
            if not flow_path(flow_dir, frame_ids[a], frame_ids[b]).is_file()]
    return [([str(p) for p in frames], str(flow_dir), list(frame_ids),
             todo[i:i + PAIRS_PER_JOB], preset) for i in range(0, len(todo), PAIRS_PER_JOB)]


def cache_pairs(jobs: Sequence[tuple], workers: int, desc: str) -> int:
    """Compute and store the flows of ``jobs`` on ``workers`` processes; returns the count."""
    total = sum(len(j[3]) for j in jobs)
    with tqdm(total=total, desc=desc, unit="pair") as bar:
        if workers == 1:
            for job in jobs:
                bar.update(_run_job(job))
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork after OpenCV/torch threads
            with ctx.Pool(workers, initializer=_init_worker) as pool:
                for n in pool.imap_unordered(_run_job, jobs):
                    bar.update(n)
    return total


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; one-line error and exit code 2 on bad data or arguments."""
    ap = argparse.ArgumentParser(prog="python -m training.flow_cache", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--layout", default="generic", choices=LAYOUTS)
    ap.add_argument("--max-offset", type=int, default=3)
    ap.add_argument("--preset", default="medium", choices=sorted(DIS_PRESETS))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--label-stride", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        n = build_cache(args.data_root, args.split, args.layout, args.max_offset, args.preset,
                        args.workers, args.label_stride)
    except (DatasetError, ValueError) as e:
        print(f"flow_cache: {e}", file=sys.stderr)
        return 2
    print(f"flow_cache: wrote {n} flow file(s) for split {args.split!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
