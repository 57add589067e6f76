"""image_io: every encoding both ways, padded rows, byte order, every bad field, compressed data."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from etc_ros import image_io
from etc_ros.image_io import ImageConversionError

ALL_ENCODINGS = image_io.SUPPORTED_ENCODINGS + ("8UC1", "8UC3", "16UC1")
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1,
            "8UC1": 1, "8UC3": 3, "16UC1": 1, "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2,
            "yuyv": 2, "nv12": 1, "nv21": 1,
            **{f"bayer_{o}{b}": 1 for o in image_io.BAYER_ORDERS for b in (8, 16)}}
SIXTEEN_BIT = {"mono16", "16UC1", *(f"bayer_{o}16" for o in image_io.BAYER_ORDERS)}


def _rgb(h: int = 6, w: int = 9, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pattern(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth colour pattern (gradients in three directions): a real image, not noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([40 + 3 * x, 30 + 4 * y, 230 - 1.5 * x - 1.5 * y], -1).clip(
        0, 255).astype(np.uint8)


def _native(encoding: str, h: int = 6, w: int = 10) -> np.ndarray:
    rng = np.random.default_rng(1)
    dtype = np.uint16 if encoding in SIXTEEN_BIT else np.uint8
    if encoding in ("nv12", "nv21"):
        shape: tuple[int, ...] = (h * 3 // 2, w)
    else:
        shape = (h, w) if CHANNELS[encoding] == 1 else (h, w, CHANNELS[encoding])
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _raw(encoding: str, data: bytes, h: int, w: int, step: int, big: bool = False) -> Image:
    msg = Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=int(big))
    msg.data = array.array("B", data)
    return msg


def test_every_encoding_is_covered() -> None:
    assert set(CHANNELS) == set(ALL_ENCODINGS)


@pytest.mark.parametrize("encoding", ALL_ENCODINGS)
def test_round_trip_every_encoding(encoding: str) -> None:
    arr = _native(encoding)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = image_io.numpy_to_image(arr, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (6, 10, encoding)
    assert msg.step == 10 * CHANNELS[encoding] * arr.dtype.itemsize
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    back = image_io.image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # packed layout: a view on the message buffer, not a copy
    assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))


def _yuv422(rgb: np.ndarray, code: int) -> np.ndarray:
    return cv2.cvtColor(rgb, code)


def _nv(rgb: np.ndarray, vu: bool) -> np.ndarray:
    """NV12/NV21 built by hand from OpenCV's I420 planes (OpenCV has no RGB->NV12 code)."""
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    u = i420[h:h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4:].reshape(h // 2, w // 2)
    uv = np.empty((h // 2, w), np.uint8)
    uv[:, 0::2], uv[:, 1::2] = (v, u) if vu else (u, v)
    return np.vstack([i420[:h], uv])


def _bayer(rgb: np.ndarray, order: str) -> np.ndarray:
    """Sample the colour named by `order` (2x2 tile, row by row) at each pixel."""
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            c = "rgb".index(order[2 * dy + dx])
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, c]
    return mosaic


_BAYER_CODES = {"rggb": cv2.COLOR_BayerRGGB2RGB, "bggr": cv2.COLOR_BayerBGGR2RGB,
                "gbrg": cv2.COLOR_BayerGBRG2RGB, "grbg": cv2.COLOR_BayerGRBG2RGB}


def _camera_frames(rgb: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """encoding -> (native array a camera would send, OpenCV's own decode, max error vs rgb).

    The tolerance is what chroma subsampling / demosaicing costs on the smooth pattern; it is
    far below what a swapped byte order or Bayer phase gives (checked below).
    """
    out: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for enc in ("yuv422", "uyvy"):
        native = _yuv422(rgb, cv2.COLOR_RGB2YUV_UYVY)
        out[enc] = (native, cv2.cvtColor(native, cv2.COLOR_YUV2RGB_UYVY), 4)
    for enc in ("yuv422_yuy2", "yuyv"):
        native = _yuv422(rgb, cv2.COLOR_RGB2YUV_YUY2)
        out[enc] = (native, cv2.cvtColor(native, cv2.COLOR_YUV2RGB_YUY2), 4)
    for enc, vu in (("nv12", False), ("nv21", True)):
        native = _nv(rgb, vu)
        code = cv2.COLOR_YUV2RGB_NV21 if vu else cv2.COLOR_YUV2RGB_NV12
        out[enc] = (native, cv2.cvtColor(native, code), 8)
    for order, code in _BAYER_CODES.items():
        mosaic = _bayer(rgb, order)
        out[f"bayer_{order}8"] = (mosaic, cv2.cvtColor(mosaic, code), 4)
        wide = mosaic.astype(np.uint16) * 257 + 100  # low byte noise must not matter
        out[f"bayer_{order}16"] = (wide, (cv2.cvtColor(wide, code) >> 8).astype(np.uint8), 4)
    return out


@pytest.mark.parametrize("encoding", sorted(set(CHANNELS) - {
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3", "16UC1"}))
def test_camera_encodings_match_opencv_on_a_real_pattern(encoding: str) -> None:
    rgb = _pattern()
    native, opencv, tolerance = _camera_frames(rgb)[encoding]
    msg = image_io.numpy_to_image(native, encoding)
    ours = image_io.msg_to_rgb8(msg)
    assert ours.shape == rgb.shape and ours.dtype == np.uint8 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, opencv)
    # and the picture is the camera's picture (border pixels of a mosaic are extrapolated)
    err = np.abs(ours.astype(int) - rgb)[2:-2, 2:-2]
    assert err.max() <= tolerance, (encoding, err.max())
    # the camera-simulation encoder gives the same message bytes as the hand-made frame
    if not encoding.endswith("16"):
        assert bytes(image_io.rgb8_to_image(rgb, encoding).data) == bytes(msg.data)


@pytest.mark.parametrize(("encoding", "wrong"), [
    ("yuv422", "yuv422_yuy2"), ("nv12", "nv21"), ("bayer_rggb8", "bayer_bggr8"),
    ("bayer_gbrg8", "bayer_grbg8"), ("bayer_rggb16", "bayer_gbrg16")])
def test_a_wrong_layout_gives_a_wrong_picture(encoding: str, wrong: str) -> None:
    """The tolerance above can tell layouts apart: the check can fail."""
    rgb = _pattern()
    msg = image_io.numpy_to_image(_camera_frames(rgb)[encoding][0], encoding)
    msg.encoding = wrong
    err = np.abs(image_io.msg_to_rgb8(msg).astype(int) - rgb)[2:-2, 2:-2]
    assert err.max() > 20, (encoding, wrong, err.max())


def test_padded_rows_of_camera_encodings() -> None:
    rgb = _pattern(8, 12)
    for encoding in ("yuyv", "nv21", "bayer_grbg8", "bayer_grbg16"):
        native, opencv, _ = _camera_frames(rgb)[encoding]
        row = native.reshape(native.shape[0], -1).view(np.uint8)
        padded = np.full((row.shape[0], row.shape[1] + 6), 0xEE, np.uint8)
        padded[:, :row.shape[1]] = row
        msg = _raw(encoding, padded.tobytes(), 8, 12, padded.shape[1])
        np.testing.assert_array_equal(image_io.msg_to_rgb8(msg), opencv, err_msg=encoding)


def test_big_endian_bayer16() -> None:
    native, opencv, _ = _camera_frames(_pattern(8, 12))["bayer_rggb16"]
    msg = _raw("bayer_rggb16", native.astype(">u2").tobytes(), 8, 12, 24, big=True)
    np.testing.assert_array_equal(image_io.msg_to_rgb8(msg), opencv)


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_mono16_bits_scale_significant_bits_to_8(bits: int) -> None:
    top = (1 << bits) - 1
    vals = np.array([[0, top // 2, top, 1 << (bits - 8)], [min(top + 1, 65535), 65535, 3, 255]],
                    np.uint16)
    for encoding in ("mono16", "16UC1"):
        out = image_io.msg_to_rgb8(image_io.numpy_to_image(vals, encoding), mono16_bits=bits)
        assert (out[..., 0] == out[..., 2]).all()
        got = out[..., 0].astype(int)
        assert got[0, 0] == 0 and got[0, 2] == 255 and got[0, 3] == 1
        assert got[0, 1] == 127  # half scale is mid-grey whatever the depth
        assert got[1, 1] == 255  # beyond the significant bits: saturated
        np.testing.assert_array_equal(got, np.minimum(vals.astype(int) >> (bits - 8), 255))


def test_twelve_bit_mono_is_not_dark() -> None:
    """A 12-bit camera's full-scale image read with mono16_bits=12 uses the whole 8-bit range."""
    twelve = np.linspace(0, 4095, 64 * 48).reshape(48, 64).astype(np.uint16)
    msg = image_io.numpy_to_image(twelve, "mono16")
    assert image_io.msg_to_rgb8(msg).max() <= 16  # read as 16-bit: nearly black (the old bug)
    assert image_io.msg_to_rgb8(msg, mono16_bits=12).max() == 255
    with pytest.raises(ValueError, match="mono16_bits must be 8..16"):
        image_io.msg_to_rgb8(msg, mono16_bits=7)


def test_to_rgb8_colour_orders() -> None:
    rgb = _rgb()
    for encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3"):
        msg = image_io.rgb8_to_image(rgb, encoding)
        np.testing.assert_array_equal(image_io.msg_to_rgb8(msg), rgb, err_msg=encoding)
    bgr = image_io.image_to_numpy(image_io.rgb8_to_image(rgb, "bgr8"))
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    rgba = image_io.image_to_numpy(image_io.rgb8_to_image(rgb, "rgba8"))
    np.testing.assert_array_equal(rgba[:, :, :3], rgb)
    assert (rgba[:, :, 3] == 255).all()


def test_mono_to_rgb8() -> None:
    mono = np.arange(54, dtype=np.uint8).reshape(6, 9)
    out = image_io.msg_to_rgb8(image_io.numpy_to_image(mono, "mono8"))
    assert out.shape == (6, 9, 3) and all((out[:, :, c] == mono).all() for c in range(3))
    wide = (mono.astype(np.uint16) << 8) | 0xAB
    out16 = image_io.msg_to_rgb8(image_io.numpy_to_image(wide, "mono16"))
    np.testing.assert_array_equal(out16[:, :, 1], mono)  # high byte kept


def test_padded_step_is_a_strided_view() -> None:
    rgb = _rgb(4, 5)
    step = 5 * 3 + 7
    padded = np.full((4, step), 0xEE, np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    msg = _raw("rgb8", padded.tobytes(), 4, 5, step)
    arr = image_io.image_to_numpy(msg)
    np.testing.assert_array_equal(arr, rgb)
    assert arr.strides[0] == step
    assert np.shares_memory(arr, np.frombuffer(msg.data, np.uint8))
    out = image_io.msg_to_rgb8(msg)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_padded_mono16() -> None:
    vals = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    padded = np.zeros((3, 6), np.uint16)
    padded[:, :4] = vals
    arr = image_io.image_to_numpy(_raw("mono16", padded.astype("<u2").tobytes(), 3, 4, 12))
    np.testing.assert_array_equal(arr, vals)


def test_big_endian_mono16() -> None:
    vals = np.array([[1, 256, 0x1234], [0xFFFF, 0x8001, 7]], dtype=np.uint16)
    msg = _raw("mono16", vals.astype(">u2").tobytes(), 2, 3, 6, big=True)
    arr = image_io.image_to_numpy(msg)
    assert arr.dtype.isnative
    np.testing.assert_array_equal(arr, vals)
    # the same bytes read as little-endian are different numbers: the flag matters
    msg.is_bigendian = 0
    assert not np.array_equal(image_io.image_to_numpy(msg), vals)
    # and numpy_to_image of a big-endian array sets the flag
    out = image_io.numpy_to_image(vals.astype(">u2"), "mono16")
    assert out.is_bigendian == 1
    np.testing.assert_array_equal(image_io.image_to_numpy(out), vals)


@pytest.mark.parametrize(
    ("encoding", "h", "w", "step", "size", "reason"),
    [
        ("rgb8", 4, 5, 15, 10, "data shorter than step*height (10 < 60)"),
        ("rgb8", 4, 5, 14, 60, "step smaller than width*channels*bytes (14 < 15"),
        ("mono16", 4, 5, 5, 60, "step smaller than width*channels*bytes (5 < 10"),
        ("rgb8", 0, 5, 15, 0, "zero width or height (5x0)"),
        ("rgb8", 4, 0, 0, 0, "zero width or height (0x4)"),
        ("yuv_weird", 4, 5, 10, 40, "unsupported encoding 'yuv_weird'"),
        ("yuv422", 4, 5, 10, 40, "odd width 5 for yuv422 (4:2:2 needs pixel pairs)"),
        ("yuyv", 4, 4, 7, 40, "step smaller than width*channels*bytes (7 < 8"),
        ("uyvy", 4, 4, 8, 31, "data shorter than step*height (31 < 32)"),
        ("nv12", 4, 5, 5, 30, "odd width or height (5x4) for nv12"),
        ("nv21", 3, 4, 4, 30, "odd width or height (4x3) for nv21"),
        ("nv12", 4, 4, 4, 23, "data shorter than step*height*3/2 (23 < 24)"),
        ("nv21", 4, 4, 3, 24, "step smaller than width*channels*bytes (3 < 4"),
        ("bayer_rggb8", 4, 4, 3, 16, "step smaller than width*channels*bytes (3 < 4"),
        ("bayer_bggr16", 4, 4, 9, 36, "step 9 is not a multiple of the 2-byte sample"),
        ("bayer_gbrg16", 4, 4, 8, 31, "data shorter than step*height (31 < 32)"),
        ("mono16", 2, 2, 5, 10, "step 5 is not a multiple of the 2-byte sample"),
        ("32FC1", 4, 5, 20, 80, "unsupported encoding '32FC1'"),
    ],
)
def test_bad_image_fields(encoding: str, h: int, w: int, step: int, size: int,
                          reason: str) -> None:
    msg = _raw(encoding, bytes(size), h, w, step)
    with pytest.raises(ImageConversionError) as err:
        image_io.msg_to_rgb8(msg)
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


def test_max_pixels() -> None:
    msg = image_io.rgb8_to_image(_rgb(10, 10))
    assert image_io.image_to_numpy(msg, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ImageConversionError, match=r"image too large \(10x10 = 100 pixels > "
                                                   r"max_pixels 99\)"):
        image_io.image_to_numpy(msg, max_pixels=99)
    comp = image_io.encode_compressed(_rgb(10, 10), "png")
    with pytest.raises(ImageConversionError, match="image too large"):
        image_io.compressed_to_numpy(comp, max_pixels=99)


def test_array_encoding_mismatch() -> None:
    with pytest.raises(ImageConversionError, match="does not match encoding 'mono16'"):
        image_io.numpy_to_image(np.zeros((2, 2), np.uint8), "mono16")
    with pytest.raises(ImageConversionError, match="does not match encoding 'rgb8'"):
        image_io.to_rgb8(np.zeros((2, 2, 4), np.uint8), "rgb8")


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt: str) -> None:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:24] = (200, 30, 10)
    rgb[24:] = (10, 40, 220)
    header = Header(frame_id="front")
    msg = image_io.encode_compressed(rgb, fmt, header)
    assert isinstance(msg, CompressedImage)
    assert msg.format == f"rgb8; {fmt} compressed bgr8" and msg.header.frame_id == "front"
    out = image_io.msg_to_rgb8(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb)
    if fmt == "png":
        assert err.max() == 0
    else:  # lossy, chroma subsampled across the colour edge: check the flat areas only
        assert err[:16].max() <= 4 and err[32:].max() <= 4


@pytest.mark.parametrize("fmt", ["jpeg", "png", "", "rgb8; jpeg compressed bgr8"])
def test_compressed_format_strings_accepted(fmt: str) -> None:
    rgb = _rgb(8, 8)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", buf.tobytes())
    # the container is sniffed, so a PNG labelled jpeg still decodes correctly
    np.testing.assert_array_equal(image_io.compressed_to_numpy(msg), rgb)


def test_jpeg_header_dims_read_without_decoding() -> None:
    msg = image_io.encode_compressed(np.zeros((30, 50, 3), np.uint8), "jpeg")
    kind, dims = image_io._compressed_dims(memoryview(np.frombuffer(msg.data, np.uint8)))
    assert (kind, dims) == ("jpeg", (50, 30))
    with pytest.raises(ImageConversionError, match=r"50x30 = 1500 pixels > max_pixels 1499"):
        image_io.compressed_to_numpy(msg, max_pixels=1499)


def test_corrupt_compressed() -> None:
    good = bytes(image_io.encode_compressed(_rgb(32, 32), "jpeg").data)
    cases = {
        "corrupt jpeg": good[:40] + bytes(200),           # valid magic, garbage after
        "neither JPEG nor PNG": b"GIF89a" + bytes(50),
        "empty compressed data": b"",
    }
    for reason, data in cases.items():
        msg = CompressedImage(format="jpeg")
        msg.data = array.array("B", data)
        with pytest.raises(ImageConversionError, match=reason):
            image_io.msg_to_rgb8(msg)
    msg = CompressedImage(format="16UC1; compressedDepth")
    msg.data = array.array("B", good)
    with pytest.raises(ImageConversionError, match="unsupported compressed format"):
        image_io.msg_to_rgb8(msg)


def test_rosbags_messages_convert_too() -> None:
    """Sources hand rosbags dataclasses (numpy data) to the same converters."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    msg = image_io.rgb8_to_image(_rgb(), "bgr8")
    ros = ts.deserialize_cdr(
        ts.serialize_cdr(
            ts.types["sensor_msgs/msg/Image"](
                header=ts.types["std_msgs/msg/Header"](
                    stamp=ts.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="x"),
                height=msg.height, width=msg.width, encoding=msg.encoding,
                is_bigendian=msg.is_bigendian, step=msg.step,
                data=np.frombuffer(msg.data, np.uint8)),
            "sensor_msgs/msg/Image"),
        "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_io.msg_to_rgb8(ros), _rgb())


@pytest.mark.parametrize(
    ("topic", "base", "ns"),
    [
        ("/cam/image_raw", "/cam/image_raw", "/cam/segmentation"),
        ("/cam/image_raw/compressed", "/cam/image_raw", "/cam/segmentation"),
        ("/robot/front/image", "/robot/front/image", "/robot/front/segmentation"),
        ("/image_raw", "/image_raw", "/segmentation"),
        ("/image_raw/compressed", "/image_raw", "/segmentation"),
        ("image_raw", "image_raw", "segmentation"),
        ("cam/image_raw/compressed", "cam/image_raw", "cam/segmentation"),
    ],
)
def test_topic_rules(topic: str, base: str, ns: str) -> None:
    assert image_io.image_transport_base(topic) == base
    assert image_io.output_namespace(topic) == ns


def _working_cv_bridge():
    """cv_bridge when it imports and converts a trivial image, else skip with the real reason."""
    try:
        from cv_bridge import CvBridge

        bridge = CvBridge()
        bridge.imgmsg_to_cv2(image_io.rgb8_to_image(_rgb(2, 2)), "passthrough")
    except Exception as exc:  # noqa: BLE001 - any failure means there is nothing to compare with
        pytest.skip(f"no working cv_bridge here: {type(exc).__name__}: {exc}".splitlines()[0])
    return bridge


@pytest.mark.parametrize("encoding", image_io.SUPPORTED_ENCODINGS)
def test_matches_cv_bridge(encoding: str) -> None:
    bridge = _working_cv_bridge()
    arr = _native(encoding)
    ours = image_io.numpy_to_image(arr, encoding)
    theirs = bridge.cv2_to_imgmsg(arr, encoding)
    assert (ours.height, ours.width, ours.step) == (theirs.height, theirs.width, theirs.step)
    assert bytes(ours.data) == bytes(theirs.data)
    np.testing.assert_array_equal(image_io.image_to_numpy(theirs),
                                  bridge.imgmsg_to_cv2(theirs, "passthrough"))
    np.testing.assert_array_equal(image_io.msg_to_rgb8(ours), bridge.imgmsg_to_cv2(ours, "rgb8"))
