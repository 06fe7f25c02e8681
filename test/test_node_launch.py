"""
The launch file: arguments, the actions it builds, a real start (where launch is installed).

What it builds for plain, lifecycle and autostarted runs is checked against stand-ins for
launch/launch_ros, which are not installable here.
"""

import ast
import importlib.util
import os
import signal
import subprocess
import sys
import time
import types

from lifecycle_msgs.msg import Transition
from node_harness import HERE, REPO, Client, next_domain, node_executable
import pytest
from sensor_msgs.msg import Image

from lotus_ros.benchmarks.model_double import DOUBLE_FACTORY

LAUNCH_FILE = REPO / 'launch' / 'lotus.launch.py'
REQUIRED = {'namespace', 'cameras', 'params_file', 'image', 'camera_info', 'sparse_depth',
            'sparse_points', 'depth_model', 'normal_model', 'device', 'backend', 'stabilize',
            'use_sim_time', 'log_level', 'rviz', 'lifecycle', 'autostart'}


def test_launch_file_declares_the_arguments():
    # without importing launch: the file must at least be valid Python declaring every argument
    tree = ast.parse(LAUNCH_FILE.read_text())
    declared = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', '') == 'ARGUMENTS' for t in node.targets):
            declared = {elt.elts[0].value for elt in node.value.elts}
    assert declared == REQUIRED


class Built:
    """An action, event or handler the launch file built: its keywords, checked on the way in."""

    accepts: frozenset = frozenset()  # keyword names of the real class (launch_ros Humble..)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - self.accepts
        assert not unknown, f'{type(self).__name__} has no argument {sorted(unknown)}'
        self.kwargs = kwargs


def _built(name: str, *keywords: str) -> type:
    return type(name, (Built,), {'accepts': frozenset(keywords)})


# Keyword names from launch and launch_ros (Humble to Rolling): Node(executable, package, name,
# namespace, exec_name, parameters, remappings, ros_arguments, arguments, **ExecuteProcess
# keywords such as output and emulate_tty); LifecycleNode(name, namespace, **Node keywords);
# EmitEvent(event); ChangeState(lifecycle_node_matcher, transition_id); OnStateTransition(
# entities, target_lifecycle_node, transition, start_state, goal_state, matcher,
# **EventHandler keywords: handle_once).
NODE_KEYWORDS = ('executable', 'package', 'name', 'namespace', 'exec_name', 'parameters',
                 'remappings', 'ros_arguments', 'arguments', 'output', 'emulate_tty')
STAND_INS = {
    'launch': {'LaunchDescription': lambda entities: list(entities)},
    'launch.actions': {
        'DeclareLaunchArgument': _built('DeclareLaunchArgument', 'name', 'default_value',
                                        'description'),
        'LogInfo': _built('LogInfo', 'msg'),
        'OpaqueFunction': _built('OpaqueFunction', 'function'),
        'EmitEvent': _built('EmitEvent', 'event'),
        'RegisterEventHandler': lambda event_handler: _built(
            'RegisterEventHandler', 'event_handler')(event_handler=event_handler)},
    'launch.events': {'matches_action': lambda target: lambda action: action is target},
    'launch.substitutions': {'LaunchConfiguration': lambda name: types.SimpleNamespace(
        perform=lambda context: context[name])},
    'launch_ros.actions': {'Node': _built('Node', *NODE_KEYWORDS),
                           'LifecycleNode': _built('LifecycleNode', *NODE_KEYWORDS)},
    'launch_ros.event_handlers': {'OnStateTransition': _built(
        'OnStateTransition', 'entities', 'target_lifecycle_node', 'transition', 'start_state',
        'goal_state', 'matcher', 'handle_once')},
    'launch_ros.events.lifecycle': {'ChangeState': _built(
        'ChangeState', 'lifecycle_node_matcher', 'transition_id')},
}


@pytest.fixture
def launch_file(monkeypatch):
    """Load the launch module against the stand-ins; return a call building its node actions."""
    for module_name, names in STAND_INS.items():
        module = types.ModuleType(module_name)
        module.__dict__.update(names)
        monkeypatch.setitem(sys.modules, module_name, module)
    for package in ('launch_ros', 'launch_ros.events'):
        monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    spec = importlib.util.spec_from_file_location('lotus_launch_stand_ins', LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def build(**arguments):
        context = {name: default for name, default, _ in mod.ARGUMENTS}
        context.update(params_file=str(REPO / 'config' / 'lotus.yaml'), **arguments)
        return mod._node(context)
    return build


def test_plain_launch_runs_lotus_node(launch_file):
    (node,) = launch_file()
    assert type(node).__name__ == 'Node'
    assert (node.kwargs['executable'], node.kwargs['name']) == ('lotus_node', 'lotus')


def test_lifecycle_launch_leaves_the_node_to_its_manager(launch_file):
    (node,) = launch_file(lifecycle='true')
    assert type(node).__name__ == 'LifecycleNode'
    assert (node.kwargs['executable'], node.kwargs['name'], node.kwargs['namespace']) == \
        ('lotus_lifecycle_node', 'lotus', 'lotus')


def test_lifecycle_autostart_configures_then_activates_once(launch_file):
    register, node, configure = launch_file(lifecycle='true', autostart='true', namespace='lt')
    assert type(node).__name__ == 'LifecycleNode'
    assert node.kwargs['namespace'] == 'lt'

    # the configure request goes to this node, after the activation handler is registered
    request = configure.kwargs['event'].kwargs
    assert request['transition_id'] == Transition.TRANSITION_CONFIGURE
    assert request['lifecycle_node_matcher'](node)
    assert not request['lifecycle_node_matcher'](register)

    handler = register.kwargs['event_handler'].kwargs
    assert handler['target_lifecycle_node'] is node
    assert (handler['start_state'], handler['goal_state']) == ('configuring', 'inactive')
    assert handler['handle_once'], 'a later manual cleanup + configure must not re-activate'
    (activate,) = handler['entities']
    request = activate.kwargs['event'].kwargs
    assert request['transition_id'] == Transition.TRANSITION_ACTIVATE
    assert request['lifecycle_node_matcher'](node)


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


def test_rviz_starts_only_when_asked_and_installed():
    mod = _load()
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    from launch import LaunchContext
    from launch_ros.actions import Node

    try:
        get_package_share_directory('rviz2')
        installed = True
    except PackageNotFoundError:
        installed = False
    for asked in ('false', 'true'):
        context = LaunchContext()
        context.launch_configurations.update(rviz=asked, use_sim_time='false')
        started = [a for a in mod._rviz(context) if isinstance(a, Node)]
        assert len(started) == (asked == 'true' and installed)


@pytest.mark.parametrize('lifecycle', [False, True], ids=['plain', 'lifecycle_autostart'])
def test_launch_starts_the_node(tmp_path, lifecycle):
    _load()
    node_executable('lotus_lifecycle_node' if lifecycle else 'lotus_node')
    managed = ", 'lifecycle': 'true', 'autostart': 'true'" if lifecycle else ''
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
        f"'device': 'cpu'{managed}}}.items())]))\n"
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
