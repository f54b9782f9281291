"""Unit-parallel sampling: every position of the unit a step returns is drawn at once (ResTok's level-parallel
HAR decoding; VAR's next-scale prediction adds its own mode in :mod:`arvis.samplers.next_scale`).

Shapes: b batch, n tokens of one unit, v vocabulary.

One step per unit: the generator returns the logits of all n tokens of unit k at once (against the KV cache
of the earlier units), they are guided, filtered and sampled independently, and the sampled unit is fed back.
With guidance the batch is doubled as [condition; null condition] and both halves are fed the same sampled
tokens; the guidance schedule runs over units (``cfg_schedule="linear"`` goes from scale 1 at the first unit
to ``cfg_scale`` at the last).
"""

from __future__ import annotations

import torch
from torch import Tensor

from arvis.conditions import Condition
from arvis.generators.base import Generator
from arvis.samplers.base import SAMPLERS, Sampler
from arvis.samplers.guidance import feed_both, guidance_conditions, guide
from arvis.samplers.logits import Draw, RandomSource, categorical_draw, check_prefix, filter_logits
from arvis.samplers.settings import NextUnitSettings


@SAMPLERS.register
class NextUnitSampler(Sampler):
    """Samples every position a step returns (a whole level or scale) and feeds them back: one step per unit."""

    name = "next-unit"
    config_class = NextUnitSettings
    description = "every position of a unit at once, one step per unit (ResTok's levels)"

    @torch.inference_mode()
    def __call__(self, model: Generator, condition: Condition | Tensor, *, rng: RandomSource = None,
                 prefix: Tensor | None = None, length: int | None = None, draw: Draw | None = None) -> Tensor:
        """condition of b samples (or class ids (b,) long) -> tokens (b, length) long, units concatenated (all l
        tokens by default).

        A whole sequence sampled from the condition alone comes back in the tokenizer's layout order
        (:meth:`Generator.to_layout_order`); with a ``prefix`` or a shorter ``length`` the prefix and the result
        are in the generator's own emission order.

        Args:
            rng: one generator or one per sample (the default draw's randomness and a subclass's feed).
            prefix: (b, k) tokens of the first units to continue from (k at a unit boundary).
            length: stop after the unit that ends at this many tokens.
            draw: replaces the categorical draw (e.g. :class:`arvis.samplers.flow_matching.FlowMatchingDraw`).
        """
        self.check_drivable(model)
        condition = model.check_condition(condition)
        boundaries = model.unit_boundaries()
        start, length = check_prefix(prefix, boundaries, length, condition, model.vocab_size)
        draw = draw or categorical_draw(rng)
        settings = self.settings
        conditions = guidance_conditions(condition, model, settings)
        cache = model.new_cache(conditions.batch_size)
        num_units = len(boundaries) - 1
        given = boundaries.index(start)
        units, inputs = [], None
        for unit in range(given):  # the prefix's units are fed as they are
            model.step(inputs, conditions, cache)
            units.append(prefix[:, boundaries[unit]:boundaries[unit + 1]])
            inputs = feed_both(units[-1], settings)
        for unit in range(given, boundaries.index(length)):
            logits = guide(model.step(inputs, conditions, cache), settings, unit, num_units)
            logits = filter_logits(logits, temperature=settings.temperature, top_k=settings.top_k,
                                   top_p=settings.top_p)
            tokens = draw(logits, boundaries[unit])
            units.append(tokens)
            if unit == num_units - 1:
                break
            inputs = feed_both(self.next_inputs(model, tokens, logits, unit, num_units, rng), settings)
        if not units:
            return torch.empty(condition.batch_size, 0, dtype=torch.long, device=condition.device)
        tokens = torch.cat(units, dim=1)
        return model.to_layout_order(tokens) if start == 0 and tokens.shape[1] == boundaries[-1] else tokens

    def next_inputs(self, model: Generator, tokens: Tensor, logits: Tensor, unit: int, num_units: int,
                    rng: RandomSource) -> Tensor:
        """What the next step is fed after unit ``unit``: its sampled tokens (b, n)."""
        return tokens
