"""safetensors checkpoint -> ONNX model that runs the node's whole inference on ONNX Runtime.

The graph takes what the node has (uint8 RGB, NHWC, at the model input size, any batch) and
gives what it publishes (class ids and max-softmax confidence), so the runtime does no
normalisation, transposes or argmax of its own. The checkpoint's metadata travels in the
model's metadata props, so a `.onnx` file is a checkpoint like a `.safetensors` one.

    python -m etc_ros.export_onnx --model M.safetensors --out M.onnx
    python -m etc_ros.export_onnx --model M.safetensors --out M_int8.onnx --int8 --calibration DIR

Every export is checked: ONNX Runtime must give the labels torch gives on a few frames (pixel
agreement printed, below MIN_AGREEMENT the export fails). For int8 the comparison is against
the fp32 torch model and the threshold is MIN_AGREEMENT_INT8.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

# The I/O contract and the hash live with the runtime (OrtBackend), which needs no torch.
from etc_ros.backends import INPUT_NAME, ONNX_KEY, OUTPUTS, file_sha256
from etc_ros.checkpoint import METADATA_KEY, CheckpointError, CheckpointMeta, load_model
from etc_ros.cli import EXIT_USAGE, Parser, fail

ONNX_FORMAT = 1
OPSET = 17
MIN_AGREEMENT = 0.999
MIN_AGREEMENT_INT8 = 0.98
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


class ExportError(RuntimeError):
    """The export could not be made or failed its check; one line."""


class _Deployed(nn.Module):
    """uint8 NHWC -> (labels, confidence): normalisation and argmax folded around the network."""

    def __init__(self, model: nn.Module, meta: CheckpointMeta) -> None:
        super().__init__()
        self.model = model
        std = torch.tensor(meta.std, dtype=torch.float32)
        mean = torch.tensor(meta.mean, dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
        self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1))
        self.label_dtype = torch.uint8 if meta.num_classes <= 255 else torch.int32

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.permute(0, 3, 1, 2).float() * self.scale + self.shift
        logits = self.model(x)
        top, labels = logits.max(dim=1)
        # max softmax = exp(max logit - logsumexp): no full softmax tensor.
        confidence = torch.exp(top - torch.logsumexp(logits, dim=1))
        return labels.to(self.label_dtype), confidence


class _FixedAdaptiveAvgPool(nn.Module):
    """AdaptiveAvgPool2d as two matmuls with averaging matrices built from the traced shape.

    The legacy exporter only handles output sizes that divide the input (PSPNet's 3x3 and 6x6
    bins on a 16x32 map do not); the input size is fixed in the graph, so this is exact.
    """

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        size = output_size if isinstance(output_size, tuple) else (output_size, output_size)
        self.output_size = size

    @staticmethod
    def _matrix(out: int, n: int) -> torch.Tensor:
        m = torch.zeros(out, n)
        for i in range(out):
            lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        rows = self._matrix(self.output_size[0], h).to(x.dtype)
        cols = self._matrix(self.output_size[1], w).to(x.dtype).t()
        return torch.matmul(torch.matmul(rows, x), cols)


def _exportable(model: nn.Module) -> nn.Module:
    """Swap modules the legacy exporter cannot express for exact equivalents (in place)."""
    for name, module in list(model.named_children()):
        if isinstance(module, nn.AdaptiveAvgPool2d):
            setattr(model, name, _FixedAdaptiveAvgPool(module.output_size))
        else:
            _exportable(module)
    return model


def export(model_path: Path, out: Path, verify_frames: int = 4,
           log: callable = print) -> CheckpointMeta:
    """Export an fp32 ONNX model of a checkpoint and check it against torch on a few frames."""
    model, meta = load_model(model_path, "cpu")
    model = model.float().eval()
    wrapped = _Deployed(_exportable(model), meta).eval()
    h, w = meta.input_size
    example = torch.zeros((1, h, w, 3), dtype=torch.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, which needs
            # onnxscript; tracing warnings are about shape checks that are constant here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=list(OUTPUTS),
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUTS[0]: {0: "batch"},
                              OUTPUTS[1]: {0: "batch"}})
        _write_metadata(tmp, meta, {"format": ONNX_FORMAT, "precision": "fp32",
                                    "source": model_path.name,
                                    "source_sha256": file_sha256(model_path)})
        agreement = verify(wrapped, tmp, _noise_and_clip_frames(verify_frames, (h, w)))
        log(f"export_onnx: {out}: ONNX Runtime vs torch pixel agreement "
            f"{100 * agreement:.3f} % on {verify_frames} frames")
        if agreement < MIN_AGREEMENT:
            raise ExportError(f"ONNX Runtime labels agree with torch on only "
                              f"{100 * agreement:.3f} % of pixels (< {100 * MIN_AGREEMENT:g} %)")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def export_int8(model_path: Path, out: Path, calibration: Path, max_images: int = 64,
                log: callable = print, min_agreement: float = MIN_AGREEMENT_INT8) -> float:
    """Static QDQ int8 (per-channel weights) calibrated on images; returns agreement vs torch.

    Only convolutions are quantised: the folded pre/post-processing (cast,
    normalise, argmax, softmax max) stays fp32, as do the head's upsample and activations.
    Activation ranges are the 99.999th percentile of the calibration histogram (min/max lets a
    few outlier activations waste the 8 bits: 97.8 % vs 98.3 % agreement on the student).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = sorted(p for p in calibration.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ExportError(f"calibration folder {calibration}: no images "
                          f"({', '.join(IMAGE_SUFFIXES)})")
    images = images[:: max(1, len(images) // max_images)][:max_images]
    with tempfile.TemporaryDirectory(prefix="etc_ros_int8_") as tmpdir:
        fp32 = Path(tmpdir) / "fp32.onnx"
        meta = export(model_path, fp32, log=log)
        h, w = meta.input_size
        frames = [f for f in (_load_rgb(p, (h, w)) for p in images) if f is not None]
        if not frames:
            raise ExportError(f"calibration folder {calibration}: no colour images")

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(tqdm(frames, desc="int8 calibration", unit="image"))

            def get_next(self) -> dict[str, np.ndarray] | None:
                frame = next(self._it, None)
                return None if frame is None else {INPUT_NAME: frame[None]}

        prepared = Path(tmpdir) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmpdir) / "int8.onnx"
        quantize_static(
            str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"],
            calibrate_method=CalibrationMethod.Percentile)
        _write_metadata(quantized, meta, {"format": ONNX_FORMAT, "precision": "int8",
                                          "source": model_path.name,
                                          "source_sha256": file_sha256(model_path),
                                          "calibration_images": len(frames)})
        model, _ = load_model(model_path, "cpu")
        reference = _Deployed(model.float().eval(), meta).eval()
        agreement = verify(reference, quantized, frames[:8])
        log(f"export_onnx: {out}: int8 vs fp32 torch pixel agreement {100 * agreement:.2f} % "
            f"on {min(8, len(frames))} calibration frames")
        if agreement < min_agreement:
            raise ExportError(f"int8 labels agree with fp32 on only {100 * agreement:.2f} % of "
                              f"pixels (< {100 * min_agreement:g} %)")
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(quantized, out) if quantized.stat().st_dev == out.parent.stat().st_dev \
            else out.write_bytes(quantized.read_bytes())
    return agreement


def verify(reference: nn.Module, onnx_path: Path, frames: list[np.ndarray]) -> float:
    """Share of pixels where ONNX Runtime's labels equal the torch reference's."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.stack(frames)
    labels = session.run([OUTPUTS[0]], {INPUT_NAME: batch})[0]
    with torch.inference_mode():
        expected = reference(torch.from_numpy(batch))[0].numpy()
    return float((labels.astype(np.int64) == expected.astype(np.int64)).mean())


def _write_metadata(path: Path, meta: CheckpointMeta, onnx_info: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in ((METADATA_KEY, json.dumps(asdict(meta))),
                       (ONNX_KEY, json.dumps(onnx_info))):
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "etc_ros.export_onnx"
    onnx.save(model, str(path))


def _load_rgb(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """A calibration frame at the model input size; None for single-channel files (label maps
    of a dataset folder)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise ExportError(f"calibration image {path}: cannot be read")
    if bgr.ndim != 3 or bgr.shape[2] not in (3, 4):
        return None
    bgr = bgr[:, :, :3]
    if bgr.dtype != np.uint8:
        bgr = (bgr >> 8).astype(np.uint8) if bgr.dtype == np.uint16 else bgr.astype(np.uint8)
    h, w = size
    interp = cv2.INTER_AREA if bgr.shape[0] > h else cv2.INTER_LINEAR
    return cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=interp), cv2.COLOR_BGR2RGB)


def _noise_and_clip_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Frames for the export check: smooth random fields (labels vary, like a street scene)."""
    h, w = size
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        frames.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    return frames


def main(argv: list[str] | None = None) -> int:
    """Console script `export_onnx`; one line and exit 2 (bad model/options) or 1 (export)."""
    parser = Parser("export_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="etc_ros .safetensors file")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--int8", action="store_true",
                        help="static QDQ int8 quantisation, per-channel weights")
    parser.add_argument("--calibration", type=Path,
                        help="folder of images for int8 calibration (searched recursively)")
    parser.add_argument("--max-calibration-images", type=int, default=64)
    parser.add_argument("--min-agreement", type=float, default=100 * MIN_AGREEMENT_INT8,
                        metavar="PCT", help="int8: refuse below this pixel agreement with fp32 "
                        f"(default {100 * MIN_AGREEMENT_INT8:g}; 0 to measure what int8 costs)")
    args = parser.parse_args(argv)
    if args.int8 and (args.calibration is None or not args.calibration.is_dir()):
        parser.error("--int8 needs --calibration DIR, an existing folder of images")
    try:
        if args.int8:
            export_int8(args.model, args.out, args.calibration, args.max_calibration_images,
                        min_agreement=args.min_agreement / 100)
        else:
            export(args.model, args.out)
    except CheckpointError as exc:
        return fail("export_onnx", exc, EXIT_USAGE)
    except (ExportError, OSError) as exc:
        return fail("export_onnx", exc)
    print(f"export_onnx: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
