"""load_engine: which engine a parameter dict builds, from the backend name or the checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
import shutil

import pytest
import torch

from lotus_ros.core.backends import detect_backend
from lotus_ros.core.engine import load_engine
from lotus_ros.core.lotus_d import LotusEngine, ModelLoadError
from lotus_ros.core.lotus_g import LotusGEngine
from lotus_ros.core.marigold import MarigoldEngine
from lotus_ros.demo.random_models import save_random_lotus, save_random_marigold


@pytest.fixture(scope='module')
def models(tmp_path_factory, tiny_lotus) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('backends')
    return {
        'lotus-d': tiny_lotus['depth'],
        'lotus-d-normal': tiny_lotus['normal'],
        'lotus-g': save_random_lotus(root / 'lotus-g', seed=4, generative=True),
        'marigold': save_random_marigold(root / 'marigold-depth'),
        'marigold-normals': save_random_marigold(root / 'marigold-normals', task='normals'),
    }


def _renamed(folder: Path, target: Path, class_name: str) -> Path:
    """Copy a checkpoint, naming another pipeline class in its model_index.json."""
    shutil.copytree(folder, target)
    index = json.loads((target / 'model_index.json').read_text())
    (target / 'model_index.json').write_text(json.dumps({**index, '_class_name': class_name}))
    return target


def test_issue_example_builds_lotus_g(models):
    engine = load_engine({'depth_model': str(models['lotus-g']), 'backend': 'lotus-g', 'seed': 7,
                          'device': 'cpu', 'dtype': 'float32', 'processing_resolution': 768})
    assert type(engine) is LotusGEngine
    assert engine.seed == 7 and engine.ensemble_size == 1 and engine.processing_resolution == 768
    assert engine.device == torch.device('cpu') and engine.dtype == torch.float32
    assert engine.has_depth and not engine.has_normal and not engine.has_uncertainty


@pytest.mark.parametrize('depth, normal, expected', [
    ('lotus-d', 'lotus-d-normal', LotusEngine),
    ('lotus-g', None, LotusGEngine),
    ('marigold', 'marigold-normals', MarigoldEngine),
    (None, 'marigold-normals', MarigoldEngine),
])
def test_auto_reads_the_checkpoint_and_logs_why(models, caplog, depth, normal, expected):
    params = {'depth_model': depth and str(models[depth]),
              'normal_model': normal and str(models[normal]), 'device': 'cpu'}
    with caplog.at_level(logging.INFO, logger='lotus_ros.core.backends'):
        engine = load_engine(params)
    assert type(engine) is expected
    assert engine.has_depth == (depth is not None) and engine.has_normal == (normal is not None)
    chosen = [r.getMessage() for r in caplog.records if "backend 'auto'" in r.getMessage()]
    assert len(chosen) == (depth is not None) + (normal is not None)
    assert all('_class_name' in message for message in chosen)


@pytest.mark.parametrize('source, class_name, expected', [
    ('lotus-d', 'DirectRegressionPipeline', 'lotus-d'),      # jingheya/lotus-depth-d-v2-0-...
    ('lotus-g', 'DirectDiffusionY0Pipeline', 'lotus-g'),     # jingheya/lotus-depth-g-v2-0-...
    ('lotus-g', 'LotusDPipeline', 'lotus-g'),                # 8 UNet inputs decide: Lotus-G
    ('lotus-g', 'StableDiffusionPipeline', 'lotus-g'),       # unknown class: the UNet decides
    ('marigold', 'SomePipeline', 'marigold'),
    ('marigold', 'MarigoldPipeline', 'marigold'),            # first Marigold checkpoints
])
def test_detect_backend(models, tmp_path, source, class_name, expected):
    folder = _renamed(models[source], tmp_path / 'renamed', class_name)
    backend, reason = detect_backend(str(folder))
    assert backend == expected
    assert class_name in reason and 'in_channels' in reason


def test_contradicting_checkpoints_are_refused(models, tmp_path):
    with pytest.raises(ModelLoadError, match='set backend'):
        detect_backend(str(_renamed(models['lotus-g'], tmp_path / 'g', 'MarigoldDepthPipeline')))
    with pytest.raises(ValueError, match='one backend'):
        load_engine({'depth_model': str(models['lotus-d']),
                     'normal_model': str(models['marigold-normals']), 'device': 'cpu'})


def test_draw_parameters_reach_the_engines(models):
    lotus_g = load_engine({'depth_model': str(models['lotus-g']), 'ensemble_size': 3,
                           'seed': 2, 'device': 'cpu', 'processing_resolution': 64})
    assert lotus_g.ensemble_size == 3 and lotus_g.seed == 2 and lotus_g.has_uncertainty
    default_steps = load_engine({'depth_model': str(models['marigold']), 'device': 'cpu',
                                 'num_inference_steps': 0, 'seed': 5})
    assert default_steps.num_inference_steps is None and default_steps.seed == 5
    two_steps = load_engine({'normal_model': str(models['marigold-normals']), 'device': 'cpu',
                             'num_inference_steps': 2, 'depth_model': ''})
    assert two_steps.num_inference_steps == 2 and not two_steps.has_depth


def test_defaults_for_missing_keys(models):
    engine = load_engine({'depth_model': str(models['lotus-d'])})
    assert type(engine) is LotusEngine and engine.processing_resolution == 768
    assert not engine.has_normal and engine.depth_space == 'disparity'
    depth = load_engine({'depth_model': str(models['lotus-d']), 'depth_space': 'depth'})
    assert depth.depth_space == 'depth'


@pytest.mark.parametrize('params, match', [
    ({'backend': 'lotus-x'}, 'backend must be'),
    ({'backend': 'lotus-d', 'ensemble_size': 4}, 'stochastic'),
    ({'depth_model': ''}, 'nothing to run'),
])
def test_bad_parameters(models, params, match):
    with pytest.raises(ValueError, match=match):
        load_engine({'depth_model': str(models['lotus-d']), 'device': 'cpu', **params})


def test_benchmark_backends_smoke(tmp_path, capsys):
    from lotus_ros.benchmarks.engine_benchmark import main

    args = ['--backend', 'all', '--random-weights', '--size', 'tiny', '--weights-dir',
            str(tmp_path), '--resolutions', '40x56', '--repeats', '1', '--warmup', '0',
            '--device', 'cpu', '--ensemble-sizes', '1', '2', '--steps', '1', '2']
    assert main(args) == 0
    out = capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {'lotus-d', 'lotus-g', 'marigold'}
    rows = {line.split('  ')[0]: line.split() for line in out.splitlines()
            if line.startswith(('Lotus', 'Marigold'))}
    assert list(rows) == ['Lotus-D', 'Lotus-G K=1', 'Lotus-G K=2', 'Marigold 1 step',
                          'Marigold 2 steps']
    assert rows['Lotus-D'][-1] == '1.00' and 'x Lotus-D' in out
    assert all(float(row[-1]) > 0 for row in rows.values())
    assert main(['--backend', 'marigold']) == 2  # neither checkpoints nor --random-weights
