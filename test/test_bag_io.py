"""Bag round trips: what the synthetic frames hold is what a rosbags or rclpy reader gets back."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from lotus_ros.bags import bag_io
from lotus_ros.core.stamps import seconds_to_ns
from lotus_ros.demo.synthetic import render_sequence, write_sequence_bag

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def frames():
    return render_sequence(3, width=40, height=30, scene='outdoor', seed=2)


@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_round_trip_with_rosbags(tmp_path, frames, storage):
    path = write_sequence_bag(frames, tmp_path / 'bag', storage=storage)
    metadata = (path / 'metadata.yaml').read_text()
    assert f'storage_identifier: {storage}' in metadata
    store = bag_io.make_typestore()
    with Reader(path) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            '/camera/image_raw': 'sensor_msgs/msg/Image',
            '/camera/camera_info': 'sensor_msgs/msg/CameraInfo',
            '/lidar/depth': 'sensor_msgs/msg/Image'}
        rows = [(c.topic, t, store.deserialize_cdr(raw, c.msgtype))
                for c, t, raw in reader.messages()]
    assert len(rows) == 9
    # Per frame: camera_info, then LiDAR depth, then the image, in log-time order.
    assert [r[0] for r in rows[:3]] == ['/camera/camera_info', '/lidar/depth', '/camera/image_raw']
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    for i, frame in enumerate(frames):
        info, depth, image = (r[2] for r in rows[3 * i:3 * i + 3])
        for msg in (info, depth, image):
            assert msg.header.frame_id == 'camera_optical_frame'
            # seconds_to_ns rounds stamp * 1e9, a float64 spaced 256 ns at 1.7e18 (<= 0.54
            # spacings of the stamp in seconds), and adding sec back rounds to <= 0.5 spacing.
            # (approx's default rel=1e-6 would accept 1700 s here.)
            assert msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 == \
                pytest.approx(frame.stamp, rel=0, abs=2 * np.spacing(frame.stamp))
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec <= rows[3 * i][1]
        assert (info.width, info.height) == (40, 30)
        np.testing.assert_array_equal(info.k.reshape(3, 3), frame.k)
        np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], frame.k)
        assert info.distortion_model == 'plumb_bob' and not np.any(info.d)
        assert image.encoding == 'rgb8' and image.step == 120
        np.testing.assert_array_equal(image.data.reshape(30, 40, 3), frame.rgb)
        assert depth.encoding == '32FC1' and depth.step == 160 and depth.is_bigendian == 0
        decoded = depth.data.view('<f4').reshape(30, 40)
        assert decoded.tobytes() == frame.sparse_depth.astype('<f4').tobytes()
        assert np.isnan(decoded).any() and np.isfinite(decoded).any()


@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_rclpy_deserializes_the_recorded_bytes(tmp_path, frames, storage):
    serialization = pytest.importorskip('rclpy.serialization')
    from sensor_msgs.msg import CameraInfo, Image

    path = write_sequence_bag(frames, tmp_path / 'bag', storage=storage)
    messages = list(bag_io.read_messages(path))
    assert len(messages) == 9
    assert bag_io.bag_topics(path)['/camera/image_raw'] == ('sensor_msgs/msg/Image', 3)
    types = {'sensor_msgs/msg/Image': Image, 'sensor_msgs/msg/CameraInfo': CameraInfo}
    images = [serialization.deserialize_message(m.rawdata, types[m.msgtype])
              for m in messages if m.topic == '/camera/image_raw']
    for frame, msg in zip(frames, images, strict=True):
        assert msg.encoding == 'rgb8'
        assert bytes(msg.data) == frame.rgb.tobytes()
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == \
            seconds_to_ns(frame.stamp)
    only_info = list(bag_io.read_messages(path, topics=['/camera/camera_info']))
    assert [m.topic for m in only_info] == ['/camera/camera_info'] * 3
    info = serialization.deserialize_message(only_info[0].rawdata, CameraInfo)
    np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), frames[0].k)
    assert list(bag_io.read_messages(path, topics=['/nothing'])) == []


def test_custom_message_type_and_refusals(tmp_path):
    text = (ROOT / 'msg' / 'DepthAlignment.msg').read_text()
    store = bag_io.make_typestore({'lotus_ros/msg/DepthAlignment': text})
    cls = store.types['lotus_ros/msg/DepthAlignment']
    header = store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=5, nanosec=7), frame_id='cam')
    msg = cls(header=header, space='disparity', scale=2.0, shift=0.5,
              covariance=np.array([1.0, 0.0, 0.0, 1.0]), candidates=10, inliers=9,
              residual_rms=0.01, age=0.0, valid=True, source='carried', uncertainty=0.02,
              resets=1)
    with bag_io.BagWriter(tmp_path / 'out', typestore=store) as bag:
        bag.add_topic('/alignment', 'lotus_ros/msg/DepthAlignment')
        bag.write('/alignment', 5_000_000_007, bag.serialize(msg, 'lotus_ros/msg/DepthAlignment'))
    (back,) = bag_io.read_messages(tmp_path / 'out')
    decoded = store.deserialize_cdr(back.rawdata, back.msgtype)
    assert decoded.scale == 2.0 and decoded.inliers == 9 and decoded.valid
    assert (decoded.source, decoded.uncertainty, decoded.resets) == ('carried', 0.02, 1)
    with pytest.raises(Exception, match='exists'):
        write_sequence_bag([], tmp_path / 'out')
    with pytest.raises(ValueError):
        bag_io.BagWriter(tmp_path / 'x', storage='rosbag1')


def test_bag_io_does_not_depend_on_the_synthetic_scene():
    """A tool for real bags imports no ray caster."""
    code = 'import sys, lotus_ros.bags.bag_io; print("lotus_ros.demo.synthetic" in sys.modules)'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == 'False'
