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


def test_time_going_backwards_starts_the_cache_again():
    c = StampCache(capacity=30)
    for t in range(0, 3000, 100):      # the first run: 0 .. 2.9 s
        c.add(t * MS, f'run1 {t}')
    c.add(2500 * MS, 'late')           # out of order by less than a second: same run
    assert c.exact(0) == 'run1 0'
    c.add(100 * MS, 'run2 100')        # the bag again: same stamps, newer messages
    c.add(200 * MS, 'run2 200')
    assert c.exact(2900 * MS) is None and c.exact(0) is None
    assert c.exact(100 * MS) == 'run2 100' and c.latest() == (200 * MS, 'run2 200')
