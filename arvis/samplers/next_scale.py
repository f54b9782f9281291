"""VAR's next-scale sampling (``autoregressive_infer_cfg``): the unit-parallel sampler over scales, plus VAR's
visualisation mode; the policy is kept out of the model.

Shapes: b batch, n tokens of one scale, v vocabulary, e code dimension.

VAR ramps the guidance over scales: ``cfg_schedule="linear"`` goes from scale 1 (no guidance) at the first
scale to ``cfg_scale`` at the last, so VAR's ``cfg=1.5`` is ``cfg_scale=2.5`` here (VAR writes
(1 + t)·cond − t·uncond with t from 0 to cfg).

``more_smooth`` is VAR's visualisation mode: the next scale is fed a Gumbel-softmax mixture of code vectors
(logits x (1 + r), temperature max(0.27 (1 − 0.95 r), 0.005), r = k / (K − 1)) instead of the sampled codes. The
returned (and decoded) tokens are the sampled ones; upstream decodes the soft mixture instead, so images differ
slightly in that mode. Not for FID.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.generators.base import Generator
from arvis.samplers.base import SAMPLERS
from arvis.samplers.logits import RandomSource, uniform_noise
from arvis.samplers.next_unit import NextUnitSampler
from arvis.samplers.settings import NextScaleSettings


@SAMPLERS.register
class NextScaleSampler(NextUnitSampler):
    """VAR's next-scale sampler: one step per scale; ``more_smooth`` feeds soft code mixtures."""

    name = "next-scale"
    config_class = NextScaleSettings
    description = "VAR's next-scale prediction: a whole scale per step, with VAR's more_smooth mode"

    def check_drivable(self, model) -> None:
        super().check_drivable(model)
        if self.settings.more_smooth and not hasattr(model, "codebook"):
            raise ValueError(f"more_smooth feeds code vectors, which {type(model).__name__} does not take")

    def next_inputs(self, model: Generator, tokens: Tensor, logits: Tensor, unit: int, num_units: int,
                    rng: RandomSource) -> Tensor:
        """The sampled scale (b, n), or with ``more_smooth`` its (b, n, e) Gumbel-softmax code mixture."""
        if not self.settings.more_smooth:
            return tokens
        ratio = unit / max(1, num_units - 1)
        tau = max(0.27 * (1 - ratio * 0.95), 0.005)
        noise = uniform_noise(tuple(logits.shape), rng, logits.device).clamp(1e-20, 1.0)
        gumbel = -torch.log(-torch.log(noise).clamp_min(1e-20))
        weights = ((logits.float() * (1 + ratio) + gumbel) / tau).softmax(-1)
        return weights @ model.codebook().float()
