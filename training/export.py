"""Export a trained run as the node's weights, and prove the file loads and runs.

    python -m training.export --run runs/student_etc --out etc_ros/weights/student_etc.safetensors
    python -m training.export --checkpoint runs/x/last.safetensors --out W.safetensors [--name N]

Training already writes ``best.safetensors`` / ``last.safetensors`` in the node's format
(architecture, classes, palette, normalisation, input size, recipe, validation metrics), so export
re-validates that, optionally names the recipe and stores floats as fp16 (half the size; the node
computes in fp32 on CPU anyway), then loads the result with ``etc_ros.checkpoint.load_model`` and
runs one forward pass so a broken file never ships.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from etc_ros.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    load_model,
    save_checkpoint,
)


def run_checkpoint(run: Path) -> Path:
    """The checkpoint to export from a run folder: best by val mIoU, else the last one."""
    for name in ("best.safetensors", "last.safetensors"):
        if (run / name).is_file():
            return run / name
    raise CheckpointError(f"run {run}: no best.safetensors or last.safetensors (train first)")


def export(src: Path, out: Path, name: str | None = None, half: bool = True) -> CheckpointMeta:
    """Copy ``src`` to ``out`` in the node's format, then load it back and run it once."""
    tensors, meta = load_checkpoint(src)
    if name is not None:
        meta.recipe = {**meta.recipe, "name": name}
    meta.recipe = {**meta.recipe, "exported_from": str(src)}
    save_checkpoint(out, tensors, meta, half=half)
    model, loaded = load_model(out, "cpu")
    h, w = loaded.input_size
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, h, w))
    if logits.shape != (1, loaded.num_classes, h, w) or not torch.isfinite(logits).all():
        raise CheckpointError(f"checkpoint {out}: exported model gives {tuple(logits.shape)} "
                              "logits or non-finite values")
    return loaded


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; a bad run folder or checkpoint prints one line and exits 2."""
    parser = argparse.ArgumentParser(prog="python -m training.export",
                                     description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="training run folder (uses best, else last)")
    src.add_argument("--checkpoint", type=Path, help="a checkpoint written by training.train")
    parser.add_argument("--out", type=Path, required=True, help="where to write the weights")
    parser.add_argument("--name", help="recipe name stored in the metadata (e.g. student_etc)")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 tensors (default fp16)")
    args = parser.parse_args(argv)
    try:
        checkpoint = args.checkpoint or run_checkpoint(args.run)
        meta = export(checkpoint, args.out, args.name, half=not args.fp32)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in meta.metrics.items()
                        if isinstance(v, float))
    print(f"exported {checkpoint} -> {args.out} ({meta.architecture}, "
          f"{meta.input_size[0]}x{meta.input_size[1]}; {metrics or 'no val metrics'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
