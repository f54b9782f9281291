"""Next-token sampling for raster generators (LlamaGen's decode loop, policy kept out of the model).

Shapes: b batch, l tokens, v vocabulary. With guidance the batch is doubled as
[conditional; null condition], both halves share the KV cache layout, the logits are
mixed per step under the CFG schedule, and the sampled token is fed to both halves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.generators.base import Generator
from arvis.samplers.base import SAMPLERS, Sampler
from arvis.samplers.guidance import feed_both, guidance_conditions, guide
from arvis.samplers.logits import Draw, RandomSource, categorical_draw, check_prefix, filter_logits
from arvis.samplers.settings import NextTokenSettings


@SAMPLERS.register
class NextTokenSampler(Sampler):
    """Samples one token per step with a KV cache: l steps for an l-token grid."""

    name = "next-token"
    config_class = NextTokenSettings
    description = "one token per step with a KV cache (LlamaGen's decode loop)"

    def step_options(self) -> dict[str, Any]:
        """Keyword arguments of every ``model.step`` call, from the settings: none here; a sampler for generators
        whose step takes a knob of its own (ControlAR's ``control_strength``) passes it this way."""
        return {}

    @torch.inference_mode()
    def __call__(self, model: Generator, condition: Condition | Tensor, *, rng: RandomSource = None, prefix: Tensor | None = None,
                 length: int | None = None, draw: Draw | None = None) -> Tensor:
        """condition of b samples (or class ids (b,) long) -> tokens (b, length) long (all l tokens by default).

        A whole sequence sampled from the condition alone comes back in the tokenizer's layout order
        (:meth:`Generator.to_layout_order`); with a ``prefix`` or a shorter ``length`` the prefix and the result
        are in the generator's own emission order (the same for every generator that emits in layout order).

        Args:
            rng: one generator, or one per sample (the default draw's randomness).
            prefix: (b, k) tokens to continue from (fed in one step; returned as the first k).
            length: stop after this many tokens (Distilled Decoding's teacher-involved sampling).
            draw: replaces the categorical draw (e.g. :class:`arvis.samplers.flow_matching.FlowMatchingDraw`).
        """
        self.check_drivable(model)
        condition = model.check_condition(condition)
        num_steps = model.layout.length
        start, length = check_prefix(prefix, range(num_steps + 1), length, condition, model.vocab_size)
        draw = draw or categorical_draw(rng)
        config = self.settings
        conditions = guidance_conditions(condition, model, config)
        cache = model.new_cache(conditions.batch_size)
        tokens = torch.empty(condition.batch_size, length, dtype=torch.long, device=condition.device)
        inputs = None
        options = self.step_options()
        if start:
            model.step(None, conditions, cache, **options)  # the condition prefix; the prefix tokens follow
            tokens[:, :start] = prefix
            inputs = feed_both(prefix, config)
        for step in range(start, length):
            logits = guide(model.step(inputs, conditions, cache, **options)[:, -1], config, step, num_steps)
            logits = filter_logits(logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
            tokens[:, step] = draw(logits[:, None], step)[:, 0]
            inputs = feed_both(tokens[:, step:step + 1], config)
        return model.to_layout_order(tokens) if start == 0 and length == num_steps else tokens
