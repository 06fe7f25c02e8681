"""
One frame in, output messages out: the node's work minus rclpy.

The live node and the offline bag tool share this, so both produce byte-identical outputs for
the same inputs. A frame goes through three steps: `prepare` (decode the image, fix the outputs
and parameters it runs with), `infer` (the engine, for a list of frames: same-size frames share
one predict_batch call) and `finish` (metric alignment with whatever sparse depth was matched to
the frame; with temporal.stabilize also the inter-frame stabiliser and the metric carry of
core.temporal; every per-pixel output written once into its message, REP 117 semantics for
depth: NaN invalid, +Inf beyond range; metres only while a metric scale is valid). `process`
runs the three in a row; the node runs infer and finish on two threads so they overlap. With
several cameras each has its own FrameProcessor (filters, parameters) and all share one
BatchInference, the engine: frames of several cameras go into one model call.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import threading
import time
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from lotus_ros.core.alignment import AlignmentState, MetricAligner
from lotus_ros.core.engine import Prediction
from lotus_ros.core.geometry import Intrinsics, intrinsics_from_camera_info
from lotus_ros.core.render import HostFrame
from lotus_ros.core.stamps import stamp_seconds
from lotus_ros.core.temporal import (
    MetricCarry,
    MetricEstimate,
    StabilizedFrame,
    TemporalStabilizer,
)
from lotus_ros.ros.clouds import CloudError, cloud_to_xyz, packed_to_msg, transform_points
from lotus_ros.ros.frame_assembly import FrameInputs
from lotus_ros.ros.images import (
    ImageConversionError,
    byte_array,
    compressed_to_rgb,
    depth_image_to_metres,
    image_message,
    image_to_rgb,
)
from lotus_ros.ros.messages import output_camera_info
from lotus_ros.ros.outputs import OUTPUTS, alignment_type
from lotus_ros.ros.parameters import SPECS, defaults

DEPTH_PAIR = {'depth/image', 'depth/camera_info'}
NORMAL_OUTPUTS = {'normal/image', 'normal/colored'}
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


@dataclass
class FrameJob:
    """One frame between the steps: what it needs, its prediction and its result so far."""

    inputs: FrameInputs
    rgb: np.ndarray                 # HxWx3 uint8, decoded
    wanted: set[str]                # outputs to build
    params: dict[str, Any]          # the parameters the frame runs with, whatever changes later
    epoch: int                      # alignment filter generation (reset() starts a new one)
    depth: bool                     # passes the engine must run
    normal: bool
    prediction: Prediction | None = None
    ready: Any = None               # device predictions: CUDA event recorded after inference
    result: FrameResult = field(default_factory=FrameResult)


class BatchInference:
    """
    The engine, shared by the cameras: one predict_batch per image size and passes.

    Counts the calls by batch size and their time for the engine's diagnostics.
    """

    def __init__(self, engine):
        self.engine = engine
        # CUDA engines hand their predictions over on the device (core.device_render).
        self.device_outputs = str(engine.device).startswith('cuda')
        self._device_renderer = None
        self._lock = threading.Lock()
        self._calls: Counter[int] = Counter()
        self._seconds: Counter[int] = Counter()

    def infer(self, jobs: list[FrameJob]) -> None:
        """
        Run the engine for prepared frames (of any cameras): same size and passes, one call.

        A frame that wants neither depth nor normals is left without a prediction (finish then
        builds nothing).
        """
        groups: dict[tuple, list[FrameJob]] = {}
        for job in jobs:
            if job.depth or job.normal:
                groups.setdefault((job.rgb.shape, job.depth, job.normal), []).append(job)
        for (_, depth, normal), group in groups.items():
            t0 = time.perf_counter()
            # asked only of CUDA engines: engines written before device_outputs still work
            on_device = {'device_outputs': True} if self.device_outputs else {}
            preds = self.engine.predict_batch([job.rgb for job in group], depth=depth,
                                              normal=normal, **on_device)
            ready = self.renderer().ready_event() if self.device_outputs else None
            elapsed = time.perf_counter() - t0
            with self._lock:
                self._calls[len(group)] += 1
                self._seconds[len(group)] += elapsed
            for job, pred in zip(group, preds, strict=True):
                job.prediction, job.ready = pred, ready
                job.result.timings['inference'] = elapsed
                for k, v in (pred.timings or {}).items():
                    job.result.timings['model.' + k] = float(v)

    def batch_stats(self) -> dict[int, tuple[int, float]]:
        """Per batch size: (calls, mean seconds per call) since the start."""
        with self._lock:
            return {n: (calls, self._seconds[n] / calls)
                    for n, calls in sorted(self._calls.items())}

    def renderer(self):
        """Return the device renderer of CUDA predictions (core.device_render), made once."""
        if self._device_renderer is None:
            from lotus_ros.core.device_render import DeviceRenderer
            self._device_renderer = DeviceRenderer(self.engine.device)
        return self._device_renderer


class FrameProcessor:
    """
    Holds the engine, the per-frame filters (alignment, stabiliser, carry) and the parameters.

    Parameter changes and resets take effect for frames prepared after them: a frame carries
    the parameters it was prepared with, and the filters are rebuilt when a frame of another
    epoch or other alignment (temporal) parameters reaches `finish`: alignment changes restart
    the filter and the temporal state built on it, temporal changes only the stabiliser and the
    carry. So infer and finish may run on two threads, each frame in order, without either
    changing under the other.
    """

    def __init__(self, engine, params: dict[str, Any] | None = None,
                 inference: BatchInference | None = None):
        self.engine = engine
        # the cameras of one node share theirs; a processor on its own makes one
        self.inference = inference if inference is not None else BatchInference(engine)
        self.params = defaults()
        if params:
            self.params.update(params)
        self._epoch = 0
        self._aligner: MetricAligner | None = None
        self._stabilizer: TemporalStabilizer | None = None
        self._carry: MetricCarry | None = None
        self._aligner_key: tuple | None = None
        self._temporal_key: tuple | None = None
        # lotus_ros.msg.DepthAlignment, or None from a source tree without a colcon build.
        self.alignment_type = alignment_type()
        # non-zero distortion is reported once, not every frame (the node logs problems)
        self._warned_distortion = False

    # -- configuration ---------------------------------------------------------------------
    @property
    def depth_space(self) -> str:
        # The engine resolved it (depth_space parameter, else the checkpoint's signals).
        return self.engine.depth_space or 'disparity'

    @staticmethod
    def _alignment_enabled(params: dict[str, Any]) -> bool:
        return params['alignment.source'] != 'none' or params['alignment.fixed_scale'] != 0.0

    @property
    def alignment_enabled(self) -> bool:
        return self._alignment_enabled(self.params)

    def _make_aligner(self, params: dict[str, Any]) -> MetricAligner:
        fixed = params['alignment.fixed_scale']
        return MetricAligner(
            space=self.depth_space, mode=params['alignment.mode'],
            z_min=params['alignment.z_min'], z_max=params['alignment.z_max'],
            max_age=params['alignment.max_age'],
            fixed_scale=fixed if fixed != 0.0 else None,
            fixed_shift=params['alignment.fixed_shift'],
            min_inliers=params['alignment.min_inliers'],
            process_noise=params['alignment.process_noise'],
            measurement_floor=params['alignment.measurement_floor'])

    def _make_temporal(self, params: dict[str, Any]) -> tuple:
        """Build a stabiliser and a metric carry while temporal.stabilize is on (else None)."""
        if not params['temporal.stabilize']:
            return None, None
        return (TemporalStabilizer(time_constant=params['temporal.time_constant'],
                                   jump=params['temporal.jump'],
                                   reset_after=params['temporal.reset_after']),
                MetricCarry(mode=params['temporal.carry'],
                            max_uncertainty=params['temporal.carry_max_uncertainty'],
                            noise_density=params['temporal.carry_noise_density']))

    def _filters(self, params: dict[str, Any], epoch: int) -> MetricAligner:
        """Return the aligner for these parameters and epoch; rebuild the filters that changed."""
        align_key = (epoch, *(params[k] for k in _ALIGN_KEYS))
        temporal_key = (*align_key, *(params[k] for k in _TEMPORAL_KEYS))
        if align_key != self._aligner_key:
            self._aligner, self._aligner_key = self._make_aligner(params), align_key
        if temporal_key != self._temporal_key:
            (self._stabilizer, self._carry), self._temporal_key = \
                self._make_temporal(params), temporal_key
        return self._aligner

    # The filters for the current parameters, for callers on the finishing thread.
    @property
    def aligner(self) -> MetricAligner:
        return self._filters(self.params, self._epoch)

    @property
    def stabilizer(self) -> TemporalStabilizer | None:
        self._filters(self.params, self._epoch)
        return self._stabilizer

    @property
    def carry(self) -> MetricCarry | None:
        self._filters(self.params, self._epoch)
        return self._carry

    def reset(self) -> None:
        """Start the filters again (time went backwards: their state is another run's)."""
        self._epoch += 1

    def update_params(self, changes: dict[str, Any]) -> None:
        """Apply already validated changes (the filters follow, see the class docstring)."""
        self.params = {**self.params, **changes}

    def enabled_outputs(self, params: dict[str, Any] | None = None) -> set[str]:
        params = self.params if params is None else params
        engine = self.engine
        out = {name for name, o in OUTPUTS.items() if params[o.toggle]
               and (engine.has_depth or not o.needs_depth)
               and (engine.has_normal or not o.needs_normal)
               and (engine.has_uncertainty or not o.needs_uncertainty)
               and (params['temporal.stabilize'] or not o.needs_stabilize)}
        if not self._alignment_enabled(params) or self.alignment_type is None:
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
        job = self.prepare(inp, wanted)
        self.infer([job])
        return self.finish(job)

    def prepare(self, inp: FrameInputs, wanted: set[str] | None = None) -> FrameJob:
        """Decode the image and fix what the frame needs; raises ImageConversionError."""
        params = self.params
        enabled = self.enabled_outputs(params)
        wanted = enabled if wanted is None else (set(wanted) & enabled)
        if DEPTH_PAIR & wanted:
            # exact-time consumers (depth_image_proc, TimeSynchronizer) need both or neither
            wanted |= DEPTH_PAIR
        t0 = time.perf_counter()
        rgb = self.decode_image(inp.image)
        want_normal = bool(NORMAL_OUTPUTS & wanted) or (
            'points' in wanted and params['points.normals'])
        job = FrameJob(inputs=inp, rgb=rgb, wanted=wanted, params=params, epoch=self._epoch,
                       depth=any(OUTPUTS[name].needs_depth for name in wanted),
                       normal=want_normal and self.engine.has_normal)
        job.result.timings['decode'] = time.perf_counter() - t0
        return job

    def infer(self, jobs: list[FrameJob]) -> None:
        """Run the engine for prepared frames (BatchInference.infer)."""
        self.inference.infer(jobs)

    def _frame(self, job: FrameJob, w: int, h: int):
        """Return the frame's renderer: numpy for host predictions, torch for device ones."""
        pred = job.prediction
        if isinstance(pred.depth, np.ndarray) or isinstance(pred.normal, np.ndarray):
            return HostFrame(pred, w, h)
        return self.inference.renderer().frame(pred, w, h, ready=job.ready)

    def finish(self, job: FrameJob) -> FrameResult:
        """Align and build every wanted output message of an inferred frame."""
        res, pred = job.result, job.prediction
        if pred is None:
            return res
        p, wanted, inp = job.params, job.wanted, job.inputs
        aligner = self._filters(job.params, job.epoch)
        stamp = stamp_seconds(inp.image.header.stamp)
        header = inp.image.header
        h, w = job.rgb.shape[:2]
        t0 = time.perf_counter()
        frame = self._frame(job, w, h)
        out: dict[str, Any] = {}

        have_normals = pred.normal is not None and job.normal
        if have_normals:
            views = {}
            for name, encoding in (('normal/image', '32FC3'), ('normal/colored', 'rgb8')):
                if name in wanted:
                    out[name], views[name] = image_message(h, w, encoding, header)
            frame.normals(image=views.get('normal/image'), colored=views.get('normal/colored'))
        relative = frame.relative
        stabilized = self._stabilize(relative, stamp, job.rgb, res)
        shown = relative if stabilized is None else stabilized.relative
        for name, values in (('depth/relative', shown), ('depth/relative_raw', relative)):
            if relative is not None and name in wanted:
                out[name], view = image_message(h, w, '32FC1', header)
                np.copyto(view, values)
        t1 = time.perf_counter()

        # metric alignment
        state = None
        metric = False
        need_intr = 'points' in wanted or (
            inp.sparse is not None and p['alignment.source'] == 'sparse_points')
        intr = None
        if need_intr or 'depth/camera_info' in wanted:
            intr = self._intrinsics(inp.camera_info, w, h, res)
        if relative is not None and (self._alignment_enabled(p) or
                                     {'depth/image', 'points'} & wanted):
            state = self._metric_state(
                self._align(aligner, p['alignment.source'], relative, stamp, inp, intr, w, h,
                            res), stabilized, res)
            if state.valid:
                view = None
                if 'depth/image' in wanted and intr is not None:
                    out['depth/image'], view = image_message(h, w, '32FC1', header)
                    out['depth/camera_info'] = output_camera_info(inp.camera_info, header)
                frame.metric(aligner, state, out=view)
                metric = True
        res.alignment, res.metric = state, metric
        t2 = time.perf_counter()

        if relative is not None and 'depth/colored' in wanted:
            out['depth/colored'], view = image_message(h, w, 'rgb8', header)
            lo, hi = p['visualization.depth_min'], p['visualization.depth_max']
            disparity = self.depth_space == 'disparity'
            if metric:
                value_range = (lo, hi) if (lo or hi) else None
            elif stabilized is not None:
                # The stabilised output lives in the reference range [0, 1]: a per-frame
                # percentile range would bring the flicker back into the colours.
                value_range = (-1.0, 0.0) if disparity else (0.0, 1.0)
            else:
                value_range = None
            frame.depth_colors(view, colormap=p['visualization.colormap'],
                               value_range=value_range, flip_relative=disparity,
                               relative=None if stabilized is None else stabilized.relative)
        if pred.uncertainty is not None and 'depth/uncertainty' in wanted:
            out['depth/uncertainty'], view = image_message(h, w, '32FC1', header)
            frame.uncertainty(view, scale=state.scale if metric else None,
                              disparity=self.depth_space == 'disparity',
                              relative_scale=None if stabilized is None else stabilized.scale)
        if state is not None and 'alignment' in wanted and self.alignment_type is not None:
            out['alignment'] = self._alignment_msg(res, header)
        t3 = time.perf_counter()
        if metric and 'points' in wanted and intr is not None:
            frame.cloud(intr, job.rgb if p['points.color'] else None,
                        normals=have_normals and p['points.normals'], allocate=byte_array,
                        organized=p['points.organized'], stride=p['points.stride'],
                        min_depth=p['points.min_depth'], max_depth=p['points.max_depth'],
                        layout=p['points.layout'])
        cloud = frame.finish()
        if cloud is not None:
            out['points'] = packed_to_msg(cloud, header)
        t4 = time.perf_counter()
        res.outputs = {name: out[name] for name in OUTPUTS if name in out}
        res.timings['align'] = t2 - t1
        res.timings['pack'] = t4 - t3
        res.timings['postprocess'] = (t1 - t0) + (t3 - t2)
        return res

    def _align(self, aligner: MetricAligner, source: str, relative: np.ndarray, stamp: float,
               inp: FrameInputs, intr: Intrinsics | None, w: int, h: int,
               res: FrameResult) -> AlignmentState:
        if inp.sparse is not None and source == 'sparse_depth' and isinstance(inp.sparse, Image):
            d = self._sparse_depth(inp.sparse, w, h, res)
            if d is not None:
                return aligner.update(relative, stamp, sparse_depth=d)
        elif inp.sparse is not None and source == 'sparse_points' \
                and isinstance(inp.sparse, PointCloud2):
            if intr is not None:
                xyz = self._sparse_points(inp, res)
                if xyz is not None:
                    return aligner.update(relative, stamp, points=xyz, intrinsics=intr)
        return aligner.state(stamp)

    def _stabilize(self, relative: np.ndarray | None, stamp: float, rgb: np.ndarray,
                   res: FrameResult) -> StabilizedFrame | None:
        """Stabilise the frame (the camera image compensates rotation); None while off."""
        if self._stabilizer is None or relative is None:
            return None
        t0 = time.perf_counter()
        res.temporal = self._stabilizer.update(relative, stamp, rgb)
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
            res.estimate = self._carry.update(state, stabilized)
        return res.estimate.state

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
