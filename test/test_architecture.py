"""The package's layers: dependencies point down, and the core imports nothing of ROS."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'lotus_ros'
# Lower layers never import higher ones. `installed` (where the colcon install put things) is
# ROS-level; the top-level node_benchmark is the documented shim for the node benchmark.
LAYERS = {'core': 0, 'ros': 1, 'installed': 1, 'msg': 1, 'bags': 2, 'demo': 3,
          'benchmarks': 4, 'node_benchmark': 4}
ROS_PACKAGES = {'rclpy', 'sensor_msgs', 'std_msgs', 'builtin_interfaces', 'geometry_msgs',
                'diagnostic_msgs', 'rcl_interfaces', 'lifecycle_msgs', 'rosgraph_msgs',
                'tf2_ros', 'tf2_msgs', 'ament_index_python', 'rosbags', 'launch', 'launch_ros'}


def imported_modules(source: str) -> set[str]:
    """Every module an import statement names, at any depth (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == 'lotus_ros':
                names.update(f'lotus_ros.{alias.name}' for alias in node.names)
    return names


def layer_of(module: str) -> int | None:
    parts = module.split('.')
    if parts[0] != 'lotus_ros' or len(parts) < 2:
        return None
    return LAYERS[parts[1]]


def violations(module: str, source: str) -> list[str]:
    """Name every import of `module` (dotted name, with `source`) that breaks the layering."""
    own = layer_of(module)
    found = []
    for name in sorted(imported_modules(source)):
        target = layer_of(name)
        if target is not None and target > own:
            found.append(f'{module} imports {name}: a higher layer')
        if own == 0 and (name.split('.')[0] in ROS_PACKAGES or name.startswith('lotus_ros.msg')):
            found.append(f'{module} imports {name}: the core must not depend on ROS')
    return found


def package_modules() -> dict[str, str]:
    modules = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        rel = path.relative_to(PACKAGE.parent).with_suffix('')
        parts = list(rel.parts)
        if parts[-1] == '__init__':
            parts.pop()
        modules['.'.join(parts)] = path.read_text()
    return modules


def test_every_module_belongs_to_a_layer():
    for module in package_modules():
        if module != 'lotus_ros':
            assert layer_of(module) is not None, module


def test_dependencies_point_down():
    found = [v for module, source in package_modules().items() if module != 'lotus_ros'
             for v in violations(module, source)]
    assert not found, '\n'.join(found)


def test_the_checker_sees_violations():
    """The rules above must be able to fail: a core module importing the node or rclpy."""
    assert violations('lotus_ros.core.geometry', 'from lotus_ros.ros.node import LotusNode')
    assert violations('lotus_ros.core.geometry', 'def f():\n    import rclpy\n')
    assert violations('lotus_ros.ros.node', 'from lotus_ros import demo')
    assert not violations('lotus_ros.bags.player', 'from lotus_ros.ros import images')


def test_modules_say_what_they_are_for():
    for module, source in package_modules().items():
        doc = ast.get_docstring(ast.parse(source))
        assert doc and len(doc.split()) >= 5, f'{module} needs an opening docstring'
