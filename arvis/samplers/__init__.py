"""Samplers own every decoding policy; generators only expose ``new_cache`` and ``step``."""

from __future__ import annotations

from arvis.samplers.config import SamplingConfig
from arvis.samplers.next_scale import NextScaleSampler
from arvis.samplers.next_token import NextTokenSampler

SAMPLERS = {"token": NextTokenSampler, "scale": NextScaleSampler, "level": NextScaleSampler}


def register_sampler(unit: str, sampler_class: type) -> None:
    """Registers the sampler of generators whose ``unit`` is ``unit`` (post-training methods add theirs)."""
    if SAMPLERS.get(unit, sampler_class) is not sampler_class:
        raise ValueError(f"a sampler for unit {unit!r} is already registered: {SAMPLERS[unit].__name__}")
    SAMPLERS[unit] = sampler_class


def sampler_for(generator, config: SamplingConfig | None = None):
    """The sampler that drives ``generator``'s decoding unit, with ``config``."""
    if generator.unit not in SAMPLERS:
        raise ValueError(f"no sampler drives generators with unit {generator.unit!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[generator.unit](config)


__all__ = ["NextScaleSampler", "NextTokenSampler", "SAMPLERS", "SamplingConfig", "register_sampler", "sampler_for"]
