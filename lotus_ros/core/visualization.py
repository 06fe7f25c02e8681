"""Colourised depth and normal images (rgb8) for people looking at RViz or rqt_image_view."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Colour for +Inf ("beyond range", REP 117): white is not on turbo/viridis-like maps.
INF_COLOR = (255, 255, 255)
NAN_COLOR = (0, 0, 0)
_PERCENTILE_SAMPLES = 50_000


@lru_cache(maxsize=16)
def _lut(colormap: str) -> np.ndarray:
    """256x3 uint8 RGB lookup table of an OpenCV colormap (cached: building it costs ~0.1 ms)."""
    ramp = np.arange(256, dtype=np.uint8)
    if colormap == 'gray':
        return np.repeat(ramp[:, None], 3, axis=1)
    import cv2
    code = getattr(cv2, 'COLORMAP_' + colormap.upper(), None)
    if code is None:
        raise ValueError(f'unknown colormap {colormap!r}')
    bgr = cv2.applyColorMap(ramp.reshape(256, 1), code).reshape(256, 3)
    return np.ascontiguousarray(bgr[:, ::-1])


def colorize_depth(depth: np.ndarray, *, colormap: str = 'turbo',
                   value_range: tuple | None = None,
                   percentiles: tuple = (2, 98)) -> np.ndarray:
    """
    Depth (HxW, metres or relative) to HxWx3 uint8 RGB; low values map to the start of the map.

    The range is value_range if given, else the percentiles of the finite values (robust to a few
    outliers). NaN and -Inf are black, +Inf (beyond range) is white.
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f'depth must be HxW, got shape {d.shape}')
    lut = _lut(colormap)
    finite = np.isfinite(d)
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
    elif finite.any():
        # A regular subsample is plenty for a colour range and 5-10x cheaper at 640x480.
        vals = d[finite]
        vals = vals[::max(1, vals.size // _PERCENTILE_SAMPLES)]
        lo, hi = (float(x) for x in np.percentile(vals, percentiles))
    else:
        lo, hi = 0.0, 1.0
    if not hi > lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6
    scaled = (d - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled[~finite] = 0.0
    out = np.take(lut, (scaled + 0.5).astype(np.uint8), axis=0)
    out[~finite] = NAN_COLOR
    out[np.isposinf(d)] = INF_COLOR
    return out


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """Map unit normals (HxWx3) to RGB as (n + 1) / 2 * 255; non-finite pixels black."""
    n = np.asarray(normals, dtype=np.float32)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f'normals must be HxWx3, got shape {n.shape}')
    v = (n + 1.0) * 127.5
    np.clip(v, 0.0, 255.0, out=v)
    bad = ~np.isfinite(n).all(axis=2)
    v[bad] = 0.0
    return (v + 0.5).astype(np.uint8)
