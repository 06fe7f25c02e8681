"""
PackedCloud -> sensor_msgs/PointCloud2, and the one decoder of PointCloud2 (any layout).

Decoding validates what a foreign driver can get wrong (missing fields, steps that do not fit the
data, odd datatypes) and raises CloudError with a reason key, like the image conversions do.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from lotus_ros.core.pointcloud import PackedCloud
from lotus_ros.ros.images import as_byte_array

_XYZ_TYPES = {PointField.FLOAT32: 'f4', PointField.FLOAT64: 'f8'}
_NUMPY_TYPES = {PointField.INT8: 'i1', PointField.UINT8: 'u1', PointField.INT16: 'i2',
                PointField.UINT16: 'u2', PointField.INT32: 'i4', PointField.UINT32: 'u4',
                **_XYZ_TYPES}
MAX_POINTS = 20_000_000


class CloudError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def packed_to_msg(cloud: PackedCloud, header=None) -> PointCloud2:
    """Return the message of a packed cloud; data packed into a byte_array is not copied."""
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(cloud.height), int(cloud.width)
    msg.fields = [PointField(name=f.name, offset=int(f.offset), datatype=int(f.datatype),
                             count=int(f.count)) for f in cloud.fields]
    msg.is_bigendian = False
    msg.point_step = int(cloud.point_step)
    msg.row_step = int(cloud.row_step)
    owned = isinstance(cloud.buffer, array.array) and len(cloud.buffer) == cloud.data.size
    msg.data = cloud.buffer if owned else as_byte_array(cloud.data)
    msg.is_dense = bool(cloud.is_dense)
    return msg


def cloud_to_array(msg: PointCloud2, required: tuple[str, ...] = ('x', 'y', 'z')
                   ) -> np.ndarray:
    """
    Return every point of a PointCloud2 as a structured array (height*width,) of its fields.

    The one PointCloud2 decoder: any layout, any endianness, padding between fields; fields
    with count != 1 or an unknown datatype are left out. `required` fields must be there.
    """
    h, w = int(msg.height), int(msg.width)
    if h * w > MAX_POINTS:
        raise CloudError('size', f'cloud of {w}x{h} points is implausibly large')
    fields = {f.name: f for f in msg.fields if f.count == 1 and f.datatype in _NUMPY_TYPES}
    missing = [n for n in required if n not in fields]
    if missing:
        raise CloudError('fields', f"cloud has no field(s) {', '.join(missing)}")
    ps, rs = int(msg.point_step), int(msg.row_step)
    order = '>' if msg.is_bigendian else '<'
    for f in fields.values():
        if f.offset + np.dtype(_NUMPY_TYPES[f.datatype]).itemsize > ps:
            raise CloudError('step', f'cloud field {f.name} at offset {f.offset} does not fit '
                             f'in point_step {ps}')
    dt = np.dtype({'names': list(fields),
                   'formats': [order + _NUMPY_TYPES[f.datatype] for f in fields.values()],
                   'offsets': [int(f.offset) for f in fields.values()], 'itemsize': ps})
    if h * w == 0:
        return np.zeros(0, dt)
    if rs < ps * w:
        raise CloudError('step', f'row_step {rs} < point_step*width = {ps * w}')
    n_bytes = len(msg.data)
    if n_bytes < rs * (h - 1) + ps * w:
        raise CloudError('truncated', f'cloud data truncated: {n_bytes} bytes for {w}x{h} '
                         f'points with row_step {rs}')
    buf = np.frombuffer(msg.data, np.uint8)
    if buf.size < rs * h:
        buf = np.concatenate([buf, np.zeros(rs * h - buf.size, np.uint8)])
    rows = buf[:rs * h].reshape(h, rs)[:, :ps * w]
    return np.ascontiguousarray(rows).view(dt).reshape(-1)


def cloud_to_xyz(msg: PointCloud2) -> np.ndarray:
    """Return the finite points of a PointCloud2 as float64 Nx3 (sparse alignment input)."""
    for f in msg.fields:
        if f.name in 'xyz' and len(f.name) == 1 and f.datatype not in _XYZ_TYPES:
            raise CloudError('fields', f'cloud field {f.name} has datatype {f.datatype}, '
                             'expected FLOAT32 or FLOAT64')
    pts = cloud_to_array(msg)
    xyz = np.stack([pts['x'], pts['y'], pts['z']], axis=1).astype(np.float64)
    return xyz[np.isfinite(xyz).all(axis=1)]


def quaternion_matrix(q) -> np.ndarray:
    """Rotation matrix of a unit quaternion (x, y, z, w)."""
    x, y, z, w = (float(v) for v in q)
    n = np.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def transform_points(xyz: np.ndarray, translation, quaternion) -> np.ndarray:
    """Apply p' = R(q) p + t (target <- source, as tf2 and the static-transform parameter)."""
    return xyz @ quaternion_matrix(quaternion).T + np.asarray(translation, dtype=np.float64)
