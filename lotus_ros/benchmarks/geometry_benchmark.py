"""
Time the numeric geometry path (alignment, apply, back-projection, packing) and print a table.

Usage: python -m lotus_ros.benchmarks.geometry_benchmark [--repeat 50] [--width 640] [--height 480]
Targets from the design: alignment <= 2 ms at 1k and <= 10 ms at 10k candidates, dense steps a
few ms at 640x480, on one core.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from lotus_ros.core.alignment import MetricAligner, apply_affine, fit_affine
from lotus_ros.core.geometry import Intrinsics, backproject
from lotus_ros.core.normals import lotus_to_optical
from lotus_ros.core.pointcloud import pack_cloud, pack_depth_cloud
from lotus_ros.core.visualization import colorize_depth


def _samples(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disparity-affine candidates with 1 % noise and 30 % outliers (random and bleeding)."""
    p = rng.uniform(0.02, 0.98, n)
    z = 1.0 / (2.0 * p + 0.05) * (1 + 0.01 * rng.normal(size=n))
    k = int(0.3 * n)
    z[:k // 2] = rng.uniform(0.3, 20.0, k // 2)
    z[k // 2:k] *= rng.choice([0.5, 2.0], k - k // 2)
    return p, z


def _time(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 90))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m lotus_ros.benchmarks.geometry_benchmark',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('--repeats', type=int, default=50, help='timed runs per case')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.width < 8 or args.height < 8:
        parser.error('need --repeat >= 1 and an image of at least 8x8')

    rng = np.random.default_rng(args.seed)
    w, h = args.width, args.height
    intr = Intrinsics(0.8 * w, 0.8 * w, w / 2 - 0.5, h / 2 - 0.5, w, h)
    vv, uu = np.mgrid[0:h, 0:w]
    pred = (0.1 + 0.8 * vv / h + 0.05 * np.sin(uu / 40.0)).astype(np.float32)
    depth = apply_affine(pred, 2.0, 0.05, space='disparity', z_min=0.1, z_max=100.0)
    sparse = np.full((h, w), np.nan, np.float32)
    lin = rng.choice(h * w, size=min(5000, h * w // 4), replace=False)
    sparse.ravel()[lin] = depth.ravel()[lin] * (1 + 0.01 * rng.normal(size=lin.size))
    points = backproject(depth, intr)
    colors = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    normals = lotus_to_optical(np.broadcast_to([0.1, 0.2, 0.9], (h, w, 3)))
    p1k, z1k = _samples(1000, rng)
    p10k, z10k = _samples(10000, rng)
    aligner = MetricAligner('disparity')
    frame = [0]

    cloud = points.reshape(-1, 3)[rng.choice(h * w, size=min(20000, h * w // 4), replace=False)]

    def update():
        frame[0] += 1
        return aligner.update(pred, 0.1 * frame[0], sparse_depth=sparse)

    def update_points():
        frame[0] += 1
        return aligner.update(pred, 0.1 * frame[0], points=cloud, intrinsics=intr)

    dense = np.where(depth < 100.0, depth, np.nan).astype(np.float32)   # a depth camera
    lidar = np.full((h, w), np.nan, np.float32)                           # 64 rows of returns
    rows = np.linspace(h // 4, h - 1, 64).astype(int)
    lidar[rows] = dense[rows]
    size = f'{w}x{h}'
    cases = [
        ('MetricAligner.candidates (sparse map)', f'{size}, {lin.size} px',
         lambda: aligner.candidates(pred, sparse_depth=sparse), '3'),
        ('MetricAligner.candidates (sparse map)',
         f'{size}, {int(np.isfinite(lidar).sum())} px',
         lambda: aligner.candidates(pred, sparse_depth=lidar), '3'),
        ('MetricAligner.candidates (dense map)', f'{size}, {int(np.isfinite(dense).sum())} px',
         lambda: aligner.candidates(pred, sparse_depth=dense), '-'),
        ('fit_affine (30% outliers)', 'N=1000', lambda: fit_affine(p1k, z1k), '2'),
        ('fit_affine (30% outliers)', 'N=10000', lambda: fit_affine(p10k, z10k), '10'),
        ('MetricAligner.update (sparse map)', f'{size}, {lin.size} px', update, '-'),
        ('MetricAligner.update (points)', f'{size}, {len(cloud)} pts', update_points, '-'),
        ('apply_affine disparity', size,
         lambda: apply_affine(pred, 2.0, 0.05, space='disparity', z_min=0.1, z_max=100.0),
         'few'),
        ('backproject', size, lambda: backproject(depth, intr), 'few'),
        ('pack_cloud xyz+rgb organized', size, lambda: pack_cloud(points, rgb=colors), 'few'),
        ('pack_cloud xyz+rgb+normals organized', size,
         lambda: pack_cloud(points, rgb=colors, normals=normals), 'few'),
        ('pack_cloud xyz+rgb unorganized stride 2', size,
         lambda: pack_cloud(points, rgb=colors, organized=False, stride=2), 'few'),
        ('pack_depth_cloud xyz+rgb organized', size,
         lambda: pack_depth_cloud(depth, intr, rgb=colors), 'few'),
        ('pack_depth_cloud xyz+rgb+normals compact', size,
         lambda: pack_depth_cloud(depth, intr, rgb=colors, normals=normals, layout='compact'),
         'few'),
        ('lotus_to_optical', size, lambda: lotus_to_optical(normals), '-'),
        ('colorize_depth turbo', size, lambda: colorize_depth(depth), '-'),
    ]
    rows = [(name, n, *_time(fn, args.repeats), target) for name, n, fn, target in cases]
    header = ('case', 'size', 'median ms', 'p90 ms', 'target ms')
    widths = [max(len(header[0]), *(len(r[0]) for r in rows)),
              max(len(header[1]), *(len(r[1]) for r in rows))]
    print(f'{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:>9}  {header[3]:>8}'
          f'  {header[4]:>9}')
    for name, n, med, p90, target in rows:
        print(f'{name:<{widths[0]}}  {n:<{widths[1]}}  {med:9.2f}  {p90:8.2f}  {target:>9}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
