"""
Pack depth or point arrays into the byte layout of a sensor_msgs/PointCloud2, without ROS.

Two layouts (little-endian, is_bigendian = false), both starting with x, y, z float32:
'pcl' (default): then rgb (uint32 0x00RRGGBB reinterpreted as float32, the PCL convention RViz
understands), then normal_x, normal_y, normal_z float32: what pcl::fromROSMsg maps into
PointXYZRGBNormal. 'compact': the same x, y, z, rgb, but normals as three int8 (unit normal
times 127, 0 where invalid) plus one pad byte: 20 bytes a point with colour and normals instead
of 28. Consumers of 'compact' read each field's offset and datatype (PCL does not map int8
normals). Buffers are written once, in place, into memory the caller may provide (the message's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math
from typing import Any

import numpy as np

from lotus_ros.core.geometry import Intrinsics, pixel_rays

# sensor_msgs/PointField datatype constants (copied so this module needs no ROS).
INT8 = 1
UINT8 = 2
INT16 = 3
UINT16 = 4
INT32 = 5
UINT32 = 6
FLOAT32 = 7
FLOAT64 = 8

_NUMPY_TYPES = {
    INT8: '<i1', UINT8: '<u1', INT16: '<i2', UINT16: '<u2',
    INT32: '<i4', UINT32: '<u4', FLOAT32: '<f4', FLOAT64: '<f8',
}


@dataclass
class CloudField:
    name: str
    offset: int
    datatype: int
    count: int = 1


LAYOUTS = ('pcl', 'compact')
# 'compact' normals: int8 round(n * NORMAL_SCALE); 127 keeps -1 and 1 symmetric.
NORMAL_SCALE = 127.0

# allocate(nbytes) -> a writable buffer of nbytes (for example a message's data array)
Allocate = Callable[[int], Any]


@dataclass
class PackedCloud:
    height: int
    width: int
    fields: list[CloudField]
    point_step: int
    row_step: int
    data: np.ndarray            # uint8 view of `buffer`
    is_dense: bool
    buffer: Any = None          # what `allocate` returned; None when numpy allocated it


def cloud_fields(*, color: bool, normals: bool,
                 layout: str = 'pcl') -> tuple[list[CloudField], int]:
    """Return the fields and point_step of a layout (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
    fields = [CloudField('x', 0, FLOAT32), CloudField('y', 4, FLOAT32),
              CloudField('z', 8, FLOAT32)]
    step = 12
    if color:
        fields.append(CloudField('rgb', step, FLOAT32))
        step += 4
    if normals:
        kind, size = (FLOAT32, 4) if layout == 'pcl' else (INT8, 1)
        for i, axis in enumerate('xyz'):
            fields.append(CloudField(f'normal_{axis}', step + i * size, kind))
        step += 12 if layout == 'pcl' else 4
    return fields, step


def _allocate(nbytes: int, allocate: Allocate | None) -> tuple[np.ndarray, Any]:
    if allocate is None:
        return np.empty(nbytes, np.uint8), None
    buffer = allocate(nbytes)
    data = np.frombuffer(buffer, np.uint8) if nbytes else np.zeros(0, np.uint8)
    if data.size != nbytes or not data.flags.writeable:
        raise ValueError(f'allocate({nbytes}) returned {data.size} bytes or a read-only buffer')
    return data, buffer


def _write_records(records: np.ndarray, fields: list[CloudField], x: np.ndarray,
                   y: np.ndarray, z: np.ndarray, rgb: np.ndarray | None,
                   normals: np.ndarray | None) -> None:
    """Fill ...xpoint_step byte records field by field from arrays of their leading shape."""
    offsets = {f.name: f.offset for f in fields}
    for name, values in (('x', x), ('y', y), ('z', z)):
        o = offsets[name]
        records[..., o:o + 4].view(np.float32)[..., 0] = values
    if rgb is not None:
        # little-endian uint32 0x00RRGGBB: bytes B, G, R, 0
        o = offsets['rgb']
        records[..., o] = rgb[..., 2]
        records[..., o + 1] = rgb[..., 1]
        records[..., o + 2] = rgb[..., 0]
        records[..., o + 3] = 0
    if normals is not None:
        o = offsets['normal_x']
        if fields[-1].datatype == FLOAT32:
            records[..., o:o + 12].view(np.float32)[:] = normals
        else:
            scaled = normals * np.float32(NORMAL_SCALE)
            np.rint(scaled, out=scaled)
            np.copyto(scaled, np.float32(0.0), where=~np.isfinite(scaled))
            np.clip(scaled, -NORMAL_SCALE, NORMAL_SCALE, out=scaled)
            records[..., o:o + 3].view(np.int8)[:] = scaled
            records[..., o + 3] = 0


def cloud_dtype(fields: list[CloudField], point_step: int) -> np.dtype:
    """Numpy structured dtype for one point of a PointCloud2 with these fields (decoding aid)."""
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in _NUMPY_TYPES:
            raise ValueError(f'unknown PointField datatype {f.datatype} for field {f.name!r}')
        base = np.dtype(_NUMPY_TYPES[f.datatype])
        names.append(f.name)
        formats.append(base if f.count == 1 else np.dtype((base, (f.count,))))
        offsets.append(f.offset)
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                     'itemsize': point_step})


def rgb_to_float(rgb: np.ndarray) -> np.ndarray:
    """Pack ...x3 uint8 RGB into float32 whose bits are the uint32 0x00RRGGBB (PCL convention)."""
    rgb = np.asarray(rgb)
    packed = rgb[..., 0].astype(np.uint32) << 16
    packed |= rgb[..., 1].astype(np.uint32) << 8
    packed |= rgb[..., 2].astype(np.uint32)
    return packed.view(np.float32)


def float_to_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of rgb_to_float: N float32 (0x00RRGGBB bits) -> Nx3 uint8 RGB."""
    bits = np.asarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255],
                    axis=-1).astype(np.uint8)


def _check(name: str, arr: np.ndarray | None, h: int, w: int) -> None:
    if arr is not None and np.shape(arr)[:2] != (h, w):
        raise ValueError(f'{name} must be {h}x{w}x3, got shape {np.shape(arr)}')


def _strided(arr: np.ndarray | None, stride: int) -> np.ndarray | None:
    return arr if arr is None or stride == 1 else arr[::stride, ::stride]


def pack_cloud(points: np.ndarray, *, rgb: np.ndarray | None = None,
               normals: np.ndarray | None = None, organized: bool = True, stride: int = 1,
               min_depth: float = 0.0, max_depth: float = math.inf, layout: str = 'pcl',
               allocate: Allocate | None = None) -> PackedCloud:
    """
    Pack HxWx3 optical-frame points (plus optional colours and normals) as PointCloud2 bytes.

    A point is valid when x, y, z are finite and min_depth <= z <= max_depth with z > 0.
    Organized: an (H/stride) x (W/stride) grid where invalid points get NaN x, y, z and is_dense is
    false if any exist. Unorganized: height 1, only the valid points, is_dense true.
    """
    pts = np.asarray(points)
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise ValueError(f'points must be HxWx3, got shape {pts.shape}')
    if stride < 1:
        raise ValueError(f'stride must be >= 1, got {stride}')
    _check('rgb', rgb, *pts.shape[:2])
    _check('normals', normals, *pts.shape[:2])
    pts = _strided(pts, stride)
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    with np.errstate(invalid='ignore'):
        valid = (z > 0.0) & (z >= min_depth) & (z <= max_depth)   # False for NaN z
    # Per-channel isfinite: .all(axis=2) over a length-3 axis is ~20x slower.
    valid &= np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    return _pack(x, y, z, valid, _strided(rgb, stride), _strided(normals, stride), organized,
                 layout, allocate)


def pack_depth_cloud(depth: np.ndarray, intr: Intrinsics, *, rgb: np.ndarray | None = None,
                     normals: np.ndarray | None = None, organized: bool = True,
                     stride: int = 1, min_depth: float = 0.0, max_depth: float = math.inf,
                     layout: str = 'pcl', allocate: Allocate | None = None) -> PackedCloud:
    """
    Back-project a depth map (Z in metres) and pack it, without an HxWx3 point array.

    The same points and validity as pack_cloud(backproject(depth, intr)), bit for bit, with x
    and y computed only for the kept pixels.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f'depth must be HxW, got shape {depth.shape}')
    if stride < 1:
        raise ValueError(f'stride must be >= 1, got {stride}')
    _check('rgb', rgb, *depth.shape)
    _check('normals', normals, *depth.shape)
    xr, yr = pixel_rays(intr, *depth.shape)
    z = _strided(depth.astype(np.float32, copy=False), stride)       # (H/s)x(W/s)
    x = z * xr[None, ::stride]
    y = z * yr[::stride, None]
    with np.errstate(invalid='ignore'):
        valid = (z > 0.0) & (z >= min_depth) & (z <= max_depth)
    valid &= np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    return _pack(x, y, z, valid, _strided(rgb, stride), _strided(normals, stride), organized,
                 layout, allocate)


def _pack(x: np.ndarray, y: np.ndarray, z: np.ndarray, valid: np.ndarray,
          rgb: np.ndarray | None, normals: np.ndarray | None, organized: bool, layout: str,
          allocate: Allocate | None) -> PackedCloud:
    fields, step = cloud_fields(color=rgb is not None, normals=normals is not None,
                                layout=layout)
    if organized:
        oh, ow = z.shape
        data, buffer = _allocate(step * oh * ow, allocate)
        records = data.reshape(oh, ow, step)
        _write_records(records, fields, x, y, z, rgb, normals)
        is_dense = bool(valid.all())
        if not is_dense:
            records[..., 0:12].view(np.float32)[~valid] = np.nan
        return PackedCloud(height=oh, width=ow, fields=fields, point_step=step,
                           row_step=step * ow, data=data, is_dense=is_dense, buffer=buffer)
    idx = np.flatnonzero(valid)
    data, buffer = _allocate(step * idx.size, allocate)
    _write_records(data.reshape(idx.size, step), fields,
                   *(a.reshape(-1)[idx] for a in (x, y, z)),
                   None if rgb is None else np.asarray(rgb).reshape(-1, 3)[idx],
                   None if normals is None else np.asarray(normals).reshape(-1, 3)[idx])
    return PackedCloud(height=1, width=int(idx.size), fields=fields, point_step=step,
                       row_step=step * int(idx.size), data=data, is_dense=True, buffer=buffer)
