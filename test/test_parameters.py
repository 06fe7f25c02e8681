"""Parameter table, validation rules, config/lotus.yaml coverage and rclpy declaration."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from lotus_ros.ros.parameters import SPECS, defaults, load_parameter_files, validate, validate_set

CONFIG = Path(__file__).resolve().parent.parent / 'config' / 'lotus.yaml'


def flatten(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f'{prefix}{k}.'))
        else:
            out[prefix + k] = v
    return out


def test_config_lists_every_parameter_with_a_comment():
    values = flatten(yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters'])
    assert set(values) == {s.name for s in SPECS}
    for name, value in values.items():
        assert validate(name, value) is None, name
        assert value == defaults()[name], name
    lines = CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.strip().startswith('#') and not line.endswith(':') \
                and i > 0:
            assert lines[i - 1].strip().startswith('#'), f'no comment above: {line}'


def test_defaults_are_consistent():
    d = defaults()
    assert validate_set(d) is None
    for s in SPECS:
        assert s.description and validate(s.name, s.default) is None, s.name
        if s.min is not None:
            assert s.min <= s.default <= (s.max if s.max is not None else s.default), s.name
        if s.choices is not None:
            assert s.default in s.choices, s.name


@pytest.mark.parametrize('name,value,words', [
    ('points.stride', 0, '>= 1'),
    ('points.stride', 2.5, 'expects int'),
    ('alignment.mode', 'affine', 'one of'),
    ('visualization.colormap', 'rainbowz', 'one of'),
    ('alignment.max_time_difference', -0.1, '>= 0'),
    ('alignment.z_max', float('nan'), 'finite'),
    ('lazy', 'yes', 'expects bool'),
    ('alignment.points_transform', [0, 0, 0, 0, 0, 0, 2.0], 'unit length'),
    ('alignment.points_transform', [0, 0, 0], '7 numbers'),
    ('alignment.fixed_scale', -1.0, '>= 0'),
])
def test_invalid_values_are_rejected_with_reason(name, value, words):
    reason = validate(name, value)
    assert reason is not None and words in reason


@pytest.mark.parametrize('value', [-1, 0, 1, 7, 8, 9, 64, 768, 1000, 10_000])
def test_processing_resolution_takes_what_the_engine_takes(value):
    """0 (native size) and every size from 8 up, exactly the engine's rule."""
    from lotus_ros.core.lotus_d import LotusEngine, ModelLoadError

    try:  # the engine checks the resolution before it looks for the checkpoint
        LotusEngine.from_pretrained('/nonexistent/lotus', processing_resolution=value,
                                    device='cpu', warmup=False)
    except ValueError:
        engine_takes = False
    except ModelLoadError:
        engine_takes = True
    reason = validate('processing_resolution', value)
    assert (reason is None) == engine_takes, reason
    if 0 < value < 8:
        assert '0 (native size) or at least 8' in reason


def test_resize_mode_choices():
    assert defaults()['resize_mode'] == 'registered'
    assert validate('resize_mode', 'released') is None
    assert 'one of' in validate('resize_mode', 'stretched')
    assert 'restart' in validate('resize_mode', 'released', running=True)


def test_runtime_rules():
    assert validate('visualization.colormap', 'gray', running=True) is None
    assert validate('alignment.z_min', 1, running=True) is None      # int for a double is fine
    assert 'restart' in validate('device', 'cuda', running=True)
    assert 'restart' in validate('image_transport', 'compressed', running=True)
    assert validate('qos_overrides./image.subscription.depth', 3, running=True) is None
    bad = dict(defaults(), **{'alignment.z_min': 50.0, 'alignment.z_max': 10.0})
    assert 'z_min' in validate_set(bad)
    bad = dict(defaults(), **{'visualization.depth_min': 5.0, 'visualization.depth_max': 1.0})
    assert 'depth_min' in validate_set(bad)
    bad = dict(defaults(), depth_model='', normal_model='')
    assert 'nothing to run' in validate_set(bad)


def test_declared_on_a_real_node_with_descriptors():
    rclpy = pytest.importorskip('rclpy')
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from lotus_ros.ros.parameters import declare_parameters

    ctx = Context()
    rclpy.init(context=ctx, args=['--ros-args', '-p', 'points.min_depth:=1',
                                  '-p', 'points.stride:=4', '-p', 'processing_resolution:=0'])
    try:
        node = Node('param_test', context=ctx)
        values = declare_parameters(node)
        assert values['points.min_depth'] == 1.0 and isinstance(values['points.min_depth'],
                                                                float)
        assert values['points.stride'] == 4
        assert values['processing_resolution'] == 0
        assert all(validate(name, value) is None for name, value in values.items())
        desc = node.describe_parameter('points.stride')
        assert desc.integer_range[0].from_value == 1 and not desc.read_only
        assert node.describe_parameter('device').read_only
        res = node.set_parameters([Parameter('points.stride', value=1000)])[0]
        assert not res.successful
        res = node.set_parameters([Parameter('device', value='cuda')])[0]
        assert not res.successful
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def test_node_runs_at_native_resolution(tmp_path, tiny_lotus):
    """processing_resolution:=0 starts the node with the real engine and publishes full size."""
    harness = pytest.importorskip('node_harness')
    from sensor_msgs.msg import Image

    from lotus_ros.ros.images import array_to_image, image_to_array

    domain = harness.next_domain()
    node = harness.NodeProcess(tmp_path, domain, {
        'engine_factory': '', 'depth_model': str(tiny_lotus['depth']), 'normal_model': '',
        'device': 'cpu', 'local_files_only': True, 'processing_resolution': 0,
        'alignment.source': 'none'})
    client = harness.Client(domain)
    try:
        client.subscribe(Image, 'depth/relative')
        pub = client.publisher(Image, 'image')
        harness.wait_until_ready(client, node, pub)
        rgb = np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)
        pub.publish(array_to_image(rgb, 'rgb8', harness.header_at(1.0)))
        assert client.wait_for(lambda: client.messages('depth/relative'), 30), node.log()
    finally:
        client.close()
        node.stop()
    relative = image_to_array(client.messages('depth/relative')[0])
    assert relative.shape == (61, 83) and np.isfinite(relative).all()
    # The log is no terminal (as under ros2 launch): no progress-bar lines from the loaders.
    assert 'Loading weights' not in node.log() and 'it/s]' not in node.log()


def _file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize('key, namespace, applies', [
    ('/**', '/lotus', True),
    ('/**/lotus', '/lotus', True),
    ('/lotus/lotus', '/lotus', True),
    ('lotus', '/lotus', False),          # a bare name is the node lotus in the root namespace
    ('lotus', '/', True),
    ('/lotus', '/', True),
    ('/lotus/lotus', '/', False),
    ('/**/lotus', '/', True),
    ('/**/lotus', '/robot/front', True),
    ('/*/lotus', '/lotus', True),
    ('/*/lotus', '/robot/front', False),  # '*' is exactly one namespace token
    ('/lotus/*', '/lotus', True),
    ('/other/lotus', '/lotus', False),     # another node, same name
    ('/lotus/other', '/lotus', False),     # another node, same namespace
    ('/**/other', '/lotus', False),
])
def test_node_keys_apply_as_params_file_does(tmp_path, key, namespace, applies):
    path = _file(tmp_path, 'p.yaml', f'{key}:\n  ros__parameters:\n    points:\n'
                 '      stride: 3\n')
    expected = {'points.stride': 3} if applies else {}
    assert load_parameter_files([path], 'lotus', namespace) == expected


def test_nested_namespace_keys_and_precedence(tmp_path):
    nested = _file(tmp_path, 'nested.yaml', 'lotus:\n  lotus:\n    ros__parameters:\n'
                   '      device: cpu\n')
    assert load_parameter_files([nested]) == {'device': 'cpu'}
    assert load_parameter_files([nested], namespace='/') == {}
    # Every matching key applies in the order the keys appear: here the later '/**' wins.
    first = _file(tmp_path, 'first.yaml',
                  '/lotus/lotus:\n  ros__parameters:\n    points.stride: 3\n    lazy: false\n'
                  '/**:\n  ros__parameters:\n    points.stride: 5\n')
    assert load_parameter_files([first]) == {'points.stride': 5, 'lazy': False}
    # A later file's '/lotus/lotus' updates that key in its first place, still before '/**'.
    second = _file(tmp_path, 'second.yaml',
                   '/lotus/lotus:\n  ros__parameters:\n    points.stride: 7\n'
                   '    device: cpu\n')
    assert load_parameter_files([first, second]) == {'points.stride': 5, 'lazy': False,
                                                     'device': 'cpu'}
    assert load_parameter_files([second, first]) == {'points.stride': 5, 'lazy': False,
                                                     'device': 'cpu'}
    with pytest.raises(ValueError, match='not a mapping'):
        load_parameter_files([_file(tmp_path, 'bad.yaml', 'lotus: 3\n')])


ORACLE_FILES = {
    'every form': '/lotus/lotus:\n  ros__parameters:\n    a: 1\n    b: [1.0, 2.5]\n'
                  'lotus:\n  ros__parameters:\n    b: [3.0]\n    c: x\n'
                  '/**/lotus:\n  ros__parameters:\n    d:\n      e: true\n    a: 2\n'
                  '/**:\n  ros__parameters:\n    f: 0.5\n'
                  '/lotus:\n  lotus:\n    ros__parameters:\n      g: 7\n'
                  '/*/lotus:\n  ros__parameters:\n    h: hello\n'
                  '/other/lotus:\n  ros__parameters:\n    a: 99\n    z: 1\n'
                  '/lotus/other:\n  ros__parameters:\n    z: 2\n',
    'wildcard first': '/**:\n  ros__parameters:\n    a: 1\n'
                      "/**/lotus:\n  ros__parameters:\n    a: 2\n    s: ''\n",
    'later file': '/**/lotus:\n  ros__parameters:\n    a: 5\n'
                  '/lotus/lotus:\n  ros__parameters:\n    a: 6\n    b: 1\n',
}


@pytest.mark.parametrize('namespace', ['/lotus', '/', '/robot/front'])
def test_parameters_equal_a_real_node_given_the_same_files(tmp_path, namespace):
    """The ground truth: what rcl hands a real rclpy node started with --params-file."""
    rclpy = pytest.importorskip('rclpy')
    from node_harness import next_domain
    from rclpy.context import Context

    paths = [_file(tmp_path, f'{i}.yaml', text) for i, text in enumerate(ORACLE_FILES.values())]
    args = ['--ros-args']
    for path in paths:
        args += ['--params-file', str(path)]
    ctx = Context()
    rclpy.init(context=ctx, args=args, domain_id=next_domain())
    try:
        node = rclpy.create_node('lotus', namespace=namespace, context=ctx,
                                 automatically_declare_parameters_from_overrides=True)
        real = {name: p.value for name, p in node.get_parameters_by_prefix('').items()
                if name not in ('use_sim_time', 'start_type_description_service')}
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    ours = load_parameter_files(paths, 'lotus', namespace)
    assert ours == real
    assert ours   # every namespace gets at least the wildcard keys


@pytest.mark.parametrize('cameras, words', [
    ([], 'at least one'), (['front', 'front'], 'twice: front'), (['', 'left'], "'' is not"),
    (['1st'], "'1st' is not a camera name"), (['front/'], 'not a camera name'),
    (['a b'], 'not a camera name'), (['front', 2], 'list of strings')])
def test_camera_names_are_checked(cameras, words):
    assert words in validate('cameras', cameras)


def test_camera_names_accepted():
    for cameras in ([''], ['front'], ['front', 'left', 'rear_2'], ['stereo/left', 'stereo/right']):
        assert validate('cameras', cameras) is None, cameras


def test_per_camera_parameters_name_their_camera():
    from lotus_ros.ros.parameters import PER_CAMERA, camera_parameter, split_camera_parameter

    cameras = ['front', 'stereo/left']
    assert camera_parameter('stereo/left', 'alignment.source') == \
        'cameras_params.stereo.left.alignment.source'
    for camera in cameras:
        for name in PER_CAMERA:
            assert split_camera_parameter(camera_parameter(camera, name), cameras) == \
                (camera, name)
    # shared parameters (model, scheduling) have no per-camera form
    for name in ('depth_model', 'device', 'drop_frames', 'batch.max_size', 'cameras'):
        assert name not in PER_CAMERA
        assert split_camera_parameter(camera_parameter('front', name), cameras) is None
    assert split_camera_parameter('alignment.source', cameras) is None
    assert split_camera_parameter('cameras_params.rear.lazy', cameras) is None


def test_camera_parameters_declared_without_value_until_given():
    rclpy = pytest.importorskip('rclpy')
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from lotus_ros.ros.parameters import PER_CAMERA, declare_camera_parameters

    ctx = Context()
    rclpy.init(context=ctx, args=['--ros-args',
                                  '-p', 'cameras_params.left.alignment.source:=none',
                                  '-p', 'cameras_params.front.points.stride:=3'])
    try:
        node = Node('camera_param_test', context=ctx)
        assert declare_camera_parameters(node, ['']) == {'': {}}
        own = declare_camera_parameters(node, ['front', 'left'])
        assert own == {'front': {'points.stride': 3}, 'left': {'alignment.source': 'none'}}
        assert len(node.get_parameters_by_prefix('cameras_params')) == 2 * len(PER_CAMERA)
        assert node.get_parameter('cameras_params.front.lazy').value is None
        assert node.describe_parameter('cameras_params.left.alignment.source').read_only
        res = node.set_parameters([Parameter('cameras_params.front.lazy', value=False)])[0]
        assert res.successful and node.get_parameter('cameras_params.front.lazy').value is False
        # declared again (a lifecycle node configured after cleanup): the values stay
        assert declare_camera_parameters(node, ['front', 'left'])['front'] == \
            {'points.stride': 3, 'lazy': False}
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
