"""
Measure temporal consistency and metric carry-forward (issue 14) on the synthetic sequences.

Usage: python -m lotus_ros.benchmarks.temporal_benchmark [--width 160] [--seconds 15] [--fps 10]

The model double gives Lotus-like output: the true disparity normalised per frame by its own
2 % / 98 % quantiles (the training target's normalisation, clipped to [0, 1] like the model's
output), plus a smooth relative error fixed to the scene, per-frame flicker and white noise
(NOISE). The camera image goes to the stabiliser as in the node. Prints (a) temporal
consistency (AbsRel of the whole sequence after one affine fit, over the mean per-frame-fitted
AbsRel) raw vs stabilised, (b) metric AbsRel and coverage through a sparse-depth dropout with and
without carrying, the calibration behind MetricCarry's defaults, and (c) the per-frame cost at
640x480.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
import math
import os
import time

import cv2
import numpy as np

from lotus_ros.core.alignment import MetricAligner, apply_affine
from lotus_ros.core.temporal import MetricCarry, TemporalStabilizer
from lotus_ros.demo.synthetic import SyntheticFrame, render_sequence
from lotus_ros.ros.parameters import defaults

SCENES = ('room', 'outdoor')
EVAL_MAX_DEPTH = 80.0
"""Metres: ground truth beyond this is not scored (the usual outdoor evaluation cap)."""
NOISE = {'white': (0.005, 0.0, 0.0), 'lotus-like': (0.005, 0.02, 0.05)}
"""
(white std in p units, smooth relative disparity error per frame, and fixed to the scene).

'white' isolates renormalisation and camera motion. 'lotus-like' is mostly a smooth relative
error that moves with the scene (the model is deterministic: the same surface gives the same
error) plus some flicker; per-frame-fitted AbsRel is about 5 %, roughly what zero-shot models
like Lotus reach on indoor benchmarks.
"""
STEADY = NOISE['lotus-like'][:1] + (0.0,) + NOISE['lotus-like'][2:]
"""'lotus-like' without the flicker: how much of the carried drift is the model's flicker."""
OBJECT_DEPTH = {'room': 1.2, 'outdoor': 1.5}
"""Depth of the near object that crosses the view in the 'crossing' variant (a person)."""
VARIANTS = ('plain', 'crossing', 'static')
"""The camera path; the path with a near object crossing 6-10 s; a still camera with it."""
TIME_CONSTANTS = (0.5, 1.0, 1.5, 2.0, 5.0, math.inf)
DROPOUT = (5.0, 10.0)
"""Seconds after the start without sparse depth."""


@dataclass
class Sequence:
    scene: str
    variant: str
    stamps: np.ndarray
    depth: np.ndarray
    """(N, H, W) true depth, +inf for sky."""
    raw: np.ndarray
    """(N, H, W) float32 Lotus-like relative disparity."""
    truth: np.ndarray
    """(N, 2) true (scale, shift) of each frame: disparity = scale * raw + shift."""
    sparse: list[np.ndarray]
    rgb: list[np.ndarray]
    """Camera images (without the crossing object: it is only in the depth)."""


def scene_error(frame: SyntheticFrame, depth: np.ndarray, wavelength: float,
                seed: int = 3) -> np.ndarray:
    """Return a unit-std smooth error field fixed to world points (0 on sky): 8 plane waves."""
    rng = np.random.default_rng(seed)
    waves = rng.standard_normal((8, 3))
    waves *= (2 * np.pi / (wavelength * rng.uniform(0.5, 1.5, 8)))[:, None] / np.linalg.norm(
        waves, axis=1, keepdims=True)
    phase = rng.uniform(0, 2 * np.pi, 8)
    h, w = depth.shape
    k = frame.k
    v, u = np.mgrid[0:h, 0:w]
    z = np.where(np.isfinite(depth), depth, 0.0)
    cam = np.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z], axis=-1)
    world = cam @ frame.pose[:3, :3].T + frame.pose[:3, 3]              # (H, W, 3)
    field = np.cos(world @ waves.T + phase).sum(axis=-1) * math.sqrt(2 / 8)
    return np.where(np.isfinite(depth), field, 0.0)


def lotus_like(depth: np.ndarray, noise: tuple[float, float, float], fixed: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """
    Return the double's output for a depth map and its true (scale, shift) in disparity.

    fixed is the scene-fixed error field (unit std); relative errors scale the disparity.
    """
    with np.errstate(divide='ignore'):
        disparity = np.where(np.isfinite(depth), 1.0 / depth, 0.0)
    lo, hi = np.quantile(disparity, (0.02, 0.98))
    p = np.clip((disparity - lo) / (hi - lo), 0.0, 1.0)
    white, flicker, scene = noise
    h, w = depth.shape
    relative_error = scene * fixed
    if flicker:
        coarse = rng.standard_normal((6, 8)).astype(np.float32)
        relative_error = relative_error + flicker * cv2.resize(coarse, (w, h),
                                                               interpolation=cv2.INTER_CUBIC)
    p = p + relative_error * disparity / (hi - lo) + white * rng.standard_normal((h, w))
    return np.clip(p, 0.0, 1.0).astype(np.float32), float(hi - lo), float(lo)


def with_crossing_object(depth: np.ndarray, stamps: np.ndarray, object_depth: float
                         ) -> np.ndarray:
    """Add a near upright slab (a person) walking across the view from 6 s to 10 s."""
    out = depth.copy()
    n, h, w = depth.shape
    width = w // 5
    t = stamps - stamps[0]
    for k in np.flatnonzero((t >= 6.0) & (t < 10.0)):
        left = int((t[k] - 6.0) / 4.0 * (w + width)) - width
        cols = slice(max(left, 0), max(min(left + width, w), 0))
        out[k, h // 5:, cols] = np.minimum(out[k, h // 5:, cols], object_depth)
    return out


def make_sequence(frames: list[SyntheticFrame], fixed: list[np.ndarray], scene: str, variant: str,
                  noise: tuple[float, float, float]) -> Sequence:
    """Build one sequence; fixed holds each frame's scene-fixed error field."""
    if variant == 'static':
        # the first view held still: only the crossing object and the noise change
        frames = [replace(frames[0], index=f.index, stamp=f.stamp) for f in frames]
        fixed = [fixed[0]] * len(frames)
    stamps = np.array([f.stamp for f in frames])
    depth = np.stack([f.depth for f in frames])
    if variant in ('crossing', 'static'):
        depth = with_crossing_object(depth, stamps, OBJECT_DEPTH[scene])
    rng = np.random.default_rng(7)
    raw, truth = [], []
    for d, error in zip(depth, fixed, strict=True):
        p, s, t = lotus_like(d, noise, error, rng)
        raw.append(p)
        truth.append((s, t))
    return Sequence(scene, variant, stamps, depth, np.stack(raw), np.array(truth),
                    [f.sparse_depth for f in frames], [f.rgb for f in frames])


# (a) consistency ------------------------------------------------------------------------------

def fitted_absrel(pred: np.ndarray, depth: np.ndarray) -> float:
    """AbsRel after one least-squares affine fit in disparity over all given pixels."""
    ok = np.isfinite(depth) & (depth <= EVAL_MAX_DEPTH)
    x = pred[ok].astype(np.float64)
    z = depth[ok].astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    coef = np.linalg.lstsq(design, 1.0 / z, rcond=None)[0]
    z_hat = 1.0 / np.maximum(design @ coef, 1.0 / EVAL_MAX_DEPTH)
    return float(np.mean(np.abs(z_hat - z) / z))


def consistency(outputs: np.ndarray, depth: np.ndarray) -> tuple[float, float]:
    """Return (whole-sequence / mean per-frame AbsRel, mean per-frame AbsRel)."""
    per_frame = float(np.mean([fitted_absrel(o, d) for o, d in zip(outputs, depth, strict=True)]))
    return fitted_absrel(outputs, depth) / per_frame, per_frame


def stabilised_frames(seq: Sequence, images: bool = True, **kw) -> tuple[list, int]:
    stabilizer = TemporalStabilizer(**kw)
    frames = [stabilizer.update(p, t, rgb if images else None)
              for p, t, rgb in zip(seq.raw, seq.stamps, seq.rgb, strict=True)]
    return frames, stabilizer.resets


def stabilise(seq: Sequence, images: bool = True, **kw) -> tuple[np.ndarray, int]:
    frames, resets = stabilised_frames(seq, images, **kw)
    return np.stack([f.relative for f in frames]), resets


def report_consistency(sequences: dict) -> None:
    tau = TemporalStabilizer().time_constant
    print('(a) temporal consistency (1.0 = one affine map fits all frames; target <= 1.3 '
          'stabilised)')
    print('    stabilised at the same pixel ("same px") and with the image motion compensated '
          f'("image", as the node does); time_constant {tau:g} s')
    print(f'{"scene":8} {"variant":9} {"noise":10} {"raw":>6} {"same px":>7} {"image":>6} '
          f'{"AbsRel raw":>10} {"AbsRel image":>12} {"resets":>6}')
    for (scene, variant, noise), seq in sequences.items():
        if noise not in NOISE:
            continue
        same_px, _ = stabilise(seq, images=False)
        stab, resets = stabilise(seq)
        raw_ratio, raw_abs = consistency(seq.raw, seq.depth)
        stab_ratio, stab_abs = consistency(stab, seq.depth)
        print(f'{scene:8} {variant:9} {noise:10} {raw_ratio:6.2f} '
              f'{consistency(same_px, seq.depth)[0]:7.2f} {stab_ratio:6.2f} '
              f'{raw_abs:10.2%} {stab_abs:12.2%} {resets:6d}')
    print('    AbsRel = mean per-frame-fitted AbsRel (per-frame accuracy); sky and depth beyond '
          f'{EVAL_MAX_DEPTH:g} m not scored')
    print()
    print('    time_constant sweep, ratio with the image (lotus-like noise):')
    keys = [k for k in sequences if k[2] == 'lotus-like']
    print('    ' + f'{"tau s":>6} ' + ' '.join(f'{k[0] + "/" + k[1]:>17}' for k in keys))
    for sweep in TIME_CONSTANTS:
        ratios = [consistency(stabilise(sequences[k], time_constant=sweep)[0],
                              sequences[k].depth)[0] for k in keys]
        print('    ' + f'{sweep:6g} ' + ' '.join(f'{r:17.2f}' for r in ratios))
    print()


# (b) metric through a dropout -----------------------------------------------------------------

def _aligner() -> MetricAligner:
    p = defaults()
    return MetricAligner(space='disparity', mode=p['alignment.mode'], z_min=p['alignment.z_min'],
                         z_max=p['alignment.z_max'], max_age=p['alignment.max_age'],
                         min_inliers=p['alignment.min_inliers'],
                         process_noise=p['alignment.process_noise'],
                         measurement_floor=p['alignment.measurement_floor'])


def metric_absrel(metric: np.ndarray, depth: np.ndarray) -> float:
    ok = np.isfinite(metric) & np.isfinite(depth) & (depth <= EVAL_MAX_DEPTH)
    return float(np.mean(np.abs(metric[ok] - depth[ok]) / depth[ok]))


def metric_run(seq: Sequence, frames: list, carry: MetricCarry | None,
               dropout: tuple[float, float]) -> dict[str, np.ndarray]:
    """
    Align every frame with the sparse source cut during dropout (seconds after the start).

    Per frame: metric AbsRel (NaN without metric output), source, uncertainty and the relative
    error of the scale at mid-range against the true normalisation. carry None: aligner only.
    """
    aligner = _aligner()
    t = seq.stamps - seq.stamps[0]
    absrel = np.full(t.size, np.nan)
    uncertainty = np.full(t.size, np.nan)
    source = []
    for k, (p, stamp) in enumerate(zip(seq.raw, seq.stamps, strict=True)):
        silent = dropout[0] <= t[k] < dropout[1]
        state = aligner.update(p, stamp, sparse_depth=None if silent else seq.sparse[k])
        if carry is None:
            source.append('sparse' if state.valid else 'none')
        else:
            estimate = carry.update(state, frames[k])
            state = estimate.state
            source.append(estimate.source)
            uncertainty[k] = estimate.uncertainty
        if state.valid:
            metric = apply_affine(p, state.scale, state.shift, space='disparity',
                                  z_min=aligner.z_min, z_max=aligner.z_max)
            absrel[k] = metric_absrel(metric, seq.depth[k])
    return dict(t=t, absrel=absrel, source=np.array(source), uncertainty=uncertainty)


def _window(run: dict, lo: float, hi: float) -> tuple[float, float]:
    sel = (run['t'] >= lo) & (run['t'] < hi)
    covered = np.isfinite(run['absrel'][sel])
    mean = float(np.mean(run['absrel'][sel][covered])) if covered.any() else math.nan
    return mean, float(covered.mean())


def carry_drift(seq: Sequence, frames: list, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """
    Measured error growth of a carried scale: RMS relative mid-range error after T seconds.

    The carry starts from the true normalisation at many frames (no initial error) and follows
    the stabiliser's maps; how fast it drifts is what noise_density has to describe.
    """
    t = seq.stamps - seq.stamps[0]
    steps = int(round(duration / (t[1] - t[0])))
    errors = []
    for start in range(1, t.size - steps, 5):
        s, c = seq.truth[start]
        row = []
        for k in range(start + 1, start + steps + 1):
            m = frames[k].interframe
            if m is not None:
                s, c = s * m.scale, s * m.shift + c
            true_s, true_t = seq.truth[k]
            row.append((0.5 * s + c) / (0.5 * true_s + true_t) - 1.0)
        errors.append(row)
    return t[1:steps + 1] - t[0], np.sqrt(np.mean(np.square(errors), axis=0))


def calibrate(seq: Sequence, frames: list) -> tuple[float, float]:
    """
    Return (AbsRel with sparse data, carry time at which AbsRel doubles).

    Unbounded 8 s carries from several starts are compared frame by frame with the same frames
    aligned to sparse data; the mean ratio, smoothed over 1 s, first passing 2 gives the time.
    """
    base = metric_run(seq, frames, MetricCarry(), (math.inf, math.inf))
    step = seq.stamps[1] - seq.stamps[0]
    length = int(round(8.0 / step))
    ratios = []
    for start in (2.0, 4.0, 6.0):
        run = metric_run(seq, frames, MetricCarry(max_uncertainty=math.inf),
                         (start, start + 8.0))
        first = int(np.searchsorted(run['t'], start - 1e-9))
        sel = slice(first, first + length)
        ratios.append(run['absrel'][sel] / base['absrel'][sel])
    smooth = np.convolve(np.nanmean(ratios, axis=0), np.ones(10) / 10, mode='valid')
    over = np.flatnonzero(smooth > 2.0)
    doubling = (over[0] + 5) * step if over.size else math.inf
    return _window(base, 1.0, math.inf)[0], doubling


def _density(seconds: np.ndarray, rms: np.ndarray) -> float:
    """Least-squares random-walk density: rms^2 ~ density^2 * seconds."""
    return math.sqrt(float(np.sum(rms ** 2 * seconds) / np.sum(seconds ** 2)))


def report_dropout(sequences: dict) -> None:
    max_age = defaults()['alignment.max_age']
    default = MetricCarry()
    print(f'(b) metric depth through a {DROPOUT[1] - DROPOUT[0]:g} s sparse-depth dropout '
          f'({DROPOUT[0]:g}-{DROPOUT[1]:g} s), lotus-like noise; target AbsRel during <= 2x '
          'before')
    print(f'{"scene":8} {"carry":17} {"AbsRel before":>13} {"during":>7} {"ratio":>6} '
          f'{"coverage":>8} {f"after {max_age:g} s":>11} {"carried for":>11}')
    calibration = {}
    for scene in SCENES:
        seq = sequences[(scene, 'plain', 'lotus-like')]
        frames, _ = stabilised_frames(seq)
        modes = {'uncertainty': MetricCarry(),
                 'no bound': MetricCarry(max_uncertainty=math.inf),
                 'max_age (old)': MetricCarry(mode='max_age')}
        for name, carry in modes.items():  # with the image, as the node does
            run = metric_run(seq, frames, carry, DROPOUT)
            before, _ = _window(run, 1.0, DROPOUT[0])
            during, coverage = _window(run, *DROPOUT)
            _, late = _window(run, DROPOUT[0] + max_age + 1e-6, DROPOUT[1])
            carried = run['t'][run['source'] == 'carried']
            length = f'{carried.max() - DROPOUT[0]:.1f} s' if carried.size else '-'
            print(f'{scene:8} {name:17} {before:13.2%} {during:7.2%} {during / before:6.2f} '
                  f'{coverage:8.0%} {late:11.0%} {length:>11}')
        for images in (False, True):
            frames, _ = stabilised_frames(seq, images=images)
            seconds, rms = carry_drift(seq, frames, DROPOUT[1] - DROPOUT[0])
            calibration[(scene, 'image' if images else 'same px')] = (
                seconds, rms, _density(seconds, rms), *calibrate(seq, frames))
        # how much of the drift is the double's flicker (its per-frame smooth error)
        steady = sequences[(scene, 'plain', 'steady')]
        seconds, rms = carry_drift(steady, stabilised_frames(steady)[0],
                                   DROPOUT[1] - DROPOUT[0])
        calibration[(scene, 'image, no flicker')] = (seconds, rms, _density(seconds, rms))
    print('    coverage = frames with metric output in the dropout; "after": in its part after '
          'alignment.max_age')
    print()
    print('    calibration of MetricCarry: RMS error of a scale carried from the truth, the '
          'random-walk density fitted to it, AbsRel with sparse data, the carry time at which '
          'AbsRel doubles against sparse data at the same frames (8 s carries from 2, 4, 6 s) '
          'and the uncertainty carrying has added by then at the default noise_density')
    print(f'    {"scene":8} {"maps":17} {"1 s":>6} {"2 s":>6} {"5 s":>6} {"density":>8} '
          f'{"AbsRel":>7} {"2x at":>6} {"added u":>7}')
    for (scene, maps), row in calibration.items():
        seconds, rms, density, *measured = row
        picks = [rms[np.argmin(np.abs(seconds - s))] for s in (1.0, 2.0, 5.0)]
        line = f'    {scene:8} {maps:17} ' + ' '.join(f'{v:6.1%}' for v in picks) + \
            f' {density:8.3f}'
        if measured:
            with_sparse, doubling = measured
            added = default.noise_density * math.sqrt(doubling)
            line += f' {with_sparse:7.2%} {doubling:5.1f}s {added:7.1%}'
        print(line)
    print(f'    defaults: noise_density {default.noise_density:g} /sqrt(s) (the larger fitted '
          f'with the image), max_uncertainty {default.max_uncertainty:.0%} (the smaller '
          '"added u" with the image)')
    print()


# (c) cost -------------------------------------------------------------------------------------

def report_cost(seq: Sequence, repeat: int) -> None:
    """Time stabiliser + carry per frame at 640x480: wall clock, and CPU time of all threads."""
    frames = [cv2.resize(p, (640, 480), interpolation=cv2.INTER_LINEAR) for p in seq.raw]
    images = [cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_LINEAR) for rgb in seq.rgb]
    stabilizer = TemporalStabilizer()
    carry = MetricCarry()
    aligner = _aligner()
    state = aligner.update(frames[0], seq.stamps[0],
                           sparse_depth=cv2.resize(seq.sparse[0], (640, 480),
                                                   interpolation=cv2.INTER_NEAREST))
    wall, cpu = [], []
    for k in range(repeat):
        stamp = seq.stamps[0] + 0.1 * (k + 1)
        aged = aligner.state(stamp)
        t0, c0 = time.perf_counter(), time.process_time()
        frame = stabilizer.update(frames[k % len(frames)], stamp, images[k % len(frames)])
        carry.update(aged if k else state, frame)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    wall_ms, cpu_ms = np.array(wall[3:]) * 1e3, np.array(cpu[3:]) * 1e3
    print(f'(c) per-frame cost of stabilisation (with image motion) + carry at 640x480 over '
          f'{wall_ms.size} frames (target <= 3 ms)')
    print(f'    wall clock: median {np.median(wall_ms):.2f} ms, p90 '
          f'{np.percentile(wall_ms, 90):.2f} ms; CPU time: median {np.median(cpu_ms):.2f} ms '
          f'(1 min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--width', type=int, default=160, help='render width (4:3)')
    parser.add_argument('--seconds', type=float, default=15.0)
    parser.add_argument('--fps', type=float, default=10.0)
    parser.add_argument('--repeat', type=int, default=200, help='frames timed at 640x480')
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    sequences = {}
    for scene in SCENES:
        frames = render_sequence(int(args.seconds * args.fps), width=args.width,
                                 height=args.width * 3 // 4, scene=scene, fps=args.fps)
        wavelength = 2.0 if scene == 'room' else 10.0
        fixed = [scene_error(f, f.depth, wavelength) for f in frames]
        for variant in VARIANTS:
            for noise in NOISE:
                sequences[(scene, variant, noise)] = make_sequence(frames, fixed, scene,
                                                                   variant, NOISE[noise])
        sequences[(scene, 'plain', 'steady')] = make_sequence(frames, fixed, scene, 'plain',
                                                              STEADY)
    print(f'{len(sequences)} sequences of {args.seconds:g} s at {args.fps:g} Hz, '
          f'{args.width}x{args.width * 3 // 4}, rendered in {time.perf_counter() - t0:.1f} s')
    print()
    report_consistency(sequences)
    report_dropout(sequences)
    report_cost(sequences[('room', 'plain', 'lotus-like')], args.repeat)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
