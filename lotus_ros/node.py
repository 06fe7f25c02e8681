"""
The lotus node: rclpy wiring around FrameProcessor.

Callbacks only store messages (frame queue, stamp caches); a single worker thread takes the next
frame, matches camera_info and sparse depth by stamp, runs the processor and publishes. So a slow
model never backs up the executor, and with drop_frames the latency stays about one inference.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from lotus_ros.diagnostics import NodeStats, build_diagnostics
from lotus_ros.frame_queue import FrameQueue
from lotus_ros.image_conversions import ImageConversionError
from lotus_ros.parameters import SPEC_BY_NAME, declare_parameters, validate, validate_set
from lotus_ros.processor import (
    OUTPUTS,
    FrameInputs,
    FrameProcessor,
    stamp_seconds,
    static_points_transform,
)
from lotus_ros.stamp_cache import SideInputs, stamp_to_ns

WARN_PERIOD = 5.0          # s between warnings of the same kind
SPARSE_WAIT = 0.05         # s the worker may wait for a sparse message that is about to arrive


class StartupError(Exception):
    """Raised for a node that must not come up half-alive; the message is the one log line."""


def load_engine(params: dict[str, Any]):
    """Build the engine named by `engine_factory`, else LotusEngine.from_pretrained."""
    factory = params['engine_factory']
    if factory:
        mod_name, _, attr = factory.partition(':')
        if not attr:
            raise StartupError(f"engine_factory '{factory}' must look like 'module:callable'")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise StartupError(f"engine_factory '{factory}' not found: {e}") from e
        return fn(dict(params))
    from lotus_ros.engine import LotusEngine
    return LotusEngine.from_pretrained(
        params['depth_model'] or None, params['normal_model'] or None,
        device=params['device'], dtype=params['dtype'],
        processing_resolution=params['processing_resolution'],
        resize_mode=params['resize_mode'], local_files_only=params['local_files_only'],
        depth_space=params['depth_space'] or None, compile=params['compile'])


class LotusNode(Node):
    def __init__(self, **kwargs):
        super().__init__('lotus', **kwargs)
        self.params = declare_parameters(self)
        for name, value in self.params.items():
            reason = validate(name, value)
            if reason:
                raise StartupError(f'invalid parameter: {reason}')
        reason = validate_set(self.params)
        if reason:
            raise StartupError(f'invalid parameters: {reason}')
        p = self.params

        try:
            engine = load_engine(p)
        except StartupError:
            raise
        except Exception as e:  # any loader failure is fatal, with its reason on one line
            what = ' '.join(str(e).split()) or type(e).__name__
            raise StartupError(
                f'cannot load the model ({what}). Set depth_model/normal_model to a local '
                'diffusers folder or a reachable Hugging Face id (or clear local_files_only)'
            ) from e
        self.engine = engine
        self.processor = FrameProcessor(engine, p)
        self.stats = NodeStats()
        self.queue = FrameQueue(drop_frames=p['drop_frames'], maxsize=p['queue_size'])
        self.side = SideInputs(capacity=30)
        self._last_sparse_wall = -1e9
        self._warned: dict[str, float] = {}
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._tf_buffer = None

        qos_override = QoSOverridingOptions.with_default_policies()
        sub_qos = qos_profile_sensor_data
        pub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                             reliability=ReliabilityPolicy.RELIABLE)
        if p['image_transport'] == 'compressed':
            self.create_subscription(CompressedImage, 'image/compressed', self._on_image,
                                     sub_qos, qos_overriding_options=qos_override)
        else:
            self.create_subscription(Image, 'image', self._on_image, sub_qos,
                                     qos_overriding_options=qos_override)
        self.create_subscription(CameraInfo, 'camera_info', self._on_info, sub_qos,
                                 qos_overriding_options=qos_override)
        source = p['alignment.source']
        if source == 'sparse_depth':
            self.create_subscription(Image, 'sparse_depth', self._on_sparse, sub_qos,
                                     qos_overriding_options=qos_override)
        elif source == 'sparse_points':
            self.create_subscription(PointCloud2, 'sparse_points', self._on_sparse, sub_qos,
                                     qos_overriding_options=qos_override)
            if p['alignment.use_tf']:
                self._start_tf()

        types = {'depth/image': Image, 'depth/camera_info': CameraInfo,
                 'depth/relative': Image, 'depth/colored': Image, 'normal/image': Image,
                 'normal/colored': Image, 'points': PointCloud2}
        align_type = self.processor.alignment_type
        if align_type is not None:
            types['alignment'] = align_type
        self.pubs = {name: self.create_publisher(types[name], name, pub_qos,
                                                 qos_overriding_options=qos_override)
                     for name in OUTPUTS if name in types}
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # steady clock: diagnostics must flow even while a simulated clock is paused
        self.create_timer(p['diagnostics_period'], self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

        self._running = True
        self.worker = threading.Thread(target=self._work, name='lotus_inference', daemon=True)
        self.worker.start()
        self.get_logger().info(
            f"ready: device={getattr(engine, 'device', '?')} "
            f"dtype={getattr(engine, 'dtype', '?')} "
            f"depth={getattr(engine, 'has_depth', False)} "
            f"normal={getattr(engine, 'has_normal', False)} "
            f"alignment={source} drop_frames={p['drop_frames']} lazy={p['lazy']}")

    # -- helpers ---------------------------------------------------------------------------
    def _start_tf(self) -> None:
        try:
            import tf2_ros
        except ImportError:
            self.get_logger().info(
                'tf2_ros is not installed: sparse_points in another frame are moved with '
                'alignment.points_transform')
            return
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

    def _warn(self, reason: str, text: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(reason, -1e9) >= WARN_PERIOD:
            self._warned[reason] = now
            count = self.stats.rejected.get(reason, 0)
            self.get_logger().warning(f'{text} [{reason}, {count} so far]')

    def _problem(self, reason: str, text: str) -> None:
        self.stats.on_rejected(reason)
        self._warn(reason, text)

    # -- callbacks: store only -------------------------------------------------------------
    def _on_image(self, msg) -> None:
        self.stats.on_input()
        if not self.queue.put((msg, time.monotonic())) and not self.queue.drop_frames:
            self._warn('queue_overflow', f'input queue full ({self.queue.maxsize}): the oldest '
                       f'frame was discarded ({self.queue.overflowed} so far); slow the input '
                       'or raise queue_size')

    def _on_info(self, msg: CameraInfo) -> None:
        self.side.add_camera_info(msg)

    def _on_sparse(self, msg) -> None:
        self._last_sparse_wall = time.monotonic()
        self.side.add_sparse(msg)

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {}
        for prm in params:
            if prm.name not in SPEC_BY_NAME:
                continue
            reason = validate(prm.name, prm.value, running=True)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            changes[prm.name] = prm.value
        if not changes:
            return SetParametersResult(successful=True)
        with self._pending_lock:
            merged = dict(self.params)
            merged.update(self._pending)
            merged.update(changes)
            reason = validate_set(merged)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            self._pending.update(changes)
            self.params.update(changes)
        return SetParametersResult(successful=True)

    # -- worker ----------------------------------------------------------------------------
    def _wanted(self) -> set[str]:
        enabled = self.processor.enabled_outputs()
        if not self.processor.params['lazy']:
            return enabled
        return {n for n in enabled if n in self.pubs and
                self.pubs[n].get_subscription_count() > 0}

    def _match_inputs(self, msg) -> FrameInputs:
        p = self.processor.params
        stamp_ns = stamp_to_ns(msg.header.stamp)
        inp = FrameInputs(image=msg, camera_info=self.side.match_camera_info(
            stamp_ns, p['camera_info_tolerance']))
        if p['alignment.source'] == 'none':
            return inp
        tol = p['alignment.max_time_difference']
        sparse = self.side.match_sparse(stamp_ns, tol)
        if sparse is None and time.monotonic() - self._last_sparse_wall < 0.5:
            # the sparse sensor is alive: its message for this frame may be in flight
            deadline = time.monotonic() + SPARSE_WAIT
            while sparse is None and time.monotonic() < deadline and self._running:
                time.sleep(0.005)
                sparse = self.side.match_sparse(stamp_ns, tol)
        if sparse is not None:
            inp.sparse = sparse
            if isinstance(inp.sparse, PointCloud2):
                tf = self._points_transform(inp.sparse, msg.header)
                if tf is False:
                    inp.sparse = None
                else:
                    inp.points_transform = tf
        return inp

    def _points_transform(self, cloud: PointCloud2, header):
        """Return (t, q) image frame <- cloud frame, None for identity, False when unknown."""
        src, dst = cloud.header.frame_id, header.frame_id
        if not src or src == dst:
            return None
        if self._tf_buffer is not None:
            try:
                tf = self._tf_buffer.lookup_transform(dst, src,
                                                      Time.from_msg(cloud.header.stamp))
                t, q = tf.transform.translation, tf.transform.rotation
                return (t.x, t.y, t.z), (q.x, q.y, q.z, q.w)
            except Exception as e:  # tf2 raises several unrelated exception types
                self._problem('tf', f"no transform {dst} <- {src}, cloud skipped: "
                              f"{' '.join(str(e).split())}")
                return False
        return static_points_transform(self.processor.params)

    def _apply_pending(self) -> None:
        with self._pending_lock:
            changes, self._pending = self._pending, {}
        if changes:
            self.processor.update_params(changes)
            self.get_logger().info('parameters changed: ' + ', '.join(
                f'{k}={v}' for k, v in sorted(changes.items())))

    def _work(self) -> None:
        while self._running:
            item = self.queue.get(timeout=0.2)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as e:  # keep the worker alive whatever one frame does
                if not self._running or not rclpy.ok(context=self.context):
                    return
                self._problem('processing_error',
                              f"frame failed: {type(e).__name__}: {' '.join(str(e).split())}")

    def _process(self, msg, t_received: float) -> None:
        self._apply_pending()
        wanted = self._wanted()
        if not wanted:
            self.stats.skipped_lazy += 1
            return
        inputs = self._match_inputs(msg)
        try:
            res = self.processor.process(inputs, wanted)
        except ImageConversionError as e:
            self._problem('image_' + e.reason, f'image rejected: {e}')
            return
        t0 = time.perf_counter()
        for name, out in res.outputs.items():
            self.pubs[name].publish(out)
        res.timings['publish'] = time.perf_counter() - t0
        now = self.get_clock().now().nanoseconds * 1e-9
        self.stats.on_frame(res.timings, now - stamp_seconds(msg.header.stamp),
                            time.monotonic() - t_received, res.alignment, res.metric)
        for reason, text in res.problems:
            self._problem(reason, text)

    def _publish_diagnostics(self) -> None:
        mem = {}
        try:
            mem = dict(self.engine.memory_stats() or {})
        except Exception:  # memory stats are best effort
            mem = {}
        arr = build_diagnostics(
            self.get_clock().now().to_msg(), self.get_name(), self.stats.snapshot(),
            dropped=self.queue.dropped, overflowed=self.queue.overflowed,
            device=str(getattr(self.engine, 'device', '?')),
            dtype=str(getattr(self.engine, 'dtype', '?')), memory=mem,
            alignment_enabled=self.processor.alignment_enabled)
        self.diag_pub.publish(arr)

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the worker; True when it finished within the timeout."""
        self._running = False
        self.queue.close()
        self.worker.join(timeout)
        return not self.worker.is_alive()


def main(args: list[str] | None = None) -> int:
    try:
        rclpy.init(args=args)
    except Exception as e:  # bad --ros-args: rcl already said which one
        print(f"[lotus_node] FATAL: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return 2
    node = None
    try:
        node = LotusNode()
    except StartupError as e:
        print(f'[lotus_node] FATAL: {e}', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        rclpy.try_shutdown()
        return 0
    except Exception as e:  # parameter type errors and the like: one line, no traceback
        print(f"[lotus_node] FATAL: {type(e).__name__}: {' '.join(str(e).split())}",
              file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        finished = node.stop(timeout=1.0)
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
    if not finished:
        # the worker is inside a long model call: do not wait for it (2 s shutdown budget)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == '__main__':
    sys.exit(main())
