"""Classifier-free guidance around a generator call: batch doubling and per-step mixing.

With guidance (``cfg_scale != 1``) the batch is run as [conditional; the generator's joint null condition (null
class, empty prompt, ...)]; each step's
logits are split in halves and mixed with the scale the schedule gives that step. Both
halves are then fed the same sampled tokens (:func:`feed_both`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.samplers.settings import CategoricalSettings
from arvis.samplers.logits import cfg_mix, cfg_scale_at


def guidance_conditions(condition: Condition, model, config: CategoricalSettings) -> Condition:
    """A condition of b samples -> the one to run: 2b samples [condition; ``model.null_condition(b)``] with
    guidance, else ``condition``."""
    if not config.guided:
        return condition
    return Condition.cat([condition, model.null_condition(condition.batch_size, condition.device)])


def guide(logits: Tensor, config: CategoricalSettings, step: int, num_steps: int) -> Tensor:
    """(2b, ...) logits of [conditional; null] -> (b, ...) guided logits; unguided logits pass through."""
    if not config.guided:
        return logits
    cond, uncond = logits.chunk(2)
    return cfg_mix(cond, uncond, cfg_scale_at(config.cfg_schedule, config.cfg_scale, step, num_steps,
                                              config.cfg_start, config.cfg_interval))


def feed_both(inputs: Tensor, config: CategoricalSettings) -> Tensor:
    """The next inputs (b, ...) for both halves of a guided batch."""
    return torch.cat([inputs, inputs]) if config.guided else inputs
