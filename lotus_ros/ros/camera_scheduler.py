"""
Frames of several cameras to one inference stage: oldest first, coinciding frames together.

Each camera has its own FrameQueue (newest-wins live, bounded and in order for bags), so a fast
camera only ever replaces its own frames. `take` returns the head frames of up to max_batch
cameras, oldest first, so a 60 Hz camera cannot starve a 5 Hz one. A head frame whose side
inputs (camera_info, sparse depth) are still in flight is not ready: it waits for them, up to
the budget the `inputs_due` hook gives, while the other cameras go on. A ready frame may wait up
to max_wait for company, only for cameras whose next frame is due by then or in flight: a
stalled camera or one that is lazily skipped (it queues nothing) never holds the others up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import threading
import time
from typing import Any

from lotus_ros.ros.frame_queue import FrameQueue
from lotus_ros.ros.pipeline import SmoothedDuration

_STALLED = 2.0       # periods without a frame after which a camera is not waited for
_JITTER = 0.1        # of a period: how early a frame may be expected

# inputs_due(camera, message, waiting since) -> seconds the frame should still wait (<= 0: ready)
InputsDue = Callable[[str, Any, float], float]


class CameraScheduler:
    """One FrameQueue per camera behind one condition; items are (message, receive time)."""

    def __init__(self, cameras: Iterable[str], *, drop_frames: bool = True, maxsize: int = 10,
                 max_batch: int = 1, max_wait: float = 0.0, inputs_due: InputsDue | None = None):
        self._cond = threading.Condition()
        self.queues = {c: FrameQueue(drop_frames, maxsize, cond=self._cond) for c in cameras}
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait))
        self._inputs_due = inputs_due
        self._last: dict[str, float] = {}
        self._period: dict[str, SmoothedDuration] = {}
        self._since: dict[str, float] = {}     # camera -> when its queue stopped being empty

    def put(self, camera: str, msg: Any, now: float | None = None) -> bool:
        """Store a camera's frame; False when an older frame was discarded for it (or closed)."""
        now = time.monotonic() if now is None else now
        with self._cond:
            last = self._last.get(camera)
            if last is not None:
                self._period.setdefault(camera, SmoothedDuration()).add(now - last)
            self._last[camera] = now
            self._since.setdefault(camera, now)
            return self.queues[camera].put((msg, now))

    def wake(self) -> None:
        """Let a waiting take() look at the frames again (a side input arrived)."""
        with self._cond:
            self._cond.notify_all()

    def _due_in(self, camera: str) -> float | None:
        """Seconds the camera's head frame should still wait; None when its queue is empty."""
        head = self.queues[camera].head()
        if head is None:
            return None
        if self._inputs_due is None:
            return 0.0
        return self._inputs_due(camera, head[0], self._since[camera])

    def _due_by(self, camera: str, deadline: float, now: float) -> bool:
        """Whether camera's next frame is expected before the deadline (never when stalled)."""
        last, period = self._last.get(camera), self._period.get(camera)
        if last is None or period is None or now - last > _STALLED * period.value:
            return False
        return last + (1.0 - _JITTER) * period.value <= deadline

    def _scan(self) -> tuple[list[str], list[str], float | None]:
        """(ready cameras oldest head first, cameras with a frame still waiting, soonest wait)."""
        ready, pending, soonest = [], [], None
        for camera in self.queues:
            due = self._due_in(camera)
            if due is None:
                continue
            if due <= 0.0:
                ready.append(camera)
            else:
                pending.append(camera)
                soonest = due if soonest is None else min(soonest, due)
        ready.sort(key=lambda c: self.queues[c].head()[1])
        return ready, pending, soonest

    def take(self, timeout: float | None = None) -> list[tuple[str, Any, float]]:
        """Wait up to timeout for a frame; return (camera, message, receive time) per camera."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while True:
                if self.closed:
                    return []
                ready, _, soonest = self._scan()
                if ready:
                    break
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return []
                waits = [w for w in (left, soonest) if w is not None]
                self._cond.wait(min(waits) if waits else None)
            deadline = self.queues[ready[0]].head()[1] + self.max_wait
            while not self.closed:
                ready, pending, _ = self._scan()
                now = time.monotonic()
                if len(ready) >= self.max_batch or now >= deadline or not (pending or any(
                        self._due_by(c, deadline, now) for c in self.queues
                        if self.queues[c].head() is None)):
                    break
                self._cond.wait(deadline - now)
            if self.closed:
                return []
            batch = []
            for camera in ready[:self.max_batch]:
                batch.append((camera, *self.queues[camera].pop()))
                if self.queues[camera].head() is None:
                    del self._since[camera]
                else:
                    self._since[camera] = time.monotonic()
            return batch

    @property
    def closed(self) -> bool:
        return any(q.closed for q in self.queues.values())

    def close(self) -> None:
        for q in self.queues.values():
            q.close()
