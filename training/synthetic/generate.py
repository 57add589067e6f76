"""Writing datasets and videos: sequences in parallel, each from its own seed, plus metadata."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .classes import USED_TRAIN_IDS
from .objects import FPS
from .scene import DEFAULT_DIFFICULTY, render_sequence

SPLITS = ("train", "val", "test")
_SPLIT_KEYS = {"train": 0, "val": 1, "test": 2, "video": 3}
VERSION = 3


def sequence_seed(seed: int, split: str, index: int) -> int:
    """Independent seeds per (split, index): train/val/test never share a sequence."""
    ss = np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEYS[split], index))
    return int(ss.generate_state(1, np.uint64)[0])


def write_sequence(task: tuple) -> int:
    """Render one sequence into ``seq_dir``/images and /labels; returns the frame count."""
    seq_dir, seq_seed, frames, height, width, render_scale, difficulty, domain = task
    cv2.setNumThreads(1)
    seq_dir = Path(seq_dir)
    (seq_dir / "images").mkdir(parents=True, exist_ok=True)
    (seq_dir / "labels").mkdir(parents=True, exist_ok=True)
    for frame, (rgb, label) in enumerate(render_sequence(seq_seed, frames, height, width,
                                                         render_scale, difficulty, domain)):
        name = f"{frame:06d}.png"
        cv2.imwrite(str(seq_dir / "images" / name), rgb[..., ::-1])
        cv2.imwrite(str(seq_dir / "labels" / name), label)
    return frames


def run_tasks(tasks: list[tuple], workers: int, desc: str) -> tuple[int, float]:
    """Render tasks on ``workers`` processes; returns (frames written, seconds)."""
    start = time.perf_counter()
    total = sum(t[2] for t in tasks)
    done = 0
    with tqdm(total=total, desc=desc, unit="frame") as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                done += write_sequence(task)
                bar.update(task[2])
        else:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(var, "1")  # one thread per worker: no oversubscription
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(tasks))) as pool:
                for n in pool.imap_unordered(write_sequence, tasks, chunksize=1):
                    done += n
                    bar.update(n)
    return done, time.perf_counter() - start


def generate_split(root: Path, split: str, count: int, frames: int, height: int, width: int,
                   seed: int = 0, difficulty: float = DEFAULT_DIFFICULTY, render_scale: int = 2,
                   workers: int = 1, domain: str = "default") -> list[Path]:
    """Write ``count`` sequences of ``split`` in the generic layout; returns their folders."""
    dirs = [Path(root) / split / f"{split}_{i:03d}" for i in range(count)]
    tasks = [(d, sequence_seed(seed, split, i), frames, height, width, render_scale, difficulty,
              domain) for i, d in enumerate(dirs)]
    run_tasks(tasks, workers, f"synthetic {split}")
    return dirs


def generate_dataset(root: Path, counts: dict[str, int], frames: int, height: int, width: int,
                     seed: int = 0, difficulty: float = DEFAULT_DIFFICULTY, render_scale: int = 2,
                     workers: int = 1, domain: str = "default") -> dict:
    """All splits (one pool for all sequences) plus ``synthetic.json``; returns the timing."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tasks = [(root / split / f"{split}_{i:03d}", sequence_seed(seed, split, i), frames, height,
              width, render_scale, difficulty, domain)
             for split in SPLITS for i in range(counts.get(split, 0))]
    n, seconds = run_tasks(tasks, workers, "synthetic")
    meta = {"generator": "training.synthetic", "version": VERSION, "seed": seed,
            "frames": frames, "height": height, "width": width, "render_scale": render_scale,
            "difficulty": difficulty, "domain": domain, "fps": FPS,
            "sequences": {s: counts.get(s, 0) for s in SPLITS},
            "train_ids": list(USED_TRAIN_IDS)}
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {"frames": n, "seconds": seconds, "fps": n / max(seconds, 1e-9), "workers": workers}


def write_video(path: Path, frames: int, height: int, width: int, seed: int = 0,
                difficulty: float = DEFAULT_DIFFICULTY, render_scale: int = 2,
                domain: str = "default") -> None:
    """One held-out sequence (its own seed stream) as an mp4 for the node demo."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open video writer for {path}")
    try:
        frames_iter = render_sequence(sequence_seed(seed, "video", 0), frames, height, width,
                                      render_scale, difficulty, domain)
        for rgb, _ in tqdm(frames_iter, total=frames, desc="synthetic video", unit="frame"):
            writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    finally:
        writer.release()
