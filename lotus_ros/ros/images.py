"""
Conversions between sensor_msgs images and numpy arrays.

Every check a camera driver, a bag or a fuzzer can break is done here, before numpy sees the
bytes, so a bad message becomes one ImageConversionError with a short reason key (for counting)
and a sentence naming the problem (for the throttled warning) instead of a crash deep inside the
pipeline.
"""

from __future__ import annotations

import array
import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
    'mono8': (np.dtype(np.uint8), 1),
    '8UC1': (np.dtype(np.uint8), 1),
    '8UC3': (np.dtype(np.uint8), 3),
    'mono16': (np.dtype(np.uint16), 1),
    '16UC1': (np.dtype(np.uint16), 1),
    '32FC1': (np.dtype(np.float32), 1),
    '32FC3': (np.dtype(np.float32), 3),
    # packed 4:2:2, two bytes per pixel; UYVY is the ROS 'yuv422' layout
    'yuv422': (np.dtype(np.uint8), 2),
    'uyvy': (np.dtype(np.uint8), 2),
    'yuv422_yuy2': (np.dtype(np.uint8), 2),
    'yuyv': (np.dtype(np.uint8), 2),
}

COLOR_ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'yuv422', 'uyvy',
                   'yuv422_yuy2', 'yuyv', '8UC3')
DEPTH_ENCODINGS = ('16UC1', '32FC1', 'mono16')

# Refuse absurd sizes before allocating anything for them.
MAX_PIXELS = 64_000_000


class ImageConversionError(ValueError):
    """A message that cannot be converted; `reason` is a short key used for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _validate(msg: Image) -> tuple[np.dtype, int]:
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageConversionError(
            'encoding', f"unsupported image encoding '{enc}' (supported: "
            f"{', '.join(sorted(ENCODINGS))})")
    dtype, channels = ENCODINGS[enc]
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ImageConversionError('size', f'image has zero size ({w}x{h})')
    if h * w > MAX_PIXELS:
        raise ImageConversionError('size', f'image size {w}x{h} is implausibly large')
    if enc in ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv') and w % 2:
        raise ImageConversionError('size', f'{enc} image width {w} is odd')
    row_bytes = w * channels * dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ImageConversionError(
            'step', f'step {step} is smaller than width*bytes_per_pixel = {row_bytes} '
            f'({w} px of {enc})')
    if step % dtype.itemsize:
        raise ImageConversionError('step', f'step {step} is not a multiple of the element size')
    n = len(msg.data)
    need = step * (h - 1) + row_bytes
    if n < need:
        raise ImageConversionError(
            'truncated', f'image data truncated: {n} bytes for {w}x{h} {enc} with step {step} '
            f'(need {step * h})')
    if n > step * h:
        raise ImageConversionError(
            'size', f'image data has {n} bytes, more than step*height = {step * h}')
    return dtype, channels


def image_to_array(msg: Image) -> np.ndarray:
    """
    Return the pixels as (H, W) or (H, W, C) in native byte order, honouring step and endianness.

    The result may be a view on the message buffer: copy before writing to it.
    """
    dtype, channels = _validate(msg)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * h:
        # last row without padding is allowed; pad a copy so the strided view is valid
        buf = np.concatenate([buf, np.zeros(step * h - buf.size, np.uint8)])
    rows = buf[:step * h].reshape(h, step)[:, :w * channels * dtype.itemsize]
    big = bool(msg.is_bigendian)
    arr_dtype = dtype.newbyteorder('>' if big else '<') if dtype.itemsize > 1 else dtype
    arr = np.ascontiguousarray(rows).view(arr_dtype).reshape(h, w, channels)
    if dtype.itemsize > 1 and (big != (sys.byteorder == 'big')):
        arr = arr.astype(dtype)
    if channels == 1:
        arr = arr[:, :, 0]
    return arr


def image_to_rgb(msg: Image) -> np.ndarray:
    """Decode any supported colour or mono image into HxWx3 uint8 RGB for the model."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(
            'encoding', f"image encoding '{msg.encoding}' is not a colour encoding "
            f"(supported: {', '.join(COLOR_ENCODINGS)})")
    arr = image_to_array(msg)
    enc = msg.encoding
    if enc in ('rgb8', '8UC3'):
        return np.ascontiguousarray(arr)
    if enc == 'bgr8':
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if enc == 'rgba8':
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    if enc == 'bgra8':
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    if enc == 'mono8':
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2RGB)
    if enc == 'mono16':
        # full 16-bit range -> 8 bit; 257 maps 65535 exactly to 255
        mono = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
        return cv2.cvtColor(mono, cv2.COLOR_GRAY2RGB)
    if enc in ('yuv422', 'uyvy'):
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_YUV2RGB_UYVY)
    return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_YUV2RGB_YUY2)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a jpeg/png CompressedImage into HxWx3 uint8 RGB."""
    fmt = msg.format.lower()
    if 'compresseddepth' in fmt:
        raise ImageConversionError('encoding', f"compressed format '{msg.format}' is a depth "
                                   'format, not a colour image')
    if len(msg.data) == 0:
        raise ImageConversionError('decode', 'compressed image has no data')
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageConversionError(
            'decode', f"compressed image ({len(msg.data)} bytes, format '{msg.format}') "
            'could not be decoded as jpeg/png')
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if img.dtype != np.uint8:
        raise ImageConversionError('decode', f'compressed image decoded to {img.dtype}')
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    # cv2 decodes to BGR; an 'rgb8; jpeg compressed bgr8' format string describes the
    # original message, not the decoded byte order
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def depth_image_to_metres(msg: Image) -> np.ndarray:
    """
    Convert a sparse/dense depth image to float32 metres, NaN where there is no measurement.

    16UC1 (and mono16) are millimetres with 0 = no return (REP 118); 32FC1 is metres.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            'encoding', f"depth image encoding '{msg.encoding}' is not 16UC1 (mm) or 32FC1 (m)")
    arr = image_to_array(msg)
    if arr.dtype == np.uint16:
        out = arr.astype(np.float32) * np.float32(0.001)
        out[arr == 0] = np.nan
        return out
    out = np.array(arr, dtype=np.float32, copy=True)
    out[out == 0] = np.nan
    return out


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """Build an Image from a C-ordered array whose dtype/channels match the encoding."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding '{encoding}'")
    dtype, channels = ENCODINGS[encoding]
    a = np.ascontiguousarray(arr, dtype=dtype)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != channels:
        raise ValueError(f'array of shape {arr.shape} does not fit encoding {encoding}')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == 'big'
    msg.step = int(a.shape[1] * channels * dtype.itemsize)
    msg.data = as_byte_array(a)
    return msg


def byte_array(nbytes: int) -> array.array:
    """Return a zeroed message data array of nbytes (messages take it without a copy)."""
    return array.array('B', bytes(1)) * int(nbytes)


def image_message(height: int, width: int, encoding: str,
                  header=None) -> tuple[Image, np.ndarray]:
    """
    Return an Image with its data allocated once, and a writable (H, W[, C]) view of it.

    Writing an output straight into the message saves the copy array_to_image makes.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding '{encoding}'")
    dtype, channels = ENCODINGS[encoding]
    step = int(width) * channels * dtype.itemsize
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == 'big'
    msg.step = step
    msg.data = byte_array(step * int(height))
    view = np.frombuffer(msg.data, dtype).reshape(int(height), int(width), channels)
    return msg, view[:, :, 0] if channels == 1 else view


def as_byte_array(a: np.ndarray) -> array.array:
    """Copy an array's bytes once into the array.array('B') that message data fields hold."""
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(a)).cast('B'))
    return out


def rgb_to_compressed(rgb: np.ndarray, fmt: str = 'jpeg', header=None,
                      quality: int = 95) -> CompressedImage:
    """Encode HxWx3 RGB as a jpeg/png CompressedImage (image_transport's 'compressed')."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    if fmt == 'png':
        ok, buf = cv2.imencode('.png', bgr)
    else:
        ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'could not encode image as {fmt}')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f'rgb8; {fmt} compressed bgr8'
    msg.data = buf.tobytes()
    return msg
