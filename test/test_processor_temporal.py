"""FrameProcessor with a backend's uncertainty and with temporal.stabilize (no rclpy node)."""

import inspect
import math

from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
import pytest

from lotus_ros.benchmarks.model_double import ModelDouble, relative_disparity, save_truth
from lotus_ros.core.backends import BACKENDS
from lotus_ros.core.engine import Prediction
from lotus_ros.core.temporal import CARRY_MODES, MetricCarry, TemporalStabilizer
from lotus_ros.core.visualization import colorize_depth
from lotus_ros.demo.synthetic import render_sequence
from lotus_ros.ros.diagnostics import NodeStats, build_diagnostics
from lotus_ros.ros.frame_assembly import FrameInputs
from lotus_ros.ros.images import array_to_image, image_to_array
from lotus_ros.ros.messages import header_at, pinhole_camera_info
from lotus_ros.ros.parameters import SPEC_BY_NAME, defaults
from lotus_ros.ros.processor import FrameProcessor

W, H = 160, 120
# float32 machine epsilon, 2^-23: one rounding moves a value by at most EPS32 / 2 of itself.
EPS32 = float(np.finfo(np.float32).eps)
T0, DT = 1_700_000_000.0, 0.1


class ScriptedEngine:
    """Engine double answering its k-th call with the k-th (depth, std) pair (the last after)."""

    device = 'cpu'
    dtype = 'float32'
    has_depth = True
    has_normal = False

    def __init__(self, answers, depth_space='disparity'):
        self.answers = list(answers)
        self.depth_space = depth_space
        self.calls = 0

    @property
    def has_uncertainty(self) -> bool:
        return any(std is not None for _, std in self.answers)

    def predict_batch(self, images, *, depth=True, normal=True):
        out = []
        for _ in images:
            p, std = self.answers[min(self.calls, len(self.answers) - 1)]
            self.calls += 1
            out.append(Prediction(depth=p, depth_space=self.depth_space, normal=None,
                                  uncertainty=std))
        return out

    def memory_stats(self):
        return {}


@pytest.fixture(scope='module')
def frames():
    return render_sequence(6, width=W, height=H, scene='room', seed=3)


def inputs(frame, stamp=None, sparse=True):
    hdr = header_at(frame.stamp if stamp is None else stamp, 'cam_optical')
    return FrameInputs(
        image=array_to_image(frame.rgb, 'rgb8', hdr),
        camera_info=pinhole_camera_info(frame.k, frame.width, frame.height, hdr),
        sparse=array_to_image(frame.sparse_depth, '32FC1', hdr) if sparse else None)


def relative(frame, space):
    """Return the true relative output: max-normalised disparity, or depth in [0.02, 0.92]."""
    if space == 'disparity':
        return relative_disparity(frame.depth)
    # unsaturated: the room's far wall fills a quarter of the view
    z = frame.depth.astype(np.float64)
    return (0.02 + 0.9 * (z - z.min()) / (z.max() - z.min())).astype(np.float32)


def std_map():
    """Return a smooth per-pixel std with an unknown (NaN) corner."""
    sigma = np.repeat(0.004 + 0.012 * np.linspace(0, 1, W, dtype=np.float32)[None], H, axis=0)
    sigma[:4, :4] = np.nan
    return sigma


# -- parameters ----------------------------------------------------------------------------
def test_parameter_table_matches_the_core():
    """Defaults and choices are the core's: the table must not drift from core.temporal."""
    d = defaults()
    stab = inspect.signature(TemporalStabilizer).parameters
    carry = inspect.signature(MetricCarry).parameters
    assert d['temporal.time_constant'] == stab['time_constant'].default
    assert d['temporal.jump'] == stab['jump'].default
    assert d['temporal.reset_after'] == stab['reset_after'].default
    assert d['temporal.carry'] == carry['mode'].default
    assert d['temporal.carry_max_uncertainty'] == carry['max_uncertainty'].default
    assert d['temporal.carry_noise_density'] == carry['noise_density'].default
    assert SPEC_BY_NAME['temporal.carry'].choices == CARRY_MODES
    assert SPEC_BY_NAME['backend'].choices == BACKENDS
    assert d['temporal.stabilize'] is False and d['backend'] == 'auto'
    assert (d['seed'], d['ensemble_size'], d['num_inference_steps']) == (0, 1, 0)


# -- uncertainty ---------------------------------------------------------------------------
def derivative_bound(space, p, scale, shift, z, step):
    """
    Per pixel: how far sigma * |central difference of apply| may be from s sigma z^2 (or s sigma).

    Relative to the exact derivative: the difference's truncation (for z = 1 / y exactly
    zeta^2 / (1 - zeta^2), zeta = s z step / 2), each float32 evaluation of z (a product, a sum
    and, in disparity, a division: (2 + (|s p| + |t|) / |y|) EPS32 / 2 of z, twice, over the
    step), the float32 rounding of p +- h moving the midpoint, and the processor's own product
    of float32 roundings (sigma s, z z, their product, and z's rounding counted twice in z^2).
    """
    s, t = np.float64(np.float32(scale)), np.float64(np.float32(shift))
    p = p.astype(np.float64)
    y = s * p + t
    c = (np.abs(s * p) + np.abs(t)) / np.abs(y)
    if space == 'disparity':
        delta = (2.0 + c) * EPS32 / 2                  # relative error of one z
        zeta = s * z * step / 2
        midpoint = 2 * s * z * EPS32 / 2 * (np.abs(p) + step / 2)
        return (zeta ** 2 / (1 - zeta ** 2) + 2 * delta / (step * s * z) + midpoint
                + 2 * delta + 1.5 * EPS32)
    rounding = (np.abs(s * p) + np.abs(y)) * EPS32 / 2   # absolute error of one z
    return 2 * rounding / (step * s) + EPS32 / 2


@pytest.mark.parametrize('space', ['disparity', 'depth'])
def test_uncertainty_in_metres_is_the_std_through_the_metric_map(frames, space):
    f = frames[0]
    p, sigma = relative(f, space), std_map()
    proc = FrameProcessor(ScriptedEngine([(p, sigma)], space))
    res = proc.process(inputs(f))
    assert res.metric
    out = res.outputs
    depth_msg, u_msg = out['depth/image'], out['depth/uncertainty']
    assert u_msg.header == depth_msg.header and u_msg.encoding == '32FC1'
    assert (u_msg.width, u_msg.height) == (depth_msg.width, depth_msg.height) == (W, H)
    z, u = image_to_array(depth_msg), image_to_array(u_msg)
    # unknown (NaN) where the depth is not finite (too close, beyond range) or the std unknown
    assert np.array_equal(np.isfinite(u), np.isfinite(z) & np.isfinite(sigma))

    # central difference of the metric map the node publishes, at every pixel
    h = 1e-3
    p_plus, p_minus = (p + h).astype(np.float32), (p - h).astype(np.float32)
    z_plus = proc.aligner.apply(p_plus, res.alignment).astype(np.float64)
    z_minus = proc.aligner.apply(p_minus, res.alignment).astype(np.float64)
    step = p_plus.astype(np.float64) - p_minus.astype(np.float64)
    ok = np.isfinite(u) & np.isfinite(z_plus) & np.isfinite(z_minus)
    assert ok.mean() > 0.9
    expected = sigma * np.abs(z_plus - z_minus) / step
    s = res.alignment.scale
    exact = sigma * s * (z.astype(np.float64) ** 2 if space == 'disparity' else 1.0)
    bound = derivative_bound(space, p, s, res.alignment.shift, z.astype(np.float64), step)
    err = np.abs(u - expected)[ok]
    assert (err <= (bound * exact)[ok]).all(), float(np.max(err / exact[ok]))


def test_uncertainty_in_relative_units_without_metric(frames):
    f = frames[0]
    p, sigma = relative(f, 'disparity'), std_map()
    proc = FrameProcessor(ScriptedEngine([(p, sigma)]), {'alignment.source': 'none'})
    res = proc.process(inputs(f, sparse=False))
    assert not res.metric and 'depth/image' not in res.outputs
    u = image_to_array(res.outputs['depth/uncertainty'])
    np.testing.assert_array_equal(u, sigma)           # a copy: depth/relative's units


def test_uncertainty_follows_the_stabilised_relative_output(frames):
    """While stabilising, depth/relative = A p + B: its std is A sigma."""
    f = frames[0]
    p1, sigma = relative(f, 'disparity'), std_map()
    p2 = (0.8 * p1 + 0.1).astype(np.float32)
    proc = FrameProcessor(ScriptedEngine([(p1, sigma), (p2, sigma)]),
                          {'alignment.source': 'none', 'temporal.stabilize': True})
    proc.process(inputs(f, T0, sparse=False))
    res = proc.process(inputs(f, T0 + DT, sparse=False))
    q = image_to_array(res.outputs['depth/relative']).astype(np.float64)
    raw = image_to_array(res.outputs['depth/relative_raw']).astype(np.float64)
    u = image_to_array(res.outputs['depth/uncertainty'])
    known = np.isfinite(sigma)
    ratio = (u[known] / sigma[known]).astype(np.float64)
    # one float32 product each: every ratio is A to EPS32 / 2
    assert np.ptp(ratio) <= EPS32 * ratio.max()
    # A from the published outputs alone: least-squares slope of q on raw. q = fl(fl(A p) + B)
    # is off by at most EPS32 (|A p| + |q|) / 2 per pixel; the slope by that times
    # sum |dp| / sum dp^2.
    dp = raw - raw.mean()
    slope = float(np.sum(dp * (q - q.mean())) / np.sum(dp * dp))
    e = EPS32 / 2 * float(np.max(np.abs(slope * raw) + np.abs(q)))
    assert abs(ratio[0] - slope) <= e * np.sum(np.abs(dp)) / np.sum(dp * dp) + EPS32 * slope
    assert abs(slope - 1.0) > 0.2                    # the jump is being undone (A ~ 1 / 0.8)


def test_no_uncertainty_output_without_a_backend_that_has_one(frames):
    f = frames[0]
    proc = FrameProcessor(ScriptedEngine([(relative(f, 'disparity'), None)]))
    assert 'depth/uncertainty' not in proc.enabled_outputs()
    assert 'depth/uncertainty' not in proc.process(inputs(f)).outputs


# -- stabilisation -------------------------------------------------------------------------
@pytest.mark.parametrize('time_constant', [1.5, 1e6])
def test_stabilize_removes_a_known_affine_jump(frames, time_constant):
    """The second frame renormalised by (a, b): depth/relative keeps the first frame's range."""
    f = frames[0]
    p1 = relative(f, 'disparity')
    p2 = (0.6 * p1 + 0.3).astype(np.float32)
    proc = FrameProcessor(ScriptedEngine([(p1, None), (p2, None)]),
                          {'alignment.source': 'none', 'temporal.stabilize': True,
                           'temporal.time_constant': time_constant})
    first = proc.process(inputs(f, T0, sparse=False))
    second = proc.process(inputs(f, T0 + DT, sparse=False))
    assert first.temporal.status == 'initialised' and second.temporal.status == 'ok'
    # the first frame defines the reference: (A, B) = (1, 0), the output is the raw one
    np.testing.assert_array_equal(image_to_array(first.outputs['depth/relative']), p1)
    np.testing.assert_array_equal(image_to_array(first.outputs['depth/relative_raw']), p1)
    np.testing.assert_array_equal(image_to_array(second.outputs['depth/relative_raw']), p2)
    q2 = image_to_array(second.outputs['depth/relative']).astype(np.float64)
    # q2 - p1 = pull (p2 - p1) + fit error: the filter pulls the chained map towards the frame's
    # own range by at most 1 - exp(-dt / time_constant) (core.temporal). The fit sees exact
    # affine data rounded to float32; 2^-16 bounds its error and two float32 roundings of q2.
    pull = 1.0 - math.exp(-DT / time_constant)
    jump = np.abs(p2.astype(np.float64) - p1)
    err = np.abs(q2 - p1)
    assert (err <= pull * jump + 2.0 ** -16).all(), float(np.max(err - pull * jump))
    assert np.median(jump) > 0.1                      # there was a jump to remove


def test_stabilised_colours_keep_their_range_when_a_near_object_enters(frames):
    """depth/colored of the stabilised output uses the fixed reference range, not percentiles."""
    f = frames[0]
    p1 = relative(f, 'disparity')
    p2 = p1.copy()
    block = (slice(H // 4, H), slice(W // 3, W // 3 + int(0.4 * W)))
    p2[block] = 0.97                                   # a near board covers 30 % of the view
    outside = np.ones((H, W), bool)
    outside[block] = False
    proc = FrameProcessor(ScriptedEngine([(p1, None), (p2, None)]),
                          {'alignment.source': 'none', 'temporal.stabilize': True})
    first = proc.process(inputs(f, T0, sparse=False))
    second = proc.process(inputs(f, T0 + DT, sparse=False))
    assert second.temporal.status == 'ok', second.temporal.reason
    c1 = image_to_array(first.outputs['depth/colored']).astype(np.int64)
    c2 = image_to_array(second.outputs['depth/colored']).astype(np.int64)
    q2 = image_to_array(second.outputs['depth/relative'])
    # outside the board the stabilised values move by less than one of the colormap's 256 steps
    # (1 / 255), so each colour moves at most one step of the map
    assert np.abs(q2 - relative(f, 'disparity'))[outside].max() < 1 / 255
    ramp = colorize_depth(np.linspace(0, 1, 256, dtype=np.float32)[None], value_range=(0, 1))
    one_step = np.abs(np.diff(ramp[0].astype(np.int64), axis=0)).max()
    assert np.abs(c1 - c2).max(axis=2)[outside].max() <= one_step
    # percentile colours of the same stabilised output would have moved (the test can fail)
    auto = np.abs(colorize_depth(-q2).astype(np.int64) - c1).max(axis=2)[outside]
    assert np.median(auto) > 4 * one_step


def test_carry_keeps_metric_through_a_dropout(tmp_path):
    """Sparse depth stops after 4 frames: carried metric continues; 'max_age' stops at 0.3 s."""
    seq = render_sequence(150, width=128, height=96, scene='room')[:14]
    save_truth(seq, tmp_path / 'truth.npz')
    results = {}
    for mode in CARRY_MODES:
        engine = ModelDouble(truth_path=str(tmp_path / 'truth.npz'), noise=0.002, seed=1)
        proc = FrameProcessor(engine, {'temporal.stabilize': True, 'temporal.carry': mode,
                                       'alignment.max_age': 0.3})
        rows = []
        for i, f in enumerate(seq):
            res = proc.process(inputs(f, sparse=i < 4))
            depth = res.outputs.get('depth/image')
            err = None
            if depth is not None:
                d = image_to_array(depth)
                ok = np.isfinite(d)
                err = float(np.mean(np.abs(d[ok] - f.depth[ok]) / f.depth[ok]))
            rows.append((res.outputs['alignment'].source, err, res.estimate.added_uncertainty))
        results[mode] = rows
    carried, aged = results['uncertainty'], results['max_age']
    assert [s for s, _, _ in carried] == ['sparse'] * 4 + ['carried'] * 10
    before = max(e for _, e, _ in carried[:4])
    # the double renormalises every frame by its own maximum, so the carry must follow the maps:
    # its error stays within what it says carrying added (1 sigma) ...
    assert all(e is not None and e <= before + added for _, e, added in carried[4:]), carried
    # ... and below the last fit's, which 'max_age' keeps using until alignment.max_age
    assert [s for s, _, _ in aged] == ['sparse'] * 7 + ['none'] * 7
    assert all(c[1] < a[1] for c, a in zip(carried[4:7], aged[4:7], strict=True))
    assert all(e is None for _, e, _ in aged[7:])


def test_scene_cut_resets_are_reported(frames):
    room = relative(frames[0], 'disparity')
    outdoor_frame = render_sequence(1, width=W, height=H, scene='outdoor', seed=3)[0]
    outdoor = relative_disparity(outdoor_frame.depth)
    proc = FrameProcessor(ScriptedEngine([(room, None), (outdoor, None)]),
                          {'temporal.stabilize': True, 'temporal.reset_after': 1})
    if proc.alignment_type is None:
        pytest.skip('lotus_ros.msg exists after colcon build')
    first = proc.process(inputs(frames[0], T0))
    cut = proc.process(inputs(outdoor_frame, T0 + DT, sparse=False))
    assert first.outputs['alignment'].resets == 0
    assert cut.temporal.status == 'reset' and cut.outputs['alignment'].resets == 1
    # after a reset the frame is its own reference again
    np.testing.assert_array_equal(image_to_array(cut.outputs['depth/relative']), outdoor)

    stats = NodeStats()
    for res in (first, cut):
        stats.on_frame(res.timings, 0.1, 0.1, res.alignment, res.metric,
                       estimate=res.estimate, temporal=res.temporal)
    arr = build_diagnostics(header_at(T0, '').stamp, 'lotus', stats.snapshot(), dropped=0,
                            overflowed=0, device='cpu', dtype='float32', memory={},
                            alignment_enabled=True)
    pipe, align, temporal = arr.status
    values = {kv.key: kv.value for kv in temporal.values}
    assert temporal.name == 'lotus: temporal' and temporal.level == DiagnosticStatus.OK
    assert values['resets'] == '1' and values['resets_total'] == '1'
    assert values['refused_total'] == '0' and values['status'] == 'reset'
    assert 'stage_align.stabilize_ms' in {kv.key for kv in pipe.values}
    align_values = {kv.key: kv.value for kv in align.values}
    assert align_values['source'] == cut.outputs['alignment'].source


def test_alignment_message_reports_source_and_nan_residual(frames):
    f = frames[0]
    proc = FrameProcessor(ScriptedEngine([(relative(f, 'disparity'), None)]))
    if proc.alignment_type is None:
        pytest.skip('lotus_ros.msg exists after colcon build')
    none_yet = proc.process(inputs(f, T0, sparse=False)).outputs['alignment']
    assert (none_yet.source, none_yet.valid, none_yet.resets) == ('none', False, 0)
    assert math.isnan(none_yet.residual_rms) and math.isinf(none_yet.uncertainty)
    fitted = proc.process(inputs(f, T0 + DT)).outputs['alignment']
    assert fitted.source == 'sparse' and fitted.valid
    assert math.isfinite(fitted.residual_rms) and fitted.residual_rms > 0.0
    # the documented meaning: relative 1-sigma at mid-range of the message's own scale and shift
    cov = np.reshape(fitted.covariance, (2, 2))
    assert fitted.uncertainty == MetricCarry.uncertainty(fitted.scale, fitted.shift, cov) > 0.0
    inp = inputs(f, T0 + 2 * DT)                       # a scan of a flat wall at 50 m
    inp.sparse = array_to_image(np.where(np.isfinite(f.sparse_depth), 50.0, np.nan)
                                .astype(np.float32), '32FC1', inp.image.header)
    refused = proc.process(inp).outputs['alignment']
    # the filter keeps the earlier fit (valid), the refused one has no residual
    assert refused.valid and refused.source == 'sparse' and math.isnan(refused.residual_rms)


def test_temporal_state_follows_parameters_and_time_jumps(frames):
    f = frames[0]
    proc = FrameProcessor(ScriptedEngine([(relative(f, 'disparity'), None)]))
    assert proc.stabilizer is None and 'depth/relative_raw' not in proc.enabled_outputs()
    proc.update_params({'temporal.stabilize': True})
    assert proc.stabilizer is not None and 'depth/relative_raw' in proc.enabled_outputs()
    aligner, stabilizer = proc.aligner, proc.stabilizer
    proc.process(inputs(f, T0))
    proc.update_params({'temporal.jump': 0.1})         # restarts the stabiliser only
    assert proc.aligner is aligner and proc.stabilizer is not stabilizer
    assert proc.stabilizer.jump == 0.1
    stabilizer = proc.stabilizer
    proc.update_params({'alignment.max_age': 1.0})     # a new filter: temporal state restarts
    assert proc.aligner is not aligner and proc.stabilizer is not stabilizer
    proc.process(inputs(f, T0 + DT))
    proc.reset()                                       # time went backwards
    assert proc.process(inputs(f, T0)).temporal.status == 'initialised'
    proc.update_params({'temporal.stabilize': False})
    assert proc.stabilizer is None and proc.process(inputs(f, T0 + DT)).temporal is None
