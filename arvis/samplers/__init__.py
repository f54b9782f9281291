"""Samplers own every decoding policy; generators only expose ``new_cache`` and ``step``."""

from __future__ import annotations

from arvis.samplers.config import SamplingConfig
from arvis.samplers.next_scale import NextScaleSampler
from arvis.samplers.next_token import NextTokenSampler

SAMPLERS = {"token": NextTokenSampler, "scale": NextScaleSampler, "level": NextScaleSampler}


def sampler_for(generator, config: SamplingConfig | None = None):
    """The sampler that drives ``generator``'s decoding unit, with ``config``."""
    if generator.unit not in SAMPLERS:
        raise ValueError(f"no sampler drives generators with unit {generator.unit!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[generator.unit](config)


__all__ = ["NextScaleSampler", "NextTokenSampler", "SAMPLERS", "SamplingConfig", "sampler_for"]
