"""
Two-stage frame pipeline: while one frame is finished and published, the next is in inference.

The inference stage (thread lotus_inference) takes a batch of frames (one per camera) from its
frame source (a FrameQueue, or the CameraScheduler of several cameras) and runs `infer` on it;
the finishing stage (thread lotus_publish) runs `finish` on every inferred frame, in order.
Between them one slot for one batch: inference never runs more than one batch ahead, and the
next batch is in inference while the frames of this one are finished. Live (drop_frames) the
inference stage takes the newest frames only when their inference will end about when the
finishing stage becomes free, so no frame waits, inferred, for a busy finishing stage: latency
stays about one inference plus one finishing, and every inferred frame is published. In order
(drop_frames false) it takes every frame, blocking while the slot is full.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
import time
from typing import Any, Protocol

# Weight of the newest duration in the time estimates (a few frames of memory).
_SMOOTHING = 0.3


class SmoothedDuration:
    """
    Exponentially smoothed duration, seconds; 0 until measured.

    The stages' times here, a camera's frame period in ros.camera_scheduler.
    """

    def __init__(self) -> None:
        self.value = 0.0
        self._seen = False

    def add(self, seconds: float) -> None:
        self.value = seconds if not self._seen else \
            (1.0 - _SMOOTHING) * self.value + _SMOOTHING * seconds
        self._seen = True


class FrameSource(Protocol):
    """Where the inference stage takes its frames: FrameQueue, CameraScheduler."""

    def take(self, timeout: float | None = None) -> list[Any]: ...

    def close(self) -> None: ...


class FramePipeline:
    """
    Run infer(frames) -> jobs and finish(job) on two threads with a one-batch hand-off.

    Exceptions of either callable, or of the frame source's take (its side-input check asks
    the ROS graph, which fails once SIGTERM has shut the context down), go to `on_error` and
    the stage carries on: a dead inference thread would silence the node for good.
    """

    def __init__(self, frames: FrameSource, infer: Callable[[list[Any]], list[Any]],
                 finish: Callable[[Any], None], on_error: Callable[[Exception], None], *,
                 just_in_time: bool):
        self.frames = frames
        self._infer, self._finish, self._on_error = infer, finish, on_error
        self.just_in_time = just_in_time
        self._cond = threading.Condition()
        self._slot: list[list[Any]] = []           # at most one inferred batch of jobs
        self._finishing_since: float | None = None  # monotonic start of the job in finish
        self._finishing_left = 0                   # jobs of the batch in finish, not yet done
        self.infer_time = SmoothedDuration()              # per batch
        self.finish_time = SmoothedDuration()             # per job
        self._running = True
        self._threads = [threading.Thread(target=self._infer_loop, name='lotus_inference',
                                          daemon=True),
                         threading.Thread(target=self._finish_loop, name='lotus_publish',
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    @property
    def running(self) -> bool:
        return self._running

    def stop(self, timeout: float | None = 1.0) -> bool:
        """
        Stop both stages; True when they ended within the timeout (a model call may not).

        timeout None waits for the frame in flight; frames inferred but not yet taken by the
        finishing stage are dropped.
        """
        self._running = False
        self.frames.close()
        with self._cond:
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    # -- inference stage -------------------------------------------------------------------
    def _turn_in(self) -> float:
        """Seconds until inference should start (<= 0: now); live mode only."""
        now = time.monotonic()
        pending = sum(len(batch) for batch in self._slot) + self._finishing_left
        if not pending:
            return 0.0
        # the finishing stage is free once the jobs in it and the ones in the slot are done
        start = now if self._finishing_since is None else self._finishing_since
        free_at = start + pending * self.finish_time.value
        return free_at - self.infer_time.value - now

    def _wait_for_turn(self) -> None:
        with self._cond:
            while self._running:
                wait = self._turn_in()
                if wait <= 0.0:
                    return
                self._cond.wait(wait)              # the finishing stage notifies when done

    def _hand_over(self, jobs: list[Any]) -> None:
        with self._cond:
            while self._running and self._slot:
                self._cond.wait(0.1)
            if self._running:
                self._slot.append(jobs)
                self._cond.notify_all()

    def _infer_loop(self) -> None:
        while self._running:
            if self.just_in_time:
                self._wait_for_turn()
            try:
                frames = self.frames.take(timeout=0.2)
                if not frames:
                    continue
                start = time.monotonic()
                jobs = self._infer(frames)
            except Exception as exc:  # keep the stage alive whatever one batch (or take) does
                self._on_error(exc)
                continue
            if jobs:
                self.infer_time.add(time.monotonic() - start)
                self._hand_over(jobs)

    # -- finishing stage -------------------------------------------------------------------
    def _finish_loop(self) -> None:
        while self._running:
            with self._cond:
                while self._running and not self._slot:
                    self._cond.wait(0.2)
                if not self._running:
                    return
                jobs = self._slot.pop()
                self._finishing_left = len(jobs)
                self._cond.notify_all()
            for job in jobs:
                with self._cond:
                    start = self._finishing_since = time.monotonic()
                try:
                    self._finish(job)
                except Exception as exc:  # keep the stage alive whatever one frame does
                    self._on_error(exc)
                with self._cond:
                    self.finish_time.add(time.monotonic() - start)
                    self._finishing_left -= 1
                    self._finishing_since = None
                    self._cond.notify_all()
                if not self._running:
                    return
