"""
core.render's per-pixel outputs with torch on the device an engine left its prediction on.

The arithmetic is core.normals, core.visualization, core.alignment.apply_affine and
core.pointcloud operation by operation (float32, the colour range in float64 like numpy's
percentile), so the bytes equal the numpy path's; the tests run every function here on CPU
tensors against numpy. On a GPU (none of which the tests can reach): the work runs on the
renderer's own stream, so it does not queue behind the next frame's inference, after the
prediction's ready event; each buffer is copied back once, asynchronously, into pinned host
memory reused from frame to frame, then into its message; the host waits twice a frame, for the
relative depth the (numpy) alignment needs and before publishing. Nothing in between
synchronises: no .item(), boolean indexing or nonzero; sizes that depend on the data (the
unorganized cloud's point count) come back with the data.
"""

from __future__ import annotations

from contextlib import nullcontext
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lotus_ros.core.alignment import AlignmentState, MetricAligner
from lotus_ros.core.engine import Prediction
from lotus_ros.core.geometry import Intrinsics, pixel_rays
from lotus_ros.core.pointcloud import (
    FLOAT32,
    NORMAL_SCALE,
    Allocate,
    PackedCloud,
    cloud_fields,
)
from lotus_ros.core.visualization import PERCENTILE_SAMPLES, colormap_lut

_MIN_NORM = float(np.float32(1e-6))   # core.normals compares in float32
NAN_INDEX, INF_INDEX = 256, 257       # rows of colormap_lut


# -- kernels: one per numpy function, same operations in the same order --------------------
def lotus_to_optical(n: torch.Tensor) -> torch.Tensor:
    """core.normals.lotus_to_optical for a ...x3 float32 tensor."""
    x, y, z = n.unbind(-1)
    norm = x * x
    norm = norm + y * y
    norm = norm + z * z
    # torch's float32 sqrt is not correctly rounded on every CPU; through float64 it is.
    norm = torch.sqrt(norm.to(torch.float64)).to(torch.float32)
    bad = ~(norm > _MIN_NORM) | ~torch.isfinite(norm)
    scale = torch.where(bad, math.nan, torch.reciprocal(norm).neg())   # -1 / |n|, exactly
    return n * scale[..., None]


def colorize_normals(n: torch.Tensor) -> torch.Tensor:
    """core.visualization.colorize_normals: HxWx3 float32 -> HxWx3 uint8."""
    v = (n + 1.0) * 127.5
    v = v.clamp(0.0, 255.0) + 0.5
    fin = torch.isfinite(n)
    bad = ~(fin[..., 0] & fin[..., 1] & fin[..., 2])
    return v.masked_fill(bad[..., None], 0.0).to(torch.uint8)


def apply_affine(p: torch.Tensor, scale: float, shift: float, *, space: str, z_min: float,
                 z_max: float, delta: float) -> torch.Tensor:
    """core.alignment.apply_affine (REP 117 semantics) for an HxW float32 tensor."""
    if not (math.isfinite(scale) and math.isfinite(shift) and scale > 0.0):
        return torch.full_like(p, math.nan)
    y = p * float(np.float32(scale))
    y = y + float(np.float32(shift))
    if space == 'disparity':
        out = torch.reciprocal(y)
        far = (y <= 0.0) | (p <= delta) | (out > z_max)
    else:
        out = torch.where(y <= 0.0, math.nan, y)
        far = (p >= 1.0 - delta) | (out > z_max)
    near = out < z_min
    out = torch.where(near, -math.inf, out)
    return torch.where(far, math.inf, out)


def color_range(d: torch.Tensor, percentiles: tuple = (2, 98)) -> torch.Tensor:
    """
    core.visualization.color_range without leaving the device: float64 (lo, hi).

    numpy takes the finite values in raster order, every step-th of them, and interpolates
    linearly between sorted neighbours in float64; here the chosen values are sorted in place
    of the boolean selection (the others sort last as +inf), with the same indices and lerp.
    """
    flat = d.reshape(-1)
    finite = torch.isfinite(flat)
    count = finite.sum()                                             # ()
    step = torch.clamp(count // PERCENTILE_SAMPLES, min=1)
    rank = torch.cumsum(finite, 0) - 1                               # (N,)
    chosen = finite & (torch.remainder(rank, step) == 0)
    m = (count + step - 1) // step                                   # values kept
    ordered = torch.where(chosen, flat, math.inf).sort().values      # kept values first
    q = torch.tensor(percentiles, dtype=torch.float64, device=d.device) / 100.0
    vi = (m - 1).to(torch.float64) * q                               # (2,) virtual indices
    prev = torch.floor(vi).to(torch.int64)
    above, below = vi >= (m - 1).to(torch.float64), vi < 0
    last = torch.clamp(m - 1, min=0)
    nxt = torch.where(above, last, torch.where(below, 0, prev + 1))
    prev = torch.where(above, last, torch.where(below, 0, prev))
    gamma = vi - torch.where(above, -1, prev).to(torch.float64)       # numpy's own quirk
    a, b = ordered[prev], ordered[nxt]
    diff = (b - a).to(torch.float64)
    low = a.to(torch.float64) + diff * gamma
    high = b.to(torch.float64) - diff * (1.0 - gamma)
    result = torch.where(gamma >= 0.5, high, low)
    fallback = torch.tensor([0.0, 1.0], dtype=torch.float64, device=d.device)
    return torch.where(count > 0, result, fallback)


def colorize_depth(d: torch.Tensor, lut: torch.Tensor, lo_hi: torch.Tensor) -> torch.Tensor:
    """core.visualization.colorize_depth over the range lo_hi (float64 (2,)): HxWx3 uint8."""
    lo, hi = lo_hi[0], lo_hi[1]
    hi = torch.where(hi > lo, hi, lo + torch.clamp(lo.abs(), min=1.0) * 1e-6)
    factor = torch.div(torch.full_like(lo, 255.0), hi - lo).to(torch.float32)
    scaled = (d - lo.to(torch.float32)) * factor
    scaled = scaled.clamp(0.0, 255.0) + 0.5
    index = torch.where(torch.isfinite(d), scaled.to(torch.int64), NAN_INDEX)
    index = torch.where(torch.isposinf(d), INF_INDEX, index)
    return lut[index]


def cloud_records(z: torch.Tensor, xr: torch.Tensor, yr: torch.Tensor,
                  rgb: torch.Tensor | None, normals: torch.Tensor | None, *, organized: bool,
                  min_depth: float, max_depth: float,
                  layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """
    core.pointcloud.pack_depth_cloud's records for already strided inputs.

    Returns (records, valid): organized, (h, w, step) uint8 with NaN x, y, z where invalid;
    otherwise the valid records first in raster order, (h*w, step), and their count (a tensor).
    """
    fields, step = cloud_fields(color=rgb is not None, normals=normals is not None,
                                layout=layout)
    offsets = {f.name: f.offset for f in fields}
    x = z * xr[None, :]
    y = z * yr[:, None]
    valid = (z > 0.0) & (z >= min_depth) & (z <= max_depth) & \
        torch.isfinite(x) & torch.isfinite(y) & torch.isfinite(z)
    if organized:
        x, y, z = (torch.where(valid, a, math.nan) for a in (x, y, z))
    h, w = z.shape
    records = torch.empty((h, w, step), dtype=torch.uint8, device=z.device)
    words = records.view(torch.float32)                              # (h, w, step / 4)
    words[..., 0], words[..., 1], words[..., 2] = x, y, z
    if rgb is not None:                                              # bytes B, G, R, 0
        o = offsets['rgb']
        records[..., o:o + 3] = rgb.flip(-1)
        records[..., o + 3] = 0
    if normals is not None:
        o = offsets['normal_x']
        if fields[-1].datatype == FLOAT32:
            words[..., o // 4:o // 4 + 3] = normals
        else:
            scaled = torch.round(normals * NORMAL_SCALE)
            scaled = torch.where(torch.isfinite(scaled), scaled, 0.0)
            scaled = scaled.clamp(-NORMAL_SCALE, NORMAL_SCALE)
            records[..., o:o + 3] = scaled.to(torch.int8).view(torch.uint8)
            records[..., o + 3] = 0
    if organized:
        return records, valid.all()
    flat, keep = records.view(h * w, step), valid.reshape(-1)
    target = torch.where(keep, torch.cumsum(keep, 0) - 1, h * w)     # invalid: a spare row
    packed = torch.empty((h * w + 1, step), dtype=torch.uint8, device=z.device)
    packed.index_copy_(0, target, flat)
    return packed[:h * w], keep.sum()


# -- the frame ----------------------------------------------------------------------------
class DeviceRenderer:
    """What outlives a frame on one device: its stream, pinned buffers, colour tables, rays."""

    def __init__(self, device: Any):
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._host: dict[str, torch.Tensor] = {}
        self._luts: dict[str, torch.Tensor] = {}
        self._rays: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def ready_event(self) -> Any:
        """Mark the end of the inference just queued (inference thread); None off CUDA."""
        if not self.cuda:
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def host_buffer(self, name: str, nbytes: int) -> torch.Tensor:
        """Return the host byte buffer kept per name (pinned on CUDA), grown only if needed."""
        buf = self._host.get(name)
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=self.cuda)
            self._host[name] = buf
        return buf[:nbytes]

    def lut(self, colormap: str) -> torch.Tensor:
        """Return colorize_depth's table on the device (uploaded once per colormap)."""
        if colormap not in self._luts:
            self._luts[colormap] = torch.from_numpy(colormap_lut(colormap).copy()).to(
                self.device)
        return self._luts[colormap]

    def rays(self, intr: Intrinsics, height: int,
             width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return pointcloud's pixel rays on the device (uploaded once per camera)."""
        key = (intr, height, width)
        if key not in self._rays:
            if len(self._rays) >= 8:
                self._rays.clear()
            xr, yr = pixel_rays(intr, height, width)
            self._rays[key] = (torch.from_numpy(xr.copy()).to(self.device),
                               torch.from_numpy(yr.copy()).to(self.device))
        return self._rays[key]

    def frame(self, prediction: Prediction, width: int, height: int,
              ready: Any = None) -> DeviceFrame:
        return DeviceFrame(self, prediction, width, height, ready)

    def synchronize(self) -> None:
        """Wait for everything queued on the renderer's stream (the only waits of a frame)."""
        if self.cuda:
            event = torch.cuda.Event()
            event.record(self.stream)
            event.synchronize()


class DeviceFrame:
    """core.render.HostFrame's calls for a prediction on the device; see the module docstring."""

    def __init__(self, renderer: DeviceRenderer, prediction: Prediction, width: int,
                 height: int, ready: Any = None):
        self._r = renderer
        self.width, self.height = int(width), int(height)
        self._copies: list[tuple[torch.Tensor, np.ndarray]] = []    # pinned -> message
        self._relative: np.ndarray | None = None
        self._normals = self._metric = None
        self._cloud: tuple | None = None
        with self._on_stream():
            if ready is not None:
                renderer.stream.wait_event(ready)
            self._depth = self._adopt(prediction.depth)
            self._normal_lotus = self._adopt(prediction.normal)
            self._uncertainty = self._adopt(prediction.uncertainty)

    def _on_stream(self):
        return torch.cuda.stream(self._r.stream) if self._r.cuda else nullcontext()

    def _adopt(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """Return the engine's tensor at the image size, safe to use on this frame's stream."""
        if t is None:
            return None
        if self._r.cuda:
            t.record_stream(self._r.stream)       # not reused by the allocator before we end
        t = t.to(torch.float32)
        if t.shape[:2] != (self.height, self.width):
            # Bilinear like cv2 INTER_LINEAR, not bit-identical; Lotus returns the image size.
            size = (self.height, self.width)
            if t.ndim == 2:
                t = F.interpolate(t[None, None], size=size, mode='bilinear',
                                  align_corners=False)[0, 0]
            else:
                t = F.interpolate(t.permute(2, 0, 1)[None], size=size, mode='bilinear',
                                  align_corners=False)[0].permute(1, 2, 0)
        return t

    def _to_host(self, t: torch.Tensor, name: str, dest: np.ndarray | None = None) -> torch.Tensor:
        """Queue the copy of t into its pinned buffer (and, after the wait, into dest)."""
        src = t.contiguous().reshape(-1).view(torch.uint8)
        host = self._r.host_buffer(name, src.numel())
        host.copy_(src, non_blocking=True)
        if dest is not None:
            self._copies.append((host, dest))
        return host

    @property
    def relative(self) -> np.ndarray | None:
        """The relative depth on the host (HxW float32): waits for it once (the alignment's)."""
        if self._relative is None and self._depth is not None:
            with self._on_stream():
                host = self._to_host(self._depth, 'relative')
            self._r.synchronize()
            self._relative = host.numpy().view(np.float32).reshape(self.height, self.width)
        return self._relative

    def normals(self, image: np.ndarray | None = None,
                colored: np.ndarray | None = None) -> None:
        with self._on_stream():
            self._normals = lotus_to_optical(self._normal_lotus)
            if image is not None:
                self._to_host(self._normals, 'normal/image', image)
            if colored is not None:
                self._to_host(colorize_normals(self._normals), 'normal/colored', colored)

    def metric(self, aligner: MetricAligner, state: AlignmentState,
               out: np.ndarray | None = None) -> None:
        with self._on_stream():
            self._metric = apply_affine(self._depth, state.scale, state.shift,
                                        space=aligner.space, z_min=aligner.z_min,
                                        z_max=aligner.z_max, delta=aligner.delta)
            if out is not None:
                self._to_host(self._metric, 'depth/image', out)

    def _upload(self, array: np.ndarray, name: str) -> torch.Tensor:
        """Copy a host array to the device through a pinned buffer (asynchronous on CUDA)."""
        staging = self._r.host_buffer(name, array.nbytes)
        staging.numpy()[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        device = staging.to(self._r.device, non_blocking=True)
        dtype = torch.from_numpy(np.zeros(0, array.dtype)).dtype
        return device.view(dtype).view(array.shape)

    def depth_colors(self, out: np.ndarray, *, colormap: str,
                     value_range: tuple[float, float] | None, flip_relative: bool,
                     relative: np.ndarray | None = None) -> None:
        with self._on_stream():
            if self._metric is not None:
                values = self._metric
            else:
                values = self._depth if relative is None else \
                    self._upload(relative, 'relative.shown')
                values = -values if flip_relative else values
            if value_range is not None:
                lo_hi = torch.tensor([float(value_range[0]), float(value_range[1])],
                                     dtype=torch.float64, device=values.device)
            else:
                lo_hi = color_range(values)
            colors = colorize_depth(values, self._r.lut(colormap), lo_hi)
            self._to_host(colors, 'depth/colored', out)

    def uncertainty(self, out: np.ndarray, *, scale: float | None, disparity: bool,
                    relative_scale: float | None) -> None:
        """core.render.HostFrame.uncertainty on the device."""
        with self._on_stream():
            sigma = self._uncertainty
            if scale is not None:
                std = sigma * float(np.float32(scale))
                if disparity:
                    std = std * (self._metric * self._metric)
                std = torch.where(torch.isfinite(self._metric), std, math.nan)
            elif relative_scale is not None:
                std = sigma * float(np.float32(relative_scale))
            else:
                std = sigma
            self._to_host(std, 'depth/uncertainty', out)

    def cloud(self, intr: Intrinsics, rgb: np.ndarray | None, *, normals: bool,
              allocate: Allocate, organized: bool = True, stride: int = 1,
              min_depth: float = 0.0, max_depth: float = math.inf,
              layout: str = 'pcl') -> None:
        with self._on_stream():
            xr, yr = self._r.rays(intr, self.height, self.width)
            colors = None
            if rgb is not None:
                colors = self._upload(rgb, 'rgb')[::stride, ::stride]
            records, extent = cloud_records(
                self._metric[::stride, ::stride], xr[::stride], yr[::stride], colors,
                self._normals[::stride, ::stride] if normals else None, organized=organized,
                min_depth=min_depth, max_depth=max_depth, layout=layout)
            host = self._to_host(records, 'points')
            extent_host = self._to_host(extent.to(torch.int64), 'points.extent')
        fields, step = cloud_fields(color=rgb is not None, normals=normals, layout=layout)
        self._cloud = (host, extent_host, fields, step, organized, tuple(records.shape[:2]),
                       allocate)

    def finish(self) -> PackedCloud | None:
        """Wait once for the queued work, then copy every buffer into its message."""
        self._r.synchronize()
        for host, dest in self._copies:
            np.copyto(dest.reshape(-1).view(np.uint8), host.numpy())
        self._copies.clear()
        if self._cloud is None:
            return None
        host, extent_host, fields, step, organized, shape, allocate = self._cloud
        extent = int(extent_host.numpy().view(np.int64)[0])
        if organized:
            height, width, is_dense = shape[0], shape[1], bool(extent)
        else:
            height, width, is_dense = 1, extent, True
        nbytes = height * width * step
        buffer = allocate(nbytes)
        data = np.frombuffer(buffer, np.uint8) if nbytes else np.zeros(0, np.uint8)
        data[:] = host.numpy()[:nbytes]
        return PackedCloud(height=height, width=width, fields=fields, point_step=step,
                           row_step=step * width, data=data, is_dense=is_dense, buffer=buffer)
