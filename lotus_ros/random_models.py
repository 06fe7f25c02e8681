"""
Random-weight Lotus-D checkpoints in the real diffusers folder layout.

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


def build_unet(size: str = 'tiny', seed: int = 0):
    """Return a randomly initialised Lotus-D UNet (4 latent channels in, task projection)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        in_channels=4, out_channels=4, class_embed_type='projection',
        projection_class_embeddings_input_dim=4, use_linear_projection=True,
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


def save_random_lotus(folder: str | Path, *, size: str = 'tiny', seed: int = 0,
                      vae_seed: int = 0, depth_space: str | None = None,
                      pipeline_class: str = 'LotusDPipeline',
                      weights_dtype: torch.dtype = torch.float32) -> Path:
    """
    Write a random-weight Lotus-D checkpoint to `folder` and return its path.

    `seed` drives the UNet and text encoder weights, `vae_seed` the VAE weights, so two
    checkpoints written with the same `vae_seed` carry identical VAEs like the published depth
    and normal checkpoints do. `depth_space` ('disparity' or 'depth') is recorded in
    model_index.json as a hint for the engine. `pipeline_class` is model_index.json's
    `_class_name`: the published repos name classes from the authors' code that diffusers lacks
    (lotus-depth-d-v2-0-disparity and lotus-normal-d-v1-1: 'DirectRegressionPipeline';
    lotus-depth-d-v1-0/-v1-1: 'LotusDPipeline'). `weights_dtype=torch.float16` stores fp16
    tensors under the plain file names, as the published repos do. Components are built and
    saved one at a time to bound memory for the full size.
    """
    _check_size(size)
    if depth_space not in (None, 'disparity', 'depth'):
        raise ValueError(f"depth_space must be 'disparity', 'depth' or None, got {depth_space!r}")
    if weights_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f'weights_dtype must be a float dtype, got {weights_dtype!r}')
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(folder / 'tokenizer')
    for name, build, component_seed in (('vae', build_vae, vae_seed), ('unet', build_unet, seed),
                                         ('text_encoder', build_text_encoder, seed + 1)):
        module = build(size, component_seed)
        # torch's own cast: diffusers' .to() warns about fp32-only modules these models lack.
        torch.nn.Module.to(module, weights_dtype)
        module.save_pretrained(folder / name, safe_serialization=True)
        del module

    index = {
        '_class_name': pipeline_class,
        '_diffusers_version': '0.28.0',
        'text_encoder': ['transformers', 'CLIPTextModel'],
        'tokenizer': ['transformers', 'CLIPTokenizer'],
        'unet': ['diffusers', 'UNet2DConditionModel'],
        'vae': ['diffusers', 'AutoencoderKL'],
    }
    if depth_space is not None:
        index['depth_space'] = depth_space
    (folder / 'model_index.json').write_text(json.dumps(index, indent=2))
    return folder
