"""Synthetic sequences: geometry checked against independent plane / projection formulas."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lotus_ros.demo import synthetic
from lotus_ros.demo.synthetic import render_sequence

# float32 machine epsilon, 2^-23: one rounding moves a value by at most EPS32 / 2 of itself.
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope='module')
def room():
    return render_sequence(6, width=160, height=120, scene='room', seed=3)


@pytest.fixture(scope='module')
def outdoor():
    return render_sequence(4, width=160, height=120, scene='outdoor', seed=3)


def backproject(frame, mask):
    """Pinhole back-projection written out here, independent of the renderer's ray setup."""
    v, u = np.nonzero(mask)
    z = frame.depth[v, u].astype(np.float64)
    fx, fy, cx, cy = frame.k[0, 0], frame.k[1, 1], frame.k[0, 2], frame.k[1, 2]
    return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=1)


def float32_depth_error(points: np.ndarray) -> float:
    """Bound the position error of points from the float32 depth (one rounding), in float64."""
    return EPS32 / 2 * float(np.linalg.norm(points, axis=1).max())


def test_floor_pixels_lie_on_the_floor_plane(room):
    for frame in room:
        mask = frame.labels == synthetic.LABEL_FLOOR
        assert mask.sum() > 500
        camera = backproject(frame, mask)
        world = camera @ frame.pose[:3, :3].T + frame.pose[:3, 3]
        np.testing.assert_allclose(world[:, 1], synthetic.FLOOR_Y,
                                   atol=2 * float32_depth_error(camera))


def test_walls_lie_on_their_planes(room):
    seen = set()
    for frame in room:
        for offset, axis, value in [(0, 0, synthetic.ROOM_LO[0]), (1, 0, synthetic.ROOM_HI[0]),
                                    (3, 2, synthetic.ROOM_HI[2])]:
            mask = frame.labels == synthetic.LABEL_WALL + offset
            if mask.sum() > 50:
                seen.add(offset)
                camera = backproject(frame, mask)
                world = camera @ frame.pose[:3, :3].T + frame.pose[:3, 3]
                np.testing.assert_allclose(world[:, axis], value,
                                           atol=2 * float32_depth_error(camera))
    assert seen == {0, 1, 3}


def test_floor_is_one_metre_below_the_first_camera_without_using_the_pose(room):
    # Frame 0 sits at the world origin, 1 m above the floor: fit the plane in the optical frame.
    frame = room[0]
    points = backproject(frame, frame.labels == synthetic.LABEL_FLOOR)
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre)[2][-1]
    error = float32_depth_error(points)  # float64 fitting adds ~1e-15
    assert np.abs((points - centre) @ normal).max() < 2 * error
    assert abs(centre @ normal) == pytest.approx(synthetic.FLOOR_Y, rel=0, abs=2 * error)
    # y points down (REP 103/118): the floor is below the camera, so its points have y > 0.
    assert (points[:, 1] > 0).all()
    # The stored normal is the plane normal facing the camera.
    stored = frame.normal[frame.labels == synthetic.LABEL_FLOOR]
    # Stored as float32: each component rounded, <= EPS32 / 2 on the dot product; the fitted
    # normal's angular error only enters the cosine squared.
    np.testing.assert_allclose(np.abs(stored @ normal), 1.0, atol=EPS32)
    assert (np.sum(stored * points, axis=1) < 0).all()


def test_intrinsics_and_images_are_sane(room, outdoor):
    for frame in room + outdoor:
        assert frame.rgb.shape == (120, 160, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.dtype == np.float32 and frame.sparse_depth.dtype == np.float32
        assert frame.rgb.std() > 10
        assert frame.k[0, 2] == 79.5 and frame.k[1, 2] == 59.5   # (size - 1) / 2, exact
    assert np.abs(room[0].rgb.astype(int) - room[1].rgb.astype(int)).mean() > 2
    assert np.isfinite(room[0].depth).all()


def test_outdoor_sky_is_infinite_and_has_no_returns(outdoor):
    for frame in outdoor:
        sky = frame.labels == synthetic.LABEL_SKY
        assert sky[0].mean() > 0.2
        assert np.isposinf(frame.depth[sky]).all() and np.isfinite(frame.depth[~sky]).all()
        assert not np.isfinite(frame.sparse_depth[sky]).any()
        assert np.isnan(frame.normal[sky]).all()
        assert frame.depth[~sky].max() > 60


@pytest.mark.parametrize('scene', ['room', 'outdoor'])
def test_sparse_depth_is_lidar_like(scene):
    frames = render_sequence(6, width=320, height=240, scene=scene, seed=5)
    rel_all = []
    for frame in frames:
        m = np.isfinite(frame.sparse_depth)
        assert 2000 < m.sum() < 16 * 320
        assert (frame.sparse_depth[m] > 0).all()
        # 16 beams from -15 to +15 degrees: rows near the central column.
        cu = int(frame.k[0, 2])
        rows = np.unique(np.nonzero(m[:, cu - 1:cu + 2])[0])
        assert 10 <= len(rows) <= 16
        edge = frame.k[1, 1] * np.tan(np.deg2rad(15.0))
        assert rows.min() >= frame.k[1, 2] - edge - 1.5
        assert rows.max() == pytest.approx(frame.k[1, 2] + edge, abs=1.5)
        if scene == 'room':  # no sky: every beam returns
            assert len(rows) >= 14
            assert rows.min() == pytest.approx(frame.k[1, 2] - edge, abs=1.5)
        v, u = np.nonzero(m)
        gt = frame.depth[v, u]
        s = frame.sparse_depth[v, u]
        rel = np.abs(s - gt) / gt
        rel_all.append(rel)
        # Every outlier carries the depth of a surface next to it (edge bleeding), not garbage.
        for vi, ui, si in zip(v[rel > 0.06], u[rel > 0.06], s[rel > 0.06], strict=True):
            near = frame.depth[vi, max(ui - 2, 0):ui + 3]
            assert np.any(np.abs(near - si) < 0.06 * near)
    rel = np.concatenate(rel_all)
    outliers = rel > 0.06
    assert 0.001 < outliers.mean() < 0.1
    assert 0.004 < np.median(rel[~outliers]) < 0.015


def test_deterministic_and_seeded():
    a = render_sequence(3, width=64, height=48, seed=7)
    b = render_sequence(3, width=64, height=48, seed=7)
    c = render_sequence(3, width=64, height=48, seed=8)
    for fa, fb in zip(a, b, strict=True):
        assert fa.rgb.tobytes() == fb.rgb.tobytes()
        np.testing.assert_array_equal(fa.sparse_depth, fb.sparse_depth)
        np.testing.assert_array_equal(fa.depth, fb.depth)
    assert a[0].rgb.tobytes() != c[0].rgb.tobytes()
    assert [f.stamp for f in render_sequence(3, width=8, height=6, fps=4.0, start_stamp=10.0)] \
        == [10.0, 10.25, 10.5]


def test_bad_arguments():
    with pytest.raises(ValueError):
        render_sequence(2, scene='moon')
    with pytest.raises(ValueError):
        render_sequence(0)


def test_fast_enough():
    start = time.perf_counter()
    render_sequence(20, width=320, height=240)
    assert time.perf_counter() - start < 10.0  # ~1 s here; a per-pixel loop takes minutes
