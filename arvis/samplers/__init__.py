"""Samplers own every decoding policy; generators only expose ``new_cache`` and ``step``.

Each sampler registers in :data:`SAMPLERS` under its name with its own settings class; see
:mod:`arvis.samplers.base`.
"""

from __future__ import annotations

from arvis.samplers.base import SAMPLERS, Sampler, sampler_class, sampler_for, settings_for
from arvis.samplers.blockwise import BlockwiseSampler, BlockwiseSettings
from arvis.samplers.diffusion_head import DiffusionHeadSampler, DiffusionHeadSettings
from arvis.samplers.interleaved import InterleavedSampler, InterleavedSettings
from arvis.samplers.next_scale import NextScaleSampler
from arvis.samplers.next_token import NextTokenSampler
from arvis.samplers.next_unit import NextUnitSampler
from arvis.samplers.speculative_jacobi import SpeculativeJacobiSampler, SpeculativeJacobiSettings
from arvis.samplers.settings import (CategoricalSettings, NextScaleSettings, NextTokenSettings, NextUnitSettings,
                                     SamplerSettings)

__all__ = ["BlockwiseSampler", "BlockwiseSettings", "DiffusionHeadSampler", "DiffusionHeadSettings",
           "InterleavedSampler", "InterleavedSettings",
           "CategoricalSettings", "NextScaleSampler", "NextScaleSettings", "NextTokenSampler", "NextTokenSettings",
           "NextUnitSampler", "NextUnitSettings", "SAMPLERS", "Sampler", "SamplerSettings", "SpeculativeJacobiSampler",
           "SpeculativeJacobiSettings", "sampler_class",
           "sampler_for", "settings_for"]
