"""
Robust metric alignment of a relative depth prediction to sparse metric depth.

Lotus outputs p in [0, 1], affine to disparity (``*-disparity`` checkpoints) or to depth (v1 depth
checkpoints): y = s * p + t with y = 1 / z (space 'disparity') or y = z (space 'depth'), s > 0.
The fit happens in the model's own space; fitting in the other space is several times worse.

Pipeline: candidates (sparse depth map or 3-D points, filtered) -> RANSAC over point pairs scored
by relative depth error within a band derived from the data's own noise level -> Huber IRLS whose
band follows the inliers' residual scale -> a small Kalman filter on (s, t) with chi-square gating,
reset after repeated rejections (Lotus renormalises each image, so real jumps happen) and an age
after which the result is stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math

import cv2
import numpy as np

from lotus_ros.core.geometry import Intrinsics, project

SPACES = ('disparity', 'depth')
MODES = ('scale_shift', 'scale', 'none')

# Chi-square 99.9 % quantiles for 1 and 2 degrees of freedom (Kalman innovation gate).
_CHI2_999 = {1: 10.828, 2: 13.816}

# Inlier bands in residual sigmas: RANSAC cuts at 2.5 sigma of its LMedS scale (Rousseeuw and
# Leroy's reweighting rule); IRLS at 3 sigma of a MAD taken inside its own band, which
# underestimates sigma by a few percent, so the band settles near 2.5-3 true sigmas.
_RANSAC_BAND_SIGMAS = 2.5
_IRLS_BAND_SIGMAS = 3.0
# The residual scale needs less precision than the consensus, and its per-hypothesis sort is the
# costliest step of the RANSAC: it uses an evenly strided subset of at most this many points.
_SCALE_POINTS = 128


@dataclass
class AffineFit:
    scale: float
    shift: float
    covariance: np.ndarray
    candidates: int
    inliers: int
    residual_rms: float
    """RMS relative depth error of the inliers; NaN when the fit is refused."""
    valid: bool
    reason: str
    inlier_mask: np.ndarray
    scale_only: bool = False


@dataclass
class AlignmentState:
    scale: float
    shift: float
    covariance: np.ndarray
    candidates: int
    inliers: int
    residual_rms: float
    """Of the latest fit; NaN when it was refused or none was made (no data yet, fixed)."""
    age: float
    valid: bool
    stale: bool
    reason: str
    space: str


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f'space must be one of {SPACES}, got {space!r}')


def _refused(reason: str, candidates: int, size: int, inliers: int = 0) -> AffineFit:
    # Scale, shift and covariance stay finite (callers copy them into messages unconditionally);
    # the residual is NaN: 0.0 would read as a perfect fit.
    return AffineFit(scale=0.0, shift=0.0, covariance=np.zeros((2, 2)), candidates=candidates,
                     inliers=inliers, residual_rms=math.nan, valid=False, reason=reason,
                     inlier_mask=np.zeros(size, dtype=bool))


def _density_weights(p: np.ndarray, bins: int = 10) -> np.ndarray:
    """
    Per-candidate weight 1 / sqrt(candidates in its p bin).

    Without it the consensus is a head count, and one large surface at one depth (a wall filling
    half the image) outvotes the few samples that actually fix the slope, whenever the model's
    error across that surface is a few percent.
    """
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    return 1.0 / np.sqrt(np.bincount(b, minlength=bins)[b])


def _lmeds_sigma(e2: np.ndarray, w: np.ndarray) -> float:
    """
    Residual scale of the best hypothesis: least (density-weighted) median of squares.

    While the true samples hold more than half of the weight, the right line's weighted median
    residual is set by their noise alone (0.674 sigma; more with outliers, so the band errs wide),
    so the smallest one over the hypotheses measures the noise without knowing the inliers.
    1.4826 makes it a Gaussian sigma, (1 + 5 / (m - 2)) corrects small samples (Rousseeuw and
    Leroy). Unweighted, the samples of a wall filling half the image would make a flat line
    through the wall look like the most precise fit.
    """
    rows = np.arange(e2.shape[0])[:, None]
    order = np.argsort(e2, axis=1)                                   # (K, M)
    cum = np.cumsum(w[order], axis=1)                                # (K, M)
    half = np.argmax(cum >= 0.5 * cum[:, -1:], axis=1)[:, None]      # (K, 1)
    med = e2[rows, order[rows, half]]                                # (K, 1)
    m = e2.shape[1]
    return 1.4826 * (1.0 + 5.0 / max(m - 2, 1)) * math.sqrt(float(med.min()))


def _ransac(p: np.ndarray, y: np.ndarray, space: str, fixed_shift: float | None, tau: float,
            hypotheses: int, score_points: int, min_dp: float, sigma_floor: float,
            rng: np.random.Generator) -> tuple[float, float, float] | None:
    """
    Best (s, t) hypothesis by density-weighted relative-depth consensus, and its inlier band.

    Pairs (or single points with the shift fixed) define hypotheses, sampled with the density
    weights; s <= 0 and pairs closer than min_dp in p are discarded. Scoring uses at most
    score_points random candidates. The band is 2.5 LMedS sigmas, between 2.5 sigma_floor and
    tau: with a fixed 10 % band and 1 % noise, a line tilted through a wrong surface 10-30 % off
    (a window reading the wall behind) keeps every true point and outvotes the truth. Within the
    band support decides, then the truncated cost (MSAC): a cost-first rank prefers a flat line
    fitting a wall precisely over the truth fitting everything at the model's few-% error.
    Returns (s, t, band).
    """
    n = p.size
    w = _density_weights(p)
    prob = w / w.sum()
    i = rng.choice(n, size=hypotheses, p=prob)
    if fixed_shift is None:
        j = rng.choice(n, size=hypotheses, p=prob)
        dp = p[j] - p[i]
        ok = np.abs(dp) >= min_dp
        if not ok.any():
            return None
        i, j, dp = i[ok], j[ok], dp[ok]
        s = (y[j] - y[i]) / dp
        t = y[i] - s * p[i]
    else:
        s = (y[i] - fixed_shift) / p[i]
        t = np.full_like(s, fixed_shift)
    ok = (s > 0.0) & np.isfinite(s) & np.isfinite(t)
    if not ok.any():
        return None
    s, t = s[ok], t[ok]
    if n > score_points:
        sel = rng.choice(n, size=score_points, replace=False)
        ps, ys, ws = p[sel], y[sel], w[sel]
    else:
        ps, ys, ws = p, y, w
    yhat = s[:, None] * ps[None, :] + t[:, None]
    with np.errstate(divide='ignore', invalid='ignore'):
        if space == 'disparity':
            e = ys[None, :] / yhat - 1.0          # z_hat / z - 1
        else:
            e = yhat * (1.0 / ys)[None, :] - 1.0   # z_hat / z - 1
    e2 = e * e
    e2[~(yhat > 0.0)] = np.inf
    step = -(-ws.size // _SCALE_POINTS)
    sigma = _lmeds_sigma(e2[:, ::step], ws[::step])
    band = min(tau, _RANSAC_BAND_SIGMAS * max(sigma, sigma_floor))
    support = np.einsum('km,m->k', (e2 < band * band).astype(np.float64), ws)
    cost = np.einsum('km,m->k', np.minimum(e2, band * band), ws)
    best = int(np.lexsort((cost, -support))[0])
    return float(s[best]), float(t[best]), band


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """
    Dot product without BLAS.

    OpenBLAS threads ddot above ~10k elements; on a loaded machine those threads spin and one
    20k-element product took ~8 ms instead of ~0.01 ms.
    """
    return float(np.einsum('i,i->', a, b))


def _rel_error(p: np.ndarray, y: np.ndarray, s: float, t: float, space: str) -> np.ndarray:
    """Relative depth error z_hat / z - 1 (inf where the model predicts no positive depth)."""
    yhat = s * p + t
    with np.errstate(divide='ignore', invalid='ignore'):
        e = y / yhat - 1.0 if space == 'disparity' else yhat / y - 1.0
    e[~(yhat > 0.0)] = np.inf
    return e


def _inliers(a: np.ndarray, band: float, min_inliers: int) -> np.ndarray:
    """Points with |residual| a < band, or the min_inliers smallest when the band holds fewer."""
    mask = a < band
    if mask.sum() < min_inliers:
        mask = np.zeros_like(mask)
        mask[np.argpartition(a, min_inliers - 1)[:min_inliers]] = True
    return mask


def _irls(p: np.ndarray, y: np.ndarray, s: float, t: float, space: str, scale_only: bool,
          band: float, tau: float, min_inliers: int, iterations: int, huber_k: float,
          sigma_floor: float) -> tuple[float, float, np.ndarray, np.ndarray] | None:
    """
    Huber IRLS on relative residuals starting from a RANSAC hypothesis and its band.

    sigma = 1.4826 MAD of the current inliers, floored so noise-free data does not down-weight
    every point; each iteration re-selects the inliers within 3 sigma (at most tau, never fewer
    than min_inliers) and weights them by Huber. Kept at tau, the band let a wrong surface just
    outside the noise pull the line. It settles instead of collapsing: the MAD of a set cut at
    3 sigma is still about sigma. Where the model's own correlated error dominates (a wall at one
    p with a few % error across it), that error sets sigma and the band widens with it, up to tau.
    Returns (s, t, covariance, mask), or None when the points cannot fix the model.
    """
    inv_y2 = 1.0 / (y * y)
    inv_y = np.sqrt(inv_y2)
    a = np.abs(_rel_error(p, y, s, t, space))
    if (a < tau).sum() < min_inliers:
        return None
    mask = _inliers(a, band, min_inliers)
    cov = np.zeros((2, 2))
    for _ in range(iterations):
        r = (s * p + t - y) * inv_y   # relative to y: to first order the relative depth error
        a = np.abs(r)
        sigma = max(1.4826 * float(np.median(a[mask])), sigma_floor)
        mask = _inliers(a, min(tau, _IRLS_BAND_SIGMAS * sigma), min_inliers)
        pm, ym, am = p[mask], y[mask], a[mask]
        w = inv_y2[mask] * np.minimum(1.0, huber_k * sigma / np.maximum(am, 1e-300))
        if scale_only:
            spp = _dot(w, pm * pm)
            if not spp > 0.0:
                return None
            s_new, t_new = _dot(w, pm * (ym - t)) / spp, t
        else:
            sw, sp, spp = float(w.sum()), _dot(w, pm), _dot(w, pm * pm)
            sy, spy = _dot(w, ym), _dot(w, pm * ym)
            det = sw * spp - sp * sp
            if not det > 1e-12 * sw * spp:
                return None
            s_new = (sw * spy - sp * sy) / det
            t_new = (spp * sy - sp * spy) / det
        done = abs(s_new - s) <= 1e-12 * abs(s) and abs(t_new - t) <= 1e-12 * (abs(s) + abs(t))
        s, t = s_new, t_new
        if done:
            break
    # Covariance of the weighted least-squares solution with the weighted residual variance.
    r = (s * p[mask] + t - y[mask]) * inv_y[mask]
    hub = np.minimum(1.0, huber_k * sigma / np.maximum(np.abs(r), 1e-300))
    w = inv_y2[mask] * hub
    dof = max(int(mask.sum()) - (1 if scale_only else 2), 1)
    var = _dot(hub, r * r) / dof
    if scale_only:
        spp = _dot(w, p[mask] ** 2)
        cov[0, 0] = var / spp
    else:
        pm = p[mask]
        normal = np.array([[_dot(w, pm * pm), _dot(w, pm)], [_dot(w, pm), w.sum()]])
        try:
            cov = var * np.linalg.inv(normal)
        except np.linalg.LinAlgError:
            return None
    if not (np.isfinite(cov).all() and math.isfinite(s) and math.isfinite(t)):
        return None
    return s, t, cov, mask


def _spread(p: np.ndarray) -> float:
    """Spread of p between the 10th and 90th percentile: a few stray inliers do not count."""
    lo, hi = np.quantile(p, (0.1, 0.9))
    return float(hi - lo)


def fit_affine(pred, depth, *, space: str = 'disparity', mode: str = 'scale_shift',
               z_min: float = 0.0, z_max: float = math.inf, delta: float = 0.01,
               min_inliers: int = 8, threshold: float = 0.1, min_spread: float = 0.05,
               fixed_shift: float = 0.0, scale_fallback: bool = True, hypotheses: int = 128,
               score_points: int = 512, iterations: int = 10, huber_k: float = 1.345,
               sigma_floor: float = 0.005, rng: np.random.Generator | int | None = 0) -> AffineFit:
    """
    Robustly fit y = s * p + t between 1-D predictions p and metric depths (metres).

    Candidates need finite depth in [z_min, z_max] (0/NaN = no data) and unsaturated p
    (delta < p < 1 - delta). threshold is the widest inlier band on relative depth error; the
    band used is derived from the residual scale (sigma_floor: the smallest sigma assumed).
    mode 'scale' (or 'scale_shift' when the inliers' p spread is below min_spread and
    scale_fallback is set) fits s with t = fixed_shift. Never raises on degenerate data: refuses
    with valid = False and a reason; scale, shift and covariance stay finite, residual_rms is NaN.
    """
    _check_space(space)
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    p_all = np.asarray(pred, dtype=np.float64).ravel()
    z_all = np.asarray(depth, dtype=np.float64).ravel()
    if p_all.shape != z_all.shape:
        raise ValueError(f'pred and depth sizes differ: {p_all.size} vs {z_all.size}')
    size = p_all.size
    with np.errstate(invalid='ignore'):
        ok = ((z_all > 0.0) & (z_all >= z_min) & (z_all <= z_max) & np.isfinite(z_all)
              & (p_all > delta) & (p_all < 1.0 - delta))
    idx = np.flatnonzero(ok)
    n = int(idx.size)
    if mode == 'none':
        return _refused('alignment disabled (mode none)', n, size)
    if n < min_inliers:
        return _refused(f'too few candidates ({n} < {min_inliers})', n, size)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    p = p_all[idx]
    z = z_all[idx]
    y = 1.0 / z if space == 'disparity' else z
    opts = dict(tau=threshold, min_inliers=min_inliers, iterations=iterations, huber_k=huber_k,
                sigma_floor=sigma_floor)

    scale_only = mode == 'scale'
    note = ''
    result = None
    if not scale_only:
        hyp = _ransac(p, y, space, None, threshold, hypotheses, score_points, 0.5 * min_spread,
                      sigma_floor, rng)
        if hyp is not None:
            result = _irls(p, y, hyp[0], hyp[1], space, False, hyp[2], **opts)
        if result is not None:
            spread = _spread(p[result[3]])
        else:
            spread = _spread(p)
        if spread < min_spread:
            if not scale_fallback:
                return _refused(f'p spread {spread:.3f} < {min_spread} cannot fix scale and shift',
                                n, size, 0 if result is None else int(result[3].sum()))
            scale_only, result = True, None
            note = f'scale only: p spread {spread:.3f} < {min_spread}'
        elif result is None:
            return _refused('too few inliers (no consistent pair)', n, size)
    if scale_only:
        hyp = _ransac(p, y, space, fixed_shift, threshold, hypotheses, score_points, 0.0,
                      sigma_floor, rng)
        if hyp is None:
            return _refused('non-positive scale', n, size)
        result = _irls(p, y, hyp[0], fixed_shift, space, True, hyp[2], **opts)
        if result is None:
            return _refused('too few inliers', n, size)

    s, t, cov, mask = result
    inliers = int(mask.sum())
    if not s > 0.0:
        return _refused(f'non-positive scale ({s:.3g})', n, size, inliers)
    pin = p[mask]
    y_lo = s * float(pin.min()) + t
    if not y_lo > 0.0:
        return _refused(f'model predicts non-positive {space} at p = {pin.min():.3f}', n, size,
                        inliers)
    e = _rel_error(pin, y[mask], s, t, space)
    rms = float(np.sqrt(np.mean(e * e)))
    full_mask = np.zeros(size, dtype=bool)
    full_mask[idx[mask]] = True
    return AffineFit(scale=float(s), shift=float(t), covariance=cov, candidates=n,
                     inliers=inliers, residual_rms=rms, valid=True, reason=note or 'ok',
                     inlier_mask=full_mask, scale_only=scale_only)


def apply_affine(pred_map, scale: float, shift: float, *, space: str, z_min: float,
                 z_max: float, delta: float = 0.01, out: np.ndarray | None = None) -> np.ndarray:
    """
    Metric depth (float32 metres) from a relative prediction, with REP 117 range semantics.

    Depth beyond z_max, where the model puts the far end (p <= delta in disparity, p >= 1 - delta
    in depth) or where s * p + t <= 0 in disparity is +Inf ('beyond range'); depth below z_min is
    -Inf ('too close'). Nothing is clipped: a clipped value would be a surface that is not there
    (a phantom obstacle at z_max for a costmap). NaN where p is not finite, the scale is unusable
    or depth space gives s * p + t <= 0. Never 0. Written into `out` (float32, p's shape) if given.
    """
    _check_space(space)
    if not 0.0 < z_min < z_max:
        raise ValueError(f'need 0 < z_min < z_max, got {z_min}, {z_max}')
    p = np.asarray(pred_map, dtype=np.float32)
    if out is None:
        out = np.empty(p.shape, dtype=np.float32)
    if not (math.isfinite(scale) and math.isfinite(shift) and scale > 0.0):
        out.fill(np.nan)
        return out
    with np.errstate(divide='ignore', invalid='ignore'):
        if space == 'disparity':
            y = p * np.float32(scale)
            y += np.float32(shift)
            np.divide(np.float32(1.0), y, out=out)
            far = (y <= 0.0) | (p <= delta) | (out > z_max)
        else:
            y = np.multiply(p, np.float32(scale), out=out)
            y += np.float32(shift)
            np.copyto(out, np.float32(np.nan), where=y <= 0.0)
            far = (p >= 1.0 - delta) | (out > z_max)
        near = out < z_min
    np.copyto(out, np.float32(-np.inf), where=near)
    np.copyto(out, np.float32(np.inf), where=far)
    return out


@dataclass
class _Filter:
    x: np.ndarray = field(default_factory=lambda: np.zeros(2))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))
    initialised: bool = False
    rejections: int = 0
    last_accept: float | None = None


class MetricAligner:
    """
    Temporal metric alignment: per-frame robust fit plus a Kalman filter on (scale, shift).

    The filter state is a random walk (process noise process_noise * s per frame). Measurement
    noise is the fit covariance plus (measurement_floor * s)^2, because the model's per-pixel
    errors are correlated and the fit covariance alone is far too optimistic.
    """

    def __init__(self, space: str = 'disparity', mode: str = 'scale_shift', *,
                 z_min: float = 0.1, z_max: float = 100.0, max_age: float = 2.0,
                 fixed_scale: float | None = None, fixed_shift: float = 0.0,
                 min_inliers: int = 8, seed: int = 0, delta: float = 0.01,
                 max_local_range: float = 0.05, window: int = 5, threshold: float = 0.1,
                 min_spread: float = 0.05, process_noise: float = 0.01,
                 measurement_floor: float = 0.03, reset_after: int = 3) -> None:
        _check_space(space)
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if not 0.0 < z_min < z_max:
            raise ValueError(f'need 0 < z_min < z_max, got {z_min}, {z_max}')
        if fixed_scale is not None and not (math.isfinite(fixed_scale) and fixed_scale > 0.0):
            raise ValueError(f'fixed_scale must be positive and finite, got {fixed_scale}')
        self.space = space
        self.mode = mode
        self.z_min, self.z_max, self.delta = float(z_min), float(z_max), float(delta)
        self.max_age = float(max_age)
        self.fixed_scale = None if fixed_scale is None else float(fixed_scale)
        self.fixed_shift = float(fixed_shift)
        self.min_inliers = int(min_inliers)
        self.max_local_range = float(max_local_range)
        self.half = int(window) // 2
        self.threshold = float(threshold)
        self.min_spread = float(min_spread)
        self.process_noise = float(process_noise)
        self.measurement_floor = float(measurement_floor)
        self.reset_after = int(reset_after)
        self._rng = np.random.default_rng(seed)
        self._f = _Filter()
        self._last_fit = (0, 0, math.nan)
        self._reason = 'no accepted fit yet'

    # Candidates -----------------------------------------------------------------------------

    def _from_map(self, sparse: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixel index v * w + u on the prediction grid, z) of every sparse sample."""
        sparse = np.asarray(sparse, dtype=np.float32)
        if sparse.ndim != 2:
            raise ValueError(f'sparse_depth must be HxW, got shape {sparse.shape}')
        hs, ws = sparse.shape
        with np.errstate(invalid='ignore'):
            lin = np.flatnonzero((sparse > 0.0) & np.isfinite(sparse))
        z = sparse.ravel()[lin]
        if (hs, ws) == (h, w):
            return lin, z
        # Pixel-centre mapping (same field of view, other resolution), no interpolation.
        vs, us = np.divmod(lin, ws)
        u = np.minimum(((us + 0.5) * (w / ws)).astype(np.int64), w - 1)
        v = np.minimum(((vs + 0.5) * (h / hs)).astype(np.int64), h - 1)
        if hs > h or ws > w:
            return self._nearest(v * w + u, z)
        return v * w + u, z

    @staticmethod
    def _nearest(lin: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the nearest sample per pixel (the occluder is what the camera sees)."""
        order = np.argsort(z, kind='stable')
        _, first = np.unique(lin[order], return_index=True)
        keep = order[first]
        return lin[keep], z[keep]

    def _from_points(self, points: np.ndarray, intr: Intrinsics, h: int,
                     w: int) -> tuple[np.ndarray, np.ndarray]:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if (intr.width, intr.height) != (w, h):
            intr = intr.scaled(w, h)
        u, v, z = project(pts, intr)
        with np.errstate(invalid='ignore'):
            iu = np.floor(u + 0.5)
            iv = np.floor(v + 0.5)
            ok = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h) & (z > 0.0)
        return self._nearest(iv[ok].astype(np.int64) * w + iu[ok].astype(np.int64), z[ok])

    def candidates(self, pred_map: np.ndarray, *, sparse_depth=None, points=None,
                   intrinsics: Intrinsics | None = None) -> tuple[np.ndarray, np.ndarray]:
        """
        Extract filtered (p, z) candidate pairs: depth in range, p unsaturated and locally smooth.

        Smoothness is the range of p in a window around the pixel: at depth edges LiDAR and model
        disagree most (bleeding, parallax between sensors), so those samples are dropped. Pixels
        are addressed by one linear index and every filter is one mask, so a dense 640x480 map
        costs a few image-sized passes, not a per-sample window gather.
        """
        pred = np.asarray(pred_map, dtype=np.float32)
        if pred.ndim != 2:
            raise ValueError(f'pred_map must be HxW, got shape {pred.shape}')
        h, w = pred.shape
        lins, zs = [], []
        if sparse_depth is not None:
            lin, z = self._from_map(sparse_depth, h, w)
            lins.append(lin), zs.append(z)
        if points is not None:
            if intrinsics is None:
                raise ValueError('points need intrinsics to be projected')
            lin, z = self._from_points(points, intrinsics, h, w)
            lins.append(lin), zs.append(z)
        if not lins:
            return np.zeros(0), np.zeros(0)
        lin = lins[0] if len(lins) == 1 else np.concatenate(lins)
        z = zs[0] if len(zs) == 1 else np.concatenate(zs)
        p = pred.ravel()[lin]
        # float64 thresholds compare in float64 (as if p and z were converted first)
        f64 = np.float64
        with np.errstate(invalid='ignore'):
            ok = (z >= f64(self.z_min)) & (z <= f64(self.z_max)) & (p > f64(self.delta)) & \
                (p < f64(1.0 - self.delta))
            if ok.any():
                ok &= self._local_range(pred).ravel()[lin] < self.max_local_range
        return p[ok].astype(np.float64), z[ok].astype(np.float64)

    def _local_range(self, pred: np.ndarray) -> np.ndarray:
        """
        Return max - min of p over the window around every pixel (edge-clamped).

        Inf where the window holds a non-finite value. Two separable image filters, whatever the
        number of candidates.
        """
        kernel = np.ones((2 * self.half + 1, 2 * self.half + 1), np.uint8)
        spread = cv2.dilate(pred, kernel, borderType=cv2.BORDER_REPLICATE)
        spread -= cv2.erode(pred, kernel, borderType=cv2.BORDER_REPLICATE)
        bad = ~np.isfinite(pred)
        if bad.any():
            spread[cv2.dilate(bad.view(np.uint8), kernel) > 0] = np.inf
        return spread

    # Filter ---------------------------------------------------------------------------------

    def _fixed_state(self, reason: str) -> AlignmentState:
        return AlignmentState(scale=self.fixed_scale, shift=self.fixed_shift,
                              covariance=np.zeros((2, 2)), candidates=0, inliers=0,
                              residual_rms=math.nan, age=0.0, valid=True, stale=False,
                              reason=reason, space=self.space)

    def state(self, stamp: float) -> AlignmentState:
        """Return the filter state at time stamp (seconds) without a new measurement."""
        if self.fixed_scale is not None:
            return self._fixed_state('fixed scale/shift')
        f = self._f
        age = math.inf if f.last_accept is None else max(0.0, float(stamp) - f.last_accept)
        stale = age > self.max_age
        valid = f.initialised and not stale and f.x[0] > 0.0
        reason = self._reason
        if stale and f.initialised:
            reason = f'stale: no accepted fit for {age:.2f} s ({self._reason})'
        cand, inl, rms = self._last_fit
        return AlignmentState(scale=float(f.x[0]), shift=float(f.x[1]), covariance=f.cov.copy(),
                              candidates=cand, inliers=inl, residual_rms=rms, age=age,
                              valid=bool(valid), stale=bool(stale), reason=reason,
                              space=self.space)

    def _measurement_noise(self, fit: AffineFit, s: float) -> np.ndarray:
        floor = (self.measurement_floor * s) ** 2
        return fit.covariance + np.diag([floor, 0.0 if self._shift_fixed(fit) else floor])

    def _shift_fixed(self, fit: AffineFit) -> bool:
        return self.mode == 'scale' or fit.scale_only

    def _kalman(self, fit: AffineFit, stamp: float) -> str:
        f = self._f
        z = np.array([fit.scale, fit.shift])
        scale_only = self._shift_fixed(fit)
        if not f.initialised:
            f.x, f.cov = z, self._measurement_noise(fit, fit.scale)
            if scale_only and self.mode != 'scale':
                f.cov[1, 1] = (self.measurement_floor * fit.scale) ** 2
            f.initialised, f.rejections, f.last_accept = True, 0, float(stamp)
            return 'initialised'
        r = self._measurement_noise(fit, f.x[0])
        if scale_only:
            h = np.array([[1.0, 0.0]])
            nu = z[:1] - f.x[:1]
            r = r[:1, :1]
        else:
            h = np.eye(2)
            nu = z - f.x
        s_mat = h @ f.cov @ h.T + r
        d2 = float(nu @ np.linalg.solve(s_mat, nu))
        if not (d2 <= _CHI2_999[nu.size]):
            f.rejections += 1
            if f.rejections < self.reset_after:
                return f'fit rejected by gate (d2 {d2:.1f}, {f.rejections} in a row)'
            f.x, f.cov = z, self._measurement_noise(fit, fit.scale)
            if scale_only and self.mode != 'scale':
                f.cov[1, 1] = (self.measurement_floor * fit.scale) ** 2
            f.rejections, f.last_accept = 0, float(stamp)
            return f'reset after {self.reset_after} rejected fits'
        gain = f.cov @ h.T @ np.linalg.inv(s_mat)
        x = f.x + gain @ nu
        ikh = np.eye(2) - gain @ h
        cov = ikh @ f.cov @ ikh.T + gain @ r @ gain.T
        if not x[0] > 0.0:
            x, cov = z, self._measurement_noise(fit, fit.scale)
        f.x, f.cov = x, 0.5 * (cov + cov.T)
        f.rejections, f.last_accept = 0, float(stamp)
        return 'ok'

    def update(self, pred_map, stamp: float, *, sparse_depth=None, points=None,
               intrinsics: Intrinsics | None = None) -> AlignmentState:
        """
        One frame: extract candidates, fit robustly, filter, and return the state at stamp.

        sparse_depth is a metric map registered to the image (any resolution with the same field
        of view; 0/NaN = no data); points are Nx3 in the camera optical frame with intrinsics of
        the image. Without either the filter just ages.
        """
        if self.fixed_scale is not None:
            return self._fixed_state('fixed scale/shift')
        if self.mode == 'none':
            self._reason = 'alignment disabled (mode none)'
            return self.state(stamp)
        f = self._f
        if f.initialised:
            q = (self.process_noise * f.x[0]) ** 2
            f.cov = f.cov + np.diag([q, 0.0 if self.mode == 'scale' else q])
        if sparse_depth is None and points is None:
            self._reason = 'no sparse depth this frame'
            return self.state(stamp)
        p, z = self.candidates(pred_map, sparse_depth=sparse_depth, points=points,
                               intrinsics=intrinsics)
        shift0 = self.fixed_shift
        if self.mode == 'scale_shift' and f.initialised:
            shift0 = float(f.x[1])
        fit = fit_affine(p, z, space=self.space, mode=self.mode, z_min=self.z_min,
                         z_max=self.z_max, delta=self.delta, min_inliers=self.min_inliers,
                         threshold=self.threshold, min_spread=self.min_spread,
                         fixed_shift=shift0, rng=self._rng)
        self._last_fit = (fit.candidates, fit.inliers, fit.residual_rms)
        if not fit.valid:
            self._reason = f'fit refused: {fit.reason}'
            return self.state(stamp)
        outcome = self._kalman(fit, stamp)
        self._reason = outcome if fit.reason == 'ok' else f'{outcome} ({fit.reason})'
        return self.state(stamp)

    def apply(self, pred_map, state: AlignmentState,
              out: np.ndarray | None = None) -> np.ndarray:
        """
        Metric depth from a prediction with a state's scale and shift (see apply_affine).

        The numbers are used even when the state is stale, so a caller may still show them; use
        state.valid to decide whether to publish metres. A state without a usable scale gives NaN.
        """
        return apply_affine(pred_map, state.scale, state.shift, space=self.space,
                            z_min=self.z_min, z_max=self.z_max, delta=self.delta, out=out)
