"""Lotus normal convention and colourisation against geometry and formulas."""

import cv2
import numpy as np
from tilted_plane import N_TRUE, tilted_plane  # noqa: E402

from lotus_ros.core.normals import lotus_to_optical
from lotus_ros.core.visualization import colorize_depth, colorize_normals

# float32 machine epsilon, 2^-23: one rounding moves a value by at most EPS32 / 2 of itself.
EPS32 = float(np.finfo(np.float32).eps)


def test_fronto_parallel_plane_faces_camera():
    rng = np.random.default_rng(0)
    # Lotus convention: n_lotus = -(camera-facing normal) = (0, 0, +1); model output not unit.
    n_lotus = np.zeros((8, 10, 3), np.float32)
    n_lotus[..., 2] = rng.uniform(0.3, 1.0, size=(8, 10))
    n = lotus_to_optical(n_lotus)
    assert n.dtype == np.float32
    # z / sqrt(z * z) in float32: four roundings (square, sqrt at half weight, reciprocal,
    # product), <= 1.75 EPS32; the test's float32 norm adds <= 0.75 EPS32.
    np.testing.assert_allclose(n, np.broadcast_to([0, 0, -1], n.shape), atol=4 * EPS32)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=4 * EPS32)


def test_tilted_plane_normal_matches_geometry():
    pts, geo = tilted_plane()
    n_true = N_TRUE
    n_lotus = np.broadcast_to(-0.7 * n_true, (29, 39, 3)).astype(np.float32)
    # The float32 points are within 1.5 EPS32 |X| of the surface, so an edge between neighbours
    # is off by 3 EPS32 |X| of its length |e|, and the cross product's direction by the two
    # edges' errors added (the model normal's own float32 error is ~EPS32, negligible here).
    edges = np.concatenate([np.linalg.norm(pts[1:, :-1] - pts[:-1, :-1], axis=-1).ravel(),
                            np.linalg.norm(pts[:-1, 1:] - pts[:-1, :-1], axis=-1).ravel()])
    bound = 2 * 3 * EPS32 * np.linalg.norm(pts, axis=-1).max() / edges.min()
    np.testing.assert_allclose(lotus_to_optical(n_lotus), geo, atol=2 * bound)


def test_zero_and_nan_normals_are_nan():
    n = np.array([[[0.0, 0.0, 0.0], [np.nan, 0.0, 1.0]]], np.float32)
    assert np.isnan(lotus_to_optical(n)).all()


def test_colorize_depth_turbo_rgb_nan_inf():
    depth = np.linspace(1.0, 5.0, 256, dtype=np.float32).reshape(16, 16)
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    depth[0, 2] = -np.inf
    img = colorize_depth(depth, value_range=(1.0, 5.0))
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert (img[0, 0] == 0).all() and (img[0, 2] == 0).all()
    assert (img[0, 1] == 255).all()
    idx = np.clip(np.round((depth - 1.0) / 4.0 * 255), 0, 255)
    bgr = cv2.applyColorMap(np.nan_to_num(idx).astype(np.uint8), cv2.COLORMAP_TURBO)
    ok = np.isfinite(depth)
    np.testing.assert_array_equal(img[ok], bgr[..., ::-1][ok])
    # Turbo starts dark blue and ends dark red: RGB order, not BGR.
    assert img[15, 15, 0] > img[15, 15, 2]


def test_colorize_depth_percentiles_ignore_outliers():
    rng = np.random.default_rng(4)
    depth = rng.uniform(2.0, 3.0, size=(50, 50)).astype(np.float32)
    depth[0, :5] = 1000.0
    img = colorize_depth(depth, colormap='gray', percentiles=(0, 98))
    # The 1000 m outliers saturate instead of compressing everything else to one colour.
    assert np.ptp(img[1:, :, 0]) > 200
    all_nan = colorize_depth(np.full((4, 4), np.nan, np.float32))
    assert (all_nan == 0).all()


def test_colorize_normals_formula():
    n = np.array([[[1.0, 0.0, -1.0], [0.0, -1.0, 0.0], [np.nan, 0, 0]]], np.float32)
    img = colorize_normals(n)
    expected = np.array([[[255, 128, 0], [128, 0, 128], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(img, expected)
