"""Frame assembly: which side messages pair with an image, and when a frame waits for them."""

from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from lotus_ros.ros.frame_assembly import FrameAssembler
from lotus_ros.ros.messages import header_at
from lotus_ros.ros.parameters import defaults

MS = 1_000_000


def _params(**over):
    p = defaults()
    p.update({'alignment.source': 'sparse_depth', **over})
    return p


def _image(t: float, frame_id: str = 'cam') -> Image:
    return Image(header=header_at(t, frame_id))


def _info(t: float) -> CameraInfo:
    return CameraInfo(header=header_at(t, 'cam'))


def test_camera_info_exact_else_latest_within_tolerance():
    a = FrameAssembler()
    p = _params(camera_info_tolerance=0.05)
    a.add_camera_info(_info(10.0))
    a.add_camera_info(_info(11.0))
    assert a.assemble(_image(10.0), p).camera_info.header.stamp.sec == 10
    assert a.assemble(_image(11.04), p).camera_info.header.stamp.sec == 11
    assert a.assemble(_image(10.5), p).camera_info is None


def test_sparse_nearest_within_max_time_difference():
    a = FrameAssembler()
    p = _params(**{'alignment.max_time_difference': 0.1})
    a.add_sparse(Image(header=header_at(20.0, 'cam')))
    assert a.assemble(_image(20.09), p).sparse.header.stamp.sec == 20
    assert a.assemble(_image(20.11), p).sparse is None
    assert a.assemble(_image(20.0), _params(**{'alignment.source': 'none'})).sparse is None


def test_image_before_its_camera_info_waits_for_it():
    """image_transport publishes the image first: the frame must wait for its info."""
    a = FrameAssembler()
    p = _params(**{'alignment.source': 'none'})
    image = _image(1.0)
    assert a.waiting_for(image, p) == ['camera_info']        # first image, no info yet
    a.add_camera_info(_info(1.0))
    assert a.waiting_for(image, p) == []
    assert a.assemble(image, p).camera_info is not None
    later = _image(1.1)
    assert a.waiting_for(later, p) == ['camera_info']        # stream alive, behind the image
    a.add_camera_info(_info(1.1))
    assert a.waiting_for(later, p) == []


def test_no_wait_for_a_stalled_or_absent_camera_info():
    a = FrameAssembler()
    p = _params(**{'alignment.source': 'none'})
    # nobody publishes camera_info: never waited for
    assert a.waiting_for(_image(5.0), p, camera_info_published=False) == []
    a.add_camera_info(_info(5.0))
    assert a.waiting_for(_image(7.0), p) == []               # newest info 2 s old: stalled
    a.add_camera_info(_info(7.5))
    assert a.waiting_for(_image(7.2), p) == []               # a newer info exists: decided


def test_waits_for_sparse_only_while_the_sensor_is_alive_and_behind():
    a = FrameAssembler()
    p = _params(**{'alignment.max_time_difference': 0.05})
    a.add_camera_info(_info(3.0))
    a.add_camera_info(_info(3.1))
    assert 'sparse' not in a.waiting_for(_image(3.1), p)     # never seen: not expected
    a.add_sparse(Image(header=header_at(3.0, 'cam')))
    assert a.waiting_for(_image(3.1), p) == ['sparse']
    a.add_sparse(Image(header=header_at(3.1, 'cam')))
    assert a.waiting_for(_image(3.1), p) == []
    assert 'sparse' not in a.waiting_for(_image(9.0), p)     # LiDAR stalled for 6 s


def test_a_replayed_bag_pairs_only_its_own_side_messages():
    """The bag again, without LiDAR: no side message of the first run pairs with the second."""
    a = FrameAssembler()
    p = _params()
    for t in (1.0, 2.0, 3.0):
        a.add_camera_info(_info(t))
        a.add_sparse(Image(header=header_at(t, 'cam')))
    a.add_camera_info(_info(1.0))                            # the second run starts
    a.add_camera_info(_info(2.0))
    a.time_went_back(int(1.0e9))                             # its first image is taken
    first = a.assemble(_image(1.0), p)
    assert first.camera_info is not None
    assert first.sparse is None                              # no LiDAR in this run yet
    assert a.assemble(_image(3.0), p).camera_info is None    # the first run's is gone


def test_points_transform_identity_lookup_or_static():
    p = _params(**{'alignment.source': 'sparse_points',
                   'alignment.points_transform': [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0]})
    cloud = PointCloud2(header=header_at(1.0, 'lidar'))
    same = PointCloud2(header=header_at(1.0, 'cam'))
    static = FrameAssembler()
    static.add_sparse(cloud)
    assert static.assemble(_image(1.0), p).points_transform == ((1.0, 2.0, 3.0),
                                                                (0.0, 0.0, 0.0, 1.0))
    refused = FrameAssembler(lookup_transform=lambda c, h: False)
    refused.add_sparse(cloud)
    assert refused.assemble(_image(1.0), p).sparse is None   # unknown transform: skip the cloud
    identity = FrameAssembler(lookup_transform=lambda c, h: False)
    identity.add_sparse(same)
    inputs = identity.assemble(_image(1.0), p)
    assert inputs.sparse is same and inputs.points_transform is None
