"""CameraScheduler: oldest first across cameras, batches of coinciding frames, bounded waits."""

import threading
import time

from lotus_ros.ros.camera_scheduler import CameraScheduler


def taken(batch):
    return [(camera, msg) for camera, msg, _ in batch]


def test_oldest_head_first_and_one_frame_per_camera_per_batch():
    s = CameraScheduler(['a', 'b', 'c'], drop_frames=False, maxsize=10, max_batch=2)
    s.put('b', 'b1', now=1.0)
    s.put('a', 'a1', now=2.0)
    s.put('b', 'b2', now=3.0)
    s.put('c', 'c1', now=4.0)
    assert taken(s.take(0)) == [('b', 'b1'), ('a', 'a1')]
    assert taken(s.take(0)) == [('b', 'b2'), ('c', 'c1')]     # b2 (3.0) is older than c1
    assert s.take(0) == []


def test_fast_camera_replaces_only_its_own_frame_and_cannot_starve_a_slow_one():
    s = CameraScheduler(['fast', 'slow'], drop_frames=True, max_batch=1)
    s.put('slow', 's1', now=1.0)
    for i in range(10):
        s.put('fast', f'f{i}', now=1.1 + 0.01 * i)
    assert s.queues['fast'].dropped == 9 and s.queues['slow'].dropped == 0
    assert taken(s.take(0)) == [('slow', 's1')]
    assert taken(s.take(0)) == [('fast', 'f9')]


def test_in_order_per_camera():
    s = CameraScheduler(['a', 'b'], drop_frames=False, maxsize=5, max_batch=4)
    for i in range(3):
        s.put('a', i, now=float(i))
    s.put('b', 'x', now=0.5)
    assert taken(s.take(0)) == [('a', 0), ('b', 'x')]
    assert taken(s.take(0)) == [('a', 1)]
    assert taken(s.take(0)) == [('a', 2)]


def _periodic(s: CameraScheduler, camera: str, period: float, frames: int) -> None:
    """Give the camera a measured period: `frames` puts, `period` apart, ending now."""
    now = time.monotonic()
    for i in range(frames):
        s.put(camera, f'{camera}{i}', now=now - (frames - 1 - i) * period)
        s.queues[camera].pop()


def test_a_frame_waits_for_a_camera_due_within_max_wait():
    s = CameraScheduler(['a', 'b'], max_batch=2, max_wait=1.0)
    _periodic(s, 'b', 0.2, 4)                  # b's next frame is due in about 0.2 s
    s.put('a', 'a1')
    threading.Timer(0.1, s.put, ('b', 'b-next')).start()
    t0 = time.monotonic()
    batch = taken(s.take(2.0))
    assert batch == [('a', 'a1'), ('b', 'b-next')]
    assert time.monotonic() - t0 < 0.9        # left as soon as the batch was complete


def test_no_wait_with_max_wait_zero_nor_for_a_stalled_camera():
    s = CameraScheduler(['a', 'b'], max_batch=2, max_wait=0.0)
    _periodic(s, 'b', 0.2, 4)
    s.put('a', 'a1')
    assert taken(s.take(0)) == [('a', 'a1')]

    stalled = CameraScheduler(['a', 'b'], max_batch=2, max_wait=2.0)
    now = time.monotonic()
    for i in range(4):                         # 20 ms period, last frame 1 s ago
        stalled.put('b', i, now=now - 1.0 - 0.02 * (3 - i))
        stalled.queues['b'].pop()
    stalled.put('a', 'a1')
    t0 = time.monotonic()
    assert taken(stalled.take(3.0)) == [('a', 'a1')]
    assert time.monotonic() - t0 < 1.0         # did not wait the 2 s for it


def test_a_frame_waiting_for_side_inputs_does_not_hold_others():
    arrived = threading.Event()

    def inputs_due(camera, msg, since):
        if camera == 'late' and not arrived.is_set():
            return since + 5.0 - time.monotonic()   # its camera_info is in flight
        return 0.0

    s = CameraScheduler(['late', 'ok'], max_batch=2, max_wait=0.0, inputs_due=inputs_due)
    s.put('late', 'l1')
    s.put('ok', 'o1')
    t0 = time.monotonic()
    assert taken(s.take(1.0)) == [('ok', 'o1')]
    assert time.monotonic() - t0 < 0.5
    threading.Timer(0.1, lambda: (arrived.set(), s.wake())).start()
    assert taken(s.take(2.0)) == [('late', 'l1')]  # taken once its input arrived


def test_side_input_wait_is_bounded_and_not_restarted_by_newer_frames():
    s = CameraScheduler(['cam'], max_batch=1,
                        inputs_due=lambda camera, msg, since: since + 0.3 - time.monotonic())
    t0 = time.monotonic()
    s.put('cam', 1)
    threading.Timer(0.15, s.put, ('cam', 2)).start()  # newest wins, the budget keeps running
    assert taken(s.take(2.0)) == [('cam', 2)]
    assert 0.25 < time.monotonic() - t0 < 0.45 + 0.5


def test_close_wakes_a_waiting_take():
    s = CameraScheduler(['a'])
    out = []
    t = threading.Thread(target=lambda: out.append(s.take(5.0)))
    t.start()
    time.sleep(0.05)
    s.close()
    t.join(2.0)
    assert out == [[]] and not s.put('a', 1)
