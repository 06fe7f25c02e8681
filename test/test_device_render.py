"""
core.device_render on CPU tensors against the numpy path, bit for bit (no GPU here).

Every kernel gets data with NaN, +-Inf, zeros and saturated values; then whole frames go through
FrameProcessor once with host predictions (HostFrame) and once with torch predictions
(DeviceFrame), stabilised and with an uncertainty map too, and every output message must carry
the same bytes.
"""

from message_content import message_content as message_bytes  # noqa: E402
import numpy as np
import pytest
import torch

from lotus_ros.benchmarks.model_double import ModelDouble, save_truth
from lotus_ros.core import device_render as dev
from lotus_ros.core.alignment import apply_affine
from lotus_ros.core.geometry import Intrinsics
from lotus_ros.core.normals import lotus_to_optical
from lotus_ros.core.pointcloud import pack_depth_cloud
from lotus_ros.core.visualization import color_range, colorize_depth, colorize_normals
from lotus_ros.demo.synthetic import render_sequence
from lotus_ros.ros.frame_assembly import FrameInputs
from lotus_ros.ros.images import array_to_image
from lotus_ros.ros.messages import header_at, pinhole_camera_info
from lotus_ros.ros.processor import FrameProcessor

H, W = 48, 64


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    assert a.tobytes() == b.tobytes(), np.argwhere(a.view(np.uint8) != b.view(np.uint8))[:5]


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def awkward(rng, shape, lo=0.0, hi=1.0):
    """Values in [lo, hi) with NaN, +-Inf, zeros and exact bounds sprinkled in."""
    a = rng.uniform(lo, hi, shape).astype(np.float32)
    flat = a.reshape(-1)
    idx = rng.permutation(flat.size)
    for k, v in enumerate((np.nan, np.inf, -np.inf, 0.0, lo, hi, 0.01, 0.99)):
        flat[idx[k::40][:max(1, flat.size // 60)]] = v
    return a


def test_normals_kernels_equal_numpy():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(H, W, 3)).astype(np.float32)
    n[rng.random((H, W)) < 0.05] = 0.0
    n[rng.random((H, W)) < 0.03, 1] = np.nan
    n[rng.random((H, W)) < 0.03, 2] = -np.inf
    n[0, 0] = (1e-7, 0.0, 0.0)                      # below the minimum length
    optical = lotus_to_optical(n)
    same(dev.lotus_to_optical(t(n)).numpy(), optical)
    same(dev.colorize_normals(t(optical)).numpy(), colorize_normals(optical))
    same(dev.colorize_normals(t(n * 3)).numpy(), colorize_normals(n * 3))   # clipped too


@pytest.mark.parametrize('space', ['disparity', 'depth'])
@pytest.mark.parametrize('scale,shift', [(2.0, 0.05), (0.7, -0.2), (1e-3, 1e-4),
                                         (np.nan, 0.0), (0.0, 1.0)])
def test_apply_affine_equals_numpy(space, scale, shift):
    p = awkward(np.random.default_rng(1), (H, W), -0.1, 1.1)
    ref = apply_affine(p, scale, shift, space=space, z_min=0.1, z_max=30.0)
    got = dev.apply_affine(t(p), scale, shift, space=space, z_min=0.1, z_max=30.0, delta=0.01)
    same(got.numpy(), ref)


@pytest.mark.parametrize('shape', [(1, 1), (7, 9), (H, W), (300, 400)])
def test_color_range_and_colors_equal_numpy(shape):
    rng = np.random.default_rng(shape[0])
    d = awkward(rng, shape, 0.3, 12.0)
    lo_hi = dev.color_range(t(d))
    ref = color_range(d, np.isfinite(d))
    assert lo_hi.dtype == torch.float64 and tuple(lo_hi.tolist()) == ref
    lut = torch.from_numpy(dev.colormap_lut('turbo').copy())
    same(dev.colorize_depth(t(d), lut, lo_hi).numpy(), colorize_depth(d))
    fixed = torch.tensor([2.0, 2.0], dtype=torch.float64)            # empty range widened
    same(dev.colorize_depth(t(d), lut, fixed).numpy(), colorize_depth(d, value_range=(2, 2)))


def test_color_range_without_finite_values():
    d = np.full((5, 6), np.nan, np.float32)
    d[0, 0] = np.inf
    assert tuple(dev.color_range(t(d)).tolist()) == color_range(d, np.isfinite(d)) == (0.0, 1.0)


@pytest.mark.parametrize('layout', ['pcl', 'compact'])
@pytest.mark.parametrize('organized', [True, False])
@pytest.mark.parametrize('stride', [1, 3])
@pytest.mark.parametrize('color,normals', [(True, True), (False, False), (True, False)])
def test_cloud_records_equal_pack_depth_cloud(layout, organized, stride, color, normals):
    rng = np.random.default_rng(stride)
    depth = awkward(rng, (H, W), 0.05, 20.0)
    intr = Intrinsics(50.0, 52.0, 31.5, 23.5, W, H)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    nrm = lotus_to_optical(rng.normal(size=(H, W, 3)).astype(np.float32))
    options = dict(organized=organized, min_depth=0.5, max_depth=15.0, layout=layout)
    ref = pack_depth_cloud(depth, intr, rgb=rgb if color else None,
                           normals=nrm if normals else None, stride=stride, **options)
    renderer = dev.DeviceRenderer('cpu')
    xr, yr = renderer.rays(intr, H, W)
    records, extent = dev.cloud_records(
        t(depth)[::stride, ::stride], xr[::stride], yr[::stride],
        t(rgb)[::stride, ::stride] if color else None,
        t(nrm)[::stride, ::stride] if normals else None, **options)
    if organized:
        assert bool(extent) == ref.is_dense
        same(records.numpy().reshape(-1), ref.data)
    else:
        assert int(extent) == ref.width
        same(records.numpy().reshape(-1)[:ref.data.size], ref.data)


class TensorDouble(ModelDouble):
    """The model double with an uncertainty map, handing tensors over like a CUDA engine."""

    has_uncertainty = True

    def predict_batch(self, images, *, depth=True, normal=True, device_outputs=False):
        preds = super().predict_batch(images, depth=depth, normal=normal)
        for p in preds:
            if p.depth is not None:
                p.uncertainty = (0.002 + 0.01 * p.depth * p.depth).astype(np.float32)
            if device_outputs:
                for name in ('depth', 'normal', 'uncertainty'):
                    value = getattr(p, name)
                    if value is not None:
                        setattr(p, name, torch.from_numpy(value.copy()))
        return preds


@pytest.mark.parametrize('params', [
    {'points.normals': True},
    {'points.normals': True, 'points.organized': False, 'points.layout': 'compact',
     'points.stride': 2},
    {'alignment.source': 'none', 'visualization.colormap': 'viridis'},     # relative colours
    {'visualization.depth_min': 0.5, 'visualization.depth_max': 6.0, 'points.color': False},
    {'temporal.stabilize': True, 'points.normals': True},                 # metric uncertainty
    {'temporal.stabilize': True, 'alignment.source': 'none'},             # stabilised colours
])
def test_device_frames_equal_host_frames(tmp_path, params):
    frames = render_sequence(4, width=W, height=H, scene='room', seed=2)
    save_truth(frames, tmp_path / 'truth.npz')
    outputs = []
    for device_outputs in (False, True):
        proc = FrameProcessor(TensorDouble(truth_path=str(tmp_path / 'truth.npz'), seed=4),
                              params)
        proc.inference.device_outputs = device_outputs   # a CUDA engine would set it
        results = []
        for f in frames:
            hdr = header_at(f.stamp, 'cam')
            res = proc.process(FrameInputs(array_to_image(f.rgb, 'rgb8', hdr),
                                           pinhole_camera_info(f.k, W, H, hdr),
                                           array_to_image(f.sparse_depth, '32FC1', hdr)))
            results.append({k: message_bytes(m) for k, m in res.outputs.items()})
        outputs.append(results)
    host, device = outputs
    assert [sorted(r) for r in host] == [sorted(r) for r in device]
    assert 'points' in host[-1] or params.get('alignment.source') == 'none'
    assert 'depth/uncertainty' in host[-1]
    assert ('depth/relative_raw' in host[-1]) == bool(params.get('temporal.stabilize'))
    assert host == device
