"""Random-weight Lotus-D checkpoints: layout, tokenizer, seeding, and the full SD2 sizes."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
import torch
from transformers import CLIPTokenizer

from lotus_ros.demo.random_models import (
    build_text_encoder,
    build_unet,
    build_vae,
    save_random_lotus,
)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _weights(folder, name):
    return load_file(folder / name / 'diffusion_pytorch_model.safetensors')


def test_tiny_layout_is_diffusers_and_safetensors_only(tiny_lotus):
    folder = tiny_lotus['depth']
    files = {p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file()}
    assert {'model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors',
            'vae/config.json', 'vae/diffusion_pytorch_model.safetensors',
            'text_encoder/config.json', 'text_encoder/model.safetensors',
            'tokenizer/vocab.json', 'tokenizer/merges.txt'} <= files
    assert not [f for f in files if f.endswith(('.bin', '.ckpt', '.pt', '.pth'))]
    index = json.loads((folder / 'model_index.json').read_text())
    assert index['unet'] == ['diffusers', 'UNet2DConditionModel']
    unet = json.loads((folder / 'unet' / 'config.json').read_text())
    vae = json.loads((folder / 'vae' / 'config.json').read_text())
    text = json.loads((folder / 'text_encoder' / 'config.json').read_text())
    assert unet['in_channels'] == 4 and unet['out_channels'] == 4
    assert unet['class_embed_type'] == 'projection'
    assert unet['projection_class_embeddings_input_dim'] == 4
    assert len(vae['block_out_channels']) == 4  # three downsamplings: factor 8
    assert text['hidden_size'] == unet['cross_attention_dim']


def test_tokenizer_encodes_empty_prompt_as_bos_eos(tiny_lotus):
    tokenizer = CLIPTokenizer.from_pretrained(tiny_lotus['depth'] / 'tokenizer')
    ids = tokenizer('', padding='do_not_pad').input_ids
    assert ids == [tokenizer.bos_token_id, tokenizer.eos_token_id]
    assert tokenizer.convert_ids_to_tokens(tokenizer('Lotus').input_ids) == [
        '<|startoftext|>', 'lotus</w>', '<|endoftext|>']
    text = json.loads((tiny_lotus['depth'] / 'text_encoder' / 'config.json').read_text())
    assert text['eos_token_id'] == tokenizer.eos_token_id


def test_vae_seed_controls_vae_weights(tiny_lotus, tmp_path):
    depth, normal = (_weights(tiny_lotus[k], 'vae') for k in ('depth', 'normal'))
    assert depth.keys() == normal.keys()
    assert all(torch.equal(depth[k], normal[k]) for k in depth)
    unets = [_weights(tiny_lotus[k], 'unet') for k in ('depth', 'normal')]
    assert not all(torch.equal(unets[0][k], unets[1][k]) for k in unets[0])
    other = _weights(save_random_lotus(tmp_path / 'other', vae_seed=1), 'vae')
    assert not all(torch.equal(depth[k], other[k]) for k in depth)


def test_full_size_is_stable_diffusion_2():
    """Parameter counts of SD2: UNet 865,910,724 (+1,646,080 task projection), VAE, CLIP-H."""
    with torch.device('meta'):
        unet, vae, text = build_unet('full'), build_vae('full'), build_text_encoder('full')
    assert count(unet) == 865_910_724 + (4 * 1280 + 1280) + (1280 * 1280 + 1280)
    assert count(vae) == 83_653_863
    assert count(text) == 340_387_840
    assert unet.config.cross_attention_dim == text.config.hidden_size == 1024
    assert list(unet.config.attention_head_dim) == [5, 10, 20, 20]
    assert unet.config.use_linear_projection
    assert text.config.num_hidden_layers == 23


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='size'):
        save_random_lotus(tmp_path / 'x', size='huge')
    with pytest.raises(ValueError, match='depth_space'):
        save_random_lotus(tmp_path / 'y', depth_space='metric')
