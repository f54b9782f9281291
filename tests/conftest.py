"""Shared fixtures: tiny components and a saved tiny pipeline (tests/ only; no root conftest)."""

from __future__ import annotations

import pytest
import torch

from arvis.generators.base import GENERATORS
from arvis.pipeline import Pipeline
from arvis.samplers import NextTokenSettings
from arvis.testing import randomize_parameters_
from arvis.tokenizers.base import TOKENIZERS


@pytest.fixture
def tiny_pipeline() -> Pipeline:
    torch.manual_seed(0)
    tokenizer = TOKENIZERS.build("vq-tiny").eval()
    generator = randomize_parameters_(GENERATORS.build("raster-tiny")).eval()
    return Pipeline(tokenizer, generator, NextTokenSettings(cfg_scale=2.0, top_k=8))
