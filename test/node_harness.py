"""
ROS test plumbing: private DDS domains, the node as a process, an rclpy client.

The installed lotus_node runs as its own process; the client (deserialized or raw messages)
spins in a background thread of the test process.

Each test gets its own ROS_DOMAIN_ID so tests (and other people's runs on the machine) never see
each other's topics.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
import signal
import subprocess
import threading
import time

import pytest

rclpy = pytest.importorskip('rclpy', reason='ROS 2 (rclpy) is not installed')
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from lotus_ros.benchmarks.model_double import DOUBLE_FACTORY  # noqa: E402
from lotus_ros.ros import messages  # noqa: E402
from lotus_ros.ros.messages import pinhole_camera_info as camera_info  # noqa: E402, F401

FRAME_ID = 'camera_optical'
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_domains = itertools.count(os.getpid() * 7)


def next_domain() -> int:
    """Return a domain id in 1..100 that no earlier test of this run used (within 100 tests)."""
    return 1 + next(_domains) % 100


def ros_env(domain_id: int) -> dict[str, str]:
    """Return the demo's ROS subprocess environment plus test/ (the model double) on PYTHONPATH."""
    from lotus_ros.demo.run import ros_environment

    env = ros_environment(domain_id)
    # Appended, so an installed lotus_ros (with generated messages) wins over the source tree.
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (env.get('PYTHONPATH'), str(REPO), str(HERE)) if p)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def node_executable() -> str:
    from lotus_ros import installed

    exe = installed.node_executable()
    if exe is None:
        pytest.skip('lotus_node is not installed: run `make build` and source install/setup.bash')
    return str(exe)


def reliable(depth: int = 50) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE)


def _value(v) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, str):
        return v if v else "''"
    return repr(v)


class NodeProcess:
    """The node under test; stderr/stdout go to a file read by `log()`."""

    def __init__(self, tmp_path: Path, domain: int, params: dict | None = None,
                 env: dict | None = None, remaps: dict | None = None):
        args = [node_executable(), '--ros-args']
        for k, v in {'engine_factory': DOUBLE_FACTORY, **(params or {})}.items():
            args += ['-p', f'{k}:={_value(v)}']
        for k, v in (remaps or {}).items():
            args += ['-r', f'{k}:={v}']
        e = ros_env(domain)
        e.update(env or {})
        self.log_path = tmp_path / f'node_{domain}.log'
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(args, env=e, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(tmp_path))

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
        return float('nan')

    def stop(self, sig=signal.SIGINT, timeout: float = 5.0) -> tuple[int | None, float]:
        """Send `sig`; return (exit code, seconds until exit) or (None, timeout) and kill."""
        if not self.alive():
            return self.proc.returncode, 0.0
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None, timeout
        finally:
            self._log.close()
        return rc, time.monotonic() - t0


class Client:
    """An rclpy node in its own context and domain, spun in a background thread."""

    def __init__(self, domain: int, name: str = 'lotus_test_client'):
        # This process's participant must use the same transports as the node's.
        os.environ.update({k: v for k, v in ros_env(domain).items()
                           if k in ('FASTDDS_DEFAULT_PROFILES_FILE',
                                    'ROS_AUTOMATIC_DISCOVERY_RANGE')})
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down under us at the end of a test
            pass

    def publisher(self, msg_type, topic: str, qos=None):
        return self.node.create_publisher(msg_type, topic, qos or reliable(10))

    def subscribe(self, msg_type, topic: str, qos=None, *, raw: bool = False):
        """Record (receive time, message) per topic; raw=True keeps the serialized bytes."""
        self.received.setdefault(topic, [])

        def cb(msg, topic=topic):
            with self._lock:
                self.received[topic].append((time.time(), bytes(msg) if raw else msg))
        return self.node.create_subscription(msg_type, topic, cb, qos or reliable(50), raw=raw)

    def messages(self, topic: str) -> list:
        with self._lock:
            return [m for _, m in self.received.get(topic, [])]

    def timed(self, topic: str) -> list:
        with self._lock:
            return list(self.received.get(topic, []))

    def clear(self) -> None:
        with self._lock:
            for v in self.received.values():
                v.clear()

    def wait_for_counts(self, counts: dict[str, int], timeout: float) -> bool:
        """Wait until every topic has received at least its count of messages."""
        return self.wait_for(lambda: all(len(self.timed(t)) >= n for t, n in counts.items()),
                             timeout)

    def wait_for(self, predicate, timeout: float = 10.0, period: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(period)
        return predicate()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def wait_until_ready(client: Client, node: NodeProcess, *publishers, timeout: float = 30.0,
                     settle: float = 1.0) -> None:
    """Fail with the node's log unless it said 'ready:' and hears every publisher; then settle."""
    assert client.wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers),
                           timeout), node.log()
    assert client.wait_for(lambda: 'ready:' in node.log(), timeout), node.log()
    time.sleep(settle)


def header_at(stamp: float) -> Header:
    return messages.header_at(stamp, FRAME_ID)


def diagnostics_values(client: Client) -> dict[str, str]:
    """Key/values of the newest pipeline status on /diagnostics."""
    for arr in reversed(client.messages('/diagnostics')):
        for st in arr.status:
            if st.name.endswith('pipeline'):
                return {kv.key: kv.value for kv in st.values}
    return {}
