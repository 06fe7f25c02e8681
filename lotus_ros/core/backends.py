"""
Backend selection: build the Lotus-D, Lotus-G or Marigold engine a parameter dict asks for.

'auto' reads the checkpoint (model_index.json, unet/config.json) to decide and logs why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lotus_ros.core.engine import ModelLoadError
from lotus_ros.core.lotus_d import LotusEngine, resolve_checkpoint

__all__ = ['BACKENDS', 'build_engine', 'detect_backend']

_LOG = logging.getLogger(__name__)

BACKENDS = ('auto', 'lotus-d', 'lotus-g', 'marigold')
# model_index.json `_class_name` of the published checkpoints (the Lotus v2 ones carry the
# names of the authors' training pipelines; 'MarigoldPipeline' is the first Marigold name).
_BY_PIPELINE = {
    'LotusDPipeline': 'lotus-d', 'DirectRegressionPipeline': 'lotus-d',
    'LotusGPipeline': 'lotus-g', 'DirectDiffusionY0Pipeline': 'lotus-g',
    'MarigoldDepthPipeline': 'marigold', 'MarigoldNormalsPipeline': 'marigold',
    'MarigoldPipeline': 'marigold',
}
# (UNet in_channels, task projection): Lotus-D sees the image latent, Lotus-G and Marigold the
# image and the noise latents; only Lotus has the task switcher.
_BY_UNET = {(4, True): 'lotus-d', (8, True): 'lotus-g', (8, False): 'marigold'}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def detect_backend(model: str, local_files_only: bool = False) -> tuple[str, str]:
    """
    Return (backend, reason) for one checkpoint from model_index.json and unet/config.json.

    The pipeline class name decides, except between the two Lotus families, where the UNet's
    input channels do (4: Lotus-D, 8: Lotus-G); an unknown class name falls back to the UNet.
    """
    folder = resolve_checkpoint(model, local_files_only)
    class_name = _read_json(folder / 'model_index.json').get('_class_name')
    unet = _read_json(folder / 'unet' / 'config.json')
    in_channels = unet.get('in_channels')
    projection = unet.get('class_embed_type') == 'projection'
    by_name = _BY_PIPELINE.get(class_name)
    by_unet = _BY_UNET.get((in_channels, projection))
    named = f'model_index.json _class_name {class_name!r}'
    shaped = f'unet in_channels={in_channels}' + (' with the task projection' if projection
                                                  else '')
    if by_name is not None and by_unet in (None, by_name):
        return by_name, named if by_unet is None else f'{named}, {shaped}'
    if by_unet is not None and (by_name is None or {by_name, by_unet} <= {'lotus-d', 'lotus-g'}):
        return by_unet, f'{shaped} ({named})'
    raise ModelLoadError(f'cannot tell which backend checkpoint {model} needs ({named}, '
                         f'{shaped}); set backend to one of {", ".join(BACKENDS[1:])}')


def _auto_backend(depth_model: str | None, normal_model: str | None,
                  local_files_only: bool) -> str:
    found = {role: (model, *detect_backend(model, local_files_only))
             for role, model in (('depth_model', depth_model), ('normal_model', normal_model))
             if model is not None}
    for role, (model, backend, reason) in found.items():
        _LOG.info("backend 'auto' chose %s for %s %s: %s", backend, role, model, reason)
    backends = {backend for _, backend, _ in found.values()}
    if len(backends) > 1:
        raise ValueError('one engine runs one backend, but ' + ' and '.join(
            f'{role} {model} is {backend}' for role, (model, backend, _) in found.items())
            + '; use checkpoints of one family')
    return backends.pop()


def build_engine(p: dict[str, Any]):
    """
    Build the backend for a complete parameter dict (core.engine.load_engine fills it in).

    `backend` 'auto' decides per checkpoint (see detect_backend) and logs its choice. `seed`
    and `ensemble_size` drive Lotus-G's and Marigold's noise draws; `num_inference_steps` is
    Marigold's (0: the checkpoint's default). Empty model names disable that task.
    """
    depth_model, normal_model = p['depth_model'] or None, p['normal_model'] or None
    if depth_model is None and normal_model is None:
        raise ValueError('depth_model and normal_model are both empty: nothing to run')
    backend = p['backend']
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
    if backend == 'auto':
        backend = _auto_backend(depth_model, normal_model, p['local_files_only'])
    common = {'device': p['device'], 'dtype': p['dtype'],
              'processing_resolution': p['processing_resolution'],
              'local_files_only': p['local_files_only'],
              'depth_space': p['depth_space'] or None, 'compile': p['compile']}
    steps, ensemble_size = p['num_inference_steps'], p['ensemble_size']
    if backend in ('lotus-d', 'lotus-g') and steps:
        _LOG.warning('num_inference_steps=%s is ignored: %s runs one step', steps, backend)
    if backend == 'lotus-d':
        if ensemble_size != 1:
            raise ValueError(f'ensemble_size={ensemble_size} needs a stochastic backend '
                             "('lotus-g' or 'marigold'): Lotus-D gives one deterministic draw")
        return LotusEngine.from_pretrained(depth_model, normal_model,
                                           resize_mode=p['resize_mode'], **common)
    if backend == 'lotus-g':
        from lotus_ros.core.lotus_g import LotusGEngine

        return LotusGEngine.from_pretrained(depth_model, normal_model, seed=p['seed'],
                                            ensemble_size=ensemble_size,
                                            resize_mode=p['resize_mode'], **common)
    from lotus_ros.core.marigold import MarigoldEngine

    return MarigoldEngine.from_pretrained(depth_model, normal_model, seed=p['seed'],
                                          ensemble_size=ensemble_size,
                                          num_inference_steps=steps or None, **common)
