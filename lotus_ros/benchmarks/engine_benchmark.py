"""
Time LotusEngine per stage against a per-frame baseline that follows the released Lotus code.

`python -m lotus_ros.benchmarks.engine_benchmark --random-weights --resolutions 256x320`
builds the full-size Stable Diffusion 2 architecture with random weights (compute does not
depend on weight values) and prints, for depth-only and depth+normal, the seconds per stage
(best of the repeats), total, frames/s and peak memory of the engine and of the baseline, and
their ratio. The baseline does what the released code does for every frame: encode the empty
prompt, encode the image once per task with a sampled latent, run each task as its own pipeline
and post-process in numpy. It runs the engine's own UNet and VAE modules so that only the per-
frame procedure differs.

`--backend lotus-g|marigold|all` instead prints one table of the per-frame cost of depth from
each backend (Lotus-D, Lotus-G with each `--ensemble-sizes` K, Marigold with each `--steps`
count and ensemble 1) and its ratio to Lotus-D; `--random-weights` then builds each backend's
full-size architecture in its own folder under `--weights-dir`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import gc
import os
from pathlib import Path
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

from lotus_ros.core.lotus_d import TIMESTEP, LotusEngine, processing_size, resolve_checkpoint

ROWS = ('text', 'preprocess', 'encode', 'unet_depth', 'unet_normal', 'decode', 'postprocess',
        'total')
BACKENDS = ('lotus-d', 'lotus-g', 'marigold', 'all')


class PeakMemory:
    """Peak memory of one measured run: CUDA allocator peak, or process RSS sampled on CPU."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device = device
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss_mb() -> float:
        try:
            with open('/proc/self/statm') as statm:
                return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
        except (OSError, ValueError):
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_mb = self.rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())


class ReleasedBaseline:
    """The released per-frame procedure, run on the engine's UNet and VAE modules."""

    def __init__(self, engine: LotusEngine, text_folder: Path) -> None:
        from transformers import CLIPTextModel, CLIPTokenizer

        self.engine = engine
        self.device = engine.device
        self.dtype = engine.dtype
        self.tokenizer = CLIPTokenizer.from_pretrained(str(text_folder / 'tokenizer'))
        self.text_encoder = CLIPTextModel.from_pretrained(
            str(text_folder), subfolder='text_encoder', use_safetensors=True,
            dtype=self.dtype).to(self.device).eval()

    def _mark(self, timings: dict[str, float], stage: str, start: float) -> float:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - start
        return now

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, tasks: tuple[str, ...]) -> dict[str, float]:
        """Run each task as its own pipeline call; return seconds per stage."""
        timings = dict.fromkeys(ROWS, 0.0)
        outputs = {}
        begin = time.perf_counter()
        height, width = rgb.shape[:2]
        for name in tasks:
            task = self.engine._tasks[name]
            vae = self.engine._vaes[task.vae_index]
            scaling = vae.config.scaling_factor
            now = time.perf_counter()
            ids = self.tokenizer('', padding='do_not_pad', truncation=True,
                                 max_length=self.tokenizer.model_max_length,
                                 return_tensors='pt').input_ids.to(self.device)
            prompt = self.text_encoder(ids)[0]
            now = self._mark(timings, 'text', now)
            x = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
            x = x.to(self.device, self.dtype)
            h, w = processing_size(height, width, self.engine.processing_resolution)
            if (h, w) != (height, width):
                x = F.interpolate(x, (h, w), mode='bilinear', align_corners=False,
                                  antialias=True)
            now = self._mark(timings, 'preprocess', now)
            z = vae.encode(x).latent_dist.sample() * scaling
            now = self._mark(timings, 'encode', now)
            labels = torch.tensor([1, 0]).float().unsqueeze(0)
            labels = torch.cat([torch.sin(labels), torch.cos(labels)], dim=-1)
            y = task.unet(z, torch.tensor([TIMESTEP], device=self.device),
                          encoder_hidden_states=prompt,
                          class_labels=labels.to(self.device, self.dtype)).sample
            now = self._mark(timings, f'unet_{name}', now)
            image = vae.decode(y / scaling).sample
            now = self._mark(timings, 'decode', now)
            image = (image / 2 + 0.5).clamp(0, 1)
            image = F.interpolate(image, (height, width), mode='nearest-exact')
            image = image[0].permute(1, 2, 0).float().cpu().numpy()
            outputs[name] = image.mean(axis=-1) if name == 'depth' else image * 2 - 1
            self._mark(timings, 'postprocess', now)
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()  # the released inference loop does this every frame
        timings['total'] = time.perf_counter() - begin
        self.last_outputs = outputs
        return timings


def _test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Make a smooth textured image; content does not change the compute, only realism."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / 29.0), 128 + 90 * np.cos(yy / 17.0),
                     255 * (xx + yy) / (height + width)], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected HEIGHTxWIDTH, got {text!r}') from None
    return height, width


def _format_table(columns: dict[str, dict[str, float]], peaks: dict[str, float],
                  memory_label: str) -> str:
    names = list(columns)
    width = max(14, *(len(n) + 2 for n in names))
    lines = ['stage [s]'.ljust(16) + ''.join(n.rjust(width) for n in names)]
    for row in ROWS:
        cells = []
        for name in names:
            value = columns[name].get(row, 0.0)
            cells.append(('-' if value == 0.0 else f'{value:.3f}').rjust(width))
        lines.append(row.ljust(16) + ''.join(cells))
    lines.append('frames/s'.ljust(16)
                 + ''.join(f'{1.0 / columns[n]["total"]:.3f}'.rjust(width) for n in names))
    lines.append(memory_label.ljust(16) + ''.join(f'{peaks[n]:.0f}'.rjust(width)
                                                  for n in names))
    return '\n'.join(lines)


def _summary(runs: list[dict[str, float]], statistic: str) -> dict[str, float]:
    """Per-stage statistic over repeats; 'min' discards interference from other processes."""
    reduce = min if statistic == 'min' else statistics.median
    return {row: reduce(r.get(row, 0.0) for r in runs) for row in ROWS}


def _random_checkpoint(folder: Path, kind: str, size: str) -> str:
    """Build (or reuse) random weights of one backend's architecture in `folder`."""
    from lotus_ros.demo.random_models import save_random_lotus, save_random_marigold

    if not (folder / 'model_index.json').is_file():
        print(f'building random {size} {kind} weights in {folder} ...', flush=True)
        start = time.perf_counter()
        if kind == 'marigold':
            save_random_marigold(folder, size=size, seed=0, vae_seed=0)
        else:
            save_random_lotus(folder, size=size, seed=0, vae_seed=0, depth_space='disparity',
                              generative=kind == 'lotus-g')
        print(f'  built in {time.perf_counter() - start:.1f} s', flush=True)
    return str(folder)


def run(args: argparse.Namespace) -> int:
    if args.backend != 'lotus-d':
        return _run_backends(args)
    workdir = None
    if args.random_weights:
        if args.weights_dir:
            folder = Path(args.weights_dir)
        else:
            workdir = tempfile.mkdtemp(prefix='lotus_bench_')
            folder = Path(workdir) / 'lotus-d-random'
        # One checkpoint serves both tasks: the published depth and normal checkpoints share
        # the architecture and VAE, and compute does not depend on the UNet weights.
        depth_model = normal_model = _random_checkpoint(folder, 'lotus-d', args.size)
    else:
        depth_model, normal_model = args.depth_model, args.normal_model
        if depth_model is None or normal_model is None:
            print('give --depth-model and --normal-model, or --random-weights', file=sys.stderr)
            return 2
    try:
        return _benchmark(args, depth_model, normal_model)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _benchmark(args: argparse.Namespace, depth_model: str, normal_model: str) -> int:
    start = time.perf_counter()
    engine = LotusEngine.from_pretrained(
        depth_model, normal_model, device=args.device, dtype=args.dtype,
        processing_resolution=args.processing_resolution, local_files_only=True,
        compile=args.compile, warmup=False)
    print(f'engine loaded in {time.perf_counter() - start:.1f} s: device={engine.device} '
          f'dtype={engine.dtype} shared_vae={engine.shared_vae} '
          f'threads={torch.get_num_threads()}', flush=True)
    baseline = None if args.no_baseline else ReleasedBaseline(
        engine, resolve_checkpoint(depth_model, True))
    memory_label = 'peak MB (CUDA)' if engine.device.type == 'cuda' else 'peak RSS MB'
    configs: dict[str, tuple] = {
        'engine depth': (lambda im: engine.predict(im, normal=False).timings),
        'engine d+n': (lambda im: engine.predict(im).timings),
    }
    if baseline is not None:
        configs['baseline depth'] = lambda im: baseline.predict(im, ('depth',))
        configs['baseline d+n'] = lambda im: baseline.predict(im, ('depth', 'normal'))
    status = 0
    for height, width in args.resolutions:
        image = _test_image(height, width)
        h, w = processing_size(height, width, args.processing_resolution)
        for _ in range(args.warmup):
            for fn in configs.values():
                fn(image)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        peaks = dict.fromkeys(configs, 0.0)
        # Interleave the configurations so load from other processes hits all of them alike.
        for _ in range(args.repeats):
            for name, fn in configs.items():
                with PeakMemory(engine.device) as peak:
                    runs[name].append(fn(image))
                peaks[name] = max(peaks[name], peak.peak_mb)
        columns = {name: _summary(r, args.statistic) for name, r in runs.items()}
        print(f'\nimage {height}x{width}, model input {h}x{w}, {args.statistic} of {args.repeats} '
              f'(after {args.warmup} warm-up), device={engine.device}, dtype={engine.dtype}')
        print(_format_table(columns, peaks, memory_label))
        ratio_dn = columns['engine d+n']['total'] / columns['engine depth']['total']
        print(f'engine depth+normal / depth-only: {ratio_dn:.2f}x (target <= 1.85x)')
        if ratio_dn > 1.85:
            status = 1
        if baseline is not None:
            for task in ('depth', 'd+n'):
                ratio = columns[f'engine {task}']['total'] / columns[f'baseline {task}']['total']
                print(f'engine / baseline ({task}): {ratio:.2f} (target <= 1.00)')
                if ratio > 1.0:
                    status = 1
        if engine.device.type == 'cuda':
            print(f'engine memory: {engine.memory_stats()}')
    return status if args.strict else 0


def _variants(kind: str, args: argparse.Namespace) -> list[tuple[str, dict]]:
    """Return (label, engine attributes) of the configurations measured on one backend."""
    if kind == 'lotus-d':
        return [('Lotus-D', {})]
    if kind == 'lotus-g':
        return [(f'Lotus-G K={k}', {'ensemble_size': k}) for k in args.ensemble_sizes]
    return [(f'Marigold {n} step' + ('s' if n > 1 else ''), {'num_inference_steps': n})
            for n in args.steps]


def _load_backend(kind: str, model: str, args: argparse.Namespace):
    from lotus_ros.core.lotus_g import LotusGEngine
    from lotus_ros.core.marigold import MarigoldEngine

    engine_class = {'lotus-d': LotusEngine, 'lotus-g': LotusGEngine,
                    'marigold': MarigoldEngine}[kind]
    return engine_class.from_pretrained(
        model, device=args.device, dtype=args.dtype,
        processing_resolution=args.processing_resolution, local_files_only=True,
        compile=args.compile, warmup=False)


def _time_variants(engine, image: np.ndarray, variants: list[tuple[str, dict]],
                   args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """Return label -> (seconds per depth frame, peak memory MB), configurations interleaved."""
    def frame(settings: dict) -> float:
        for name, value in settings.items():
            setattr(engine, name, value)
        start = time.perf_counter()
        engine.predict(image, normal=False)  # returns host arrays: the device work is done
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for _, settings in variants:
            frame(settings)
    seconds: dict[str, list[float]] = {label: [] for label, _ in variants}
    peaks = dict.fromkeys(seconds, 0.0)
    for _ in range(args.repeats):
        for label, settings in variants:
            with PeakMemory(engine.device) as peak:
                seconds[label].append(frame(settings))
            peaks[label] = max(peaks[label], peak.peak_mb)
    reduce: Callable = min if args.statistic == 'min' else statistics.median
    return {label: (reduce(seconds[label]), peaks[label]) for label in seconds}


def _format_backend_table(rows: dict[str, tuple[float, float]], memory_label: str) -> str:
    reference = rows['Lotus-D'][0]
    width = max(len('backend (depth only)'), *(len(label) for label in rows)) + 2
    lines = ['backend (depth only)'.ljust(width) + 's/frame'.rjust(10) + 'frames/s'.rjust(10)
             + memory_label.rjust(16) + 'x Lotus-D'.rjust(11)]
    for label, (seconds, peak) in rows.items():
        lines.append(label.ljust(width) + f'{seconds:.3f}'.rjust(10)
                     + f'{1.0 / seconds:.3f}'.rjust(10) + f'{peak:.0f}'.rjust(16)
                     + f'{seconds / reference:.2f}'.rjust(11))
    return '\n'.join(lines)


def _run_backends(args: argparse.Namespace) -> int:
    """Time depth from Lotus-D and the other backends, one backend in memory at a time."""
    kinds = ['lotus-d'] + (['lotus-g', 'marigold'] if args.backend == 'all' else [args.backend])
    if not args.random_weights:
        given = {'lotus-d': args.depth_model, 'lotus-g': args.lotus_g_model,
                 'marigold': args.marigold_model}
        missing = [kind for kind in kinds if given[kind] is None]
        if missing:
            print(f'give a checkpoint for {", ".join(missing)} (--depth-model, --lotus-g-model, '
                  '--marigold-model), or --random-weights', file=sys.stderr)
            return 2
    workdir = None
    try:
        if not args.random_weights:
            models = {kind: given[kind] for kind in kinds}
        else:
            if args.weights_dir:
                root = Path(args.weights_dir)
            else:
                workdir = tempfile.mkdtemp(prefix='lotus_bench_')
                root = Path(workdir)
            models = {kind: _random_checkpoint(root / kind, kind, args.size) for kind in kinds}
        tables: dict[tuple[int, int], dict[str, tuple[float, float]]] = {
            size: {} for size in args.resolutions}
        device = None
        for kind in kinds:
            start = time.perf_counter()
            engine = _load_backend(kind, models[kind], args)
            device = engine.device
            print(f'{kind} loaded in {time.perf_counter() - start:.1f} s: device={engine.device} '
                  f'dtype={engine.dtype} threads={torch.get_num_threads()}', flush=True)
            for height, width in args.resolutions:
                tables[(height, width)].update(_time_variants(
                    engine, _test_image(height, width), _variants(kind, args), args))
            del engine
            gc.collect()
        memory_label = 'peak MB (CUDA)' if device.type == 'cuda' else 'peak RSS MB'
        for (height, width), rows in tables.items():
            print(f'\nimage {height}x{width}, processing resolution '
                  f'{args.processing_resolution or "native"}, {args.statistic} of {args.repeats} '
                  f'(after {args.warmup} warm-up), device={device}, dtype={args.dtype}')
            print(_format_backend_table(rows, memory_label))
        return 0
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m lotus_ros.benchmarks.engine_benchmark',
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--depth-model', help='hub id or local folder of a depth checkpoint')
    parser.add_argument('--normal-model', help='hub id or local folder of a normal checkpoint')
    parser.add_argument('--backend', choices=BACKENDS, default='lotus-d',
                        help='lotus-d: engine vs released baseline per stage (default); '
                        'lotus-g, marigold, all: per-frame depth cost against Lotus-D')
    parser.add_argument('--lotus-g-model', help='Lotus-G depth checkpoint (--backend lotus-g)')
    parser.add_argument('--marigold-model', help='Marigold depth checkpoint (--backend marigold)')
    parser.add_argument('--ensemble-sizes', nargs='+', type=int, default=[1, 4], metavar='K',
                        help='Lotus-G draws per frame to time (default 1 4)')
    parser.add_argument('--steps', nargs='+', type=int, default=[1, 4], metavar='N',
                        help='Marigold denoising steps to time, ensemble 1 (default 1 4)')
    parser.add_argument('--random-weights', action='store_true',
                        help='build random weights of the released architecture (no download)')
    parser.add_argument('--size', choices=('full', 'tiny'), default='full',
                        help='architecture for --random-weights (tiny: for smoke tests)')
    parser.add_argument('--weights-dir', help='build/reuse --random-weights here (kept)')
    parser.add_argument('--resolutions', nargs='+', type=_parse_size, default=[(480, 640)],
                        metavar='HxW', help='input image sizes (default 480x640)')
    parser.add_argument('--processing-resolution', type=int, default=0,
                        help='model input longer side; 0 = the image size itself (default)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--dtype', default='auto', help='auto, fp32, fp16 or bf16')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--statistic', choices=('min', 'median'), default='min',
                        help='per stage over repeats; min is robust on a shared machine')
    parser.add_argument('--compile', action='store_true', help='torch.compile the UNets')
    parser.add_argument('--no-baseline', action='store_true')
    parser.add_argument('--strict', action='store_true',
                        help='exit 1 when a speed target is missed')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    if min(args.ensemble_sizes) < 1 or min(args.steps) < 1:
        parser.error('--ensemble-sizes and --steps must be >= 1')
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
