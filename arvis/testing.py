"""Helpers for testing arvis components (used by the test suite; handy for users' own components)."""

from __future__ import annotations

import torch


def randomize_parameters_(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Overwrites every parameter with N(0, std) from a seeded generator, in place.

    Zero-initialised heads (LlamaGen's output layer, AdaLN gates) block gradients and
    make every logit equal; tests randomise them so that each path is exercised.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator).to(param.dtype) * std)
    return module
