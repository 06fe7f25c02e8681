"""Geometry against independent per-pixel formulas and synthetic planes."""

import math

import numpy as np
import pytest

from lotus_ros.core.geometry import Intrinsics, backproject, intrinsics_from_camera_info, project

INTR = Intrinsics(fx=52.0, fy=48.0, cx=15.3, cy=11.7, width=32, height=24)
# float32 machine epsilon, 2^-23: one rounding moves a value by at most EPS32 / 2 of itself.
EPS32 = float(np.finfo(np.float32).eps)


def _random_depth(rng, h, w):
    return rng.uniform(0.3, 12.0, size=(h, w)).astype(np.float32)


def test_backproject_matches_per_pixel_formula():
    rng = np.random.default_rng(1)
    depth = _random_depth(rng, INTR.height, INTR.width)
    depth[3, 4] = np.nan
    depth[5, 6] = 0.0
    depth[7, 8] = -1.0
    depth[9, 10] = np.inf
    pts = backproject(depth, INTR)
    assert pts.shape == (24, 32, 3) and pts.dtype == np.float32
    for v in range(INTR.height):
        for u in range(INTR.width):
            z = float(depth[v, u])
            if not (math.isfinite(z) and z > 0):
                assert np.isnan(pts[v, u]).all()
                continue
            expected = ((u - INTR.cx) * z / INTR.fx, (v - INTR.cy) * z / INTR.fy, z)
            # x = fl32(fl32(ray) * z): two roundings, <= EPS32 of x; z is copied exactly.
            np.testing.assert_allclose(pts[v, u], expected, rtol=2 * EPS32, atol=0)


def test_project_of_backproject_is_pixel_grid():
    rng = np.random.default_rng(2)
    depth = _random_depth(rng, INTR.height, INTR.width)
    u, v, z = project(backproject(depth, INTR), INTR)
    vv, uu = np.mgrid[0:INTR.height, 0:INTR.width]
    # u - cx = fx * x / z carries x's float32 roundings (ray and product, <= EPS32) plus float64
    # noise: <= 1.5 EPS32 |u - cx| < 1.5 EPS32 * width.
    np.testing.assert_allclose(u, uu, atol=3 * EPS32 * INTR.width)
    np.testing.assert_allclose(v, vv, atol=3 * EPS32 * INTR.height)
    np.testing.assert_array_equal(z, depth)  # z is copied, never computed


def test_project_behind_camera_is_nan():
    u, v, _ = project(np.array([[0.0, 0.0, -1.0], [0.1, 0.1, 0.0], [np.nan, 0, 1]]), INTR)
    assert np.isnan(u).all() and np.isnan(v).all()


def test_plane_lands_on_plane():
    # Plane n . X = d seen by the camera; depth along each pixel ray from the plane equation.
    n = np.array([0.2, -0.5, -0.8])
    n /= np.linalg.norm(n)
    d = -3.0
    vv, uu = np.mgrid[0:INTR.height, 0:INTR.width].astype(np.float64)
    rays = np.stack([(uu - INTR.cx) / INTR.fx, (vv - INTR.cy) / INTR.fy, np.ones_like(uu)], -1)
    depth = d / (rays @ n)
    assert (depth > 0).all()
    pts = backproject(depth.astype(np.float32), INTR).astype(np.float64)
    # Each coordinate is within 1.5 EPS32 of itself (depth cast, ray, product), so with a unit n
    # the plane equation is off by <= 1.5 EPS32 |X|.
    np.testing.assert_allclose(pts @ n, d, atol=3 * EPS32 * np.linalg.norm(pts, axis=-1).max())


def test_backproject_resized_depth_uses_scaled_intrinsics():
    # A half-size depth map: the pixel centre (u, v) of the small map is (2u + 0.5, 2v + 0.5) in
    # the full image, so its ray must match the full-resolution formula there.
    small = np.full((12, 16), 2.0, dtype=np.float32)
    pts = backproject(small, INTR)
    u_full = 2 * 5 + 0.5
    v_full = 2 * 7 + 0.5
    expected = ((u_full - INTR.cx) * 2.0 / INTR.fx, (v_full - INTR.cy) * 2.0 / INTR.fy, 2.0)
    # one float32 rounding of the ray (times 2.0 is exact): <= EPS32 / 2
    np.testing.assert_allclose(pts[7, 5], expected, rtol=EPS32)


def test_intrinsics_prefers_p_then_k_and_rejects_zero():
    k = [500.0, 0, 320.0, 0, 510.0, 240.0, 0, 0, 1]
    p = [400.0, 0, 300.0, 0, 0, 410.0, 200.0, 0, 0, 0, 1, 0]
    i = intrinsics_from_camera_info(k, p, 640, 480)
    assert (i.fx, i.fy, i.cx, i.cy) == (400.0, 410.0, 300.0, 200.0)
    i = intrinsics_from_camera_info(k, [0.0] * 12, 640, 480)
    assert (i.fx, i.fy, i.cx, i.cy) == (500.0, 510.0, 320.0, 240.0)
    with pytest.raises(ValueError):
        intrinsics_from_camera_info([0.0] * 9, [0.0] * 12, 640, 480)
    with pytest.raises(ValueError):
        intrinsics_from_camera_info(k, p, 0, 480)


# A 640x480 sensor calibrated at full resolution; the point lands at full-res pixel (470, 167.5).
K_FULL = [600.0, 0, 320.0, 0, 580.0, 240.0, 0, 0, 1]
POINT = np.array([0.5, -0.25, 2.0])


@pytest.mark.parametrize('binning, roi, size, uv', [
    # binning 2: fx, cx / 2 and fy, cy / 2; u = 300 * 0.25 + 160, v = 290 * -0.125 + 120
    ((2, 2), (0, 0, 0, 0), (320, 240), (235.0, 83.75)),
    # ROI at (300, 100): the principal point moves by the offset; u = 150 + 20, v = -72.5 + 140
    ((0, 0), (300, 100, 320, 240), (320, 240), (170.0, 67.5)),
    # both: offset first, then binning; u = 75 + (320 - 300) / 2, v = -36.25 + (240 - 100) / 2
    ((2, 2), (300, 100, 320, 240), (160, 120), (85.0, 33.75)),
    # binning in y only (binning_x 0 means 1): v = 145 * -0.125 + 60
    ((0, 4), (0, 0, 0, 0), (640, 120), (470.0, 41.875)),
])
def test_binning_and_roi_like_image_geometry(binning, roi, size, uv):
    i = intrinsics_from_camera_info(K_FULL, None, 640, 480, binning_x=binning[0],
                                    binning_y=binning[1], roi=roi)
    assert (i.width, i.height) == size
    u, v, _ = project(POINT, i)
    assert (float(u), float(v)) == pytest.approx(uv, abs=1e-9)
    # image_geometry's toReducedResolution of the full-resolution pixel gives the same place
    bx, by = max(binning[0], 1), max(binning[1], 1)
    assert float(u) == pytest.approx((470.0 - roi[0]) / bx)
    assert float(v) == pytest.approx((167.5 - roi[1]) / by)


def test_binning_and_roi_apply_to_p_as_to_k():
    p = [400.0, 0, 300.0, 0, 0, 410.0, 200.0, 0, 0, 0, 1, 0]
    i = intrinsics_from_camera_info(K_FULL, p, 640, 480, binning_x=2, binning_y=2,
                                    roi=(20, 10, 600, 460))
    assert (i.fx, i.fy, i.cx, i.cy) == (200.0, 205.0, 140.0, 95.0)
    assert (i.width, i.height) == (300, 230)


@pytest.mark.parametrize('binning, roi', [
    ((1, 1), (10, 10, 0, 0)),        # an offset without a size: no pixels
    ((1000, 1), (0, 0, 0, 0)),       # binned to nothing
])
def test_camera_info_describing_no_image_is_rejected(binning, roi):
    with pytest.raises(ValueError, match='describes no image'):
        intrinsics_from_camera_info(K_FULL, None, 640, 480, binning_x=binning[0],
                                    binning_y=binning[1], roi=roi)


def test_scaled_keeps_rays_of_pixel_centres():
    s = INTR.scaled(64, 48)
    # Pixel centre u_small=3 covers full-res area [3 - 0.5, 3 + 0.5) -> scaled pixel centre 6.5.
    ray_small = (3 - INTR.cx) / INTR.fx
    ray_big = (6.5 - s.cx) / s.fx
    # float64 throughout: a few roundings of terms ~30 around a difference ~24, ~1e-15 relative
    assert ray_big == pytest.approx(ray_small, rel=1e-14, abs=0)
    assert (s.width, s.height) == (64, 48)
