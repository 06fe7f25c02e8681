"""
Start lotus_node: `ros2 launch lotus_ros lotus.launch.py image:=/my_cam/image_raw`.

Parameters come from params_file (default: the package's config/lotus.yaml); the model, device,
backend and stabilize arguments override it only when given. Input topics are remapped from the
node's relative names (image, image/compressed, camera_info, sparse_depth, sparse_points); outputs
appear under the namespace (default /lotus: /lotus/depth/image, /lotus/points, ...). rviz:=true
also opens RViz2 with the package's config/lotus.rviz, when rviz2 is installed.

cameras:="[front, left]" runs one node (one model) for several cameras: each camera c reads
c/image, c/camera_info, c/sparse_depth, c/sparse_points and publishes under the namespace
(/lotus/front/depth/image, ...). The image, camera_info, sparse_depth and sparse_points arguments
may contain {camera}; left at their defaults they become /{camera}/image_raw,
/{camera}/camera_info, /{camera}/sparse_depth and the shared /lidar/points.

lifecycle:=true starts lotus_lifecycle_node instead, unconfigured, for a lifecycle manager (Nav2's
lifecycle_manager: README, Lifecycle); autostart:=true makes this launch file the manager
instead: it requests configure and, once the node is inactive, activate.
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition
import yaml

from lotus_ros.ros.parameters import validate

ARGUMENTS = (
    ('namespace', 'lotus', 'Namespace of the node and its outputs'),
    ('params_file', '', "Parameter YAML file (empty: the package's config/lotus.yaml)"),
    ('image', '/camera/image_raw', 'Input image topic (image_transport compressed: '
     '<image>/compressed is used)'),
    ('camera_info', '/camera/camera_info', 'CameraInfo topic of the image'),
    ('sparse_depth', '/lidar/depth', 'Sparse metric depth image (16UC1 mm or 32FC1 m)'),
    ('sparse_points', '/lidar/points', 'Sparse metric PointCloud2'),
    ('cameras', '', "Camera names, e.g. '[front, left]' or 'front,left': one node, one model "
     "for all; '' = one camera with today's topic names"),
    ('depth_model', '', "Override depth_model ('' keeps params_file; 'none' disables)"),
    ('normal_model', '', "Override normal_model ('' keeps params_file; 'none' disables)"),
    ('device', '', "Override device, e.g. 'cpu', 'cuda' ('' keeps params_file)"),
    ('backend', '', "Override backend: 'auto', 'lotus-d', 'lotus-g', 'marigold' ('' keeps "
     'params_file)'),
    ('stabilize', '', "Override temporal.stabilize: 'true' or 'false' ('' keeps params_file)"),
    ('use_sim_time', 'false', 'Use /clock (bag playback, simulation)'),
    ('log_level', 'info', 'Log level: debug, info, warn, error, fatal'),
    ('rviz', 'false', 'Also open RViz2 with config/lotus.rviz (when rviz2 is installed)'),
    ('lifecycle', 'false', 'Run lotus_lifecycle_node (managed: configure/activate/deactivate/'
     'cleanup) instead of lotus_node'),
    ('autostart', 'false', 'With lifecycle: configure and activate it from this launch file '
     '(leave false when a lifecycle manager drives the node)'),
)

DEFAULTS = {name: default for name, default, _ in ARGUMENTS}
INPUTS = ('image', 'camera_info', 'sparse_depth', 'sparse_points')
# With cameras, inputs left at their single-camera default: one topic per camera, one LiDAR.
PER_CAMERA_DEFAULTS = {'image': '/{camera}/image_raw', 'camera_info': '/{camera}/camera_info',
                       'sparse_depth': '/{camera}/sparse_depth', 'sparse_points': '/lidar/points'}


def parse_cameras(text: str) -> list[str]:
    """Return the camera names of `[front, left]`, `front,left` or `''` (none: one camera)."""
    text = text.strip()
    try:
        names = yaml.safe_load(text) if text.startswith('[') else text.split(',')
    except yaml.YAMLError as error:
        raise ValueError(f'cameras:={text!r} is not a list of names ({error})') from None
    if not isinstance(names, list):
        raise ValueError(f'cameras:={text!r} is not a list of names')
    names = [name.strip() if isinstance(name, str) else name for name in names]
    if names in ([], ['']):
        return []
    reason = validate('cameras', names)   # the node's own rule
    if reason:
        raise ValueError(f'cameras:={text!r}: {reason}')
    return names


def input_remappings(cameras: list[str], topics: dict[str, str]) -> list[tuple[str, str]]:
    """
    Remap the node's relative inputs to `topics` (the INPUTS arguments), once per camera.

    With cameras, `{camera}` in a topic is the camera's name, and a topic left at its default
    is its PER_CAMERA_DEFAULTS entry, so two cameras never read one image by accident.
    """
    if not cameras:
        placeholders = [name for name in INPUTS if '{camera}' in topics[name]]
        if placeholders:
            raise ValueError(f'{{camera}} in {", ".join(placeholders)} needs the cameras '
                             'argument')
        return _camera_remappings('', topics)
    remappings = []
    for camera in cameras:
        camera_topics = {
            name: (PER_CAMERA_DEFAULTS[name] if topics[name] == DEFAULTS[name]
                   else topics[name]).replace('{camera}', camera)
            for name in INPUTS}
        remappings += _camera_remappings(camera + '/', camera_topics)
    return remappings


def _camera_remappings(prefix: str, topics: dict[str, str]) -> list[tuple[str, str]]:
    image = topics['image']
    return [(prefix + 'image', image),
            (prefix + 'image/compressed', image.rstrip('/') + '/compressed'),
            *((prefix + name, topics[name]) for name in INPUTS if name != 'image')]


def _is_true(value: str) -> bool:
    return value.strip().lower() in ('true', '1', 'yes')


def _change_state(node: LifecycleNode, transition_id: int) -> EmitEvent:
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                       transition_id=transition_id))


def _autostart(node: LifecycleNode) -> list:
    """Configure now; activate once, on the first configure that succeeds (as Nav2 brings up)."""
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
        entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)], handle_once=True))
    return [activate_when_configured, node,
            _change_state(node, Transition.TRANSITION_CONFIGURE)]


def _node(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg('params_file') or os.path.join(
        get_package_share_directory('lotus_ros'), 'config', 'lotus.yaml')
    overrides = {'use_sim_time': _is_true(arg('use_sim_time'))}
    for name in ('depth_model', 'normal_model', 'device'):
        value = arg(name)
        if value:
            overrides[name] = '' if value == 'none' else value
    if arg('backend'):
        overrides['backend'] = arg('backend')
    if arg('stabilize'):
        overrides['temporal.stabilize'] = arg('stabilize').strip().lower() in ('true', '1', 'yes')
    cameras = parse_cameras(arg('cameras'))
    if cameras:
        overrides['cameras'] = cameras
    lifecycle = _is_true(arg('lifecycle'))
    node = (LifecycleNode if lifecycle else Node)(
        package='lotus_ros',
        executable='lotus_lifecycle_node' if lifecycle else 'lotus_node',
        name='lotus',
        namespace=arg('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[params_file, overrides],
        remappings=input_remappings(cameras, {name: arg(name) for name in INPUTS}),
        ros_arguments=['--log-level', arg('log_level')],
    )
    if lifecycle and _is_true(arg('autostart')):
        return _autostart(node)
    return [node]


def _rviz(context):
    if not _is_true(LaunchConfiguration('rviz').perform(context)):
        return []
    try:
        get_package_share_directory('rviz2')
    except PackageNotFoundError:
        return [LogInfo(msg='rviz:=true, but rviz2 is not installed: starting without RViz')]
    view = os.path.join(get_package_share_directory('lotus_ros'), 'config', 'lotus.rviz')
    use_sim_time = _is_true(LaunchConfiguration('use_sim_time').perform(context))
    return [Node(package='rviz2', executable='rviz2', name='rviz2', arguments=['-d', view],
                 parameters=[{'use_sim_time': use_sim_time}], output='screen')]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=_node), OpaqueFunction(function=_rviz)])
