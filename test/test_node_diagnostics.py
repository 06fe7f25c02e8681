"""Diagnostics statistics and the DiagnosticArray the node publishes (no running node)."""

from types import SimpleNamespace

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np

from lotus_ros.ros.diagnostics import NodeStats, RateMeter, build_diagnostics, percentile


def test_rate_meter_counts_events_in_window():
    m = RateMeter(window=5.0)
    for i in range(51):                    # 10 Hz for 5 s
        m.tick(100.0 + i * 0.1)
    # float64 times near 100 s are spaced 1.4e-14 s: the 5 s span errs by <= 3e-14 s, 10 Hz by
    # 10 * 3e-14 / 5 = 6e-14
    assert abs(m.rate(105.0) - 10.0) < 1e-12
    assert m.rate(120.0) == 0.0            # everything aged out


def test_percentile_matches_numpy_and_empty_is_nan():
    v = np.random.default_rng(0).exponential(size=101)
    assert percentile(list(v), 95) == np.sort(v)[95]
    assert np.isnan(percentile([], 50))


def values(status):
    return {kv.key: kv.value for kv in status.values}


def test_diagnostic_array_content():
    stats = NodeStats()
    for i in range(20):
        stats.on_input()
        stats.on_frame({'decode': 0.001, 'inference': 0.2}, latency=0.1 + i * 0.01,
                       wall_latency=0.1, alignment=None, metric=False)
    stats.on_rejected('image_truncated')
    stats.on_rejected('image_truncated')
    stats.on_rejected('camera_info_intrinsics')
    state = SimpleNamespace(valid=True, stale=False, reason='ok', space='disparity', scale=2.0,
                            shift=0.01, inliers=120, candidates=130, residual_rms=0.02, age=0.1)
    stats.alignment = state
    arr = build_diagnostics(Time(sec=5), 'lotus', stats.snapshot(), dropped=7, overflowed=0,
                            device='cuda:0', dtype='torch.float16',
                            memory={'allocated_mb': 512.0, 'peak_mb': 900.0},
                            alignment_enabled=True)
    pipe, align = arr.status
    assert pipe.level == DiagnosticStatus.OK and arr.header.stamp.sec == 5
    kv = values(pipe)
    assert kv['frames_dropped'] == '7' and kv['frames_processed'] == '20'
    assert kv['rejected_image_truncated'] == '2' and kv['rejected_total'] == '3'
    # the same percentile, printed with 4 significant digits: <= 5e-5 off below 1 s
    assert abs(float(kv['latency_p95_s']) - np.percentile(0.1 + np.arange(20) * 0.01, 95)) < 1e-4
    assert float(kv['stage_inference_ms']) == 200.0
    assert kv['gpu_allocated_mb'] == '512' and kv['device'] == 'cuda:0'
    assert align.level == DiagnosticStatus.OK and values(align)['inliers'] == '120'

    stale = SimpleNamespace(**{**vars(state), 'valid': False, 'stale': True,
                               'reason': 'stale: last fit 3.0 s ago'})
    stats.alignment = stale
    arr = build_diagnostics(Time(), 'lotus', stats.snapshot(), dropped=0, overflowed=0,
                            device='cpu', dtype='float32', memory={}, alignment_enabled=True)
    assert arr.status[1].level == DiagnosticStatus.WARN and 'stale' in arr.status[1].message
    assert not any(k.startswith('gpu_') for k in values(arr.status[0]))


def test_no_frames_yet_is_a_warning():
    arr = build_diagnostics(Time(), 'lotus', NodeStats().snapshot(), dropped=0, overflowed=0,
                            device='cpu', dtype='float32', memory={}, alignment_enabled=False)
    assert arr.status[0].level == DiagnosticStatus.WARN
    assert arr.status[1].level == DiagnosticStatus.OK and 'off' in arr.status[1].message


def test_engine_status_reports_batches_and_memory():
    from lotus_ros.ros.diagnostics import engine_status

    st = engine_status('lotus', 'cuda:0', 'float16', {'allocated_mb': 2048.0},
                       {1: (4, 0.040), 3: (10, 0.060)})
    kv = values(st)
    assert st.name == 'lotus: engine' and st.hardware_id == 'cuda:0'
    assert kv['batches'] == '14' and kv['images'] == '34'
    assert kv['batch_size_1'] == '4' and kv['batch_size_3'] == '10'
    assert kv['inference_ms_batch_3'] == '60' and kv['gpu_allocated_mb'] == '2048'
    assert '2.43 images per call' in st.message
    assert engine_status('lotus', 'cpu', 'float32', {}, {}).message == 'no model call yet'
