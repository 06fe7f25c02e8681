"""
The lotus node: rclpy wiring around FrameProcessor, for one camera or several.

Callbacks only store messages (the camera's frame queue and stamp caches). Two threads
(ros.pipeline) do the work: the inference stage takes the next frames (ros.camera_scheduler: up
to one per camera, oldest first, each once its camera_info and sparse depth are there or no
longer worth waiting for), applies parameter changes, pairs the side inputs and runs the one
engine on all of them; the finishing stage aligns, builds the messages and publishes, meanwhile
the next frames are in inference. So a slow model never backs up the executor, the node's own
work hides behind the model's, and with drop_frames the latency stays about one inference plus
one finishing. Everything per camera lives in its ros.camera.Camera.
"""

from __future__ import annotations

import ctypes
from functools import partial
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
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from lotus_ros.core.engine import load_engine, release_memory
from lotus_ros.core.stamps import BACKWARD_JUMP_NS, stamp_to_ns
from lotus_ros.ros.camera import Camera
from lotus_ros.ros.camera_scheduler import CameraScheduler
from lotus_ros.ros.diagnostics import build_diagnostics, engine_status
from lotus_ros.ros.frame_assembly import FrameAssembler, static_points_transform
from lotus_ros.ros.images import ImageConversionError
from lotus_ros.ros.outputs import output_types
from lotus_ros.ros.parameters import (
    SPEC_BY_NAME,
    camera_parameter,
    declare_camera_parameters,
    declare_parameters,
    split_camera_parameter,
    validate,
    validate_set,
)
from lotus_ros.ros.pipeline import FramePipeline
from lotus_ros.ros.processor import BatchInference, FrameJob, FrameProcessor

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
        self.inference: BatchInference | None = None
        self.params: dict[str, Any] = {}             # the global values (cameras follow them)
        self.cameras: dict[str, Camera] = {}
        self.scheduler: CameraScheduler | None = None
        self.pipeline: FramePipeline | None = None
        self._running = False
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
        own = declare_camera_parameters(self, list(p['cameras']))
        for camera, values in own.items():
            for name, value in values.items():
                reason = validate(name, value)
                if reason:
                    raise StartupError(f'invalid parameter {camera_parameter(camera, name)}: '
                                       f'{reason}')
            reason = validate_set({**p, **values})
            if reason:
                raise StartupError(f'invalid parameters of camera {camera}: {reason}')

        try:
            engine = load_engine(p)
        except Exception as e:  # any loader failure is fatal, with its reason on one line
            what = ' '.join(str(e).split()) or type(e).__name__
            raise StartupError(
                f'cannot load the model ({what}). Set depth_model/normal_model to a local '
                'diffusers folder or a reachable Hugging Face id (or clear local_files_only)'
            ) from e
        self.engine = engine
        self.params = p
        self.inference = BatchInference(engine)
        self._warned: dict[tuple[str, str], float] = {}
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._started_ns = self.get_clock().now().nanoseconds
        for camera in p['cameras']:
            cam = Camera(camera, FrameProcessor(engine, {**p, **own[camera]}, self.inference),
                         FrameAssembler(capacity=30,
                                        lookup_transform=partial(self._lookup_transform, camera)),
                         own[camera])
            self.cameras[camera] = cam
            self._create_endpoints(cam)
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
            post_callback=lambda jump: [cam.time_jumped.set() for cam in self.cameras.values()])
        # steady clock: diagnostics must flow even while a simulated clock is paused; they
        # start with inference (_activate)
        self._diag_timer = self.create_timer(p['diagnostics_period'], self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._diag_timer.cancel()

    def _create_endpoints(self, cam: Camera) -> None:
        """Subscribe to the camera's inputs, create its output publishers (topics under c/)."""
        p = cam.processor.params
        qos_override = QoSOverridingOptions.with_default_policies()
        sub_qos = qos_profile_sensor_data
        pub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                             reliability=ReliabilityPolicy.RELIABLE)

        def subscribe(msg_type, name: str, callback):
            # by name: a subscription rclpy still holds after cleanup keeps no engine alive
            return self.create_subscription(msg_type, cam.topic(name),
                                            partial(callback, cam.name), sub_qos,
                                            qos_overriding_options=qos_override)

        if p['image_transport'] == 'compressed':
            cam.subscriptions.append(subscribe(CompressedImage, 'image/compressed',
                                               self._on_image))
        else:
            cam.subscriptions.append(subscribe(Image, 'image', self._on_image))
        cam.info_sub = subscribe(CameraInfo, 'camera_info', self._on_info)
        cam.subscriptions.append(cam.info_sub)
        source = p['alignment.source']
        if source == 'sparse_depth':
            cam.subscriptions.append(subscribe(Image, 'sparse_depth', self._on_sparse))
        elif source == 'sparse_points':
            cam.subscriptions.append(subscribe(PointCloud2, 'sparse_points', self._on_sparse))
            if p['alignment.use_tf'] and self._tf_buffer is None:
                self._start_tf()
        cam.pubs = {name: self._create_output_publisher(msg_type, cam.topic(name), pub_qos,
                                                        qos_overriding_options=qos_override)
                    for name, msg_type in output_types().items()}

    def _activate(self) -> None:
        """Start inference, publishing and diagnostics."""
        self._start_workers()
        self._diag_timer.reset()
        engine, p = self.engine, self.params
        cameras = ', '.join(
            f"{cam.name or '(no prefix)'}: alignment={cam.processor.params['alignment.source']} "
            f"lazy={cam.processor.params['lazy']}" for cam in self.cameras.values())
        self.get_logger().info(
            f'ready: device={engine.device} dtype={engine.dtype} depth={engine.has_depth} '
            f"normal={engine.has_normal} drop_frames={p['drop_frames']} "
            f"batch.max_size={p['batch.max_size']} cameras [{cameras}]")

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
        for cam in self.cameras.values():
            for sub in cam.subscriptions:
                self.destroy_subscription(sub)
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        pubs = [pub for cam in self.cameras.values() for pub in cam.pubs.values()]
        for pub in [*pubs, self.diag_pub]:
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
        """Start the two stages (ros.pipeline) on fresh frame queues."""
        p = self.params
        self.scheduler = CameraScheduler(
            self.cameras, drop_frames=p['drop_frames'], maxsize=p['queue_size'],
            max_batch=p['batch.max_size'], max_wait=p['batch.max_wait_ms'] * 1e-3,
            inputs_due=self._inputs_due)
        self._running = True
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.pipeline = FramePipeline(self.scheduler, self._infer, self._finish, self._failed,
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

    def _lookup_transform(self, camera: str, cloud: PointCloud2, header):
        """tf2 image frame <- cloud frame at the cloud's stamp; False (skip) when unknown."""
        cam = self.cameras[camera]
        if self._tf_buffer is None or not cam.processor.params['alignment.use_tf']:
            return static_points_transform(cam.processor.params)
        src, dst = cloud.header.frame_id, header.frame_id
        try:
            tf = self._tf_buffer.lookup_transform(dst, src, Time.from_msg(cloud.header.stamp))
        except Exception as e:  # tf2 raises several unrelated exception types
            self._problem(cam, 'tf', f"no transform {dst} <- {src}, cloud skipped: "
                          f"{' '.join(str(e).split())}")
            return False
        t, q = tf.transform.translation, tf.transform.rotation
        return (t.x, t.y, t.z), (q.x, q.y, q.z, q.w)

    def _warn(self, cam: Camera, reason: str, text: str) -> None:
        now = time.monotonic()
        if now - self._warned.get((cam.name, reason), -1e9) >= WARN_PERIOD:
            self._warned[(cam.name, reason)] = now
            count = cam.stats.rejected.get(reason, 0)
            self.get_logger().warning(f'{cam.log_prefix}{text} [{reason}, {count} so far]')

    def _problem(self, cam: Camera, reason: str, text: str) -> None:
        cam.stats.on_rejected(reason)
        self._warn(cam, reason, text)

    # -- callbacks: store only -------------------------------------------------------------
    def _on_image(self, camera: str, msg) -> None:
        cam = self.cameras.get(camera)
        if not self._running or cam is None:  # inactive: the frame is nobody's
            return
        cam.stats.on_input()
        # lazy, nobody listens: the frame never waits for the model (unless parameter changes,
        # applied when a frame is taken, are pending: they may turn lazy off)
        if not self._pending and not self._wanted(cam):
            cam.stats.on_skipped_lazy()
            return
        queue = self.scheduler.queues[cam.name]
        if not self.scheduler.put(cam.name, msg) and not queue.drop_frames and not queue.closed:
            self._warn(cam, 'queue_overflow', f'input queue full ({queue.maxsize}): the oldest '
                       f'frame was discarded ({queue.overflowed} so far); slow the input or '
                       'raise queue_size')

    def _on_info(self, camera: str, msg: CameraInfo) -> None:
        self._on_side_input(camera, msg, FrameAssembler.add_camera_info)

    def _on_sparse(self, camera: str, msg) -> None:
        self._on_side_input(camera, msg, FrameAssembler.add_sparse)

    def _on_side_input(self, camera: str, msg, add) -> None:
        cam = self.cameras.get(camera)
        if cam is None:
            return
        add(cam.assembler, msg)
        if self.scheduler is not None:
            self.scheduler.wake()   # a frame may have waited for it

    def _lotus_changes(self, params) -> dict[str, Any]:
        return {prm.name: prm.value for prm in params if prm.name in SPEC_BY_NAME
                or split_camera_parameter(prm.name, self.cameras)}

    def _would_be(self, changes: dict[str, Any]) -> tuple[dict, dict[str, dict]]:
        """Return the global values and each camera's own ones once `changes` apply."""
        glob = {**self.params}
        own = {c: dict(cam.own) for c, cam in self.cameras.items()}
        for name, value in changes.items():
            split = split_camera_parameter(name, self.cameras)
            if split:
                own[split[0]][split[1]] = value
            else:
                glob[name] = value
        return glob, own

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate only; the change is applied before the next frame is taken (_apply_pending)."""
        changes = self._lotus_changes(params)
        for name, value in changes.items():
            split = split_camera_parameter(name, self.cameras)
            reason = validate(split[1] if split else name, value, running=True)
            if reason:
                return SetParametersResult(successful=False, reason=f'{name}: {reason}'
                                           if split else reason)
        if changes:
            with self._pending_lock:
                glob, own = self._would_be({**self._pending, **changes})
            for camera, values in own.items():
                reason = validate_set({**glob, **values})
                if reason:
                    where = f' (camera {camera})' if camera else ''
                    return SetParametersResult(successful=False, reason=reason + where)
            if not hasattr(self, 'add_post_set_parameters_callback'):  # Humble: no post hook
                self._on_parameters_set(params)
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, params) -> None:
        changes = self._lotus_changes(params)
        if changes:
            with self._pending_lock:
                self._pending.update(changes)

    # -- the two stages --------------------------------------------------------------------
    def _wanted(self, cam: Camera) -> set[str]:
        enabled = cam.processor.enabled_outputs()
        if not cam.processor.params['lazy']:
            return enabled
        return {n for n in enabled if n in cam.pubs and
                cam.pubs[n].get_subscription_count() > 0}

    def _inputs_due(self, camera: str, msg, since: float) -> float:
        """
        Seconds the camera's frame should still wait for side inputs in flight (<= 0: go).

        The budget runs from `since`, when the frame could first have been taken: a newer
        frame of the same camera replacing it does not start the wait again.
        """
        if not self._running or not self.context.ok():
            return 0.0                 # stopping (SIGTERM shuts the context down first)
        cam = self.cameras[camera]
        p = cam.processor.params
        published = self.count_publishers(cam.info_sub.topic_name) > 0
        waiting = cam.assembler.waiting_for(msg, p, camera_info_published=published)
        if not waiting:
            return 0.0
        budgets = {'camera_info': p['camera_info_wait'], 'sparse': SPARSE_WAIT}
        return since + max(budgets[name] for name in waiting) - time.monotonic()

    def _check_time(self, cam: Camera, msg) -> None:
        """Reset what belongs to an earlier run when the camera's time went backwards."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        backward = cam.last_image_ns is not None and \
            stamp_ns < cam.last_image_ns - BACKWARD_JUMP_NS
        cam.last_image_ns = stamp_ns
        if not (backward or cam.time_jumped.is_set()):
            return
        cam.time_jumped.clear()
        cam.assembler.time_went_back(stamp_ns)
        cam.processor.reset()
        cam.stats.on_time_jump()
        self._started_ns = min(self._started_ns, self.get_clock().now().nanoseconds)
        self.get_logger().warning(
            f'{cam.log_prefix}time went backwards (bag loop, new bag or clock reset): stamp '
            f'caches, alignment filter and statistics reset [{cam.stats.time_jumps} so far]')

    def _apply_pending(self) -> None:
        """Apply parameter changes, in the one place they take effect: before frames are taken."""
        with self._pending_lock:
            changes, self._pending = self._pending, {}
        if not changes:
            return
        glob, own = self._would_be(changes)
        changed_globals = {k: v for k, v in glob.items() if self.params.get(k) != v}
        self.params = glob
        for camera, cam in self.cameras.items():
            mine = {k: v for k, v in own[camera].items() if cam.own.get(k) != v}
            cam.own = own[camera]
            mine.update({k: v for k, v in changed_globals.items() if k not in cam.own})
            if mine:
                cam.processor.update_params(mine)
        self.get_logger().info('parameters changed: ' + ', '.join(
            f'{k}={v}' for k, v in sorted(changes.items())))

    def _failed(self, e: Exception, cam: Camera | None = None) -> None:
        if self._running and rclpy.ok(context=self.context):
            for each in [cam] if cam is not None else self.cameras.values():
                self._problem(each, 'processing_error',
                              f"frame failed: {type(e).__name__}: {' '.join(str(e).split())}")

    def _infer(self, frames: list[tuple[str, Any, float]]) -> list[tuple[Camera, FrameJob, float]]:
        """Inference stage: pair the frames' side inputs, run the engine on all of them."""
        self._apply_pending()
        jobs = []
        for camera, msg, t_received in frames:
            cam = self.cameras[camera]
            t0 = time.perf_counter()
            self._check_time(cam, msg)
            wanted = self._wanted(cam)
            if not wanted:
                cam.stats.on_skipped_lazy()
                continue
            inputs = cam.assembler.assemble(msg, cam.processor.params)
            try:
                job = cam.processor.prepare(inputs, wanted)
            except ImageConversionError as e:
                self._problem(cam, 'image_' + e.reason, f'image rejected: {e}')
                continue
            # pairing side inputs before the decode
            job.result.timings['assemble'] = time.perf_counter() - t0 - \
                job.result.timings['decode']
            jobs.append((cam, job, t_received))
        try:
            self.inference.infer([job for _, job, _ in jobs])
        except Exception as e:  # noqa: BLE001 - one camera's frame must not fail the others'
            if len(jobs) == 1:
                self._failed(e, jobs[0][0])
                return []
            jobs = [item for item in jobs if self._infer_alone(*item[:2])]
        return jobs

    def _infer_alone(self, cam: Camera, job: FrameJob) -> bool:
        """Run one frame of a failed batch on its own; False (reported) when it fails again."""
        try:
            self.inference.infer([job])
        except Exception as e:  # noqa: BLE001 - reported like any failed frame
            self._failed(e, cam)
            return False
        return True

    def _finish(self, item: tuple[Camera, FrameJob, float]) -> None:
        """Finishing stage: align, build the messages and publish them."""
        cam, job, t_received = item
        res = cam.processor.finish(job)
        t0 = time.perf_counter()
        for name, out in res.outputs.items():
            cam.pubs[name].publish(out)
        res.timings['publish'] = time.perf_counter() - t0
        cam.stats.on_frame(res.timings, self._latency(job.inputs.image),
                           time.monotonic() - t_received, res.alignment, res.metric,
                           estimate=res.estimate, temporal=res.temporal)
        for reason, text in res.problems:
            self._problem(cam, reason, text)

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
        """One set of statuses per camera (ros.diagnostics) and one for the shared engine."""
        mem = {}
        try:
            mem = dict(self.engine.memory_stats() or {})
        except Exception:  # memory stats are best effort
            mem = {}
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        device, dtype = str(self.engine.device), str(self.engine.dtype)
        for cam in self.cameras.values():
            queue = self.scheduler.queues[cam.name]
            arr.status.extend(build_diagnostics(
                arr.header.stamp, cam.label(self.get_name()), cam.stats.snapshot(),
                dropped=queue.dropped, overflowed=queue.overflowed, device=device, dtype=dtype,
                memory=mem, alignment_enabled=cam.processor.alignment_enabled).status)
        arr.status.append(engine_status(self.get_name(), device, dtype, mem,
                                        self.inference.batch_stats()))
        self.diag_pub.publish(arr)

    def stop(self, timeout: float | None = 1.0) -> bool:
        """Stop both stages (timeout None: after the frame in flight); True when they ended."""
        self._running = False
        if self.pipeline is None:
            return True
        return self.pipeline.stop(timeout)     # closes the scheduler (its frame source) first


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
    except (_rclpy.RCLError, InvalidHandle):
        # SIGTERM shuts the context down (and its nodes' handles) while the executor builds
        # its wait set or a callback asks the graph (the lazy check)
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
