"""
Lotus monocular depth, surface normals and metric point clouds for ROS 2.

Layers, dependencies pointing down: `core` (engines, alignment, geometry; no ROS), `ros` (the
node), `bags` (rosbag2 tools), `demo` and `benchmarks` on top. The stable API for code outside
the package is exported here, lazily, so `import lotus_ros.msg` does not import torch:

    from lotus_ros import load_engine, LotusEngine
"""

from importlib import import_module
from pkgutil import extend_path
from typing import Any

# Run from the source tree (e.g. `python -m lotus_ros.demo` in the repo root), this package
# shadows the colcon-installed one; extending the path keeps the generated `lotus_ros.msg`
# importable from the install space.
__path__ = extend_path(__path__, __name__)

__version__ = '0.1.0'

_API = {
    'Engine': 'lotus_ros.core.engine', 'ENGINE_DEFAULTS': 'lotus_ros.core.engine',
    'ModelLoadError': 'lotus_ros.core.engine', 'Prediction': 'lotus_ros.core.engine',
    'load_engine': 'lotus_ros.core.engine', 'LotusEngine': 'lotus_ros.core.lotus_d',
    'LotusGEngine': 'lotus_ros.core.lotus_g', 'MarigoldEngine': 'lotus_ros.core.marigold',
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(import_module(_API[name]), name)
