"""A tilted plane seen by a pinhole camera, with normals measured from its back-projected cloud."""

import numpy as np

from lotus_ros.core.geometry import Intrinsics, backproject

# The plane's unit normal in the optical frame, facing the camera.
N_TRUE = np.array([0.3, -0.4, -0.866]) / np.linalg.norm([0.3, -0.4, -0.866])


def tilted_plane() -> tuple[np.ndarray, np.ndarray]:
    """Return the float32 cloud's points (30x40x3, float64) and its geometric normals (29x39x3)."""
    intr = Intrinsics(60.0, 60.0, 20.0, 15.0, 40, 30)
    vv, uu = np.mgrid[0:30, 0:40].astype(np.float64)
    rays = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1)
    depth = (-2.0 / (rays @ N_TRUE)).astype(np.float32)
    pts = backproject(depth, intr).astype(np.float64)
    # Geometric normal from the cloud, oriented toward the camera (n . X < 0).
    geo = np.cross(pts[1:, :-1] - pts[:-1, :-1], pts[:-1, 1:] - pts[:-1, :-1])
    geo /= np.linalg.norm(geo, axis=-1, keepdims=True)
    geo *= -np.sign(np.sum(geo * pts[:-1, :-1], -1, keepdims=True))
    return pts, geo
