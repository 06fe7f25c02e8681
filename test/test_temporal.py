"""Inter-frame stabilisation and metric carry-forward against synthetic ground truth."""

import math

import numpy as np
import pytest

from lotus_ros.core.alignment import MetricAligner
from lotus_ros.core.temporal import MetricCarry, TemporalStabilizer
from lotus_ros.demo.synthetic import render_sequence

DT = 0.1


def normalised(depth, lo_q=0.02, hi_q=0.98):
    """Lotus's target: disparity scaled by its own 2 % / 98 % quantiles, clipped to [0, 1]."""
    with np.errstate(divide='ignore'):
        d = np.where(np.isfinite(depth), 1.0 / depth, 0.0)
    lo, hi = np.quantile(d, (lo_q, hi_q))
    return np.clip((d - lo) / (hi - lo), 0, 1).astype(np.float32), hi - lo, lo


# The synthetic paths span the whole sequence: 150 frames give 10 Hz steps over 15 s.
@pytest.fixture(scope='module')
def room():
    return render_sequence(150, width=128, height=96, scene='room')[:8]


@pytest.fixture(scope='module')
def outdoor():
    return render_sequence(150, width=128, height=96, scene='outdoor')[:4]


def test_known_affine_jumps_recovered(room):
    """A frame renormalised by (a, b) is mapped back: p_prev = a p + b, output unchanged."""
    base, _, _ = normalised(room[0].depth)
    rng = np.random.default_rng(0)
    for a, b in [(1.0, 0.0), (0.7, 0.1), (1.4, -0.15), (0.6, 0.25)]:
        stab = TemporalStabilizer(time_constant=math.inf)
        first = stab.update(base + rng.normal(0, 0.003, base.shape).astype(np.float32), 0.0)
        jumped = np.clip((base - b) / a, 0, 1).astype(np.float32)
        frame = stab.update(jumped + rng.normal(0, 0.003, base.shape).astype(np.float32), DT)
        assert frame.status == 'ok', frame.reason
        m = frame.interframe
        assert abs(m.scale - a) < 0.01 * a and abs(m.shift - b) < 0.005, (a, b, m)
        unsaturated = (jumped > 0.02) & (jumped < 0.98)
        err = np.abs(frame.relative - first.relative)[unsaturated]
        assert np.median(err) < 0.005


def test_moving_object_rejected(room):
    """A near object covering 30 % of the view is an outlier set, not a change of range."""
    p0, _, _ = normalised(room[0].depth)
    a, b = 0.8, 0.05
    p1 = np.clip((p0 - b) / a, 0, 1)
    h, w = p1.shape
    obj = (slice(h // 4, h), slice(w // 3, w // 3 + int(0.4 * w)))
    p1[obj] = 0.97                                          # a near board
    stab = TemporalStabilizer()
    stab.update(p0, 0.0)
    frame = stab.update(p1.astype(np.float32), DT)
    assert frame.status == 'ok', frame.reason
    m = frame.interframe
    assert abs(m.scale - a) < 0.01 and abs(m.shift - b) < 0.005, m
    assert m.inliers < 0.9 * m.candidates
    # without robustness the object biases the map: least squares on the same pixels
    both = (p0 > 0.01) & (p0 < 0.99) & (p1 > 0.01) & (p1 < 0.99)
    ls = np.polyfit(p1[both], p0[both], 1)
    assert abs(ls[0] - a) > 0.05


def test_image_motion_compensated():
    """With the image, a camera pan of a few pixels is undone before the fit."""
    rng = np.random.default_rng(1)
    h, w = 120, 160
    v, u = np.mgrid[0:h + 20, 0:w + 20]
    scene = (0.5 + 0.3 * np.sin(u / 9.0) * np.cos(v / 13.0)).astype(np.float32)
    texture = (rng.random((h + 20, w + 20, 3)) * 255).astype(np.uint8)
    texture = np.repeat(np.repeat(texture[::4, ::4], 4, 0), 4, 1)[:h + 20, :w + 20]
    shift_v, shift_u = 2, 5        # the camera pans: content moves up-left in the new frame
    views = [(scene[10:10 + h, 10:10 + w], texture[10:10 + h, 10:10 + w]),
             (scene[10 + shift_v:10 + shift_v + h, 10 + shift_u:10 + shift_u + w],
              texture[10 + shift_v:10 + shift_v + h, 10 + shift_u:10 + shift_u + w])]
    results = {}
    for with_image in (False, True):
        stab = TemporalStabilizer()
        stab.update(views[0][0], 0.0, views[0][1] if with_image else None)
        results[with_image] = stab.update(views[1][0], DT, views[1][1] if with_image else None)
    motion = results[True].motion
    assert abs(motion[0] - shift_v) < 0.5 and abs(motion[1] - shift_u) < 0.5, motion
    m = results[True].interframe
    assert abs(m.scale - 1.0) < 0.005 and abs(m.shift) < 0.003 and \
        m.inliers > 0.95 * m.candidates
    assert results[False].motion == (0.0, 0.0)
    same_pixel = results[False].interframe
    assert same_pixel is None or same_pixel.inliers < 0.8 * same_pixel.candidates


def test_reset_on_scene_cut(room, outdoor):
    """Room to road: the images stop matching and the relative maps agree at half the pixels."""
    stab = TemporalStabilizer(reset_after=3)
    statuses = [stab.update(normalised(f.depth)[0], i * DT, f.rgb).status
                for i, f in enumerate(room[:3] + outdoor)]
    assert statuses[:3] == ['initialised', 'ok', 'ok']
    assert statuses[3:] == ['refused', 'refused', 'reset', 'ok'], statuses
    assert stab.resets == 1


def test_reset_on_scene_cut_without_image(room):
    """Without images a cut to an unrelated relative map is found by the fit alone."""
    rng = np.random.default_rng(3)
    coarse = rng.random((6, 8)).astype(np.float32)
    other = np.kron(coarse, np.ones((16, 16), np.float32))       # another scene, 128x96
    other = np.clip(other + np.linspace(0, 0.3, 96, dtype=np.float32)[:, None], 0, 1)
    stab = TemporalStabilizer(reset_after=2)
    stab.update(normalised(room[0].depth)[0], 0.0)
    frames = [stab.update(other, (1 + k) * DT) for k in range(3)]
    assert [f.status for f in frames] == ['refused', 'reset', 'ok'], [f.reason for f in frames]
    assert 'scene changed' in frames[0].reason and stab.resets == 1


def test_single_glitch_keeps_reference(room):
    """One unusable frame is refused; the next is fitted against the last good one."""
    stab = TemporalStabilizer()
    p0, _, _ = normalised(room[0].depth)
    stab.update(p0, 0.0)
    glitch = np.random.default_rng(2).random(p0.shape).astype(np.float32)
    assert stab.update(glitch, DT).status == 'refused'
    a, b = 1.2, -0.05
    frame = stab.update(np.clip((p0 - b) / a, 0, 1).astype(np.float32), 2 * DT)
    assert frame.status == 'ok' and frame.dt == pytest.approx(2 * DT)
    assert abs(frame.interframe.scale - a) < 0.01 and abs(frame.interframe.shift - b) < 0.005
    assert stab.resets == 0


def _renormalising_sequence(depth, n, steady):
    """Return the same view, the model's range drifting and jumping after `steady` frames."""
    p0, s0, t0 = normalised(depth)
    frames = []
    for k in range(n):
        j = max(k - steady + 1, 0)
        a = 1.0 + 0.3 * math.sin(0.4 * j) + (0.4 if j >= 10 else 0.0)
        b = 0.05 * math.sin(0.3 * j)
        # p0 = a p + b  =>  disparity = s0 (a p + b) + t0
        frames.append((np.clip((p0 - b) / a, 0, 1).astype(np.float32), s0 * a, s0 * b + t0))
    return frames


def _sparse(depth, step=6):
    sparse = np.full(depth.shape, np.nan, np.float32)
    sparse[::step, ::step] = depth[::step, ::step]
    return sparse


def _run(frames, sparse, carry, silent_from):
    aligner = MetricAligner('disparity', z_min=0.1, z_max=100.0, max_age=0.5)
    stab = TemporalStabilizer()
    out = []
    for k, (p, _, _) in enumerate(frames):
        frame = stab.update(p, k * DT)
        state = aligner.update(p, k * DT, sparse_depth=None if k >= silent_from else sparse)
        out.append(carry.update(state, frame))
    return out


def test_carry_keeps_metric_through_dropout(room):
    depth = room[0].depth
    frames = _renormalising_sequence(depth, 40, steady=10)
    estimates = _run(frames, _sparse(depth), MetricCarry(max_uncertainty=math.inf), 10)
    for k, (est, (_, s, t)) in enumerate(zip(estimates, frames, strict=True)):
        assert est.state.valid, (k, est.state.reason)
        assert est.source == ('sparse' if k < 10 else 'carried')
        mid = 0.5 * est.state.scale + est.state.shift
        assert abs(mid / (0.5 * s + t) - 1) < 0.03, (k, est.state.scale, s)
    # without carrying the old scale goes stale after max_age, and is wrong before that
    old = _run(frames, _sparse(depth), MetricCarry(mode='max_age'), 10)
    assert not any(e.state.valid for e in old[16:])
    assert all(e.source == 'sparse' for e in old[:10])


def test_carry_stops_when_uncertainty_passes_bound(room):
    depth = room[0].depth
    frames = _renormalising_sequence(depth, 40, steady=10)
    density, bound = 0.05, 0.06
    estimates = _run(frames, _sparse(depth), MetricCarry(noise_density=density,
                                                         max_uncertainty=bound), 10)
    sources = [e.source for e in estimates]
    # added relative variance grows by density^2 per second: the bound is passed after
    # (bound / density)^2 seconds of carrying
    last = 10 + int((bound / density) ** 2 / DT + 1e-9) - 1
    assert sources[:10] == ['sparse'] * 10
    assert sources[10:last + 1] == ['carried'] * (last - 9)
    assert set(sources[last + 1:]) == {'none'}, sources
    assert estimates[last].added_uncertainty <= bound < estimates[last + 1].added_uncertainty
    assert estimates[last].uncertainty > estimates[last].added_uncertainty
    assert not estimates[last + 1].state.valid


def test_carry_stops_at_stabiliser_reset(room, outdoor):
    aligner = MetricAligner('disparity', z_min=0.1, z_max=100.0, max_age=10.0)
    stab = TemporalStabilizer(reset_after=2)
    carry = MetricCarry(max_uncertainty=math.inf)
    sources = []
    for k, f in enumerate(room[:3] + outdoor[:2]):
        p = normalised(f.depth)[0]
        frame = stab.update(p, k * DT, f.rgb)
        state = aligner.update(p, k * DT, sparse_depth=f.sparse_depth if k == 0 else None)
        sources.append((frame.status, carry.update(state, frame).source))
    assert sources == [('initialised', 'sparse'), ('ok', 'carried'), ('ok', 'carried'),
                       ('refused', 'none'), ('reset', 'none')]
