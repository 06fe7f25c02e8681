"""
LotusGEngine against an independent re-implementation of the released LotusGPipeline.

The reference follows EnVision-Research/Lotus pipeline.py (LotusGPipeline.__call__ with one
timestep, as infer.py calls it) step by step on the diffusers/transformers modules of a tiny
random checkpoint; only the image latent is the posterior mean instead of a sample.
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer

from lotus_ros.core.lotus_d import LotusEngine, ModelLoadError
from lotus_ros.core.lotus_g import LotusGEngine
from lotus_ros.demo.random_models import build_unet, save_random_lotus

TOL = 1e-5
# K draws run as one batched UNet call: batched CPU convolutions round differently (~1e-5).
BATCH_TOL = 5e-5


class ReleasedLotusG:
    """LotusGPipeline with timesteps=[999], fp32, straight from the modules of one checkpoint."""

    def __init__(self, folder: Path) -> None:
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder='unet').eval()
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder='vae').eval()
        self.scheduler = DDIMScheduler.from_pretrained(folder, subfolder='scheduler')
        tokenizer = CLIPTokenizer.from_pretrained(folder / 'tokenizer')
        encoder = CLIPTextModel.from_pretrained(folder, subfolder='text_encoder').eval()
        ids = tokenizer('', padding='do_not_pad', return_tensors='pt').input_ids
        with torch.no_grad():
            self.prompt = encoder(ids).last_hidden_state

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, resolution: int, seed: int) -> np.ndarray:
        """Return the decoded HxWx3 image in [0, 1] for a generator seeded `seed`."""
        generator = torch.Generator().manual_seed(seed)
        height, width = rgb.shape[:2]
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float32) / 127.5 - 1
        if resolution:  # resize_max_res
            scale = min(resolution / width, resolution / height)
            size = (int(height * scale), int(width * scale))
            x = F.interpolate(x, size, mode='bilinear', align_corners=False, antialias=True)
        # prepare_latents: noise of in_channels // 2 channels at 1/8 size, drawn before encoding.
        shape = (1, self.unet.config.in_channels // 2, x.shape[-2] // 8, x.shape[-1] // 8)
        latents = torch.randn(shape, generator=generator) * self.scheduler.init_noise_sigma
        sf = self.vae.config.scaling_factor
        rgb_latents = self.vae.encode(x).latent_dist.mean * sf
        task = torch.tensor([[1.0, 0.0]])
        task_emb = torch.cat([torch.sin(task), torch.cos(task)], dim=-1)
        t = torch.tensor([999]).long()[0]
        model_input = self.scheduler.scale_model_input(latents, t)
        model_input = torch.cat([rgb_latents, model_input], dim=1)
        x0_pred = self.unet(model_input, t, encoder_hidden_states=self.prompt,
                            class_labels=task_emb).sample
        latents = x0_pred  # len(timesteps) == 1: no scheduler step
        image = self.vae.decode(latents / sf).sample
        image = torch.clamp(image / 2 + 0.5, 0, 1)
        image = F.interpolate(image, (height, width), mode='nearest-exact')  # resize_back
        return image[0].permute(1, 2, 0).numpy()

    def depth(self, rgb: np.ndarray, resolution: int, seed: int) -> np.ndarray:
        return self(rgb, resolution, seed).mean(axis=-1)

    def normal(self, rgb: np.ndarray, resolution: int, seed: int) -> np.ndarray:
        return self(rgb, resolution, seed) * 2 - 1


def _image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(xx / 37.0), 128 + 100 * np.cos(yy / 23.0),
                     (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def images() -> dict[str, np.ndarray]:
    """301x451 (sides not multiples of 8) and 120x160 (both multiples of 8)."""
    return {'odd': _image(301, 451, 7), 'even': _image(120, 160, 8)}


@pytest.fixture(scope='module')
def tiny_lotus_g(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('tiny_lotus_g')
    return {
        'depth': save_random_lotus(root / 'lotus-depth-g-tiny-disparity', seed=2, vae_seed=0,
                                   generative=True),
        'normal': save_random_lotus(root / 'lotus-normal-g-tiny', seed=3, vae_seed=0,
                                    generative=True),
    }


@pytest.fixture(scope='module')
def refs(tiny_lotus_g) -> dict[str, ReleasedLotusG]:
    return {name: ReleasedLotusG(path) for name, path in tiny_lotus_g.items()}


@pytest.fixture(scope='module')
def engine(tiny_lotus_g) -> LotusGEngine:
    # The released geometry: the reference is the authors' procedure, truncated sizes included.
    return LotusGEngine.from_pretrained(str(tiny_lotus_g['depth']), str(tiny_lotus_g['normal']),
                                        device='cpu', seed=3, warmup=False,
                                        resize_mode='released')


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float64) - b).max())


def _informative(values: np.ndarray) -> None:
    """Most pixels must be unclamped, or a comparison could pass on saturated output."""
    p = values if values.ndim == 2 else (values + 1) / 2
    assert np.mean((p > 0) & (p < 1)) > 0.5


@pytest.mark.parametrize('resolution, image', [(768, 'odd'), (512, 'odd'), (0, 'even')])
def test_matches_released_pipeline(engine, refs, images, resolution, image):
    rgb = images[image]
    engine.processing_resolution = resolution
    pred = engine.predict(rgb)
    ref_depth = refs['depth'].depth(rgb, resolution, seed=3)
    ref_normal = refs['normal'].normal(rgb, resolution, seed=3)
    _informative(ref_depth)
    _informative(ref_normal)
    assert pred.depth.dtype == np.float32 and pred.normal.dtype == np.float32
    assert _max_diff(pred.depth, ref_depth) <= TOL
    assert _max_diff(pred.normal, ref_normal) <= TOL
    assert pred.depth_space == 'disparity'
    assert pred.uncertainty is None and not engine.has_uncertainty
    assert engine.shared_vae


def test_frames_are_reproducible_and_seeded(engine, tiny_lotus_g, refs, images):
    rgb = images['even']
    engine.processing_resolution = 0
    first, second = engine.predict(rgb, normal=False), engine.predict(rgb, normal=False)
    np.testing.assert_array_equal(first.depth, second.depth)
    other = LotusGEngine.from_pretrained(str(tiny_lotus_g['depth']), device='cpu', seed=4,
                                         processing_resolution=0, warmup=False)
    drawn = other.predict(rgb).depth
    # The noise matters: another seed is another draw, and it is the released one for seed 4.
    assert _max_diff(drawn, first.depth) > 1e-3
    assert _max_diff(drawn, refs['depth'].depth(rgb, 0, seed=4)) <= TOL


def test_ensemble_is_mean_and_std_of_the_draws(tiny_lotus_g, images):
    rgb = images['odd']
    kw = {'device': 'cpu', 'processing_resolution': 256, 'warmup': False}
    ensemble = LotusGEngine.from_pretrained(str(tiny_lotus_g['depth']),
                                            str(tiny_lotus_g['normal']), seed=5,
                                            ensemble_size=3, **kw)
    assert ensemble.has_uncertainty
    pred = ensemble.predict(rgb)
    singles = [LotusGEngine.from_pretrained(str(tiny_lotus_g['depth']),
                                            str(tiny_lotus_g['normal']), seed=5 + k,
                                            **kw).predict(rgb) for k in range(3)]
    depths = np.stack([s.depth for s in singles])
    normals = np.stack([s.normal for s in singles])
    assert pred.uncertainty.shape == pred.depth.shape and pred.uncertainty.dtype == np.float32
    assert _max_diff(pred.depth, depths.mean(axis=0)) <= BATCH_TOL
    assert _max_diff(pred.normal, normals.mean(axis=0)) <= BATCH_TOL
    assert _max_diff(pred.uncertainty, depths.std(axis=0, ddof=1)) <= BATCH_TOL
    assert np.mean(pred.uncertainty > 1e-4) > 0.9


def test_batch_of_frames_equals_single_frames(tiny_lotus_g, images):
    eng = LotusGEngine.from_pretrained(str(tiny_lotus_g['depth']), device='cpu', seed=1,
                                       ensemble_size=2, processing_resolution=128,
                                       warmup=False)
    rgb = images['odd']
    other = np.ascontiguousarray(rgb[::-1, ::-1])
    batch = eng.predict_batch([rgb, other])
    for got, single in zip(batch, [eng.predict(rgb), eng.predict(other)], strict=True):
        assert _max_diff(got.depth, single.depth) <= BATCH_TOL
        assert _max_diff(got.uncertainty, single.uncertainty) <= BATCH_TOL
        assert got.normal is None


def test_checkpoint_families_are_told_apart(tiny_lotus, tiny_lotus_g, tmp_path):
    with pytest.raises(ModelLoadError, match="in_channels=8.*backend 'lotus-g'"):
        LotusEngine.from_pretrained(str(tiny_lotus_g['depth']), device='cpu', warmup=False)
    with pytest.raises(ModelLoadError, match='not a Lotus-G UNet'):
        LotusGEngine.from_pretrained(str(tiny_lotus['depth']), device='cpu', warmup=False)
    no_scheduler = tmp_path / 'no-scheduler'
    shutil.copytree(tiny_lotus_g['depth'], no_scheduler)
    shutil.rmtree(no_scheduler / 'scheduler')
    with pytest.raises(ModelLoadError, match='scheduler_config.json'):
        LotusGEngine.from_pretrained(str(no_scheduler), device='cpu', warmup=False)


@pytest.mark.parametrize('kwargs', [{'ensemble_size': 0}, {'seed': -1}, {'seed': 1.5}])
def test_bad_draw_arguments(tiny_lotus_g, kwargs):
    with pytest.raises(ValueError):
        LotusGEngine.from_pretrained(str(tiny_lotus_g['depth']), device='cpu', warmup=False,
                                     **kwargs)


def test_random_lotus_g_checkpoint_layout(tiny_lotus_g):
    """The layout of jingheya/lotus-depth-g-v1-0: LotusGPipeline, DDIM 'sample', 8 inputs."""
    folder = tiny_lotus_g['depth']
    index = json.loads((folder / 'model_index.json').read_text())
    scheduler = json.loads((folder / 'scheduler' / 'scheduler_config.json').read_text())
    unet = json.loads((folder / 'unet' / 'config.json').read_text())
    assert index['_class_name'] == 'LotusGPipeline'
    assert index['scheduler'] == ['diffusers', 'DDIMScheduler']
    assert scheduler['_class_name'] == 'DDIMScheduler'
    assert scheduler['prediction_type'] == 'sample'
    assert unet['in_channels'] == 8 and unet['out_channels'] == 4
    assert unet['class_embed_type'] == 'projection'
    with torch.device('meta'):
        full = build_unet('full', in_channels=8)
    # SD2's UNet, the task projection, and conv_in widened by 4 input channels (3x3, 320 out).
    assert sum(p.numel() for p in full.parameters()) == \
        865_910_724 + (4 * 1280 + 1280) + (1280 * 1280 + 1280) + 320 * 4 * 9
