"""The built package: generated message, installed executables, share directory, versions agree."""

import os
from pathlib import Path
import xml.etree.ElementTree as ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_versions_agree():
    import lotus_ros

    manifest = ElementTree.parse(ROOT / 'package.xml').getroot()
    assert manifest.findtext('version') == lotus_ros.__version__
    assert manifest.findtext('name') == 'lotus_ros'


def test_generated_message_and_installed_layout():
    msg = pytest.importorskip('lotus_ros.msg', reason='lotus_ros.msg exists after colcon build')
    ament_index = pytest.importorskip('ament_index_python.packages')

    alignment = msg.DepthAlignment()
    alignment.space = 'disparity'
    alignment.covariance = [1.0, 0.0, 0.0, 2.0]
    assert list(alignment.covariance) == [1.0, 0.0, 0.0, 2.0]
    assert {'header', 'space', 'scale', 'shift', 'covariance', 'candidates', 'inliers',
            'residual_rms', 'age', 'valid', 'source', 'uncertainty',
            'resets'} == set(msg.DepthAlignment.get_fields_and_field_types())

    share = Path(ament_index.get_package_share_directory('lotus_ros'))
    assert (share / 'config' / 'lotus.yaml').is_file()
    assert (share / 'config' / 'fastdds_profile.xml').is_file()
    assert (share / 'launch' / 'lotus.launch.py').is_file()
    prefix = Path(ament_index.get_package_prefix('lotus_ros'))
    for name in ('lotus_node', 'lotus_lifecycle_node'):
        executable = prefix / 'lib' / 'lotus_ros' / name
        assert executable.is_file() and os.access(executable, os.X_OK), name


def test_fastdds_profile_enlarges_shared_memory():
    root = ElementTree.parse(ROOT / 'config' / 'fastdds_profile.xml').getroot()
    namespace = {'dds': 'http://www.eprosima.com'}
    sizes = [int(element.text) for element in root.iterfind('.//dds:segment_size', namespace)]
    assert sizes and min(sizes) >= 32 * 1024 * 1024
