"""
Per-pixel outputs of one prediction, written once into buffers the caller provides.

A frame's outputs are rendered through one object: `HostFrame` (numpy, here) or
`core.device_render.DeviceFrame` (torch on the engine's CUDA device, one pinned copy back per
buffer). Both take the same calls in the same order, write into the same host buffers and give
the same bytes, so the processor orchestrates a frame once for either. Results written into the
caller's buffers are final only after `finish()`.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from lotus_ros.core.alignment import AlignmentState, MetricAligner
from lotus_ros.core.engine import Prediction
from lotus_ros.core.geometry import Intrinsics
from lotus_ros.core.normals import lotus_to_optical
from lotus_ros.core.pointcloud import Allocate, PackedCloud, pack_depth_cloud
from lotus_ros.core.visualization import colorize_depth, colorize_normals


def resized(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Return a prediction at the image size (engines normally return it there already)."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.shape[:2] == (height, width):
        return arr
    return cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)


class HostFrame:
    """One frame's outputs computed with numpy from host prediction arrays."""

    def __init__(self, prediction: Prediction, width: int, height: int):
        self._pred = prediction
        self.width, self.height = int(width), int(height)
        self._relative: np.ndarray | None = None
        self._normals: np.ndarray | None = None
        self._metric: np.ndarray | None = None
        self._cloud: PackedCloud | None = None

    @property
    def relative(self) -> np.ndarray | None:
        """The relative depth at the image size on the host (HxW float32; read-only use)."""
        if self._relative is None and self._pred.depth is not None:
            self._relative = resized(self._pred.depth, self.width, self.height)
        return self._relative

    def normals(self, image: np.ndarray | None = None,
                colored: np.ndarray | None = None) -> None:
        """Optical-frame normals (kept for the cloud), into `image` (HxWx3 f32) if given."""
        lotus = resized(self._pred.normal, self.width, self.height)
        self._normals = lotus_to_optical(lotus, out=image)
        if colored is not None:
            colorize_normals(self._normals, out=colored)

    def metric(self, aligner: MetricAligner, state: AlignmentState,
               out: np.ndarray | None = None) -> None:
        """Metric depth with the state's scale and shift, into `out` (HxW f32) if given."""
        self._metric = aligner.apply(self.relative, state, out=out)

    def depth_colors(self, out: np.ndarray, *, colormap: str,
                     value_range: tuple[float, float] | None, flip_relative: bool,
                     relative: np.ndarray | None = None) -> None:
        """
        Colour the metric depth, else the relative one (or `relative`, e.g. stabilised).

        value_range None: the percentile range. flip_relative: the relative values are
        disparity (near = large); negate them so near looks the same as in metric depth.
        """
        if self._metric is not None:
            colorize_depth(self._metric, colormap=colormap, value_range=value_range, out=out)
        else:
            rel = self.relative if relative is None else relative
            colorize_depth(-rel if flip_relative else rel, colormap=colormap,
                           value_range=value_range, out=out)

    def uncertainty(self, out: np.ndarray, *, scale: float | None, disparity: bool,
                    relative_scale: float | None) -> None:
        """
        Write the backend's per-pixel std of p in the published depth's units into `out`.

        Metric (scale given: metres), through the metric map of the raw p: disparity
        z = 1 / (s p + t) gives sigma_z = s sigma_p z^2, depth z = s p + t gives
        sigma_z = s sigma_p; NaN where the metric depth is not finite. Otherwise in
        depth/relative's units: times the stabiliser's scale (relative_scale) while stabilising.
        """
        sigma = resized(self._pred.uncertainty, self.width, self.height)         # HxW
        if scale is not None:
            np.multiply(sigma, np.float32(scale), out=out)
            if disparity:
                with np.errstate(invalid='ignore', over='ignore'):
                    out *= self._metric * self._metric
            out[~np.isfinite(self._metric)] = np.nan
        elif relative_scale is not None:
            np.multiply(sigma, np.float32(relative_scale), out=out)
        else:
            np.copyto(out, sigma)

    def cloud(self, intr: Intrinsics, rgb: np.ndarray | None, *, normals: bool,
              allocate: Allocate, **options: Any) -> None:
        """Pack the metric depth (and normals if asked) with pointcloud.pack_depth_cloud."""
        self._cloud = pack_depth_cloud(self._metric, intr, rgb=rgb,
                                       normals=self._normals if normals else None,
                                       allocate=allocate, **options)

    def finish(self) -> PackedCloud | None:
        """Everything is written (numpy works synchronously); return the cloud if packed."""
        return self._cloud
