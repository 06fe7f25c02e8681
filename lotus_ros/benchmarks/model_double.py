"""
Test double for LotusEngine: knows the true answer for synthetic frames.

The node loads it with `engine_factory:=model_double:make_engine` (test/ on PYTHONPATH). For an
image whose RGB bytes hash to a registered synthetic frame it returns the frame's true relative
disparity normalised to [0, 1] plus seeded Gaussian noise (and the true normals in Lotus axes);
for any other image a smooth ramp. Configuration comes from the environment so a test can set it
for the node process: LOTUS_DOUBLE_TRUTH (npz written by save_truth), LOTUS_DOUBLE_DELAY (s per
predict), LOTUS_DOUBLE_NOISE (std of the disparity noise), LOTUS_DOUBLE_NORMAL (0 disables the
normal head), LOTUS_DOUBLE_FAIL (non-empty: raise like a model that cannot load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import os
import time

import numpy as np

# engine_factory value that makes lotus_node load this double (tests and benchmarks only).
DOUBLE_FACTORY = 'lotus_ros.benchmarks.model_double:make_engine'


@dataclass
class Prediction:
    depth: np.ndarray | None
    depth_space: str | None
    normal: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)


def rgb_hash(rgb: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()


def relative_disparity(depth: np.ndarray) -> np.ndarray:
    """1/depth scaled to [0, 1] by its maximum (sky, depth +inf, has disparity 0)."""
    with np.errstate(divide='ignore'):
        disp = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, 0.0)
    return (disp / disp.max()).astype(np.float32)


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
    def __init__(self, *, truth_path: str | None = None, delay: float = 0.0,
                 noise: float = 0.003, seed: int = 0, normal: bool = True):
        self.delay = float(delay)
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self.has_depth = True
        self.has_normal = bool(normal)
        self.depth_space = 'disparity'
        self.device = 'cpu'
        self.dtype = 'float32'
        self.calls = 0
        self._truth: dict[str, int] = {}
        self._disp = self._normal = None
        if truth_path:
            data = np.load(truth_path)
            self._truth = {str(h): i for i, h in enumerate(data['hashes'])}
            self._disp, self._normal = data['disparity'], data['normal']

    def memory_stats(self) -> dict[str, float]:
        return {}

    def predict(self, rgb: np.ndarray, *, depth: bool = True, normal: bool = True) -> Prediction:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError('rgb must be HxWx3')
        t0 = time.perf_counter()
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        h, w = rgb.shape[:2]
        idx = self._truth.get(rgb_hash(rgb)) if self._truth else None
        if idx is not None and self._disp[idx].shape == (h, w):
            disp = self._disp[idx].copy()
            nrm = self._normal[idx].copy()
        else:
            ramp = np.linspace(0.2, 1.0, h, dtype=np.float32)[:, None]
            disp = np.repeat(ramp, w, axis=1)
            nrm = np.zeros((h, w, 3), np.float32)
            nrm[..., 1] = 1.0  # optical -y: a floor seen from above
        if self.noise:
            disp = np.clip(disp + self.rng.normal(0, self.noise, disp.shape).astype(np.float32),
                           0.0, 1.0)
        dt = time.perf_counter() - t0
        return Prediction(depth=disp if depth else None,
                          depth_space='disparity' if depth else None,
                          normal=nrm if (normal and self.has_normal) else None,
                          timings={'total': dt, 'unet_depth': dt})


def make_engine(params: dict) -> ModelDouble:
    env = os.environ
    if env.get('LOTUS_DOUBLE_FAIL'):
        raise RuntimeError(f"model double told to fail loading '{params.get('depth_model')}'")
    return ModelDouble(truth_path=env.get('LOTUS_DOUBLE_TRUTH') or None,
                       delay=float(env.get('LOTUS_DOUBLE_DELAY', '0')),
                       noise=float(env.get('LOTUS_DOUBLE_NOISE', '0.003')),
                       normal=env.get('LOTUS_DOUBLE_NORMAL', '1') != '0')
