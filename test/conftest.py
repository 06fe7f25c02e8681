"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope='session')
def tiny_lotus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """
    Tiny random-weight Lotus-D checkpoints in the diffusers layout, built once per session.

    'depth' (named like a disparity checkpoint) and 'normal' share identical VAE weights, as
    the published checkpoints do, so the engine's shared-VAE path is exercised offline.
    """
    from lotus_ros.demo.random_models import save_random_lotus

    root = tmp_path_factory.mktemp('tiny_lotus')
    return {
        'depth': save_random_lotus(root / 'lotus-depth-d-tiny-disparity', seed=0, vae_seed=0,
                                   pipeline_class='DirectRegressionPipeline'),
        'normal': save_random_lotus(root / 'lotus-normal-d-tiny', seed=1, vae_seed=0),
    }
