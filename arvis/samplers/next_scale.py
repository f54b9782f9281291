"""Unit-parallel sampling: VAR's next-scale prediction (``autoregressive_infer_cfg``) and ResTok's
level-parallel HAR decoding; the policy is kept out of the models.

Shapes: b batch, n tokens of one scale, v vocabulary, e code dimension.

One step per scale: the generator returns the logits of all n = p_k ** 2 tokens of scale k at
once (against the KV cache of the earlier scales), they are guided, filtered and sampled
independently, and the sampled scale is fed back. With guidance the batch is doubled as
[conditional; null class] and both halves are fed the same sampled tokens. VAR ramps the
guidance over scales: ``cfg_schedule="linear"`` goes from scale 1 (no guidance) at the first
scale to ``cfg_scale`` at the last, so VAR's ``cfg=1.5`` is ``cfg_scale=2.5`` here (VAR writes
(1 + t)·cond − t·uncond with t from 0 to cfg).

``SamplingConfig.more_smooth`` is VAR's visualisation mode: the next scale is fed a Gumbel-softmax mixture of
code vectors (logits x (1 + r), temperature max(0.27 (1 − 0.95 r), 0.005), r = k / (K − 1))
instead of the sampled codes. The returned (and decoded) tokens are the sampled ones; upstream
decodes the soft mixture instead, so images differ slightly in that mode. Not for FID.
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.generators.base import Generator
from arvis.samplers.config import SamplingConfig, check_drivable
from arvis.samplers.guidance import feed_both, guidance_conditions, guide
from arvis.samplers.logits import Draw, RandomSource, categorical_draw, check_prefix, filter_logits, uniform_noise


class NextScaleSampler:
    """Samples every position a step returns (a whole scale or level) and feeds them back: one step per unit."""

    units = frozenset({"scale", "level"})

    def __init__(self, config: SamplingConfig | None = None) -> None:
        self.config = config or SamplingConfig()

    @torch.inference_mode()
    def __call__(self, model: Generator, condition: Condition | Tensor, *, rng: RandomSource = None, prefix: Tensor | None = None,
                 length: int | None = None, draw: Draw | None = None) -> Tensor:
        """condition of b samples (or class ids (b,) long) -> tokens (b, length) long, scales concatenated (all l tokens by default).

        Args:
            rng: one generator or one per sample (the default draw's and ``more_smooth``'s randomness).
            prefix: (b, k) tokens of the first scales to continue from (k at a scale boundary).
            length: stop after the scale that ends at this many tokens.
            draw: replaces the categorical draw (e.g. :class:`arvis.samplers.flow_matching.FlowMatchingDraw`).
        """
        check_drivable(model, self.units)
        condition = model.check_condition(condition)
        boundaries = model.unit_boundaries()
        start, length = check_prefix(prefix, boundaries, length, condition, model.vocab_size)
        draw = draw or categorical_draw(rng)
        config = self.config
        conditions = guidance_conditions(condition, model, config)
        cache = model.new_cache(conditions.batch_size)
        num_scales = len(boundaries) - 1
        if config.more_smooth and not hasattr(model, "codebook"):
            raise ValueError(f"more_smooth feeds code vectors, which {type(model).__name__} does not take")
        given = boundaries.index(start)
        scales, inputs = [], None
        for scale in range(given):  # the prefix's scales are fed as they are
            model.step(inputs, conditions, cache)
            scales.append(prefix[:, boundaries[scale]:boundaries[scale + 1]])
            inputs = feed_both(scales[-1], config)
        for scale in range(given, boundaries.index(length)):
            logits = guide(model.step(inputs, conditions, cache), config, scale, num_scales)
            logits = filter_logits(logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
            tokens = draw(logits, boundaries[scale])
            scales.append(tokens)
            if scale == num_scales - 1:
                break
            fed = self._smooth_codes(model, logits, scale, num_scales, rng) if config.more_smooth else tokens
            inputs = feed_both(fed, config)
        if not scales:
            return torch.empty(condition.batch_size, 0, dtype=torch.long, device=condition.device)
        return torch.cat(scales, dim=1)

    @staticmethod
    def _smooth_codes(model: Generator, logits: Tensor, scale: int, num_scales: int, rng: RandomSource) -> Tensor:
        """(b, n, v) logits -> (b, n, e) Gumbel-softmax mixture of the model's code vectors."""
        ratio = scale / max(1, num_scales - 1)
        tau = max(0.27 * (1 - ratio * 0.95), 0.005)
        noise = uniform_noise(tuple(logits.shape), rng, logits.device).clamp(1e-20, 1.0)
        gumbel = -torch.log(-torch.log(noise).clamp_min(1e-20))
        weights = ((logits.float() * (1 + ratio) + gumbel) / tau).softmax(-1)
        return weights @ model.codebook().float()
