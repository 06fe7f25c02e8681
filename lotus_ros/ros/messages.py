"""
The few std/sensor messages the package builds itself: headers at a stamp and CameraInfo.

One construction each, so the node's depth/camera_info, the bag writers, the benchmarks and the
tests describe a camera the same way.
"""

from __future__ import annotations

from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from lotus_ros.core.geometry import pinhole_fields
from lotus_ros.core.stamps import ns_to_sec_nanosec, seconds_to_ns


def header_at(stamp: float | int, frame_id: str) -> Header:
    """Return a Header at `stamp`: float seconds, or integer nanoseconds (exact)."""
    stamp_ns = stamp if isinstance(stamp, int) else seconds_to_ns(stamp)
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = ns_to_sec_nanosec(stamp_ns)
    return header


def pinhole_camera_info(k, width: int, height: int, header: Header) -> CameraInfo:
    return CameraInfo(header=header, roi=RegionOfInterest(), **pinhole_fields(k, width, height))


def output_camera_info(source: CameraInfo, header: Header) -> CameraInfo:
    """depth/camera_info: the input calibration (binning, ROI, P) under the output header."""
    return CameraInfo(header=header, height=source.height, width=source.width,
                      distortion_model=source.distortion_model, d=source.d, k=source.k,
                      r=source.r, p=source.p, binning_x=source.binning_x,
                      binning_y=source.binning_y, roi=source.roi)
