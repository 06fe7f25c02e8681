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

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

TOPIC_IMAGE = '/camera/image_raw'
TOPIC_CAMERA_INFO = '/camera/camera_info'
TOPIC_SPARSE_DEPTH = '/lidar/depth'
STORAGES = ('mcap', 'sqlite3')
BAG_VERSION = 8
"""rosbag2 metadata version written (8 is read by Iron, Jazzy, Kilted and later)."""


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
