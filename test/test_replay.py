"""Replay: the player (its own process) delivers every recorded message byte for byte."""

from __future__ import annotations

import subprocess
import sys
import time

from demo_ros_env import RawRecorder, fresh_domain_id, ros_env
import pytest

from lotus_ros import bag_io
from lotus_ros.synthetic import render_sequence

serialization = pytest.importorskip('rclpy.serialization')
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

TOPICS = {'/camera/image_raw': Image, '/camera/camera_info': CameraInfo, '/lidar/depth': Image}
FRAMES = 5


@pytest.fixture(scope='module')
def frames():
    return render_sequence(FRAMES, width=64, height=48, seed=4, fps=10.0)


@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_player_delivers_recorded_bytes_and_clock(tmp_path, frames, storage):
    bag = bag_io.write_sequence_bag(frames, tmp_path / 'bag', storage=storage)
    recorded = {t: [m.rawdata for m in bag_io.read_messages(bag, topics=[t])] for t in TOPICS}
    bag_start = min(m.timestamp for m in bag_io.read_messages(bag))
    bag_end = max(m.timestamp for m in bag_io.read_messages(bag))
    domain = fresh_domain_id()
    recorder = RawRecorder(domain, {**TOPICS, '/clock': Clock})
    try:
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, '-m', 'lotus_ros.player', str(bag), '--rate', '2', '--clock',
             '--linger', '0.5'],
            env=ros_env(domain), capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - start
        assert result.returncode == 0, result.stderr
        assert 'replay' in result.stderr  # the progress bar
        assert recorder.wait_for({t: FRAMES for t in TOPICS}, timeout=5.0)
        time.sleep(0.2)
        messages = recorder.messages
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
    bag = bag_io.write_sequence_bag(frames, tmp_path / 'bag')
    domain = fresh_domain_id()
    recorder = RawRecorder(domain, TOPICS)
    try:
        result = subprocess.run(
            [sys.executable, '-m', 'lotus_ros.player', str(bag), '--rate', '0', '--linger', '0.5',
             '--topics', '/camera/image_raw', '--remap', '/camera/image_raw:=/lidar/depth'],
            env=ros_env(domain), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert recorder.wait_for({'/lidar/depth': FRAMES}, timeout=5.0)
        time.sleep(0.2)
        messages = recorder.messages
    finally:
        recorder.close()
    images = [m.rawdata for m in bag_io.read_messages(bag, topics=['/camera/image_raw'])]
    assert [d for _, d in messages['/lidar/depth']] == images
    assert messages['/camera/image_raw'] == [] and messages['/camera/camera_info'] == []
    missing = subprocess.run([sys.executable, '-m', 'lotus_ros.player', str(tmp_path / 'nope')],
                             env=ros_env(domain), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and 'cannot open' in missing.stderr
