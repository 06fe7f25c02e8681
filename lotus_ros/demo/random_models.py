"""
Random-weight Lotus-D, Lotus-G and Marigold checkpoints in the real diffusers folder layout.

Tests, the tiny demo and the benchmark need checkpoints without network access. Compute cost
does not depend on weight values, so a random checkpoint with the released architecture is a
faithful stand-in for timing, and a tiny one exercises every loading path in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_BOS = '<|startoftext|>'
_EOS = '<|endoftext|>'
# A few merges so the tokenizer is a real BPE and not only a byte alphabet.
_MERGES = ('l o', 'lo t', 'u s</w>', 'lot us</w>', 'd e', 'de p', 'dep t', 'dept h</w>')

# Sizes: 'full' is Stable Diffusion 2 (v-pred 768), the base Lotus-D was fine-tuned from.
_SIZES = {
    'tiny': {
        'unet': {
            # Attention only at half resolution keeps a 768-pixel test frame fast.
            'block_out_channels': (8, 16),
            'down_block_types': ('DownBlock2D', 'CrossAttnDownBlock2D'),
            'up_block_types': ('CrossAttnUpBlock2D', 'UpBlock2D'),
            'layers_per_block': 1,
            'attention_head_dim': (2, 4),
            'cross_attention_dim': 16,
            'norm_num_groups': 4,
            'sample_size': 16,
        },
        'vae': {
            'block_out_channels': (4, 4, 8, 8),
            'layers_per_block': 1,
            'norm_num_groups': 4,
            'sample_size': 128,
            'mid_block_add_attention': False,
        },
        'text': {
            'hidden_size': 16,
            'intermediate_size': 32,
            'num_hidden_layers': 2,
            'num_attention_heads': 2,
            'projection_dim': 16,
        },
    },
    'full': {
        'unet': {
            'block_out_channels': (320, 640, 1280, 1280),
            'down_block_types': ('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                                 'CrossAttnDownBlock2D', 'DownBlock2D'),
            'up_block_types': ('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                               'CrossAttnUpBlock2D'),
            'layers_per_block': 2,
            'attention_head_dim': (5, 10, 20, 20),
            'cross_attention_dim': 1024,
            'norm_num_groups': 32,
            'sample_size': 96,
        },
        'vae': {
            'block_out_channels': (128, 256, 512, 512),
            'layers_per_block': 2,
            'norm_num_groups': 32,
            'sample_size': 768,
            'mid_block_add_attention': True,
        },
        'text': {
            'hidden_size': 1024,
            'intermediate_size': 4096,
            'num_hidden_layers': 23,
            'num_attention_heads': 16,
            'projection_dim': 512,
        },
    },
}


def _bytes_to_unicode() -> list[str]:
    """Return CLIP's byte-level alphabet: one printable character per byte value."""
    printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
                 + list(range(ord('®'), ord('ÿ') + 1)))
    chars = []
    extra = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _vocab() -> dict[str, int]:
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + '</w>' for c in alphabet]
    tokens += [m.replace(' ', '') for m in _MERGES]
    tokens += [_BOS, _EOS]
    return {tok: i for i, tok in enumerate(tokens)}


def _write_tokenizer(folder: Path) -> None:
    """Write a CLIP BPE tokenizer as the released checkpoints ship it (vocab.json, merges.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'vocab.json').write_text(json.dumps(_vocab(), ensure_ascii=False),
                                       encoding='utf-8')
    (folder / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(_MERGES) + '\n',
                                       encoding='utf-8')
    special = {'bos_token': _BOS, 'eos_token': _EOS, 'unk_token': _EOS, 'pad_token': _EOS}
    (folder / 'special_tokens_map.json').write_text(json.dumps(special, indent=2))
    config = dict(special, tokenizer_class='CLIPTokenizer', model_max_length=77,
                  do_lower_case=True)
    (folder / 'tokenizer_config.json').write_text(json.dumps(config, indent=2))


def _check_size(size: str) -> dict:
    if size not in _SIZES:
        raise ValueError(f'size must be one of {sorted(_SIZES)}, got {size!r}')
    return _SIZES[size]


def build_vae(size: str = 'tiny', seed: int = 0):
    """Return a randomly initialised AutoencoderKL (4 blocks: VAE factor 8)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
        scaling_factor=0.18215, **_check_size(size)['vae'])


def build_unet(size: str = 'tiny', seed: int = 0, *, in_channels: int = 4,
               task_embedding: bool = True):
    """
    Return a randomly initialised SD2-architecture UNet.

    Lotus-D: 4 latent channels in (the image) and the task projection; Lotus-G: 8 (image and
    noise) and the projection; Marigold: 8 and no class embedding.
    """
    from diffusers import UNet2DConditionModel

    task = {'class_embed_type': 'projection', 'projection_class_embeddings_input_dim': 4} \
        if task_embedding else {}
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        in_channels=in_channels, out_channels=4, use_linear_projection=True, **task,
        **_check_size(size)['unet'])


def build_text_encoder(size: str = 'tiny', seed: int = 0):
    """Return a randomly initialised CLIP text encoder matching the tokenizer written here."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = _vocab()
    # 'full' keeps SD2's embedding table size (49408 rows); rows past our vocabulary go unused.
    vocab_size = 49408 if size == 'full' else len(vocab)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, max_position_embeddings=77, hidden_act='gelu',
        bos_token_id=vocab[_BOS], eos_token_id=vocab[_EOS], pad_token_id=vocab[_EOS],
        **_check_size(size)['text'])
    return CLIPTextModel(config)


def _write_components(folder: Path, size: str, seed: int, vae_seed: int,
                      weights_dtype: torch.dtype = torch.float32, **unet_kwargs) -> None:
    """Write tokenizer, VAE, UNet and text encoder one at a time (bounds memory at full size)."""
    if weights_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f'weights_dtype must be a float dtype, got {weights_dtype!r}')
    folder.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(folder / 'tokenizer')
    for name, build, component_seed in (('vae', build_vae, vae_seed), ('unet', build_unet, seed),
                                         ('text_encoder', build_text_encoder, seed + 1)):
        kwargs = unet_kwargs if name == 'unet' else {}
        module = build(size, component_seed, **kwargs)
        # torch's own cast: diffusers' .to() warns about fp32-only modules these models lack.
        torch.nn.Module.to(module, weights_dtype)
        module.save_pretrained(folder / name, safe_serialization=True)
        del module


def _write_scheduler(folder: Path, class_name: str, config: dict) -> None:
    import diffusers

    getattr(diffusers, class_name)(**config).save_pretrained(folder / 'scheduler')


def _write_index(folder: Path, class_name: str, scheduler: str | None, extra: dict) -> None:
    index = {
        '_class_name': class_name,
        '_diffusers_version': '0.28.0',
        'text_encoder': ['transformers', 'CLIPTextModel'],
        'tokenizer': ['transformers', 'CLIPTokenizer'],
        'unet': ['diffusers', 'UNet2DConditionModel'],
        'vae': ['diffusers', 'AutoencoderKL'],
        **extra,
    }
    if scheduler is not None:
        index['scheduler'] = ['diffusers', scheduler]
    (folder / 'model_index.json').write_text(json.dumps(index, indent=2))


# The scheduler of the published Lotus-G checkpoints (jingheya/lotus-depth-g-v1-0): the pipeline
# reads only init_noise_sigma and scale_model_input from it.
_LOTUS_G_SCHEDULER = {
    'beta_start': 0.00085, 'beta_end': 0.012, 'beta_schedule': 'scaled_linear',
    'clip_sample': False, 'set_alpha_to_one': False, 'steps_offset': 1,
    'prediction_type': 'sample', 'timestep_spacing': 'leading',
}
# Marigold: DDIM with v-prediction and trailing timesteps (prs-eth/marigold-depth-v1-1 and
# marigold-normals-v1-1, 1-4 steps), or LCM (prs-eth/marigold-depth-lcm-v1-0).
_MARIGOLD_SCHEDULERS = {
    'ddim': ('DDIMScheduler', {
        'beta_start': 0.00085, 'beta_end': 0.012, 'beta_schedule': 'scaled_linear',
        'clip_sample': False, 'set_alpha_to_one': False, 'steps_offset': 1,
        'prediction_type': 'v_prediction', 'timestep_spacing': 'trailing'}),
    'lcm': ('LCMScheduler', {
        'beta_start': 0.00085, 'beta_end': 0.012, 'beta_schedule': 'scaled_linear',
        'clip_sample': False, 'set_alpha_to_one': False, 'steps_offset': 1,
        'prediction_type': 'v_prediction'}),
}


def save_random_lotus(folder: str | Path, *, size: str = 'tiny', seed: int = 0,
                      vae_seed: int = 0, depth_space: str | None = None,
                      generative: bool = False, pipeline_class: str | None = None,
                      weights_dtype: torch.dtype = torch.float32) -> Path:
    """
    Write a random-weight Lotus-D (or, `generative`, Lotus-G) checkpoint and return its path.

    `seed` drives the UNet and text encoder weights, `vae_seed` the VAE weights, so two
    checkpoints written with the same `vae_seed` carry identical VAEs like the published depth
    and normal checkpoints do. `depth_space` ('disparity' or 'depth') is recorded in
    model_index.json as a hint for the engine. Lotus-G gets the 8-input-channel UNet and the
    released DDIM scheduler config. `pipeline_class` is model_index.json's `_class_name`
    (default LotusDPipeline / LotusGPipeline): the published repos name classes from the
    authors' code that diffusers lacks (lotus-depth-d-v2-0-disparity and lotus-normal-d-v1-1:
    'DirectRegressionPipeline'; lotus-depth-d-v1-0/-v1-1: 'LotusDPipeline').
    `weights_dtype=torch.float16` stores fp16 tensors under the plain file names, as the
    published repos do.
    """
    _check_size(size)
    if depth_space not in (None, 'disparity', 'depth'):
        raise ValueError(f"depth_space must be 'disparity', 'depth' or None, got {depth_space!r}")
    folder = Path(folder)
    _write_components(folder, size, seed, vae_seed, weights_dtype,
                      in_channels=8 if generative else 4)
    if generative:
        _write_scheduler(folder, 'DDIMScheduler', _LOTUS_G_SCHEDULER)
    _write_index(folder, pipeline_class or ('LotusGPipeline' if generative else 'LotusDPipeline'),
                 'DDIMScheduler' if generative else None,
                 {} if depth_space is None else {'depth_space': depth_space})
    return folder


def save_random_marigold(folder: str | Path, *, task: str = 'depth', size: str = 'tiny',
                         seed: int = 0, vae_seed: int = 0, scheduler: str = 'ddim',
                         prediction_type: str | None = None) -> Path:
    """
    Write a random-weight Marigold checkpoint ('depth' or 'normals') loadable by diffusers.

    The model_index.json carries the pipeline config of the published v1-1 checkpoints
    (affine-invariant depth, full-z-range normals, 4 default steps at 768 px; 1 step with
    `scheduler='lcm'`). `prediction_type` overrides 'depth' / 'normals' (e.g. 'disparity').
    """
    _check_size(size)
    if task not in ('depth', 'normals'):
        raise ValueError(f"task must be 'depth' or 'normals', got {task!r}")
    if scheduler not in _MARIGOLD_SCHEDULERS:
        raise ValueError(f'scheduler must be one of {sorted(_MARIGOLD_SCHEDULERS)}, '
                         f'got {scheduler!r}')
    folder = Path(folder)
    _write_components(folder, size, seed, vae_seed, in_channels=8, task_embedding=False)
    class_name, config = _MARIGOLD_SCHEDULERS[scheduler]
    _write_scheduler(folder, class_name, config)
    extra = {
        'prediction_type': prediction_type or task,
        'default_denoising_steps': 1 if scheduler == 'lcm' else 4,
        'default_processing_resolution': 768,
    }
    if task == 'depth':
        extra.update(scale_invariant=True, shift_invariant=True)
    else:
        extra['use_full_z_range'] = True
    _write_index(folder, 'MarigoldDepthPipeline' if task == 'depth' else 'MarigoldNormalsPipeline',
                 class_name, extra)
    return folder
