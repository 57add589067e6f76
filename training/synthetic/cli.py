"""The command line of ``python -m training.synthetic``: a dataset (``--out``) or one mp4."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from .domains import DOMAINS
from .generate import generate_dataset, write_video
from .scene import DEFAULT_DIFFICULTY


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate, and print frames/s."""
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic",
        description="Procedural street/campus/parking videos with exact Cityscapes labels.")
    parser.add_argument("--out", type=Path, help="dataset root to write")
    parser.add_argument("--train", type=int, default=24, help="training sequences")
    parser.add_argument("--val", type=int, default=4, help="validation sequences")
    parser.add_argument("--test", type=int, default=4, help="test sequences")
    parser.add_argument("--frames", type=int, default=30, help="frames per sequence")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes; the output does not depend on it")
    parser.add_argument("--render-scale", type=int, default=2,
                        help="render at this multiple of the output size, then downsample")
    parser.add_argument("--difficulty", type=float, default=DEFAULT_DIFFICULTY,
                        help="0..1: strength of exposure drift, motion blur, noise and JPEG")
    parser.add_argument("--domain", choices=DOMAINS, default="default",
                        help="the look: default, or shifted (wet autumn dusk in fog through a "
                             "cheap night camera; same places), for measuring adaptation")
    parser.add_argument("--video", type=Path, help="write one sequence as mp4 instead")
    parser.add_argument("--video-frames", type=int, default=100)
    args = parser.parse_args(argv)
    if (args.out is None) == (args.video is None):
        parser.error("give exactly one of --out ROOT or --video FILE.mp4")
    if not 0.0 <= args.difficulty <= 1.0:
        parser.error("--difficulty must lie in [0, 1]")
    if min(args.height, args.width, args.frames, args.video_frames) < 1:
        parser.error("--height, --width, --frames and --video-frames must be positive")
    if min(args.train, args.val, args.test) < 0:
        parser.error("--train, --val and --test must not be negative")
    if not 1 <= args.render_scale <= 4:
        parser.error("--render-scale must be 1..4")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    cv2.setNumThreads(1)
    if args.video is not None:
        write_video(args.video, args.video_frames, args.height, args.width, args.seed,
                    args.difficulty, args.render_scale, args.domain)
        return 0
    counts = {"train": args.train, "val": args.val, "test": args.test}
    stats = generate_dataset(args.out, counts, args.frames, args.height, args.width, args.seed,
                             args.difficulty, args.render_scale, args.workers, args.domain)
    print(f"synthetic: {stats['frames']} frames of {args.height}x{args.width} (render x"
          f"{args.render_scale}) in {stats['seconds']:.1f} s = {stats['fps']:.2f} frames/s "
          f"with {args.workers} worker(s)")
    return 0

