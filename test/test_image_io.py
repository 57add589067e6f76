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
            "8UC1": 1, "8UC3": 3, "16UC1": 1}


def _rgb(h: int = 6, w: int = 9, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _native(encoding: str, h: int = 6, w: int = 9) -> np.ndarray:
    rng = np.random.default_rng(1)
    dtype = np.uint16 if encoding in ("mono16", "16UC1") else np.uint8
    shape = (h, w) if CHANNELS[encoding] == 1 else (h, w, CHANNELS[encoding])
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _raw(encoding: str, data: bytes, h: int, w: int, step: int, big: bool = False) -> Image:
    msg = Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=int(big))
    msg.data = array.array("B", data)
    return msg


@pytest.mark.parametrize("encoding", ALL_ENCODINGS)
def test_round_trip_every_encoding(encoding: str) -> None:
    arr = _native(encoding)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = image_io.numpy_to_image(arr, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (6, 9, encoding)
    assert msg.step == 9 * CHANNELS[encoding] * arr.dtype.itemsize
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    back = image_io.image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # packed layout: a view on the message buffer, not a copy
    assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))


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
        ("yuv422", 4, 5, 10, 40, "unsupported encoding 'yuv422'"),
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
