"""Classifier-free guidance around a generator call: batch doubling and per-step mixing.

With guidance (``cfg_scale != 1``) the batch is run as [conditional; null class]; each step's
logits are split in halves and mixed with the scale the schedule gives that step. Both
halves are then fed the same sampled tokens (:func:`feed_both`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.samplers.config import SamplingConfig
from arvis.samplers.logits import cfg_mix, cfg_scale_at


def guidance_conditions(labels: Tensor, null_class: int, config: SamplingConfig) -> Tensor:
    """labels (b,) -> the labels to run: (2b,) [labels; null class] with guidance, else labels."""
    if config.cfg_scale == 1.0:
        return labels
    return torch.cat([labels, torch.full_like(labels, null_class)])


def guide(logits: Tensor, config: SamplingConfig, step: int, num_steps: int) -> Tensor:
    """(2b, ...) logits of [conditional; null] -> (b, ...) guided logits; unguided logits pass through."""
    if config.cfg_scale == 1.0:
        return logits
    cond, uncond = logits.chunk(2)
    return cfg_mix(cond, uncond, cfg_scale_at(config.cfg_schedule, config.cfg_scale, step, num_steps,
                                              config.cfg_start, config.cfg_interval))


def feed_both(inputs: Tensor, config: SamplingConfig) -> Tensor:
    """The next inputs (b, ...) for both halves of a guided batch."""
    return torch.cat([inputs, inputs]) if config.cfg_scale != 1.0 else inputs
