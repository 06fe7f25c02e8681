"""
The two-stage FramePipeline without ROS: order, overlap, newest-wins drops, errors, shutdown.

The stages sleep (the GIL released, like a model call on a GPU), so they can overlap whatever
the load on the machine; time limits are generous and only bound behaviour, not speed.
"""

import threading
import time

import numpy as np
import pytest

from lotus_ros.ros.frame_queue import FrameQueue
from lotus_ros.ros.pipeline import FramePipeline


class Recorder:
    """Stage callables that sleep and record when each item went through each stage."""

    def __init__(self, infer_s: float, finish_s: float, fail_on=()):
        self.infer_s, self.finish_s, self.fail_on = infer_s, finish_s, set(fail_on)
        self.lock = threading.Lock()
        self.inferred: dict[int, tuple[float, float]] = {}
        self.finished: dict[int, tuple[float, float]] = {}
        self.order: list[int] = []
        self.errors: list[Exception] = []

    def infer(self, items):
        start = time.monotonic()
        time.sleep(self.infer_s)
        for item, _ in items:
            if item in self.fail_on:
                raise ValueError(f'frame {item} failed')
        with self.lock:
            for item, _ in items:
                self.inferred[item] = (start, time.monotonic())
        return list(items)

    def finish(self, job):
        item, _ = job
        start = time.monotonic()
        time.sleep(self.finish_s)
        with self.lock:
            self.finished[item] = (start, time.monotonic())
            self.order.append(item)

    def on_error(self, exc):
        self.errors.append(exc)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.01)
    return predicate()


def test_in_order_every_frame_and_the_stages_overlap():
    rec = Recorder(infer_s=0.02, finish_s=0.02)
    frames = FrameQueue(drop_frames=False, maxsize=100)
    pipe = FramePipeline(frames, rec.infer, rec.finish, rec.on_error, just_in_time=False)
    try:
        for i in range(20):
            frames.put((i, time.monotonic()))
        assert wait_for(lambda: len(rec.order) == 20), rec.order
    finally:
        assert pipe.stop(2.0)
    assert rec.order == list(range(20)) and not rec.errors
    # some frame was inferred while the one before it was being finished
    overlaps = [i for i in range(1, 20)
                if rec.inferred[i][0] < rec.finished[i - 1][1] and
                rec.inferred[i][1] > rec.finished[i - 1][0]]
    assert len(overlaps) >= 10, overlaps
    # never more than one frame ahead: frame i+2 starts inference only after i is taken
    assert all(rec.inferred[i + 2][0] >= rec.finished[i][0] - 1e-3 for i in range(18))


def test_live_newest_wins_drops_counted_latency_bounded():
    infer_s, finish_s, period = 0.01, 0.06, 0.005
    rec = Recorder(infer_s, finish_s)
    frames = FrameQueue(drop_frames=True)
    pipe = FramePipeline(frames, rec.infer, rec.finish, rec.on_error, just_in_time=True)
    sent = {}
    try:
        for i in range(300):
            sent[i] = time.monotonic()
            frames.put((i, sent[i]))
            time.sleep(period)
        assert wait_for(lambda: max(rec.order, default=-1) >= 290 or len(rec.order) > 20)
        time.sleep(0.3)
    finally:
        assert pipe.stop(2.0)
    done = rec.order
    assert done == sorted(done) and len(set(done)) == len(done)
    assert frames.dropped > 0 and frames.dropped + len(rec.inferred) >= 295, frames.dropped
    assert set(rec.inferred) == set(done)            # every inferred frame is published
    # stamp (put) to published: about one inference + one finishing, never a queue of them
    latency = np.array([rec.finished[i][1] - sent[i] for i in done[2:]])
    bound = infer_s + finish_s + period
    assert np.median(latency) < 2.0 * bound, latency
    # just in time: an inferred frame rarely waits for the finishing stage
    waits = np.array([rec.finished[i][0] - rec.inferred[i][1] for i in done[2:]])
    assert np.median(waits) < 0.5 * finish_s, waits


def test_errors_are_reported_and_the_stages_go_on():
    rec = Recorder(0.001, 0.001, fail_on={3, 7})
    frames = FrameQueue(drop_frames=False, maxsize=50)
    pipe = FramePipeline(frames, rec.infer, rec.finish, rec.on_error, just_in_time=False)
    try:
        for i in range(10):
            frames.put((i, 0.0))
        assert wait_for(lambda: len(rec.order) == 8)
    finally:
        assert pipe.stop(2.0)
    assert rec.order == [0, 1, 2, 4, 5, 6, 8, 9]
    assert [str(e) for e in rec.errors] == ['frame 3 failed', 'frame 7 failed']


class FailingTakes(FrameQueue):
    """A frame source whose take raises now and then (a graph query after the context died)."""

    def __init__(self, fail_at: set[int]):
        super().__init__(drop_frames=False, maxsize=50)
        self.fail_at, self.takes = fail_at, 0

    def take(self, timeout=None):
        self.takes += 1
        if self.takes in self.fail_at:
            raise RuntimeError(f'take {self.takes} failed')
        return super().take(timeout)


def test_a_failing_take_is_reported_and_inference_goes_on():
    rec = Recorder(0.001, 0.001)
    frames = FailingTakes(fail_at={1, 3})
    pipe = FramePipeline(frames, rec.infer, rec.finish, rec.on_error, just_in_time=False)
    try:
        for i in range(5):
            frames.put((i, 0.0))
        assert wait_for(lambda: len(rec.order) == 5), (rec.order, rec.errors)
    finally:
        assert pipe.stop(2.0)
    assert rec.order == list(range(5))
    assert [str(e) for e in rec.errors] == ['take 1 failed', 'take 3 failed']


@pytest.mark.parametrize('just_in_time', [True, False])
def test_stop_is_prompt_even_inside_a_long_inference(just_in_time):
    rec = Recorder(infer_s=3.0, finish_s=0.001)
    frames = FrameQueue(drop_frames=just_in_time, maxsize=5)
    pipe = FramePipeline(frames, rec.infer, rec.finish, rec.on_error,
                         just_in_time=just_in_time)
    frames.put((0, 0.0))
    assert wait_for(lambda: not len(frames), 2.0)    # taken: inference is sleeping now
    t0 = time.monotonic()
    assert not pipe.stop(0.3)                          # reports the stage that is still busy
    assert time.monotonic() - t0 < 1.0
    assert not pipe.running and frames.closed and rec.order == []


def test_stop_when_idle_ends_both_threads():
    rec = Recorder(0.001, 0.001)
    pipe = FramePipeline(FrameQueue(), rec.infer, rec.finish, rec.on_error, just_in_time=True)
    time.sleep(0.05)
    t0 = time.monotonic()
    assert pipe.stop(2.0) and time.monotonic() - t0 < 1.0
