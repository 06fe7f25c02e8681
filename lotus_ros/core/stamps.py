"""
Time stamps as integer nanoseconds, the unit bags and header stamps share (exact, hashable).

Works on any object with `sec` and `nanosec` (builtin_interfaces/Time, rosbags' Time), so the
core needs no ROS import to read a stamp.
"""

from __future__ import annotations

NS_PER_S = 1_000_000_000
# A stamp this much older than the previous one of its stream means time went backwards (a
# bag loop, a second bag, a clock reset): what came before belongs to another run.
BACKWARD_JUMP_NS = NS_PER_S


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def stamp_seconds(stamp) -> float:
    """builtin_interfaces/Time -> float seconds (for ages and latencies, never for keys)."""
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_ns(seconds: float) -> int:
    """Round float seconds to integer nanoseconds."""
    return int(round(seconds * NS_PER_S))


def ns_to_sec_nanosec(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) for a Time message."""
    return stamp_ns // NS_PER_S, stamp_ns % NS_PER_S
