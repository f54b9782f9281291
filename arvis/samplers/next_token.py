"""Next-token sampling for raster generators (LlamaGen's decode loop, policy kept out of the model).

Shapes: b batch, l tokens, v vocabulary. With guidance the batch is doubled as
[conditional; null class], both halves share the KV cache layout, the logits are
mixed per step under the CFG schedule, and the sampled token is fed to both halves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.generators.base import Generator
from arvis.samplers.config import SamplingConfig, check_drivable
from arvis.samplers.logits import RandomSource, cfg_mix, cfg_scale_at, filter_logits, sample_categorical


class NextTokenSampler:
    """Samples one token per step with a KV cache: l steps for an l-token grid."""

    units = frozenset({"token"})

    def __init__(self, config: SamplingConfig | None = None) -> None:
        self.config = config or SamplingConfig()

    @torch.inference_mode()
    def __call__(self, model: Generator, labels: Tensor, *, rng: RandomSource = None) -> Tensor:
        """labels (b,) long -> tokens (b, l) long. ``rng``: one generator, or one per sample."""
        check_drivable(model, self.units)
        model.check_labels(labels, allow_null=True)
        config = self.config
        guided = config.cfg_scale != 1.0
        batch = labels.shape[0]
        conditions = torch.cat([labels, torch.full_like(labels, model.null_class)]) if guided else labels
        cache = model.new_cache(conditions.shape[0])
        num_steps = model.layout.length
        tokens = torch.empty(batch, num_steps, dtype=torch.long, device=labels.device)
        inputs = None
        for step in range(num_steps):
            logits = model.step(inputs, conditions, cache)[:, -1]
            if guided:
                cond, uncond = logits.chunk(2)
                logits = cfg_mix(cond, uncond, cfg_scale_at(config.cfg_schedule, config.cfg_scale, step, num_steps))
            logits = filter_logits(logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
            tokens[:, step] = sample_categorical(logits, rng)
            next_token = tokens[:, step:step + 1]
            inputs = torch.cat([next_token, next_token]) if guided else next_token
        return tokens
