"""
The lotus node: rclpy wiring around FrameProcessor.

Callbacks only store messages (frame queue, stamp caches). Two threads (ros.pipeline) do the
work: the inference stage takes the next frame, applies parameter changes, matches camera_info
and sparse depth by stamp and runs the engine; the finishing stage aligns, builds the messages
and publishes, meanwhile the next frame is in inference. So a slow model never backs up the
executor, the node's own work hides behind the model's, and with drop_frames the latency stays
about one inference plus one finishing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from lotus_ros.core.engine import load_engine, release_memory
from lotus_ros.core.stamps import BACKWARD_JUMP_NS, stamp_to_ns
from lotus_ros.ros.diagnostics import NodeStats, build_diagnostics
from lotus_ros.ros.frame_assembly import FrameAssembler, static_points_transform
from lotus_ros.ros.frame_queue import FrameQueue
from lotus_ros.ros.images import ImageConversionError
from lotus_ros.ros.outputs import output_types
from lotus_ros.ros.parameters import SPEC_BY_NAME, declare_parameters, validate, validate_set
from lotus_ros.ros.pipeline import FramePipeline
from lotus_ros.ros.processor import FrameJob, FrameProcessor

NODE_NAME = 'lotus'
WARN_PERIOD = 5.0          # s between warnings of the same kind
# The stages and the executor share the GIL: a thread woken by its model call or a message
# would wait up to the default 5 ms switch interval for a thread busy in Python.
GIL_SWITCH_INTERVAL = 0.0005
SPARSE_WAIT = 0.05         # s a frame may wait for a sparse message that is about to arrive


# glibc mallopt parameters and the values keep_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20     # glibc's maximum on 64-bit
_TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """
    Let glibc keep freed blocks of up to 32 MB for reuse instead of returning them to the OS.

    Every frame allocates and frees ~20 MB of messages and numpy temporaries at 640x480; given
    back each time, the next frame pays a page fault per 4 KiB, which was half of the
    processor's own time per frame. Other C libraries keep their own policy (False).
    """
    try:
        libc = ctypes.CDLL('libc.so.6')
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


class StartupError(Exception):
    """Raised for a node that must not come up half-alive; the message is the one log line."""


class LotusNode(Node):
    """
    The lotus node, configured and activated by its constructor.

    The steps _configure, _activate, _deactivate and _cleanup are the whole bring-up and
    teardown; the lifecycle node (lifecycle_node.LotusLifecycleNode) runs the same steps from
    its transitions instead.
    """

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._init_state()
        self._configure()
        self._activate()

    def _init_state(self) -> None:
        """Nothing loaded, no endpoints: the state before _configure and after _cleanup."""
        self.engine = None
        self.processor: FrameProcessor | None = None
        self.queue: FrameQueue | None = None
        self.pipeline: FramePipeline | None = None
        self._running = False
        self._inputs: list = []
        self._info_sub = None
        self.pubs: dict[str, Any] = {}
        self.diag_pub = None
        self._diag_timer = None
        self._jump_handle = None
        self._tf_buffer = None
        self._tf_listener = None
        self._watching_parameters = False

    def _configure(self) -> None:
        """Declare and check the parameters, load the engine, create the endpoints."""
        p = declare_parameters(self)
        for name, value in p.items():
            reason = validate(name, value)
            if reason:
                raise StartupError(f'invalid parameter: {reason}')
        reason = validate_set(p)
        if reason:
            raise StartupError(f'invalid parameters: {reason}')

        try:
            engine = load_engine(p)
        except Exception as e:  # any loader failure is fatal, with its reason on one line
            what = ' '.join(str(e).split()) or type(e).__name__
            raise StartupError(
                f'cannot load the model ({what}). Set depth_model/normal_model to a local '
                'diffusers folder or a reachable Hugging Face id (or clear local_files_only)'
            ) from e
        self.engine = engine
        self.processor = FrameProcessor(engine, p)
        self.stats = NodeStats()
        self.assembler = FrameAssembler(capacity=30, lookup_transform=self._lookup_transform)
        self._warned: dict[str, float] = {}
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._last_image_ns: int | None = None
        self._time_jumped = threading.Event()
        self._started_ns = self.get_clock().now().nanoseconds

        qos_override = QoSOverridingOptions.with_default_policies()
        sub_qos = qos_profile_sensor_data
        pub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                             reliability=ReliabilityPolicy.RELIABLE)
        if p['image_transport'] == 'compressed':
            image_sub = self.create_subscription(CompressedImage, 'image/compressed',
                                                 self._on_image, sub_qos,
                                                 qos_overriding_options=qos_override)
        else:
            image_sub = self.create_subscription(Image, 'image', self._on_image, sub_qos,
                                                 qos_overriding_options=qos_override)
        self._info_sub = self.create_subscription(CameraInfo, 'camera_info', self._on_info,
                                                  sub_qos, qos_overriding_options=qos_override)
        self._inputs = [image_sub, self._info_sub]
        source = p['alignment.source']
        if source == 'sparse_depth':
            self._inputs.append(self.create_subscription(
                Image, 'sparse_depth', self._on_sparse, sub_qos,
                qos_overriding_options=qos_override))
        elif source == 'sparse_points':
            self._inputs.append(self.create_subscription(
                PointCloud2, 'sparse_points', self._on_sparse, sub_qos,
                qos_overriding_options=qos_override))
            if p['alignment.use_tf']:
                self._start_tf()

        self.pubs = {name: self._create_output_publisher(msg_type, name, pub_qos,
                                                         qos_overriding_options=qos_override)
                     for name, msg_type in output_types().items()}
        self.diag_pub = self._create_output_publisher(DiagnosticArray, '/diagnostics', 10)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if hasattr(self, 'add_post_set_parameters_callback'):  # Iron and newer
            self.add_post_set_parameters_callback(self._on_parameters_set)
        self._watching_parameters = True
        # Backward jumps of the node clock (sim time restarted by a looping bag, or the system
        # clock set back); stamps jumping back without a clock are caught per frame.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(seconds=-1.0),
                          on_clock_change=False),
            post_callback=lambda jump: self._time_jumped.set())
        # steady clock: diagnostics must flow even while a simulated clock is paused; they
        # start with inference (_activate)
        self._diag_timer = self.create_timer(p['diagnostics_period'], self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._diag_timer.cancel()

    def _activate(self) -> None:
        """Start inference, publishing and diagnostics."""
        self._start_workers()
        self._diag_timer.reset()
        engine, p = self.engine, self.processor.params
        self.get_logger().info(
            f'ready: device={engine.device} dtype={engine.dtype} depth={engine.has_depth} '
            f'normal={engine.has_normal} '
            f"alignment={p['alignment.source']} drop_frames={p['drop_frames']} lazy={p['lazy']}")

    def _deactivate(self) -> None:
        """Stop inference after the frame in flight; the engine and the endpoints stay."""
        self.stop(timeout=None)
        if self._diag_timer is not None:
            self._diag_timer.cancel()

    def _cleanup(self) -> None:
        """Undo _configure (all of it or the part that ran) and free the engine's memory."""
        self._deactivate()
        if self._watching_parameters:
            self.remove_on_set_parameters_callback(self._on_set_parameters)
            if hasattr(self, 'remove_post_set_parameters_callback'):
                self.remove_post_set_parameters_callback(self._on_parameters_set)
        for sub in self._inputs:
            self.destroy_subscription(sub)
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        for pub in [*self.pubs.values(), self.diag_pub]:
            if pub is not None:
                self._destroy_output_publisher(pub)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        if self._jump_handle is not None:
            self._jump_handle.unregister()
        self._init_state()  # drops the last references to the engine (and the processor)
        release_memory()

    def _create_output_publisher(self, msg_type, topic: str, qos, **kwargs):
        return self.create_publisher(msg_type, topic, qos, **kwargs)

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_publisher(publisher)

    def _start_workers(self) -> None:
        """Start the two stages (ros.pipeline) on a fresh frame queue."""
        p = self.processor.params
        self.queue = FrameQueue(drop_frames=p['drop_frames'], maxsize=p['queue_size'])
        self._running = True
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.pipeline = FramePipeline(self.queue, self._infer, self._finish, self._failed,
                                      just_in_time=p['drop_frames'])

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

    def _lookup_transform(self, cloud: PointCloud2, header):
        """tf2 image frame <- cloud frame at the cloud's stamp; False (skip) when unknown."""
        if self._tf_buffer is None:
            return static_points_transform(self.processor.params)
        src, dst = cloud.header.frame_id, header.frame_id
        try:
            tf = self._tf_buffer.lookup_transform(dst, src, Time.from_msg(cloud.header.stamp))
        except Exception as e:  # tf2 raises several unrelated exception types
            self._problem('tf', f"no transform {dst} <- {src}, cloud skipped: "
                          f"{' '.join(str(e).split())}")
            return False
        t, q = tf.transform.translation, tf.transform.rotation
        return (t.x, t.y, t.z), (q.x, q.y, q.z, q.w)

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
        if not self._running:  # inactive: the frame is nobody's
            return
        self.stats.on_input()
        if not self.queue.put((msg, time.monotonic())) and not self.queue.drop_frames \
                and not self.queue.closed:
            self._warn('queue_overflow', f'input queue full ({self.queue.maxsize}): the oldest '
                       f'frame was discarded ({self.queue.overflowed} so far); slow the input '
                       'or raise queue_size')

    def _on_info(self, msg: CameraInfo) -> None:
        self.assembler.add_camera_info(msg)

    def _on_sparse(self, msg) -> None:
        self.assembler.add_sparse(msg)

    def _lotus_changes(self, params) -> dict[str, Any]:
        return {prm.name: prm.value for prm in params if prm.name in SPEC_BY_NAME}

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate only; the change is applied before the next frame is taken (_apply_pending)."""
        changes = self._lotus_changes(params)
        for name, value in changes.items():
            reason = validate(name, value, running=True)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if changes:
            with self._pending_lock:
                reason = validate_set({**self.processor.params, **self._pending, **changes})
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if not hasattr(self, 'add_post_set_parameters_callback'):  # Humble: no post hook
                self._on_parameters_set(params)
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, params) -> None:
        changes = self._lotus_changes(params)
        if changes:
            with self._pending_lock:
                self._pending.update(changes)

    # -- the two stages --------------------------------------------------------------------
    def _wanted(self) -> set[str]:
        enabled = self.processor.enabled_outputs()
        if not self.processor.params['lazy']:
            return enabled
        return {n for n in enabled if n in self.pubs and
                self.pubs[n].get_subscription_count() > 0}

    def _assemble(self, msg):
        """Pair the image with its side inputs, waiting briefly for ones still in flight."""
        p = self.processor.params
        budgets = {'camera_info': p['camera_info_wait'], 'sparse': SPARSE_WAIT}
        published = self.count_publishers(self._info_sub.topic_name) > 0
        waiting = self.assembler.waiting_for(msg, p, camera_info_published=published)
        if waiting:
            deadline = time.monotonic() + max(budgets[name] for name in waiting)
            while waiting and self._running and time.monotonic() < deadline:
                time.sleep(0.002)
                waiting = self.assembler.waiting_for(msg, p, camera_info_published=published)
        return self.assembler.assemble(msg, p)

    def _check_time(self, msg) -> None:
        """Reset everything that belongs to an earlier run when time went backwards."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        backward = self._last_image_ns is not None and \
            stamp_ns < self._last_image_ns - BACKWARD_JUMP_NS
        self._last_image_ns = stamp_ns
        if not (backward or self._time_jumped.is_set()):
            return
        self._time_jumped.clear()
        self.assembler.time_went_back(stamp_ns)
        self.processor.reset()
        self.stats.on_time_jump()
        self._started_ns = min(self._started_ns, self.get_clock().now().nanoseconds)
        self.get_logger().warning(
            'time went backwards (bag loop, new bag or clock reset): stamp caches, alignment '
            f'filter and statistics reset [{self.stats.time_jumps} so far]')

    def _apply_pending(self) -> None:
        """Apply parameter changes, in the one place they take effect: before a frame is taken."""
        with self._pending_lock:
            changes, self._pending = self._pending, {}
            if changes:
                self.processor.update_params(changes)
        if changes:
            self.get_logger().info('parameters changed: ' + ', '.join(
                f'{k}={v}' for k, v in sorted(changes.items())))

    def _failed(self, e: Exception) -> None:
        if self._running and rclpy.ok(context=self.context):
            self._problem('processing_error',
                          f"frame failed: {type(e).__name__}: {' '.join(str(e).split())}")

    def _infer(self, frames: list[tuple[Any, float]]) -> list[tuple[FrameJob, float]]:
        """Inference stage: take the frames, pair their side inputs, run the engine on them."""
        jobs = []
        for msg, t_received in frames:
            t0 = time.perf_counter()
            self._apply_pending()
            self._check_time(msg)
            wanted = self._wanted()
            if not wanted:
                self.stats.on_skipped_lazy()
                continue
            inputs = self._assemble(msg)
            try:
                job = self.processor.prepare(inputs, wanted)
            except ImageConversionError as e:
                self._problem('image_' + e.reason, f'image rejected: {e}')
                continue
            # pairing side inputs (and waiting for late ones) before the decode
            job.result.timings['assemble'] = time.perf_counter() - t0 - \
                job.result.timings['decode']
            jobs.append((job, t_received))
        self.processor.infer([job for job, _ in jobs])
        return jobs

    def _finish(self, item: tuple[FrameJob, float]) -> None:
        """Finishing stage: align, build the messages and publish them."""
        job, t_received = item
        res = self.processor.finish(job)
        t0 = time.perf_counter()
        for name, out in res.outputs.items():
            self.pubs[name].publish(out)
        res.timings['publish'] = time.perf_counter() - t0
        self.stats.on_frame(res.timings, self._latency(job.inputs.image),
                            time.monotonic() - t_received, res.alignment, res.metric,
                            estimate=res.estimate, temporal=res.temporal)
        for reason, text in res.problems:
            self._problem(reason, text)

    def _latency(self, msg) -> float | None:
        """
        Stamp to publish on the node clock; None for stamps from before the node started.

        A bag replayed without sim time carries stamps from the day it was recorded: its
        "latency" would read in years and mean nothing.
        """
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns < self._started_ns - BACKWARD_JUMP_NS:
            return None
        return (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9

    def _publish_diagnostics(self) -> None:
        mem = {}
        try:
            mem = dict(self.engine.memory_stats() or {})
        except Exception:  # memory stats are best effort
            mem = {}
        arr = build_diagnostics(
            self.get_clock().now().to_msg(), self.get_name(), self.stats.snapshot(),
            dropped=self.queue.dropped, overflowed=self.queue.overflowed,
            device=str(self.engine.device), dtype=str(self.engine.dtype), memory=mem,
            alignment_enabled=self.processor.alignment_enabled)
        self.diag_pub.publish(arr)

    def stop(self, timeout: float | None = 1.0) -> bool:
        """Stop both stages (timeout None: after the frame in flight); True when they ended."""
        self._running = False
        if self.queue is not None:
            self.queue.close()
        if self.pipeline is None:
            return True
        return self.pipeline.stop(timeout)


def main(args: list[str] | None = None, node_class: type[LotusNode] = LotusNode) -> int:
    keep_freed_memory()
    if not sys.stderr.isatty():
        # Under ros2 launch (or into a log file) the loaders' progress bars become empty lines.
        os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')
    try:
        rclpy.init(args=args)
    except Exception as e:  # bad --ros-args: rcl already said which one
        print(f"[lotus_node] FATAL: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return 2
    node = None
    try:
        node = node_class()
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
    except _rclpy.RCLError:
        # SIGTERM shuts the context down while the executor builds its wait set
        if rclpy.ok():
            raise
    finally:
        finished = node.stop(timeout=1.0)
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
    if not finished:
        # inference is inside a long model call: do not wait for it (2 s shutdown budget)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == '__main__':
    sys.exit(main())
