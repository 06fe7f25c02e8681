"""
Counters, rates and latency percentiles per camera, and the engine's batches, as diagnostics.

Kept apart from node.py so the statistics are testable without a running node; the worker and
the callbacks update it from different threads, hence the lock.
"""

from __future__ import annotations

from collections import Counter, deque
import math
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np


class RateMeter:
    """Events per second over a sliding window of wall time."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self._t: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        self._t.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._t and now - self._t[0] > self.window:
            self._t.popleft()
        if len(self._t) < 2:
            return 0.0
        span = max(now - self._t[0], self._t[-1] - self._t[0])
        return (len(self._t) - 1) / span if span > 0 else 0.0


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else \
        math.nan


class NodeStats:
    def __init__(self, window: int = 200):
        self._lock = threading.Lock()
        self.input_rate = RateMeter()
        self.output_rate = RateMeter()
        self.latency: deque[float] = deque(maxlen=window)          # stamp -> publish (ROS time)
        self.wall_latency: deque[float] = deque(maxlen=window)     # receive -> publish (wall)
        self.stage: dict[str, deque[float]] = {}
        self.rejected: Counter[str] = Counter()
        self.processed = 0
        self.skipped_lazy = 0
        self.time_jumps = 0
        self.alignment: Any = None
        self.metric = False
        self.estimate: Any = None                 # core.temporal.MetricEstimate
        self.temporal: dict[str, Any] | None = None   # the stabiliser's last frame, in numbers
        self.temporal_resets = 0
        self.temporal_refused = 0

    def on_input(self) -> None:
        with self._lock:
            self.input_rate.tick()

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def on_skipped_lazy(self) -> None:
        with self._lock:
            self.skipped_lazy += 1

    def on_time_jump(self) -> None:
        """Time went backwards: the windows describe another run, start them again."""
        with self._lock:
            self.time_jumps += 1
            self.latency.clear()
            self.wall_latency.clear()
            self.input_rate = RateMeter()
            self.output_rate = RateMeter()
            self.alignment = None
            self.metric = False
            self.estimate = None
            self.temporal = None

    def on_frame(self, timings: dict[str, float], latency: float | None, wall_latency: float,
                 alignment: Any, metric: bool, *, estimate: Any = None,
                 temporal: Any = None) -> None:
        """
        Count a published frame; latency None = not measurable (stamp older than the node).

        estimate and temporal are the processor's MetricEstimate and StabilizedFrame (None
        while temporal.stabilize is off).
        """
        with self._lock:
            self.output_rate.tick()
            self.processed += 1
            if latency is not None:
                self.latency.append(latency)
            self.wall_latency.append(wall_latency)
            for k, v in timings.items():
                self.stage.setdefault(k, deque(maxlen=100)).append(v)
            self.alignment = alignment
            self.metric = metric
            self.estimate = estimate
            self.temporal = None
            if temporal is not None:
                self.temporal_resets += temporal.status == 'reset'
                self.temporal_refused += temporal.status == 'refused'
                self.temporal = {'status': temporal.status, 'reason': temporal.reason,
                                 'resets': temporal.resets, 'refusals': temporal.refusals,
                                 'scale': temporal.scale, 'shift': temporal.shift}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = list(self.latency)
            return {
                'input_rate': self.input_rate.rate(),
                'output_rate': self.output_rate.rate(),
                'latency_p50': percentile(lat, 50), 'latency_p95': percentile(lat, 95),
                'wall_latency_p95': percentile(list(self.wall_latency), 95),
                'processed': self.processed, 'skipped_lazy': self.skipped_lazy,
                'time_jumps': self.time_jumps,
                'rejected': dict(self.rejected),
                'stages': {k: float(np.mean(v)) for k, v in self.stage.items() if v},
                'alignment': self.alignment, 'metric': self.metric,
                'estimate': self.estimate, 'temporal': self.temporal,
                'temporal_resets': self.temporal_resets,
                'temporal_refused': self.temporal_refused,
            }


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, float):
        value = f'{value:.4g}'
    return KeyValue(key=key, value=str(value))


def _memory_values(memory: dict[str, float]) -> list[KeyValue]:
    return [_kv(f'gpu_{k}', float(v)) for k, v in sorted(memory.items())]


def build_diagnostics(stamp, node_name: str, snap: dict[str, Any], *, dropped: int,
                      overflowed: int, device: str, dtype: str, memory: dict[str, float],
                      alignment_enabled: bool) -> DiagnosticArray:
    """
    Build the statuses: pipeline (rates, latency, drops, stages, rejects) and alignment health.

    With the stabiliser on (temporal.stabilize) a third one reports its resets and refused fits.
    """
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    pipe = DiagnosticStatus(name=f'{node_name}: pipeline', hardware_id=str(device))
    rejected_total = sum(snap['rejected'].values())
    if snap['processed'] == 0:
        pipe.level, pipe.message = DiagnosticStatus.WARN, 'no frame processed yet'
    else:
        pipe.level, pipe.message = DiagnosticStatus.OK, 'running'
    values = [
        _kv('input_rate_hz', snap['input_rate']), _kv('output_rate_hz', snap['output_rate']),
        _kv('latency_p50_s', snap['latency_p50']), _kv('latency_p95_s', snap['latency_p95']),
        _kv('receive_to_publish_p95_s', snap['wall_latency_p95']),
        _kv('frames_processed', snap['processed']), _kv('frames_dropped', dropped),
        _kv('queue_overflows', overflowed), _kv('frames_skipped_lazy', snap['skipped_lazy']),
        _kv('time_jumps', snap['time_jumps']),
        _kv('device', device), _kv('dtype', dtype),
        _kv('rejected_total', rejected_total),
    ]
    values += _memory_values(memory)
    for k, v in sorted(snap['stages'].items()):
        values.append(_kv(f'stage_{k}_ms', v * 1000.0))
    for k, v in sorted(snap['rejected'].items()):
        values.append(_kv(f'rejected_{k}', v))
    pipe.values = values
    arr.status.append(pipe)

    al = DiagnosticStatus(name=f'{node_name}: alignment', hardware_id=str(device))
    st = snap['alignment']
    if not alignment_enabled:
        al.level, al.message = DiagnosticStatus.OK, 'alignment off (relative outputs only)'
    elif st is None:
        al.level, al.message = DiagnosticStatus.WARN, 'no alignment yet'
    else:
        ok = bool(st.valid)
        al.level = DiagnosticStatus.OK if ok else DiagnosticStatus.WARN
        al.message = ('metric' if ok else 'not metric') + (
            f': {st.reason}' if getattr(st, 'reason', '') else '')
        al.values = [_kv('valid', ok), _kv('stale', bool(getattr(st, 'stale', False))),
                     _kv('space', st.space), _kv('scale', float(st.scale)),
                     _kv('shift', float(st.shift)), _kv('inliers', int(st.inliers)),
                     _kv('candidates', int(st.candidates)),
                     _kv('residual_rms', float(st.residual_rms)), _kv('age_s', float(st.age))]
        est = snap.get('estimate')
        if est is not None:
            al.values += [_kv('source', est.source), _kv('uncertainty', float(est.uncertainty)),
                          _kv('frames_carried', int(est.frames_carried))]
    arr.status.append(al)

    temporal = snap.get('temporal')
    if temporal is not None:
        tm = DiagnosticStatus(name=f'{node_name}: temporal', hardware_id=str(device))
        # a refused fit holds the last map (the output may drift); resets are scene cuts
        tm.level = DiagnosticStatus.WARN if temporal['status'] == 'refused' else \
            DiagnosticStatus.OK
        tm.message = f"{temporal['status']}: {temporal['reason']}"
        tm.values = [_kv('status', temporal['status']), _kv('resets', temporal['resets']),
                     _kv('resets_total', snap['temporal_resets']),
                     _kv('refused_total', snap['temporal_refused']),
                     _kv('refused_in_a_row', temporal['refusals']),
                     _kv('scale', float(temporal['scale'])),
                     _kv('shift', float(temporal['shift']))]
        arr.status.append(tm)
    return arr


def engine_status(node_name: str, device: str, dtype: str, memory: dict[str, float],
                  batches: dict[int, tuple[int, float]]) -> DiagnosticStatus:
    """
    Report the engine all cameras share: model calls by batch size, mean time, GPU memory.

    `batches` is BatchInference.batch_stats(): batch size -> (calls, mean seconds per call).
    """
    st = DiagnosticStatus(name=f'{node_name}: engine', hardware_id=str(device))
    calls = sum(n for n, _ in batches.values())
    images = sum(size * n for size, (n, _) in batches.items())
    st.level = DiagnosticStatus.OK
    st.message = f'{calls} model calls, {images / calls:.2f} images per call' if calls else \
        'no model call yet'
    st.values = [_kv('device', device), _kv('dtype', dtype), _kv('batches', calls),
                 _kv('images', images)]
    for size, (n, seconds) in batches.items():
        st.values += [_kv(f'batch_size_{size}', n),
                      _kv(f'inference_ms_batch_{size}', seconds * 1000.0)]
    st.values += _memory_values(memory)
    return st
