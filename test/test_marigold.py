"""
MarigoldEngine against diffusers' Marigold pipelines called directly, and its normal axes.

The pipelines are loaded here on their own from tiny random checkpoints in the diffusers
layout and called with the documented arguments; the engine must give the same numbers, with
normals converted from Marigold's axes (x right, y up, z to the viewer) to Lotus' ones.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from diffusers import MarigoldDepthPipeline, MarigoldNormalsPipeline
import numpy as np
import pytest
from tilted_plane import N_TRUE, tilted_plane  # noqa: E402
import torch

from lotus_ros.core.lotus_d import ModelLoadError
from lotus_ros.core.marigold import MarigoldEngine, marigold_to_lotus_normals
from lotus_ros.core.normals import lotus_to_optical
from lotus_ros.demo.random_models import build_unet, save_random_marigold

# Several images or members in one batch: batched CPU convolutions round differently.
BATCH_TOL = 5e-5


@pytest.fixture(scope='module')
def tiny_marigold(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('tiny_marigold')
    return {
        'depth': save_random_marigold(root / 'marigold-depth-tiny', seed=0),
        'normals': save_random_marigold(root / 'marigold-normals-tiny', task='normals', seed=1),
        'lcm': save_random_marigold(root / 'marigold-depth-lcm-tiny', seed=2, scheduler='lcm'),
        'disparity': save_random_marigold(root / 'marigold-disparity-tiny', seed=3,
                                          prediction_type='disparity'),
    }


@pytest.fixture(scope='module')
def rgb() -> np.ndarray:
    """75x101: sides not multiples of 8, so the pipeline pads."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:75, 0:101]
    base = np.stack([128 + 90 * np.sin(xx / 9.0), 128 + 90 * np.cos(yy / 7.0),
                     255 * (xx + yy) / 176], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _pipeline(cls, folder: Path):
    pipe = cls.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _engine(depth=None, normal=None, **kw) -> MarigoldEngine:
    kw = {'device': 'cpu', 'warmup': False, 'processing_resolution': 64, **kw}
    return MarigoldEngine.from_pretrained(depth and str(depth), normal and str(normal), **kw)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize('model, steps, resolution', [
    ('depth', 1, 64), ('depth', 2, 0), ('lcm', 1, 64), ('lcm', 3, 64)])
def test_depth_equals_pipeline(tiny_marigold, rgb, model, steps, resolution):
    engine = _engine(tiny_marigold[model], seed=3, num_inference_steps=steps,
                     processing_resolution=resolution)
    pred = engine.predict(rgb)
    out = _pipeline(MarigoldDepthPipeline, tiny_marigold[model])(
        rgb, num_inference_steps=steps, processing_resolution=resolution,
        generator=_generator(3))
    expected = out.prediction[0, ..., 0]
    assert pred.depth.shape == rgb.shape[:2] and pred.depth.dtype == np.float32
    assert np.ptp(expected) > 0.1  # a real map, not a constant both sides could agree on
    np.testing.assert_array_equal(pred.depth, expected)
    assert pred.depth_space == 'depth' and pred.normal is None and pred.uncertainty is None
    assert not engine.has_uncertainty and not engine.has_normal


def test_checkpoint_default_steps_and_reproducible_lcm_noise(tiny_marigold, rgb):
    """LCM adds generator noise between steps: frames repeat exactly, other seeds differ."""
    engine = _engine(tiny_marigold['lcm'], seed=4, num_inference_steps=3)
    first, second = engine.predict(rgb).depth, engine.predict(rgb).depth
    np.testing.assert_array_equal(first, second)
    engine.seed = 5
    assert np.abs(engine.predict(rgb).depth - first).max() > 1e-3
    default = _engine(tiny_marigold['depth'], seed=0).predict(rgb).depth  # 4 steps by config
    expected = _pipeline(MarigoldDepthPipeline, tiny_marigold['depth'])(
        rgb, num_inference_steps=4, processing_resolution=64, generator=_generator(0))
    np.testing.assert_array_equal(default, expected.prediction[0, ..., 0])


def test_normals_equal_pipeline_in_lotus_axes(tiny_marigold, rgb):
    pred = _engine(normal=tiny_marigold['normals'], seed=2, num_inference_steps=2).predict(rgb)
    out = _pipeline(MarigoldNormalsPipeline, tiny_marigold['normals'])(
        rgb, num_inference_steps=2, processing_resolution=64, generator=_generator(2))
    marigold = out.prediction[0]
    assert pred.depth is None and pred.normal.dtype == np.float32
    np.testing.assert_array_equal(pred.normal[..., 0], -marigold[..., 0])
    np.testing.assert_array_equal(pred.normal[..., 1:], marigold[..., 1:])


def test_batch_of_frames_and_both_tasks(tiny_marigold, rgb):
    engine = _engine(tiny_marigold['depth'], tiny_marigold['normals'], seed=6,
                     num_inference_steps=1)
    assert engine.has_depth and engine.has_normal
    other = np.ascontiguousarray(rgb[::-1])
    batch = engine.predict_batch([rgb, other])
    out = _pipeline(MarigoldDepthPipeline, tiny_marigold['depth'])(
        [rgb, other], num_inference_steps=1, processing_resolution=64, batch_size=2,
        generator=[_generator(6), _generator(6)])
    for i, image in enumerate((rgb, other)):
        np.testing.assert_array_equal(batch[i].depth, out.prediction[i, ..., 0])
        single = engine.predict(image)
        assert np.abs(batch[i].depth - single.depth).max() <= BATCH_TOL
        assert np.abs(batch[i].normal - single.normal).max() <= BATCH_TOL
    depth_only = engine.predict(rgb, normal=False)
    assert depth_only.normal is None and depth_only.timings['normal'] == 0.0
    assert depth_only.timings['total'] >= depth_only.timings['depth'] > 0


def test_normal_ensemble_equals_pipeline(tiny_marigold, rgb):
    engine = _engine(normal=tiny_marigold['normals'], seed=1, num_inference_steps=1,
                     ensemble_size=3)
    pred = engine.predict(rgb)
    out = _pipeline(MarigoldNormalsPipeline, tiny_marigold['normals'])(
        rgb, num_inference_steps=1, processing_resolution=64, ensemble_size=3, batch_size=3,
        generator=[_generator(1 + k) for k in range(3)])
    np.testing.assert_array_equal(pred.normal, marigold_to_lotus_normals(out.prediction[0]))
    assert pred.uncertainty is None and not engine.has_uncertainty


def test_depth_ensemble_mean_and_std_equal_pipeline(tiny_marigold, rgb):
    pytest.importorskip('scipy')
    engine = _engine(tiny_marigold['depth'], seed=7, num_inference_steps=1, ensemble_size=3)
    assert engine.has_uncertainty
    pred = engine.predict(rgb)
    out = _pipeline(MarigoldDepthPipeline, tiny_marigold['depth'])(
        rgb, num_inference_steps=1, processing_resolution=64, ensemble_size=3, batch_size=3,
        generator=[_generator(7 + k) for k in range(3)], ensembling_kwargs={'reduction': 'mean'},
        output_uncertainty=True)
    np.testing.assert_array_equal(pred.depth, out.prediction[0, ..., 0])
    np.testing.assert_array_equal(pred.uncertainty, out.uncertainty[0, ..., 0])
    assert np.mean(pred.uncertainty > 1e-4) > 0.9


def test_depth_ensemble_without_scipy_is_refused(tiny_marigold):
    if importlib.util.find_spec('scipy') is not None:
        pytest.skip('scipy is installed: the ensemble test covers this case')
    with pytest.raises(ImportError, match='scipy'):
        _engine(tiny_marigold['depth'], ensemble_size=2)


def test_depth_space(tiny_marigold):
    assert _engine(tiny_marigold['disparity']).depth_space == 'disparity'
    assert _engine(tiny_marigold['depth'], depth_space='disparity').depth_space == 'disparity'
    assert _engine(normal=tiny_marigold['normals']).depth_space is None


def test_wrong_checkpoints_and_arguments(tiny_marigold, tiny_lotus):
    with pytest.raises(ModelLoadError, match='MarigoldNormalsPipeline'):
        _engine(tiny_marigold['depth'], tiny_marigold['depth'])
    with pytest.raises(ModelLoadError, match='LotusDPipeline|scheduler'):
        _engine(tiny_lotus['depth'])
    with pytest.raises(ValueError, match='multiple of 8'):
        _engine(tiny_marigold['depth'], processing_resolution=100)
    with pytest.raises(ValueError, match='rgb'):
        _engine(tiny_marigold['depth']).predict(np.zeros((16, 16), np.uint8))


def test_fronto_parallel_wall_and_floor():
    """Diffusers' examples: [0, 0, 1] faces the viewer; a surface pointing up has +y."""
    wall = np.broadcast_to(np.float32([0.0, 0.0, 1.0]), (6, 8, 3))
    floor = np.broadcast_to(np.float32([0.0, 1.0, 0.0]), (6, 8, 3))
    np.testing.assert_allclose(lotus_to_optical(marigold_to_lotus_normals(wall)),
                               np.broadcast_to([0.0, 0.0, -1.0], wall.shape), atol=1e-6)
    # Optical frame: y points down, so "up" is -y.
    np.testing.assert_allclose(lotus_to_optical(marigold_to_lotus_normals(floor)),
                               np.broadcast_to([0.0, -1.0, 0.0], floor.shape), atol=1e-6)


def test_tilted_plane_normal_matches_geometry():
    pts, geo = tilted_plane()
    n_true = N_TRUE
    # What Marigold would output for this plane: x right, y up, z towards the viewer.
    marigold = np.broadcast_to(n_true * [1.0, -1.0, -1.0], (29, 39, 3)).astype(np.float32)
    np.testing.assert_allclose(lotus_to_optical(marigold_to_lotus_normals(marigold)), geo,
                               atol=1e-3)


def test_random_marigold_checkpoint_layout(tiny_marigold):
    """The pipeline configs of prs-eth/marigold-depth-v1-1, -normals-v1-1, -depth-lcm-v1-0."""
    depth = json.loads((tiny_marigold['depth'] / 'model_index.json').read_text())
    normals = json.loads((tiny_marigold['normals'] / 'model_index.json').read_text())
    lcm = json.loads((tiny_marigold['lcm'] / 'model_index.json').read_text())
    assert depth['_class_name'] == 'MarigoldDepthPipeline' and depth['prediction_type'] == 'depth'
    assert depth['scale_invariant'] and depth['shift_invariant']
    assert depth['scheduler'] == ['diffusers', 'DDIMScheduler']
    assert (depth['default_denoising_steps'], depth['default_processing_resolution']) == (4, 768)
    assert normals['_class_name'] == 'MarigoldNormalsPipeline' and normals['use_full_z_range']
    assert lcm['scheduler'] == ['diffusers', 'LCMScheduler']
    assert lcm['default_denoising_steps'] == 1
    unet = json.loads((tiny_marigold['depth'] / 'unet' / 'config.json').read_text())
    assert unet['in_channels'] == 8 and unet['class_embed_type'] is None
    with torch.device('meta'):
        full = build_unet('full', in_channels=8, task_embedding=False)
    # SD2's UNet with conv_in widened by 4 input channels (3x3, 320 out).
    assert sum(p.numel() for p in full.parameters()) == 865_910_724 + 320 * 4 * 9
