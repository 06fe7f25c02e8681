"""Colourised depth and normal images (rgb8) for people looking at RViz or rqt_image_view."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Colour for +Inf ("beyond range", REP 117): white is not on turbo/viridis-like maps.
INF_COLOR = (255, 255, 255)
NAN_COLOR = (0, 0, 0)
PERCENTILE_SAMPLES = 50_000


def colormap_lut(colormap: str) -> np.ndarray:
    """Return the 258x3 uint8 table colorize_depth indexes (see _lut), for other backends."""
    return _lut(colormap)


@lru_cache(maxsize=16)
def _lut(colormap: str) -> np.ndarray:
    """
    258x3 uint8 RGB lookup table: an OpenCV colormap, then NAN_COLOR, then INF_COLOR.

    Cached (building it costs ~0.1 ms) and read-only: callers share it.
    """
    ramp = np.arange(256, dtype=np.uint8)
    if colormap == 'gray':
        rgb = np.repeat(ramp[:, None], 3, axis=1)
    else:
        import cv2
        code = getattr(cv2, 'COLORMAP_' + colormap.upper(), None)
        if code is None:
            raise ValueError(f'unknown colormap {colormap!r}')
        rgb = cv2.applyColorMap(ramp.reshape(256, 1), code).reshape(256, 3)[:, ::-1]
    lut = np.concatenate([rgb, [NAN_COLOR, INF_COLOR]]).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def color_range(depth: np.ndarray, finite: np.ndarray,
                percentiles: tuple = (2, 98)) -> tuple[float, float]:
    """
    Return the (lo, hi) a depth map is coloured over: percentiles of its finite values.

    A regular subsample of at most ~2 * PERCENTILE_SAMPLES values is plenty for a colour range
    and 5-10x cheaper at 640x480; (0, 1) when nothing is finite.
    """
    vals = depth[finite]
    if vals.size == 0:
        return 0.0, 1.0
    vals = vals[::max(1, vals.size // PERCENTILE_SAMPLES)]
    lo, hi = (float(x) for x in np.percentile(vals, percentiles))
    return lo, hi


def colorize_depth(depth: np.ndarray, *, colormap: str = 'turbo',
                   value_range: tuple | None = None, percentiles: tuple = (2, 98),
                   out: np.ndarray | None = None) -> np.ndarray:
    """
    Depth (HxW, metres or relative) to HxWx3 uint8 RGB; low values map to the start of the map.

    The range is value_range if given, else the percentiles of the finite values (robust to a few
    outliers). NaN and -Inf are black, +Inf (beyond range) is white. Written into `out` if given.
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f'depth must be HxW, got shape {d.shape}')
    lut = _lut(colormap)
    finite = np.isfinite(d)
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
    else:
        lo, hi = color_range(d, finite, percentiles)
    if not hi > lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6
    scaled = (d - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += np.float32(0.5)
    # lut rows 256 and 257 hold the NaN/-Inf and +Inf colours
    with np.errstate(invalid='ignore'):       # NaN casts to anything; replaced next
        index = scaled.astype(np.uint16)
    np.copyto(index, np.uint16(256), where=~finite)
    np.copyto(index, np.uint16(257), where=np.isposinf(d))
    if out is None:
        out = np.empty((*d.shape, 3), np.uint8)
    return np.take(lut, index, axis=0, out=out)


def colorize_normals(normals: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map unit normals (HxWx3) to RGB as (n + 1) / 2 * 255; non-finite pixels black."""
    n = np.asarray(normals, dtype=np.float32)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f'normals must be HxWx3, got shape {n.shape}')
    v = n + np.float32(1.0)
    v *= np.float32(127.5)
    np.clip(v, 0.0, 255.0, out=v)
    v += np.float32(0.5)
    bad = ~(np.isfinite(n[..., 0]) & np.isfinite(n[..., 1]) & np.isfinite(n[..., 2]))
    v[bad] = 0.0
    if out is None:
        out = np.empty(n.shape, np.uint8)
    np.copyto(out, v, casting='unsafe')
    return out
