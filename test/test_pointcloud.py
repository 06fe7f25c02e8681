"""PointCloud2 packing decoded with an independent structured dtype built from the field list."""

import numpy as np

from lotus_ros.core.pointcloud import FLOAT32, pack_cloud

SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
NUMPY = {1: 'i1', 2: 'u1', 3: '<i2', 4: '<u2', 5: '<i4', 6: '<u4', 7: '<f4', 8: '<f8'}


def _decode(cloud):
    # Built here from the PointField semantics, not with the module's own cloud_dtype.
    dt = np.dtype({'names': [f.name for f in cloud.fields],
                   'formats': [NUMPY[f.datatype] for f in cloud.fields],
                   'offsets': [f.offset for f in cloud.fields], 'itemsize': cloud.point_step})
    assert cloud.data.dtype == np.uint8 and cloud.data.flags.c_contiguous
    assert cloud.data.size == cloud.row_step * cloud.height
    assert cloud.row_step == cloud.point_step * cloud.width
    for f in cloud.fields:
        assert f.offset + SIZES[f.datatype] * f.count <= cloud.point_step
    return np.frombuffer(cloud.data.tobytes(), dtype=dt).reshape(cloud.height, cloud.width)


def _inputs(seed=0, h=6, w=8):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-2, 2, size=(h, w, 3)).astype(np.float32)
    pts[..., 2] = rng.uniform(0.5, 10, size=(h, w))
    pts[1, 2, 2] = np.nan
    pts[2, 3, 0] = np.inf
    pts[3, 4, 2] = 0.0
    pts[4, 5, 2] = 20.0
    pts[5, 6, 2] = np.inf
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    normals = rng.normal(size=(h, w, 3)).astype(np.float32)
    return pts, rgb, normals


def _rgb_from_float(values):
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], -1).astype(np.uint8)


def test_organized_xyz_rgb_normals_round_trip():
    pts, rgb, normals = _inputs()
    cloud = pack_cloud(pts, rgb=rgb, normals=normals, max_depth=15.0)
    names = [f.name for f in cloud.fields]
    assert names == ['x', 'y', 'z', 'rgb', 'normal_x', 'normal_y', 'normal_z']
    assert all(f.datatype == FLOAT32 for f in cloud.fields)
    assert (cloud.height, cloud.width) == (6, 8) and not cloud.is_dense
    rec = _decode(cloud)
    invalid = np.zeros((6, 8), bool)
    invalid[1, 2] = invalid[2, 3] = invalid[3, 4] = invalid[4, 5] = invalid[5, 6] = True
    xyz = np.stack([rec['x'], rec['y'], rec['z']], -1)
    assert np.isnan(xyz[invalid]).all()
    np.testing.assert_array_equal(xyz[~invalid], pts[~invalid])
    np.testing.assert_array_equal(_rgb_from_float(rec['rgb']), rgb)
    rgb_bits = rec['rgb'].copy().view(np.uint32)
    assert (rgb_bits >> 24 == 0).all()
    np.testing.assert_array_equal(
        np.stack([rec['normal_x'], rec['normal_y'], rec['normal_z']], -1), normals)


def test_rgb_bit_layout_pcl():
    pts = np.ones((1, 1, 3), np.float32)
    cloud = pack_cloud(pts, rgb=np.array([[[0x12, 0x34, 0x56]]], np.uint8))
    rec = _decode(cloud)
    assert rec['rgb'].copy().view(np.uint32)[0, 0] == 0x00123456
    assert cloud.is_dense


def test_unorganized_stride_and_depth_limits():
    pts, rgb, _ = _inputs(seed=3, h=10, w=12)
    cloud = pack_cloud(pts, rgb=rgb, organized=False, stride=2, min_depth=1.0, max_depth=8.0)
    sub_p = pts[::2, ::2].reshape(-1, 3)
    sub_c = rgb[::2, ::2].reshape(-1, 3)
    z = sub_p[:, 2]
    keep = np.isfinite(sub_p).all(1) & (z >= 1.0) & (z <= 8.0)
    rec = _decode(cloud)
    assert cloud.height == 1 and cloud.width == keep.sum() and cloud.is_dense
    xyz = np.stack([rec['x'][0], rec['y'][0], rec['z'][0]], -1)
    np.testing.assert_array_equal(xyz, sub_p[keep])
    np.testing.assert_array_equal(_rgb_from_float(rec['rgb'][0]), sub_c[keep])


def test_xyz_only_and_empty():
    pts = np.full((3, 4, 3), np.nan, np.float32)
    cloud = pack_cloud(pts, organized=False)
    assert cloud.width == 0 and cloud.data.size == 0 and cloud.point_step == 12
    cloud = pack_cloud(pts)
    assert _decode(cloud).shape == (3, 4) and not cloud.is_dense
