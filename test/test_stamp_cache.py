"""Stamp matching rules for camera_info and sparse depth caches."""

from builtin_interfaces.msg import Time
import pytest

from lotus_ros.core.stamps import stamp_to_ns
from lotus_ros.ros.stamp_cache import StampCache

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


def test_forget_earlier_run_keeps_what_came_after_it():
    c = StampCache(capacity=10)
    for t in (100, 200, 300):          # the first run
        c.add(t * MS, f'run1 {t}')
    c.add(100 * MS, 'run2 100')        # the bag again: same stamps, newer messages
    c.add(150 * MS, 'run2 150')
    c.forget_earlier_run(150 * MS)
    assert c.exact(200 * MS) is None and c.exact(300 * MS) is None
    assert c.exact(100 * MS) == 'run2 100' and c.latest() == (150 * MS, 'run2 150')
    c.forget_earlier_run(50 * MS)      # everything is later than 50 ms
    assert c.latest() is None and len(c) == 0
