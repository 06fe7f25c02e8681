"""
Run the lotus pipeline over a recorded bag without DDS and write the outputs to a new bag.

`python -m lotus_ros.process_bag IN_BAG OUT_BAG [--params config/lotus.yaml] [-p name:=value]`

Every image is processed, in order, by the same FrameProcessor and engine loader the node uses
(so for the same bag and parameters the outputs equal the node's with drop_frames false and lazy
false). camera_info and sparse depth are matched to each image with the node's stamp rules; the
outputs carry the input image's header and are logged at its stamp. Topic names are the node's
output names under --namespace (default: none, like `ros2 run lotus_ros lotus_node`).
"""

from __future__ import annotations

import argparse
from collections import deque
from pathlib import Path
import sys
from typing import Any

import yaml

from lotus_ros import bag_io, installed
from lotus_ros.parameters import (
    SPEC_BY_NAME,
    defaults,
    load_parameter_files,
    validate,
    validate_set,
)

ALIGNMENT_TYPE = 'lotus_ros/msg/DepthAlignment'


def load_params(files: list[str] | None = None, overrides: list[str] | None = None,
                node_name: str = 'lotus', namespace: str = '/lotus') -> dict[str, Any]:
    """
    Return the node's parameters: defaults, then ROS 2 YAML files, then name:=value overrides.

    The files apply as `--params-file` applies them to the node namespace/node_name (default
    the launch file's /lotus/lotus; see parameters.load_parameter_files). Unknown names and
    invalid values raise ValueError with the reason.
    """
    params = defaults()
    params.update(load_parameter_files(files or [], node_name, namespace))
    for item in overrides or []:
        name, sep, text = item.partition(':=')
        if not sep:
            raise ValueError(f'parameter override must look like name:=value, got {item!r}')
        params[name] = yaml.safe_load(text)
    for name, value in params.items():
        if name not in SPEC_BY_NAME:
            if name in ('use_sim_time',) or name.startswith('qos_overrides.'):
                continue
            raise ValueError(f'unknown parameter {name!r}')
        spec = SPEC_BY_NAME[name]
        if isinstance(spec.default, float) and isinstance(value, int) \
                and not isinstance(value, bool):
            params[name] = value = float(value)
        reason = validate(name, value)
        if reason:
            raise ValueError(reason)
    reason = validate_set(params)
    if reason:
        raise ValueError(reason)
    return params


def alignment_msg_text() -> str:
    """Return the DepthAlignment .msg text: installed share directory, else the source tree."""
    path = installed.share_file('msg', 'DepthAlignment.msg')
    if path is None:
        raise FileNotFoundError('DepthAlignment.msg not found (colcon build the package)')
    return path.read_text()


def ros_type_name(msg: object) -> str:
    """Return the type name, like 'sensor_msgs/msg/Image', of an rclpy message instance."""
    package = type(msg).__module__.split('.')[0]
    return f'{package}/msg/{type(msg).__name__}'


def process_bag(in_bag: str | Path, out_bag: str | Path, params: dict[str, Any], *,
                engine=None, storage: str = 'mcap', namespace: str = '',
                image_topic: str = bag_io.TOPIC_IMAGE,
                camera_info_topic: str = bag_io.TOPIC_CAMERA_INFO,
                sparse_topic: str | None = bag_io.TOPIC_SPARSE_DEPTH,
                progress: bool = True) -> dict[str, int]:
    """
    Process every image of in_bag; return message counts per output topic (and 'images').

    engine defaults to the one the node would build from params (engine_factory or the Lotus
    checkpoints).
    """
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2

    from lotus_ros.image_conversions import ImageConversionError
    from lotus_ros.node import load_engine
    from lotus_ros.player import Progress, message_class
    from lotus_ros.processor import FrameInputs, FrameProcessor, static_points_transform
    from lotus_ros.stamp_cache import SideInputs, stamp_to_ns

    topics = bag_io.bag_topics(in_bag)
    if image_topic not in topics:
        raise ValueError(f'{in_bag} has no {image_topic} (topics: {sorted(topics)})')
    if sparse_topic not in topics or params['alignment.source'] == 'none':
        sparse_topic = None
    processor = FrameProcessor(engine if engine is not None else load_engine(params), params)
    classes = {t: message_class(msgtype) for t, (msgtype, _) in topics.items()}
    side = SideInputs(capacity=30)
    # Images wait until every side message logged up to this much later has been read, so a
    # LiDAR scan recorded just after its image is still matched (the node waits briefly too).
    window_ns = int(max(params['camera_info_tolerance'],
                        params['alignment.max_time_difference']) * 1e9)
    prefix = '/' + namespace.strip('/') if namespace.strip('/') else ''
    store = bag_io.make_typestore({ALIGNMENT_TYPE: alignment_msg_text()})
    counts: dict[str, int] = {'images': 0}
    bar = Progress(topics[image_topic][1], 'process') if progress else None
    pending: deque = deque()

    def run(image) -> None:
        stamp_ns = stamp_to_ns(image.header.stamp)
        inputs = FrameInputs(image=image, camera_info=side.match_camera_info(
            stamp_ns, params['camera_info_tolerance']))
        if sparse_topic is not None:
            inputs.sparse = side.match_sparse(stamp_ns, params['alignment.max_time_difference'])
            if isinstance(inputs.sparse, PointCloud2) and inputs.sparse.header.frame_id \
                    not in ('', image.header.frame_id):
                # No tf offline: the node's static fallback.
                inputs.points_transform = static_points_transform(params)
        counts['images'] += 1
        try:
            result = processor.process(inputs)
        except ImageConversionError as exc:
            print(f'process_bag: image at {stamp_ns} ns rejected: {exc}', file=sys.stderr)
            return
        for name, msg in result.outputs.items():
            topic = f'{prefix}/{name}'
            bag.add_topic(topic, ros_type_name(msg))
            bag.write(topic, stamp_ns, serialize_message(msg))
            counts[topic] = counts.get(topic, 0) + 1
        if bar is not None:
            bar.update(counts['images'])

    with bag_io.BagWriter(out_bag, storage=storage, typestore=store) as bag:
        for message in bag_io.read_messages(in_bag, topics=[
                t for t in (image_topic, camera_info_topic, sparse_topic) if t]):
            while pending and pending[0][0] + window_ns < message.timestamp:
                run(pending.popleft()[1])
            msg = deserialize_message(message.rawdata, classes[message.topic])
            if message.topic == image_topic:
                pending.append((message.timestamp, msg))
            elif message.topic == camera_info_topic:
                side.add_camera_info(msg)
            else:
                side.add_sparse(msg)
        while pending:
            run(pending.popleft()[1])
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m lotus_ros.process_bag', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('in_bag')
    parser.add_argument('out_bag', help='new bag folder (must not exist)')
    parser.add_argument('--params', nargs='+', default=[],
                        help='ROS 2 parameter YAML files, applied as --params-file applies '
                        "them to the launch file's node /lotus/lotus")
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='override one parameter (repeatable)')
    parser.add_argument('--storage', choices=bag_io.STORAGES, default='mcap')
    parser.add_argument('--namespace', default='', help='prefix of the output topics')
    parser.add_argument('--image', default=bag_io.TOPIC_IMAGE, help='image topic in the bag')
    parser.add_argument('--camera-info', default=bag_io.TOPIC_CAMERA_INFO)
    parser.add_argument('--sparse', default=bag_io.TOPIC_SPARSE_DEPTH,
                        help='sparse depth (or points) topic in the bag')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, args.param)
    except (OSError, ValueError) as exc:
        print(f'process_bag: bad parameters: {exc}', file=sys.stderr)
        return 2
    if Path(args.out_bag).exists():
        print(f'process_bag: {args.out_bag} exists; choose a new output folder', file=sys.stderr)
        return 2
    try:
        counts = process_bag(args.in_bag, args.out_bag, params, storage=args.storage,
                             namespace=args.namespace, image_topic=args.image,
                             camera_info_topic=args.camera_info, sparse_topic=args.sparse,
                             progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line with the reason, not a traceback
        print(f"process_bag: {type(exc).__name__}: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 1
    print(', '.join(f'{k}: {v}' for k, v in counts.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
