"""
LotusEngine against an independent re-implementation of the released Lotus-D computation.

The reference below is written from the published steps and calls the diffusers/transformers
modules directly, so a mistake in the engine's preprocessing, conditioning, latent handling or
postprocessing shows up as a numeric difference.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
import shutil
from types import SimpleNamespace

from diffusers import AutoencoderKL, UNet2DConditionModel
import numpy as np
import pytest
from safetensors.torch import load_file
import torch
import torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer

from lotus_ros.core.engine import ModelLoadError
from lotus_ros.core.lotus_d import LotusEngine, _depth_space, _Task
from lotus_ros.demo.random_models import save_random_lotus

# Engine vs Reference needs no tolerance: both run the same fp32 operations on tensors of the
# same shapes and layouts in one process, hence the same kernels, so the outputs are equal to
# the bit (measured: max|diff| = 0 at every resolution and option below, with AVX-512 and with
# AVX2 kernels). A difference means a step differs from the released one.
#
# Batch size (and one batched decode) changes how CPU convolutions block their sums, so those
# outputs differ by summation order only. Each fp32 evaluation lies within E of the exact
# result, so two of them differ by at most 2E. E = max|fp32 - float64 reference| on the two test
# frames at 256 px, relative to the output's standard deviation, the larger of AVX-512 and AVX2
# kernels (test/rounding_survey.py): depth 4.3e-5 = 3.7e-4 of std, normal 1.95e-4 = 6.2e-4 of
# std. 2 * 6.2e-4 = 1.24e-3, rounded up. (Observed batch-vs-single: at most 2.1e-4 of std, AVX2
# normals; a batching bug, e.g. mixed-up images, is of the order of the std itself.)
ORDER_RTOL = 1.5e-3


class Reference:
    """The released Lotus-D steps 1-8, fp32, straight from the modules of one checkpoint."""

    def __init__(self, folder: Path) -> None:
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder='unet').eval()
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder='vae').eval()
        tokenizer = CLIPTokenizer.from_pretrained(folder / 'tokenizer')
        encoder = CLIPTextModel.from_pretrained(folder, subfolder='text_encoder').eval()
        ids = tokenizer('', padding='do_not_pad', return_tensors='pt').input_ids
        assert ids.shape == (1, 2)
        with torch.no_grad():
            self.prompt = encoder(ids).last_hidden_state

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, resolution: int, *, resample: str = 'nearest-exact',
                 generator: torch.Generator | None = None,
                 size: tuple[int, int] | None = None) -> np.ndarray:
        """Run the released steps; `size` replaces the released model input size if given."""
        height, width = rgb.shape[:2]
        # contiguous: the memory layout is no step, and the engine's is contiguous
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float32).contiguous()
        x = x / 127.5 - 1
        if size is None and resolution:
            scale = min(resolution / width, resolution / height)
            size = (int(height * scale), int(width * scale))
        if size is not None and size != (height, width):
            x = F.interpolate(x, size, mode='bilinear', align_corners=False, antialias=True)
        sf = self.vae.config.scaling_factor
        dist = self.vae.encode(x).latent_dist
        z = (dist.mean if generator is None else dist.sample(generator)) * sf
        task = torch.tensor([[1.0, 0.0]])
        labels = torch.cat([torch.sin(task), torch.cos(task)], dim=-1)
        y = self.unet(z, 999, encoder_hidden_states=self.prompt, class_labels=labels).sample
        image = self.vae.decode(y / sf).sample
        assert image.shape[-2:] == (8 * (x.shape[-2] // 8), 8 * (x.shape[-1] // 8))
        image = torch.clamp(image * 0.5 + 0.5, 0, 1)
        if resample == 'bilinear':
            image = F.interpolate(image, (height, width), mode='bilinear', align_corners=False,
                                  antialias=True)
        else:
            image = F.interpolate(image, (height, width), mode='nearest-exact')
        return image[0].permute(1, 2, 0).numpy()

    def depth(self, rgb: np.ndarray, resolution: int, **kw) -> np.ndarray:
        return self(rgb, resolution, **kw).mean(axis=-1)

    def normal(self, rgb: np.ndarray, resolution: int, **kw) -> np.ndarray:
        return self(rgb, resolution, **kw) * 2 - 1


def make_frame() -> np.ndarray:
    """Return 301x451 RGB (sides not multiples of 8): smooth structure plus noise, like a frame."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:301, 0:451]
    base = np.stack([128 + 100 * np.sin(xx / 37.0), 128 + 100 * np.cos(yy / 23.0),
                     (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def rgb() -> np.ndarray:
    return make_frame()


@pytest.fixture(scope='module')
def refs(tiny_lotus) -> dict[str, Reference]:
    return {name: Reference(path) for name, path in tiny_lotus.items()}


@pytest.fixture(scope='module')
def engine(tiny_lotus) -> LotusEngine:
    """Build the engine on the released geometry, which the reference (the authors' steps) has."""
    return LotusEngine.from_pretrained(str(tiny_lotus['depth']), str(tiny_lotus['normal']),
                                       device='cpu', warmup=False, resize_mode='released')


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float64) - b).max())


def _assert_equal_up_to_summation_order(got: np.ndarray, expected: np.ndarray) -> None:
    assert _max_diff(got, expected) <= ORDER_RTOL * float(expected.std())


def _informative(values: np.ndarray) -> None:
    """Most pixels must be unclamped, or a comparison could pass on saturated output."""
    p = values if values.ndim == 2 else (values + 1) / 2
    assert np.mean((p > 0) & (p < 1)) > 0.5


@pytest.mark.parametrize('resolution', [768, 0, 512, 64])
def test_matches_reference(engine, refs, rgb, resolution):
    engine.processing_resolution = resolution
    pred = engine.predict(rgb)
    ref_depth = refs['depth'].depth(rgb, resolution)
    ref_normal = refs['normal'].normal(rgb, resolution)
    _informative(ref_depth)
    _informative(ref_normal)
    assert pred.depth.dtype == np.float32 and pred.normal.dtype == np.float32
    np.testing.assert_array_equal(pred.depth, ref_depth)
    np.testing.assert_array_equal(pred.normal, ref_normal)
    assert pred.depth_space == 'disparity'
    assert engine.shared_vae


def test_bilinear_resample_matches_reference(tiny_lotus, refs, rgb):
    eng = LotusEngine.from_pretrained(str(tiny_lotus['depth']), device='cpu', warmup=False,
                                      processing_resolution=256, resample='bilinear',
                                      resize_mode='released')
    pred = eng.predict(rgb)
    assert pred.normal is None
    np.testing.assert_array_equal(pred.depth, refs['depth'].depth(rgb, 256, resample='bilinear'))


def test_sampled_latent_is_seeded(tiny_lotus, refs, rgb):
    eng = LotusEngine.from_pretrained(str(tiny_lotus['depth']), device='cpu', warmup=False,
                                      processing_resolution=128, latent='sample', seed=3,
                                      resize_mode='released')
    first, second = eng.predict(rgb).depth, eng.predict(rgb).depth
    np.testing.assert_array_equal(first, second)
    ref = refs['depth'].depth(rgb, 128, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(first, ref)
    # The sample must move the output beyond rounding: fp32 evaluations of one function differ
    # by <= 2E = 4e-5 at 128 px (E measured as for ORDER_RTOL); the posterior noise moves this
    # depth by 0.6. 1e-3 sits between the two.
    assert _max_diff(first, refs['depth'].depth(rgb, 128)) > 1e-3


def test_shared_vae_equals_separate_models(engine, tiny_lotus, rgb):
    engine.processing_resolution = 256
    both = engine.predict(rgb)
    depth_only = LotusEngine.from_pretrained(str(tiny_lotus['depth']), device='cpu',
                                             processing_resolution=256, warmup=False,
                                             resize_mode='released')
    normal_only = LotusEngine.from_pretrained(None, str(tiny_lotus['normal']), device='cpu',
                                              processing_resolution=256, warmup=False,
                                              resize_mode='released')
    assert not depth_only.has_normal and not normal_only.has_depth
    np.testing.assert_array_equal(both.depth, depth_only.predict(rgb).depth)
    np.testing.assert_array_equal(both.normal, normal_only.predict(rgb).normal)
    # One batched decode of both latents (the CUDA default): batched convolutions round
    # differently, so equal up to summation order.
    engine.batch_decode = True
    try:
        batched = engine.predict(rgb)
    finally:
        engine.batch_decode = False
    _assert_equal_up_to_summation_order(batched.depth, both.depth)
    _assert_equal_up_to_summation_order(batched.normal, both.normal)


def test_different_vaes_are_kept_apart(tiny_lotus, tmp_path, rgb):
    other = save_random_lotus(tmp_path / 'normal-other-vae', seed=1, vae_seed=5)
    eng = LotusEngine.from_pretrained(str(tiny_lotus['depth']), str(other), device='cpu',
                                      processing_resolution=128, warmup=False,
                                      resize_mode='released')
    assert not eng.shared_vae
    pred = eng.predict(rgb)
    np.testing.assert_array_equal(pred.normal, Reference(other).normal(rgb, 128))
    np.testing.assert_array_equal(pred.depth, Reference(tiny_lotus['depth']).depth(rgb, 128))


def test_batch_equals_single_and_repeats_are_identical(engine, rgb):
    engine.processing_resolution = 256
    other = np.ascontiguousarray(rgb[::-1, ::-1])
    batch = engine.predict_batch([rgb, other])
    singles = [engine.predict(rgb), engine.predict(other)]
    for b, s in zip(batch, singles, strict=True):
        _assert_equal_up_to_summation_order(b.depth, s.depth)
        _assert_equal_up_to_summation_order(b.normal, s.normal)
    again = engine.predict(rgb)
    np.testing.assert_array_equal(again.depth, singles[0].depth)
    np.testing.assert_array_equal(again.normal, singles[0].normal)


def test_unrequested_tasks_are_skipped(engine, rgb):
    engine.processing_resolution = 128
    full = engine.predict(rgb)
    depth = engine.predict(rgb, normal=False)
    normal = engine.predict(rgb, depth=False)
    assert depth.normal is None and depth.timings['unet_normal'] == 0.0
    assert normal.depth is None and normal.depth_space is None
    assert normal.timings['unet_depth'] == 0.0
    np.testing.assert_array_equal(depth.depth, full.depth)
    np.testing.assert_array_equal(normal.normal, full.normal)
    stages = ('preprocess', 'encode', 'unet_depth', 'unet_normal', 'decode', 'postprocess')
    # The stages are consecutive perf_counter differences, so they add up to the total but for
    # float64 rounding: ~10 roundings of values < 100 s, < 1e-12 s.
    assert full.timings['total'] >= sum(full.timings[s] for s in stages) - 1e-9
    assert all(full.timings[s] > 0 for s in stages)


def test_non_contiguous_input(engine, rgb):
    engine.processing_resolution = 128
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    view = bgr[..., ::-1]  # what a caller gets from a BGR frame without copying
    assert not view.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(engine.predict(view).depth, engine.predict(rgb).depth)


def test_bf16_on_cpu_within_bound(tiny_lotus, refs, rgb):
    """
    bf16 stays close to fp32: mean error at most a quarter of the output's own variation.

    bf16 keeps 8 significant bits (unit roundoff 2^-8, 2^16 times fp32's); an untrained random
    network amplifies that more than the released weights would (measured: 0.12 of the
    variation for depth and 0.11 for normals with AVX-512 kernels, 0.13 and 0.11 with AVX2), so
    the bound is on the mean, relative to the signal. A wrong conditioning or cast gives an
    unrelated output, whose mean error is about 1.4 times the variation (sqrt(2) for two
    independent draws of the same spread).
    """
    eng = LotusEngine.from_pretrained(str(tiny_lotus['depth']), str(tiny_lotus['normal']),
                                      device='cpu', dtype='bf16', processing_resolution=256,
                                      warmup=False, resize_mode='released')
    assert eng.dtype == torch.bfloat16
    pred = eng.predict(rgb)
    assert pred.depth.dtype == np.float32 and pred.normal.dtype == np.float32
    for got, ref in ((pred.depth, refs['depth'].depth(rgb, 256)),
                     (pred.normal, refs['normal'].normal(rgb, 256))):
        spread = np.abs(ref - ref.mean()).mean()
        assert np.abs(got - ref).mean() <= 0.25 * spread


@pytest.mark.parametrize('bad', [
    np.zeros((32, 32), np.uint8),          # grayscale
    np.zeros((32, 32, 4), np.uint8),       # RGBA
    np.zeros((32, 32, 3), np.float32),     # not uint8
    np.zeros((0, 0, 3), np.uint8),         # empty
    np.zeros((1, 1, 3), np.uint8),         # one pixel
    np.zeros((8, 4000, 3), np.uint8),      # processing image thinner than 8 px at R=768
    [[[0, 0, 0]]],                         # not an array
])
def test_bad_images_raise_value_error(engine, bad):
    engine.processing_resolution = 768
    with pytest.raises(ValueError, match='rgb'):
        engine.predict(bad)


def test_batch_of_mixed_sizes_raises(engine):
    with pytest.raises(ValueError, match='one size'):
        engine.predict_batch([np.zeros((16, 16, 3), np.uint8), np.zeros((16, 24, 3), np.uint8)])
    assert engine.predict_batch([]) == []


def test_missing_folder_is_clear(tmp_path):
    missing = tmp_path / 'no-such-model'
    with pytest.raises(ModelLoadError, match='does not exist') as err:
        LotusEngine.from_pretrained(str(missing), device='cpu', warmup=False)
    assert str(missing) in str(err.value)


def test_folder_without_unet_is_clear(tiny_lotus, tmp_path):
    broken = tmp_path / 'no-unet'
    shutil.copytree(tiny_lotus['depth'], broken)
    shutil.rmtree(broken / 'unet')
    with pytest.raises(ModelLoadError, match=r'missing: unet/') as err:
        LotusEngine.from_pretrained(str(broken), device='cpu', warmup=False)
    assert str(broken) in str(err.value)


def test_pickle_only_checkpoint_is_refused(tiny_lotus, tmp_path):
    pickled = tmp_path / 'bin-only'
    shutil.copytree(tiny_lotus['depth'], pickled)
    weights = pickled / 'unet' / 'diffusion_pytorch_model.safetensors'
    weights.unlink()
    # Not a valid pickle: loading it at all would fail differently from the refusal.
    (pickled / 'unet' / 'diffusion_pytorch_model.bin').write_bytes(b'not a pickle')
    with pytest.raises(ModelLoadError, match=r'unet/.*pickle') as err:
        LotusEngine.from_pretrained(str(pickled), device='cpu', warmup=False)
    assert str(pickled) in str(err.value)


def test_corrupt_weights_are_clear(tiny_lotus, tmp_path):
    corrupt = tmp_path / 'corrupt'
    shutil.copytree(tiny_lotus['depth'], corrupt)
    weights = corrupt / 'vae' / 'diffusion_pytorch_model.safetensors'
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match='vae/') as err:
        LotusEngine.from_pretrained(str(corrupt), device='cpu', warmup=False)
    assert str(corrupt) in str(err.value)


def test_uncached_hub_id_offline_is_clear(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(ModelLoadError, match='nobody-here/lotus-absent'):
        LotusEngine.from_pretrained('nobody-here/lotus-absent', device='cpu', warmup=False)


def test_depth_space_from_name_hint_and_argument(tiny_lotus, tmp_path):
    plain = save_random_lotus(tmp_path / 'lotus-depth-d-tiny', seed=0)
    hinted = save_random_lotus(tmp_path / 'plain-name', seed=0, depth_space='disparity')
    spaces = [LotusEngine.from_pretrained(str(path), device='cpu', warmup=False, **kw).depth_space
              for path, kw in ((plain, {}), (hinted, {}), (tiny_lotus['depth'], {}),
                               (tiny_lotus['depth'], {'depth_space': 'depth'}))]
    assert spaces == ['depth', 'disparity', 'disparity', 'depth']


# Registered model input sizes of the 301x451 test frame, worked out by hand: the longer side
# scaled to the resolution, each side rounded to the nearest multiple of 8.
REGISTERED_SIZES = {768: (512, 768), 256: (168, 256), 0: (304, 448)}


@pytest.mark.parametrize('resolution', sorted(REGISTERED_SIZES))
def test_registered_mode_matches_reference_at_its_size(engine, refs, rgb, resolution):
    engine.processing_resolution = resolution
    engine.resize_mode = 'registered'
    try:
        size = REGISTERED_SIZES[resolution]
        assert engine.model_input_size(*rgb.shape[:2]) == size
        pred = engine.predict(rgb)
    finally:
        engine.resize_mode = 'released'
    np.testing.assert_array_equal(pred.depth, refs['depth'].depth(rgb, resolution, size=size))
    np.testing.assert_array_equal(pred.normal,
                                  refs['normal'].normal(rgb, resolution, size=size))


def test_model_input_size_per_mode(engine):
    engine.processing_resolution = 768
    assert engine.model_input_size(1024, 1280) == (614, 768)   # released: truncated
    engine.resize_mode = 'registered'
    try:
        assert engine.model_input_size(1024, 1280) == (616, 768)
        assert engine.model_input_size(768, 1024) == (576, 768)
        engine.processing_resolution = 0
        assert engine.model_input_size(301, 451) == (304, 448)
        assert engine.model_input_size(480, 640) == (480, 640)
        engine.processing_resolution = 768
        with pytest.raises(ValueError, match='rgb'):
            engine.predict(np.zeros((8, 4000, 3), np.uint8))   # 1.5 rows: rounds to 0
    finally:
        engine.resize_mode = 'released'


def test_bad_resize_mode_is_refused(tiny_lotus):
    with pytest.raises(ValueError, match='resize_mode'):
        LotusEngine.from_pretrained(str(tiny_lotus['depth']), device='cpu', warmup=False,
                                    resize_mode='stretch')


class _GridVAE(torch.nn.Module):
    """
    Keep the Lotus VAE's geometry without its arithmetic.

    Latent cell (i, j) holds input block [8i, 8i + 8) x [8j, 8j + 8) exactly, rows and columns
    past the last whole block are lost (diffusers' stride-2 convolutions floor each size), and
    decoding puts the blocks back.
    """

    config = SimpleNamespace(scaling_factor=1.0)

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        h, w = (8 * (n // 8) for n in x.shape[-2:])
        z = F.pixel_unshuffle(x[..., :h, :w], 8)  # (N, 192, h/8, w/8)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z))

    def decode(self, z: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        return (F.pixel_shuffle(z, 8),)  # (N, 3, h, w)


class _IdentityUNet(torch.nn.Module):
    def forward(self, z: torch.Tensor, *args, return_dict: bool = False, **kwargs):
        return (z,)


def _bright_block_offset(height: int, width: int, resolution: int,
                         resize_mode: str | None) -> np.ndarray:
    """Return how far (rows, cols) an 8x8 bright block 16 px from the far corner moves."""
    task = _Task('depth', _IdentityUNet(), 0, torch.zeros(1, 2, 16))
    mode = {} if resize_mode is None else {'resize_mode': resize_mode}
    eng = LotusEngine(device=torch.device('cpu'), dtype=torch.float32, vaes=[_GridVAE()],
                      tasks={'depth': task}, depth_space='disparity',
                      processing_resolution=resolution, resample='nearest-exact',
                      latent='mean', seed=None, stage_timing=False, **mode)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[height - 24:height - 16, width - 24:width - 16] = 255
    depth = eng.predict(rgb, normal=False).depth.astype(np.float64)  # black 0, bright 1
    rows, cols = np.mgrid[0:height, 0:width]
    centroid = np.array([(rows * depth).sum(), (cols * depth).sum()]) / depth.sum()
    return centroid - (height - 20.5, width - 20.5)


# (height, width, resolution): the 1280x1024 camera at 768 (614 rows processed, 608
# decoded), and the test frame's size at native resolution (neither side a multiple of 8).
GEOMETRIES = [(1024, 1280, 768), (301, 451, 0)]


@pytest.mark.parametrize('height,width,resolution', GEOMETRIES)
def test_default_outputs_are_pixel_registered(height, width, resolution):
    # Resizing in and back out with inverse centre-aligned scales keeps a block's centroid;
    # only nearest-exact's choice of whole output pixels moves it, by at most half a pixel.
    offset = _bright_block_offset(height, width, resolution, None)
    assert np.abs(offset).max() <= 0.5, offset


@pytest.mark.parametrize('height,width,resolution', GEOMETRIES)
def test_released_geometry_drifts_toward_the_far_corner(height, width, resolution):
    """Measure the same on the released geometry: the drift registration removes."""
    scale = resolution / max(height, width) if resolution else 1.0
    size = np.array([height, width])
    processed = (size * scale).astype(int)
    decoded = 8 * (processed // 8)
    centre = size - 20.5
    # input pixel centre -> model input -> decoded grid stretched over the whole image
    predicted = (centre + 0.5) * processed / size * size / decoded - 0.5 - centre
    offset = _bright_block_offset(height, width, resolution, 'released')
    np.testing.assert_allclose(offset, predicted, atol=0.5)
    assert np.abs(offset).max() > 4.0


@pytest.mark.parametrize('name,index,override,space,warns', [
    # `hf download jingheya/lotus-depth-d-v2-0-disparity --local-dir ./lotus-depth`
    ('lotus-depth', {'_class_name': 'DirectRegressionPipeline'}, None, 'disparity', False),
    ('lotus-depth', {'_class_name': 'LotusDPipeline'}, None, 'depth', False),   # v1-0 / v1-1
    ('lotus-depth-d-v1-1', {}, None, 'depth', False),
    ('models--jingheya--lotus-depth-d-v2-0-disparity/snapshots/0a1b2c',
     {'_class_name': 'DirectRegressionPipeline'}, None, 'disparity', False),
    ('plain', {'depth_space': 'disparity'}, None, 'disparity', False),
    ('my-disparity-net', {'_class_name': 'LotusDPipeline'}, None, 'disparity', True),
    ('lotus-depth', {'_class_name': 'DirectRegressionPipeline'}, 'depth', 'depth', True),
    ('lotus-depth', {'_class_name': 'StableDiffusionPipeline'}, None, 'depth', True),
    ('lotus-depth', {}, None, 'depth', True),
])
def test_depth_space_decision_is_logged_with_its_reason(tmp_path, caplog, name, index,
                                                        override, space, warns):
    folder = tmp_path / name  # only model_index.json: all the decision reads
    folder.mkdir(parents=True)
    (folder / 'model_index.json').write_text(json.dumps(index))
    with caplog.at_level(logging.INFO, logger='lotus_ros.core.lotus_d'):
        decided, reason = _depth_space(str(folder), folder, override)
    assert decided == space
    (record,) = [r for r in caplog.records if r.name == 'lotus_ros.core.lotus_d']
    assert record.levelno == (logging.WARNING if warns else logging.INFO)
    assert reason in record.getMessage() and space in reason
    assert ('set depth_space' in record.getMessage()) == warns


def test_local_copy_of_the_disparity_checkpoint_loads_as_disparity(tmp_path, caplog, rgb):
    """Lay it out like the published repo: fp16 tensors under the plain names, its class."""
    folder = save_random_lotus(tmp_path / 'lotus-depth', pipeline_class='DirectRegressionPipeline',
                               weights_dtype=torch.float16)
    weights = load_file(folder / 'unet' / 'diffusion_pytorch_model.safetensors')
    assert {t.dtype for t in weights.values()} == {torch.float16}
    with caplog.at_level(logging.INFO, logger='lotus_ros.core.lotus_d'):
        eng = LotusEngine.from_pretrained(str(folder), device='cpu', warmup=False,
                                          processing_resolution=64)
    assert eng.resize_mode == 'registered'   # the default
    assert eng.depth_space == 'disparity'
    assert 'DirectRegressionPipeline' in eng.depth_space_reason
    records = [r for r in caplog.records if r.name == 'lotus_ros.core.lotus_d']
    assert [r.levelno for r in records] == [logging.INFO]
    assert eng.depth_space_reason in records[0].getMessage()
    pred = eng.predict(rgb, normal=False)
    assert pred.depth_space == 'disparity' and np.isfinite(pred.depth).all()


def test_warmup_and_fp32_default_on_cpu(tiny_lotus):
    eng = LotusEngine.from_pretrained(str(tiny_lotus['depth']), device='auto', warmup=True)
    assert eng.device.type == ('cuda' if torch.cuda.is_available() else 'cpu')
    if eng.device.type == 'cpu':
        assert eng.dtype == torch.float32 and eng.memory_stats() == {}


def test_benchmark_smoke(tiny_lotus, capsys):
    from lotus_ros.benchmarks.engine_benchmark import main

    folder = str(tiny_lotus['depth'])
    assert main(['--depth-model', folder, '--normal-model', folder, '--resolutions', '40x56',
                 '--repeats', '1', '--warmup', '0', '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    for word in ('unet_normal', 'frames/s', 'peak RSS MB', 'engine / baseline (d+n)'):
        assert word in out
