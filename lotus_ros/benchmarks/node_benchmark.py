"""
Node overhead benchmark: python -m lotus_ros.node_benchmark [--model-delay 0.04] [--width 640].

Runs lotus_node as its own process with the model double (instant by default, so only the node's
own work is timed; --model-delay makes it sleep per inference with the GIL released, the way a
GPU wait does), every output on, and feeds it image + camera_info + sparse depth at --rate from
this process, which also subscribes to every output. Prints the node's per-stage time (from
/diagnostics), the sustained output rate and latency this other process sees, as a Markdown
table, then the efficiency (output rate / what the model and the camera allow), the node's CPU
time per published frame and its stamp-to-publish latency.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import tempfile
import time

import numpy as np

from lotus_ros.benchmarks.model_double import DOUBLE_FACTORY, ModelDouble, ramp

SCALE = 2.0           # metric disparity = SCALE * relative disparity (the instant model's truth)
STAGES = ('assemble', 'decode', 'inference', 'postprocess', 'align', 'pack', 'publish')


def synthetic_inputs(width: int, height: int):
    """Images, K (row-major 3x3) and a LiDAR-like sparse depth consistent with ramp()."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    f = 0.8 * width
    k = [f, 0.0, width / 2 - 0.5, 0.0, f, height / 2 - 0.5, 0.0, 0.0, 1.0]
    sparse = np.full((height, width), np.nan, np.float32)
    rows = np.arange(height // 3, height, max(height // 32, 1))
    sparse[rows, ::4] = 1.0 / (SCALE * ramp(height, width)[rows, ::4])
    return images, k, sparse


def processor_only(width: int, height: int, frames: int = 30,
                   model_delay: float = 0.0) -> dict[str, float]:
    """Mean ms per stage of FrameProcessor alone (no transport, no other process)."""
    from std_msgs.msg import Header

    from lotus_ros.ros.frame_assembly import FrameInputs
    from lotus_ros.ros.images import array_to_image
    from lotus_ros.ros.messages import pinhole_camera_info
    from lotus_ros.ros.processor import FrameProcessor

    proc = FrameProcessor(ModelDouble(noise=0.0, delay=model_delay), {})
    images, k, sparse = synthetic_inputs(width, height)
    sums: dict[str, float] = {}
    t0 = 0.0
    for i in range(frames + 3):
        if i == 3:
            sums, t0 = {}, time.perf_counter()
        hdr = Header(frame_id='camera_optical')
        hdr.stamp.sec = 1000 + i
        res = proc.process(FrameInputs(array_to_image(images[i % 4], 'rgb8', hdr),
                                       pinhole_camera_info(k, width, height, hdr),
                                       array_to_image(sparse, '32FC1', hdr)))
        for key, v in res.timings.items():
            sums[key] = sums.get(key, 0.0) + v
    out = {key: 1e3 * v / frames for key, v in sums.items()}
    out['wall'] = 1e3 * (time.perf_counter() - t0) / frames
    return out


def run(width: int, height: int, rate: float, duration: float, warmup: float,
        domain: int, model_delay: float = 0.0) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image

    from lotus_ros.core.stamps import stamp_seconds
    from lotus_ros.demo.node_process import Client, NodeProcess, ros_environment
    from lotus_ros.ros.images import array_to_image
    from lotus_ros.ros.messages import header_at, pinhole_camera_info
    from lotus_ros.ros.outputs import output_types

    env = ros_environment(domain)
    env.update(LOTUS_DOUBLE_NOISE='0', LOTUS_DOUBLE_DELAY=repr(model_delay))
    params = {'engine_factory': DOUBLE_FACTORY, 'lazy': False, 'drop_frames': True,
              'alignment.source': 'sparse_depth', 'points.color': True}
    log = tempfile.NamedTemporaryFile(prefix='lotus_node_benchmark_', suffix='.log',
                                      delete=False)
    proc = NodeProcess(Path(log.name), env, params=params)
    client = Client(domain, 'lotus_node_benchmark')
    topics = output_types()
    qos = Client.reliable(10)
    subs = [client.subscribe(typ, topic, qos, record=lambda m: stamp_seconds(m.header.stamp))
            for topic, typ in topics.items()]
    client.subscribe(DiagnosticArray, '/diagnostics', 10)
    pub_img = client.publisher(Image, 'image', qos)
    pub_info = client.publisher(CameraInfo, 'camera_info', qos)
    pub_sparse = client.publisher(Image, 'sparse_depth', qos)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                pub_img.get_subscription_count() and all(
                    s.get_publisher_count() for s in subs)):
            if not proc.alive():
                raise RuntimeError('lotus_node exited: ' + proc.log())
            time.sleep(0.05)
        time.sleep(1.0)

        images, k, sparse = synthetic_inputs(width, height)

        t_start = time.monotonic()
        t_measure = t_start + warmup
        n = 0
        cpu_start = None
        while time.monotonic() - t_start < warmup + duration:
            if cpu_start is None and time.monotonic() >= t_measure:
                cpu_start = proc.cpu_seconds()
            hdr = header_at(time.time(), 'camera_optical')
            pub_info.publish(pinhole_camera_info(k, width, height, hdr))
            pub_sparse.publish(array_to_image(sparse, '32FC1', hdr))
            pub_img.publish(array_to_image(images[n % len(images)], 'rgb8', hdr))
            n += 1
            time.sleep(max(0.0, t_start + n / rate - time.monotonic()))
        t_end = time.monotonic()
        cpu_used = proc.cpu_seconds() - cpu_start
        time.sleep(1.2)
    finally:
        client.close()
        proc.stop()
    received = {topic: client.timed(topic) for topic in topics}
    diag = client.messages('/diagnostics')

    wall_start = time.time() - (time.monotonic() - t_measure)
    wall_end = time.time() - (time.monotonic() - t_end)
    rates, latency = {}, {}
    for topic, recs in received.items():
        window = [r for r in recs if wall_start <= r[0] <= wall_end]
        rates[topic] = len(window) / (wall_end - wall_start)
        lat = [r[0] - r[1] for r in window]
        latency[topic] = (float(np.percentile(lat, 50)), float(np.percentile(lat, 95))) \
            if lat else (float('nan'), float('nan'))
    stages = {}
    for arr in reversed(diag):
        for st in arr.status:
            if st.name.endswith('pipeline'):
                stages = {kv.key: kv.value for kv in st.values}
                break
        if stages:
            break
    frames = rates['depth/relative'] * (wall_end - wall_start)
    return {'rates': rates, 'latency': latency, 'diag': stages, 'sent_rate': rate,
            'width': width, 'height': height, 'model_delay': model_delay,
            'cpu_ms_per_frame': 1e3 * cpu_used / frames if frames else float('nan')}


def efficiency(res: dict) -> float:
    """Frames published per second over what the camera and the model allow: min(rate, 1/delay)."""
    delay = res['model_delay']
    ideal = res['sent_rate'] if delay <= 0 else min(res['sent_rate'], 1.0 / delay)
    # outputs this configuration does not make (uncertainty, relative_raw) publish nothing
    published = [rate for rate in res['rates'].values() if rate > 0]
    return min(published, default=0.0) / ideal


def table(res: dict) -> str:
    d, alone = res['diag'], res.get('alone', {})
    delay = res['model_delay']
    model = f'model double sleeping {delay * 1e3:.0f} ms' if delay > 0 else 'instant model'
    lines = [f"lotus_node, {model}, {res['width']}x{res['height']}, every output on, "
             f"input {res['sent_rate']:.0f} Hz", '',
             '| node stage | in the node, ms/frame | FrameProcessor alone, ms/frame |',
             '| --- | ---: | ---: |']
    total = total_alone = 0.0
    for s in STAGES:
        v = float(d.get(f'stage_{s}_ms', 'nan'))
        a = alone.get(s, float('nan'))
        total += 0.0 if np.isnan(v) else v
        total_alone += 0.0 if np.isnan(a) else a
        alone_cell = '-' if np.isnan(a) else f'{a:.2f}'
        lines.append(f'| {s} | {v:.2f} | {alone_cell} |')
    lines.append(f'| **total** | **{total:.2f}** | **{total_alone:.2f}** |')
    lines += ['', '| output (subscriber in another process) | rate Hz | latency p50 ms | '
              'p95 ms |', '| --- | ---: | ---: | ---: |']
    for topic, r in res['rates'].items():
        p50, p95 = res['latency'][topic]
        lines.append(f'| {topic} | {r:.1f} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} |')
    lines.append('')
    lines.append(f"node process CPU time per published frame (all threads: worker, executor, "
                 f"DDS): {res['cpu_ms_per_frame']:.1f} ms")
    lines.append(f"node diagnostics: dropped {d.get('frames_dropped', '?')}, processed "
                 f"{d.get('frames_processed', '?')}")
    lines.append(f'efficiency: {efficiency(res):.2f} (slowest published output rate / '
                 f'min(input rate, 1/model delay))')
    p50, p95 = (1e3 * float(d.get(f'latency_{q}_s', 'nan')) for q in ('p50', 'p95'))
    lines.append(f'stamp-to-publish (node diagnostics): p50 {p50:.1f} ms, p95 {p95:.1f} ms')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--rate', type=float, default=30.0, help='input rate, Hz')
    ap.add_argument('--duration', type=float, default=10.0, help='measured seconds')
    ap.add_argument('--warmup', type=float, default=2.0)
    ap.add_argument('--model-delay', type=float, default=0.0, metavar='SECONDS',
                    help='the model double sleeps this long per inference (0: instant)')
    ap.add_argument('--domain-id', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', 0) or 0)
                    or 90 + os.getpid() % 40)
    args = ap.parse_args(argv)
    alone = processor_only(args.width, args.height, model_delay=args.model_delay)
    res = run(args.width, args.height, args.rate, args.duration, args.warmup, args.domain_id,
              args.model_delay)
    res['alone'] = alone
    print(table(res))
    return 0


if __name__ == '__main__':
    sys.exit(main())
