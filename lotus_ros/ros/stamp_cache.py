"""
A small, thread-safe cache of messages by stamp, for matching side inputs to image stamps.

Subscriptions only store into it; frame assembly (frame_assembly.py) looks up by image stamp.
"""

from __future__ import annotations

from collections import OrderedDict
import threading
from typing import Any

from lotus_ros.core.stamps import BACKWARD_JUMP_NS


class StampCache:
    """Keep the last `capacity` items by stamp (ns); insertion order = arrival order."""

    def __init__(self, capacity: int = 30):
        if capacity < 1:
            raise ValueError('capacity must be >= 1')
        self.capacity = int(capacity)
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._latest: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, item: Any) -> None:
        """Store an item; a stamp far behind the newest one starts the cache again."""
        with self._lock:
            if self._latest is not None and stamp_ns < self._latest[0] - BACKWARD_JUMP_NS:
                # Time went backwards in this stream: what it holds is another run's (a
                # looping bag repeats its stamps), detected as it arrives, whatever is queued.
                self._items.clear()
            self._items.pop(stamp_ns, None)
            self._items[stamp_ns] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            self._latest = (stamp_ns, item)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._latest = None

    def clear_if_ahead_of(self, stamp_ns: int) -> None:
        """
        Clear the cache if its newest item is far ahead of `stamp_ns` (an image's).

        The images went back in time but this stream has not (yet): a LiDAR missing from the
        second run of a bag must not lend the first run's scans to it.
        """
        with self._lock:
            if self._latest is not None and self._latest[0] > stamp_ns + BACKWARD_JUMP_NS:
                self._items.clear()
                self._latest = None

    def exact(self, stamp_ns: int) -> Any | None:
        with self._lock:
            return self._items.get(stamp_ns)

    def latest(self) -> tuple[int, Any] | None:
        """Return (stamp_ns, item) of the most recently received item."""
        with self._lock:
            return self._latest

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> tuple[int, Any] | None:
        """Return (stamp_ns, item) closest in time to `stamp_ns` if within the tolerance."""
        with self._lock:
            best = None
            best_dt = None
            for s, item in self._items.items():
                dt = abs(s - stamp_ns)
                if dt <= tolerance_ns and (best_dt is None or dt < best_dt):
                    best, best_dt = (s, item), dt
            return best

    def match_exact_or_latest(self, stamp_ns: int, tolerance_ns: int) -> tuple[int, Any] | None:
        """
        Camera-info rule: the exact stamp, else the latest one if within the tolerance.

        Drivers normally stamp camera_info like the image; the fallback covers drivers that
        stamp them separately, without ever pairing a frame with an arbitrarily old calibration.
        """
        with self._lock:
            item = self._items.get(stamp_ns)
            if item is not None:
                return stamp_ns, item
            if self._latest is not None and abs(self._latest[0] - stamp_ns) <= tolerance_ns:
                return self._latest
            return None
