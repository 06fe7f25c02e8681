"""
The installed lotus_node as its own process, and an rclpy client that feeds and records it.

The demo, the node benchmark and the node tests all run the node this way (a private
ROS_DOMAIN_ID, local discovery, the big-message Fast DDS profile), so they exercise what
`ros2 run lotus_ros lotus_node` runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
import fcntl
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from lotus_ros import installed

# What a participant of this process must share with the node's to see its topics.
TRANSPORT_KEYS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'ROS_AUTOMATIC_DISCOVERY_RANGE')


# Domain ids handed out: ROS 2's portable range on Linux is 0-101 (0 is everybody's default).
DOMAIN_IDS = range(1, 101)
_DOMAIN_LOCKS = Path(tempfile.gettempdir()) / 'lotus_ros_domains'
_held_domains: deque[int] = deque()   # lock file descriptors of this process's latest claims
_HELD = 4                             # claims kept: a test may run a few nodes at once


def claim_domain(start: int = 0) -> int:
    """
    Return a domain id no other process on this machine has claimed, searching from `start`.

    Two test runs, a demo and a benchmark at once then never share a domain, so none of them
    sees the others' topics (the same topic names). A claim is an flock on a file per id, held
    until this process has made _HELD newer claims or ends. When every id is held, the id at
    `start` is returned anyway.
    """
    _DOMAIN_LOCKS.mkdir(exist_ok=True)
    ids = list(DOMAIN_IDS)
    for k in range(len(ids)):
        domain = ids[(start + k) % len(ids)]
        fd = os.open(_DOMAIN_LOCKS / f'{domain}.lock', os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process holds it (or this one, for a recent claim)
            os.close(fd)
            continue
        _held_domains.append(fd)
        while len(_held_domains) > _HELD:
            os.close(_held_domains.popleft())
        return domain
    return ids[start % len(ids)]


def ros_environment(domain_id: int) -> dict[str, str]:
    """Return os.environ plus a private domain, local discovery and the big-message profile."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    profile = installed.share_file('config', 'fastdds_profile.xml')
    if profile is not None:
        env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    return env


def parameter_value(value: Any) -> str:
    """Spell a value for `-p name:=value` as ros2 run parses it."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


# The package's executables and the source-tree module each one runs.
EXECUTABLE_MODULES = {'lotus_node': 'lotus_ros.ros.node',
                      'lotus_lifecycle_node': 'lotus_ros.ros.lifecycle_node'}


def node_command(executable: str = 'lotus_node') -> list[str]:
    """Return the installed executable, else its module in the source tree (not built)."""
    exe = installed.node_executable(executable)
    return [sys.executable, str(exe)] if exe is not None else \
        [sys.executable, '-m', EXECUTABLE_MODULES[executable]]


class NodeProcess:
    """lotus_node (or `executable`) with --ros-args; stdout and stderr go to `log_path`."""

    def __init__(self, log_path: Path, env: dict[str, str], *,
                 params_files: tuple[Path, ...] | list[Path] = (),
                 params: dict[str, Any] | None = None, remaps: dict[str, str] | None = None,
                 cwd: Path | None = None, executable: str = 'lotus_node'):
        args = node_command(executable) + ['--ros-args']
        for params_file in params_files:
            args += ['--params-file', str(params_file)]
        for name, value in (params or {}).items():
            args += ['-p', f'{name}:={parameter_value(value)}']
        for source, target in (remaps or {}).items():
            args += ['-r', f'{source}:={target}']
        self.log_path = Path(log_path)
        self._log = open(self.log_path, 'wb')  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=None if cwd is None else str(cwd))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
        return float('nan')

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads); NaN without /proc."""
        try:
            with open(f'/proc/{self.proc.pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            return float('nan')
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> tuple[int | None, float]:
        """Send `sig`; return (exit code, seconds until exit), or (None, timeout) and kill."""
        if not self.alive():
            self._log.close()
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

    def __init__(self, domain: int, name: str = 'lotus_client'):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        # This process's participant must use the same transports as the node's.
        os.environ.update({k: v for k, v in ros_environment(domain).items()
                           if k in TRANSPORT_KEYS})
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self.subscriptions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context was shut down under us at close()
            pass

    @staticmethod
    def reliable(depth: int = 50):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE)

    def publisher(self, msg_type, topic: str, qos=None):
        return self.node.create_publisher(msg_type, topic, qos or self.reliable(10))

    def subscribe(self, msg_type, topic: str, qos=None, *, raw: bool = False,
                  record: Callable[[Any], Any] | None = None):
        """
        Record (wall receive time, message) per topic.

        raw=True keeps the serialized bytes; `record` keeps what it returns instead of the
        message (a benchmark keeps only stamps, not megabytes of clouds).
        """
        self.received.setdefault(topic, [])

        def callback(msg, topic=topic):
            kept = bytes(msg) if raw else msg if record is None else record(msg)
            with self._lock:
                self.received[topic].append((time.time(), kept))
        sub = self.node.create_subscription(msg_type, topic, callback, qos or self.reliable(50),
                                            raw=raw)
        self.subscriptions[topic] = sub
        return sub

    def unmatched(self) -> list[str]:
        """Topics we subscribe to that no publisher matches yet (discovery still under way)."""
        return [topic for topic, sub in self.subscriptions.items()
                if sub.get_publisher_count() == 0]

    def messages(self, topic: str) -> list:
        with self._lock:
            return [m for _, m in self.received.get(topic, [])]

    def timed(self, topic: str) -> list:
        with self._lock:
            return list(self.received.get(topic, []))

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.received.get(topic, []))

    def clear(self) -> None:
        with self._lock:
            for v in self.received.values():
                v.clear()

    def wait_for_counts(self, counts: dict[str, int], timeout: float) -> bool:
        """Wait until every topic has received at least its count of messages."""
        return self.wait_for(lambda: all(self.count(t) >= n for t, n in counts.items()), timeout)

    def wait_for(self, predicate, timeout: float = 10.0, period: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(period)
        return predicate()

    def close(self) -> None:
        """
        Tear the participant down here and now, with the spin thread gone.

        Destroying the node while the spin thread still waits on it defers the teardown to
        that thread, which may then run it while the node process exits. Fast DDS 3.2 (Kilted)
        can deadlock deleting a participant while it handles a remote writer's removal, and
        it spins holding the GIL: the whole test process, pytest-timeout included, hangs.
        """
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self._thread.join(timeout=10.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
