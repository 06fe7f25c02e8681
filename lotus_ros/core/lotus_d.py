"""
Lotus-D inference: depth and surface normals from one RGB image, no ROS imports.

The computation follows the authors' released code step by step (see `LotusEngine.predict`) so
outputs match the published checkpoints, with three deliberate differences that do not change
the result: the empty-prompt embedding is computed once at load, a VAE shared by the depth and
normal checkpoints encodes each frame once, and the VAE posterior mean replaces the random
sample so that the same image always gives the same output. One difference does change it, on
purpose: by default the model input size is chosen so outputs stay pixel-registered with the
input (`resize_mode='registered'`, see `registered_size`); `resize_mode='released'` keeps the
released geometry bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
import gc
import json
import logging
import math
import os
from pathlib import Path
import re
import time

import numpy as np
import torch
import torch.nn.functional as F

from lotus_ros.core.engine import ModelLoadError, Prediction, cuda_memory_stats, warmup_frame

__all__ = ['RESIZE_MODES', 'LotusEngine', 'TASK_EMBEDDING', 'TIMESTEP', 'processing_size',
           'registered_size', 'resolve_checkpoint']

_LOG = logging.getLogger(__name__)

# Lotus-D conditions its single denoising step on t = 999 and a task embedding
# [sin 1, sin 0, cos 1, cos 0] fed to the UNet's class-embedding projection.
TIMESTEP = 999
TASK_EMBEDDING = (math.sin(1.0), math.sin(0.0), math.cos(1.0), math.cos(0.0))
VAE_FACTOR = 8
RESIZE_MODES = ('registered', 'released')
DEPTH_SPACES = ('disparity', 'depth')
STAGES = ('preprocess', 'encode', 'unet_depth', 'unet_normal', 'decode', 'postprocess', 'total')

_DTYPES = {
    'fp32': torch.float32, 'float32': torch.float32,
    'fp16': torch.float16, 'float16': torch.float16, 'half': torch.float16,
    'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16,
}
_WEIGHT_STEMS = {'unet': 'diffusion_pytorch_model', 'vae': 'diffusion_pytorch_model',
                 'text_encoder': 'model'}
_HUB_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')
# What the published checkpoints' model_index.json `_class_name` says about a depth checkpoint:
# lotus-depth-d-v2-0-disparity is a DirectRegressionPipeline, lotus-depth-d-v1-0/-v1-1 (depth)
# are LotusDPipeline. (lotus-normal-d-v1-1 is a DirectRegressionPipeline too: only meaningful for
# the depth checkpoint.) The classes live in the authors' code, not in diffusers, and loading
# never imports them.
_PIPELINE_SPACES = {'DirectRegressionPipeline': 'disparity', 'LotusDPipeline': 'depth'}
# Published depth checkpoints whose names say nothing about the space but which predict depth.
_DEPTH_NAME = re.compile(r'lotus-depth-[dg]-v1-\d')


@dataclass
class _Task:
    name: str
    unet: torch.nn.Module
    vae_index: int
    embedding: torch.Tensor


def processing_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """
    Return the (h, w) the model runs at, as the released code computes it.

    The longer side is scaled to `resolution` (also upwards) and both sides are truncated;
    0 keeps the native size.
    """
    if resolution <= 0:
        return height, width
    scale = min(resolution / width, resolution / height)
    return int(height * scale), int(width * scale)


def registered_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """
    Return an (h, w) whose 8-pixel latent grid covers the whole image, so outputs stay registered.

    The longer side is scaled to `resolution` (0 keeps the native size) as in the released
    code, then each side is rounded to the nearest multiple of 8. The VAE then decodes exactly
    h x w and the resize back to the input inverts the resize in: output pixel (u, v) is input
    pixel (u, v). The released truncation decodes 8*floor(h/8) rows and stretches them over the
    image instead (up to ~10 px off at the far edges). Rounding is preferred to Marigold's
    pad-and-crop because the model sees only real pixels (no replicated border rows where
    registration matters most) and the step sequence stays the released one; the price is a
    stretch of at most 4 px per side (0.7% of the short side of a 4:3 image at 768).
    """
    scale = 1.0 if resolution <= 0 else min(resolution / width, resolution / height)
    return (VAE_FACTOR * math.floor(height * scale / VAE_FACTOR + 0.5),
            VAE_FACTOR * math.floor(width * scale / VAE_FACTOR + 0.5))


def _weights_present(component: Path) -> tuple[bool, str | None, bool]:
    """Return (safetensors found, variant, pickle-only) for one model component folder."""
    stem = _WEIGHT_STEMS[component.name]
    if (component / f'{stem}.safetensors').is_file() or \
            (component / f'{stem}.safetensors.index.json').is_file():
        return True, None, False
    for variant in ('fp16', 'bf16', 'fp32'):
        if (component / f'{stem}.{variant}.safetensors').is_file() or \
                (component / f'{stem}.safetensors.index.{variant}.json').is_file():
            return True, variant, False
    pickles = any(component.glob('*.bin')) or any(component.glob('*.ckpt')) or \
        any(component.glob('*.pt'))
    return False, None, pickles


def _check_folder(folder: Path, source: str) -> dict[str, str | None]:
    """Check the diffusers layout and return the weight variant per component, or raise."""
    missing = []
    variants: dict[str, str | None] = {}
    for name in ('unet', 'vae', 'text_encoder'):
        component = folder / name
        if not component.is_dir():
            missing.append(f'{name}/ (folder)')
            continue
        if not (component / 'config.json').is_file():
            missing.append(f'{name}/config.json')
        found, variant, pickles = _weights_present(component)
        if found:
            variants[name] = variant
        elif pickles:
            missing.append(f'{name}/{_WEIGHT_STEMS[name]}.safetensors (only pickle .bin/.ckpt '
                           'weights found; they are never unpickled: convert them to '
                           'safetensors)')
        else:
            missing.append(f'{name}/{_WEIGHT_STEMS[name]}.safetensors')
    tokenizer = folder / 'tokenizer'
    if not ((tokenizer / 'tokenizer.json').is_file()
            or ((tokenizer / 'vocab.json').is_file() and (tokenizer / 'merges.txt').is_file())):
        missing.append('tokenizer/ (vocab.json + merges.txt, or tokenizer.json)')
    if missing:
        where = source if str(folder) == source else f'{source} ({folder})'
        raise ModelLoadError(f'Lotus checkpoint {where} is incomplete; missing: '
                             + '; '.join(missing))
    return variants


def _hub_offline(local_files_only: bool) -> bool:
    env = os.environ.get('HF_HUB_OFFLINE', '').strip().upper()
    return local_files_only or env in ('1', 'ON', 'YES', 'TRUE')


def resolve_checkpoint(model: str, local_files_only: bool = False) -> Path:
    """Return a local folder for a folder path or a hub id (downloading only what is needed)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f'Lotus checkpoint {model} is a file; expected a folder in the '
                             'diffusers layout (unet/, vae/, text_encoder/, tokenizer/)')
    if not _HUB_ID.match(model) or '..' in model:
        raise ModelLoadError(f'Lotus checkpoint folder {model} does not exist')
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ['model_index.json', 'scheduler/scheduler_config.json', 'tokenizer/*']
    for name, stem in _WEIGHT_STEMS.items():
        patterns += [f'{name}/config.json', f'{name}/{stem}.safetensors',
                     f'{name}/{stem}.safetensors.index.json', f'{name}/{stem}-*.safetensors']
    offline = _hub_offline(local_files_only)
    try:
        return Path(snapshot_download(model, allow_patterns=patterns, local_files_only=offline))
    except LocalEntryNotFoundError as exc:
        # huggingface_hub raises this both when downloads are disabled and when the hub
        # cannot be reached: say which.
        why = ('downloads are disabled (local_files_only or HF_HUB_OFFLINE)' if offline else
               'the Hugging Face hub cannot be reached')
        raise ModelLoadError(f'Lotus checkpoint {model} is neither a local folder nor in the '
                             f'Hugging Face cache, and {why}') from exc
    except Exception as exc:
        raise ModelLoadError(f'Lotus checkpoint {model} is not a local folder and could not be '
                             f'downloaded from the Hugging Face hub: {exc}') from exc


def _space_from_name(name: str) -> str | None:
    lowered = name.lower()
    if 'disparity' in lowered:
        return 'disparity'
    return 'depth' if _DEPTH_NAME.search(lowered) else None


def _space_signals(model: str, folder: Path) -> list[tuple[str, str]]:
    """
    Return what the checkpoint says about its depth space, strongest first, as (space, source).

    A model_index.json `depth_space` key states it outright; a name (the hub id or folder as
    given, or the hub cache folder models--org--name) that contains 'disparity' or names a
    published depth checkpoint is the user's or the hub's label; the `_class_name` of the
    published repos survives renaming the folder (`hf download ... --local-dir ./lotus-depth`).
    """
    index: dict = {}
    if (folder / 'model_index.json').is_file():
        try:
            loaded = json.loads((folder / 'model_index.json').read_text())
            index = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
    signals = []
    if index.get('depth_space') in DEPTH_SPACES:
        signals.append((index['depth_space'], 'model_index.json depth_space'))
    names = [Path(model).name] + [p for p in folder.parts if p.startswith('models--')]
    for name in dict.fromkeys(names):
        space = _space_from_name(name)
        if space is not None:
            signals.append((space, f'the name {name!r}'))
    pipeline = index.get('_class_name')
    if pipeline in _PIPELINE_SPACES:
        signals.append((_PIPELINE_SPACES[pipeline],
                        f'model_index.json _class_name {pipeline!r}'))
    return signals


def _depth_space(model: str, folder: Path, override: str | None) -> tuple[str, str]:
    """
    Decide what the depth output is affine to and why: the argument, else the checkpoint.

    Metric depth is silently wrong when this is wrong, so the decision is logged, and a
    warning naming `depth_space` is logged when nothing decides it or the signals disagree.
    """
    if override is not None and override not in DEPTH_SPACES:
        raise ValueError(f"depth_space must be 'disparity' or 'depth', got {override!r}")
    signals = _space_signals(model, folder)
    if override is not None:
        signals.insert(0, (override, 'the depth_space argument'))
    if not signals:
        reason = ('nothing in the checkpoint says (no depth_space in model_index.json, no known '
                  'name or pipeline class): assumed depth')
        _LOG.warning("Lotus depth checkpoint %s: %s. If it predicts disparity (like "
                     "lotus-depth-d-v2-0-disparity), set depth_space: 'disparity', or metric "
                     'depth will be wrong', model, reason)
        return 'depth', reason
    space, source = signals[0]
    agree = [where for s, where in signals if s == space]
    disagree = [f'{where} says {s}' for s, where in signals if s != space]
    reason = f"{' and '.join(agree)} {'say' if len(agree) > 1 else 'says'} {space}"
    if disagree:
        reason += f", but {'; '.join(disagree)}"
        _LOG.warning("Lotus depth checkpoint %s: %s; using %s. If that is wrong, set "
                     "depth_space ('disparity' or 'depth'), or metric depth will be wrong",
                     model, reason, space)
    else:
        _LOG.info('Lotus depth checkpoint %s predicts %s: %s', model, space, reason)
    return space, reason


def _load_component(loader, folder: Path, name: str, source: str, **kwargs):
    try:
        return loader(str(folder), subfolder=name, use_safetensors=True, local_files_only=True,
                      **kwargs)
    except Exception as exc:
        raise ModelLoadError(f'Lotus checkpoint {source}: {name}/ in {folder} could not be '
                             f'loaded: {exc}') from exc


def _empty_prompt_embedding(folder: Path, source: str, variant: str | None) -> torch.Tensor:
    """Encode "" without padding (BOS + EOS) through the text encoder, in fp32 on the CPU."""
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / 'tokenizer'))
    except Exception as exc:
        raise ModelLoadError(f'Lotus checkpoint {source}: tokenizer/ in {folder} could not be '
                             f'loaded: {exc}') from exc
    encoder = _load_component(CLIPTextModel.from_pretrained, folder, 'text_encoder', source,
                              dtype=torch.float32, variant=variant)
    ids = tokenizer('', padding='do_not_pad', truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors='pt').input_ids
    if ids.shape != (1, 2):
        raise ModelLoadError(f'Lotus checkpoint {source}: the tokenizer turns "" into '
                             f'{ids.shape[-1]} tokens, expected 2 (BOS, EOS)')
    with torch.inference_mode():
        embedding = encoder(ids)[0].clone()
    del encoder, tokenizer
    return embedding


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def _pick_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


def _pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == 'auto':
        return torch.float16 if device.type == 'cuda' else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto', 'fp32', 'fp16' or 'bf16', got {dtype!r}")
    return _DTYPES[dtype]


class LotusEngine:
    """
    Lotus-D depth and/or normal predictor.

    Build it with `from_pretrained`. Input images are HxWx3 uint8 in RGB order; grayscale or
    RGBA images are the caller's to convert (for example with cv2.cvtColor) because guessing a
    channel order silently would corrupt the prediction.
    """

    # The UNet sees the image latent only; Lotus-G (LotusGEngine) adds a noise latent.
    family = 'Lotus-D'
    unet_in_channels = 4

    def __init__(self, *, device: torch.device, dtype: torch.dtype, vaes: list[torch.nn.Module],
                 tasks: dict[str, _Task], depth_space: str | None, processing_resolution: int,
                 resample: str, latent: str, seed: int | None, stage_timing: bool,
                 layout: torch.memory_format = torch.contiguous_format,
                 batch_decode: bool = False, resize_mode: str = 'registered',
                 depth_space_reason: str | None = None) -> None:
        self.device = device
        self.dtype = dtype
        self.depth_space = depth_space
        # Why depth_space was chosen (logged at load; for diagnostics).
        self.depth_space_reason = depth_space_reason
        self.processing_resolution = int(processing_resolution)
        self.resize_mode = resize_mode
        self.resample = resample
        self.latent = latent
        self.seed = seed
        # Stage timings on CUDA need a synchronize per stage; off gives only a correct total.
        self.stage_timing = stage_timing
        self._layout = layout
        self.batch_decode = batch_decode
        self._vaes = vaes
        self._scaling = [float(v.config.scaling_factor) for v in vaes]
        self._tasks = tasks
        self._timestep = torch.tensor([TIMESTEP], device=device)
        # Computed like the released code (float32 sin/cos), which differs from the rounded
        # Python constants in the last bit.
        task = torch.tensor([[1.0, 0.0]], dtype=torch.float32)
        self._task_embedding = torch.cat([torch.sin(task), torch.cos(task)], dim=-1).to(
            device, dtype)
        self._generator = torch.Generator(device=device) if latent == 'sample' else None

    @property
    def has_depth(self) -> bool:
        return 'depth' in self._tasks

    @property
    def has_normal(self) -> bool:
        return 'normal' in self._tasks

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        """Return the (h, w) the model runs at for an HxW image in the current mode."""
        return self._input_size(height, width, self.processing_resolution)

    def _input_size(self, height: int, width: int, resolution: int) -> tuple[int, int]:
        if self.resize_mode == 'released':
            return processing_size(height, width, resolution)
        if self.resize_mode == 'registered':
            return registered_size(height, width, resolution)
        raise ValueError(f'resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}')

    @property
    def has_uncertainty(self) -> bool:
        return False  # one deterministic step: nothing to spread over

    @property
    def shared_vae(self) -> bool:
        """Whether depth and normal share one VAE, encoding each frame once."""
        return len(self._tasks) == 2 and len(self._vaes) == 1

    @classmethod
    def from_pretrained(cls, depth_model: str | None, normal_model: str | None = None, *,
                        device: str | torch.device = 'auto', dtype: str | torch.dtype = 'auto',
                        processing_resolution: int = 768, resize_mode: str = 'registered',
                        local_files_only: bool = False, depth_space: str | None = None,
                        resample: str = 'nearest-exact',
                        latent: str = 'mean', seed: int | None = None, compile: bool = False,
                        warmup: bool | tuple[int, int] = True, stage_timing: bool = True,
                        channels_last: bool | None = None,
                        batch_decode: bool | None = None) -> LotusEngine:
        """
        Load Lotus-D depth and/or normal checkpoints (hub ids or local diffusers folders).

        Only safetensors weights are read. `resize_mode='registered'` (default) picks a model
        input whose 8-pixel grid covers the image so output pixel (u, v) is input pixel (u, v)
        (`registered_size`); 'released' truncates like the authors' code, bit for bit, whose
        outputs drift up to ~10 px at the far edges. `depth_space` overrides what the
        checkpoint says its depth output is affine to; the decision and its reason are logged
        and kept in `depth_space_reason`. `latent='sample'` reproduces the released code's
        random posterior sample, re-seeded with `seed` on every call so frames stay
        reproducible. `warmup` runs one frame at load (True: 480x640 on CUDA, a small frame on
        CPU; or an explicit (height, width)). `channels_last` (default: on CUDA only) changes
        the convolution memory layout; on CPU it reorders float sums enough to move outputs by
        ~1e-4, so CPU keeps the layout the reference results were computed with.
        `batch_decode` (default: on CUDA only) decodes the depth and normal latents of a shared
        VAE in one call: a GPU gains parallelism, a CPU gains nothing and batched convolutions
        round differently (~1e-5) from the single-task path.
        """
        if depth_model is None and normal_model is None:
            raise ValueError('give at least one of depth_model and normal_model')
        if resample not in ('nearest-exact', 'bilinear'):
            raise ValueError(f"resample must be 'nearest-exact' or 'bilinear', got {resample!r}")
        if latent not in ('mean', 'sample'):
            raise ValueError(f"latent must be 'mean' or 'sample', got {latent!r}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be 'registered' or 'released', got "
                             f'{resize_mode!r}')
        if processing_resolution < 0:
            raise ValueError('processing_resolution must be >= 0 (0 = native size)')
        if 0 < processing_resolution < VAE_FACTOR:
            raise ValueError(f'processing_resolution must be 0 or at least {VAE_FACTOR}')
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.models.attention_processor import AttnProcessor2_0

        dev = _pick_device(device)
        dt = _pick_dtype(dtype, dev)
        loaded = []
        for name, model in (('depth', depth_model), ('normal', normal_model)):
            if model is None:
                continue
            folder = resolve_checkpoint(str(model), local_files_only)
            variants = _check_folder(folder, str(model))
            unet = _load_component(UNet2DConditionModel.from_pretrained, folder, 'unet',
                                   str(model), torch_dtype=dt, variant=variants['unet'])
            cfg = unet.config
            if cfg.in_channels != cls.unet_in_channels or \
                    cfg.class_embed_type != 'projection' or \
                    cfg.projection_class_embeddings_input_dim != 4:
                raise ModelLoadError(
                    f'Lotus checkpoint {model}: unet/ is not a {cls.family} UNet (needs '
                    f"in_channels={cls.unet_in_channels}, class_embed_type='projection' with 4 "
                    f'inputs; got in_channels={cfg.in_channels}, class_embed_type='
                    f'{cfg.class_embed_type!r}); Lotus UNets with 4 input channels are Lotus-D '
                    "(backend 'lotus-d'), with 8 Lotus-G (backend 'lotus-g')")
            vae = _load_component(AutoencoderKL.from_pretrained, folder, 'vae', str(model),
                                  torch_dtype=dt, variant=variants['vae'])
            embedding = _empty_prompt_embedding(folder, str(model), variants['text_encoder'])
            if embedding.shape[-1] != cfg.cross_attention_dim:
                raise ModelLoadError(
                    f'Lotus checkpoint {model}: text encoder width {embedding.shape[-1]} != '
                    f'unet cross_attention_dim {cfg.cross_attention_dim}')
            decision = _depth_space(str(model), folder, depth_space) if name == 'depth' else None
            loaded.append((name, unet, vae, embedding, decision))
            gc.collect()

        space, space_reason = next((d for n, _, _, _, d in loaded if n == 'depth'), (None, None))
        vaes: list[torch.nn.Module] = []
        tasks: dict[str, _Task] = {}
        for name, unet, vae, embedding, _ in loaded:
            index = next((i for i, v in enumerate(vaes) if _same_weights(v, vae)), None)
            if index is None:
                vaes.append(vae)
                index = len(vaes) - 1
            tasks[name] = _Task(name, unet, index, embedding.to(dev, dt))
        del loaded
        gc.collect()
        layout = torch.channels_last if (dev.type == 'cuda' if channels_last is None
                                         else channels_last) else torch.contiguous_format
        for module in [*vaes, *(t.unet for t in tasks.values())]:
            module.set_attn_processor(AttnProcessor2_0())
            module.to(dev, memory_format=layout)
            module.eval().requires_grad_(False)
        if compile:
            for task in tasks.values():
                task.unet = torch.compile(task.unet)
        engine = cls(device=dev, dtype=dt, vaes=vaes, tasks=tasks, depth_space=space,
                     processing_resolution=processing_resolution, resample=resample,
                     latent=latent, seed=seed, stage_timing=stage_timing, layout=layout,
                     batch_decode=dev.type == 'cuda' if batch_decode is None else batch_decode,
                     resize_mode=resize_mode, depth_space_reason=space_reason)
        if warmup:
            engine._warmup(warmup)
        return engine

    def _warmup(self, warmup: bool | tuple[int, int]) -> None:
        image, resolution = warmup_frame(warmup, self.device, self.processing_resolution)
        self._run(image[None], ('depth', 'normal'), resolution)
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)

    def memory_stats(self) -> dict[str, float]:
        return cuda_memory_stats(self.device)

    def predict(self, rgb: np.ndarray, *, depth: bool = True,
                normal: bool = True) -> Prediction:
        """
        Predict depth and/or normals for one HxWx3 uint8 RGB image.

        Steps (as in the released code): x = rgb / 127.5 - 1; resize so the longer side is the
        processing resolution (bilinear, antialiased, no padding; sizes from
        `model_input_size`: truncated as released, or multiples of 8 when registered); z = VAE
        posterior mean * scaling factor; y = UNet(z, t=999, empty-prompt embedding, task
        embedding); image = clamp(decode(y / scaling) * 0.5 + 0.5, 0, 1); resize back to HxW
        (nearest-exact by default); depth = channel mean, normal = 2 * image - 1. Tasks not
        requested (or not loaded) come back as None and are not computed.
        """
        return self.predict_batch([rgb], depth=depth, normal=normal)[0]

    def predict_batch(self, images: list[np.ndarray], *, depth: bool = True,
                      normal: bool = True) -> list[Prediction]:
        """Predict for same-size images in one forward; each result carries the batch timings."""
        if len(images) == 0:
            return []
        for rgb in images:
            self._check_image(rgb)
        if any(rgb.shape != images[0].shape for rgb in images):
            raise ValueError('predict_batch needs images of one size, got '
                             f'{sorted({rgb.shape for rgb in images})}')
        wanted = tuple(name for name, on in (('depth', depth), ('normal', normal))
                       if on and name in self._tasks)
        batch = images[0][None] if len(images) == 1 else np.stack(images)
        return self._run(batch, wanted, self.processing_resolution)

    def _check_image(self, rgb: np.ndarray) -> None:
        if not isinstance(rgb, np.ndarray):
            raise ValueError(f'rgb must be a numpy array, got {type(rgb).__name__}')
        if rgb.dtype != np.uint8:
            raise ValueError(f'rgb must be uint8, got {rgb.dtype}')
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f'rgb must be HxWx3 (RGB), got shape {rgb.shape}; convert '
                             'grayscale or RGBA images to RGB first')
        height, width = rgb.shape[:2]
        if height < VAE_FACTOR or width < VAE_FACTOR:
            raise ValueError(f'rgb is {height}x{width}; both sides must be at least '
                             f'{VAE_FACTOR} pixels')
        h, w = self.model_input_size(height, width)
        if h < VAE_FACTOR or w < VAE_FACTOR:
            raise ValueError(f'rgb of {height}x{width} at processing resolution '
                             f'{self.processing_resolution} gives a {h}x{w} model input; it must '
                             f'be at least {VAE_FACTOR}x{VAE_FACTOR}')

    def _mark(self, timings: dict[str, float], stage: str, start: float) -> float:
        if self.stage_timing and self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - start
        return now

    @torch.inference_mode()
    def _run(self, batch: np.ndarray, wanted: tuple[str, ...],
             resolution: int) -> list[Prediction]:
        count, height, width = batch.shape[:3]
        timings = dict.fromkeys(STAGES, 0.0)
        begin = now = time.perf_counter()
        wanted = tuple(name for name in wanted if name in self._tasks)
        tasks = [self._tasks[name] for name in wanted]
        if not tasks:
            timings['total'] = time.perf_counter() - begin
            return [Prediction(None, None, None, timings=dict(timings)) for _ in range(count)]

        # One host-to-device copy of the uint8 frame(s); everything else stays on the device.
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h, w = self._input_size(height, width, resolution)
        if (h, w) != (height, width):
            x = F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False,
                              antialias=True)
        x = x.to(self.dtype).contiguous(memory_format=self._layout)
        now = self._mark(timings, 'preprocess', now)

        latents = {}
        if self._generator is not None:
            if self.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self.seed)
        for index in sorted({task.vae_index for task in tasks}):
            dist = self._vaes[index].encode(x).latent_dist
            z = dist.mean if self._generator is None else dist.sample(self._generator)
            latents[index] = z * self._scaling[index]
        now = self._mark(timings, 'encode', now)

        outputs = {}
        for task in tasks:
            outputs[task.name] = self._clean_latents(task, latents[task.vae_index])
            now = self._mark(timings, f'unet_{task.name}', now)
        # Lotus-D gives one prediction per image; an ensemble gives `draws`, draw-major.
        draws = len(next(iter(outputs.values()))) // count

        images = {}
        for index in sorted(latents):
            names = [t.name for t in tasks if t.vae_index == index]
            for group in [names] if self.batch_decode else [[n] for n in names]:
                y = torch.cat([outputs[n] for n in group]) / self._scaling[index]
                decoded = self._vaes[index].decode(y, return_dict=False)[0]
                for n, part in zip(group, decoded.split(count * draws), strict=True):
                    images[n] = part
        now = self._mark(timings, 'decode', now)

        flat: dict[str, torch.Tensor] = {}
        for name in wanted:
            image = (images[name].float() * 0.5 + 0.5).clamp(0.0, 1.0)
            if image.shape[-2:] != (height, width):
                if self.resample == 'bilinear':
                    image = F.interpolate(image, size=(height, width), mode='bilinear',
                                          align_corners=False, antialias=True)
                else:
                    image = F.interpolate(image, size=(height, width), mode='nearest-exact')
            if name == 'depth':
                values = image.mean(dim=1)                             # (K*B)xHxW
            else:
                values = (image * 2.0 - 1.0).permute(0, 2, 3, 1)       # (K*B)xHxWx3
            if draws > 1:
                samples = values.unflatten(0, (draws, count))          # KxBxHxW[x3]
                values = samples.mean(dim=0)
                if name == 'depth':
                    flat['uncertainty'] = samples.std(dim=0)
            flat[name] = values
        host = torch.cat([v.reshape(-1) for v in flat.values()]).cpu().numpy()  # one copy
        now = self._mark(timings, 'postprocess', now)
        timings['total'] = now - begin

        offset = 0
        arrays = {}
        for name, values in flat.items():
            arrays[name] = host[offset:offset + values.numel()].reshape(values.shape)
            offset += values.numel()
        return [Prediction(
            depth=arrays['depth'][i] if 'depth' in arrays else None,
            depth_space=self.depth_space if 'depth' in arrays else None,
            normal=arrays['normal'][i] if 'normal' in arrays else None,
            uncertainty=arrays['uncertainty'][i] if 'uncertainty' in arrays else None,
            timings=dict(timings)) for i in range(count)]

    def _clean_latents(self, task: _Task, z: torch.Tensor) -> torch.Tensor:
        """
        Return the task's clean prediction latents for image latents z (Bx4xhxw).

        Lotus-D: one UNet call at t=999 on z itself, Bx4xhxw. A subclass may return K draws per
        image (K*B latents, draw-major); `_run` then reports their mean and the depth std.
        """
        hidden = task.embedding.expand(len(z), -1, -1)      # Bx2xC empty-prompt embedding
        labels = self._task_embedding.expand(len(z), -1)    # Bx4 task switcher
        return task.unet(z, self._timestep, encoder_hidden_states=hidden, class_labels=labels,
                         return_dict=False)[0]              # Bx4xhxw
