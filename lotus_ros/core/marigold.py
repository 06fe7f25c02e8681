"""
Marigold depth and normals through diffusers' own MarigoldDepthPipeline / MarigoldNormalsPipeline.

The pipelines run unchanged; this module only loads them, makes their noise reproducible per
frame and converts their outputs to the package's conventions (affine-invariant depth, Lotus
normal axes, the depth standard deviation over an ensemble as uncertainty).
"""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import torch

from lotus_ros.core.engine import ModelLoadError, Prediction, cuda_memory_stats, warmup_frame
from lotus_ros.core.lotus_d import _check_folder, _pick_device, _pick_dtype, resolve_checkpoint

__all__ = ['MarigoldEngine', 'marigold_to_lotus_normals']

# Per task: the pipeline class and the model_index.json class names it accepts
# ('MarigoldPipeline' is the name the first published depth checkpoints carried).
_PIPELINES = {
    'depth': ('MarigoldDepthPipeline', ('MarigoldDepthPipeline', 'MarigoldPipeline')),
    'normal': ('MarigoldNormalsPipeline', ('MarigoldNormalsPipeline',)),
}
# Diffusers documents Marigold normals with x right, y up and z towards the viewer. The optical
# frame has y down and z forward: n_optical = (x, -y, -z), and Lotus stores -n_optical.
_MARIGOLD_TO_LOTUS = np.array([-1.0, 1.0, 1.0], np.float32)


def marigold_to_lotus_normals(normals: np.ndarray) -> np.ndarray:
    """Marigold normals (...x3, x right, y up, z to the viewer) in Lotus axes, float32."""
    n = np.asarray(normals, dtype=np.float32)
    if n.ndim < 1 or n.shape[-1] != 3:
        raise ValueError(f'normals must be ...x3, got shape {n.shape}')
    return n * _MARIGOLD_TO_LOTUS


def _load_pipeline(task: str, model: str, local_files_only: bool, dtype: torch.dtype):
    """Load one Marigold checkpoint into its diffusers pipeline, or raise ModelLoadError."""
    import diffusers

    folder = resolve_checkpoint(model, local_files_only)
    variants = _check_folder(folder, model)
    if not (folder / 'scheduler' / 'scheduler_config.json').is_file():
        raise ModelLoadError(f'Marigold checkpoint {model} is incomplete; missing: '
                             'scheduler/scheduler_config.json')
    pipeline_name, accepted = _PIPELINES[task]
    try:
        index = json.loads((folder / 'model_index.json').read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'Marigold checkpoint {model}: model_index.json in {folder} is '
                             f'missing or unreadable: {exc}') from exc
    if index.get('_class_name') not in accepted:
        raise ModelLoadError(f'Marigold checkpoint {model} is a {index.get("_class_name")!r} '
                             f'checkpoint; the {task} model must be a {pipeline_name}')
    variant = next(iter(set(variants.values()))) if len(set(variants.values())) == 1 else None
    try:
        pipeline = getattr(diffusers, pipeline_name).from_pretrained(
            str(folder), dtype=dtype, variant=variant, use_safetensors=True,
            local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f'Marigold checkpoint {model} in {folder} could not be loaded: '
                             f'{exc}') from exc
    if pipeline.unet.config.in_channels != 8:
        raise ModelLoadError(f'Marigold checkpoint {model}: unet/ has in_channels='
                             f'{pipeline.unet.config.in_channels}, a Marigold UNet has 8')
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class MarigoldEngine:
    """
    Marigold depth and/or normal predictor with the LotusEngine interface.

    Depth is Marigold's affine-invariant depth in [0, 1] ('disparity' for a checkpoint whose
    prediction_type says so); normals are converted to Lotus axes (lotus_ros.core.normals reads
    them). Ensemble member k of every image starts from
    torch.Generator(device).manual_seed(seed + k), re-seeded on every call; the same
    generators drive the noise LCM schedulers add between steps, so frames are reproducible.
    With `ensemble_size` > 1 depth members are aligned and averaged by the pipeline
    (reduction 'mean', so that its uncertainty is their standard deviation, in the units of the
    returned depth); normals keep the pipeline's default ('closest' member).
    """

    def __init__(self, *, device: torch.device, dtype: torch.dtype, pipelines: dict,
                 depth_space: str | None, processing_resolution: int,
                 num_inference_steps: int | None, ensemble_size: int, seed: int) -> None:
        self.device = device
        self.dtype = dtype
        self.depth_space = depth_space
        self.processing_resolution = int(processing_resolution)
        self.num_inference_steps = num_inference_steps
        self.ensemble_size = ensemble_size
        self.seed = seed
        self._pipelines = pipelines

    @property
    def has_depth(self) -> bool:
        return 'depth' in self._pipelines

    @property
    def has_normal(self) -> bool:
        return 'normal' in self._pipelines

    @property
    def has_uncertainty(self) -> bool:
        return self.has_depth and self.ensemble_size > 1

    @classmethod
    def from_pretrained(cls, depth_model: str | None, normal_model: str | None = None, *,
                        device: str | torch.device = 'auto', dtype: str | torch.dtype = 'auto',
                        processing_resolution: int = 768, local_files_only: bool = False,
                        depth_space: str | None = None, num_inference_steps: int | None = None,
                        ensemble_size: int = 1, seed: int = 0, compile: bool = False,
                        warmup: bool | tuple[int, int] = True) -> MarigoldEngine:
        """
        Load Marigold depth and/or normal checkpoints (hub ids or local diffusers folders).

        `num_inference_steps` None uses the checkpoint's default_denoising_steps.
        `processing_resolution` 0 runs at the image size; otherwise it must be a multiple of 8,
        as the pipelines require. `depth_space` overrides what the depth is affine to.
        """
        if depth_model is None and normal_model is None:
            raise ValueError('give at least one of depth_model and normal_model')
        if processing_resolution < 0 or processing_resolution % 8:
            raise ValueError('processing_resolution must be 0 (native size) or a positive '
                             f'multiple of 8 for Marigold, got {processing_resolution}')
        if num_inference_steps is not None and num_inference_steps < 1:
            raise ValueError(f'num_inference_steps must be >= 1, got {num_inference_steps}')
        if isinstance(ensemble_size, bool) or not isinstance(ensemble_size, int) or \
                ensemble_size < 1:
            raise ValueError(f'ensemble_size must be an integer >= 1, got {ensemble_size!r}')
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be an integer >= 0, got {seed!r}')
        if depth_space not in (None, 'disparity', 'depth'):
            raise ValueError(f"depth_space must be 'disparity' or 'depth', got {depth_space!r}")
        if depth_model is not None and ensemble_size > 1 and \
                importlib.util.find_spec('scipy') is None:
            raise ImportError('Marigold depth ensembles (ensemble_size > 1) align their members '
                              'with scipy.optimize: install scipy')
        dev = _pick_device(device)
        dt = _pick_dtype(dtype, dev)
        pipelines = {}
        for task, model in (('depth', depth_model), ('normal', normal_model)):
            if model is None:
                continue
            pipeline = _load_pipeline(task, str(model), local_files_only, dt).to(dev)
            if compile:
                pipeline.unet = torch.compile(pipeline.unet)
            pipelines[task] = pipeline
        space = None
        if 'depth' in pipelines:
            predicted = pipelines['depth'].config.prediction_type
            space = depth_space or ('disparity' if predicted == 'disparity' else 'depth')
        engine = cls(device=dev, dtype=dt, pipelines=pipelines, depth_space=space,
                     processing_resolution=processing_resolution,
                     num_inference_steps=num_inference_steps, ensemble_size=ensemble_size,
                     seed=seed)
        if warmup:
            engine._warmup(warmup)
        return engine

    def _warmup(self, warmup: bool | tuple[int, int]) -> None:
        image, resolution = warmup_frame(warmup, self.device, self.processing_resolution)
        self._run([image], ('depth', 'normal'), resolution)
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)

    def memory_stats(self) -> dict[str, float]:
        return cuda_memory_stats(self.device)

    def predict(self, rgb: np.ndarray, *, depth: bool = True,
                normal: bool = True) -> Prediction:
        """Predict depth and/or normals for one HxWx3 uint8 RGB image."""
        return self.predict_batch([rgb], depth=depth, normal=normal)[0]

    def predict_batch(self, images: list[np.ndarray], *, depth: bool = True,
                      normal: bool = True) -> list[Prediction]:
        """Predict for same-size images, each task in one pipeline call over all members."""
        if len(images) == 0:
            return []
        for rgb in images:
            if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or \
                    rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
                raise ValueError('rgb must be a non-empty HxWx3 uint8 numpy array (RGB), got '
                                 f'{getattr(rgb, "dtype", type(rgb).__name__)} '
                                 f'{getattr(rgb, "shape", "")}')
        if any(rgb.shape != images[0].shape for rgb in images):
            raise ValueError('predict_batch needs images of one size, got '
                             f'{sorted({rgb.shape for rgb in images})}')
        wanted = tuple(task for task, on in (('depth', depth), ('normal', normal)) if on)
        return self._run(images, wanted, self.processing_resolution)

    def _run(self, images: list[np.ndarray], wanted: tuple[str, ...],
             resolution: int) -> list[Prediction]:
        count, members = len(images), self.ensemble_size
        timings = {'depth': 0.0, 'normal': 0.0, 'total': 0.0}
        begin = time.perf_counter()
        outputs = {}
        for task, pipeline in self._pipelines.items():
            if task not in wanted:
                continue
            start = time.perf_counter()
            # Member k of every image (image-major, as the pipeline orders them) from seed + k.
            generators = [torch.Generator(device=self.device).manual_seed(self.seed + k)
                          for _ in range(count) for k in range(members)]
            with_uncertainty = task == 'depth' and members > 1
            outputs[task] = pipeline(
                list(images), num_inference_steps=self.num_inference_steps,
                ensemble_size=members, processing_resolution=resolution,
                batch_size=count * members, generator=generators, output_type='np',
                ensembling_kwargs={'reduction': 'mean'} if with_uncertainty else None,
                output_uncertainty=with_uncertainty)
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            timings[task] = time.perf_counter() - start
        timings['total'] = time.perf_counter() - begin

        results = []
        for i in range(count):
            depth_out, normal_out = outputs.get('depth'), outputs.get('normal')
            results.append(Prediction(
                depth=None if depth_out is None
                else np.ascontiguousarray(depth_out.prediction[i, ..., 0]),
                depth_space=None if depth_out is None else self.depth_space,
                normal=None if normal_out is None
                else marigold_to_lotus_normals(normal_out.prediction[i]),
                uncertainty=None if depth_out is None or depth_out.uncertainty is None
                else np.ascontiguousarray(depth_out.uncertainty[i, ..., 0]),
                timings=dict(timings)))
        return results
