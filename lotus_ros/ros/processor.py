"""
One frame in, output messages out: the node's work minus rclpy.

The live node and the offline bag tool share this, so both produce byte-identical outputs for
the same inputs. It decodes the image, runs the engine for the passes somebody wants, updates
the metric alignment with whatever sparse depth was matched to the frame (with
temporal.stabilize: also the inter-frame stabiliser and the metric carry of core.temporal), and
builds the sensor_msgs outputs with the input image's header (REP 117 semantics for depth: NaN
invalid, +Inf beyond range; metres only while a metric scale is valid).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
import time
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from lotus_ros.core.alignment import AlignmentState, MetricAligner
from lotus_ros.core.geometry import Intrinsics, backproject, intrinsics_from_camera_info
from lotus_ros.core.normals import lotus_to_optical
from lotus_ros.core.pointcloud import pack_cloud
from lotus_ros.core.stamps import stamp_seconds
from lotus_ros.core.temporal import (
    MetricCarry,
    MetricEstimate,
    StabilizedFrame,
    TemporalStabilizer,
)
from lotus_ros.core.visualization import colorize_depth, colorize_normals
from lotus_ros.ros.clouds import CloudError, cloud_to_xyz, packed_to_msg, transform_points
from lotus_ros.ros.frame_assembly import FrameInputs
from lotus_ros.ros.images import (
    ImageConversionError,
    array_to_image,
    compressed_to_rgb,
    depth_image_to_metres,
    image_to_rgb,
)
from lotus_ros.ros.messages import output_camera_info
from lotus_ros.ros.outputs import OUTPUTS, alignment_type
from lotus_ros.ros.parameters import SPECS, defaults

DEPTH_PAIR = {'depth/image', 'depth/camera_info'}
_ALIGN_KEYS = ('alignment.mode', 'alignment.z_min', 'alignment.z_max', 'alignment.max_age',
               'alignment.min_inliers', 'alignment.fixed_scale', 'alignment.fixed_shift',
               'alignment.process_noise', 'alignment.measurement_floor')
_TEMPORAL_KEYS = tuple(spec.name for spec in SPECS if spec.name.startswith('temporal.'))


@dataclass
class FrameResult:
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    alignment: AlignmentState | None = None
    metric: bool = False
    # (reason key, human sentence) for throttled warnings and rejected-message counters
    problems: list[tuple[str, str]] = field(default_factory=list)
    # where the metric scale comes from ('sparse', 'carried', 'none') and how sure it is
    estimate: MetricEstimate | None = None
    # the stabiliser's view of the frame while temporal.stabilize is on
    temporal: StabilizedFrame | None = None


class FrameProcessor:
    """Holds the engine, the alignment filter and the current parameters."""

    def __init__(self, engine, params: dict[str, Any] | None = None):
        self.engine = engine
        self.params = defaults()
        if params:
            self.params.update(params)
        self.aligner = self._make_aligner()
        self._make_temporal()
        # lotus_ros.msg.DepthAlignment, or None from a source tree without a colcon build.
        self.alignment_type = alignment_type()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix='lotus_post')
        # non-zero distortion is reported once, not every frame (the node logs problems)
        self._warned_distortion = False

    # -- configuration ---------------------------------------------------------------------
    @property
    def depth_space(self) -> str:
        # The engine resolved it (depth_space parameter, else the checkpoint's signals).
        return self.engine.depth_space or 'disparity'

    @property
    def alignment_enabled(self) -> bool:
        p = self.params
        return p['alignment.source'] != 'none' or p['alignment.fixed_scale'] != 0.0

    def _make_aligner(self) -> MetricAligner:
        p = self.params
        fixed = p['alignment.fixed_scale']
        return MetricAligner(
            space=self.depth_space, mode=p['alignment.mode'], z_min=p['alignment.z_min'],
            z_max=p['alignment.z_max'], max_age=p['alignment.max_age'],
            fixed_scale=fixed if fixed != 0.0 else None, fixed_shift=p['alignment.fixed_shift'],
            min_inliers=p['alignment.min_inliers'],
            process_noise=p['alignment.process_noise'],
            measurement_floor=p['alignment.measurement_floor'])

    def _make_temporal(self) -> None:
        """Build a new stabiliser and metric carry while temporal.stabilize is on (else None)."""
        p = self.params
        if not p['temporal.stabilize']:
            self.stabilizer = self.carry = None
            return
        self.stabilizer = TemporalStabilizer(time_constant=p['temporal.time_constant'],
                                             jump=p['temporal.jump'],
                                             reset_after=p['temporal.reset_after'])
        self.carry = MetricCarry(mode=p['temporal.carry'],
                                 max_uncertainty=p['temporal.carry_max_uncertainty'],
                                 noise_density=p['temporal.carry_noise_density'])

    def reset(self) -> None:
        """Start the alignment filter again (time went backwards: its state is another run's)."""
        self.aligner = self._make_aligner()
        self._make_temporal()

    def update_params(self, changes: dict[str, Any]) -> None:
        """
        Apply already validated changes.

        Alignment changes restart the filter and the temporal state built on it; temporal
        changes restart only the stabiliser and the carry.
        """
        self.params.update(changes)
        if any(k in _ALIGN_KEYS for k in changes):
            self.aligner = self._make_aligner()
        if any(k in _ALIGN_KEYS or k in _TEMPORAL_KEYS for k in changes):
            self._make_temporal()

    def enabled_outputs(self) -> set[str]:
        engine = self.engine
        out = {name for name, o in OUTPUTS.items() if self.params[o.toggle]
               and (engine.has_depth or not o.needs_depth)
               and (engine.has_normal or not o.needs_normal)
               and (engine.has_uncertainty or not o.needs_uncertainty)
               and (self.params['temporal.stabilize'] or not o.needs_stabilize)}
        if not self.alignment_enabled or self.alignment_type is None:
            out.discard('alignment')
        return out

    # -- decoding --------------------------------------------------------------------------
    @staticmethod
    def decode_image(msg: Image | CompressedImage) -> np.ndarray:
        if isinstance(msg, CompressedImage):
            return compressed_to_rgb(msg)
        return image_to_rgb(msg)

    def _intrinsics(self, info: CameraInfo | None, w: int, h: int,
                    res: FrameResult) -> Intrinsics | None:
        if info is None:
            res.problems.append(('no_camera_info', 'no camera_info matches the image stamp; '
                                 'points and point-type sparse input are skipped'))
            return None
        roi = info.roi
        try:
            intr = intrinsics_from_camera_info(
                list(info.k), list(info.p), info.width, info.height, binning_x=info.binning_x,
                binning_y=info.binning_y,
                roi=(roi.x_offset, roi.y_offset, roi.width, roi.height))
        except ValueError as e:
            res.problems.append(('camera_info_intrinsics', f'camera_info rejected: {e}'))
            return None
        if (intr.width, intr.height) != (w, h):
            res.problems.append((
                'camera_info_size', f'camera_info describes a {intr.width}x{intr.height} image '
                f'({info.width}x{info.height}, roi {roi.width}x{roi.height}+{roi.x_offset}+'
                f'{roi.y_offset}, binning {info.binning_x}x{info.binning_y}) but the image is '
                f'{w}x{h}'))
            return None
        if not self._warned_distortion and any(c != 0.0 for c in info.d):
            self._warned_distortion = True
            res.problems.append((
                'camera_info_distorted', f'camera_info has non-zero distortion {list(info.d)} '
                f'({info.distortion_model}); depth and points assume a rectified image (use '
                'image_proc rectify and its camera_info). Warned once'))
        return intr

    def _sparse_depth(self, msg: Image, w: int, h: int, res: FrameResult) -> np.ndarray | None:
        try:
            d = depth_image_to_metres(msg)
        except ImageConversionError as e:
            res.problems.append(('sparse_' + e.reason, f'sparse depth rejected: {e}'))
            return None
        hs, ws = d.shape
        if abs(ws / hs - w / h) > 0.02 * (w / h):
            res.problems.append(('sparse_size', f'sparse depth is {ws}x{hs} but the image is '
                                 f'{w}x{h}; it must be registered to the camera'))
            return None
        with np.errstate(invalid='ignore'):
            bad = (d < 0) | np.isinf(d)
        if bad.any():
            res.problems.append(('sparse_negative', f'sparse depth has {int(bad.sum())} '
                                 'negative or infinite values; they are ignored'))
            d[bad] = np.nan
        if not np.isfinite(d).any():
            res.problems.append(('sparse_empty', 'sparse depth has no valid (finite, positive) '
                                 'value'))
            return None
        return d

    def _sparse_points(self, inp: FrameInputs, res: FrameResult) -> np.ndarray | None:
        try:
            xyz = cloud_to_xyz(inp.sparse)
        except CloudError as e:
            res.problems.append(('sparse_' + e.reason, f'sparse points rejected: {e}'))
            return None
        if inp.points_transform is not None:
            xyz = transform_points(xyz, *inp.points_transform)
        xyz = xyz[xyz[:, 2] > 0]
        if xyz.shape[0] == 0:
            res.problems.append(('sparse_empty', 'sparse points have no finite point in front '
                                 'of the camera'))
            return None
        return xyz

    # -- the frame -------------------------------------------------------------------------
    def process(self, inp: FrameInputs, wanted: set[str] | None = None) -> FrameResult:
        """
        Process one frame; `wanted` limits the outputs computed (lazy mode).

        Raises ImageConversionError when the image itself cannot be decoded: the caller counts
        it and the frame produces nothing.
        """
        p = self.params
        res = FrameResult()
        enabled = self.enabled_outputs()
        wanted = enabled if wanted is None else (set(wanted) & enabled)
        if DEPTH_PAIR & wanted:
            # exact-time consumers (depth_image_proc, TimeSynchronizer) need both or neither
            wanted |= DEPTH_PAIR
        header = inp.image.header
        stamp = stamp_seconds(header.stamp)

        t0 = time.perf_counter()
        rgb = self.decode_image(inp.image)
        h, w = rgb.shape[:2]
        t1 = time.perf_counter()
        res.timings['decode'] = t1 - t0

        want_normal = bool({'normal/image', 'normal/colored'} & wanted) or (
            'points' in wanted and p['points.normals'])
        want_normal = want_normal and self.engine.has_normal
        want_depth = any(OUTPUTS[name].needs_depth for name in wanted)
        if not (want_depth or want_normal):
            return res
        pred = self.engine.predict_batch([rgb], depth=want_depth, normal=want_normal)[0]
        t2 = time.perf_counter()
        res.timings['inference'] = t2 - t1
        for k, v in (pred.timings or {}).items():
            res.timings['model.' + k] = float(v)

        relative = self._resized(pred.depth, w, h) if pred.depth is not None else None
        # normal and visual outputs are independent of the metric path: build them on the
        # other core (numpy releases the GIL) while this thread aligns and packs the cloud
        normal_job = None
        if pred.normal is not None and want_normal:
            normal_job = self._pool.submit(self._normal_outputs, pred.normal, w, h, wanted,
                                           header)
        t3 = time.perf_counter()
        stabilized = self._stabilize(relative, stamp, rgb, res)

        # metric alignment
        state = None
        metric = None
        need_intr = 'points' in wanted or (
            inp.sparse is not None and p['alignment.source'] == 'sparse_points')
        intr = None
        if need_intr or 'depth/camera_info' in wanted:
            intr = self._intrinsics(inp.camera_info, w, h, res)
        if relative is not None and (self.alignment_enabled or
                                     {'depth/image', 'points'} & wanted):
            state = self._metric_state(self._align(relative, stamp, inp, intr, w, h, res),
                                       stabilized, res)
            if state.valid:
                metric = self.aligner.apply(relative, state)
        res.alignment = state
        res.metric = metric is not None
        t4 = time.perf_counter()
        res.timings['align'] = t4 - t3

        out = res.outputs
        visual_job = None
        if relative is not None and \
                {'depth/relative', 'depth/relative_raw', 'depth/colored'} & wanted:
            visual_job = self._pool.submit(self._depth_outputs, relative, metric, wanted,
                                           header, stabilized)
        if metric is not None and 'depth/image' in wanted and intr is not None:
            out['depth/image'] = array_to_image(metric, '32FC1', header)
            out['depth/camera_info'] = output_camera_info(inp.camera_info, header)
        if pred.uncertainty is not None and 'depth/uncertainty' in wanted:
            out['depth/uncertainty'] = self._uncertainty_image(pred.uncertainty, w, h, state,
                                                               metric, stabilized, header)
        if state is not None and 'alignment' in wanted and self.alignment_type is not None:
            out['alignment'] = self._alignment_msg(res, header)

        pack = 0.0
        normals = None
        if metric is not None and 'points' in wanted and intr is not None:
            if p['points.normals'] and normal_job is not None:
                normals = normal_job.result()[0]
            t5 = time.perf_counter()
            pts = backproject(metric, intr)
            cloud = pack_cloud(
                pts, rgb=rgb if p['points.color'] else None,
                normals=normals if p['points.normals'] else None,
                organized=p['points.organized'], stride=p['points.stride'],
                min_depth=p['points.min_depth'], max_depth=p['points.max_depth'])
            out['points'] = packed_to_msg(cloud, header)
            pack = time.perf_counter() - t5
        for job in (normal_job, visual_job):
            if job is not None:
                out.update(job.result()[1])
        res.timings['postprocess'] = (t3 - t2) + (time.perf_counter() - t4) - pack
        res.timings['pack'] = pack
        return res

    def _depth_outputs(self, relative, metric, wanted, header, stabilized=None):
        shown = relative if stabilized is None else stabilized.relative
        out = {}
        if 'depth/relative' in wanted:
            out['depth/relative'] = array_to_image(shown, '32FC1', header)
        if 'depth/relative_raw' in wanted:
            out['depth/relative_raw'] = array_to_image(relative, '32FC1', header)
        if 'depth/colored' in wanted:
            out['depth/colored'] = array_to_image(
                self._colorize(shown, metric, stabilized=stabilized is not None), 'rgb8', header)
        return None, out

    def _normal_outputs(self, normal_lotus, w, h, wanted, header):
        normals = lotus_to_optical(self._resized(normal_lotus, w, h))
        out = {}
        if 'normal/image' in wanted:
            out['normal/image'] = array_to_image(normals, '32FC3', header)
        if 'normal/colored' in wanted:
            out['normal/colored'] = array_to_image(colorize_normals(normals), 'rgb8', header)
        return normals, out

    def _align(self, relative, stamp, inp, intr, w, h, res) -> AlignmentState:
        src = self.params['alignment.source']
        if inp.sparse is not None and src == 'sparse_depth' and isinstance(inp.sparse, Image):
            d = self._sparse_depth(inp.sparse, w, h, res)
            if d is not None:
                return self.aligner.update(relative, stamp, sparse_depth=d)
        elif inp.sparse is not None and src == 'sparse_points' \
                and isinstance(inp.sparse, PointCloud2):
            if intr is not None:
                xyz = self._sparse_points(inp, res)
                if xyz is not None:
                    return self.aligner.update(relative, stamp, points=xyz, intrinsics=intr)
        return self.aligner.state(stamp)

    def _stabilize(self, relative: np.ndarray | None, stamp: float, rgb: np.ndarray,
                   res: FrameResult) -> StabilizedFrame | None:
        """Stabilise the frame (the camera image compensates rotation); None while off."""
        if self.stabilizer is None or relative is None:
            return None
        t0 = time.perf_counter()
        res.temporal = self.stabilizer.update(relative, stamp, rgb)
        res.timings['align.stabilize'] = time.perf_counter() - t0
        return res.temporal

    def _metric_state(self, state: AlignmentState, stabilized: StabilizedFrame | None,
                      res: FrameResult) -> AlignmentState:
        """
        Return the state metric output uses: the aligner's, or one carried through a dropout.

        Without the stabiliser it is the aligner's own, exactly what temporal.carry 'max_age'
        gives; with it, MetricCarry decides (core.temporal).
        """
        if stabilized is None:
            res.estimate = MetricEstimate(
                state=state, source='sparse' if state.valid else 'none',
                uncertainty=MetricCarry.uncertainty(state.scale, state.shift, state.covariance),
                added_uncertainty=0.0, frames_carried=0)
        else:
            res.estimate = self.carry.update(state, stabilized)
        return res.estimate.state

    def _uncertainty_image(self, std: np.ndarray, w: int, h: int, state: AlignmentState | None,
                           metric: np.ndarray | None, stabilized: StabilizedFrame | None,
                           header) -> Image:
        """
        depth/uncertainty: the backend's per-pixel std of p in the units of the published depth.

        Metric (metres), through the metric map of the raw p: disparity z = 1 / (s p + t) gives
        sigma_z = s sigma_p z^2, depth z = s p + t gives sigma_z = s sigma_p; NaN where the
        metric depth is not finite (too close, beyond range, invalid). Otherwise in
        depth/relative's units: times the stabiliser's scale while stabilising.
        """
        sigma = self._resized(std, w, h)                                       # HxW
        if metric is not None:
            out = sigma * np.float32(state.scale)
            if self.depth_space == 'disparity':
                with np.errstate(invalid='ignore', over='ignore'):
                    out *= metric * metric
            out[~np.isfinite(metric)] = np.nan
        elif stabilized is not None:
            out = sigma * np.float32(stabilized.scale)
        else:
            out = sigma
        return array_to_image(out, '32FC1', header)

    @staticmethod
    def _resized(arr: np.ndarray, w: int, h: int) -> np.ndarray:
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape[:2] == (h, w):
            return arr
        return cv2.resize(arr, (w, h), interpolation=cv2.INTER_LINEAR)

    def _colorize(self, relative: np.ndarray, metric: np.ndarray | None, *,
                  stabilized: bool = False) -> np.ndarray:
        p = self.params
        cmap = p['visualization.colormap']
        if metric is not None:
            lo, hi = p['visualization.depth_min'], p['visualization.depth_max']
            rng = (lo, hi) if (lo or hi) else None
            return colorize_depth(metric, colormap=cmap, value_range=rng)
        # relative disparity grows towards the camera: flip it so near looks the same as in
        # metric depth
        disparity = self.depth_space == 'disparity'
        rel = -relative if disparity else relative
        # The stabilised output lives in the reference range [0, 1]: a per-frame percentile
        # range would bring the flicker back into the colours.
        fixed = ((-1.0, 0.0) if disparity else (0.0, 1.0)) if stabilized else None
        return colorize_depth(rel, colormap=cmap, value_range=fixed)

    def _alignment_msg(self, res: FrameResult, header):
        state = res.alignment
        msg = self.alignment_type()
        msg.header = header
        msg.space = str(state.space)
        msg.scale = float(state.scale)
        msg.shift = float(state.shift)
        cov = np.asarray(state.covariance, dtype=np.float64).reshape(-1)
        msg.covariance = [float(v) for v in (cov[:4] if cov.size >= 4 else np.zeros(4))]
        msg.candidates = int(state.candidates)
        msg.inliers = int(state.inliers)
        msg.residual_rms = float(state.residual_rms)
        msg.age = float(state.age)
        msg.valid = bool(state.valid)
        msg.source = res.estimate.source
        # of the scale and shift in this message (stale ones included), like the covariance
        msg.uncertainty = MetricCarry.uncertainty(state.scale, state.shift, state.covariance)
        msg.resets = 0 if res.temporal is None else int(res.temporal.resets)
        return msg
