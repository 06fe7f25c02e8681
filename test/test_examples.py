"""
The shipped example configs read topics the node really publishes, with documented keys.

config/nav2_costmap_example.yaml (Nav2 costmaps) and config/lotus.rviz (RViz2) cannot be run
here: Nav2 and RViz2 are not installable from PyPI. So their topics are checked against the
node's outputs under the launch file's namespace, and the Nav2 keys against the parameter names
Nav2 documents.
"""

import ast
from pathlib import Path

import numpy as np
import yaml

from lotus_ros.core.pointcloud import pack_cloud
from lotus_ros.demo.synthetic import FRAME_ID
from lotus_ros.ros.outputs import OUTPUTS

REPO = Path(__file__).resolve().parents[1]
NAV2_EXAMPLE = REPO / 'config' / 'nav2_costmap_example.yaml'
RVIZ_VIEW = REPO / 'config' / 'lotus.rviz'

# Nav2 parameter names, from the parameter pages cited in the example and nav2_costmap_2d's
# costmap_2d_ros.cpp, obstacle_layer.cpp and voxel_layer.cpp (declare_parameter calls).
COSTMAP_KEYS = {
    'always_send_full_costmap', 'footprint', 'footprint_padding', 'global_frame', 'height',
    'width', 'lethal_cost_threshold', 'map_topic', 'observation_sources', 'origin_x', 'origin_y',
    'plugins', 'filters', 'publish_frequency', 'resolution', 'robot_base_frame', 'robot_radius',
    'rolling_window', 'track_unknown_space', 'transform_tolerance', 'trinary_costmap',
    'unknown_cost_value', 'update_frequency', 'use_maximum', 'clearable_layers', 'use_sim_time'}
OBSTACLE_LAYER_KEYS = {'plugin', 'enabled', 'footprint_clearing_enabled', 'min_obstacle_height',
                       'max_obstacle_height', 'combination_method', 'observation_sources'}
VOXEL_LAYER_KEYS = OBSTACLE_LAYER_KEYS | {'z_voxels', 'origin_z', 'z_resolution',
                                          'unknown_threshold', 'mark_threshold',
                                          'publish_voxel_map'}
SOURCE_KEYS = {'topic', 'sensor_frame', 'observation_persistence', 'expected_update_rate',
               'data_type', 'min_obstacle_height', 'max_obstacle_height', 'inf_is_valid',
               'marking', 'clearing', 'obstacle_max_range', 'obstacle_min_range',
               'raytrace_max_range', 'raytrace_min_range'}
LAYER_KEYS = {
    'nav2_costmap_2d::ObstacleLayer': OBSTACLE_LAYER_KEYS,
    'nav2_costmap_2d::VoxelLayer': VOXEL_LAYER_KEYS,
    'nav2_costmap_2d::InflationLayer': {'plugin', 'enabled', 'inflation_radius',
                                        'cost_scaling_factor', 'inflate_unknown',
                                        'inflate_around_unknown'},
    'nav2_costmap_2d::StaticLayer': {'plugin', 'enabled', 'subscribe_to_updates',
                                     'map_subscribe_transient_local', 'transform_tolerance',
                                     'map_topic'},
}
MAX_Z_VOXELS = 16  # the voxel grid packs a column into one 16-bit word


def _launch_default(name: str) -> str:
    """Return a launch argument's default from launch/lotus.launch.py, without importing launch."""
    tree = ast.parse((REPO / 'launch' / 'lotus.launch.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', '') == 'ARGUMENTS' for t in node.targets):
            defaults = {elt.elts[0].value: elt.elts[1].value for elt in node.value.elts}
            return defaults[name]
    raise AssertionError('launch/lotus.launch.py declares no ARGUMENTS')


def _launched_topic(output: str) -> str:
    """Return the absolute topic of a node output under the launch file's default namespace."""
    assert output in OUTPUTS, f'{output!r} is not a node output'
    return f"/{_launch_default('namespace').strip('/')}/{output}"


def _costmaps() -> dict[str, dict]:
    doc = yaml.safe_load(NAV2_EXAMPLE.read_text())
    return {name: doc[name][name]['ros__parameters'] for name in doc}


def _layers(costmap: dict) -> dict[str, dict]:
    return {name: costmap[name] for name in costmap['plugins']}


def _sources(layer: dict) -> dict[str, dict]:
    return {name: layer[name] for name in layer.get('observation_sources', '').split()}


def test_nav2_sources_read_only_the_metric_points_under_the_launch_namespace():
    sources = [source for costmap in _costmaps().values()
               for layer in _layers(costmap).values() for source in _sources(layer).values()]
    assert len(sources) == 2  # the local voxel layer and the global obstacle layer
    for source in sources:
        # points is metric only: relative depth never reaches a costmap
        assert source['topic'] == _launched_topic('points') == '/lotus/points'
        assert source['data_type'] == 'PointCloud2'
        assert source['marking'] is True


def test_nav2_keys_are_documented_nav2_parameters():
    costmaps = _costmaps()
    assert set(costmaps) == {'local_costmap', 'global_costmap'}
    for name, costmap in costmaps.items():
        layers = _layers(costmap)
        assert set(costmap) - set(layers) <= COSTMAP_KEYS, name
        for layer_name, layer in layers.items():
            sources = _sources(layer)
            allowed = LAYER_KEYS[layer['plugin']]
            assert set(layer) - set(sources) <= allowed, f'{name}.{layer_name}'
            for source_name, source in sources.items():
                assert set(source) <= SOURCE_KEYS, f'{name}.{layer_name}.{source_name}'


def test_nav2_height_and_range_limits_keep_points():
    for costmap in _costmaps().values():
        for layer in _layers(costmap).values():
            for source in _sources(layer).values():
                # a source's max_obstacle_height defaults to 0.0, which drops every point
                low, high = source['min_obstacle_height'], source['max_obstacle_height']
                assert 0.0 <= low < high
                assert low >= layer['min_obstacle_height']
                assert high <= layer['max_obstacle_height']
                assert 0.0 < source['obstacle_max_range'] <= source['raytrace_max_range']
            if layer['plugin'] == 'nav2_costmap_2d::VoxelLayer':
                assert layer['z_voxels'] <= MAX_Z_VOXELS
                top = layer['origin_z'] + layer['z_voxels'] * layer['z_resolution']
                assert top >= layer['max_obstacle_height']


def _rviz_displays() -> list[dict]:
    return yaml.safe_load(RVIZ_VIEW.read_text())['Visualization Manager']['Displays']


def test_rviz_displays_show_the_input_and_what_the_node_publishes():
    topics = {d['Topic']['Value']: d['Class'] for d in _rviz_displays() if 'Topic' in d}
    assert topics == {
        _launch_default('image'): 'rviz_default_plugins/Image',
        _launched_topic('depth/colored'): 'rviz_default_plugins/Image',
        _launched_topic('normal/colored'): 'rviz_default_plugins/Image',
        _launched_topic('points'): 'rviz_default_plugins/PointCloud2',
    }


def test_rviz_colours_the_cloud_by_its_rgb_field_in_the_demo_frame():
    (cloud_display,) = [d for d in _rviz_displays()
                        if d['Class'] == 'rviz_default_plugins/PointCloud2']
    assert cloud_display['Color Transformer'] == 'RGB8'
    assert cloud_display['Position Transformer'] == 'XYZ'
    # RViz's RGB8 transformer reads a field named rgb: the node's cloud has one with points.color
    params = yaml.safe_load((REPO / 'config' / 'lotus.yaml').read_text())
    assert params['/**']['ros__parameters']['points']['color'] is True
    cloud = pack_cloud(np.ones((2, 2, 3), np.float32), rgb=np.zeros((2, 2, 3), np.uint8))
    assert 'rgb' in [f.name for f in cloud.fields]
    view = yaml.safe_load(RVIZ_VIEW.read_text())['Visualization Manager']
    assert view['Global Options']['Fixed Frame'] == FRAME_ID
