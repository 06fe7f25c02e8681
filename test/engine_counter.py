"""
Test-only engine_factory: the real engine (core.backends), each construction noted in a file.

A node test passes `engine_factory:=engine_counter:make_engine` with this folder on PYTHONPATH
and LOTUS_ENGINE_COUNT naming the file; one line per engine built tells how many were made.
"""

from __future__ import annotations

import os
from typing import Any

from lotus_ros.core.backends import build_engine

FACTORY = 'engine_counter:make_engine'


def make_engine(params: dict[str, Any]):
    """Build the engine the parameters name, like load_engine does, and note it."""
    engine = build_engine(params)
    with open(os.environ['LOTUS_ENGINE_COUNT'], 'a') as f:
        f.write(f'{type(engine).__name__}\n')
    return engine
