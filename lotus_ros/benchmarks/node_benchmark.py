"""
Node benchmark: python -m lotus_ros.node_benchmark [--cameras 3] [--model-delay 0.03].

Runs lotus_node as its own process with the model double (instant by default, so only the node's
own work is timed; --model-delay D and --model-delay-per-image d make a model call of b images
sleep D + d * b with the GIL released, the way a GPU wait does), every output on, and feeds it
image + camera_info + sparse depth at --rate per camera from this process (camera i's phase
offset by i / (cameras * rate): unsynchronised cameras), which also subscribes to every output
of every camera. Prints Markdown tables: the node's per-stage time (from /diagnostics), the
sustained output rate and latency this other process sees, the efficiency (output rate / what
the model and the cameras allow), the node's CPU time per published frame and its
stamp-to-publish latency; with several cameras also the model calls by batch size.
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
NAN2 = (float('nan'), float('nan'))


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


def camera_names(count: int) -> list[str]:
    """[''] for one camera (today's topic names), else cam0, cam1, ... (the node's `cameras`)."""
    return [''] if count == 1 else [f'cam{i}' for i in range(count)]


def ideal_total_rate(rate: float, cameras: int, delay: float, delay_per_image: float,
                     max_batch: int) -> float:
    """
    Frames per second the cameras and the model allow together: min(cameras * rate, b / cost).

    A call of b = min(cameras, max_batch) images costs delay + delay_per_image * b, so full
    batches are the model's best throughput.
    """
    batch = min(cameras, max_batch)
    cost = delay + delay_per_image * batch
    return cameras * rate if cost <= 0 else min(cameras * rate, batch / cost)


def processor_only(width: int, height: int, frames: int = 30, model_delay: float = 0.0,
                   delay_per_image: float = 0.0) -> dict[str, float]:
    """Mean ms per stage of FrameProcessor alone (no transport, no other process)."""
    from std_msgs.msg import Header

    from lotus_ros.ros.frame_assembly import FrameInputs
    from lotus_ros.ros.images import array_to_image
    from lotus_ros.ros.messages import pinhole_camera_info
    from lotus_ros.ros.processor import FrameProcessor

    proc = FrameProcessor(ModelDouble(noise=0.0, delay=model_delay,
                                      delay_per_image=delay_per_image), {})
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


def window_statistics(records: list, start: float, end: float) -> tuple[float, tuple]:
    """Rate and (p50, p95) latency of (receive time, header stamp) records in [start, end]."""
    window = [r for r in records if start <= r[0] <= end]
    lat = [r[0] - r[1] for r in window]
    latency = (float(np.percentile(lat, 50)), float(np.percentile(lat, 95))) if lat else NAN2
    return len(window) / (end - start), latency


def status_values(arr, name: str) -> dict[str, str] | None:
    """Key -> value of the status called `name` in one DiagnosticArray, None without it."""
    for st in arr.status:
        if st.name == name:
            return {kv.key: kv.value for kv in st.values}
    return None


def latest_status(timed_arrays: list, name: str) -> dict:
    """Values of the newest status `name` among (receive time, DiagnosticArray) records."""
    for _, arr in reversed(timed_arrays):
        values = status_values(arr, name)
        if values is not None:
            return values
    return {}


def batch_calls(start: dict, end: dict) -> dict[int, tuple[int, float]]:
    """Batch size -> (calls, mean ms per call) between two `lotus: engine` statuses."""
    calls = {}
    for key, value in end.items():
        if not key.startswith('batch_size_'):
            continue
        size = int(key.removeprefix('batch_size_'))
        n1, n0 = int(value), int(start.get(key, 0))
        m1 = float(end[f'inference_ms_batch_{size}'])
        m0 = float(start.get(f'inference_ms_batch_{size}', 0.0))
        if n1 > n0:
            calls[size] = (n1 - n0, (n1 * m1 - n0 * m0) / (n1 - n0))
    return dict(sorted(calls.items()))


def machine_cpu_seconds() -> float:
    """CPU seconds all processes of the machine used since boot (NaN without /proc/stat)."""
    try:
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float('nan')
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')


def run(width: int, height: int, rate: float, duration: float, warmup: float,
        domain: int, model_delay: float = 0.0, *, cameras: int = 1,
        delay_per_image: float = 0.0, batch_max_size: int | None = None,
        batch_max_wait_ms: float | None = None) -> dict:
    """Feed the node `cameras` streams at `rate` each; measure what every output delivers."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image

    from lotus_ros.core.stamps import stamp_seconds
    from lotus_ros.demo.node_process import Client, NodeProcess, ros_environment
    from lotus_ros.ros.camera import camera_topic, status_prefix
    from lotus_ros.ros.images import array_to_image
    from lotus_ros.ros.messages import header_at, pinhole_camera_info
    from lotus_ros.ros.node import NODE_NAME
    from lotus_ros.ros.outputs import output_types
    from lotus_ros.ros.parameters import defaults

    names = camera_names(cameras)
    node_defaults = defaults()
    max_batch = batch_max_size or node_defaults['batch.max_size']
    max_wait_ms = node_defaults['batch.max_wait_ms'] if batch_max_wait_ms is None else \
        batch_max_wait_ms
    env = ros_environment(domain)
    env.update(LOTUS_DOUBLE_NOISE='0', LOTUS_DOUBLE_DELAY=repr(model_delay),
               LOTUS_DOUBLE_DELAY_PER_IMAGE=repr(delay_per_image))
    params = {'engine_factory': DOUBLE_FACTORY, 'lazy': False, 'drop_frames': True,
              'alignment.source': 'sparse_depth', 'points.color': True}
    if cameras > 1:
        params['cameras'] = names
    if batch_max_size is not None:
        params['batch.max_size'] = batch_max_size
    if batch_max_wait_ms is not None:
        params['batch.max_wait_ms'] = float(batch_max_wait_ms)
    log = tempfile.NamedTemporaryFile(prefix='lotus_node_benchmark_', suffix='.log',
                                      delete=False)
    proc = NodeProcess(Path(log.name), env, params=params)
    client = Client(domain, 'lotus_node_benchmark')
    topics = output_types()
    qos = Client.reliable(10)
    subs = [client.subscribe(typ, camera_topic(c, topic), qos,
                             record=lambda m: stamp_seconds(m.header.stamp))
            for c in names for topic, typ in topics.items()]
    client.subscribe(DiagnosticArray, '/diagnostics', 10)
    # per camera: (camera_info, sparse depth, image), published in this order
    pubs = [(client.publisher(CameraInfo, camera_topic(c, 'camera_info'), qos),
             client.publisher(Image, camera_topic(c, 'sparse_depth'), qos),
             client.publisher(Image, camera_topic(c, 'image'), qos)) for c in names]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                all(p[2].get_subscription_count() for p in pubs) and all(
                    s.get_publisher_count() for s in subs)):
            if not proc.alive():
                raise RuntimeError('lotus_node exited: ' + proc.log())
            time.sleep(0.05)
        time.sleep(1.0)

        images, k, sparse = synthetic_inputs(width, height)

        # tick n publishes camera n % cameras: camera i runs i / (cameras * rate) behind camera 0
        t_start = time.monotonic()
        t_measure = t_start + warmup
        n = 0
        cpu_start = None
        while time.monotonic() - t_start < warmup + duration:
            if cpu_start is None and time.monotonic() >= t_measure:
                cpu_start = proc.cpu_seconds()
                # this process (publishers, subscribers) and the machine (other helpers too)
                own_start, machine_start = time.process_time(), machine_cpu_seconds()
            camera = n % cameras
            pub_info, pub_sparse, pub_img = pubs[camera]
            hdr = header_at(time.time(), f'{names[camera] or "camera"}_optical')
            pub_info.publish(pinhole_camera_info(k, width, height, hdr))
            pub_sparse.publish(array_to_image(sparse, '32FC1', hdr))
            pub_img.publish(array_to_image(images[n // cameras % len(images)], 'rgb8', hdr))
            n += 1
            time.sleep(max(0.0, t_start + n / (cameras * rate) - time.monotonic()))
        t_end = time.monotonic()
        cpu_used = proc.cpu_seconds() - cpu_start
        own_used = time.process_time() - own_start
        machine_used = machine_cpu_seconds() - machine_start
        time.sleep(1.2)
    finally:
        client.close()
        proc.stop()
    diag = client.timed('/diagnostics')

    wall_start = time.time() - (time.monotonic() - t_measure)
    wall_end = time.time() - (time.monotonic() - t_end)
    per_camera = {}
    for c in names:
        stats = {topic: window_statistics(client.timed(camera_topic(c, topic)),
                                          wall_start, wall_end) for topic in topics}
        per_camera[c] = {'rates': {topic: s[0] for topic, s in stats.items()},
                         'latency': {topic: s[1] for topic, s in stats.items()},
                         'diag': latest_status(diag, f'{status_prefix(NODE_NAME, c)}: pipeline')}
    # model calls between the last engine status before the window (else the first) and the last
    engine = [(received, values) for received, arr in diag
              if (values := status_values(arr, f'{NODE_NAME}: engine')) is not None] or \
        [(float('nan'), {})]
    before = [e for e in engine if e[0] <= wall_start]
    engine_start, engine_end = (before[-1] if before else engine[0]), engine[-1]
    frames = sum(cam['rates']['depth/relative'] for cam in per_camera.values()) * \
        (wall_end - wall_start)
    return {'cameras': per_camera, 'sent_rate': rate, 'width': width, 'height': height,
            'model_delay': model_delay, 'delay_per_image': delay_per_image,
            'batch_max_size': max_batch, 'batch_max_wait_ms': max_wait_ms,
            'batches': batch_calls(engine_start[1], engine_end[1]),
            'batches_s': engine_end[0] - engine_start[0],
            'cpu_ms_per_frame': 1e3 * cpu_used / frames if frames else float('nan'),
            'node_cores': cpu_used / (t_end - t_measure),
            'benchmark_cores': own_used / (t_end - t_measure),
            'machine_cores': machine_used / (t_end - t_measure)}


def slowest_rate(rates: dict[str, float]) -> float:
    """Rate of the slowest output that publishes (uncertainty, relative_raw: never here)."""
    return min((rate for rate in rates.values() if rate > 0), default=0.0)


def ideal_rate(res: dict) -> float:
    return ideal_total_rate(res['sent_rate'], len(res['cameras']), res['model_delay'],
                            res['delay_per_image'], res['batch_max_size'])


def efficiency(res: dict) -> float:
    """Frames published per second over what the cameras and the model allow (one camera)."""
    (cam,) = res['cameras'].values()
    return slowest_rate(cam['rates']) / ideal_rate(res)


def model_label(res: dict) -> str:
    delay, per_image = res['model_delay'], res['delay_per_image']
    if delay <= 0 and per_image <= 0:
        return 'instant model'
    extra = f' + {per_image * 1e3:.0f} ms per image' if per_image > 0 else ''
    return f'model double sleeping {delay * 1e3:.0f} ms{extra}'


def ms(value) -> float:
    return 1e3 * float(value)


def stage_table(columns: dict[str, dict]) -> list[str]:
    """Rows of ms per frame per stage, one column per source of stage timings."""
    lines = ['| node stage | ' + ' | '.join(columns) + ' |',
             '| --- |' + ' ---: |' * len(columns)]
    totals = [0.0] * len(columns)
    for s in STAGES:
        cells = []
        for i, values in enumerate(columns.values()):
            v = float(values.get(s, 'nan'))
            totals[i] += 0.0 if np.isnan(v) else v
            cells.append('-' if np.isnan(v) else f'{v:.2f}')
        lines.append(f'| {s} | ' + ' | '.join(cells) + ' |')
    lines.append('| **total** | ' + ' | '.join(f'**{t:.2f}**' for t in totals) + ' |')
    return lines


def node_stages(diag: dict[str, str]) -> dict[str, float]:
    """Stage -> ms per frame from a pipeline status (stage_<name>_ms)."""
    return {s: float(diag[f'stage_{s}_ms']) for s in STAGES if f'stage_{s}_ms' in diag}


def table(res: dict) -> str:
    """Report one camera: stages, every output's rate and latency, efficiency."""
    (cam,) = res['cameras'].values()
    d = cam['diag']
    lines = [f"lotus_node, {model_label(res)}, {res['width']}x{res['height']}, every output "
             f"on, input {res['sent_rate']:.0f} Hz", '']
    lines += stage_table({'in the node, ms/frame': node_stages(d),
                          'FrameProcessor alone, ms/frame': res.get('alone', {})})
    lines += ['', '| output (subscriber in another process) | rate Hz | latency p50 ms | '
              'p95 ms |', '| --- | ---: | ---: | ---: |']
    for topic, r in cam['rates'].items():
        p50, p95 = cam['latency'][topic]
        lines.append(f'| {topic} | {r:.1f} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} |')
    lines.append('')
    lines.append(f"node process CPU time per published frame (all threads: worker, executor, "
                 f"DDS): {res['cpu_ms_per_frame']:.1f} ms")
    lines.append(f"node diagnostics: dropped {d.get('frames_dropped', '?')}, processed "
                 f"{d.get('frames_processed', '?')}")
    lines.append(f'efficiency: {efficiency(res):.2f} (slowest published output rate / '
                 f'min(input rate, 1/model delay))')
    p50, p95 = (ms(d.get(f'latency_{q}_s', 'nan')) for q in ('p50', 'p95'))
    lines.append(f'stamp-to-publish (node diagnostics): p50 {p50:.1f} ms, p95 {p95:.1f} ms')
    return '\n'.join(lines)


def multi_table(res: dict) -> str:
    """Report several cameras: per camera and total rates, efficiency, batches, stages."""
    cams = res['cameras']
    count, rate = len(cams), res['sent_rate']
    ideal = ideal_rate(res)
    lines = [f"lotus_node, {count} cameras, {model_label(res)}, {res['width']}x"
             f"{res['height']}, every output on, input {rate:.0f} Hz per camera (phases "
             f"{1e3 / (count * rate):.0f} ms apart), batch.max_size {res['batch_max_size']}, "
             f"batch.max_wait_ms {res['batch_max_wait_ms']:g}",
             '', '| camera | slowest output Hz | ideal Hz | efficiency | latency p50 ms | '
             'p95 ms | node stamp-to-publish p50 ms | p95 ms | dropped | processed |',
             '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
    total = 0.0
    for name, cam in cams.items():
        slowest = slowest_rate(cam['rates'])
        total += slowest
        # the worst output: the one published last (points, alignment) bounds the frame's
        p50 = max((lat[0] for lat in cam['latency'].values() if not np.isnan(lat[0])),
                  default=float('nan'))
        p95 = max((lat[1] for lat in cam['latency'].values() if not np.isnan(lat[1])),
                  default=float('nan'))
        d = cam['diag']
        lines.append(f"| {name} | {slowest:.1f} | {ideal / count:.1f} | "
                     f"{slowest / (ideal / count):.2f} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} | "
                     f"{ms(d.get('latency_p50_s', 'nan')):.1f} | "
                     f"{ms(d.get('latency_p95_s', 'nan')):.1f} | "
                     f"{d.get('frames_dropped', '?')} | {d.get('frames_processed', '?')} |")
    lines.append(f'| **total** | **{total:.1f}** | {ideal:.1f} | **{total / ideal:.2f}** | '
                 f'| | | | | |')
    lines += ['', 'latency: receive time in this process - header stamp, of the worst output; '
              f'ideal total = min(cameras x rate, b / (D + d b)), b = min(cameras, '
              f'batch.max_size) = {min(count, res["batch_max_size"])}', '',
              '| model calls (measured window) | calls | images | ms per call | '
              'model cost D + d b, ms |', '| --- | ---: | ---: | ---: | ---: |']
    batches = res['batches']
    for size, (calls, mean_ms) in batches.items():
        cost = ms(res['model_delay'] + res['delay_per_image'] * size)
        lines.append(f'| batch of {size} | {calls} | {size * calls} | {mean_ms:.1f} | '
                     f'{cost:.0f} |')
    calls = sum(n for n, _ in batches.values())
    images = sum(size * n for size, (n, _) in batches.items())
    lines.append(f'| **all** | {calls} | {images} | | |')
    if calls:
        busy = sum(n * mean_ms for n, mean_ms in batches.values()) / ms(res['batches_s'])
        lines.append(f'\n{images / calls:.2f} images per model call; the model is busy '
                     f'{100 * busy:.0f}% of the time')
    lines += [''] + stage_table({**{f'{name}, ms/frame': node_stages(cam['diag'])
                                    for name, cam in cams.items()},
                                 'FrameProcessor alone, ms/frame': res.get('alone', {})})
    lines += ['', '| output | ' + ' | '.join(f'{name} Hz / p95 ms' for name in cams) + ' |',
              '| --- |' + ' ---: |' * count]
    for topic in next(iter(cams.values()))['rates']:
        cells = [f"{cam['rates'][topic]:.1f} / {cam['latency'][topic][1] * 1e3:.0f}"
                 for cam in cams.values()]
        lines.append(f'| {topic} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append(f"node process CPU time per published frame (all threads: worker, executor, "
                 f"DDS): {res['cpu_ms_per_frame']:.1f} ms")
    lines.append(f"CPU cores busy in the window: node {res['node_cores']:.2f}, this process "
                 f"(publishers, subscribers) {res['benchmark_cores']:.2f}, the whole machine "
                 f"{res['machine_cores']:.2f} of {os.cpu_count()}")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument('--width', type=int, default=640)
    ap.add_argument('--height', type=int, default=480)
    ap.add_argument('--rate', type=float, default=30.0, help='input rate per camera, Hz')
    ap.add_argument('--cameras', type=int, default=1,
                    help="cameras of the node (1: today's topics, else cam0, cam1, ...)")
    ap.add_argument('--duration', type=float, default=10.0, help='measured seconds')
    ap.add_argument('--warmup', type=float, default=2.0)
    ap.add_argument('--model-delay', type=float, default=0.0, metavar='SECONDS',
                    help='the model double sleeps this long per inference call (0: instant)')
    ap.add_argument('--model-delay-per-image', type=float, default=0.0, metavar='SECONDS',
                    help='and this much more per image of the call (a batch costs D + d b)')
    ap.add_argument('--batch-max-size', type=int, default=None,
                    help="the node's batch.max_size (default: the node's default)")
    ap.add_argument('--batch-max-wait-ms', type=float, default=None,
                    help="the node's batch.max_wait_ms (default: the node's default)")
    ap.add_argument('--domain-id', type=int, default=None,
                    help='default: $ROS_DOMAIN_ID, else one no other process here has claimed')
    args = ap.parse_args(argv)
    if args.domain_id is None:
        from lotus_ros.demo.node_process import claim_domain

        args.domain_id = int(os.environ.get('ROS_DOMAIN_ID', 0) or 0) or claim_domain(os.getpid())
    if args.cameras < 1:
        ap.error('--cameras must be at least 1')
    alone = processor_only(args.width, args.height, model_delay=args.model_delay,
                           delay_per_image=args.model_delay_per_image)
    res = run(args.width, args.height, args.rate, args.duration, args.warmup, args.domain_id,
              args.model_delay, cameras=args.cameras,
              delay_per_image=args.model_delay_per_image, batch_max_size=args.batch_max_size,
              batch_max_wait_ms=args.batch_max_wait_ms)
    res['alone'] = alone
    print(table(res) if args.cameras == 1 else multi_table(res))
    return 0


if __name__ == '__main__':
    sys.exit(main())
