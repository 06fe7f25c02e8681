"""The demo with --backend: tiny random models of that family, the summary names the backend."""

from __future__ import annotations

import subprocess
import sys

from node_harness import next_domain, ros_env
import pytest

from lotus_ros.core.backends import detect_backend
from lotus_ros.demo import run as demo

FRAMES, W, H = 3, 96, 72


@pytest.mark.parametrize('backend', ['lotus-d', 'lotus-g', 'marigold'])
def test_tiny_models_are_of_the_backend(tmp_path, backend):
    depth, normal = demo.tiny_models(tmp_path / 'tiny', backend)
    assert detect_backend(depth)[0] == detect_backend(normal)[0] == backend
    assert demo.backend_name('auto', depth, normal) == f'{backend} (auto)'
    assert demo.backend_name(backend, depth, normal) == backend


def test_published_checkpoints_per_backend():
    assert demo.MODELS['lotus-d'] == ('jingheya/lotus-depth-d-v2-0-disparity',
                                      'jingheya/lotus-normal-d-v1-1')
    assert set(demo.BACKENDS) == {'auto', 'lotus-d', 'lotus-g', 'marigold'}
    args = demo.build_parser().parse_args(['--backend', 'marigold', '--ensemble-size', '2'])
    assert (args.backend, args.ensemble_size, args.depth_model) == ('marigold', 2, None)


@pytest.mark.parametrize('backend, ensemble_size', [('lotus-g', 2), ('marigold', 1)])
def test_tiny_demo_runs_the_backend(tmp_path, backend, ensemble_size):
    try:
        demo.node_executable()
    except demo.DemoError:
        pytest.skip('lotus_node not installed (make build, source install/setup.bash)')
    out = tmp_path / 'demo_output'
    env = ros_env(next_domain())
    env['HF_HUB_OFFLINE'] = '1'
    result = subprocess.run(
        [sys.executable, '-m', 'lotus_ros.demo', '--tiny', '--backend', backend,
         '--ensemble-size', str(ensemble_size), '--output', str(out), '--frames', str(FRAMES),
         '--width', str(W), '--height', str(H), '--rate', '2', '--domain-id',
         env['ROS_DOMAIN_ID'], '--timeout', '120', '--no-progress'],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = (out / 'summary.md').read_text()
    assert f'Backend: {backend}' in summary
    assert f'| frames out (depth/relative) | {FRAMES} |' in summary
    assert f'| normal maps (normal/image) | {FRAMES} |' in summary
    maps = FRAMES if ensemble_size > 1 else 0
    assert f'| uncertainty maps (depth/uncertainty) | {maps} |' in summary
    family = 'marigold-depth' if backend == 'marigold' else 'lotus-depth-g'
    assert f'tiny_models/{family}' in summary
