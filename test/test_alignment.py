"""Robust alignment against synthetic ground truth (seeded; bounds from the issue)."""

import math

import numpy as np
import pytest

from lotus_ros.core.alignment import MetricAligner, apply_affine, fit_affine
from lotus_ros.core.geometry import Intrinsics, backproject

Z_MIN, Z_MAX = 0.1, 100.0


def _random_affine(r, space):
    """s, t mapping p in [0.02, 0.98] onto a random depth range z_near (0.3-2 m) to z_far."""
    z_near = r.uniform(0.3, 2.0)
    z_far = z_near * r.uniform(3.0, 20.0)
    if space == 'disparity':
        s = (1 / z_near - 1 / z_far) / 0.96
        return s, 1 / z_far - 0.02 * s, z_near, z_far
    s = (z_far - z_near) / 0.96
    return s, z_near - 0.02 * s, z_near, z_far


def _affine_samples(n, outlier_frac, noise, seed, space='disparity'):
    """Points exactly affine in `space` plus relative noise and outliers; returns p, z, s, t."""
    r = np.random.default_rng(seed)
    s, t, z_near, z_far = _random_affine(r, space)
    p = r.uniform(0.02, 0.98, n)
    y = s * p + t
    z = (1 / y if space == 'disparity' else y) * (1 + noise * r.normal(size=n))
    k = int(round(outlier_frac * n))
    idx = r.permutation(n)[:k]
    half = k // 2
    # Half random depths, half foreground/background bleeding.
    z[idx[:half]] = np.exp(r.uniform(np.log(z_near), np.log(z_far), half))
    z[idx[half:]] *= r.choice([0.5, 2.0], k - half)
    return p, z, s, t


@pytest.mark.parametrize('n, outliers, noise, scale_tol, shift_tol', [
    (50, 0.3, 0.01, 0.02, 0.01),
    (200, 0.5, 0.01, 0.015, 0.005),
    (50, 0.0, 0.0, 1e-6, 1e-6),
])
def test_exact_affine_recovery_300_trials(n, outliers, noise, scale_tol, shift_tol):
    scale_err, shift_err = [], []
    for seed in range(300):
        p, z, s, t = _affine_samples(n, outliers, noise, seed)
        fit = fit_affine(p, z, space='disparity', rng=seed)
        assert fit.valid, fit.reason
        scale_err.append(abs(fit.scale - s) / s)
        shift_err.append(abs(fit.shift - t) / s)
    assert np.percentile(scale_err, 95) <= scale_tol
    assert np.percentile(shift_err, 95) <= shift_tol


def test_depth_space_noise_free_recovery():
    for seed in range(50):
        p, z, s, t = _affine_samples(30, 0.0, 0.0, seed, space='depth')
        fit = fit_affine(p, z, space='depth', rng=seed)
        assert fit.valid and fit.inliers == 30
        assert abs(fit.scale - s) / s <= 1e-6 and abs(fit.shift - t) / s <= 1e-6


def _clustered_samples(n, cluster_frac, noise, end, space, seed):
    """
    Points affine in `space` with relative noise, a fraction of them on one wrong surface.

    The wrong surface (a window or glass door where the LiDAR reads what is behind, a mirror,
    foliage in front) covers a p window 0.05-0.3 wide at the near or far end of the depth range,
    10 % to 2x in front of or behind the true depth, with the same noise. Returns p, z, s, t and
    the mask of the wrong samples.
    """
    r = np.random.default_rng(seed)
    s, t, _, _ = _random_affine(r, space)
    k = int(round(cluster_frac * n))
    width = r.uniform(0.05, 0.3)
    at_high_p = (end == 'near') == (space == 'disparity')   # disparity grows towards the camera
    lo = 0.98 - width if at_high_p else 0.02
    p = np.concatenate([r.uniform(0.02, 0.98, n - k), r.uniform(lo, lo + width, k)])
    wrong = np.arange(n) >= n - k
    y = s * p + t
    z = (1 / y if space == 'disparity' else y) * (1 + noise * r.normal(size=n))
    z[wrong] *= np.exp(r.choice([-1.0, 1.0]) * r.uniform(np.log(1.1), np.log(2.0)))
    order = r.permutation(n)
    return p[order], z[order], s, t, wrong[order]


@pytest.mark.parametrize('space', ['disparity', 'depth'])
@pytest.mark.parametrize('end', ['near', 'far'])
def test_coherent_wrong_surface_at_one_end_200_trials(end, space):
    # 25 % of N = 100 samples on one wrong surface, 1 % noise on the rest. With a fixed 10 % band
    # a line tilted through the wrong surface kept every true sample and won (p95 scale error
    # 7-9 %) at the end where y is small (far in disparity, near in depth): there a small change
    # of the shift moves the relative error most. The band must follow the noise instead.
    scale_err, shift_err, wrong_in, true_in = [], [], [], []
    for seed in range(200):
        p, z, s, t, wrong = _clustered_samples(100, 0.25, 0.01, end, space, 5000 + seed)
        fit = fit_affine(p, z, space=space, rng=seed)
        assert fit.valid, fit.reason
        scale_err.append(abs(fit.scale - s) / s)
        shift_err.append(abs(fit.shift - t) / s)
        wrong_in.append(fit.inlier_mask[wrong].mean())
        true_in.append(fit.inlier_mask[~wrong].mean())
    assert np.percentile(scale_err, 95) <= 0.03
    assert np.percentile(shift_err, 95) <= 0.015
    # The wrong surface is rejected, not just outweighed; the true samples are kept.
    assert np.mean(wrong_in) <= 0.05 and np.mean(true_in) >= 0.95, (wrong_in, true_in)


def _scene(h=192, w=256):
    """Room-like depth: floor, a back wall at 8 m, a box at 2.5 m; plus intrinsics."""
    intr = Intrinsics(0.8 * w, 0.8 * w, w / 2 - 0.5, h / 2 - 0.5, w, h)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ry = (v - intr.cy) / intr.fy
    depth = np.full((h, w), 8.0)
    with np.errstate(divide='ignore'):
        floor = np.where(ry > 0, 1.2 / ry, np.inf)   # camera 1.2 m above the floor
    depth = np.minimum(depth, floor)
    box = (u > 0.25 * w) & (u < 0.55 * w) & (v > 0.3 * h) & (v < 0.78 * h)
    depth[box] = np.minimum(depth[box], 2.5 + 2.0 * (u[box] / w - 0.25))
    return depth, intr


def _prediction(depth, s, t, seed, normalise=False):
    """
    Make a disparity-affine prediction with a smooth, spatially correlated model error (~5 %).

    normalise=True spreads p over [0.02, 0.98] like Lotus' per-image normalisation; otherwise
    (s, t) are used as given, which leaves a narrow p range (harder: a wall cluster dominates).
    """
    r = np.random.default_rng(seed)
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w] / max(h, w)
    a = r.normal(size=4) * 0.05
    err = a[0] * np.sin(3 * u + 1) + a[1] * np.cos(4 * v) + a[2] * u * v + a[3] * (u - 0.5)
    disp = (1.0 / depth) * (1.0 + err)
    if normalise:
        s = (disp.max() - disp.min()) / 0.96
        t = disp.min() - 0.02 * s
    return (disp - t) / s


def _abs_rel(pred_depth, gt):
    ok = np.isfinite(gt)
    return float(np.mean(np.abs(pred_depth[ok] - gt[ok]) / gt[ok]))


def _sparse(depth, n, outlier_frac, seed):
    r = np.random.default_rng(seed)
    h, w = depth.shape
    sparse = np.full((h, w), np.nan, np.float32)
    lin = r.choice(h * w, size=n, replace=False)
    z = depth.ravel()[lin] * (1 + 0.01 * r.normal(size=n))
    k = int(round(outlier_frac * n))
    half = k // 2
    z[:half] = r.uniform(0.5, 10.0, half)
    z[half:k] *= r.choice([0.5, 2.0], k - half)
    sparse.ravel()[lin] = z
    return sparse


def _ls(p, y):
    a = np.stack([p, np.ones_like(p)], 1)
    return np.linalg.lstsq(a, y, rcond=None)[0]


@pytest.mark.parametrize('normalise', [True, False])
@pytest.mark.parametrize('n', [20, 50, 200])
def test_dense_quality_robust_vs_oracle_vs_least_squares(n, normalise):
    # Per trial the bound can fail when the draw is ambiguous (at N = 20 on this wall-dominated
    # scene: one off-wall sample, or one real and one outlier at the same p). Refusing is the
    # right answer there, so: >= 80 % of 20 seeded trials accepted, >= 90 % of the accepted ones
    # within the bound; plain least squares must be > 3x the oracle in the median.
    depth, _ = _scene()
    ok = np.isfinite(depth)
    accepted, within, plain_ratio = [], [], []
    for seed in range(20):
        s, t = 2.0 * (1 + 0.3 * seed / 20), -0.05 * seed / 20
        p = _prediction(depth, s, t, seed, normalise)
        so, to = _ls(p[ok], 1.0 / depth[ok])
        oracle = _abs_rel(apply_affine(p, so, to, space='disparity', z_min=Z_MIN, z_max=Z_MAX),
                          depth)
        sparse = _sparse(depth, n, 0.3, seed + 100)
        aligner = MetricAligner('disparity', z_min=Z_MIN, z_max=Z_MAX, seed=seed)
        state = aligner.update(p, 0.0, sparse_depth=sparse)
        accepted.append(state.valid)
        if state.valid:
            robust = _abs_rel(aligner.apply(p, state), depth)
            within.append(robust <= 1.25 * oracle + 0.01)
        m = np.isfinite(sparse)
        sl, tl = _ls(p[m], 1.0 / sparse[m])
        plain = (_abs_rel(apply_affine(p, sl, tl, space='disparity', z_min=Z_MIN, z_max=Z_MAX),
                          depth) if sl > 0 else math.inf)
        plain_ratio.append(plain / oracle)
    assert np.mean(accepted) >= 0.8, accepted
    assert np.mean(within) >= 0.9, within
    assert np.median(plain_ratio) > 3.0, plain_ratio


def test_fitting_in_the_wrong_space_is_worse():
    depth, _ = _scene()
    ok = np.isfinite(depth)
    p = _prediction(depth, 2.0, 0.05, seed=1, normalise=True)
    sparse = _sparse(depth, 200, 0.0, seed=5)
    m = np.isfinite(sparse)
    # Read as depth, a disparity-like p runs the wrong way: s <= 0 must be refused.
    wrong = fit_affine(p[m], sparse[m], space='depth', threshold=1.0)
    assert not wrong.valid and 'scale' in wrong.reason
    # Even with the direction flipped (q = 1 - p grows with depth), depth space is much worse.
    fit = fit_affine(p[m], sparse[m], space='disparity', threshold=1.0)
    err_disp = _abs_rel(apply_affine(p, fit.scale, fit.shift, space='disparity', z_min=Z_MIN,
                                     z_max=Z_MAX), depth)
    q = 1.0 - p
    fit = fit_affine(q[m], sparse[m], space='depth', threshold=1.0)
    assert fit.valid
    err_depth = _abs_rel(apply_affine(q, fit.scale, fit.shift, space='depth', z_min=Z_MIN,
                                      z_max=Z_MAX), depth)
    assert err_depth > 2.0 * err_disp, (err_depth, err_disp)
    # The aligner fits in the space it is given: exact recovery of each space's own parameters.
    for space, (s, t) in (('disparity', (2.0, 0.05)), ('depth', (6.0, 0.5))):
        y = 1.0 / depth if space == 'disparity' else depth
        p_exact = np.where(ok, (y - t) / s, 0.0)
        aligner = MetricAligner(space, z_min=Z_MIN, z_max=Z_MAX)
        state = aligner.update(p_exact, 0.0, sparse_depth=np.where(ok, depth, np.nan))
        assert state.space == space and state.valid
        assert state.scale == pytest.approx(s, rel=1e-6)
        assert state.shift == pytest.approx(t, abs=1e-6)


DEGENERATE = {
    'n_below_8': (np.linspace(0.2, 0.8, 5), np.linspace(1, 3, 5)),
    'all_p_equal': (np.full(40, 0.4), np.linspace(1, 3, 40)),
    'bad_depths': (np.linspace(0.1, 0.9, 40),
                   np.tile([np.nan, 0.0, -1.0, np.inf, 2.0, 3.0, 4.0, 5.0], 5)),
    'all_saturated': (np.tile([0.0, 1.0, 0.005, 0.999], 10), np.linspace(1, 3, 40)),
    'negative_scale': (np.linspace(0.1, 0.9, 40), 1.0 / np.linspace(2.0, 0.2, 40)),
    'negative_y': (np.linspace(0.1, 0.9, 40), 1.0 / (np.linspace(0.1, 0.9, 40) - 0.5)),
    'empty': (np.zeros(0), np.zeros(0)),
    'all_nan': (np.full(40, np.nan), np.full(40, np.nan)),
}


@pytest.mark.parametrize('name', sorted(DEGENERATE))
@pytest.mark.parametrize('space', ['disparity', 'depth'])
@pytest.mark.parametrize('mode', ['scale_shift', 'scale'])
def test_degenerate_input_never_raises_nor_emits_nonfinite(name, space, mode):
    p, z = DEGENERATE[name]
    fit = fit_affine(p, z, space=space, mode=mode)
    numbers = [fit.scale, fit.shift, *fit.covariance.ravel()]
    assert all(math.isfinite(x) for x in numbers), fit
    # a refused fit has no residual (NaN), never the 0.0 of a perfect fit
    assert math.isfinite(fit.residual_rms) == fit.valid, fit
    assert fit.inlier_mask.shape == np.shape(p) and fit.inliers == fit.inlier_mask.sum()
    assert not fit.valid or fit.scale > 0
    if name in ('n_below_8', 'bad_depths', 'all_saturated', 'empty', 'all_nan'):
        assert not fit.valid and fit.reason
    if name == 'negative_scale':
        assert not fit.valid or fit.inliers < 40
    # The same data as a map through the aligner and apply.
    side = max(int(math.ceil(math.sqrt(max(p.size, 1)))), 1)
    pm = np.full(side * side, 0.5)
    zm = np.full(side * side, np.nan)
    pm[:p.size], zm[:z.size] = p, z
    aligner = MetricAligner(space, mode, z_min=Z_MIN, z_max=Z_MAX)
    state = aligner.update(pm.reshape(side, side), 1.0, sparse_depth=zm.reshape(side, side))
    for x in (state.scale, state.shift, *state.covariance.ravel()):
        assert math.isfinite(x)
    # one update of a new aligner: valid exactly when its fit was accepted
    assert math.isfinite(state.residual_rms) == state.valid, state
    out = aligner.apply(pm.reshape(side, side), state)
    assert out.dtype == np.float32 and not (out == 0).any()


def test_apply_guards_and_conventions():
    p = np.array([np.nan, 0.0, 0.005, 0.2, 0.5, 0.6, 0.995, 1.0], np.float32)
    # Disparity with s * p + t <= 0 for p <= 0.5: beyond range, never 0 or negative.
    out = apply_affine(p, 1.0, -0.5, space='disparity', z_min=0.1, z_max=50.0)
    assert np.isnan(out[0])
    assert np.isposinf(out[1:5]).all()
    assert out[5] == pytest.approx(10.0, rel=1e-5)
    assert out[6] == pytest.approx(1 / 0.495, rel=1e-5) and out[7] == pytest.approx(2.0)
    # REP 117: beyond z_max is +Inf, closer than z_min is -Inf; nothing is clipped.
    out = apply_affine(np.array([0.3, 0.9], np.float32), 1e-6, 1e-7, space='disparity',
                       z_min=0.1, z_max=50.0)
    assert np.isposinf(out).all()
    out = apply_affine(np.array([0.5], np.float32), 1000.0, 0.0, space='disparity', z_min=0.1,
                       z_max=50.0)
    assert np.isneginf(out[0])
    # Depth space: far end (p >= 1 - delta) is +Inf, negative depth is invalid (NaN), depth in
    # (0, z_min) is too close (-Inf).
    out = apply_affine(p, 10.0, -3.0, space='depth', z_min=0.1, z_max=50.0)
    assert np.isnan(out[0]) and np.isposinf(out[6:]).all()
    assert np.isnan(out[1]) and np.isnan(out[2]) and out[4] == pytest.approx(2.0)
    out = apply_affine(np.array([0.5], np.float32), 1.0, -0.45, space='depth', z_min=0.1,
                       z_max=50.0)
    assert np.isneginf(out[0])
    # Unusable scale gives NaN, not zeros.
    assert np.isnan(apply_affine(p, 0.0, 0.1, space='depth', z_min=0.1, z_max=50.0)).all()


def test_temporal_filter_static_rms_jump_and_dropout():
    depth, _ = _scene()
    s_true, t_true = 2.0, 0.05
    aligner = MetricAligner('disparity', z_min=Z_MIN, z_max=Z_MAX, max_age=0.5, seed=3)
    per_frame, filtered = [], []
    stamp = 0.0
    for k in range(60):
        stamp = 0.1 * k
        p = np.where(np.isfinite(depth), (1.0 / depth - t_true) / s_true, 0.0)
        r = np.random.default_rng(1000 + k)
        sparse = _sparse(depth, 30, 0.2, 1000 + k)
        sparse *= (1 + 0.04 * r.normal(size=sparse.shape)).astype(np.float32)
        state = aligner.update(p, stamp, sparse_depth=sparse)
        fit = fit_affine(*aligner.candidates(p, sparse_depth=sparse), rng=k)
        if k >= 10 and fit.valid:
            per_frame.append(fit.scale / s_true - 1)
            filtered.append(state.scale / s_true - 1)
    rms_frame = math.sqrt(np.mean(np.square(per_frame)))
    rms_filter = math.sqrt(np.mean(np.square(filtered)))
    assert rms_filter <= 0.6 * rms_frame, (rms_filter, rms_frame)

    # A 30 % jump of the model's scale (Lotus renormalises per image): back within 3 % in 5 frames.
    s_new = 1.3 * s_true
    errors = []
    for k in range(60, 66):
        stamp = 0.1 * k
        p = np.where(np.isfinite(depth), (1.0 / depth - t_true) / s_new, 0.0)
        state = aligner.update(p, stamp, sparse_depth=_sparse(depth, 60, 0.1, 2000 + k))
        errors.append(abs(state.scale / s_new - 1))
    assert max(errors[4:]) < 0.03, errors
    assert state.valid and not state.stale

    # Sensor dropout: values held, age grows, stale (and not valid) after max_age.
    held = (state.scale, state.shift)
    last_accept = stamp
    for k in range(66, 76):
        stamp = 0.1 * k
        state = aligner.update(p, stamp, sparse_depth=None)
        assert (state.scale, state.shift) == held
        assert state.age == pytest.approx(stamp - last_accept)
        assert state.stale == (stamp - last_accept > 0.5)
        assert state.valid == (not state.stale)
    assert state.stale and not state.valid
    np.testing.assert_array_equal(aligner.apply(p, state),
                                  apply_affine(p, *held, space='disparity', z_min=Z_MIN,
                                               z_max=Z_MAX))


def test_temporal_filter_with_correlated_model_error():
    # Each frame's prediction carries its own smooth model error (correlated across pixels), so
    # a per-frame fit on many precise samples is confidently wrong by a few percent. The fit
    # covariance alone would gate those fits out and reset endlessly; the noise floor keeps the
    # filter averaging them.
    depth, _ = _scene()
    ok = np.isfinite(depth)
    s_true, t_true = 2.0, 0.05
    aligner = MetricAligner('disparity', z_min=Z_MIN, z_max=Z_MAX, seed=5)
    per_frame, filtered = [], []
    for k in range(50):
        p = np.where(ok, _prediction(depth, s_true, t_true, 3000 + k), 0.0)
        sparse = _sparse(depth, 300, 0.1, 4000 + k)
        state = aligner.update(p, 0.1 * k, sparse_depth=sparse)
        fit = fit_affine(*aligner.candidates(p, sparse_depth=sparse), rng=k)
        if k >= 10 and fit.valid:
            per_frame.append(fit.scale / s_true - 1)
            filtered.append(state.scale / s_true - 1)
    rms_frame = math.sqrt(np.mean(np.square(per_frame)))
    rms_filter = math.sqrt(np.mean(np.square(filtered)))
    assert len(per_frame) >= 35 and rms_frame > 0.01
    assert rms_filter <= 0.6 * rms_frame, (rms_filter, rms_frame)


def test_sparse_map_at_lower_resolution_maps_pixel_centres():
    # Sparse pixel (i, j) of a 3x smaller map covers prediction pixels 3i..3i+2; its centre is
    # prediction pixel (3i + 1, 3j + 1), where the analytic depth is sampled.
    depth, _ = _scene(h=192, w=252)
    ok = np.isfinite(depth)
    s, t = 1.5, 0.08
    p = np.where(ok, (1.0 / depth - t) / s, 0.0)
    small = np.where(ok, depth, np.nan)[1::3, 1::3].copy()
    small[::2, :] = np.nan
    state = MetricAligner('disparity', z_min=Z_MIN, z_max=Z_MAX).update(p, 0.0,
                                                                        sparse_depth=small)
    assert state.valid and state.inliers == state.candidates
    assert state.scale == pytest.approx(s, rel=1e-5) and state.shift == pytest.approx(t, abs=1e-5)


def test_candidate_filters_against_per_pixel_rules():
    rng = np.random.default_rng(7)
    h, w = 16, 24
    pred = (np.where(np.arange(w)[None, :] < 12, 0.3, 0.7)
            + 0.004 * rng.random((h, w))).astype(np.float32)
    pred[:2] = 0.0                      # saturated rows (sky)
    pred[9, 5] = np.nan
    depth = rng.uniform(0.5, 20.0, size=(h, w)).astype(np.float32)
    depth[3, ::3] = 200.0               # beyond z_max
    depth[4, ::4] = np.nan
    depth[5, 1::4] = 0.0
    aligner = MetricAligner('disparity', z_min=0.1, z_max=100.0)
    p, z = aligner.candidates(pred, sparse_depth=depth)
    expected = []
    for v in range(h):
        for u in range(w):
            win = [pred[min(max(v + dv, 0), h - 1), min(max(u + du, 0), w - 1)]
                   for dv in range(-2, 3) for du in range(-2, 3)]
            zz, pp = depth[v, u], pred[v, u]
            if (0.1 <= zz <= 100.0 and 0.01 < pp < 0.99 and not np.isnan(win).any()
                    and max(win) - min(win) < 0.05):
                expected.append((pp, zz))
    got = sorted(zip(p.tolist(), z.tolist(), strict=True))
    np.testing.assert_allclose(got, sorted(expected), rtol=1e-6)
    assert 150 < len(got) < 240   # 12 usable rows x 20 columns off the edge, minus the rest


def test_fixed_scale_and_mode_none():
    p = np.full((4, 4), 0.5)
    fixed = MetricAligner('depth', 'none', fixed_scale=4.0, fixed_shift=1.0)
    state = fixed.update(p, 10.0)
    assert state.valid and (state.scale, state.shift) == (4.0, 1.0)
    np.testing.assert_allclose(fixed.apply(p, state), 3.0)
    assert math.isnan(state.residual_rms)              # nothing was fitted
    off = MetricAligner('depth', 'none')
    state = off.update(p, 1.0, sparse_depth=np.full((4, 4), 2.0))
    assert not state.valid and math.isinf(state.age) and state.scale == 0.0
    assert math.isnan(state.residual_rms)


def test_points_and_other_resolution_sparse_map():
    depth, intr = _scene()
    ok = np.isfinite(depth)
    s, t = 1.5, 0.08
    p = np.where(ok, (1.0 / depth - t) / s, 0.0)
    # LiDAR-like points on every 3rd pixel ray, plus points 1.7x further on some of the same rays:
    # the nearest per pixel must win or the hidden ones become outliers.
    pts = backproject(np.where(ok, depth, np.nan), intr)[::3, ::3].reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(1)].astype(np.float64)
    hidden = pts[::2] * 1.7
    aligner = MetricAligner('disparity', z_min=Z_MIN, z_max=Z_MAX)
    state = aligner.update(p, 0.0, points=np.concatenate([hidden, pts]), intrinsics=intr)
    assert state.valid and state.inliers == state.candidates <= len(pts)
    assert state.scale == pytest.approx(s, rel=1e-4) and state.shift == pytest.approx(t, abs=1e-4)
    # The same points given with the intrinsics of a 2x larger image: rays are unchanged.
    state = MetricAligner('disparity', z_min=Z_MIN, z_max=Z_MAX).update(
        p, 0.0, points=pts, intrinsics=intr.scaled(2 * intr.width, 2 * intr.height))
    assert state.scale == pytest.approx(s, rel=1e-4) and state.shift == pytest.approx(t, abs=1e-4)
    # A sparse map at 2x the prediction's resolution (same view), sampled at its own pixel
    # centres from the analytic scene; mapping by pixel centres must give consistent samples.
    big_intr = intr.scaled(2 * intr.width, 2 * intr.height)
    big, _ = _scene(2 * intr.height, 2 * intr.width)
    keep = np.zeros(big.shape, bool)
    keep[::6, ::6] = True
    big = np.where(keep & np.isfinite(big), big, np.nan)
    assert big_intr.fx == pytest.approx(2 * intr.fx)
    state = MetricAligner('disparity', z_min=Z_MIN, z_max=Z_MAX).update(p, 0.0, sparse_depth=big)
    assert state.valid and state.inliers >= 0.95 * state.candidates
    assert state.scale == pytest.approx(s, rel=0.01) and state.shift == pytest.approx(t, abs=0.005)
