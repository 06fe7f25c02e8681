"""
Measure the fp32 rounding that test_engine.py's tolerances bound, under the current CPU kernels.

Prints, per comparison, max|diff| and max|diff| / std of the output for the engine against the
fp32 reference (expected 0), against the same steps run in float64 (E, the error of one fp32
evaluation), and batch against single (summation order only). Run it twice to cover both kernel
sets (ORDER_RTOL in test_engine.py comes from the larger E):
  python test/rounding_survey.py
  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python test/rounding_survey.py
"""

from __future__ import annotations

import copy
from pathlib import Path
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engine import Reference, make_frame  # noqa: E402

from lotus_ros.core.lotus_d import LotusEngine  # noqa: E402
from lotus_ros.demo.random_models import save_random_lotus  # noqa: E402


class Float64Reference(Reference):
    """The released steps in float64: 'exact' to ~1e-16 next to fp32's ~1e-7 per rounding."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.unet, self.vae = copy.deepcopy(self.unet).double(), copy.deepcopy(self.vae).double()
        self.prompt = self.prompt.double()

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, resolution: int, **kw) -> np.ndarray:
        height, width = rgb.shape[:2]
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 127.5 - 1
        if resolution:
            scale = min(resolution / width, resolution / height)
            x = F.interpolate(x, (int(height * scale), int(width * scale)), mode='bilinear',
                              align_corners=False, antialias=True)
        sf = self.vae.config.scaling_factor
        task = torch.tensor([[1.0, 0.0]])
        labels = torch.cat([torch.sin(task), torch.cos(task)], dim=-1).double()
        y = self.unet(self.vae.encode(x).latent_dist.mean * sf, 999,
                      encoder_hidden_states=self.prompt, class_labels=labels).sample
        # fp32 before the resize: nearest-exact picks source pixels by a dtype-dependent index
        image = (self.vae.decode(y / sf).sample * 0.5 + 0.5).clamp(0, 1).float()
        image = F.interpolate(image, (height, width), mode='nearest-exact')
        return image[0].permute(1, 2, 0).numpy()


def main() -> None:
    rgb = make_frame()
    other = np.ascontiguousarray(rgb[::-1, ::-1])  # as in test_batch_equals_single_...
    rows = []

    def row(what: str, got: np.ndarray, expected: np.ndarray) -> None:
        diff = float(np.abs(got.astype(np.float64) - expected).max())
        rows.append((what, diff, diff / float(expected.std())))

    with tempfile.TemporaryDirectory() as tmp:
        depth = save_random_lotus(Path(tmp) / 'depth', seed=0, vae_seed=0)
        normal = save_random_lotus(Path(tmp) / 'normal', seed=1, vae_seed=0)
        engine = LotusEngine.from_pretrained(str(depth), str(normal), device='cpu',
                                             warmup=False, resize_mode='released')
        refs = {'depth': (Reference(depth), Float64Reference(depth)),
                'normal': (Reference(normal), Float64Reference(normal))}
        for resolution in (768, 512, 256, 128, 64, 0):
            engine.processing_resolution = resolution
            pred = engine.predict(rgb)
            for task, (ref32, ref64) in refs.items():
                got = pred.depth if task == 'depth' else pred.normal
                exact = ref64(rgb, resolution)
                exact = exact.mean(axis=-1) if task == 'depth' else exact * 2 - 1
                ref = ref32.depth(rgb, resolution) if task == 'depth' else \
                    ref32.normal(rgb, resolution)
                row(f'{task} R{resolution} engine vs fp32 reference', got, ref)
                row(f'{task} R{resolution} engine vs float64 (E)', got, exact)
        engine.processing_resolution = 256
        batch = engine.predict_batch([rgb, other])
        for i, image in enumerate((rgb, other)):
            single = engine.predict(image)
            exact = {task: ref64(image, 256) for task, (_, ref64) in refs.items()}
            row(f'depth R256 single vs float64 (E), image {i}', single.depth,
                exact['depth'].mean(axis=-1))
            row(f'normal R256 single vs float64 (E), image {i}', single.normal,
                exact['normal'] * 2 - 1)
            row(f'depth R256 batch vs single, image {i}', batch[i].depth, single.depth)
            row(f'normal R256 batch vs single, image {i}', batch[i].normal, single.normal)
        single = engine.predict(rgb)
        engine.batch_decode = True
        batched = engine.predict(rgb)
        row('depth R256 batch_decode vs separate', batched.depth, single.depth)
        row('normal R256 batch_decode vs separate', batched.normal, single.normal)

    print(f'kernels: {torch.backends.cpu.get_cpu_capability()}, '
          f'threads: {torch.get_num_threads()}')
    print(f"{'comparison':48s} {'max|diff|':>10s} {'/ std':>10s}")
    for what, diff, relative in rows:
        print(f'{what:48s} {diff:10.2e} {relative:10.2e}')


if __name__ == '__main__':
    main()
