"""
Run the lotus pipeline over a recorded bag without DDS and write the outputs to a new bag.

`python -m lotus_ros.bags.process_bag IN_BAG OUT_BAG [--params config/lotus.yaml] [-p name:=value]`

Every image is processed, in order, by the same FrameProcessor and engine loader the node uses
(so for the same bag and parameters the outputs equal the node's with drop_frames false and lazy
false). camera_info and sparse depth are matched to each image with the node's stamp rules; the
outputs carry the input image's header and are logged at its stamp. Topic names are the node's
output names under --namespace (default: none, like `ros2 run lotus_ros lotus_node`). A bag is
one camera: with a multi-camera parameter file, --camera NAME applies that camera's own values
(cameras_params.NAME.*) over the global ones.
"""

from __future__ import annotations

import argparse
from collections import Counter, deque
from pathlib import Path
import sys
from typing import Any

import yaml

from lotus_ros import installed
from lotus_ros.bags import bag_io
from lotus_ros.ros.parameters import (
    CAMERA_PARAMS_PREFIX,
    SPEC_BY_NAME,
    defaults,
    load_parameter_files,
    python_value,
    split_camera_parameter,
    validate,
    validate_set,
)

ALIGNMENT_TYPE = 'lotus_ros/msg/DepthAlignment'


def load_params(files: list[str] | None = None, overrides: list[str] | None = None,
                node_name: str = 'lotus', namespace: str = '/lotus',
                camera: str = '') -> dict[str, Any]:
    """
    Return the node's parameters: defaults, then ROS 2 YAML files, then name:=value overrides.

    The files apply as `--params-file` applies them to the node namespace/node_name (default
    the launch file's /lotus/lotus; see parameters.load_parameter_files); then the camera's own
    values (cameras_params.<camera>.*; '' = the global values only). Unknown names and invalid
    values raise ValueError with the reason.
    """
    params = defaults()
    params.update(load_parameter_files(files or [], node_name, namespace))
    for item in overrides or []:
        name, sep, text = item.partition(':=')
        if not sep:
            raise ValueError(f'parameter override must look like name:=value, got {item!r}')
        params[name] = yaml.safe_load(text)
    if camera and camera not in params['cameras']:
        raise ValueError(f"camera {camera!r} is not one of cameras {params['cameras']}")
    own = {}
    for name in [n for n in params if n.startswith(CAMERA_PARAMS_PREFIX)]:
        split = split_camera_parameter(name, params['cameras'])
        if split is None:
            raise ValueError(f'unknown parameter {name!r} (cameras: {params["cameras"]})')
        value = params.pop(name)
        if split[0] == camera:
            own[split[1]] = value
    params.update(own)
    for name, value in params.items():
        if name not in SPEC_BY_NAME:
            if name in ('use_sim_time',) or name.startswith('qos_overrides.'):
                continue
            raise ValueError(f'unknown parameter {name!r}')
        params[name] = value = python_value(SPEC_BY_NAME[name], value)
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
    Process every image of in_bag; return message counts and frame problems by reason.

    The counts are 'images', one per output topic, and 'problem <reason>' per frame problem
    (rejected images, missing camera_info, ...) with the reasons the node counts in /diagnostics.

    engine defaults to the one the node would build from params (engine_factory or the Lotus
    checkpoints).
    """
    from rclpy.serialization import deserialize_message, serialize_message

    from lotus_ros.bags.player import Progress, message_class
    from lotus_ros.core.engine import load_engine
    from lotus_ros.core.stamps import stamp_to_ns
    from lotus_ros.ros.frame_assembly import FrameAssembler
    from lotus_ros.ros.images import ImageConversionError
    from lotus_ros.ros.processor import FrameProcessor

    topics = bag_io.bag_topics(in_bag)
    if image_topic not in topics:
        raise ValueError(f'{in_bag} has no {image_topic} (topics: {sorted(topics)})')
    if sparse_topic not in topics or params['alignment.source'] == 'none':
        sparse_topic = None
    if camera_info_topic not in topics:
        camera_info_topic = None
    # Only the topics read: a bag may hold others whose types are not installed (/tf, ...).
    read = [t for t in (image_topic, camera_info_topic, sparse_topic) if t]
    classes = {t: message_class(topics[t][0]) for t in read}
    processor = FrameProcessor(engine if engine is not None else load_engine(params), params)
    # No tf offline: clouds in another frame use the node's static fallback.
    assembler = FrameAssembler(capacity=30)
    # Images wait until every side message logged up to this much later has been read, so a
    # camera_info or LiDAR scan recorded just after its image is still matched (the node waits
    # for them too).
    window_ns = int(max(params['camera_info_tolerance'], params['camera_info_wait'],
                        params['alignment.max_time_difference']) * 1e9)
    prefix = '/' + namespace.strip('/') if namespace.strip('/') else ''
    store = bag_io.make_typestore({ALIGNMENT_TYPE: alignment_msg_text()})
    counts: dict[str, int] = {'images': 0}
    problems: Counter[str] = Counter()
    bar = Progress(topics[image_topic][1], 'process') if progress else None
    pending: deque = deque()

    def run(image) -> None:
        stamp_ns = stamp_to_ns(image.header.stamp)
        inputs = assembler.assemble(image, params)
        counts['images'] += 1
        try:
            result = processor.process(inputs)
        except ImageConversionError as exc:
            problems['image_' + exc.reason] += 1
            print(f'process_bag: image at {stamp_ns} ns rejected: {exc}', file=sys.stderr)
            return
        except Exception as exc:  # the node counts and skips a frame the engine rejects, too
            problems['processing_error'] += 1
            print(f'process_bag: frame at {stamp_ns} ns failed: {type(exc).__name__}: '
                  f"{' '.join(str(exc).split())}", file=sys.stderr)
            return
        for reason, _ in result.problems:
            problems[reason] += 1
        for name, msg in result.outputs.items():
            topic = f'{prefix}/{name}'
            bag.add_topic(topic, ros_type_name(msg))
            bag.write(topic, stamp_ns, serialize_message(msg))
            counts[topic] = counts.get(topic, 0) + 1
        if bar is not None:
            bar.update(counts['images'])

    with bag_io.BagWriter(out_bag, storage=storage, typestore=store) as bag:
        for message in bag_io.read_messages(in_bag, topics=read):
            while pending and pending[0][0] + window_ns < message.timestamp:
                run(pending.popleft()[1])
            msg = deserialize_message(message.rawdata, classes[message.topic])
            if message.topic == image_topic:
                pending.append((message.timestamp, msg))
            elif message.topic == camera_info_topic:
                assembler.add_camera_info(msg)
            else:
                assembler.add_sparse(msg)
        while pending:
            run(pending.popleft()[1])
    counts.update({f'problem {reason}': n for reason, n in sorted(problems.items())})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m lotus_ros.bags.process_bag',
                                     description=__doc__,
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
    parser.add_argument('--camera', default='',
                        help='camera of a multi-camera parameter file whose own values apply')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, args.param, camera=args.camera)
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
