"""The launch file's cameras argument: the node's cameras parameter and per-camera remappings."""

import pytest
from test_node_launch import launch_file  # noqa: F401  (the stand-in launch fixture)


def _node(build, **arguments):
    (node,) = build(**arguments)
    return node


def _overrides(node) -> dict:
    params_file, overrides = node.kwargs['parameters']
    return overrides


def test_without_cameras_the_node_keeps_todays_topics_and_parameters(launch_file):  # noqa: F811
    node = _node(launch_file, image='/cam/img')
    assert 'cameras' not in _overrides(node)
    assert node.kwargs['remappings'] == [
        ('image', '/cam/img'), ('image/compressed', '/cam/img/compressed'),
        ('camera_info', '/camera/camera_info'), ('sparse_depth', '/lidar/depth'),
        ('sparse_points', '/lidar/points')]


@pytest.mark.parametrize('text', ['[front, left]', '[front,left]', 'front,left', ' front , left'])
def test_cameras_get_their_own_default_topics_and_share_the_lidar(launch_file, text):  # noqa: F811
    node = _node(launch_file, cameras=text)
    assert _overrides(node)['cameras'] == ['front', 'left']
    remappings = dict(node.kwargs['remappings'])
    assert len(remappings) == len(node.kwargs['remappings']) == 10
    for camera in ('front', 'left'):
        assert remappings[f'{camera}/image'] == f'/{camera}/image_raw'
        assert remappings[f'{camera}/image/compressed'] == f'/{camera}/image_raw/compressed'
        assert remappings[f'{camera}/camera_info'] == f'/{camera}/camera_info'
        assert remappings[f'{camera}/sparse_depth'] == f'/{camera}/sparse_depth'
        assert remappings[f'{camera}/sparse_points'] == '/lidar/points'


def test_given_topics_take_the_camera_name_or_are_shared(launch_file):  # noqa: F811
    node = _node(launch_file, cameras='[stereo/left, stereo/right]',
                 image='/rig/{camera}/color/', camera_info='/rig/{camera}/info',
                 sparse_points='/{camera}/points', sparse_depth='/depth_for_all')
    remappings = dict(node.kwargs['remappings'])
    assert remappings['stereo/right/image'] == '/rig/stereo/right/color/'
    assert remappings['stereo/right/image/compressed'] == '/rig/stereo/right/color/compressed'
    assert remappings['stereo/left/camera_info'] == '/rig/stereo/left/info'
    assert remappings['stereo/left/sparse_points'] == '/stereo/left/points'
    assert remappings['stereo/left/sparse_depth'] == remappings['stereo/right/sparse_depth'] \
        == '/depth_for_all'


@pytest.mark.parametrize('text', ['', '[]', "['']", ' '])
def test_no_camera_names_is_one_camera(launch_file, text):  # noqa: F811
    node = _node(launch_file, cameras=text)
    assert 'cameras' not in _overrides(node)
    assert ('image', '/camera/image_raw') in node.kwargs['remappings']


@pytest.mark.parametrize('text,words', [
    ('[front, Front-2]', "'Front-2' is not a camera name"),
    ('[front, 2]', 'expects a list of strings'),
    ('front,', "'' is not a camera name"),
    ("['', front]", "'' is not a camera name"),
    ('[front/, left]', "'front/' is not a camera name"),
    ('[front, [left]]', 'expects a list of strings'),
    ('[front, left', 'not a list of names'),
    ('[front, front]', 'names a camera twice'),
])
def test_bad_camera_names_fail_the_launch_saying_why(launch_file, text, words):  # noqa: F811
    with pytest.raises(ValueError, match='cameras') as error:
        launch_file(cameras=text)
    assert words in str(error.value)


def test_camera_placeholder_needs_cameras(launch_file):  # noqa: F811
    with pytest.raises(ValueError, match=r'\{camera\} in image needs the cameras argument'):
        launch_file(image='/{camera}/image_raw')
