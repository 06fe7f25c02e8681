"""The launch file parses and starts the node where `launch` is installed (group 6)."""

import ast
import importlib.util
import os
import signal
import subprocess
import sys
import time

from node_harness import HERE, REPO, Client, next_domain, node_executable
import pytest
from sensor_msgs.msg import Image

from lotus_ros.benchmarks.model_double import DOUBLE_FACTORY

LAUNCH_FILE = REPO / 'launch' / 'lotus.launch.py'
REQUIRED = {'namespace', 'params_file', 'image', 'camera_info', 'sparse_depth', 'sparse_points',
            'depth_model', 'normal_model', 'device', 'backend', 'stabilize', 'use_sim_time',
            'log_level'}


def test_launch_file_declares_the_arguments():
    # without importing launch: the file must at least be valid Python declaring every argument
    tree = ast.parse(LAUNCH_FILE.read_text())
    declared = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', '') == 'ARGUMENTS' for t in node.targets):
            declared = {elt.elts[0].value for elt in node.value.elts}
    assert declared == REQUIRED


def _load():
    pytest.importorskip('launch', reason='ROS 2 launch is not installed here')
    pytest.importorskip('launch_ros', reason='ROS 2 launch_ros is not installed here')
    spec = importlib.util.spec_from_file_location('lotus_launch', LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_launch_description_parses():
    mod = _load()
    from launch.actions import DeclareLaunchArgument
    desc = mod.generate_launch_description()
    names = {a.name for a in desc.entities if isinstance(a, DeclareLaunchArgument)}
    assert names == REQUIRED


def test_launch_starts_the_node(tmp_path):
    _load()
    node_executable()
    params = tmp_path / 'params.yaml'
    params.write_text(f"/**:\n  ros__parameters:\n    engine_factory: '{DOUBLE_FACTORY}'\n"
                      "    alignment:\n      source: 'none'\n")
    domain = next_domain()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain),
               PYTHONPATH=str(HERE) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    script = (
        'import sys\n'
        'from launch import LaunchDescription, LaunchService\n'
        'from launch.actions import IncludeLaunchDescription\n'
        'from launch.launch_description_sources import PythonLaunchDescriptionSource\n'
        'ls = LaunchService()\n'
        f'ls.include_launch_description(LaunchDescription([IncludeLaunchDescription('
        f'PythonLaunchDescriptionSource({str(LAUNCH_FILE)!r}), launch_arguments={{'
        f"'params_file': {str(params)!r}, 'namespace': 'lt', 'image': '/cam/img', "
        f"'device': 'cpu'}}.items())]))\n"
        'sys.exit(ls.run())\n')
    log = tmp_path / 'launch.log'
    with open(log, 'wb') as out:
        proc = subprocess.Popen([sys.executable, '-c', script], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    client = Client(domain)
    try:
        pub = client.publisher(Image, '/cam/img')
        client.subscribe(Image, '/lt/depth/relative')
        assert client.wait_for(lambda: pub.get_subscription_count() > 0, 60), log.read_text()
        assert client.wait_for(lambda: 'ready:' in log.read_text(), 30), log.read_text()
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert time.monotonic() - t0 < 10
    assert 'Traceback' not in log.read_text()
