"""Lint the package like ament_flake8/ament_pep257 would (rules in ruff.toml)."""

from pathlib import Path
import shutil
import subprocess

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which('ruff')
    if ruff is None:
        pytest.skip('ruff is not installed (pip install ruff)')
    result = subprocess.run(
        [ruff, 'check', '--no-cache', str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
