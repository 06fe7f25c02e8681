"""
A small, thread-safe cache of messages by stamp, for matching side inputs to image stamps.

Subscriptions only store into it; frame assembly (frame_assembly.py) looks up by image stamp.
"""

from __future__ import annotations

from collections import OrderedDict
import threading
from typing import Any


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
        with self._lock:
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

    def forget_earlier_run(self, stamp_ns: int) -> None:
        """
        Time went back to `stamp_ns`: drop what arrived up to the last item stamped later.

        Those items belong to the earlier run (a looping bag repeats its stamps); what arrived
        after them is the new run's, whatever its stamps.
        """
        with self._lock:
            stamps = list(self._items)   # arrival order
            later = [i for i, s in enumerate(stamps) if s > stamp_ns]
            for s in stamps[:later[-1] + 1] if later else []:
                del self._items[s]
            self._latest = next(reversed(self._items.items()), None)

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
