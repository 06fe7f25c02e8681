"""
A model double behind the Engine interface, for node tests and node benchmarks (never products).

lotus_node loads it with `engine_factory:=lotus_ros.benchmarks.model_double:make_engine`. For an
image whose RGB bytes hash to a registered synthetic frame it returns the frame's true relative
disparity normalised to [0, 1] plus seeded Gaussian noise (and the true normals in Lotus axes);
for any other image a smooth ramp (far at the top, near at the bottom). It can sleep per call, the
way a CUDA wait releases the GIL, so throughput and overlap can be measured without a GPU.
Configuration comes from the environment so a test can set it for the node process:
LOTUS_DOUBLE_TRUTH (npz written by save_truth), LOTUS_DOUBLE_DELAY (s per predict_batch call),
LOTUS_DOUBLE_DELAY_PER_IMAGE (s more per image of a batch), LOTUS_DOUBLE_NOISE (std of the
disparity noise), LOTUS_DOUBLE_NORMAL (0 disables the normal head), LOTUS_DOUBLE_FAIL (non-empty:
raise like a model that cannot load), LOTUS_DOUBLE_REPORT (a JSON file kept up to date with the
doubles constructed and alive in the process and the model calls made, with the images and a
histogram of batch sizes, so a test in another process can tell that inference stopped, that
the node let go of its engine and how it batched the frames).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import weakref

import numpy as np

from lotus_ros.core.engine import ModelLoadError, Prediction

# engine_factory value that makes lotus_node load this double (tests and benchmarks only).
DOUBLE_FACTORY = 'lotus_ros.benchmarks.model_double:make_engine'


class Report:
    """Doubles and predict_batch calls in this process, rewritten to `path` per change."""

    def __init__(self, path: str):
        self.path = path
        # batch_sizes: images per call (a JSON key, so a string) -> calls
        self.counts = {'alive': 0, 'constructed': 0, 'calls': 0, 'images': 0, 'batch_sizes': {}}
        self._lock = threading.Lock()

    def add(self, key: str, delta: int) -> None:
        with self._lock:
            self.counts[key] += delta
            self._write()

    def add_call(self, images: int) -> None:
        """Count one predict_batch call of `images` images."""
        with self._lock:
            self.counts['calls'] += 1
            self.counts['images'] += images
            sizes = self.counts['batch_sizes']
            sizes[str(images)] = sizes.get(str(images), 0) + 1
            self._write()

    def _write(self) -> None:
        tmp = f'{self.path}.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.counts, f)
        os.replace(tmp, self.path)  # a reader never sees a half-written file


_reports: dict[str, Report] = {}  # one per path: every double of the process counts in it


def report_at(path: str) -> Report:
    if path not in _reports:
        _reports[path] = Report(path)
    return _reports[path]


def rgb_hash(rgb: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()


def relative_disparity(depth: np.ndarray) -> np.ndarray:
    """1/depth scaled to [0, 1] by its maximum (sky, depth +inf, has disparity 0)."""
    with np.errstate(divide='ignore'):
        disp = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, 0.0)
    return (disp / disp.max()).astype(np.float32)


def ramp(height: int, width: int) -> np.ndarray:
    """Relative disparity of a floor-like scene: far (0.2) at the top, near (1.0) at the bottom."""
    return np.repeat(np.linspace(0.2, 1.0, height, dtype=np.float32)[:, None], width, axis=1)


def save_truth(frames, path) -> None:
    """Store what the double should answer for these synthetic frames."""
    normals = []
    for f in frames:
        n = f.normal if f.normal is not None else np.zeros((f.height, f.width, 3))
        # Lotus axes are the optical frame negated (lotus_to_optical: n = -n_l / |n_l|)
        normals.append(-np.nan_to_num(n.astype(np.float32)))
    np.savez(path, hashes=np.array([rgb_hash(f.rgb) for f in frames]),
             disparity=np.stack([relative_disparity(f.depth) for f in frames]),
             normal=np.stack(normals))


class ModelDouble:
    """Implements lotus_ros.core.engine.Engine; counts calls and batch sizes for the tests."""

    has_depth = True
    has_uncertainty = False
    device = 'cpu'
    dtype = 'float32'

    def __init__(self, *, truth_path: str | None = None, delay: float = 0.0,
                 delay_per_image: float = 0.0, noise: float = 0.003, seed: int = 0,
                 normal: bool = True, depth_space: str = 'disparity',
                 report_path: str | None = None):
        self.delay = float(delay)
        self.delay_per_image = float(delay_per_image)
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self.has_normal = bool(normal)
        self.depth_space = depth_space
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()
        self._truth: dict[str, int] = {}
        self._disp = self._normal = None
        self._ramps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.report = report_at(report_path) if report_path else None
        if self.report is not None:
            self.report.add('constructed', 1)
            self.report.add('alive', 1)
            # counts down when the last reference goes; not at exit, when every object goes
            weakref.finalize(self, self.report.add, 'alive', -1).atexit = False
        if truth_path:
            data = np.load(truth_path)
            self._truth = {str(h): i for i, h in enumerate(data['hashes'])}
            self._disp, self._normal = data['disparity'], data['normal']

    def memory_stats(self) -> dict[str, float]:
        return {}

    def _ramp(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if (h, w) not in self._ramps:
            nrm = np.zeros((h, w, 3), np.float32)
            nrm[..., 1] = 1.0  # optical -y: a floor seen from above
            self._ramps[(h, w)] = (ramp(h, w), nrm)
        return self._ramps[(h, w)]

    def _answer(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError('rgb must be HxWx3')
        h, w = rgb.shape[:2]
        idx = self._truth.get(rgb_hash(rgb)) if self._truth else None
        if idx is not None and self._disp[idx].shape == (h, w):
            disp, nrm = self._disp[idx], self._normal[idx]
        else:
            disp, nrm = self._ramp(h, w)
        if self.noise:
            disp = np.clip(disp + self.rng.normal(0, self.noise, disp.shape).astype(np.float32),
                           0.0, 1.0)
        return disp, nrm

    def predict_batch(self, images: list[np.ndarray], *, depth: bool = True,
                      normal: bool = True, device_outputs: bool = False) -> list[Prediction]:
        """Answer like the engine would (host arrays: the double has no device)."""
        t0 = time.perf_counter()
        with self._lock:
            self.calls += 1
            self.batch_sizes.append(len(images))
            answers = [self._answer(rgb) for rgb in images]
        if self.report is not None:
            self.report.add_call(len(images))
        wait = self.delay + self.delay_per_image * len(images)
        if wait:
            time.sleep(wait)  # releases the GIL like a CUDA synchronise
        dt = time.perf_counter() - t0
        normal = normal and self.has_normal
        return [Prediction(depth=disp if depth else None,
                           depth_space=self.depth_space if depth else None,
                           normal=nrm if normal else None,
                           timings={'total': dt, 'unet_depth': dt})
                for disp, nrm in answers]


def make_engine(params: dict) -> ModelDouble:
    env = os.environ
    if env.get('LOTUS_DOUBLE_FAIL'):
        raise ModelLoadError(f"model double told to fail loading '{params.get('depth_model')}'")
    return ModelDouble(truth_path=env.get('LOTUS_DOUBLE_TRUTH') or None,
                       delay=float(env.get('LOTUS_DOUBLE_DELAY', '0')),
                       delay_per_image=float(env.get('LOTUS_DOUBLE_DELAY_PER_IMAGE', '0')),
                       noise=float(env.get('LOTUS_DOUBLE_NOISE', '0.003')),
                       normal=env.get('LOTUS_DOUBLE_NORMAL', '1') != '0',
                       depth_space=params.get('depth_space') or 'disparity',
                       report_path=env.get('LOTUS_DOUBLE_REPORT') or None)
