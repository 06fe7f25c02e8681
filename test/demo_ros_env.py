"""Shared ROS test plumbing for the bag/demo tests: a private DDS domain and a raw recorder."""

from __future__ import annotations

import os
from pathlib import Path
import threading
import time

ROOT = Path(__file__).resolve().parents[1]
_counter = [0]


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment for a ROS subprocess on a private domain, with the big-message DDS profile."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    # Appended, so an installed lotus_ros (with generated messages) wins over the source tree;
    # test/ gives the node process the model double.
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (env.get('PYTHONPATH'), str(ROOT), str(ROOT / 'test')) if p)
    profile = ROOT / 'config' / 'fastdds_profile.xml'
    if profile.exists():
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    return env


def fresh_domain_id() -> int:
    """Return a domain id derived from the pid and a counter: parallel runs don't cross-talk."""
    _counter[0] += 1
    return 1 + (os.getpid() * 7 + _counter[0]) % 100


class RawRecorder:
    """Subscribe to topics in this process and keep every message's serialized bytes."""

    def __init__(self, domain_id: int, topics: dict[str, type], *, reliable: bool = True):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        os.environ.update({k: v for k, v in ros_env(domain_id).items()
                           if k in ('FASTDDS_DEFAULT_PROFILES_FILE',
                                    'ROS_AUTOMATIC_DISCOVERY_RANGE')})
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('demo_test_recorder', context=self.context)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        self.messages: dict[str, list[tuple[float, bytes]]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, self._callback(topic), qos, raw=True)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _callback(self, topic):
        def store(data: bytes) -> None:
            with self._lock:
                self.messages[topic].append((time.monotonic(), bytes(data)))
        return store

    def _spin(self) -> None:
        while self._running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for(self, counts: dict[str, int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(len(self.messages[t]) >= n for t, n in counts.items()):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
