"""
Where the colcon-installed package's files are: the node executable and share/ files.

The demo, the bag tools, the benchmarks and the tests all need them; they fall back to the
source tree (share files) or report None (the executable) where the package is not built.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _prefix() -> Path | None:
    try:
        from ament_index_python.packages import get_package_prefix

        return Path(get_package_prefix('lotus_ros'))
    except Exception:  # noqa: BLE001 - PackageNotFoundError, or no ament_index at all
        return None


def node_executable(name: str = 'lotus_node') -> Path | None:
    """Return lib/lotus_ros/<name> of the sourced install, or None when it is not built."""
    prefix = _prefix()
    if prefix is None:
        return None
    path = prefix / 'lib' / 'lotus_ros' / name
    return path if path.exists() else None


def share_file(*parts: str) -> Path | None:
    """Return a file from the installed share directory, else the source tree, else None."""
    prefix = _prefix()
    candidates = [] if prefix is None else [prefix / 'share' / 'lotus_ros' / Path(*parts)]
    candidates.append(SOURCE_ROOT.joinpath(*parts))
    return next((c for c in candidates if c.exists()), None)
