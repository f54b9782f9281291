"""The diffusion schedule of a diffusion head, taken from diffusers: DDPM noise for training, DDIM for sampling.

Orthus's settings (``OrthusForConditionalGeneration.__init__`` upstream) are the defaults: scaled-linear betas
0.00085 -> 0.012 over 1000 steps, rescaled to zero terminal SNR, v-prediction, trailing timestep spacing with
``steps_offset`` 1, no sample clipping; DDIM sets ``alpha_prod`` of the final step to one. Shapes: n rows, e width.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from arvis.config import Config


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoiseScheduleConfig(Config):
    """The training schedule of a diffusion head (mixed into its generator's config).

    Attributes:
        num_train_timesteps: T, the diffusion steps of training.
        beta_start, beta_end, beta_schedule: diffusers' beta schedule ("scaled_linear": a linear ramp of sqrt β).
        rescale_zero_snr: rescale the betas to zero terminal SNR (Lin et al. 2024), as upstream.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    rescale_zero_snr: bool = True

    def check_schedule(self) -> None:
        """Raises ``ValueError`` on a bad schedule field (configs that mix this in call it)."""
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"betas must satisfy 0 < beta_start < beta_end < 1, got {self.beta_start}, "
                             f"{self.beta_end}")

    def scheduler_options(self) -> dict:
        """The keyword arguments both diffusers schedulers take (v-prediction, Orthus's spacing)."""
        return {"num_train_timesteps": self.num_train_timesteps, "beta_start": self.beta_start,
                "beta_end": self.beta_end, "beta_schedule": self.beta_schedule,
                "rescale_betas_zero_snr": self.rescale_zero_snr, "prediction_type": "v_prediction",
                "timestep_spacing": "trailing", "steps_offset": 1, "clip_sample": False}


def training_scheduler(config: NoiseScheduleConfig):
    """diffusers' ``DDPMScheduler`` of ``config`` (its ``add_noise`` and ``get_velocity``)."""
    from diffusers import DDPMScheduler  # imported here: diffusers takes seconds to import

    return DDPMScheduler(**config.scheduler_options())


def sampling_scheduler(config: NoiseScheduleConfig, num_steps: int):
    """diffusers' ``DDIMScheduler`` of ``config`` with ``num_steps`` inference steps set."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**config.scheduler_options(), set_alpha_to_one=True)
    scheduler.set_timesteps(num_steps)
    return scheduler


def v_prediction_loss(denoise, clean: Tensor, condition: Tensor, scheduler, repeats: int) -> Tensor:
    """The diffusion loss of a v-predicting denoiser: each of the n rows of ``clean`` (n, e) and ``condition``
    (n, d) repeated ``repeats`` times, each copy with its own timestep t ~ U{0..T-1} and noise ε (torch's global
    RNG, as dropout), x_t = ``add_noise``, target v = ``get_velocity``; -> the mean squared error of
    ``denoise(x_t, t, condition)`` in float32."""
    clean = clean.repeat(repeats, 1)
    condition = condition.repeat(repeats, 1)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device)
    noise = torch.randn_like(clean)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = scheduler.get_velocity(clean, noise, timesteps)
    return F.mse_loss(denoise(noisy, timesteps, condition).float(), target.float())
