"""fd-glyph-clips separates real moving glyphs from frozen or shuffled ones; clip accuracy reads the class."""

from __future__ import annotations

import pytest
import torch

from arvis.data import MovingGlyphDataset
from arvis.eval.glyph_clip_metrics import glyph_clip_metrics


def uint8_clips(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    clips, labels = MovingGlyphDataset(num, image_size=32, num_frames=8, seed=seed).tensors()
    return (clips * 255).round().to(torch.uint8), labels


@pytest.fixture(scope="module")
def real():
    return uint8_clips(80, seed=1)


def test_real_clips_score_better_than_frozen_or_shuffled_ones(real):
    reference, _ = real
    others, labels = uint8_clips(80, seed=2)
    same = glyph_clip_metrics(others, labels, reference)
    frozen = glyph_clip_metrics(others[:, :, :1].expand_as(others).contiguous(), labels, reference)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    shuffled = glyph_clip_metrics(others[:, :, order], labels, reference)
    assert same["clip_accuracy"] > 0.95
    assert same["fd_glyph_clips"] < 0.5 * frozen["fd_glyph_clips"], (same, frozen)
    assert same["fd_glyph_clips"] < shuffled["fd_glyph_clips"], (same, shuffled)
    wrong = glyph_clip_metrics(others, (labels + 1) % 10, reference)
    assert wrong["clip_accuracy"] < 0.05 and wrong["protocol"]["metric"] == "fd-glyph-clips"


def test_bad_inputs_raise(real):
    reference, labels = real
    with pytest.raises(ValueError, match="uint8 clips"):
        glyph_clip_metrics(reference.float(), labels, reference)
    with pytest.raises(ValueError, match="at least 2 clips"):
        glyph_clip_metrics(reference[:1], labels[:1], reference)
    with pytest.raises(ValueError, match="shape"):
        glyph_clip_metrics(reference, labels[:3], reference)
