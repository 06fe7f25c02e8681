"""FrameProcessor end to end on synthetic frames with the model double (no rclpy)."""

import os
import sys
import time

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from lotus_ros.demo.synthetic import render_sequence
from lotus_ros.ros.clouds import cloud_to_array, cloud_to_xyz
from lotus_ros.ros.frame_assembly import FrameInputs
from lotus_ros.ros.images import ImageConversionError, array_to_image, image_to_array
from lotus_ros.ros.messages import pinhole_camera_info
from lotus_ros.ros.outputs import OUTPUTS
from lotus_ros.ros.processor import FrameProcessor

sys.path.insert(0, os.path.dirname(__file__))
from message_content import message_content as message_bytes  # noqa: E402

from lotus_ros.benchmarks.model_double import ModelDouble, save_truth  # noqa: E402

W, H = 160, 120
# float32 machine epsilon, 2^-23: one rounding moves a value by at most EPS32 / 2 of itself.
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope='module')
def frames():
    return render_sequence(6, width=W, height=H, scene='room', seed=3)


@pytest.fixture(scope='module')
def engine(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp('truth') / 'truth.npz'
    save_truth(frames, path)
    return ModelDouble(truth_path=str(path), noise=0.002, seed=1)


def header(frame):
    h = Header(frame_id='cam_optical')
    h.stamp.sec = int(frame.stamp)
    h.stamp.nanosec = int(round((frame.stamp - int(frame.stamp)) * 1e9))
    return h


def info(frame, hdr):
    return pinhole_camera_info(frame.k, frame.width, frame.height, hdr)


def inputs(frame, with_info=True, sparse=True):
    hdr = header(frame)
    return FrameInputs(
        image=array_to_image(frame.rgb[:, :, ::-1], 'bgr8', hdr),
        camera_info=info(frame, hdr) if with_info else None,
        sparse=array_to_image(frame.sparse_depth, '32FC1', hdr) if sparse else None)


def abs_rel(pred, gt):
    m = np.isfinite(gt) & np.isfinite(pred) & (gt > 0)
    return float(np.mean(np.abs(pred[m] - gt[m]) / gt[m])), m.mean()


def test_metric_outputs_match_ground_truth(frames, engine):
    proc = FrameProcessor(engine, {'points.normals': True})
    for f in frames:
        res = proc.process(inputs(f))
    assert res.metric and res.alignment.valid
    out = res.outputs
    # every output but the stabiliser's raw copy and the uncertainty the double does not give
    expected = set(OUTPUTS) - {'depth/relative_raw', 'depth/uncertainty'}
    assert set(out) == expected - ({'alignment'} if proc.alignment_type is None else set())
    hdr = header(frames[-1])
    for name, msg in out.items():
        assert msg.header.frame_id == 'cam_optical', name
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == \
            (hdr.stamp.sec, hdr.stamp.nanosec), name
    depth = image_to_array(out['depth/image'])
    assert out['depth/image'].encoding == '32FC1' and depth.shape == (H, W)
    err, cover = abs_rel(depth, frames[-1].depth)
    assert err <= 0.03 and cover > 0.9
    assert out['depth/relative'].encoding == '32FC1'
    assert out['depth/colored'].encoding == 'rgb8' and out['normal/colored'].encoding == 'rgb8'
    n = image_to_array(out['normal/image'])
    assert out['normal/image'].encoding == '32FC3'
    gt_n = frames[-1].normal
    ok = np.isfinite(gt_n).all(axis=2) & np.isfinite(n).all(axis=2)
    # n / |n| in float32 (<= 2.25 EPS32: squares summed, sqrt, reciprocal, product) measured
    # with a float32 norm (<= 1.25 EPS32)
    np.testing.assert_allclose(np.linalg.norm(n[ok], axis=1), 1.0, atol=4 * EPS32)
    assert np.mean(np.sum(n[ok] * gt_n[ok], axis=1)) > 0.99
    ci = out['depth/camera_info']
    assert (ci.width, ci.height) == (W, H) and list(ci.k) == list(frames[-1].k.ravel())


def test_cloud_points_near_ground_truth(frames, engine):
    proc = FrameProcessor(engine, {'points.organized': True, 'points.color': True})
    for f in frames:
        res = proc.process(inputs(f))
    cloud = res.outputs['points']
    assert (cloud.height, cloud.width) == (H, W)
    pts = cloud_to_array(cloud)
    xyz = np.stack([pts['x'], pts['y'], pts['z']], axis=1)
    f = frames[-1]
    v, u = np.mgrid[0:H, 0:W]
    z = f.depth.ravel()
    gt = np.stack([(u.ravel() - f.k[0, 2]) * z / f.k[0, 0],
                   (v.ravel() - f.k[1, 2]) * z / f.k[1, 1], z], axis=1)
    ok = np.isfinite(xyz).all(axis=1) & np.isfinite(gt).all(axis=1)
    assert ok.mean() > 0.9
    rel = np.linalg.norm(xyz[ok] - gt[ok], axis=1) / np.linalg.norm(gt[ok], axis=1)
    assert np.median(rel) < 0.03
    rgb = pts['rgb'].view(np.uint32)
    assert ((rgb >> 16) & 255).reshape(H, W)[5, 7] == f.rgb[5, 7, 0]


def test_no_metric_without_reference(frames, engine):
    proc = FrameProcessor(engine, {'alignment.source': 'none'})
    res = proc.process(inputs(frames[0], sparse=False))
    assert not res.metric
    assert {'depth/image', 'depth/camera_info', 'points', 'alignment'}.isdisjoint(res.outputs)
    assert {'depth/relative', 'depth/colored', 'normal/image'} <= set(res.outputs)


def test_fixed_scale_gives_metric_with_semantics(frames, engine):
    proc = FrameProcessor(engine, {'alignment.source': 'none', 'alignment.fixed_scale': 2.0,
                                   'alignment.z_max': 5.0})
    res = proc.process(inputs(frames[0], sparse=False))
    d = image_to_array(res.outputs['depth/image'])
    rel = image_to_array(res.outputs['depth/relative'])
    with np.errstate(divide='ignore'):
        expect = 1.0 / (2.0 * rel.astype(np.float64))
    near = np.isfinite(d)
    # scale 2 and shift 0 are exact in float32: metres = fl32(1 / (2 rel)), one rounding
    np.testing.assert_allclose(d[near], expect[near], rtol=EPS32)
    assert np.isposinf(d[expect > 5.0]).all()       # beyond range -> +Inf
    assert not np.isneginf(d).any()                   # nothing is closer than z_min here


def test_lazy_subset_and_missing_camera_info(frames, engine):
    proc = FrameProcessor(engine)
    calls = engine.calls
    res = proc.process(inputs(frames[0], with_info=False), wanted={'points', 'depth/relative'})
    assert engine.calls == calls + 1
    assert set(res.outputs) <= {'depth/relative'}
    assert any(r == 'no_camera_info' for r, _ in res.problems)
    res = proc.process(inputs(frames[0]), wanted=set())
    assert res.outputs == {} and engine.calls == calls + 1


def test_bad_side_inputs_are_reported_not_fatal(frames, engine):
    proc = FrameProcessor(engine)
    inp = inputs(frames[1])
    inp.camera_info.k = [0.0] * 9
    inp.camera_info.p = [0.0] * 12
    neg = frames[1].sparse_depth.copy()
    neg[np.isfinite(neg)] *= -1
    inp.sparse = array_to_image(neg, '32FC1', inp.image.header)
    res = proc.process(inp)
    reasons = {r for r, _ in res.problems}
    assert {'camera_info_intrinsics', 'sparse_negative'} <= reasons
    assert 'depth/relative' in res.outputs
    bad = inputs(frames[1])
    bad.image.encoding = 'bayer_grbg8'
    with pytest.raises(ImageConversionError):
        proc.process(bad)


def test_sparse_points_input(frames, engine):
    proc = FrameProcessor(engine, {'alignment.source': 'sparse_points'})
    for f in frames:
        inp = inputs(f, sparse=False)
        v, u = np.nonzero(np.isfinite(f.sparse_depth))
        z = f.sparse_depth[v, u]
        pts = np.stack([(u - f.k[0, 2]) * z / f.k[0, 0], (v - f.k[1, 2]) * z / f.k[1, 1], z],
                       axis=1).astype(np.float32)
        # the cloud comes in a lidar frame 1 m to the left: translation maps it back
        pts[:, 0] += 1.0
        cloud = PointCloud2(header=inp.image.header, height=1, width=len(pts), point_step=12,
                            row_step=12 * len(pts), is_dense=True, is_bigendian=False,
                            fields=[PointField(name=n, offset=4 * i, datatype=7, count=1)
                                    for i, n in enumerate('xyz')])
        cloud.data = pts.tobytes()
        assert cloud_to_xyz(cloud).shape == (len(pts), 3)
        inp.sparse = cloud
        inp.points_transform = ((-1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
        res = proc.process(inp)
    assert res.metric
    err, _ = abs_rel(image_to_array(res.outputs['depth/image']), frames[-1].depth)
    assert err <= 0.03


def binned_roi_info(frame, hdr, binning=2, x_offset=24, y_offset=10):
    """CameraInfo of a bigger sensor whose binned ROI is exactly this frame's image."""
    fx, fy, cx, cy = frame.k[0, 0], frame.k[1, 1], frame.k[0, 2], frame.k[1, 2]
    full = [fx * binning, 0.0, cx * binning + x_offset, 0.0, fy * binning, cy * binning + y_offset,
            0.0, 0.0, 1.0]
    ci = info(frame, hdr)
    ci.width, ci.height = W * binning + x_offset + 16, H * binning + y_offset + 8
    ci.k = full
    ci.p = full[:3] + [0.0] + full[3:6] + [0.0] + full[6:] + [0.0]
    ci.binning_x = ci.binning_y = binning
    ci.roi.x_offset, ci.roi.y_offset = x_offset, y_offset
    ci.roi.width, ci.roi.height = W * binning, H * binning
    return ci


def test_binned_roi_camera_info_gives_the_same_cloud(frames, engine):
    plain = FrameProcessor(engine)
    binned = FrameProcessor(engine)
    for f in frames:
        expected = plain.process(inputs(f))
        inp = inputs(f)
        inp.camera_info = binned_roi_info(f, inp.image.header)
        res = binned.process(inp)
    assert not res.problems
    # the same rays (x/z, y/z) per pixel; depth differs by the model double's noise
    xyz, reference = cloud_to_xyz(res.outputs['points']), cloud_to_xyz(expected.outputs['points'])
    assert xyz.shape == reference.shape
    np.testing.assert_allclose(xyz[:, :2] / xyz[:, 2:], reference[:, :2] / reference[:, 2:],
                               rtol=1e-5, atol=1e-6)
    # depth/camera_info copies the input: consumers apply the same binning and ROI
    ci = res.outputs['depth/camera_info']
    src = inp.camera_info
    assert (ci.width, ci.height, ci.binning_x, ci.binning_y) == (
        src.width, src.height, src.binning_x, src.binning_y)
    assert (ci.roi.x_offset, ci.roi.y_offset, ci.roi.width, ci.roi.height) == (
        src.roi.x_offset, src.roi.y_offset, src.roi.width, src.roi.height)
    assert list(ci.k) == list(src.k) and list(ci.p) == list(src.p)


def test_camera_info_not_describing_the_image_is_rejected_with_reason(frames, engine):
    proc = FrameProcessor(engine)
    inp = inputs(frames[0])
    inp.camera_info.binning_x = inp.camera_info.binning_y = 2   # the image is not binned
    res = proc.process(inp)
    (text,) = [t for r, t in res.problems if r == 'camera_info_size']
    assert f'{W // 2}x{H // 2}' in text and 'binning 2x2' in text and f'{W}x{H}' in text
    assert 'points' not in res.outputs and 'depth/camera_info' not in res.outputs


def test_distortion_is_reported_once(frames, engine):
    proc = FrameProcessor(engine)
    reasons = []
    for f in frames[:3]:
        inp = inputs(f)
        inp.camera_info.d = [0.1, -0.02, 0.0, 0.0, 0.0]
        res = proc.process(inp)
        reasons += [r for r, _ in res.problems]
        assert 'points' in res.outputs   # a warning, not a rejection
    assert reasons.count('camera_info_distorted') == 1


def serial(frames, truth, params):
    proc = FrameProcessor(ModelDouble(truth_path=truth, noise=0.002, seed=1), params)
    return [{k: message_bytes(m) for k, m in proc.process(inputs(f)).outputs.items()}
            for f in frames]


@pytest.fixture(scope='module')
def truth(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp('truth') / 'truth.npz'
    save_truth(frames, path)
    return str(path)


def test_two_stage_threads_equal_the_serial_path(frames, truth):
    from lotus_ros.ros.frame_queue import FrameQueue
    from lotus_ros.ros.pipeline import FramePipeline

    params = {'points.normals': True}
    proc = FrameProcessor(ModelDouble(truth_path=truth, noise=0.002, seed=1, delay=0.02),
                          params)
    queue = FrameQueue(drop_frames=False, maxsize=50)
    done, errors = [], []

    def infer(items):
        jobs = [proc.prepare(inp) for inp in items]
        proc.infer(jobs)
        return jobs

    pipe = FramePipeline(queue, infer, lambda job: done.append(proc.finish(job)),
                         errors.append, just_in_time=False)
    try:
        for f in frames:
            queue.put(inputs(f))
        deadline = time.monotonic() + 20
        while len(done) < len(frames) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        assert pipe.stop(2.0)
    assert not errors and len(done) == len(frames)
    assert [{k: message_bytes(m) for k, m in r.outputs.items()} for r in done] == \
        serial(frames, truth, params)


def test_infer_batches_frames_of_one_size(frames, truth):
    engine = ModelDouble(truth_path=truth, noise=0.002, seed=1)
    proc = FrameProcessor(engine)
    small = inputs(frames[2])
    small.image = array_to_image(np.ascontiguousarray(frames[2].rgb[::2, ::2]), 'rgb8',
                                 small.image.header)
    jobs = [proc.prepare(inputs(frames[0])), proc.prepare(small), proc.prepare(inputs(frames[1]))]
    proc.infer(jobs)
    assert engine.batch_sizes == [2, 1]
    assert [job.prediction.depth.shape for job in jobs] == [(H, W), (H // 2, W // 2), (H, W)]
    results = [proc.finish(job) for job in (jobs[0], jobs[2])]
    assert [{k: message_bytes(m) for k, m in r.outputs.items()} for r in results] == \
        serial(frames[:2], truth, {})


def test_changes_and_resets_apply_to_frames_prepared_after_them(frames, engine):
    proc = FrameProcessor(engine)
    for f in frames[:3]:
        proc.process(inputs(f))
    before = proc.prepare(inputs(frames[3]))
    proc.update_params({'visualization.colormap': 'gray'})
    proc.reset()
    after = proc.prepare(inputs(frames[4]))
    proc.infer([before, after])
    first, second = proc.finish(before), proc.finish(after)
    colored = [image_to_array(r.outputs['depth/colored']) for r in (first, second)]
    assert not (colored[0][..., 0] == colored[0][..., 1]).all()      # still turbo
    assert (colored[1][..., 0] == colored[1][..., 1]).all()          # gray from here on
    assert first.alignment.reason == 'ok'                            # the old filter, updated
    assert second.alignment.reason == 'initialised'                  # a new filter


def test_compact_layout_quantises_normals(frames, truth):
    outs = {}
    for layout in ('pcl', 'compact'):
        proc = FrameProcessor(ModelDouble(truth_path=truth, noise=0.002, seed=1),
                              {'points.normals': True, 'points.layout': layout})
        outs[layout] = [proc.process(inputs(f)).outputs['points'] for f in frames[:2]][-1]
    pcl, compact = outs['pcl'], outs['compact']
    assert (pcl.point_step, compact.point_step) == (28, 20)
    assert [(f.name, f.offset, f.datatype) for f in compact.fields] == [
        ('x', 0, 7), ('y', 4, 7), ('z', 8, 7), ('rgb', 12, 7), ('normal_x', 16, 1),
        ('normal_y', 17, 1), ('normal_z', 18, 1)]

    a, b = cloud_to_array(pcl), cloud_to_array(compact)
    for name in ('x', 'y', 'z', 'rgb'):
        np.testing.assert_array_equal(a[name].view(np.uint32), b[name].view(np.uint32))
    n = np.stack([a[f'normal_{c}'] for c in 'xyz'], axis=-1)
    q = np.stack([b[f'normal_{c}'] for c in 'xyz'], axis=-1)
    ok = np.isfinite(n).all(axis=1)
    assert ok.mean() > 0.9 and (q[~ok] == 0).all()
    np.testing.assert_array_equal(q[ok], np.rint(n[ok] * 127).astype(np.int8))
