"""Stamp matching rules for camera_info and sparse depth caches."""

from types import SimpleNamespace

from builtin_interfaces.msg import Time
import pytest

from lotus_ros.ros.stamp_cache import SideInputs, StampCache, stamp_to_ns

MS = 1_000_000


def test_stamp_to_ns_is_exact():
    assert stamp_to_ns(Time(sec=1_700_000_000, nanosec=123_456_789)) == 1_700_000_000_123_456_789


def test_exact_and_capacity():
    c = StampCache(capacity=3)
    for i in range(5):
        c.add(i * 100 * MS, f'info{i}')
    assert len(c) == 3
    assert c.exact(100 * MS) is None            # evicted
    assert c.exact(400 * MS) == 'info4'
    assert c.exact(400 * MS + 1) is None
    assert c.latest() == (400 * MS, 'info4')


def test_nearest_within_tolerance():
    c = StampCache(capacity=10)
    for t in (0, 100, 200, 300):
        c.add(t * MS, t)
    assert c.nearest(140 * MS, 50 * MS) == (100 * MS, 100)
    assert c.nearest(160 * MS, 50 * MS) == (200 * MS, 200)
    assert c.nearest(360 * MS, 50 * MS) is None
    assert c.nearest(-40 * MS, 50 * MS) == (0, 0)


def test_exact_or_latest_never_pairs_old_calibration():
    c = StampCache(capacity=10)
    c.add(100 * MS, 'a')
    c.add(200 * MS, 'b')
    assert c.match_exact_or_latest(100 * MS, 10 * MS) == (100 * MS, 'a')   # exact beats latest
    assert c.match_exact_or_latest(230 * MS, 50 * MS) == (200 * MS, 'b')
    assert c.match_exact_or_latest(300 * MS, 50 * MS) is None
    c.clear()
    assert c.match_exact_or_latest(200 * MS, 50 * MS) is None
    with pytest.raises(ValueError):
        StampCache(0)



def _stamped(sec: int, nanosec: int = 0) -> SimpleNamespace:
    return SimpleNamespace(header=SimpleNamespace(stamp=Time(sec=sec, nanosec=nanosec)))


def test_side_inputs_apply_the_node_rules():
    side = SideInputs()
    side.add_camera_info(_stamped(10))
    side.add_camera_info(_stamped(11))
    # The exact stamp; else the latest one (11 s), only within the tolerance.
    assert side.match_camera_info(10 * 1000 * MS, 0.0).header.stamp.sec == 10
    assert side.match_camera_info(11 * 1000 * MS + 40 * MS, 0.05).header.stamp.sec == 11
    assert side.match_camera_info(10 * 1000 * MS + 500 * MS, 0.05) is None
    side.add_sparse(_stamped(20))
    assert side.match_sparse(20 * 1000 * MS + 90 * MS, 0.1).header.stamp.sec == 20
    assert side.match_sparse(20 * 1000 * MS + 110 * MS, 0.1) is None
