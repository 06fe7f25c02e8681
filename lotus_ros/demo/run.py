"""
The main job in one command: the lotus node fed by a replayed bag, outputs you can look at.

`python -m lotus_ros.demo [--tiny] [--output demo_output]` (`make demo`, `make demo TINY=1`)

1. renders a short synthetic camera + 16-line LiDAR sequence with exact ground truth and writes
   it as a rosbag2 bag (/camera/image_raw, /camera/camera_info, /lidar/depth);
2. starts the installed lotus_node as its own process with use_sim_time, drop_frames false and
   lazy false (every frame is processed, in order);
3. replays the bag with /clock (lotus_ros.bags.player: the recorded bytes, recorded timing) and
   records every output topic in this process;
4. writes to the output folder: a contact sheet PNG per few frames (rgb | relative depth |
   metric depth | normals | cloud seen from the side), one point cloud as PLY, the node log and
   summary.md (frames in/out, stamp-to-publish latency, alignment scale error and metric AbsRel
   against ground truth), which is also printed.

Models: the published checkpoints of --backend (Lotus-D by default; lotus-g, marigold), downloaded
once with progress, or local diffusers folders with --depth-model/--normal-model. --tiny builds
tiny random-weight models of that backend offline: a smoke run whose numbers are meaningless.
--ensemble-size N > 1 (Lotus-G, Marigold) adds depth/uncertainty; --stabilize turns on
temporal.stabilize.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import os
from pathlib import Path
import shutil
import sys
import time
from typing import Any

import numpy as np
import yaml

from lotus_ros import installed
from lotus_ros.bags import bag_io
from lotus_ros.core.stamps import seconds_to_ns, stamp_to_ns
from lotus_ros.demo.synthetic import (
    LOG_OFFSETS_NS,
    SyntheticFrame,
    render_sequence,
    write_sequence_bag,
)
from lotus_ros.ros.parameters import load_parameter_files

# The published (depth, normal) checkpoints the demo uses per backend ('auto' uses Lotus-D's).
MODELS = {
    'lotus-d': ('jingheya/lotus-depth-d-v2-0-disparity', 'jingheya/lotus-normal-d-v1-1'),
    'lotus-g': ('jingheya/lotus-depth-g-v2-1-disparity', 'jingheya/lotus-normal-g-v1-0'),
    'marigold': ('prs-eth/marigold-depth-v1-1', 'prs-eth/marigold-normals-v1-1'),
}
BACKENDS = ('auto', *MODELS)
NODE_NAME = 'lotus'
REMAPS = {'image': bag_io.TOPIC_IMAGE, 'camera_info': bag_io.TOPIC_CAMERA_INFO,
          'sparse_depth': bag_io.TOPIC_SPARSE_DEPTH}
TINY_NOTE = ('**Smoke run on tiny random-weight models (--tiny): every depth, normal, scale and '
             'error value below is meaningless.** It only shows that the pipeline runs end to '
             'end over real ROS 2 topics.')


class DemoError(Exception):
    """A failure with a message for the user (printed as one block, exit code attached)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# -- setup ---------------------------------------------------------------------------------
def node_executable() -> Path:
    """Return the installed lotus_node (colcon build of this package)."""
    path = installed.node_executable()
    if path is None:
        raise DemoError('lotus_node is not installed in a sourced workspace. Run `make build` and '
                        '`source scripts/env.sh` (or just `make demo`).', 2)
    return path


def resolve_model(name: str, what: str) -> str:
    """
    Return a local folder for a checkpoint, downloading a Hugging Face id with a progress bar.

    Offline (or an unknown id) raises DemoError saying how to use a local folder instead.
    """
    if not name:
        return ''
    from lotus_ros.core.lotus_d import ModelLoadError, resolve_checkpoint

    if not Path(name).expanduser().is_dir():
        print(f'Fetching the {what} model {name} (first run downloads it) ...', flush=True)
    try:
        return str(resolve_checkpoint(name))
    except ModelLoadError as exc:
        reason = ' '.join(str(exc).split())[:300]
        raise DemoError(
            f'Cannot get the {what} model "{name}": {reason}\n'
            f'If this machine is offline, download the checkpoint elsewhere (diffusers layout, '
            f'e.g. `hf download {name} --local-dir ./lotus-{what}`), copy it here and run\n'
            f'  python -m lotus_ros.demo --{what}-model /path/to/lotus-{what}\n'
            f'(or DEMO_ARGS="--{what}-model /path" make demo). For an offline smoke run with '
            f'tiny random weights: make demo TINY=1', 3) from exc


def tiny_models(folder: Path, backend: str = 'lotus-d') -> tuple[str, str]:
    """Build tiny random-weight checkpoints of a backend (Lotus depth named as disparity)."""
    from lotus_ros.demo.random_models import save_random_lotus, save_random_marigold

    shutil.rmtree(folder, ignore_errors=True)
    if backend == 'marigold':
        depth, normal = folder / 'marigold-depth-tiny', folder / 'marigold-normals-tiny'
        save_random_marigold(depth, seed=0, vae_seed=0)
        save_random_marigold(normal, task='normals', seed=1, vae_seed=0)
        return str(depth), str(normal)
    family = 'g' if backend == 'lotus-g' else 'd'
    depth = folder / f'lotus-depth-{family}-tiny-disparity'
    normal = folder / f'lotus-normal-{family}-tiny'
    save_random_lotus(depth, size='tiny', seed=0, vae_seed=0, generative=family == 'g',
                      pipeline_class=None if family == 'g' else 'DirectRegressionPipeline')
    save_random_lotus(normal, size='tiny', seed=1, vae_seed=0, generative=family == 'g')
    return str(depth), str(normal)


def backend_name(backend: str, depth_model: str, normal_model: str) -> str:
    """Name the backend the node runs: the chosen one, or what 'auto' reads (see backends)."""
    model = depth_model or normal_model
    if backend != 'auto' or not model:
        return backend
    from lotus_ros.core.backends import detect_backend
    from lotus_ros.core.engine import ModelLoadError

    try:
        return f'{detect_backend(model, local_files_only=True)[0]} (auto)'
    except ModelLoadError:
        return 'auto'


def demo_parameters(depth_model: str, normal_model: str, *, device: str,
                    processing_resolution: int, extra: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Node parameters for replaying a bag: sim time, every frame in order, reliable inputs."""
    params: dict[str, Any] = {
        'use_sim_time': True,
        'drop_frames': False,
        'lazy': False,
        'queue_size': 1000,
        'depth_model': depth_model,
        'normal_model': normal_model,
        'device': device,
        'processing_resolution': processing_resolution,
        'local_files_only': True,
        'publish.alignment': True,
        'points.color': True,
    }
    # REP 2003 QoS overrides: the replay is reliable, so the node's inputs may be too and no
    # frame is lost to a momentarily full best-effort reader.
    params['qos_overrides'] = {
        topic: {'subscription': {'reliability': 'reliable', 'depth': 100}}
        for topic in REMAPS.values()}
    params.update(extra or {})
    return params


def write_params_file(path: Path, params: dict[str, Any]) -> Path:
    """Write a ros2 parameter YAML file for the node ('/**' applies to any node name)."""
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': params}}, sort_keys=False))
    return path


# -- recording -----------------------------------------------------------------------------
@dataclass
class Received:
    wall: float
    msg: Any


@dataclass
class Recording:
    outputs: dict[str, list[Received]] = field(default_factory=dict)
    image_publish_wall: dict[int, float] = field(default_factory=dict)
    diagnostics: list[Any] = field(default_factory=list)


def _record(client) -> Recording:
    """Every output a node_process.Client received, with wall receive times (time.time())."""
    from lotus_ros.ros.outputs import output_types

    return Recording(
        outputs={name: [Received(w, m) for w, m in client.timed('/' + name)]
                 for name in output_types()},
        diagnostics=client.messages('/diagnostics'))


def run_pipeline(bag: Path, params_files: list[Path], *, domain_id: int, num_images: int,
                 log_path: Path, rate: float = 1.0, timeout: float = 600.0,
                 env_extra: dict[str, str] | None = None, progress: bool = True) -> Recording:
    """
    Start the node, replay the bag with /clock into it, record outputs until every frame is out.

    Raises DemoError if the node dies (e.g. the model cannot load) or outputs stop coming.
    """
    from diagnostic_msgs.msg import DiagnosticArray

    from lotus_ros.bags.player import Progress, play_bag
    from lotus_ros.demo.node_process import Client, NodeProcess, ros_environment
    from lotus_ros.ros.outputs import output_types

    env = ros_environment(domain_id)
    env.update(env_extra or {})
    node_executable()
    node = NodeProcess(log_path, env, params_files=params_files, remaps=REMAPS)
    client = Client(domain_id, 'lotus_demo_recorder')
    try:
        qos = Client.reliable(100)
        for name, msg_type in output_types().items():
            client.subscribe(msg_type, '/' + name, qos)
        client.subscribe(DiagnosticArray, '/diagnostics', 10)
        deadline = time.monotonic() + 120.0
        # The node creates its publishers once the model is loaded.
        while not client.node.get_publishers_info_by_topic('/depth/relative'):
            if not node.alive():
                raise DemoError(_node_failure(log_path), 4)
            if time.monotonic() > deadline:
                raise DemoError('the node did not come up within 120 s; see ' + str(log_path))
            time.sleep(0.1)
        publish_wall: dict[int, float] = {}

        def on_publish(message: bag_io.BagMessage) -> None:
            if message.topic == bag_io.TOPIC_IMAGE:
                publish_wall[message.timestamp] = time.time()

        play_bag(client.node, bag, rate=rate, clock=True, wait=30.0, linger=0.0,
                 progress=progress, should_stop=lambda: not node.alive(), on_publish=on_publish)
        bar = Progress(num_images, 'outputs') if progress else None
        deadline = time.monotonic() + timeout
        last = -1
        while True:
            done = client.count('/depth/relative')
            if bar is not None and done != last:
                bar.update(done)
                last = done
            if done >= num_images:
                break
            if not node.alive():
                raise DemoError(_node_failure(log_path), 4)
            if time.monotonic() > deadline:
                raise DemoError(f'only {done} of {num_images} frames came out within '
                                f'{timeout:.0f} s; see {log_path}')
            time.sleep(0.05)
        # The other outputs of the last frame are published after depth/relative: wait until
        # nothing new arrives for half a second.
        total, settled = -1, time.monotonic()
        while time.monotonic() - settled < 0.5 and time.monotonic() < deadline + 5.0:
            now_total = sum(client.count('/' + name) for name in output_types())
            if now_total != total:
                total, settled = now_total, time.monotonic()
            time.sleep(0.05)
        recording = _record(client)
        recording.image_publish_wall = publish_wall
        return recording
    finally:
        client.close()
        node.stop()


def _node_failure(log_path: Path) -> str:
    lines = [ln for ln in log_path.read_text(errors='replace').splitlines() if ln.strip()]
    fatal = [ln for ln in lines if 'FATAL' in ln] or lines[-5:]
    return 'lotus_node stopped:\n  ' + '\n  '.join(fatal)


# -- analysis ------------------------------------------------------------------------------
def _image_array(msg) -> np.ndarray:
    from lotus_ros.ros.images import image_to_array

    return image_to_array(msg)


def cloud_points(msg) -> tuple[np.ndarray, np.ndarray | None]:
    """Return finite xyz (N x 3) and their rgb (N x 3 uint8) if the cloud has colour."""
    from lotus_ros.core.pointcloud import float_to_rgb
    from lotus_ros.ros.clouds import cloud_to_array

    data = cloud_to_array(msg)
    xyz = np.stack([data['x'], data['y'], data['z']], axis=1).astype(np.float32)
    ok = np.isfinite(xyz).all(axis=1)
    rgb = float_to_rgb(data['rgb'][ok]) if 'rgb' in data.dtype.names else None
    return xyz[ok], rgb


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray | None) -> None:
    """Write a binary little-endian PLY (opens in MeshLab, CloudCompare, Open3D)."""
    names = [('x', '<f4'), ('y', '<f4'), ('z', '<f4')]
    if rgb is not None:
        names += [('red', 'u1'), ('green', 'u1'), ('blue', 'u1')]
    vertices = np.empty(len(xyz), dtype=names)
    vertices['x'], vertices['y'], vertices['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        vertices['red'], vertices['green'], vertices['blue'] = rgb.T
    header = ['ply', 'format binary_little_endian 1.0',
              'comment lotus_ros demo: camera optical frame (x right, y down, z forward), m',
              f'element vertex {len(xyz)}']
    header += [f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, t in names]
    header.append('end_header')
    path.write_bytes(('\n'.join(header) + '\n').encode('ascii') + vertices.tobytes())


def side_view(xyz: np.ndarray, rgb: np.ndarray | None, width: int, height: int) -> np.ndarray:
    """Render points seen from the camera's right side: z (forward) to the right, y down."""
    panel = np.full((height, width, 3), 24, dtype=np.uint8)
    if len(xyz) == 0:
        return panel
    z, y = xyz[:, 2], xyz[:, 1]
    z_lo, z_hi = np.percentile(z, [1, 99])
    y_lo, y_hi = np.percentile(y, [1, 99])
    span = max(z_hi - z_lo, y_hi - y_lo, 1e-6) * 1.1
    zc, yc = (z_lo + z_hi) / 2, (y_lo + y_hi) / 2
    scale = min(width, height) / span
    u = np.round((z - zc) * scale + width / 2).astype(np.int64)
    v = np.round((y - yc) * scale + height / 2).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    # Draw far-from-viewer points first so the nearer side (x large) wins.
    order = np.argsort(-xyz[inside, 0])
    colour = rgb[inside][order] if rgb is not None else np.full((order.size, 3), 220, np.uint8)
    panel[v[inside][order], u[inside][order]] = colour
    return panel


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = np.ascontiguousarray(panel)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def contact_sheet(frame: SyntheticFrame, outputs: dict[str, Any]) -> np.ndarray:
    """Return one row: rgb | relative depth | metric depth | normals | cloud from the side."""
    from lotus_ros.core.visualization import colorize_depth, colorize_normals

    h, w = frame.height, frame.width
    blank = np.full((h, w, 3), 40, dtype=np.uint8)
    panels = [_label(frame.rgb, 'rgb')]
    rel = outputs.get('depth/relative')
    if rel is not None:
        values = _image_array(rel)
        panels.append(_label(colorize_depth(-values), 'relative (far = warm)'))
    else:
        panels.append(_label(blank, 'no relative depth'))
    metric = outputs.get('depth/image')
    if metric is not None:
        depth = _image_array(metric)
        finite = frame.depth[np.isfinite(frame.depth)]
        value_range = (float(finite.min()), float(finite.max())) if finite.size else None
        panels.append(_label(colorize_depth(depth, value_range=value_range), 'metric depth (m)'))
    else:
        panels.append(_label(blank, 'no metric depth'))
    normal = outputs.get('normal/image')
    if normal is not None:
        panels.append(_label(colorize_normals(_image_array(normal)), 'normals'))
    else:
        panels.append(_label(blank, 'no normals'))
    points = outputs.get('points')
    if points is not None:
        panels.append(_label(side_view(*cloud_points(points), w, h), 'cloud, side view'))
    else:
        panels.append(_label(blank, 'no cloud'))
    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    row = []
    for panel in panels:
        row += [panel, gap]
    return np.concatenate(row[:-1], axis=1)


def _affine_oracle(relative: np.ndarray, depth: np.ndarray, space: str) -> tuple[float, float]:
    """Least-squares scale/shift of the prediction against dense ground truth (the best fit)."""
    target = 1.0 / depth if space == 'disparity' else depth
    ok = np.isfinite(relative) & np.isfinite(target) & (depth > 0)
    a = np.stack([relative[ok], np.ones(ok.sum())], axis=1).astype(np.float64)
    scale, shift = np.linalg.lstsq(a, target[ok].astype(np.float64), rcond=None)[0]
    return float(scale), float(shift)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float('nan')


def _fmt(value: float, unit: str = '', digits: int = 3) -> str:
    return 'n/a' if value is None or not np.isfinite(value) else f'{value:.{digits}f}{unit}'


def analyse(frames: list[SyntheticFrame], recording: Recording) -> tuple[list[tuple], dict]:
    """Return summary rows (name, value, note) and per-stamp outputs."""
    by_stamp: dict[int, dict[str, Any]] = {}
    for name, items in recording.outputs.items():
        for item in items:
            by_stamp.setdefault(stamp_to_ns(item.msg.header.stamp), {})[name] = item.msg
    stamps = [seconds_to_ns(f.stamp) for f in frames]
    relative = recording.outputs.get('depth/relative', [])
    out_stamps = [stamp_to_ns(r.msg.header.stamp) for r in relative]
    latencies = []
    for item in relative:
        sent = recording.image_publish_wall.get(
            stamp_to_ns(item.msg.header.stamp) + LOG_OFFSETS_NS[bag_io.TOPIC_IMAGE])
        if sent is not None:
            latencies.append(item.wall - sent)
    abs_rel, coverage, scale_err = [], [], []
    for frame, stamp in zip(frames, stamps, strict=True):
        outputs = by_stamp.get(stamp, {})
        gt = frame.depth
        if 'depth/image' in outputs:
            depth = _image_array(outputs['depth/image']).astype(np.float64)
            valid_gt = np.isfinite(gt) & (gt > 0)
            ok = valid_gt & np.isfinite(depth)
            coverage.append(ok.sum() / max(valid_gt.sum(), 1))
            if ok.any():
                abs_rel.append(float(np.mean(np.abs(depth[ok] - gt[ok]) / gt[ok])))
        align = outputs.get('alignment')
        if align is not None and align.valid and 'depth/relative' in outputs:
            rel = _image_array(outputs['depth/relative']).astype(np.float64)
            oracle, _ = _affine_oracle(rel, gt.astype(np.float64), align.space)
            scale_err.append(abs(align.scale - oracle) / abs(oracle))
    node_latency = [float(kv.value) for d in recording.diagnostics for s in d.status
                    for kv in s.values if kv.key == 'latency_p95_s'
                    and kv.value not in ('nan', 'None')]
    rows = [
        ('frames in (images replayed)', str(len(recording.image_publish_wall)), ''),
        ('frames out (depth/relative)', str(len(relative)), ''),
        ('frames with metric depth (depth/image)', str(len(recording.outputs.get(
            'depth/image', []))), 'metric only while the alignment is valid'),
        ('point clouds (points)', str(len(recording.outputs.get('points', []))), ''),
        ('normal maps (normal/image)', str(len(recording.outputs.get('normal/image', []))), ''),
        ('uncertainty maps (depth/uncertainty)',
         str(len(recording.outputs.get('depth/uncertainty', []))),
         'Lotus-G and Marigold with --ensemble-size > 1'),
        ('output stamps == input stamps, in order', 'yes' if out_stamps == stamps else 'NO', ''),
        ('stamp-to-publish latency p50 / p95',
         f"{_fmt(_percentile(latencies, 50), ' s')} / {_fmt(_percentile(latencies, 95), ' s')}",
         'replay publish of the image -> its depth/relative received here (wall clock)'),
        ('node-reported latency p95 (sim time)',
         _fmt(node_latency[-1] if node_latency else float('nan'), ' s'), '/diagnostics'),
        ('alignment scale error (median)', _fmt(_percentile(scale_err, 50) * 100, ' %', 1),
         'vs least-squares scale on dense ground truth'),
        ('metric depth AbsRel (mean over frames)',
         _fmt(float(np.mean(abs_rel)) if abs_rel else float('nan')),
         'vs ground truth, pixels with finite depth'),
        ('metric depth coverage', _fmt(float(np.mean(coverage)) * 100 if coverage
                                       else float('nan'), ' %', 1),
         'share of ground-truth pixels with a finite metric value'),
    ]
    return rows, by_stamp


def backend_label(params: dict[str, Any], models: tuple[str, str]) -> str:
    """Name what the node runs for the summary: backend, ensemble, stabilisation."""
    label = backend_name(params.get('backend', 'auto'), *models)
    if params.get('ensemble_size', 1) > 1:
        label += f", ensemble of {params['ensemble_size']}"
    if params.get('temporal.stabilize'):
        label += ', temporal.stabilize'
    return label


def summary_markdown(rows: list[tuple], *, tiny: bool, models: tuple[str, str],
                     sheets: list[str], ply: str | None, backend: str = 'lotus-d') -> str:
    lines = ['# lotus_ros demo summary', '']
    if tiny:
        lines += [TINY_NOTE, '']
    models_line = (f'Backend: {backend}. Models: depth `{models[0] or "(none)"}`, '
                   f'normal `{models[1] or "(none)"}`')
    lines += [models_line, '', '| metric | value | note |', '|---|---|---|']
    lines += [f'| {name} | {value} | {note} |' for name, value, note in rows]
    lines += ['', 'Contact sheets (rgb | relative depth | metric depth | normals | cloud from the '
              'side): ' + ', '.join(f'`{s}`' for s in sheets)]
    if ply:
        lines += [f'Point cloud: `{ply}`']
    return '\n'.join(lines) + '\n'


# -- main ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m lotus_ros.demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tiny', action='store_true',
                        help='tiny random-weight models, offline (values meaningless)')
    parser.add_argument('--output', default='demo_output', help='output folder')
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--scene', choices=('room', 'outdoor'), default='room')
    parser.add_argument('--storage', choices=bag_io.STORAGES, default='mcap')
    parser.add_argument('--rate', type=float, default=1.0, help='replay speed factor')
    parser.add_argument('--backend', choices=BACKENDS, default='auto',
                        help="model family (default 'auto': from the checkpoint; Lotus-D's "
                        'published checkpoints when no model is named)')
    parser.add_argument('--depth-model', default=None,
                        help="Hugging Face id or local diffusers folder (default: the backend's "
                        'published depth checkpoint)')
    parser.add_argument('--normal-model', default=None,
                        help="Hugging Face id or local folder ('' disables normals; default: the "
                        "backend's published normal checkpoint)")
    parser.add_argument('--ensemble-size', type=int, default=1,
                        help='draws per frame (Lotus-G, Marigold); > 1 adds depth/uncertainty')
    parser.add_argument('--num-inference-steps', type=int, default=0,
                        help="Marigold's steps (0: the checkpoint's default)")
    parser.add_argument('--stabilize', action='store_true',
                        help='temporal.stabilize: stabilised depth/relative, metric carried '
                        'through sparse dropouts')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--processing-resolution', type=int, default=None,
                        help='longest side fed to the model (default: image size; 128 --tiny)')
    parser.add_argument('--params', nargs='+', default=[],
                        help='extra node parameter YAML files (applied last)')
    parser.add_argument('--sheet-every', type=int, default=5,
                        help='a contact sheet every N frames')
    parser.add_argument('--timeout', type=float, default=1800.0,
                        help='seconds to wait for all outputs after the replay')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID for the demo (default: a private one)')
    parser.add_argument('--no-progress', action='store_true')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    try:
        return _run(args, out)
    except DemoError as exc:
        print(f'\nlotus_ros demo: {exc}', file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, out: Path) -> int:
    import cv2

    executable = node_executable()
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob('contact_sheet_*.png')) + [out / 'cloud.ply', out / 'summary.md']:
        stale.unlink(missing_ok=True)
    print(f'[1/4] Rendering {args.frames} synthetic {args.scene} frames '
          f'({args.width}x{args.height}) and writing the bag ...', flush=True)
    frames = render_sequence(args.frames, width=args.width, height=args.height,
                             scene=args.scene)
    bag = out / 'sequence_bag'
    shutil.rmtree(bag, ignore_errors=True)
    write_sequence_bag(frames, bag, storage=args.storage)

    print('[2/4] Preparing the models ...', flush=True)
    family = args.backend if args.backend in MODELS else 'lotus-d'
    if args.tiny:
        depth_model, normal_model = tiny_models(out / 'tiny_models', family)
        resolution = args.processing_resolution or 128
    else:
        published = MODELS[family]
        depth_model = resolve_model(
            published[0] if args.depth_model is None else args.depth_model, 'depth')
        normal_model = resolve_model(
            published[1] if args.normal_model is None else args.normal_model, 'normal')
        resolution = args.processing_resolution or max(args.width, args.height)
    if backend_name(args.backend, depth_model, normal_model).startswith('marigold') and \
            not args.processing_resolution:
        resolution = -(-resolution // 8) * 8  # Marigold takes multiples of 8 only
    params = demo_parameters(depth_model, normal_model, device=args.device,
                             processing_resolution=resolution,
                             extra={'backend': args.backend,
                                    'ensemble_size': args.ensemble_size,
                                    'num_inference_steps': args.num_inference_steps,
                                    'temporal.stabilize': args.stabilize})
    params_files = []
    base = installed.share_file('config', 'lotus.yaml')
    if base is not None:
        params_files.append(base)
    params_files.append(write_params_file(out / 'demo_params.yaml', params))
    params_files += [Path(p) for p in args.params]
    try:  # the parameters the node will get: the --params files may change the models
        node_params = load_parameter_files(params_files, node_name=NODE_NAME, namespace='/')
    except (OSError, ValueError) as exc:
        raise DemoError(f'cannot read the parameter files: {exc}', 2) from exc
    models = (node_params.get('depth_model', ''), node_params.get('normal_model', ''))

    from lotus_ros.demo.node_process import claim_domain

    domain = args.domain_id if args.domain_id is not None else claim_domain(os.getpid())
    print(f'[3/4] Starting {executable} (ROS_DOMAIN_ID={domain}) and replaying the bag with '
          '/clock ...', flush=True)
    recording = run_pipeline(bag, params_files, domain_id=domain, num_images=len(frames),
                             log_path=out / 'node.log', rate=args.rate, timeout=args.timeout,
                             progress=not args.no_progress)

    print('[4/4] Writing the contact sheets, the point cloud and the summary ...', flush=True)
    rows, by_stamp = analyse(frames, recording)
    sheets = []
    for frame in frames[::max(args.sheet_every, 1)]:
        outputs = by_stamp.get(seconds_to_ns(frame.stamp), {})
        name = f'contact_sheet_{frame.index:03d}.png'
        cv2.imwrite(str(out / name), contact_sheet(frame, outputs)[:, :, ::-1])
        sheets.append(name)
    ply = None
    clouds = recording.outputs.get('points', [])
    if clouds:
        xyz, rgb = cloud_points(clouds[len(clouds) // 2].msg)
        write_ply(out / 'cloud.ply', xyz, rgb)
        ply = 'cloud.ply'
    text = summary_markdown(rows, tiny=args.tiny, models=models, sheets=sheets, ply=ply,
                            backend=backend_label(node_params, models))
    (out / 'summary.md').write_text(text)
    print('\n' + text)
    print(f'Outputs in {out.resolve()}/')
    out_stamps = [stamp_to_ns(r.msg.header.stamp) for r in recording.outputs['depth/relative']]
    return 0 if out_stamps == [seconds_to_ns(f.stamp) for f in frames] else 1


if __name__ == '__main__':
    sys.exit(main())
