"""
Lotus-G inference: the generative Lotus variant, one UNet step from a seeded noise latent.

Everything but the UNet input is Lotus-D's (lotus_ros.core.lotus_d), so the two share loading, the
empty-prompt embedding, the VAE and the pre- and post-processing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lotus_ros.core.lotus_d import LotusEngine, ModelLoadError, _Task, resolve_checkpoint

__all__ = ['LotusGEngine']


def _load_scheduler(folder: Path, source: str):
    """Load the checkpoint's scheduler; the released pipeline scales its noise with it."""
    import diffusers

    config = folder / 'scheduler' / 'scheduler_config.json'
    if not config.is_file():
        raise ModelLoadError(f'Lotus-G checkpoint {source}: scheduler/scheduler_config.json is '
                             f'missing in {folder}; the released pipeline draws its noise '
                             "latent with the scheduler's init_noise_sigma")
    try:
        name = json.loads(config.read_text()).get('_class_name')
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'Lotus-G checkpoint {source}: {config} is unreadable: {exc}') \
            from exc
    scheduler_class = getattr(diffusers, str(name), None)
    if not (isinstance(scheduler_class, type)
            and issubclass(scheduler_class, diffusers.SchedulerMixin)):
        raise ModelLoadError(f'Lotus-G checkpoint {source}: {config} names {name!r}, not a '
                             'diffusers scheduler')
    return scheduler_class.from_pretrained(str(folder), subfolder='scheduler')


class LotusGEngine(LotusEngine):
    """
    Lotus-G depth and/or normal predictor, faithful to the authors' released LotusGPipeline.

    The UNet (8 input channels) sees the image latent followed by a noise latent drawn from a
    generator (times the scheduler's init_noise_sigma), runs once at t=999 with the task
    embedding and, as the released code does for a single timestep, its output is the clean
    latent: no scheduler step. Draw k comes from torch.Generator(device).manual_seed(seed + k),
    re-seeded on every call and shared by all images of a batch, so each frame is
    reproducible and draw 0 equals the released pipeline called with a generator seeded `seed`.
    With `ensemble_size` K > 1 the K draws run as one batched UNet call per task; the
    prediction is their mean and `uncertainty` the per-pixel standard deviation of the depth.
    """

    family = 'Lotus-G'
    unet_in_channels = 8

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ensemble_size = 1
        self._schedulers: dict[str, object] = {}

    @property
    def has_uncertainty(self) -> bool:
        return self.has_depth and self.ensemble_size > 1

    @classmethod
    def from_pretrained(cls, depth_model: str | None, normal_model: str | None = None, *,
                        ensemble_size: int = 1, seed: int = 0, local_files_only: bool = False,
                        warmup: bool | tuple[int, int] = True, **kwargs) -> LotusGEngine:
        """
        Load Lotus-G depth and/or normal checkpoints (hub ids or local diffusers folders).

        `seed` and `ensemble_size` choose the noise draws (see the class docstring); the other
        arguments are LotusEngine.from_pretrained's.
        """
        if isinstance(ensemble_size, bool) or not isinstance(ensemble_size, int) or \
                ensemble_size < 1:
            raise ValueError(f'ensemble_size must be an integer >= 1, got {ensemble_size!r}')
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be an integer >= 0, got {seed!r}')
        engine = super().from_pretrained(depth_model, normal_model, seed=seed,
                                         local_files_only=local_files_only, warmup=False,
                                         **kwargs)
        for name, model in (('depth', depth_model), ('normal', normal_model)):
            if model is not None:
                folder = resolve_checkpoint(str(model), local_files_only)
                engine._schedulers[name] = _load_scheduler(folder, str(model))
        engine.ensemble_size = ensemble_size
        if warmup:
            engine._warmup(warmup)
        return engine

    def _clean_latents(self, task: _Task, z: torch.Tensor) -> torch.Tensor:
        """Return K draws of the clean latent per image latent in z (Bx4xhxw): (K*B)x4xhxw."""
        from diffusers.utils.torch_utils import randn_tensor

        count, draws = len(z), self.ensemble_size
        scheduler = self._schedulers[task.name]
        t = self._timestep[0]
        generators = [torch.Generator(device=self.device).manual_seed(self.seed + k)
                      for k in range(draws)]
        noise = randn_tensor((draws, *z.shape[1:]), generator=generators, device=self.device,
                             dtype=z.dtype)                              # Kx4xhxw
        noise = scheduler.scale_model_input(noise * scheduler.init_noise_sigma, t)
        noise = noise.repeat_interleave(count, dim=0)                    # (K*B)x4xhxw
        image = z.repeat(draws, 1, 1, 1)                                 # (K*B)x4xhxw
        unet_input = torch.cat([image, noise], dim=1)                    # (K*B)x8xhxw
        unet_input = unet_input.contiguous(memory_format=self._layout)
        return super()._clean_latents(task, unet_input)
