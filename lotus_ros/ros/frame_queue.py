"""
Hand-off of frames from subscription callbacks to the single inference worker.

With drop_frames the worker always gets the newest frame and every frame overwritten while
waiting is counted as dropped, so latency stays bounded by about one inference time whatever the
camera rate. Without it (bag/offline processing) frames are processed in order through a bounded
queue; on overflow the oldest is discarded and `overflowed` tells the caller to log it. The
queues of several cameras share one condition (ros.camera_scheduler) so one consumer can wait for
a frame of any of them.
"""

from __future__ import annotations

from collections import deque
import threading
from typing import Any


class FrameQueue:
    def __init__(self, drop_frames: bool = True, maxsize: int = 10,
                 cond: threading.Condition | None = None):
        if maxsize < 1:
            raise ValueError('maxsize must be >= 1')
        self.drop_frames = bool(drop_frames)
        self.maxsize = 1 if self.drop_frames else int(maxsize)
        self._items: deque[Any] = deque()
        self._cond = cond if cond is not None else threading.Condition()
        self._closed = False
        self.received = 0
        self.dropped = 0       # newest-wins replacements
        self.overflowed = 0    # in-order queue overflows

    def put(self, item: Any) -> bool:
        """Store a frame; False when an older frame was discarded for it or the queue is closed."""
        with self._cond:
            if self._closed:
                return False
            self.received += 1
            ok = True
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                ok = False
                if self.drop_frames:
                    self.dropped += 1
                else:
                    self.overflowed += 1
            self._items.append(item)
            self._cond.notify_all()
            return ok

    def get(self, timeout: float | None = None) -> Any | None:
        """Take the next frame, waiting up to `timeout` s; None on timeout or when closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()

    def take(self, timeout: float | None = None) -> list[Any]:
        """Take the next frame as a batch of one (the frame pipeline's interface), [] if none."""
        item = self.get(timeout)
        return [] if item is None else [item]

    def head(self) -> Any | None:
        """Return the frame get() would take, left in place; the caller holds the condition."""
        return self._items[0] if self._items else None

    def pop(self) -> Any:
        """Take the head; the caller holds the condition and saw head() is not None."""
        return self._items.popleft()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()
