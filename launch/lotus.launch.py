"""
Start lotus_node: `ros2 launch lotus_ros lotus.launch.py image:=/my_cam/image_raw`.

Parameters come from params_file (default: the package's config/lotus.yaml); the model, device,
backend and stabilize arguments override it only when given. Input topics are remapped from the
node's relative names (image, image/compressed, camera_info, sparse_depth, sparse_points); outputs
appear under the namespace (default /lotus: /lotus/depth/image, /lotus/points, ...).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = (
    ('namespace', 'lotus', 'Namespace of the node and its outputs'),
    ('params_file', '', "Parameter YAML file (empty: the package's config/lotus.yaml)"),
    ('image', '/camera/image_raw', 'Input image topic (image_transport compressed: '
     '<image>/compressed is used)'),
    ('camera_info', '/camera/camera_info', 'CameraInfo topic of the image'),
    ('sparse_depth', '/lidar/depth', 'Sparse metric depth image (16UC1 mm or 32FC1 m)'),
    ('sparse_points', '/lidar/points', 'Sparse metric PointCloud2'),
    ('depth_model', '', "Override depth_model ('' keeps params_file; 'none' disables)"),
    ('normal_model', '', "Override normal_model ('' keeps params_file; 'none' disables)"),
    ('device', '', "Override device, e.g. 'cpu', 'cuda' ('' keeps params_file)"),
    ('backend', '', "Override backend: 'auto', 'lotus-d', 'lotus-g', 'marigold' ('' keeps "
     'params_file)'),
    ('stabilize', '', "Override temporal.stabilize: 'true' or 'false' ('' keeps params_file)"),
    ('use_sim_time', 'false', 'Use /clock (bag playback, simulation)'),
    ('log_level', 'info', 'Log level: debug, info, warn, error, fatal'),
)


def _node(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg('params_file') or os.path.join(
        get_package_share_directory('lotus_ros'), 'config', 'lotus.yaml')
    overrides = {'use_sim_time': arg('use_sim_time').strip().lower() in ('true', '1', 'yes')}
    for name in ('depth_model', 'normal_model', 'device'):
        value = arg(name)
        if value:
            overrides[name] = '' if value == 'none' else value
    if arg('backend'):
        overrides['backend'] = arg('backend')
    if arg('stabilize'):
        overrides['temporal.stabilize'] = arg('stabilize').strip().lower() in ('true', '1', 'yes')
    image = arg('image')
    return [Node(
        package='lotus_ros',
        executable='lotus_node',
        name='lotus',
        namespace=arg('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[params_file, overrides],
        remappings=[
            ('image', image),
            ('image/compressed', image.rstrip('/') + '/compressed'),
            ('camera_info', arg('camera_info')),
            ('sparse_depth', arg('sparse_depth')),
            ('sparse_points', arg('sparse_points')),
        ],
        ros_arguments=['--log-level', arg('log_level')],
    )]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=_node)])
