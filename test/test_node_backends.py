"""
The running node on each backend's tiny random checkpoints (Lotus-D, Lotus-G, Marigold).

Depth, normals, clouds and, for Lotus-G and Marigold ensembles, depth/uncertainty must come out
with the image's header and size; the uncertainty in metres, checked against the same engine
run in this process. alignment.fixed_scale makes every frame metric whatever random weights
predict (a sparse fit to random output could be refused). Last, temporal.stabilize through the
node with the model double: depth/relative_raw, the alignment's source and the stabiliser's
/diagnostics status.
"""

import math
import time

from node_harness import (
    Client,
    NodeProcess,
    camera_info,
    header_at,
    next_domain,
    reliable,
    wait_until_ready,
)
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from lotus_ros.core.engine import load_engine
from lotus_ros.demo.random_models import save_random_lotus, save_random_marigold
from lotus_ros.demo.synthetic import render_sequence
from lotus_ros.ros.clouds import cloud_to_array
from lotus_ros.ros.images import array_to_image, image_to_array

W, H = 80, 64
# float32 machine epsilon, 2^-23: one rounding moves a value by at most EPS32 / 2 of itself.
EPS32 = float(np.finfo(np.float32).eps)
SCALE, SHIFT = 2.0, 0.1
TOPICS = {'depth/image': Image, 'depth/camera_info': CameraInfo, 'depth/relative': Image,
          'normal/image': Image, 'points': PointCloud2, 'depth/uncertainty': Image}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory, tiny_lotus):
    root = tmp_path_factory.mktemp('node_backends')
    return {
        'lotus-d': (tiny_lotus['depth'], tiny_lotus['normal']),
        'lotus-g': (save_random_lotus(root / 'lotus-depth-g-tiny-disparity', seed=4,
                                      vae_seed=0, generative=True),
                    save_random_lotus(root / 'lotus-normal-g-tiny', seed=5, vae_seed=0,
                                      generative=True)),
        'marigold': (save_random_marigold(root / 'marigold-depth-tiny'),
                     save_random_marigold(root / 'marigold-normals-tiny', task='normals')),
    }


@pytest.mark.parametrize('backend, ensemble_size', [
    ('lotus-d', 1), ('lotus-g', 2), ('marigold', 1), ('marigold', 2)])
def test_backend_publishes_every_output(tmp_path, checkpoints, backend, ensemble_size):
    if backend == 'marigold' and ensemble_size > 1:
        pytest.importorskip('scipy', reason='Marigold depth ensembles need scipy')
    from lotus_ros.msg import DepthAlignment

    depth_model, normal_model = checkpoints[backend]
    engine_params = {'backend': backend, 'depth_model': str(depth_model),
                     'normal_model': str(normal_model), 'ensemble_size': ensemble_size,
                     'seed': 3, 'device': 'cpu', 'dtype': 'float32',
                     'processing_resolution': 64, 'local_files_only': True}
    params = {**engine_params, 'engine_factory': '', 'lazy': False, 'drop_frames': False,
              'alignment.source': 'none', 'alignment.fixed_scale': SCALE,
              'alignment.fixed_shift': SHIFT, 'points.normals': True}
    frame = render_sequence(1, width=W, height=H, scene='room', seed=2)[0]
    domain = next_domain()
    node = NodeProcess(tmp_path, domain, params)
    client = Client(domain)
    try:
        for name, msg_type in {**TOPICS, 'alignment': DepthAlignment}.items():
            client.subscribe(msg_type, name, reliable())
        pub_image = client.publisher(Image, 'image')
        pub_info = client.publisher(CameraInfo, 'camera_info')
        wait_until_ready(client, node, pub_image, pub_info, timeout=120.0)
        hdr = header_at(frame.stamp)
        pub_info.publish(camera_info(frame.k, W, H, hdr))
        pub_image.publish(array_to_image(frame.rgb, 'rgb8', hdr))
        expected = set(TOPICS) | {'alignment'}
        if ensemble_size == 1:
            expected.discard('depth/uncertainty')
        assert client.wait_for(lambda: all(client.count(t) for t in expected), 120.0), \
            node.log()
        assert node.alive(), node.log()
        out = {name: client.messages(name) for name in TOPICS}
        out['alignment'] = client.messages('alignment')
    finally:
        client.close()
        node.stop()

    for name in expected:
        assert len(out[name]) == 1, name
        assert out[name][0].header == hdr, name
    for name, encoding in (('depth/image', '32FC1'), ('depth/relative', '32FC1'),
                           ('normal/image', '32FC3')):
        msg = out[name][0]
        assert (msg.encoding, msg.width, msg.height) == (encoding, W, H), name
    normals = image_to_array(out['normal/image'][0])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=2), 1.0, atol=4 * EPS32)
    cloud = out['points'][0]
    assert (cloud.height, cloud.width) == (H, W)
    assert {'x', 'y', 'z', 'rgb', 'normal_z'} <= set(cloud_to_array(cloud).dtype.names)
    align = out['alignment'][0]
    assert align.valid and align.source == 'sparse' and (align.scale, align.shift) == (SCALE,
                                                                                          SHIFT)
    # Marigold predicts affine-invariant depth, both Lotus checkpoints here disparity
    assert align.space == ('depth' if backend == 'marigold' else 'disparity')
    if ensemble_size == 1:
        assert out['depth/uncertainty'] == []       # published with the others, or never
        return

    uncertainty = out['depth/uncertainty'][0]
    assert (uncertainty.encoding, uncertainty.width, uncertainty.height) == ('32FC1', W, H)
    u = image_to_array(uncertainty).astype(np.float64)
    z = image_to_array(out['depth/image'][0]).astype(np.float64)
    # the same engine here (seeded draws: the node's frame is reproducible) gives the std of p
    engine = load_engine(engine_params)
    assert engine.has_uncertainty
    sigma = engine.predict_batch([frame.rgb])[0].uncertainty.astype(np.float64)
    assert sigma.shape == (H, W)
    known = np.isfinite(z) & np.isfinite(sigma)
    assert np.array_equal(np.isfinite(u), known) and known.mean() > 0.5
    # metres: disparity z = 1 / (s p + t) gives s sigma z^2, depth z = s p + t gives s sigma;
    # the node's float32 products round at most three times (EPS32 / 2 each)
    metres = SCALE * sigma * (z * z if align.space == 'disparity' else 1.0)
    np.testing.assert_allclose(u[known], metres[known], rtol=1.5 * EPS32, atol=0.0)
    assert math.isfinite(float(np.max(u[known]))) and np.max(u[known]) > 0.0


def test_stabilizing_node_publishes_raw_and_reports_the_stabiliser(tmp_path):
    """temporal.stabilize through the node: depth/relative_raw, alignment and /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray

    from lotus_ros.benchmarks.model_double import save_truth
    from lotus_ros.msg import DepthAlignment

    frames = render_sequence(150, width=W, height=H, scene='room', seed=2)[:3]
    save_truth(frames, tmp_path / 'truth.npz')
    domain = next_domain()
    node = NodeProcess(tmp_path, domain, {'temporal.stabilize': True, 'drop_frames': False,
                                          'lazy': False, 'diagnostics_period': 0.2},
                       env={'LOTUS_DOUBLE_TRUTH': str(tmp_path / 'truth.npz')})
    client = Client(domain)
    try:
        for name in ('depth/relative', 'depth/relative_raw', 'depth/image'):
            client.subscribe(Image, name, reliable())
        client.subscribe(DepthAlignment, 'alignment', reliable())
        client.subscribe(DiagnosticArray, '/diagnostics')
        pub_image = client.publisher(Image, 'image')
        pub_info = client.publisher(CameraInfo, 'camera_info')
        pub_sparse = client.publisher(Image, 'sparse_depth')
        wait_until_ready(client, node, pub_image, pub_info, pub_sparse)
        for f in frames:
            hdr = header_at(f.stamp)
            pub_info.publish(camera_info(f.k, W, H, hdr))
            pub_sparse.publish(array_to_image(f.sparse_depth, '32FC1', hdr))
            pub_image.publish(array_to_image(f.rgb, 'rgb8', hdr))
            time.sleep(0.1)
        assert client.wait_for(lambda: client.count('alignment') == len(frames), 30), node.log()

        # /diagnostics is periodic: only a status published after the last frame describes it
        published_before = client.count('/diagnostics')

        def temporal_status():
            for arr in reversed(client.messages('/diagnostics')[published_before:]):
                for status in arr.status:
                    if status.name.endswith('temporal'):
                        return {kv.key: kv.value for kv in status.values}
            return None

        assert client.wait_for(lambda: temporal_status() is not None, 10), node.log()
        raw = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m
               for m in client.messages('depth/relative_raw')}
        stabilised = client.messages('depth/relative')
        alignments = client.messages('alignment')
        status = temporal_status()
    finally:
        client.close()
        node.stop()
    assert len(raw) == len(stabilised) == len(frames)
    # the first frame is its own reference: stabilised and raw outputs are the same
    first = stabilised[0]
    np.testing.assert_array_equal(image_to_array(first), image_to_array(
        raw[first.header.stamp.sec * 10**9 + first.header.stamp.nanosec]))
    assert [a.source for a in alignments] == ['sparse'] * len(frames)
    assert all(a.resets == 0 and a.valid for a in alignments)
    assert status['status'] == 'ok' and status['resets_total'] == '0'
