"""
Convert Lotus surface normals to the ROS optical frame.

Lotus-N predicts normals as an image in [-1, 1] (model output 2p - 1). Its training data (the
released Lotus training code) stores n_lotus = -n, where n is the camera-facing surface normal in
the optical frame (x right, y down, z forward). So the optical-frame normal is
n = -n_lotus / |n_lotus|, and a wall facing the camera gets n = (0, 0, -1).
"""

from __future__ import annotations

import numpy as np

# Below this length the model gave no usable direction (e.g. a zero vector).
_MIN_NORM = 1e-6


def lotus_to_optical(normal_lotus: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """
    Lotus-convention normals (HxWx3) to unit optical-frame normals, float32 (into `out` if given).

    Pixels whose vector is non-finite or (near) zero become NaN rather than an arbitrary direction.
    The squared length sums (x^2 + y^2) + z^2 in that order, as core.device does on a GPU.
    """
    n = np.asarray(normal_lotus, dtype=np.float32)
    if n.ndim < 1 or n.shape[-1] != 3:
        raise ValueError(f'normals must be ...x3, got shape {n.shape}')
    norm = n[..., 0] * n[..., 0]
    norm += n[..., 1] * n[..., 1]
    norm += n[..., 2] * n[..., 2]
    np.sqrt(norm, out=norm)
    with np.errstate(invalid='ignore', divide='ignore'):
        bad = ~(norm > _MIN_NORM) | ~np.isfinite(norm)
        scale = np.divide(np.float32(-1.0), norm)
    scale[bad] = np.nan
    return np.multiply(n, scale[..., None], out=out)
