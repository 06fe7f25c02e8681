"""Image <-> numpy conversions against hand-built byte layouts."""

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from lotus_ros.ros.images import (
    ImageConversionError,
    array_to_image,
    compressed_to_rgb,
    depth_image_to_metres,
    image_to_array,
    image_to_rgb,
    rgb_to_compressed,
)

RNG = np.random.default_rng(7)
H, W = 6, 8
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def raw(data: bytes, enc: str, w=W, h=H, step=None, big=False) -> Image:
    m = Image()
    m.height, m.width, m.encoding = h, w, enc
    m.step = step if step is not None else len(data) // h
    m.is_bigendian = big
    m.data = data
    return m


def padded(arr: np.ndarray, pad: int) -> tuple[bytes, int]:
    rows = arr.reshape(arr.shape[0], -1).view(np.uint8)
    out = np.zeros((rows.shape[0], rows.shape[1] + pad), np.uint8)
    out[:, :rows.shape[1]] = rows
    return out.tobytes(), out.shape[1]


@pytest.mark.parametrize('enc,make', [
    ('rgb8', lambda: RGB),
    ('bgr8', lambda: RGB[:, :, ::-1]),
    ('rgba8', lambda: np.dstack([RGB, np.full((H, W), 9, np.uint8)])),
    ('bgra8', lambda: np.dstack([RGB[:, :, ::-1], np.full((H, W), 9, np.uint8)])),
])
@pytest.mark.parametrize('pad', [0, 5])
def test_colour_layouts(enc, make, pad):
    data, step = padded(np.ascontiguousarray(make()), pad)
    np.testing.assert_array_equal(image_to_rgb(raw(data, enc, step=step)), RGB)


def test_mono8_and_mono16():
    g = RGB[:, :, 0]
    out = image_to_rgb(raw(g.tobytes(), 'mono8'))
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)
    g16 = g.astype(np.uint16) * 257
    for big in (False, True):
        data = g16.astype('>u2' if big else '<u2').tobytes()
        out = image_to_rgb(raw(data, 'mono16', big=big))
        np.testing.assert_array_equal(out[:, :, 1], g)


def yuv601(rgb):
    # BT.601 video range (Y 16-235), the convention of cv_bridge / OpenCV for yuv422
    r, g, b = [rgb[..., i].astype(np.float64) for i in range(3)]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return y, u, v


@pytest.mark.parametrize('enc', ['yuv422', 'yuv422_yuy2'])
def test_yuv422(enc):
    # pixel pairs share chroma, so build an image whose pairs have equal colour
    rgb = np.repeat(RGB[:, ::2], 2, axis=1)
    rgb = np.clip(rgb, 40, 215).astype(np.uint8)  # stay inside video range, no clipping
    y, u, v = yuv601(rgb)
    packed = np.zeros((H, W, 2), np.uint8)
    if enc == 'yuv422':  # UYVY
        packed[:, 0::2, 0] = np.round(u[:, 0::2])
        packed[:, 1::2, 0] = np.round(v[:, 0::2])
        packed[:, :, 1] = np.round(y)
    else:  # YUYV
        packed[:, :, 0] = np.round(y)
        packed[:, 0::2, 1] = np.round(u[:, 0::2])
        packed[:, 1::2, 1] = np.round(v[:, 0::2])
    out = image_to_rgb(raw(packed.tobytes(), enc))
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3


def test_float_and_depth():
    d = RNG.uniform(0.5, 9.0, (H, W)).astype(np.float32)
    d[0, 0] = 0.0
    out = depth_image_to_metres(raw(d.tobytes(), '32FC1'))
    assert np.isnan(out[0, 0])
    np.testing.assert_array_equal(out[1:], d[1:])
    mm = (d * 1000).astype(np.uint16)
    out = depth_image_to_metres(raw(mm.astype('>u2').tobytes(), '16UC1', big=True))
    assert np.isnan(out[0, 0])
    # fl32(mm * fl32(0.001)): the constant and the product rounded, <= EPS32 in all
    np.testing.assert_allclose(out[1:], mm[1:] / 1000.0, rtol=2 * float(np.finfo(np.float32).eps))
    n = RNG.normal(size=(H, W, 3)).astype(np.float32)
    np.testing.assert_array_equal(image_to_array(raw(n.tobytes(), '32FC3')), n)


def test_round_trip_array_to_image():
    n = RNG.normal(size=(H, W, 3)).astype(np.float32)
    m = array_to_image(n, '32FC3')
    assert (m.step, m.encoding, len(m.data)) == (W * 12, '32FC3', H * W * 12)
    np.testing.assert_array_equal(image_to_array(m), n)
    with pytest.raises(ValueError):
        array_to_image(n, 'rgb8'[:3] + '16')


def test_compressed_round_trip():
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = (200, 30, 10)
    img[:, 24:] = (10, 40, 220)
    png = rgb_to_compressed(img, 'png')
    np.testing.assert_array_equal(compressed_to_rgb(png), img)
    jpg = compressed_to_rgb(rgb_to_compressed(img, 'jpeg'))
    assert np.abs(jpg[4:-4, 4:20].astype(int) - img[4:-4, 4:20]).max() < 12
    bad = CompressedImage(format='jpeg', data=b'\xff\xd8garbage' * 10)
    with pytest.raises(ImageConversionError) as e:
        compressed_to_rgb(bad)
    assert e.value.reason == 'decode'
    with pytest.raises(ImageConversionError):
        compressed_to_rgb(CompressedImage(format='png'))


@pytest.mark.parametrize('mutate,reason', [
    (lambda m: setattr(m, 'encoding', 'bayer_rggb8'), 'encoding'),
    (lambda m: setattr(m, 'step', W * 3 - 1), 'step'),
    (lambda m: setattr(m, 'data', bytes(m.data)[:-7]), 'truncated'),
    (lambda m: setattr(m, 'data', bytes(m.data) + b'xx'), 'size'),
    (lambda m: setattr(m, 'height', 0), 'size'),
    (lambda m: setattr(m, 'width', 100000), 'step'),
])
def test_bad_messages_name_the_problem(mutate, reason):
    m = raw(RGB.tobytes(), 'rgb8')
    mutate(m)
    with pytest.raises(ImageConversionError) as e:
        image_to_rgb(m)
    assert e.value.reason == reason
    assert str(e.value)


def test_odd_width_yuv_and_wrong_kind():
    with pytest.raises(ImageConversionError, match='odd'):
        image_to_rgb(raw(bytes(2 * 5 * H), 'yuv422', w=5))
    with pytest.raises(ImageConversionError, match='not a colour'):
        image_to_rgb(raw(bytes(4 * W * H), '32FC1'))
    with pytest.raises(ImageConversionError, match='16UC1'):
        depth_image_to_metres(raw(RGB.tobytes(), 'rgb8'))
