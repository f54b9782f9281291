"""Prefix decoding of a trained ResTok: every level boundary decodes, and more tokens reconstruct better.

``data/restok-demo`` is the tokenizer trained by ``configs/restok_demo_tokenizer.yaml`` (8000 steps on the
built-in 32 px glyphs, see docs/results.md); retrain and copy its ``tokenizer/`` folder here whenever the
ResTok parameters change (loading names every missing or misshapen tensor).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from arvis.data import GlyphDataset
from arvis.tokenizers.base import Tokenizer

TRAINED = Path(__file__).parent / "data" / "restok-demo"


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    return Tokenizer.from_pretrained(TRAINED).eval()


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    images, _ = GlyphDataset(128, image_size=32, seed=4242).tensors()  # a seed no training set uses
    return images


@torch.no_grad()
def test_prefix_reconstruction_error_falls_with_every_level(trained, held_out):
    tokens = trained.encode(trained.from_unit_range(held_out))
    assert tokens.shape == (128, 32) and trained.prefix_lengths == (1, 2, 4, 8, 16, 32)
    errors = []
    for k in trained.prefix_lengths:
        reconstruction = trained.to_unit_range(trained.decode(tokens[:, :k]))
        assert reconstruction.shape == held_out.shape
        errors.append((reconstruction - held_out).pow(2).mean().item())
    assert all(later < earlier for earlier, later in zip(errors[:-1], errors[1:], strict=True)), errors
    mean_image_error = (held_out - held_out.mean(0, keepdim=True)).pow(2).mean().item()
    assert errors[-1] < 0.5 * mean_image_error, (errors, mean_image_error)


@torch.no_grad()
def test_off_boundary_prefixes_are_refused(trained, held_out):
    tokens = trained.encode(trained.from_unit_range(held_out[:2]))
    for k in (3, 5, 31):
        with pytest.raises(ValueError, match="level boundary"):
            trained.decode(tokens[:, :k])
