"""
Temporal consistency: inter-frame alignment of the relative output and metric scale carry-forward.

Lotus normalises every frame by its own 2 % / 98 % quantiles, so the relative output changes scale
and shift whenever a near object enters the view or the sky leaves it. `TemporalStabilizer` fits,
for each frame, the affine map from its relative output to the previous frame's (pixel by pixel,
after the image motion if the camera image is given; robustly: moving objects, disocclusions and
parallax are outliers) and publishes the output in a slowly tracked reference range.
`MetricCarry` uses the same maps to keep a metric scale from a `MetricAligner` alive while the
sparse source is silent, until the uncertainty carrying adds passes a bound. Neither imports ROS:
the processor owns one of each next to its MetricAligner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import math

import cv2
import numpy as np

from lotus_ros.core.alignment import AlignmentState, fit_affine

CARRY_MODES = ('uncertainty', 'max_age')

# fit_affine measures residuals relative to the target y. The target here is the reference
# frame's relative value p in [0, 1]; fitting y = p + _OFFSET makes those residuals absolute
# residuals in p units to within a factor of two, which is what the model's noise is.
_OFFSET = 1.0


@dataclass
class InterframeMap:
    """p_reference ~= scale * p_frame + shift, from one robust fit between two frames."""

    scale: float
    shift: float
    covariance: np.ndarray
    """2x2 covariance of (scale, shift) from the fit (no floor added)."""
    candidates: int
    inliers: int
    residual_rms: float


@dataclass
class StabilizedFrame:
    relative: np.ndarray
    """HxW float32 stabilised relative output: scale * raw + shift, in the reference range."""
    scale: float
    shift: float
    status: str
    """'initialised', 'ok', 'refused' (map kept from the last good frame) or 'reset'."""
    reason: str
    interframe: InterframeMap | None
    """Map from this frame's raw output to the previous accepted frame's; None unless 'ok'."""
    dt: float
    """Seconds since the previous accepted frame (what the map spans)."""
    motion: tuple[float, float]
    """(dv, du) pixels: where this frame's pixels were found in that frame (0 if not known)."""
    resets: int
    refusals: int
    """Consecutive refused fits (reset_after of them reset the reference)."""


@dataclass
class _Reference:
    relative: np.ndarray
    gray: np.ndarray | None
    stamp: float


class TemporalStabilizer:
    """
    Per-frame inter-frame fit plus a complementary filter that defines the reference range.

    Reference: the stabilised output q = A p + B is the raw output p mapped through the chain of
    inter-frame maps (precise from frame to frame) and pulled towards the frame's own
    normalisation (A, B) = (1, 0) with time constant `time_constant`, slowed down by
    (jump / gap)^2 while the two differ by more than `jump` (gap = max |q - p| over p in
    [0, 1]). So slow changes of the normalisation are followed, as the camera really gets nearer
    to things; jumps (a near object enters, the sky leaves) are held and forgotten only slowly.
    A reset (reset_after refused fits in a row: a scene cut, a covered lens) restarts the chain
    from the frame's own normalisation. time_constant and jump are the best worst case of a
    sweep in `python -m lotus_ros.benchmarks.temporal_benchmark`.

    Pixels are compared at the same (u, v) unless the camera image is given: then the global
    image motion (phase correlation of small grey images) is compensated first, which removes
    most of what camera rotation does to the comparison.
    """

    def __init__(self, *, time_constant: float = 1.5,
                 jump: float = 0.05, samples: int = 4096, edge_threshold: float = 0.05,
                 threshold: float = 0.05, min_inlier_fraction: float = 0.6,
                 mismatch_inlier_fraction: float = 0.8, min_candidates: int = 200,
                 reset_after: int = 3, delta: float = 0.01, motion_width: int = 160,
                 min_response: float = 0.1, seed: int = 0) -> None:
        if not (time_constant > 0.0 and jump > 0.0):
            raise ValueError(f'time_constant and jump must be positive, got {time_constant}, '
                             f'{jump}')
        self.time_constant = float(time_constant)
        self.jump = float(jump)
        self.samples = int(samples)
        self.edge_threshold = float(edge_threshold)
        self.threshold = float(threshold)
        self.min_inlier_fraction = float(min_inlier_fraction)
        self.mismatch_inlier_fraction = float(mismatch_inlier_fraction)
        self.min_candidates = int(min_candidates)
        self.reset_after = int(reset_after)
        self.delta = float(delta)
        self.motion_width = int(motion_width)
        self.min_response = float(min_response)
        self._seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self.resets = 0
        self._shape: tuple[int, int] | None = None
        self._window: np.ndarray | None = None
        self._start()

    def _start(self) -> None:
        self._ref: _Reference | None = None
        self._map = (1.0, 0.0)
        self._refusals = 0

    def reset(self) -> None:
        """Forget the reference (parameters changed); not counted as a scene reset."""
        self._start()

    # Samples -------------------------------------------------------------------------------

    def _layout(self, h: int, w: int) -> None:
        """Lay out a jittered grid of about `samples` pixels and the edge test's neighbours."""
        self._radius = radius = max(1, round(0.005 * w))
        step = max(1.0, math.sqrt((h - 2 * radius) * (w - 2 * radius) / self.samples))
        rng = np.random.default_rng(self._seed)
        v, u = np.meshgrid(np.arange(radius, h - radius, step),
                           np.arange(radius, w - radius, step), indexing='ij')
        self._gv = np.clip(np.rint(v + rng.uniform(0, step, v.shape)), radius,
                           h - 1 - radius).ravel()
        self._gu = np.clip(np.rint(u + rng.uniform(0, step, u.shape)), radius,
                           w - 1 - radius).ravel()
        self._offsets = np.array([0, -radius, radius, -radius * w, radius * w])
        self._shape = (h, w)

    def _sample(self, relative: np.ndarray, dv: float = 0.0, du: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
        """
        Sample at the grid moved by (dv, du) pixels (bilinear): values and which are reliable.

        Reliable: inside the image, finite, unsaturated and not at an edge: the second
        differences over the cross of neighbours stay below edge_threshold (a slope passes, a
        step does not; edges move between frames and blur in the model).
        """
        h, w = self._shape
        r = self._radius
        v, u = self._gv + dv, self._gu + du
        inside = (v >= r) & (v <= h - 1 - r) & (u >= r) & (u <= w - 1 - r)
        v, u = np.clip(v, r, h - 1 - r), np.clip(u, r, w - 1 - r)
        v0, u0 = np.floor(v).astype(np.int64), np.floor(u).astype(np.int64)
        fv, fu = v - v0, u - u0
        v1, u1 = np.minimum(v0 + 1, h - 1) * w, np.minimum(u0 + 1, w - 1)
        v0 = v0 * w
        flat = relative.ravel()
        values = ((flat[v0 + u0] * (1 - fu) + flat[v0 + u1] * fu) * (1 - fv)
                  + (flat[v1 + u0] * (1 - fu) + flat[v1 + u1] * fu) * fv)
        centre = np.rint(v).astype(np.int64) * w + np.rint(u).astype(np.int64)
        c, left, right, up, down = flat[centre[None, :] + self._offsets[:, None]]  # 5 x (N,)
        with np.errstate(invalid='ignore'):
            curvature = np.maximum(np.abs(left + right - 2 * c), np.abs(up + down - 2 * c))
            reliable = (inside & (curvature < self.edge_threshold) & (values > self.delta)
                        & (values < 1.0 - self.delta))
        return values, reliable

    # Image motion --------------------------------------------------------------------------

    def _gray(self, image: np.ndarray | None) -> np.ndarray | None:
        if image is None:
            return None
        image = np.asarray(image)
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = image.shape
        gw = min(self.motion_width, w)
        gh = max(2, round(h * gw / w))
        return cv2.resize(image, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float32)

    def _motion(self, gray: np.ndarray | None) -> tuple[float, float] | None:
        """
        Return (dv, du): where this frame's pixels are in the reference, in relative pixels.

        (0, 0) without images; None when the images do not match (phase correlation response
        below min_response, or a shift beyond a tenth of the width): a scene cut, or too
        little texture to tell.
        """
        ref = self._ref.gray
        if gray is None or ref is None or ref.shape != gray.shape:
            return 0.0, 0.0
        gh, gw = gray.shape
        if self._window is None or self._window.shape != gray.shape:
            self._window = cv2.createHanningWindow((gw, gh), cv2.CV_32F)
        (dx, dy), response = cv2.phaseCorrelate(gray, ref, self._window)
        h, w = self._shape
        du, dv = dx * w / gw, dy * h / gh
        if response < self.min_response or math.hypot(du, dv) > 0.1 * w:
            return None
        return dv, du

    # Fit -----------------------------------------------------------------------------------

    def _fit(self, values: np.ndarray, reliable: np.ndarray,
             motion: tuple[float, float] | None) -> InterframeMap | str:
        """
        Fit the map from this frame's samples to the reference's, or say why there is none.

        At least min_inlier_fraction of the pixels reliable in both frames must agree, or
        mismatch_inlier_fraction when the images do not match: relative depth alone can mistake
        one floor-like scene for another (a room floor and a road agree at about half the
        pixels), a textureless image alone is no scene cut.
        """
        matched = motion is not None
        ref_values, ref_reliable = self._sample(self._ref.relative, *(motion or (0.0, 0.0)))
        both = reliable & ref_reliable
        n = int(both.sum())
        if n < self.min_candidates:
            return f'too few pixels reliable in both frames ({n} < {self.min_candidates})'
        # fit_affine's 'disparity' space fits y = 1 / depth = s p + t: y is the reference value
        fit = fit_affine(values[both], 1.0 / (ref_values[both] + _OFFSET), space='disparity',
                         min_inliers=self.min_candidates // 2, threshold=self.threshold,
                         scale_fallback=False, rng=self._rng)
        if not fit.valid:
            return f'fit refused: {fit.reason}'
        needed = self.min_inlier_fraction if matched else self.mismatch_inlier_fraction
        if fit.inliers < needed * n:
            return (f'scene changed: {fit.inliers} of {n} pixels agree (< {needed:.0%}'
                    f'{"" if matched else " with the images not matching"})')
        return InterframeMap(scale=fit.scale, shift=fit.shift - _OFFSET,
                             covariance=fit.covariance, candidates=n, inliers=fit.inliers,
                             residual_rms=fit.residual_rms)

    # Frame ---------------------------------------------------------------------------------

    def update(self, relative: np.ndarray, stamp: float,
               image: np.ndarray | None = None) -> StabilizedFrame:
        """
        One frame: fit against the last accepted frame, chain, filter, stabilise.

        image (optional, HxWx3 RGB or HxW grey, any size with the same field of view) lets the
        fit compensate the camera's rotation between the frames.
        """
        relative = np.asarray(relative, dtype=np.float32)
        if relative.ndim != 2:
            raise ValueError(f'relative must be HxW, got shape {relative.shape}')
        stamp = float(stamp)
        reason = ''
        if relative.shape != self._shape:
            if self._ref is not None:
                self.resets += 1
                reason = f'image size changed to {relative.shape[1]}x{relative.shape[0]}'
            self._layout(*relative.shape)
            self._start()
        values, reliable = self._sample(relative)
        gray = self._gray(image)
        dt = 0.0 if self._ref is None else max(0.0, stamp - self._ref.stamp)
        motion = (0.0, 0.0)
        interframe = None
        if self._ref is None:
            status, reason = ('reset' if reason else 'initialised'), reason or 'first frame'
            mapping = (1.0, 0.0)
        else:
            motion = self._motion(gray)
            result = self._fit(values, reliable, motion)
            if isinstance(result, InterframeMap):
                a_ref, b_ref = self._map
                chained = (a_ref * result.scale, a_ref * result.shift + b_ref)
                # Complementary filter: pull the chain towards the frame's own range (1, 0).
                pull = self._pull(chained, dt)
                mapping = (chained[0] + pull * (1.0 - chained[0]), chained[1] * (1.0 - pull))
                status, reason, interframe = 'ok', 'ok', result
            else:
                self._refusals += 1
                status, reason, mapping = 'refused', result, None
                if self._refusals >= self.reset_after:
                    self.resets += 1
                    status = 'reset'
                    reason = f'reset after {self._refusals} refused fits ({result})'
                    mapping = (1.0, 0.0)
        if mapping is not None:
            self._ref = _Reference(relative.copy(), gray, stamp)
            self._map, self._refusals = mapping, 0
        scale, shift = self._map
        out = relative * np.float32(scale)
        out += np.float32(shift)
        return StabilizedFrame(relative=out, scale=scale, shift=shift, status=status,
                               reason=reason, interframe=interframe, dt=dt,
                               motion=motion or (0.0, 0.0),
                               resets=self.resets, refusals=self._refusals)

    def _pull(self, mapping: tuple[float, float], dt: float) -> float:
        a, b = mapping
        gap = max(abs(b), abs(a + b - 1.0))
        weight = 1.0 if gap <= self.jump else (self.jump / gap) ** 2
        return 1.0 - math.exp(-dt * weight / self.time_constant)


@dataclass
class MetricEstimate:
    """The metric scale to use for a frame and where it comes from."""

    state: AlignmentState
    """Scale and shift for this frame's raw relative output (use with MetricAligner.apply)."""
    source: str
    """'sparse' (fit to sparse depth, or fixed), 'carried' (through inter-frame maps) or 'none'."""
    uncertainty: float
    """Relative 1-sigma depth uncertainty at mid-range (p = 0.5) of the scale and shift."""
    added_uncertainty: float
    """The part of it that carrying added (0 for 'sparse'); what max_uncertainty bounds."""
    frames_carried: int


class MetricCarry:
    """
    Keep the metric scale through sparse-depth dropouts by following the inter-frame maps.

    When the aligner has a fit accepted at this frame (state age 0) it is passed through and
    becomes the anchor. Otherwise, in mode 'uncertainty', the previous frame's scale and shift
    (s, t) are carried through the frame's inter-frame map p_prev = a p + b to (s a, s b + t), the
    covariance growing by the map's fit covariance plus a relative random walk of the metric
    scale, noise_density^2 per second (the fit covariance alone is far too small: what drifts is
    camera motion and model flicker, not pixel noise). The carry stops once the uncertainty that
    carrying added (relative, at mid-range) passes max_uncertainty, or when the stabiliser
    resets. The anchor's own uncertainty is not counted against the bound: it is the aligner's
    (floored, conservative) and would make the carry length depend on
    alignment.measurement_floor. Mode 'max_age' is the behaviour without carrying: the
    aligner's own state, valid up to alignment.max_age.

    Defaults from `python -m lotus_ros.benchmarks.temporal_benchmark`: a scale carried on the
    synthetic room and outdoor paths (image motion compensated) drifts by up to 0.037 / sqrt(s)
    (random-walk fit), rounded up to noise_density 0.04; outdoors AbsRel reaches twice that
    with sparse data after about 2.5 s of carrying, when the added uncertainty is
    0.04 * sqrt(2.5) = 6.3 %, rounded down to max_uncertainty 6 %. Slower cameras drift less.
    """

    def __init__(self, *, mode: str = 'uncertainty', max_uncertainty: float = 0.06,
                 noise_density: float = 0.04) -> None:
        if mode not in CARRY_MODES:
            raise ValueError(f'mode must be one of {CARRY_MODES}, got {mode!r}')
        self.mode = mode
        self.max_uncertainty = float(max_uncertainty)
        self.noise_density = float(noise_density)
        self._carried: AlignmentState | None = None
        self._added = np.zeros((2, 2))
        self._frames = 0

    @staticmethod
    def uncertainty(scale: float, shift: float, covariance: np.ndarray) -> float:
        """Relative 1-sigma of y = s p + t at p = 0.5 (inf where y is not positive)."""
        y = 0.5 * scale + shift
        g = np.array([0.5, 1.0])
        var = float(g @ covariance @ g)
        if not (y > 0.0 and var >= 0.0):
            return math.inf
        return math.sqrt(var) / y

    def update(self, state: AlignmentState, frame: StabilizedFrame) -> MetricEstimate:
        """Return the estimate for a frame from the aligner's state and the stabiliser's frame."""
        fresh = state.valid and state.age == 0.0
        if self.mode == 'max_age' or fresh:
            # A fit to sparse data anchors the carry only if the stabiliser kept this frame as
            # its reference (the next map starts from it).
            kept = frame.status != 'refused'
            self._carried = state if fresh and kept else None
            self._added = np.zeros((2, 2))
            self._frames = 0
            return MetricEstimate(state=state, source='sparse' if state.valid else 'none',
                                  uncertainty=self.uncertainty(state.scale, state.shift,
                                                               state.covariance),
                                  added_uncertainty=0.0, frames_carried=0)
        prev = self._carried
        if prev is None or frame.status == 'reset' or \
                (frame.interframe is None and frame.status != 'refused'):
            self._carried = None
            return self._none(state, 'no metric fit to carry' if prev is None
                              else f'carry stopped: stabiliser {frame.status} ({frame.reason})')
        if frame.interframe is None:
            # A refused frame: no map to this frame; the carry waits on the reference frame.
            return self._none(state, f'no inter-frame map this frame ({frame.reason})',
                              keep=True)
        m = frame.interframe
        s, t = prev.scale, prev.shift
        scale, shift = s * m.scale, s * m.shift + t
        jac = np.array([[m.scale, 0.0], [m.shift, 1.0]])
        # fit covariance of (a, b) scaled to metric, plus a random walk of the whole map's
        # relative scale (metric = (1 + e) (s p + t), var e = noise_density^2 per second)
        mapped = np.array([scale, shift])
        step = s * s * m.covariance + self.noise_density ** 2 * frame.dt * np.outer(mapped,
                                                                                    mapped)
        cov = jac @ prev.covariance @ jac.T + step
        added = jac @ self._added @ jac.T + step
        u_added = self.uncertainty(scale, shift, added)
        self._frames += 1
        if not (scale > 0.0 and u_added <= self.max_uncertainty):
            self._carried = None
            return self._none(state, f'carry stopped: carrying added {u_added:.1%} > '
                              f'{self.max_uncertainty:.1%} after {self._frames} frames')
        u = self.uncertainty(scale, shift, cov)
        # This frame's candidates and age (time since the last sparse fit) stay the aligner's.
        carried = replace(state, scale=scale, shift=shift, covariance=cov, stale=False,
                          valid=True, reason=f'carried {self._frames} frames since the last '
                                             f'sparse fit (uncertainty {u:.1%})')
        self._carried, self._added = carried, added
        return MetricEstimate(state=carried, source='carried', uncertainty=u,
                              added_uncertainty=u_added, frames_carried=self._frames)

    def _none(self, state: AlignmentState, reason: str, keep: bool = False) -> MetricEstimate:
        if not keep:
            self._frames = 0
        invalid = replace(state, valid=False, reason=reason)
        return MetricEstimate(state=invalid, source='none', uncertainty=math.inf,
                              added_uncertainty=math.inf, frames_carried=self._frames)
