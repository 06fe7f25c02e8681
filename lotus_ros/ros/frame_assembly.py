"""
One frame's inputs: the image paired with its camera_info, sparse input and points transform.

The node and process_bag both assemble frames here, so a bag pairs the same side messages with
each image in both. Side inputs are never synchronised inputs: a stalled LiDAR or a driver
without camera_info never holds images back for longer than a bounded wait. Whether to wait is
decided from stamps alone (not a wall clock), so the rules hold under sim time and for bags:
a side stream whose newest message is older than the image is still expected when it was alive
a moment ago (its message for this frame may be in flight, as with image_transport's
CameraPublisher, which publishes the image before its camera_info).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from lotus_ros.core.stamps import stamp_to_ns
from lotus_ros.ros.stamp_cache import StampCache

# A side stream whose newest stamp is this much older than the image is stalled, not late.
ALIVE_NS = 1_000_000_000

# (translation xyz, quaternion xyzw) image frame <- cloud frame; None = identity; False = unknown
Transform = tuple[tuple[float, float, float], tuple[float, float, float, float]]
TransformLookup = Callable[[PointCloud2, Any], 'Transform | None | bool']


@dataclass
class FrameInputs:
    image: Image | CompressedImage
    camera_info: CameraInfo | None = None
    sparse: Image | PointCloud2 | None = None
    # target(image frame) <- cloud frame as (translation xyz, quaternion xyzw), for sparse_points
    points_transform: Transform | None = None


def static_points_transform(params: dict[str, Any]) -> Transform:
    """alignment.points_transform as (translation xyz, quaternion xyzw): the fallback to tf2."""
    v = params['alignment.points_transform']
    return tuple(v[:3]), tuple(v[3:])


class FrameAssembler:
    """
    camera_info and sparse caches with the rules that pair them with an image.

    camera_info: the exact stamp, else the latest within `camera_info_tolerance` (drivers that
    stamp calibration separately), never an arbitrarily old one. Sparse input: the nearest stamp
    within `alignment.max_time_difference`.
    """

    def __init__(self, capacity: int = 30, lookup_transform: TransformLookup | None = None):
        self.camera_info = StampCache(capacity)
        self.sparse = StampCache(capacity)
        self._lookup_transform = lookup_transform

    def add_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info.add(stamp_to_ns(msg.header.stamp), msg)

    def add_sparse(self, msg: Image | PointCloud2) -> None:
        self.sparse.add(stamp_to_ns(msg.header.stamp), msg)

    def time_went_back(self, stamp_ns: int) -> None:
        """
        Forget the earlier run: the images went back to `stamp_ns` (bag loop, second bag).

        A side stream that went back too has started its cache again by itself (StampCache.add);
        one that has not is cleared, so it cannot lend the earlier run's messages.
        """
        self.camera_info.clear_if_ahead_of(stamp_ns)
        self.sparse.clear_if_ahead_of(stamp_ns)

    @staticmethod
    def _expected(cache: StampCache, stamp_ns: int, ahead_ns: int) -> bool:
        """Whether a message for this stamp may still arrive: the stream is alive and behind."""
        latest = cache.latest()
        return latest is not None and stamp_ns - ALIVE_NS < latest[0] < stamp_ns + ahead_ns

    def waiting_for(self, image, params: dict[str, Any], *,
                    camera_info_published: bool = True) -> list[str]:
        """
        Name the side inputs this image's frame should still wait for (empty: assemble now).

        `camera_info_published` says whether anybody publishes camera_info: a driver's first
        image comes before its first camera_info, a camera without one is never waited for.
        """
        stamp_ns = stamp_to_ns(image.header.stamp)
        waiting = []
        starting = self.camera_info.latest() is None and camera_info_published
        if self.camera_info.exact(stamp_ns) is None and \
                (starting or self._expected(self.camera_info, stamp_ns, 0)):
            waiting.append('camera_info')
        if params['alignment.source'] != 'none':
            tolerance_ns = int(params['alignment.max_time_difference'] * 1e9)
            if self.sparse.nearest(stamp_ns, tolerance_ns) is None and \
                    self._expected(self.sparse, stamp_ns, tolerance_ns):
                waiting.append('sparse')
        return waiting

    def assemble(self, image, params: dict[str, Any]) -> FrameInputs:
        stamp_ns = stamp_to_ns(image.header.stamp)
        found = self.camera_info.match_exact_or_latest(
            stamp_ns, int(params['camera_info_tolerance'] * 1e9))
        inputs = FrameInputs(image=image, camera_info=found[1] if found else None)
        if params['alignment.source'] == 'none':
            return inputs
        nearest = self.sparse.nearest(stamp_ns, int(params['alignment.max_time_difference'] * 1e9))
        sparse = nearest[1] if nearest else None
        if isinstance(sparse, PointCloud2):
            transform = self._points_transform(sparse, image.header, params)
            if transform is False:
                return inputs
            inputs.points_transform = transform
        inputs.sparse = sparse
        return inputs

    def _points_transform(self, cloud: PointCloud2, header,
                          params: dict[str, Any]) -> Transform | None | bool:
        if not cloud.header.frame_id or cloud.header.frame_id == header.frame_id:
            return None
        if self._lookup_transform is not None:
            return self._lookup_transform(cloud, header)
        return static_points_transform(params)
