"""Replay: the player (its own process) delivers every recorded message byte for byte."""

from __future__ import annotations

import subprocess
import sys
import time

from node_harness import Client, next_domain, reliable, ros_env
import numpy as np
import pytest

from lotus_ros.bags import bag_io
from lotus_ros.benchmarks.model_double import DOUBLE_FACTORY
from lotus_ros.demo.synthetic import render_sequence, write_sequence_bag

serialization = pytest.importorskip('rclpy.serialization')
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

TOPICS = {'/camera/image_raw': Image, '/camera/camera_info': CameraInfo, '/lidar/depth': Image}
FRAMES = 5


def _raw_recorder(domain: int, topics: dict[str, type]) -> Client:
    """Record every message of `topics` as the bytes that crossed DDS."""
    client = Client(domain, 'replay_test_recorder')
    for topic, msg_type in topics.items():
        client.subscribe(msg_type, topic, reliable(1000), raw=True)
    return client


@pytest.fixture(scope='module')
def frames():
    return render_sequence(FRAMES, width=64, height=48, seed=4, fps=10.0)


@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_player_delivers_recorded_bytes_and_clock(tmp_path, frames, storage):
    bag = write_sequence_bag(frames, tmp_path / 'bag', storage=storage)
    recorded = {t: [m.rawdata for m in bag_io.read_messages(bag, topics=[t])] for t in TOPICS}
    bag_start = min(m.timestamp for m in bag_io.read_messages(bag))
    bag_end = max(m.timestamp for m in bag_io.read_messages(bag))
    domain = next_domain()
    recorder = _raw_recorder(domain, {**TOPICS, '/clock': Clock})
    try:
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, '-m', 'lotus_ros.bags.player', str(bag), '--rate', '2', '--clock',
             '--linger', '0.5'],
            env=ros_env(domain), capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - start
        assert result.returncode == 0, result.stderr
        assert 'replay' in result.stderr  # the progress bar
        assert recorder.wait_for_counts({t: FRAMES for t in TOPICS}, timeout=5.0)
        time.sleep(0.2)
        messages = {t: recorder.timed(t) for t in recorder.received}
    finally:
        recorder.close()
    for topic in TOPICS:
        assert [data for _, data in messages[topic]] == recorded[topic], topic
    # Recorded timing at rate 2: 0.4 s of bag takes at least 0.2 s to play.
    first, last = messages['/camera/image_raw'][0][0], messages['/camera/image_raw'][-1][0]
    assert last - first >= 0.18
    assert elapsed >= 0.2
    clock = [serialization.deserialize_message(d, Clock).clock
             for _, d in messages['/clock']]
    ns = [c.sec * 10**9 + c.nanosec for c in clock]
    assert len(ns) >= FRAMES
    assert ns == sorted(ns)
    assert bag_start <= ns[0] and ns[-1] == bag_end


def test_rate_topics_and_bad_bag(tmp_path, frames):
    bag = write_sequence_bag(frames, tmp_path / 'bag')
    domain = next_domain()
    recorder = _raw_recorder(domain, TOPICS)
    try:
        result = subprocess.run(
            [sys.executable, '-m', 'lotus_ros.bags.player', str(bag), '--rate', '0',
             '--linger', '0.5',
             '--topics', '/camera/image_raw', '--remap', '/camera/image_raw:=/lidar/depth'],
            env=ros_env(domain), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert recorder.wait_for_counts({'/lidar/depth': FRAMES}, timeout=5.0)
        time.sleep(0.2)
        messages = {t: recorder.timed(t) for t in recorder.received}
    finally:
        recorder.close()
    images = [m.rawdata for m in bag_io.read_messages(bag, topics=['/camera/image_raw'])]
    assert [d for _, d in messages['/lidar/depth']] == images
    assert messages['/camera/image_raw'] == [] and messages['/camera/camera_info'] == []
    missing = subprocess.run([sys.executable, '-m', 'lotus_ros.bags.player',
                              str(tmp_path / 'nope')],
                             env=ros_env(domain), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and 'cannot open' in missing.stderr


def _node_installed() -> bool:
    from lotus_ros.installed import node_executable

    return node_executable() is not None


@pytest.mark.skipif(not _node_installed(), reason='lotus_node not installed (make build, '
                    'source install/setup.bash)')
@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_replay_into_node_equals_offline_processing(tmp_path, monkeypatch, storage):
    """Node with sim time and drop_frames false: every frame out, same stamps, same arrays."""
    from lotus_ros.bags.process_bag import load_params, process_bag
    from lotus_ros.benchmarks.model_double import save_truth
    from lotus_ros.core.stamps import seconds_to_ns, stamp_to_ns
    from lotus_ros.demo import run as demo
    from lotus_ros.ros.images import image_to_array

    frames = render_sequence(6, width=96, height=72, seed=6)
    bag = write_sequence_bag(frames, tmp_path / 'bag', storage=storage)
    truth = tmp_path / 'truth.npz'
    save_truth(frames, truth)
    monkeypatch.setenv('LOTUS_DOUBLE_TRUTH', str(truth))
    params = demo.demo_parameters('', '', device='cpu', processing_resolution=96,
                                  extra={'engine_factory': DOUBLE_FACTORY})
    params_file = demo.write_params_file(tmp_path / 'params.yaml', params)
    recording = demo.run_pipeline(
        bag, [params_file], domain_id=next_domain(), num_images=len(frames),
        log_path=tmp_path / 'node.log', rate=2.0, timeout=60.0, progress=False,
        env_extra={'PYTHONPATH': ros_env(0)['PYTHONPATH'], 'LOTUS_DOUBLE_TRUTH': str(truth)})
    stamps = [seconds_to_ns(f.stamp) for f in frames]

    def stamp(msg):
        return stamp_to_ns(msg.header.stamp)

    live = {}
    for name in ('depth/relative', 'depth/image', 'points'):
        got = [r.msg for r in recording.outputs[name]]
        assert [stamp(m) for m in got] == stamps, name
        assert all(m.header.frame_id == 'camera_optical_frame' for m in got)
        live[name] = got

    out = tmp_path / 'offline'
    counts = process_bag(bag, out, load_params([str(params_file)]), storage=storage,
                         progress=False)
    assert counts['images'] == len(frames)
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    for name in ('depth/relative', 'depth/image'):
        offline = [deserialize_message(m.rawdata, Image)
                   for m in bag_io.read_messages(out, topics=[f'/{name}'])]
        assert [stamp(m) for m in offline] == stamps
        for a, b in zip(live[name], offline, strict=True):
            assert image_to_array(a).tobytes() == image_to_array(b).tobytes(), name
    # and the metric depth is really metric: close to the ground truth after the first frames
    depth = image_to_array(live['depth/image'][-1]).astype(float)
    gt = frames[-1].depth
    ok = np.isfinite(depth) & np.isfinite(gt)
    assert ok.mean() > 0.9
    assert np.mean(np.abs(depth[ok] - gt[ok]) / gt[ok]) < 0.05


def test_process_bag_parameters(tmp_path, capsys):
    from lotus_ros.bags.process_bag import load_params, main

    path = tmp_path / 'p.yaml'
    path.write_text('other_node:\n  ros__parameters:\n    drop_frames: true\n'
                    '/lotus/lotus:\n  ros__parameters:\n    drop_frames: false\n'
                    '    alignment:\n      mode: scale\n      z_max: 50\n'
                    '    qos_overrides:\n      /x:\n        subscription:\n'
                    '          depth: 3\n')
    params = load_params([str(path)], ['points.stride:=2'])
    assert params['drop_frames'] is False
    assert params['alignment.mode'] == 'scale' and params['alignment.z_max'] == 50.0
    assert params['points.stride'] == 2
    with pytest.raises(ValueError, match='alignment.mode'):
        load_params([], ['alignment.mode:=bogus'])
    with pytest.raises(ValueError, match='unknown'):
        load_params([], ['no.such:=1'])
    assert main([str(tmp_path / 'in'), str(tmp_path / 'out'), '-p', 'points.stride:=0']) == 2
    assert 'points.stride' in capsys.readouterr().err


def test_process_bag_takes_one_camera_of_a_multi_camera_file(tmp_path):
    from lotus_ros.bags.process_bag import load_params

    path = tmp_path / 'cams.yaml'
    path.write_text('/lotus/lotus:\n  ros__parameters:\n    cameras: [front, left]\n'
                    '    points:\n      stride: 2\n'
                    '    cameras_params:\n      left:\n        points:\n          stride: 4\n'
                    '        alignment:\n          z_max: 20\n')
    assert load_params([str(path)])['points.stride'] == 2          # the global values
    assert load_params([str(path)], camera='front')['points.stride'] == 2
    left = load_params([str(path)], camera='left')
    assert left['points.stride'] == 4 and left['alignment.z_max'] == 20.0
    assert not any(name.startswith('cameras_params.') for name in left)
    with pytest.raises(ValueError, match='rear'):
        load_params([str(path)], camera='rear')
    with pytest.raises(ValueError, match='unknown parameter'):
        load_params([str(path)], ['cameras_params.rear.points.stride:=3'])
    with pytest.raises(ValueError, match='points.stride'):
        load_params([str(path)], ['cameras_params.left.points.stride:=0'], camera='left')
