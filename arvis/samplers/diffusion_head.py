"""Diffusion-head decoding (Orthus): the interleaved loop with image tokens drawn as continuous latents by DDIM.

Shapes: m rows in image mode, e latent width, d trunk width.

At an image position each row's normed hidden state z conditions the generator's head
(:meth:`arvis.generators.orthus.OrthusGenerator.denoise`). diffusers' ``DDIMScheduler`` of the generator's schedule
(:func:`arvis.nn.noise_schedule.sampling_scheduler`, trailing spacing) runs ``ddim_steps`` steps (upstream 100)
from x_T ~ N(0, head_temperature² I), with η = ``ddim_eta`` (upstream 0: deterministic given x_T); with guidance
the head runs on [z_cond; z_uncond] and the v predictions are mixed, uncond + s·(cond − uncond). The result
÷ ``latent_scale`` is the latent fed back (through the soft input) and returned. Upstream runs the head for one
sample (two with CFG); here all image-mode rows of the batch run together, each drawing its noise from its own
generator, so a batch gives its rows' one-by-one results (up to float rounding). ``head_temperature`` scales
x_T and the η noise (MAR's temperature; upstream has none: 1).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from arvis.samplers.base import SAMPLERS
from arvis.samplers.interleaved import InterleavedSampler, InterleavedSettings
from arvis.samplers.logits import RandomSource, normal_noise
from arvis.samplers.settings import setting
from arvis.nn.noise_schedule import sampling_scheduler


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffusionHeadSettings(InterleavedSettings):
    """Settings of the ``diffusion-head`` sampler: the interleaved sampler's (temperature, top-k and top-p apply
    to text; the guidance scale and schedule to the head's v predictions) and the head's DDIM."""

    ddim_steps: int = setting(100, "DDIM steps of the diffusion head per image token (Orthus: 100)")
    ddim_eta: float = setting(0.0, "DDIM eta: 0 is deterministic given the initial noise (Orthus: 0)")
    head_temperature: float = setting(1.0, "scale of the head's initial (and eta) noise (1: Orthus)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ddim_steps < 1:
            raise ValueError(f"ddim_steps must be >= 1, got {self.ddim_steps}")
        if self.ddim_eta < 0:
            raise ValueError(f"ddim_eta must be >= 0, got {self.ddim_eta}")
        if not self.head_temperature > 0:
            raise ValueError(f"head_temperature must be > 0, got {self.head_temperature}")


def ddim_sample(denoise, conditions: Tensor, uncond: Tensor | None, scales: Tensor | None, scheduler, width: int,
                *, eta: float, temperature: float, rng: RandomSource) -> Tensor:
    """DDIM from noise for m rows: ``denoise(x (k, e), t (k,), z (k, d)) -> v``, conditions (m, d), uncond (m, d)
    and per-row guidance scales (m,) (None: unguided) -> samples (m, e) in the head's (scaled) space."""
    rows, device = conditions.shape[0], conditions.device  # x runs in float32, the head in its own dtype
    x = normal_noise((rows, width), rng, device) * (scheduler.init_noise_sigma * temperature)
    both = conditions if uncond is None else torch.cat([conditions, uncond])
    for timestep in scheduler.timesteps:
        t = torch.full((both.shape[0],), int(timestep), dtype=torch.long, device=device)
        v = denoise((torch.cat([x, x]) if uncond is not None else x).to(both.dtype), t, both).float()
        if uncond is not None:
            cond_v, uncond_v = v.chunk(2)
            v = InterleavedSampler.guide_rows(cond_v, uncond_v, scales)
        noise = normal_noise((rows, width), rng, device) * temperature if eta > 0 else None
        x = scheduler.step(v, timestep, x, eta=eta, variance_noise=noise).prev_sample
    return x


@SAMPLERS.register
class DiffusionHeadSampler(InterleavedSampler):
    """The interleaved loop with DDIM-sampled continuous image tokens; see the module docstring."""

    name = "diffusion-head"
    config_class = DiffusionHeadSettings
    description = "interleaved text + continuous image latents drawn by the diffusion head's DDIM (Orthus)"

    def latent_width(self, model) -> int:
        return model.config.latent_dim

    def scheduler(self, model, settings: DiffusionHeadSettings):
        """The DDIM scheduler of the generator's schedule with ``settings.ddim_steps`` set (built once per sampler,
        schedule and step count)."""
        key = (repr(model.config.scheduler_options()), settings.ddim_steps)
        if getattr(self, "_scheduler_key", None) != key:
            if settings.ddim_steps > model.config.num_train_timesteps:
                raise ValueError(f"ddim_steps ({settings.ddim_steps}) cannot exceed the generator's "
                                 f"{model.config.num_train_timesteps} training timesteps")
            self._scheduler, self._scheduler_key = sampling_scheduler(model.config, settings.ddim_steps), key
        return self._scheduler

    def draw_image(self, model, out, rows: list[int], positions: Tensor, guided: bool,
                   settings: InterleavedSettings, rng: RandomSource) -> tuple[Tensor, Tensor]:
        """-> ``<image>`` placeholder ids (m,) and the DDIM-sampled latents (m, e) ÷ ``latent_scale``."""
        batch = len(out.hidden) // (2 if guided else 1)
        z = model.normed(out.hidden[:, -1])
        uncond = z[batch:][rows] if guided else None
        scales = self.row_scales(positions, model.layout.length, settings) if guided else None
        samples = ddim_sample(model.denoise, z[rows], uncond, scales, self.scheduler(model, settings), model.config.latent_dim,
                              eta=settings.ddim_eta, temperature=settings.head_temperature, rng=rng)
        ids = torch.full((len(rows),), model.stream.placeholder, dtype=torch.long, device=z.device)
        return ids, samples / model.latent_scale
