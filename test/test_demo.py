"""The demo command in its offline smoke form: it runs and its outputs are non-trivial."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

from node_harness import next_domain, ros_env
import numpy as np
import pytest

from lotus_ros.benchmarks.model_double import DOUBLE_FACTORY
from lotus_ros.demo import run as demo

ROWS = ('frames in (images replayed)', 'frames out (depth/relative)',
        'frames with metric depth (depth/image)', 'point clouds (points)',
        'normal maps (normal/image)', 'output stamps == input stamps, in order',
        'stamp-to-publish latency p50 / p95', 'node-reported latency p95 (sim time)',
        'alignment scale error (median)', 'metric depth AbsRel (mean over frames)',
        'metric depth coverage')
FRAMES, W, H = 6, 96, 72


def _installed() -> bool:
    try:
        demo.node_executable()
    except demo.DemoError:
        return False
    return True


needs_node = pytest.mark.skipif(not _installed(), reason='lotus_node not installed '
                                '(make build, source install/setup.bash)')


def read_ply(path: Path) -> np.ndarray:
    """Parse the binary PLY independently of the writer: header, then packed vertices."""
    data = path.read_bytes()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    header = data[:end].decode('ascii').splitlines()
    assert header[:2] == ['ply', 'format binary_little_endian 1.0']
    count = int(next(h for h in header if h.startswith('element vertex')).split()[-1])
    types = {'float': '<f4', 'uchar': 'u1'}
    dtype = [(h.split()[2], types[h.split()[1]]) for h in header if h.startswith('property')]
    vertices = np.frombuffer(data[end:], dtype=dtype)
    assert len(vertices) == count
    return vertices


@needs_node
def test_tiny_demo_outputs(tmp_path):
    out = tmp_path / 'demo_output'
    env = ros_env(next_domain())
    env['HF_HUB_OFFLINE'] = '1'
    result = subprocess.run(
        [sys.executable, '-m', 'lotus_ros.demo', '--tiny', '--output', str(out),
         '--frames', str(FRAMES), '--width', str(W), '--height', str(H), '--rate', '2',
         '--sheet-every', '3', '--domain-id', env['ROS_DOMAIN_ID'], '--timeout', '120'],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert 'replay' in result.stderr  # progress bar of the replay

    summary = (out / 'summary.md').read_text()
    assert 'meaningless' in summary
    for row in ROWS:
        assert f'| {row} |' in summary, row
    assert f'| frames in (images replayed) | {FRAMES} |' in summary
    assert f'| frames out (depth/relative) | {FRAMES} |' in summary
    assert '| output stamps == input stamps, in order | yes |' in summary
    assert '| metric depth AbsRel' in result.stdout  # printed too

    import cv2

    sheets = sorted(out.glob('contact_sheet_*.png'))
    assert [s.name for s in sheets] == ['contact_sheet_000.png', 'contact_sheet_003.png']
    for sheet in sheets:
        image = cv2.imread(str(sheet))
        assert image.shape == (H, 5 * W + 4 * 4, 3)
        for i in range(5):  # every panel has content, none is a constant placeholder
            panel = image[20:, i * (W + 4):i * (W + 4) + W]
            assert panel.std() > 5, (sheet.name, i)

    vertices = read_ply(out / 'cloud.ply')
    assert len(vertices) > 0.5 * W * H
    xyz = np.stack([vertices['x'], vertices['y'], vertices['z']], axis=1)
    assert np.isfinite(xyz).all() and (xyz[:, 2] > 0).all()
    assert np.ptp(xyz, axis=0).min() > 0.1
    colours = np.stack([vertices['red'], vertices['green'], vertices['blue']], axis=1)
    assert colours.std() > 5


@needs_node
def test_offline_without_a_model_says_what_to_do(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1')
    result = subprocess.run(
        [sys.executable, '-m', 'lotus_ros.demo', '--output', str(tmp_path / 'o'),
         '--frames', '2', '--width', '32', '--height', '24',
         '--depth-model', 'no-such-user/no-such-lotus-model'],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert '--depth-model /path/to/lotus-depth' in result.stderr
    assert 'make demo TINY=1' in result.stderr
    assert 'Traceback' not in result.stderr


@needs_node
def test_unreadable_parameter_file_is_reported_before_the_node_starts(tmp_path):
    (tmp_path / 'bad.yaml').write_text('lotus: 3\n')
    result = subprocess.run(
        [sys.executable, '-m', 'lotus_ros.demo', '--output', str(tmp_path / 'o'),
         '--frames', '2', '--width', '32', '--height', '24', '--depth-model', '',
         '--normal-model', '', '--params', str(tmp_path / 'bad.yaml')],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert 'cannot read the parameter files' in result.stderr and 'bad.yaml' in result.stderr
    assert not (tmp_path / 'o' / 'node.log').exists()


def test_ply_and_side_view_helpers(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-1, -1, 1], [1, 1, 5], size=(500, 3)).astype(np.float32)
    rgb = rng.integers(0, 255, size=(500, 3), dtype=np.uint8)
    demo.write_ply(tmp_path / 'c.ply', xyz, rgb)
    vertices = read_ply(tmp_path / 'c.ply')
    np.testing.assert_array_equal(vertices['z'], xyz[:, 2])
    np.testing.assert_array_equal(vertices['green'], rgb[:, 1])
    # Side view: a point farther forward (z) lands further right, a lower one (y) further down.
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0], [0.0, 1.0, 2.0]], np.float32)
    white = np.full((3, 3), 255, np.uint8)
    view = demo.side_view(pts, white, 64, 64)
    ys, xs = np.nonzero(view[..., 0] == 255)
    order = np.argsort(xs)
    assert len(xs) == 3 and ys[order[1]] == ys.max()


@needs_node
def test_summary_numbers_against_ground_truth(tmp_path):
    """With a model double that knows the true disparity the summary must report small errors."""
    from lotus_ros.benchmarks.model_double import save_truth
    from lotus_ros.demo.synthetic import render_sequence

    frames, w, h = 8, 128, 96
    save_truth(render_sequence(frames, width=w, height=h), tmp_path / 'truth.npz')
    (tmp_path / 'double.yaml').write_text(
        f'/**:\n  ros__parameters:\n    engine_factory: {DOUBLE_FACTORY}\n'
        '/lotus:\n  ros__parameters:\n    depth_model: named-in-params\n')
    env = ros_env(next_domain())
    env['LOTUS_DOUBLE_TRUTH'] = str(tmp_path / 'truth.npz')
    result = subprocess.run(
        [sys.executable, '-m', 'lotus_ros.demo', '--output', str(tmp_path / 'out'),
         '--frames', str(frames), '--width', str(w), '--height', str(h), '--rate', '2',
         '--depth-model', '', '--normal-model', '', '--params', str(tmp_path / 'double.yaml'),
         '--domain-id', env['ROS_DOMAIN_ID'], '--no-progress', '--timeout', '60'],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {}
    for line in (tmp_path / 'out' / 'summary.md').read_text().splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 3:
            rows[cells[0]] = cells[1]
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    assert 'meaningless' not in summary
    # the models the node got from the --params file (the double ignores the name)
    assert 'Models: depth `named-in-params`, normal `(none)`' in summary
    assert rows['frames out (depth/relative)'] == str(frames)
    assert int(rows['frames with metric depth (depth/image)']) >= frames - 2
    # every metric frame has a cloud: needs camera_info for every frame, none lost at start
    assert rows['point clouds (points)'] == rows['frames with metric depth (depth/image)']
    assert float(rows['metric depth AbsRel (mean over frames)']) < 0.03
    assert float(rows['alignment scale error (median)'].rstrip(' %')) < 5.0
    assert float(rows['metric depth coverage'].rstrip(' %')) > 90.0
