"""Newest-wins slot and bounded in-order queue semantics."""

import threading
import time

from lotus_ros.ros.frame_queue import FrameQueue


def test_newest_wins_counts_drops():
    q = FrameQueue(drop_frames=True)
    results = [q.put(i) for i in range(10)]
    assert results == [True] + [False] * 9
    assert q.dropped == 9 and q.received == 10
    assert q.get(0) == 9
    assert q.get(0.01) is None


def test_in_order_queue_and_overflow():
    q = FrameQueue(drop_frames=False, maxsize=4)
    for i in range(6):
        q.put(i)
    assert q.overflowed == 2 and q.dropped == 0
    assert [q.get(0) for _ in range(4)] == [2, 3, 4, 5]


def test_worker_sees_bounded_staleness():
    # a slow consumer on a fast producer must only ever see recent frames
    q = FrameQueue(drop_frames=True)
    seen = []

    def worker():
        while True:
            item = q.get(0.5)
            if item is None:
                return
            seen.append((item, produced[0]))
            time.sleep(0.02)

    produced = [0]
    t = threading.Thread(target=worker)
    t.start()
    for i in range(1, 200):
        produced[0] = i
        q.put(i)
        time.sleep(0.001)
    t.join()
    assert seen and all(latest - item <= 40 for item, latest in seen)
    assert q.dropped + len(seen) == q.received


def test_close_wakes_waiter():
    q = FrameQueue()
    out = []
    t = threading.Thread(target=lambda: out.append(q.get(5.0)))
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    q.close()
    t.join(2)
    assert out == [None] and time.monotonic() - t0 < 1.0
    assert not q.put(1) and q.get(0) is None   # a closed queue stores nothing

