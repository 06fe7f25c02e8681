"""The player on bags holding more than camera topics: missing types, old names, empty bags."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from node_harness import Client, next_domain, reliable, ros_env
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo, Image

from lotus_ros.bags import bag_io
from lotus_ros.bags.player import message_class
from lotus_ros.core.stamps import seconds_to_ns
from lotus_ros.demo.synthetic import frame_messages, render_sequence

FRAMES = 4
REMAPPED_IMAGE = '/remapped/image'
# a message package no ROS install has: always skipped, whatever is installed on the machine
ABSENT_TYPE = 'lotus_absent_msgs/msg/Nothing'
PLUGINS = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}


def _installed(msgtype: str) -> bool:
    return importlib.util.find_spec(msgtype.split('/')[0]) is not None


def write_bag(path, storage: str, *, cameras: bool = True, others: bool = True) -> dict:
    """
    Write a bag the way a robot records one; return {topic: (stored msgtype, count)}.

    Camera topics (camera_info under its old-style type name 'sensor_msgs/CameraInfo'), /tf and
    a topic of a message package that is never installed (under an old-style name too).
    """
    store = bag_io.make_typestore({ABSENT_TYPE: 'int32 value\n'})
    written: dict[str, tuple[str, int]] = {}
    with Writer(path, version=bag_io.BAG_VERSION, storage_plugin=PLUGINS[storage]) as bag:
        connections = {}

        def write(topic, msgtype, stored_type, message, timestamp):
            if topic not in connections:
                msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
                connections[topic] = bag.add_connection(
                    topic, stored_type, msgdef=msgdef, rihs01=store.hash_rihs01(msgtype))
            data = bytes(store.serialize_cdr(message, msgtype))
            bag.write(connections[topic], timestamp, data + bytes(-len(data) % 4))
            written[topic] = (stored_type, written.get(topic, (stored_type, 0))[1] + 1)

        types = store.types
        for frame in render_sequence(FRAMES, width=32, height=24, seed=2):
            stamp = seconds_to_ns(frame.stamp)
            if others:
                tf = types['tf2_msgs/msg/TFMessage'](transforms=[
                    types['geometry_msgs/msg/TransformStamped'](
                        header=types['std_msgs/msg/Header'](
                            stamp=types['builtin_interfaces/msg/Time'](sec=1, nanosec=2),
                            frame_id='base_link'),
                        child_frame_id='camera_optical_frame',
                        transform=types['geometry_msgs/msg/Transform'](
                            translation=types['geometry_msgs/msg/Vector3'](x=0.1, y=0.0, z=0.2),
                            rotation=types['geometry_msgs/msg/Quaternion'](
                                x=0.0, y=0.0, z=0.0, w=1.0)))])
                write('/tf', 'tf2_msgs/msg/TFMessage', 'tf2_msgs/msg/TFMessage', tf, stamp)
                write('/absent', ABSENT_TYPE, 'lotus_absent_msgs/Nothing',  # old-style name
                      types[ABSENT_TYPE](value=7), stamp + 1)
            if cameras:
                for topic, msgtype, message in frame_messages(frame, store):
                    stored = ('sensor_msgs/CameraInfo' if msgtype.endswith('CameraInfo')
                              else msgtype)
                    write(topic, msgtype, stored, message, stamp + 2)
    return written


def run_player(bag, domain: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'lotus_ros.bags.player', str(bag), '--rate', '0', '--linger', '0.5',
         '--no-progress', *extra],
        env=ros_env(domain), capture_output=True, text=True, timeout=60)


def test_message_class_understands_old_style_names():
    assert message_class('sensor_msgs/Image') is Image
    assert message_class('sensor_msgs/msg/CameraInfo') is CameraInfo
    with pytest.raises(ImportError):
        message_class(ABSENT_TYPE)
    with pytest.raises(ImportError):
        message_class('sensor_msgs/msg/NoSuchType')
    with pytest.raises(ValueError):
        message_class('Image')


@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_uninstalled_types_are_skipped_and_cameras_play(tmp_path, storage):
    written = write_bag(tmp_path / 'bag', storage)
    assert bag_io.bag_topics(tmp_path / 'bag') == written
    skipped = sorted(t for t, (msgtype, _) in written.items()
                     if t == '/absent' or not _installed(msgtype))
    assert '/absent' in skipped and '/camera/camera_info' not in skipped
    domain = next_domain()
    client = Client(domain, 'player_test_subscriber')
    try:
        client.subscribe(Image, REMAPPED_IMAGE, reliable(100), raw=True)
        client.subscribe(CameraInfo, '/camera/camera_info', reliable(100), raw=True)
        client.subscribe(Image, '/lidar/depth', reliable(100), raw=True)
        result = run_player(tmp_path / 'bag', domain, '--remap',
                            f'/camera/image_raw:={REMAPPED_IMAGE}')
        assert result.returncode == 0, result.stderr
        counts = {REMAPPED_IMAGE: FRAMES, '/camera/camera_info': FRAMES, '/lidar/depth': FRAMES}
        assert client.wait_for_counts(counts, timeout=5.0), client.received.keys()
        received = {t: client.messages(t) for t in counts}
    finally:
        client.close()
    recorded = {t: [m.rawdata for m in bag_io.read_messages(tmp_path / 'bag', topics=[t])]
                for t in ('/camera/image_raw', '/camera/camera_info')}
    assert received[REMAPPED_IMAGE] == recorded['/camera/image_raw']
    assert received['/camera/camera_info'] == recorded['/camera/camera_info']
    warnings = [line for line in result.stderr.splitlines() if 'not installed' in line]
    assert len(warnings) == 1, result.stderr
    assert all(f'{t} (' in warnings[0] for t in skipped)
    assert '/camera' not in warnings[0]
    assert 'deprecated' not in result.stderr   # --remap is not parsed by rcl
    summary = result.stderr.strip().splitlines()[-1]
    assert f'/camera/image_raw: {FRAMES}' in summary and '/absent' not in summary


def test_bags_with_nothing_to_play_say_so(tmp_path):
    domain = next_domain()
    write_bag(tmp_path / 'empty', 'mcap', cameras=False, others=False)
    assert bag_io.bag_topics(tmp_path / 'empty') == {}
    empty = run_player(tmp_path / 'empty', domain)
    assert empty.returncode == 1
    assert 'nothing was played' in empty.stderr and 'no topics' in empty.stderr
    write_bag(tmp_path / 'others', 'sqlite3', cameras=False)
    others = run_player(tmp_path / 'others', domain)
    assert others.returncode == 1
    assert 'nothing was played' in others.stderr and 'no playable topic' in others.stderr
    assert 'Traceback' not in empty.stderr + others.stderr
