"""sensor_msgs Image/CompressedImage <-> numpy, with cv_bridge's encoding semantics.

The only cv_bridge installable here is a ROS 1 shim that breaks on OpenCV 5 and numpy 2, so we
convert ourselves: zero-copy views where the message layout allows, and every field validated so
that a bad message becomes one short ImageConversionError instead of a crash or garbage.

The converters read message fields by name only, so they accept rclpy messages and the
dataclasses that `rosbags` deserialises alike.
"""

from __future__ import annotations

import array
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from std_msgs.msg import Header


class ImageConversionError(ValueError):
    """A message that cannot be turned into an image; str() is a short one-line reason."""


SUPPORTED_ENCODINGS = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16",
    "yuv422", "uyvy", "yuv422_yuy2", "yuyv", "nv12", "nv21",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
    "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16",
)
BAYER_ORDERS = ("rggb", "bggr", "gbrg", "grbg")

# encoding -> (element dtype, channels, canonical encoding). The OpenCV-style aliases follow
# cv_bridge: 8UC3 is taken as OpenCV's BGR order, 8UC1/16UC1 as mono. ROS's "yuv422" is UYVY
# and "yuv422_yuy2" is YUYV (cv_bridge decodes them with OpenCV's UYVY/YUY2 codes); both are
# 2 bytes per pixel, chroma shared by each pair of pixels. nv12/nv21 are planar: `height` rows
# of Y, then height/2 rows of interleaved UV (VU), all with the same step.
_LAYOUTS: dict[str, tuple[np.dtype, int, str]] = {
    "rgb8": (np.dtype(np.uint8), 3, "rgb8"),
    "bgr8": (np.dtype(np.uint8), 3, "bgr8"),
    "rgba8": (np.dtype(np.uint8), 4, "rgba8"),
    "bgra8": (np.dtype(np.uint8), 4, "bgra8"),
    "mono8": (np.dtype(np.uint8), 1, "mono8"),
    "mono16": (np.dtype(np.uint16), 1, "mono16"),
    "8UC1": (np.dtype(np.uint8), 1, "mono8"),
    "8UC3": (np.dtype(np.uint8), 3, "bgr8"),
    "16UC1": (np.dtype(np.uint16), 1, "mono16"),
    "yuv422": (np.dtype(np.uint8), 2, "uyvy"),
    "uyvy": (np.dtype(np.uint8), 2, "uyvy"),
    "yuv422_yuy2": (np.dtype(np.uint8), 2, "yuyv"),
    "yuyv": (np.dtype(np.uint8), 2, "yuyv"),
    "nv12": (np.dtype(np.uint8), 1, "nv12"),
    "nv21": (np.dtype(np.uint8), 1, "nv21"),
    **{f"bayer_{o}{bits}": (np.dtype(np.uint8 if bits == 8 else np.uint16), 1, f"bayer_{o}")
       for o in BAYER_ORDERS for bits in (8, 16)},
}
_PLANAR = frozenset({"nv12", "nv21"})
_PAIRED = frozenset({"uyvy", "yuyv"})  # 4:2:2: two pixels share one chroma sample

_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "nv12": cv2.COLOR_YUV2RGB_NV12,
    "nv21": cv2.COLOR_YUV2RGB_NV21,
    "bayer_rggb": cv2.COLOR_BayerRGGB2RGB,
    "bayer_bggr": cv2.COLOR_BayerBGGR2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGBRG2RGB,
    "bayer_grbg": cv2.COLOR_BayerGRBG2RGB,
}
_FROM_RGB = {
    "bgr8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGB2RGBA,
    "bgra8": cv2.COLOR_RGB2BGRA,
    "mono8": cv2.COLOR_RGB2GRAY,
    "uyvy": cv2.COLOR_RGB2YUV_UYVY,
    "yuyv": cv2.COLOR_RGB2YUV_YUY2,
}


def _layout(encoding: str) -> tuple[np.dtype, int, str]:
    try:
        return _LAYOUTS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)}"
            ", and 8UC1, 8UC3, 16UC1)"
        ) from None


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"zero width or height ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageConversionError(
            f"image too large ({width}x{height} = {width * height} pixels"
            f" > max_pixels {max_pixels})"
        )


def _check_subsampling(canonical: str, encoding: str, width: int, height: int) -> None:
    """Chroma-subsampled layouts need whole 2-pixel (4:2:2) or 2x2-pixel (4:2:0) blocks."""
    if canonical in _PAIRED and width % 2:
        raise ImageConversionError(f"odd width {width} for {encoding} (4:2:2 needs pixel pairs)")
    if canonical in _PLANAR and (width % 2 or height % 2):
        raise ImageConversionError(
            f"odd width or height ({width}x{height}) for {encoding} (4:2:0 needs even sizes)")


def image_to_numpy(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """Image -> array in the message's own layout and dtype, like cv_bridge's passthrough.

    Shape (H, W) for one channel, (H, W, C) otherwise; nv12/nv21 give OpenCV's (H*3/2, W)
    planar layout. A view on msg.data where possible (row padding becomes a stride); big-endian
    16-bit data is byte-swapped into a native copy.
    """
    dtype, channels, canonical = _layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(width, height, max_pixels)
    _check_subsampling(canonical, msg.encoding, width, height)
    rows = height * 3 // 2 if canonical in _PLANAR else height
    row = width * channels * dtype.itemsize
    if step < row:
        raise ImageConversionError(
            f"step smaller than width*channels*bytes ({step} < {row} for {width}px "
            f"{msg.encoding})"
        )
    if step % dtype.itemsize:
        raise ImageConversionError(
            f"step {step} is not a multiple of the {dtype.itemsize}-byte sample of {msg.encoding}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * rows:
        what = "step*height*3/2" if canonical in _PLANAR else "step*height"
        raise ImageConversionError(f"data shorter than {what} ({buf.size} < {step * rows})")
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    arr = np.ndarray(
        shape=(rows, width, channels),
        dtype=wire,
        buffer=buf,
        strides=(step, channels * dtype.itemsize, dtype.itemsize),
    )
    if not wire.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr[:, :, 0] if channels == 1 else arr


def _check_bits(bits: int) -> None:
    if not 8 <= bits <= 16:
        raise ValueError(f"mono16_bits must be 8..16, got {bits}")


def to_rgb8(arr: np.ndarray, encoding: str, mono16_bits: int = 16) -> np.ndarray:
    """Array in `encoding` layout -> contiguous (H, W, 3) uint8 RGB, the model's input format.

    mono16/16UC1 hold `mono16_bits` significant bits (10 and 12 are common): the top 8 of them
    are kept and larger values saturate, so a 12-bit image uses the full 8-bit range (with 16,
    the high byte, as cv_bridge scales). 16-bit Bayer is demosaiced at 16 bits, then the high
    byte kept. rgb8 input that is already contiguous is returned as is (no copy).
    """
    _check_bits(mono16_bits)
    dtype, channels, canonical = _layout(encoding)
    expected = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if canonical in _PLANAR:
        expected = arr.ndim == 2 and arr.shape[0] % 3 == 0
    if arr.dtype != dtype or not expected:
        raise ImageConversionError(
            f"array {arr.dtype} {arr.shape} does not match encoding {encoding!r}"
        )
    if arr.ndim == 3 and channels == 1:
        arr = arr[:, :, 0]
    height = arr.shape[0] * 2 // 3 if canonical in _PLANAR else arr.shape[0]
    _check_subsampling(canonical, encoding, arr.shape[1], height)
    if canonical == "rgb8":
        return np.ascontiguousarray(arr)
    if canonical == "mono16":
        shift = mono16_bits - 8
        arr = np.minimum(arr >> shift, 255).astype(np.uint8)
        canonical = "mono8"
    if not arr.flags.c_contiguous and canonical not in _PLANAR:
        arr = np.ascontiguousarray(arr)  # OpenCV takes padded rows (strided) but not others
    rgb = cv2.cvtColor(arr, _TO_RGB[canonical])
    if rgb.dtype == np.uint16:  # 16-bit Bayer
        rgb = (rgb >> 8).astype(np.uint8)
    return rgb


def _jpeg_dims(data: memoryview) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF segment without decoding, or None if not found."""
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return width, height
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _compressed_dims(data: memoryview) -> tuple[str, tuple[int, int] | None]:
    """Sniff the container: ("png"|"jpeg", header dims or None). Raises if it is neither."""
    if bytes(data[:8]) == _PNG_MAGIC and len(data) >= 24:
        width = int.from_bytes(bytes(data[16:20]), "big")
        height = int.from_bytes(bytes(data[20:24]), "big")
        return "png", (width, height)
    if bytes(data[:2]) == b"\xff\xd8":
        return "jpeg", _jpeg_dims(data)
    raise ImageConversionError(f"data is neither JPEG nor PNG ({len(data)} bytes)")


def compressed_to_numpy(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """CompressedImage (jpeg/png, any image_transport format string) -> (H, W, 3) uint8 RGB.

    The header's dimensions are checked against max_pixels before decoding, so a tiny file that
    claims a huge image is refused without allocating it.
    """
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt or (fmt and not any(k in fmt for k in ("jpeg", "jpg", "png"))):
        raise ImageConversionError(f"unsupported compressed format {msg.format!r} (jpeg or png)")
    data = memoryview(np.frombuffer(msg.data, dtype=np.uint8))
    if len(data) == 0:
        raise ImageConversionError("empty compressed data")
    kind, dims = _compressed_dims(data)
    if dims is not None:
        _check_size(*dims, max_pixels)
    bgr = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f"corrupt {kind} data ({len(data)} bytes)")
    _check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def msg_to_rgb8(msg: Image | CompressedImage, max_pixels: int | None = None,
                mono16_bits: int = 16) -> np.ndarray:
    """Either message type -> (H, W, 3) uint8 RGB: the one call the node and sources need."""
    if hasattr(msg, "format"):
        return compressed_to_numpy(msg, max_pixels)
    return to_rgb8(image_to_numpy(msg, max_pixels), msg.encoding, mono16_bits)


def _byte_array(arr: np.ndarray) -> array.array:
    # rclpy's uint8[] setter takes an array.array('B') as is; anything else is checked per element.
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out


def numpy_to_image(arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Array -> Image like cv_bridge's cv2_to_imgmsg: layout taken as is, no colour conversion.

    `arr` must already match `encoding` (dtype and channels; nv12/nv21 as OpenCV's (H*3/2, W)
    planar array); step is packed (no padding).
    """
    from sensor_msgs.msg import Image

    dtype, channels, canonical = _layout(encoding)
    expected = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if canonical in _PLANAR:
        expected = arr.ndim == 2 and arr.shape[0] % 3 == 0
    if arr.dtype.newbyteorder("=") != dtype or not expected:
        raise ImageConversionError(
            f"array {arr.dtype} {arr.shape} does not match encoding {encoding!r}"
        )
    height = arr.shape[0] * 2 // 3 if canonical in _PLANAR else arr.shape[0]
    _check_size(arr.shape[1], height, None)
    _check_subsampling(canonical, encoding, arr.shape[1], height)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(arr.dtype.byteorder == ">")
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = _byte_array(arr)
    return msg


def _mosaic(rgb: np.ndarray, order: str) -> np.ndarray:
    """RGB -> one-channel Bayer mosaic; `order` names the 2x2 tile row by row, e.g. 'rggb'."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for i, colour in enumerate(order):
        out[i // 2::2, i % 2::2] = rgb[i // 2::2, i % 2::2, "rgb".index(colour)]
    return out


def _nv(rgb: np.ndarray, vu: bool) -> np.ndarray:
    """RGB -> (H*3/2, W) NV12 (UV) or NV21 (VU), from OpenCV's own I420 conversion."""
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    u = i420[h:].reshape(-1)[: h * w // 4]
    v = i420[h:].reshape(-1)[h * w // 4:]
    uv = np.stack([v, u] if vu else [u, v], axis=-1).reshape(h // 2, w)
    return np.concatenate([i420[:h], uv])


def rgb8_to_image(rgb: np.ndarray, encoding: str = "rgb8", header: Header | None = None) -> Image:
    """RGB uint8 -> Image in any supported encoding: for tests, replay and camera simulation.

    16-bit outputs (mono16, bayer_*16) use the full range (value * 257); YUV conversions are
    OpenCV's (BT.601, as cv_bridge decodes them).
    """
    _, _, canonical = _layout(encoding)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    _check_subsampling(canonical, encoding, rgb.shape[1], rgb.shape[0])
    rgb = np.ascontiguousarray(rgb)
    if canonical == "rgb8":
        out = rgb
    elif canonical == "mono16":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    elif canonical in _PLANAR:
        out = _nv(rgb, vu=canonical == "nv21")
    elif canonical.startswith("bayer_"):
        out = _mosaic(rgb, canonical[len("bayer_"):])
        if encoding.endswith("16"):
            out = out.astype(np.uint16) * 257
    else:
        out = cv2.cvtColor(rgb, _FROM_RGB[canonical])
    return numpy_to_image(out, encoding, header)


def encode_compressed(
    rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None, quality: int = 90
) -> CompressedImage:
    """RGB uint8 -> CompressedImage with the format string compressed_image_transport writes."""
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"unsupported compressed format {fmt!r} (jpeg or png)")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    params: list[Any] = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png",
                           cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = _byte_array(buf)
    return msg


def image_transport_base(topic: str) -> str:
    """The image_transport base topic: '/cam/image_raw/compressed' -> '/cam/image_raw'."""
    if not topic or topic.endswith("/"):
        raise ValueError(f"invalid image topic {topic!r}")
    if topic.endswith("/compressed") and len(topic) > len("/compressed"):
        return topic[: -len("/compressed")]
    return topic


def output_namespace(topic: str) -> str:
    """Where a camera's outputs go: the base topic's namespace + '/segmentation'.

    '/cam/image_raw' -> '/cam/segmentation'; '/image_raw' -> '/segmentation';
    a relative 'image_raw' -> 'segmentation' (resolved against the node's namespace).
    """
    base = image_transport_base(topic)
    ns, sep, _ = base.rpartition("/")
    return f"{ns}/segmentation" if sep else "segmentation"


def camera_info_topic(topic: str) -> str:
    """The image_transport camera_info beside an image topic: '/cam/image_raw' and
    '/cam/image_raw/compressed' -> '/cam/camera_info'; relative names stay relative."""
    ns, sep, _ = image_transport_base(topic).rpartition("/")
    return f"{ns}/camera_info" if sep else "camera_info"


def scale_camera_info(info: CameraInfo, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                      header: Header) -> CameraInfo:
    """The CameraInfo of an image resized from src_hw to dst_hw (height, width), with `header`.

    Pixel centres map as OpenCV's resize maps them, x' = sx (x + 0.5) - 0.5 (sx = dst/src
    width), so K' = A K and P' = A P with A = [[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2],
    [0, 0, 1]]: a point projected with K' lands on the resized pixel of the point projected
    with K. The ROI scales with the image; distortion (in normalised coordinates), R and binning
    are unchanged. width/height become dst_hw when the info described the source image.
    """
    from sensor_msgs.msg import CameraInfo

    (src_h, src_w), (dst_h, dst_w) = src_hw, dst_hw
    sx, sy = dst_w / src_w, dst_h / src_h
    a = np.array([[sx, 0.0, (sx - 1.0) / 2.0], [0.0, sy, (sy - 1.0) / 2.0], [0.0, 0.0, 1.0]])
    out = CameraInfo(header=header, distortion_model=info.distortion_model, d=list(info.d),
                     r=list(info.r), binning_x=info.binning_x, binning_y=info.binning_y)
    out.k = (a @ np.asarray(info.k, np.float64).reshape(3, 3)).ravel().tolist()
    out.p = (a @ np.asarray(info.p, np.float64).reshape(3, 4)).ravel().tolist()
    if (info.width, info.height) in ((src_w, src_h), (0, 0)):
        out.width, out.height = dst_w, dst_h
    else:  # the info describes a larger sensor the image is a ROI or binning of
        out.width, out.height = round(info.width * sx), round(info.height * sy)
    roi = info.roi
    out.roi.x_offset, out.roi.width = round(roi.x_offset * sx), round(roi.width * sx)
    out.roi.y_offset, out.roi.height = round(roi.y_offset * sy), round(roi.height * sy)
    out.roi.do_rectify = roi.do_rectify
    return out
