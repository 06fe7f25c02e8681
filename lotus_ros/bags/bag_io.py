"""
rosbag2 reading and writing with the pure-Python `rosbags` library.

`rosbags` needs no ROS install, so bags can be written and read in CI and on machines without
rosbag2; the files are ordinary rosbag2 bags (mcap or sqlite3) that `ros2 bag play/info` accept.
Messages are kept as serialized CDR bytes end to end: whatever reads them (the player, the
offline processor) gets exactly the recorded bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from lotus_ros.core.stamps import seconds_to_ns
from lotus_ros.demo.synthetic import SyntheticFrame

TOPIC_IMAGE = '/camera/image_raw'
TOPIC_CAMERA_INFO = '/camera/camera_info'
TOPIC_SPARSE_DEPTH = '/lidar/depth'
FRAME_ID = 'camera_optical_frame'
STORAGES = ('mcap', 'sqlite3')
BAG_VERSION = 8
"""rosbag2 metadata version written (8 is read by Iron, Jazzy, Kilted and later)."""

# Per frame the side inputs are logged just before the image (1 us apart), so a player that
# follows log time delivers camera_info and LiDAR depth before the image they belong to.
LOG_OFFSETS_NS = {TOPIC_CAMERA_INFO: 0, TOPIC_SPARSE_DEPTH: 1_000, TOPIC_IMAGE: 2_000}


class BagMessage(NamedTuple):
    topic: str
    msgtype: str
    timestamp: int
    """Log (receive) time in nanoseconds, the time a player schedules by."""
    rawdata: bytes
    """Serialized CDR message exactly as stored."""


def make_typestore(extra_msgs: dict[str, str] | None = None) -> Typestore:
    """
    Return a typestore with the standard ROS 2 types plus extra .msg definitions.

    extra_msgs maps a type name like 'lotus_ros/msg/DepthAlignment' to its .msg text, so bags
    with the package's own messages carry a correct definition and hash.
    """
    store = get_typestore(Stores.LATEST)
    for name, text in (extra_msgs or {}).items():
        store.register(get_types_from_msg(text, name))
    return store


def _storage_plugin(storage: str) -> StoragePlugin:
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {STORAGES}, got {storage!r}')
    return StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3


class BagWriter:
    """Write serialized messages to a new rosbag2 bag; use as a context manager."""

    def __init__(self, path: str | Path, *, storage: str = 'mcap',
                 typestore: Typestore | None = None) -> None:
        self.path = Path(path)
        self.typestore = typestore or make_typestore()
        self._writer = Writer(self.path, version=BAG_VERSION,
                              storage_plugin=_storage_plugin(storage))
        self._connections: dict[str, object] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic before writing to it (msgtype like 'sensor_msgs/msg/Image')."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore)

    def write(self, topic: str, timestamp_ns: int, rawdata: bytes) -> None:
        """Append one serialized message at a log time in nanoseconds."""
        self._writer.write(self._connections[topic], int(timestamp_ns), rawdata)

    def serialize(self, message: object, msgtype: str) -> bytes:
        """
        Serialize a rosbags message object to CDR bytes, zero-padded to a multiple of 4.

        DDS delivers serialized payloads padded to 4 bytes, so that is what `ros2 bag record`
        stores; padding here keeps a replayed message byte-identical to the stored one.
        """
        data = bytes(self.typestore.serialize_cdr(message, msgtype))
        return data + bytes(-len(data) % 4)


def frame_messages(frame: SyntheticFrame, typestore: Typestore,
                   frame_id: str = FRAME_ID) -> list[tuple[str, str, object]]:
    """
    Build the camera_info, LiDAR depth and image messages of one synthetic frame.

    All three carry the same header (the frame's stamp), as a driver with hardware sync would.
    LiDAR depth is 32FC1 in metres with NaN for no return, registered to the camera image.
    """
    types = typestore.types
    stamp_ns = seconds_to_ns(frame.stamp)
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=stamp_ns // 1_000_000_000,
                                                   nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame_id)
    k = np.asarray(frame.k, dtype=np.float64)
    p = np.zeros((3, 4))
    p[:, :3] = k
    info = types['sensor_msgs/msg/CameraInfo'](
        header=header, height=frame.height, width=frame.width,
        # A rectified pinhole image: plumb_bob with zero coefficients, R = I, P = [K | 0].
        distortion_model='plumb_bob', d=np.zeros(5), k=k.ravel(), r=np.eye(3).ravel(),
        p=p.ravel(), binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                      width=0, do_rectify=False))
    image_cls = types['sensor_msgs/msg/Image']
    rgb = np.ascontiguousarray(frame.rgb, dtype=np.uint8)
    image = image_cls(header=header, height=frame.height, width=frame.width, encoding='rgb8',
                      is_bigendian=0, step=3 * frame.width, data=rgb.reshape(-1))
    sparse = np.ascontiguousarray(frame.sparse_depth, dtype='<f4')
    depth = image_cls(header=header, height=frame.height, width=frame.width, encoding='32FC1',
                      is_bigendian=0, step=4 * frame.width,
                      data=sparse.view(np.uint8).reshape(-1))
    return [
        (TOPIC_CAMERA_INFO, 'sensor_msgs/msg/CameraInfo', info),
        (TOPIC_SPARSE_DEPTH, 'sensor_msgs/msg/Image', depth),
        (TOPIC_IMAGE, 'sensor_msgs/msg/Image', image),
    ]


def write_sequence_bag(frames: Iterable[SyntheticFrame], path: str | Path, *,
                       storage: str = 'mcap', frame_id: str = FRAME_ID) -> Path:
    """Write a synthetic sequence as a rosbag2 (raises if path exists; bags are never merged)."""
    with BagWriter(path, storage=storage) as bag:
        for frame in frames:
            stamp_ns = seconds_to_ns(frame.stamp)
            for topic, msgtype, message in frame_messages(frame, bag.typestore, frame_id):
                bag.add_topic(topic, msgtype)
                bag.write(topic, stamp_ns + LOG_OFFSETS_NS[topic],
                          bag.serialize(message, msgtype))
    return Path(path)


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Yield the bag's messages in log-time order, optionally only some topics."""
    wanted = None if topics is None else set(topics)
    with Reader(Path(path)) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        for connection, timestamp, rawdata in reader.messages(connections=connections):
            yield BagMessage(connection.topic, connection.msgtype, timestamp, bytes(rawdata))


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """Return {topic: (msgtype, message count)} from the bag's metadata."""
    with Reader(Path(path)) as reader:
        return {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
