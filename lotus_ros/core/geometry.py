"""
Pinhole camera geometry in the ROS optical frame (REP 103/118: x right, y down, z forward).

Pixel coordinates follow the ROS/OpenCV convention: the centre of pixel (u, v) is at (u, v), so
pixel (0, 0) covers [-0.5, 0.5) x [-0.5, 0.5). Depth is Z along the optical axis (REP 118), not the
ray length.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
import math
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(float(x)) for x in values):
            raise ValueError(f'intrinsics must be finite, got {values}')
        if self.fx <= 0.0 or self.fy <= 0.0:
            raise ValueError(f'focal lengths must be positive, got fx={self.fx} fy={self.fy}')
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f'image size must be positive, got {self.width}x{self.height}')

    def scaled(self, width: int, height: int) -> Intrinsics:
        """
        Intrinsics of the same view resampled to width x height.

        Pixel centres scale, not pixel corners: (u + 0.5) * sx - 0.5, which is what resizing with
        OpenCV/PIL does, so a resized prediction and the original image see the same rays.
        """
        sx = width / self.width
        sy = height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, int(width), int(height))


def intrinsics_from_camera_info(k, p, width: int, height: int, *, binning_x: int = 0,
                                binning_y: int = 0,
                                roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Intrinsics:
    """
    Intrinsics of the image a CameraInfo describes, from P (rectified, as depth_image_proc) else K.

    K and P are calibrated at full sensor resolution (width x height); binning and the region of
    interest (roi = x_offset, y_offset, roi width, roi height; all zero = full image) shrink the
    published image. They are applied as image_geometry's PinholeCameraModel does, so every ROS
    consumer of the same CameraInfo sees the same rays: the principal point moves by the ROI
    offset, then fx, cx are divided by binning_x and fy, cy by binning_y (binning 0 means 1).
    The returned size is (roi size or full size) / binning, rounded down. An unusable
    calibration raises ValueError: an uncalibrated camera must not silently produce a projection.
    """
    bx, by = max(int(binning_x), 1), max(int(binning_y), 1)
    x_offset, y_offset, roi_width, roi_height = (int(v) for v in roi)
    if (x_offset, y_offset, roi_width, roi_height) == (0, 0, 0, 0):
        roi_width, roi_height = int(width), int(height)
    if roi_width // bx <= 0 or roi_height // by <= 0:
        raise ValueError(f'camera info describes no image: {roi_width}x{roi_height} pixels '
                         f'(full size {width}x{height}, roi {tuple(roi)}) binned by {bx}x{by}')
    candidates = []
    if p is not None and len(p) == 12:
        pm = np.asarray(p, dtype=np.float64).reshape(3, 4)
        candidates.append((pm[0, 0], pm[1, 1], pm[0, 2], pm[1, 2]))
    if k is not None and len(k) == 9:
        km = np.asarray(k, dtype=np.float64).reshape(3, 3)
        candidates.append((km[0, 0], km[1, 1], km[0, 2], km[1, 2]))
    for fx, fy, cx, cy in candidates:
        if all(math.isfinite(x) for x in (fx, fy, cx, cy)) and fx > 0.0 and fy > 0.0:
            return Intrinsics(float(fx) / bx, float(fy) / by, (float(cx) - x_offset) / bx,
                              (float(cy) - y_offset) / by, roi_width // bx, roi_height // by)
    raise ValueError('camera info has neither a valid P nor a valid K (all zero or non-finite); '
                     'calibrate the camera or publish its CameraInfo')


def _for_shape(intr: Intrinsics, height: int, width: int) -> Intrinsics:
    if intr.width == width and intr.height == height:
        return intr
    return intr.scaled(width, height)


@functools.lru_cache(maxsize=8)
def _pixel_rays(intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(x - cx) / fx per column and (y - cy) / fy per row; cached because cameras rarely change."""
    xr = ((np.arange(intr.width, dtype=np.float64) - intr.cx) / intr.fx).astype(np.float32)
    yr = ((np.arange(intr.height, dtype=np.float64) - intr.cy) / intr.fy).astype(np.float32)
    xr.flags.writeable = False
    yr.flags.writeable = False
    return xr, yr


def backproject(depth: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """
    Back-project a depth map (Z in metres) to an HxWx3 float32 point array in the optical frame.

    A depth map of another size than the intrinsics is treated as a resized view (pixel-centre
    scaling). Non-finite or non-positive depth gives NaN points.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f'depth must be HxW, got shape {depth.shape}')
    h, w = depth.shape
    intr = _for_shape(intr, h, w)
    z = depth.astype(np.float32, copy=False)
    xr, yr = _pixel_rays(intr)
    out = np.empty((h, w, 3), dtype=np.float32)
    zc = out[..., 2]
    np.copyto(zc, z)
    invalid = ~(z > 0.0) | ~np.isfinite(z)
    zc[invalid] = np.nan
    np.multiply(zc, xr[None, :], out=out[..., 0])
    np.multiply(zc, yr[:, None], out=out[..., 1])
    return out


def project(points: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Project optical-frame points (...x3) to pixel coordinates (u, v) and depth z.

    Points at or behind the camera (z <= 0) or non-finite get u = v = NaN; z is returned as given.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[-1] != 3:
        raise ValueError(f'points must be ...x3, got shape {pts.shape}')
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    with np.errstate(invalid='ignore'):
        ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & (z > 0.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = np.where(ok, 1.0 / np.where(ok, z, 1.0), np.nan)
    u = intr.fx * x * inv + intr.cx
    v = intr.fy * y * inv + intr.cy
    return u, v, z.copy()


def pinhole_fields(k, width: int, height: int) -> dict[str, Any]:
    """
    CameraInfo fields of a rectified pinhole camera with intrinsics K (3x3, row-major).

    plumb_bob with zero coefficients, R = I, P = [K | 0], no binning, full-frame ROI: what a
    driver publishes for an already rectified image. Plain Python values, so typestores other
    than rclpy's (rosbags) build their CameraInfo from the same fields.
    """
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    p = np.zeros((3, 4))
    p[:, :3] = k
    return {'height': int(height), 'width': int(width), 'distortion_model': 'plumb_bob',
            'd': [0.0] * 5, 'k': k.ravel().tolist(), 'r': np.eye(3).ravel().tolist(),
            'p': p.ravel().tolist(), 'binning_x': 0, 'binning_y': 0}
