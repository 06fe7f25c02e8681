"""
Replay a rosbag2 bag into ROS 2 without rosbag2 installed.

`python -m lotus_ros.bags.player BAG [--rate R] [--clock] [--topics T ...]`

The player publishes the recorded serialized bytes unchanged, so header stamps, encodings and
every field arrive exactly as recorded; only the timing is recreated, from the bag's log times
scaled by --rate. With --clock it also publishes /clock (rosgraph_msgs/Clock) from bag time, for
nodes running with use_sim_time. On a ROS install `ros2 bag play BAG --clock` does the same job.
Topics whose message packages are not installed here (/tf without tf2_msgs) are skipped with one
warning; the rest play. Exit status: 0 played, 1 nothing was played (an empty bag, or no
installed message type), 2 bad bag or arguments.

QoS: publishers are reliable, keep-last (--depth, default 100) by default so that a replay into
a reliable or best-effort subscriber loses nothing the DDS layer can deliver; --best-effort mimics
a live sensor driver. Before the first message the player waits (--wait, seconds) until every
topic it publishes has a subscriber, then --delay seconds more (discovery is not symmetric: the
subscriber may not have matched the player yet, and a volatile reader misses what came before),
and at the end (--linger, seconds) until reliable messages
are acknowledged (Fast DDS may take up to its 3 s heartbeat period to acknowledge).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
import importlib
import sys
import time

from lotus_ros.bags import bag_io

CLOCK_TOPIC = '/clock'


class NothingToPlay(ValueError):
    """The bag has no message the player can publish (empty, or no installed message type)."""


def message_class(msgtype: str) -> type:
    """
    Import the rclpy message class for 'pkg/msg/Type'.

    Old-style names 'pkg/Type' (written by early rosbag2 releases) mean 'pkg/msg/Type'. A
    package that is not installed raises ImportError, any other unusable name ValueError.
    """
    parts = msgtype.split('/')
    if len(parts) == 2:
        parts.insert(1, 'msg')
    if len(parts) != 3 or not all(parts):
        raise ValueError(f'not a message type name: {msgtype!r}')
    package, kind, name = parts
    cls = getattr(importlib.import_module(f'{package}.{kind}'), name, None)
    if cls is None:
        raise ImportError(f'{package}.{kind} has no {name}')
    return cls


def importable_topics(info: dict[str, tuple[str, int]]) -> tuple[dict[str, type], dict[str, str]]:
    """
    Split {topic: (msgtype, count)} into {topic: message class} and {topic: msgtype} unusable.

    A bag may hold topics whose message packages are not installed here (/tf without tf2_msgs):
    those cannot be published, but the others can.
    """
    classes, missing = {}, {}
    for topic, (msgtype, _) in info.items():
        try:
            classes[topic] = message_class(msgtype)
        except (ImportError, ValueError):
            missing[topic] = msgtype
    return classes, missing


class Progress:
    """A one-line progress bar on stderr (plain lines every 25 % when stderr is not a terminal)."""

    def __init__(self, total: int, label: str = 'replay', stream=None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = -1.0

    def update(self, done: int, extra: str = '') -> None:
        share = min(done / self.total, 1.0)
        if self.tty:
            now = time.monotonic()
            if now - self._last < 0.1 and done < self.total:
                return
            self._last = now
            bar = '#' * int(share * 30)
            self.stream.write(
                f'\r{self.label} [{bar:<30}] {share:4.0%} {done}/{self.total} {extra}')
            if done >= self.total:
                self.stream.write('\n')
        elif int(share * 4) > self._last:
            self._last = int(share * 4)
            self.stream.write(f'{self.label}: {share:4.0%} {done}/{self.total} {extra}\n')
        self.stream.flush()


def _remap(topic: str, remaps: dict[str, str]) -> str:
    return remaps.get(topic, topic)


def play_bag(node, path, *, rate: float = 1.0, clock: bool = False,
             topics: Iterable[str] | None = None, remaps: dict[str, str] | None = None,
             reliable: bool = True, depth: int = 100, wait: float = 5.0, delay: float = 0.5,
             linger: float = 3.0,
             clock_hz: float = 100.0, progress: bool = True,
             should_stop: Callable[[], bool] | None = None,
             on_publish: Callable[[bag_io.BagMessage], None] | None = None) -> dict[str, int]:
    """
    Publish a bag's messages through an existing rclpy node; return counts per played topic.

    Messages are published at log time / rate relative to the first one (rate <= 0 means as
    fast as possible). With clock, /clock follows bag time: at each message and at clock_hz
    while waiting between messages. on_publish is called right after each message is sent.
    Topics whose message types are not installed are skipped with one warning naming them; a
    bag with nothing to play (no messages, or none of an installed type) raises NothingToPlay.
    """
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    remaps = remaps or {}
    wanted = None if topics is None else set(topics)
    info = {t: v for t, v in bag_io.bag_topics(path).items() if wanted is None or t in wanted}
    if wanted is not None and wanted - set(info):
        raise ValueError(f'topics not in the bag: {sorted(wanted - set(info))}')
    classes, missing = importable_topics(info)
    if missing:
        node.get_logger().warning(
            f'skipping {len(missing)} topic(s) whose message types are not installed: '
            + ', '.join(f'{t} ({msgtype})' for t, msgtype in sorted(missing.items())))
    if not any(info[t][1] for t in classes):
        if not info:
            raise NothingToPlay(f'{path} has no topics to play')
        if not classes:
            raise NothingToPlay(f'{path} has no playable topic: none of its message types is '
                                'installed')
        raise NothingToPlay(f'{path} has no messages on its playable topics {sorted(classes)}')
    info = {t: info[t] for t in classes}
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                     reliability=ReliabilityPolicy.RELIABLE if reliable
                     else ReliabilityPolicy.BEST_EFFORT)
    publishers = {t: node.create_publisher(cls, _remap(t, remaps), qos)
                  for t, cls in classes.items()}
    clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, 10) if clock else None
    stop = should_stop or (lambda: False)

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not stop():
        if all(p.get_subscription_count() > 0 for p in publishers.values()):
            break
        time.sleep(0.02)
    time.sleep(delay)

    def publish_clock(ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(ns, 1_000_000_000)
        clock_pub.publish(msg)

    counts = dict.fromkeys(info, 0)
    total = sum(n for _, n in info.values())
    bar = Progress(total) if progress else None
    start_wall = start_bag = None
    done = 0
    for message in bag_io.read_messages(path, topics=info):
        if stop():
            break
        if start_bag is None:
            start_bag, start_wall = message.timestamp, time.monotonic()
            if clock_pub is not None:
                publish_clock(start_bag)
        if rate > 0:
            due = start_wall + (message.timestamp - start_bag) * 1e-9 / rate
            while not stop():
                now = time.monotonic()
                if now >= due:
                    break
                if clock_pub is not None:
                    bag_now = start_bag + int((now - start_wall) * rate * 1e9)
                    publish_clock(min(bag_now, message.timestamp))
                    time.sleep(min(due - now, 1.0 / clock_hz))
                else:
                    time.sleep(due - now)
        if clock_pub is not None:
            publish_clock(message.timestamp)
        publishers[message.topic].publish(message.rawdata)
        if on_publish is not None:
            on_publish(message)
        counts[message.topic] += 1
        done += 1
        if bar is not None:
            bar.update(done, f't={(message.timestamp - start_bag) * 1e-9:.2f}s')
    if reliable and linger > 0:
        from rclpy.duration import Duration

        end = time.monotonic() + linger
        for publisher in publishers.values():
            left = max(end - time.monotonic(), 0.0)
            publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
    return counts


def _parse_remaps(items: list[str]) -> dict[str, str]:
    remaps = {}
    for item in items:
        source, sep, target = item.partition(':=')
        if not sep or not source or not target:
            raise argparse.ArgumentTypeError(f'remap must look like FROM:=TO, got {item!r}')
        remaps[source] = target
    return remaps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m lotus_ros.bags.player', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help='rosbag2 folder (mcap or sqlite3)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed factor (2 = twice as fast; 0 = as fast as possible)')
    parser.add_argument('--clock', action='store_true', help='publish /clock from bag time')
    parser.add_argument('--topics', nargs='+', help='only these bag topics')
    parser.add_argument('--remap', nargs='+', default=[], metavar='FROM:=TO',
                        help='publish bag topic FROM on TO')
    parser.add_argument('--best-effort', action='store_true',
                        help='best-effort publishers instead of reliable')
    parser.add_argument('--depth', type=int, default=100, help='publisher queue depth')
    parser.add_argument('--wait', type=float, default=5.0,
                        help='seconds to wait for subscribers before playing')
    parser.add_argument('--delay', type=float, default=0.5,
                        help='seconds to wait after the subscribers are seen, before playing')
    parser.add_argument('--linger', type=float, default=3.0,
                        help='seconds to wait at the end for reliable subscribers to acknowledge')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        remaps = _parse_remaps(args.remap)
        bag_io.bag_topics(args.bag)
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        print(f'lotus_ros.bags.player: cannot open {args.bag}: {exc}', file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import ExternalShutdownException

    # Not sys.argv: --remap FROM:=TO is the player's own option, and rcl would warn that it
    # looks like a deprecated remap rule.
    rclpy.init(args=[])
    node = rclpy.create_node('lotus_bag_player')
    try:
        counts = play_bag(node, args.bag, rate=args.rate, clock=args.clock, topics=args.topics,
                          remaps=remaps, reliable=not args.best_effort, depth=args.depth,
                          wait=args.wait, delay=args.delay, linger=args.linger,
                          progress=not args.no_progress)
    except NothingToPlay as exc:
        print(f'lotus_ros.bags.player: nothing was played: {exc}', file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f'lotus_ros.bags.player: {exc}', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(', '.join(f'{topic}: {n}' for topic, n in counts.items()), file=sys.stderr)
    if not any(counts.values()):
        print('lotus_ros.bags.player: nothing was played', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
