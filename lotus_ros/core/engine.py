"""
The one engine interface: what a depth/normal backend offers the node, and how one is built.

The node, the bag tool and the benchmarks depend only on `Engine` and `Prediction`;
`load_engine(params)` turns the node's parameter names into a backend, so every caller builds
engines the same way; `release_memory()` frees what a dropped engine held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import gc
import importlib
import sys
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ['ENGINE_DEFAULTS', 'Engine', 'ModelLoadError', 'Prediction', 'load_engine',
           'release_memory']


class ModelLoadError(Exception):
    """A checkpoint could not be found or loaded; the message names the path and what is wrong."""


@dataclass
class Prediction:
    """One image's result; a task that was not requested (or not loaded) is None."""

    depth: np.ndarray | None            # HxW float32, affine to depth_space
    depth_space: str | None             # 'disparity' or 'depth'
    normal: np.ndarray | None           # HxWx3 float32, Lotus convention (core.normals)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of the batch
    uncertainty: np.ndarray | None = None  # HxW float32 std of `depth`, where the backend has one


@runtime_checkable
class Engine(Protocol):
    """What a backend must offer; LotusEngine and the benchmark/test double implement it."""

    device: Any            # torch.device or a plain label ('cpu')
    dtype: Any
    depth_space: str | None

    @property
    def has_depth(self) -> bool: ...

    @property
    def has_normal(self) -> bool: ...

    @property
    def has_uncertainty(self) -> bool: ...

    def predict_batch(self, images: list[np.ndarray], *, depth: bool = True,
                      normal: bool = True) -> list[Prediction]:
        """Predict for same-size HxWx3 uint8 RGB images in one call."""

    def memory_stats(self) -> dict[str, float]:
        """Device memory in MB ({} where the process RSS is the measure)."""


def cuda_memory_stats(device) -> dict[str, float]:
    """CUDA memory of `device` in MB; {} on CPU, where the process RSS is the measure."""
    if getattr(device, 'type', str(device)) != 'cuda':
        return {}
    import torch

    mb = 1024.0 * 1024.0
    return {'allocated_mb': torch.cuda.memory_allocated(device) / mb,
            'reserved_mb': torch.cuda.memory_reserved(device) / mb,
            'peak_mb': torch.cuda.max_memory_allocated(device) / mb}


def warmup_frame(warmup: bool | tuple[int, int], device,
                 resolution: int) -> tuple[np.ndarray, int]:
    """
    Return the (gray image, processing resolution) an engine runs once at load.

    An explicit (height, width), else on CUDA a 480x640 frame at the engine's resolution (the
    kernels a camera will need get picked and cached), else a small native-size frame on CPU.
    """
    if isinstance(warmup, tuple):
        shape = warmup
    elif getattr(device, 'type', str(device)) == 'cuda':
        shape = (480, 640)
    else:
        shape, resolution = (64, 64), 0
    return np.full((*shape, 3), 128, np.uint8), resolution


# The engine's parameters under the node's names, for keys a caller leaves out (no checkpoint
# is loaded unless named; the node's own defaults name the published ones).
ENGINE_DEFAULTS: dict[str, Any] = {
    'backend': 'auto', 'depth_model': None, 'normal_model': None, 'device': 'auto',
    'dtype': 'auto', 'processing_resolution': 768, 'resize_mode': 'registered',
    'local_files_only': False,
    'depth_space': None, 'compile': False, 'seed': 0, 'ensemble_size': 1,
    'num_inference_steps': 0, 'engine_factory': '',
}


def load_engine(params: dict[str, Any]) -> Engine:
    """
    Build the engine the parameters name (missing keys take ENGINE_DEFAULTS).

    `engine_factory` ('module:callable', called with the full parameter dict) exists for tests
    and benchmarks that load a model double into a real node process; products leave it empty.
    """
    p = {**ENGINE_DEFAULTS, **params}
    factory = p['engine_factory']
    if factory:
        module_name, _, attr = factory.partition(':')
        if not attr:
            raise ModelLoadError(f"engine_factory '{factory}' must look like 'module:callable'")
        try:
            build = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelLoadError(f"engine_factory '{factory}' not found: {exc}") from exc
        return build(p)
    from lotus_ros.core.backends import build_engine

    return build_engine(p)


def release_memory() -> None:
    """
    Free the memory of engines nobody references any more (call after dropping one).

    gc collects the reference cycles torch modules form; the CUDA caching allocator keeps freed
    blocks for reuse until empty_cache returns them to the driver (other processes see them).
    """
    gc.collect()
    torch = sys.modules.get('torch')  # an engine that never imported torch holds no device memory
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
